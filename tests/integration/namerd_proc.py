"""Run a real namerd (gunicorn master + uvicorn workers + embedded or external Redis) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Upper bound for waiting on a process to come up or go down; only limits a broken test.
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all held open together, so they cannot repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Namerd:
    """A running namerd subprocess."""

    proc: subprocess.Popen[bytes]
    api_port: int
    admin_port: int
    data_dir: Path
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = START_TIMEOUT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        return self.proc.returncode


def write_config(path: Path, api_port: int, admin_port: int, extra: str = "") -> Path:
    path.write_text(
        f"interfaces:\n- kind: io.l5d.httpController\n  port: {api_port}\n"
        f"admin:\n  port: {admin_port}\n  shutdownGraceMs: 5000\n{extra}",
        encoding="utf-8",
    )
    return path


def start_namerd(
    tmp: Path,
    *,
    extra_config: str = "",
    data_dir: Path | None = None,
    workers: int = 2,
    env: dict[str, str] | None = None,
    name: str = "namerd",
    ports: tuple[int, int] | None = None,
    args: tuple[str, ...] = (),
) -> Namerd:
    """Start namerd (free ports unless ``ports`` = (api, admin)) and wait until it answers."""
    api_port, admin_port = ports or free_ports(2)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp / f"{name}.yaml", api_port, admin_port, extra_config)
    data_dir = data_dir or tmp / "data"
    log_path = tmp / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "namerd.main",
                str(cfg),
                "--workers",
                str(workers),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env=full_env,
            start_new_session=True,
        )
    nd = Namerd(proc, api_port, admin_port, data_dir, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"namerd exited with {proc.returncode}:\n{nd.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(nd.admin + "/admin/ping", timeout=1).text == "pong"
                and httpx.get(nd.api + "/api/1/dtabs", timeout=1).status_code == 200
            ):
                return nd
        if time.monotonic() > deadline:
            nd.stop(signal.SIGKILL)
            raise RuntimeError(f"namerd did not come up in {START_TIMEOUT_S}s:\n{nd.log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_namerd(tmp: Path, **kwargs: object) -> Iterator[Namerd]:
    """Start namerd for a ``with`` block; always stopped (and its process group killed) after."""
    nd = start_namerd(tmp, **kwargs)  # type: ignore[arg-type]
    try:
        yield nd
    finally:
        nd.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(nd.proc.pid, signal.SIGKILL)
