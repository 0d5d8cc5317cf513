"""namerd.config: a config file with ``${VAR}`` / ``${VAR:-default}`` values loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from namerd.config import ConfigError, load_config

CONFIG = """\
admin:
  ip: 0.0.0.0
  port: ${NAMERD_ADMIN_PORT:-9991}
storage:
  kind: io.l5d.redis
  url: ${NAMERD_REDIS_URL:-redis://redis:6379/0}
interfaces:
- kind: io.l5d.httpController
  ip: 0.0.0.0
  port: ${NAMERD_PORT:-4180}
workers: ${NAMERD_WORKERS:-2}
"""


def test_env_values_and_defaults_load_with_their_types(tmp_path: Path) -> None:
    path = tmp_path / "namerd.yaml"
    path.write_text(CONFIG)
    defaults = load_config(str(path), env={})
    assert (defaults.interface.port, defaults.admin.port, defaults.workers) == (4180, 9991, 2)
    assert defaults.storage.url == "redis://redis:6379/0"
    env = {"NAMERD_PORT": "4181", "NAMERD_REDIS_URL": "redis://r2:6380/1", "NAMERD_TOKEN": "t"}
    config = load_config(str(path), env=env)
    assert config.interface.port == 4181
    assert config.storage.url == "redis://r2:6380/1"
    assert config.auth_token == "t"  # the same env feeds NAMERD_TOKEN


def test_the_process_environment_is_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "namerd.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("NAMERD_PORT", "4182")
    assert load_config(str(path)).interface.port == 4182


def test_an_unset_variable_names_the_file_position_and_variable(tmp_path: Path) -> None:
    path = tmp_path / "namerd.yaml"
    path.write_text("storage:\n  kind: io.l5d.redis\n  url: ${REDIS_URL}\n")
    with pytest.raises(ConfigError, match=r"namerd\.yaml:3:8: environment variable REDIS_URL "):
        load_config(str(path), env={})
