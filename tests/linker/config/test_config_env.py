"""linker.config: a config file with ``${VAR}`` / ``${VAR:-default}`` values loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from linker.config.load import ConfigError, load_config

CONFIG = """\
admin:
  ip: 0.0.0.0
  port: ${LINKER_ADMIN_PORT:-9990}
workers: ${LINKER_WORKERS:-2}
routers:
- protocol: http
  servers:
  - ip: ${LINKER_IP:-0.0.0.0}
    port: ${LINKER_PORT:-4140}
  interpreter:
    kind: io.l5d.namerd.http
    dst: /$/inet/${NAMERD_HOST:-namerd}/${NAMERD_PORT:-4180}
    namespace: default
"""


def test_env_values_and_defaults_load_with_their_types(tmp_path: Path) -> None:
    path = tmp_path / "linker.yaml"
    path.write_text(CONFIG)
    defaults = load_config(str(path), env={})
    assert defaults.routers[0].servers[0].port == 4140
    assert (defaults.admin.ip, defaults.admin.port, defaults.workers) == ("0.0.0.0", 9990, 2)
    assert defaults.routers[0].interpreter == {
        "kind": "io.l5d.namerd.http",
        "dst": "/$/inet/namerd/4180",
        "namespace": "default",
    }
    env = {"LINKER_PORT": "4242", "LINKER_WORKERS": "3", "NAMERD_HOST": "namerd-1"}
    config = load_config(str(path), env=env)
    assert config.routers[0].servers[0].port == 4242
    assert config.workers == 3
    assert config.routers[0].interpreter is not None
    assert config.routers[0].interpreter["dst"] == "/$/inet/namerd-1/4180"


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "linker.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("LINKER_PORT", "4343")
    assert load_config(str(path)).routers[0].servers[0].port == 4343


def test_a_bad_value_from_the_environment_is_reported_at_its_key(tmp_path: Path) -> None:
    path = tmp_path / "linker.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError, match=r"linker\.yaml:9:5: .*port: expected int, got 'http'"):
        load_config(str(path), env={"LINKER_PORT": "http"})
    path.write_text("admin:\n  port: ${ADMIN}\nrouters:\n- protocol: http\n")
    with pytest.raises(
        ConfigError, match=r"linker\.yaml:2:9: environment variable ADMIN is not set"
    ):
        load_config(str(path), env={})
