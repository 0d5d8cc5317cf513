"""Fixtures for the namerd tests: real redis-server processes, never fakes or mocks.

Every test that needs Redis gets a fresh server from ``EmbeddedRedis`` (it starts in a few
milliseconds), so tests can kill, freeze and restart it without affecting each other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from namerd.storage.embedded_redis import EmbeddedRedis, find_redis_server
from namerd.storage.store import RedisDtabStore

# Upper bound for every "wait until something happens" in these tests. It only limits how
# long a broken test hangs; a passing test is never slowed down by it.
WAIT_S = 10.0

# Store settings that make reconnects fast enough for tests.
FAST_STORE_OPTIONS: dict[str, Any] = {
    "reconnect_min_s": 0.01,
    "reconnect_max_s": 0.1,
    "socket_timeout_s": 2.0,
    "connect_timeout_s": 2.0,
}


def short_dir(tmp_path: Path) -> Iterator[Path]:
    """Yield a data dir whose ``redis.sock`` path fits the ~104-byte unix socket limit.

    pytest's tmp_path is usually short enough. A long $TMPDIR (macOS, some CI runners) is not,
    and then we fall back to a fresh directory under /tmp.
    """
    candidate = tmp_path / "redis"
    if len(os.fsencode(candidate / "redis.sock")) <= 100:
        yield candidate
        return
    fallback = Path(tempfile.mkdtemp(prefix="l5r-", dir="/tmp"))
    try:
        yield fallback / "redis"
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


@pytest.fixture
def redis_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory for an EmbeddedRedis; it does not exist yet."""
    yield from short_dir(tmp_path)


@pytest.fixture
def embedded_redis(redis_data_dir: Path) -> Iterator[EmbeddedRedis]:
    """A running EmbeddedRedis on a private data dir; stopped (or killed) after the test."""
    server = EmbeddedRedis(redis_data_dir, start_timeout_s=WAIT_S, stop_timeout_s=WAIT_S)
    server.start()
    try:
        yield server
    finally:
        process = server.process
        if process is not None and process.poll() is None:
            # A test may leave it SIGSTOPped; SIGCONT first so SIGTERM can be handled.
            process.send_signal(signal.SIGCONT)
        server.stop()


@pytest.fixture
def redis_url(embedded_redis: EmbeddedRedis) -> str:
    """The ``unix://`` URL of the running embedded server."""
    return embedded_redis.url


StoreFactory = Callable[..., RedisDtabStore]


@pytest.fixture
def store_factory(redis_url: str) -> StoreFactory:
    """``store_factory(**options)`` -> a RedisDtabStore on the embedded server.

    Reconnects are fast. Call it inside the test's event loop, and close the store there.
    Each call is a separate store, like another namerd replica.
    """

    def make(**options: Any) -> RedisDtabStore:
        return RedisDtabStore.from_url(redis_url, **{**FAST_STORE_OPTIONS, **options})

    return make


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_tcp_pong(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no PONG on port {port}: {log_path.read_text(errors='replace')}")
        time.sleep(0.01)


def _spawn(args: list[str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        _wait_for_tcp_pong(port, process, log_path)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


@pytest.fixture
def tcp_redis_port(tmp_path: Path) -> Iterator[int]:
    """A redis-server on a loopback TCP port (what a ``redis://host:port`` deployment uses).

    TCP matters: redis-py configures TCP connections differently from unix sockets.
    """
    port = _free_tcp_port()
    data_dir = tmp_path / "tcp-only-redis"
    data_dir.mkdir()
    process = _spawn(
        [os.fspath(find_redis_server()), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", os.fspath(data_dir)],
        port,
        data_dir / "redis.log",
    )  # fmt: skip
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[int, int, str]]:
    """A TCP redis-server plus one Sentinel monitoring it.

    Yields ``(redis_port, sentinel_port, service_name)``. The Sentinel is the same binary run
    with ``--sentinel``.
    """
    binary = os.fspath(find_redis_server())
    redis_port, sentinel_port, service = _free_tcp_port(), _free_tcp_port(), "namerd-test"
    data_dir = tmp_path / "tcp-redis"
    data_dir.mkdir()
    redis_process = _spawn(
        [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", os.fspath(data_dir)],
        redis_port,
        data_dir / "redis.log",
    )  # fmt: skip
    sentinel_conf = data_dir / "sentinel.conf"
    sentinel_conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndaemonize no\ndir {data_dir}\n"
        f"sentinel monitor {service} 127.0.0.1 {redis_port} 1\n"
    )
    processes = [redis_process]
    try:
        processes.append(
            _spawn(
                [binary, os.fspath(sentinel_conf), "--sentinel"],
                sentinel_port,
                data_dir / "sentinel.log",
            )
        )
        yield redis_port, sentinel_port, service
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
