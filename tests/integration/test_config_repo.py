"""Every config in the repository that is meant to start validates, and starts on loopback.

The configs: ``compose/config/*.yaml`` (in the environment of ``compose/.env.example``), the two
``linker.quickstart`` writes, and README.md's linker example. Each is checked with ``--validate``
(compose's as a real command in exactly that environment, the others through ``main()``), then
started (ports moved to free ones, Redis and Sentinel real) until its admin server answers
``/admin/ping``. Starting compose's namerd and linker is in the default run; the other starts
take a few seconds each and are marked ``slow``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import linker.main
import namerd.main
from linker.quickstart import PORTS, write_configs
from namerd.storage.embedded_redis import EmbeddedRedis
from tests.namerd.conftest import sentinel_setup

from .namerd_proc import START_TIMEOUT_S, free_ports

__all__ = ["sentinel_setup"]  # a fixture, imported to be used here

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
#: compose mounts ./disco at /disco in namerd's container (docker-compose.yml); on this host
#: the same directory is here. compose/check_configs.py maps it the same way.
DISCO_ENV = {"NAMERD_DISCO_DIR": str(COMPOSE / "disco")}


def env_example() -> dict[str, str]:
    """compose/.env.example as a mapping (``KEY=value``, quotes removed, comments skipped)."""
    out = {}
    for line in (COMPOSE / ".env.example").read_text().splitlines():
        m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.strip())
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out[m.group(1)] = value
    return out


def readme_linker_config() -> str:
    """The first YAML block of README.md's linker section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## linker") :]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def _env(extra: dict[str, str]) -> dict[str, str]:
    """Only ``extra`` (and what runs Python): nothing from this shell may fill a gap."""
    keep = {k: os.environ[k] for k in ("PATH", "PYTHONPATH", "HOME", "TMPDIR") if k in os.environ}
    return {**keep, **extra}


def validate(tool: str, config: Path, env: dict[str, str], cwd: Path = ROOT) -> None:
    r = subprocess.run(
        [sys.executable, "-m", f"{tool}.main", "--validate", "-c", str(config)],
        env=_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "configuration is valid" in r.stdout


# -- validate -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "name"),
    [("linker", "linker.yaml"), ("namerd", "namerd.yaml"), ("namerd", "namerd-sentinel.yaml")],
)
def test_compose_configs_validate(tool: str, name: str) -> None:
    validate(tool, COMPOSE / "config" / name, {**env_example(), **DISCO_ENV})


def validate_in_process(
    main: Callable[[list[str]], int], config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--validate", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "configuration is valid" in out


def test_quickstart_configs_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namerd_cfg, linker_cfg = write_configs(tmp_path)
    validate_in_process(namerd.main.main, namerd_cfg, capsys)
    validate_in_process(linker.main.main, linker_cfg, capsys)


def test_readme_linker_config_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "linker.yaml"
    cfg.write_text(readme_linker_config())
    validate_in_process(linker.main.main, cfg, capsys)


def test_check_configs_maps_container_paths_to_the_host() -> None:
    spec = importlib.util.spec_from_file_location("check_configs", COMPOSE / "check_configs.py")
    assert spec is not None
    assert spec.loader is not None
    check_configs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_configs)
    volumes = [
        {"type": "bind", "source": str(COMPOSE / "config"), "target": "/etc/l5py"},
        {"type": "bind", "source": str(COMPOSE / "disco"), "target": "/disco"},
    ]
    model = {
        "services": {
            "namerd-1": {
                "command": ["namerd", "-c", "/etc/l5py/namerd.yaml"],
                "volumes": volumes,
                "environment": {"NAMERD_WORKERS": "2", "NAMERD_TOKEN": None},
            }
        }
    }
    [(_, module, host_file, env)] = check_configs.config_checks(model)
    assert (module, host_file) == ("namerd.main", str(COMPOSE / "config" / "namerd.yaml"))
    assert env == {"NAMERD_WORKERS": "2", **DISCO_ENV}
    # A variable the service sets is the service's.
    text = "rootDir: ${NAMERD_DISCO_DIR:-/disco}\n"
    assert check_configs.container_path_env(text, {"NAMERD_DISCO_DIR": "/x"}, volumes) == {}


