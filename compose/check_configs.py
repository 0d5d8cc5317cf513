"""Check the config of every compose service that runs namerd or a linker, as it will run.

    docker-compose -f compose/docker-compose.yml config --format json \\
        | python compose/check_configs.py --python .venv/bin/python

Reads the resolved compose model (Compose v2's JSON) on stdin. For each service whose command
is ``namerd -c FILE`` or ``linker -c FILE``, FILE is mapped through the service's bind mounts
to the file in this repository and checked with ``<python> -m namerd.main --validate -c FILE``
(or ``linker.main``), in exactly the service's environment plus PATH. So a typo in a config key,
a ``${VAR}`` without a default, or a variable whose value has the wrong type fails here, not
when the container starts. Standard library only; ``--python`` must have the project installed.

``--validate`` also checks the directories a config names (a namer's ``rootDir``), and here they
are paths inside the container. A variable whose default in the config is such a path
(``rootDir: ${NAMERD_DISCO_DIR:-/disco}``) and that the service does not set is therefore set to
the host directory bind-mounted there (``./disco``), so the check sees what the container will.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import PurePosixPath
from typing import Any

__all__ = ["config_checks", "container_path_env", "main"]

#: Commands whose ``-c FILE`` we can check, and the module that implements each.
MODULES = {"namerd": "namerd.main", "linker": "linker.main"}


def _host_path(container_path: str, volumes: list[dict[str, Any]]) -> str | None:
    """The host file behind ``container_path``, through the longest matching bind mount."""
    best: tuple[int, str] | None = None
    path = PurePosixPath(container_path)
    for vol in volumes:
        if vol.get("type") != "bind":
            continue
        target = PurePosixPath(vol["target"])
        if path == target or target in path.parents:
            rest = path.relative_to(target)
            candidate = (
                os.path.join(vol["source"], str(rest)) if str(rest) != "." else vol["source"]
            )
            if best is None or len(target.parts) > best[0]:
                best = (len(target.parts), candidate)
    return best[1] if best else None


#: ``${NAME:-/absolute/path}`` in a config file.
_PATH_DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-(/[^}]*)\}")


def container_path_env(
    config_text: str, env: dict[str, str], volumes: list[dict[str, Any]]
) -> dict[str, str]:
    """Variables of ``config_text`` whose default is a container path under a bind mount and
    that ``env`` does not set, mapped to the host path behind the mount."""
    out = {}
    for name, default in _PATH_DEFAULT.findall(config_text):
        host = _host_path(default, volumes)
        if name not in env and host is not None:
            out[name] = host
    return out


def config_checks(model: dict[str, Any]) -> list[tuple[str, str, str, dict[str, str]]]:
    """(service, module, host config file, environment) for each checkable service.

    Raises:
        ValueError: a namerd/linker service whose config file is not mounted from the host.
        OSError: that file cannot be read.
    """
    out = []
    for name, svc in sorted(model.get("services", {}).items()):
        command = svc.get("command") or []
        if not command or command[0] not in MODULES:
            continue
        if "-c" not in command[:-1]:
            raise ValueError(f"service {name}: {command[0]} has no -c CONFIG: {command}")
        container_file = command[command.index("-c") + 1]
        host_file = _host_path(container_file, svc.get("volumes") or [])
        if host_file is None:
            raise ValueError(f"service {name}: {container_file} is not a bind-mounted file")
        # A variable listed without a value and not set anywhere is null: not in the container.
        environment = svc.get("environment") or {}
        env = {k: str(v) for k, v in environment.items() if v is not None}
        with open(host_file, encoding="utf-8") as f:
            env.update(container_path_env(f.read(), env, svc.get("volumes") or []))
        out.append((name, MODULES[command[0]], host_file, env))
    return out


def main(argv: list[str] | None = None) -> int:
    """Validate every checkable service's config; exit 1 if any fails or none was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="an interpreter with l5py installed")
    args = parser.parse_args(argv)
    try:
        checks = config_checks(json.load(sys.stdin))
    except (ValueError, KeyError, OSError) as err:
        print(f"check_configs: {err}", file=sys.stderr)
        return 1
    kinds = {module for _, module, _, _ in checks}
    if kinds != set(MODULES.values()):
        print(f"check_configs: expected namerd and linker services, found {kinds}", file=sys.stderr)
        return 1
    failed = 0
    for name, module, host_file, env in checks:
        # Only the service's environment: nothing from this shell may hide a missing default.
        run_env = {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        cmd = [args.python, "-m", module, "--validate", "-c", host_file]
        proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, check=False)
        status = "ok" if proc.returncode == 0 else "FAILED"
        print(f"  {name}: {module.split('.')[0]} --validate -c {host_file}: {status}")
        if proc.returncode != 0:
            failed += 1
            print(proc.stdout + proc.stderr, end="", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