# -- start --------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(cmd: list[str], env: dict[str, str], ping: str, cwd: Path) -> Iterator[None]:
    """Run ``cmd`` until ``ping`` answers ``pong``; SIGTERM its process group after."""
    log = cwd / f"{Path(cmd[2]).name}-{len(list(cwd.iterdir()))}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=_env(env),
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"{cmd} exited {proc.returncode}:\n{log.read_text()}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(ping, timeout=1) as r:
                    if r.read() == b"pong":
                        break
            assert time.monotonic() < deadline, f"{cmd} did not come up:\n{log.read_text()}"
            time.sleep(0.1)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def namerd_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "namerd.main", "-c", str(config), "--workers", "1", *args]


def linker_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "linker.main", "-c", str(config), "--workers", "1"]


def ping(port: int) -> str:
    return f"http://127.0.0.1:{port}/admin/ping"


def test_compose_namerd_and_linker_start(tmp_path: Path) -> None:
    api, admin, router, linker_admin = free_ports(4)
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    try:
        namerd_env = {
            **env_example(),
            **DISCO_ENV,
            "NAMERD_REDIS_URL": redis.url,
            "NAMERD_IP": "127.0.0.1",
            "NAMERD_PORT": str(api),
            "NAMERD_ADMIN_IP": "127.0.0.1",
            "NAMERD_ADMIN_PORT": str(admin),
        }
        linker_env = {
            **env_example(),
            "LINKER_IP": "127.0.0.1",
            "LINKER_PORT": str(router),
            "LINKER_ADMIN_IP": "127.0.0.1",
            "LINKER_ADMIN_PORT": str(linker_admin),
            "NAMERD_HOST": "127.0.0.1",
            "NAMERD_PORT": str(api),
        }
        namerd_cfg, linker_cfg = (
            COMPOSE / "config" / "namerd.yaml",
            COMPOSE / "config" / "linker.yaml",
        )
        with (
            running(namerd_cmd(namerd_cfg), namerd_env, ping(admin), tmp_path),
            running(linker_cmd(linker_cfg), linker_env, ping(linker_admin), tmp_path),
        ):
            pass
    finally:
        redis.stop()


@pytest.mark.slow
def test_compose_sentinel_namerd_starts(
    tmp_path: Path, sentinel_setup: tuple[int, int, str]
) -> None:
    _, sentinel_port, service = sentinel_setup
    api, admin = free_ports(2)
    env = {
        **env_example(),
        **DISCO_ENV,
        **{f"REDIS_SENTINEL_{i}": "127.0.0.1" for i in (1, 2, 3)},
        "REDIS_SENTINEL_PORT": str(sentinel_port),
        "REDIS_SENTINEL_SERVICE": service,
        "NAMERD_IP": "127.0.0.1",
        "NAMERD_PORT": str(api),
        "NAMERD_ADMIN_IP": "127.0.0.1",
        "NAMERD_ADMIN_PORT": str(admin),
    }
    with running(
        namerd_cmd(COMPOSE / "config" / "namerd-sentinel.yaml"), env, ping(admin), tmp_path
    ):
        pass


@pytest.mark.slow
def test_quickstart_configs_start(tmp_path: Path) -> None:
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    namerd_cfg, linker_cfg = write_configs(tmp_path, ports)
    data = namerd_cmd(namerd_cfg, "--data-dir", str(tmp_path / "namerd"))
    with (
        running(data, {}, ping(ports["namerd-admin"]), tmp_path),
        running(linker_cmd(linker_cfg), {}, ping(ports["linker-admin"]), tmp_path),
    ):
        pass


@pytest.mark.slow
def test_readme_linker_config_starts(tmp_path: Path) -> None:
    router, admin = free_ports(2)
    text = readme_linker_config()
    assert "port: 9990" in text
    assert "port: 4140" in text
    cfg = tmp_path / "linker.yaml"
    cfg.write_text(
        text.replace("port: 9990", f"port: {admin}").replace("port: 4140", f"port: {router}")
    )
    with running(linker_cmd(cfg), {}, ping(admin), tmp_path):
        pass
