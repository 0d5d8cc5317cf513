"""Run a real linker (master + trio workers) and real backends for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from .namerd_proc import START_TIMEOUT_S, free_ports


@dataclass
class Linker:
    """A running linker subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: Path
    workers: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        return httpx.get(f"{self.admin}/admin/metrics.json", timeout=5).json()

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def wait_ready(self, workers: int | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
        want = workers or self.workers
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"linker exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if self.metrics().get("master/workers_ready") == want:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"linker not ready with {want} workers:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = START_TIMEOUT_S) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout_s)
        return self.proc.returncode


def linker_config(port: int, admin_port: int, router: str, top: str = "") -> str:
    """A one-router config; ``router`` is extra YAML indented under the router, ``top`` extra
    top-level YAML (e.g. ``namers:``)."""
    return (
        f"{top}admin:\n  port: {admin_port}\nrouters:\n- protocol: http\n  label: outgoing\n"
        f"  servers:\n  - port: {port}\n{router}"
    )


def namerd_interpreter(namerd_api_port: int) -> str:
    return (
        "  interpreter:\n    kind: io.l5d.namerd.http\n    experimental: true\n"
        f"    dst: /$/inet/127.0.0.1/{namerd_api_port}\n    namespace: default\n"
    )


@contextlib.contextmanager
def running_linker(
    tmp: Path, router: str, *, workers: int = 2, top: str = "", args: tuple[str, ...] = ()
) -> Iterator[Linker]:
    """Start the linker (free ports) with ``router`` YAML (and more command-line ``args``) and
    wait until every worker is ready."""
    port, admin_port = free_ports(2)
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "linker.yaml"
    cfg.write_text(linker_config(port, admin_port, router, top))
    log_path = tmp / "linker.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "linker.main", "-c", str(cfg), "--workers", str(workers), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
        )
    lk = Linker(proc, port, admin_port, log_path, workers)
    try:
        lk.wait_ready()
        yield lk
    finally:
        lk.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class Backend:
    """A real HTTP backend that answers with its name and counts what it received."""

    name: str
    server: ThreadingHTTPServer
    hits: Counter[str] = field(default_factory=Counter)
    bytes_received: int = 0

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


@contextlib.contextmanager
def backend(
    name: str, *, delay_s: float = 0.0, status: int = 200, port: int = 0
) -> Iterator[Backend]:
    """Start a backend (free port unless ``port``); ``/slow?s=N`` sleeps N s before answering.

    ``status`` is what it answers (500 for a broken instance); ``delay_s`` delays every answer
    (a slow or, with a large value, hanging instance).
    """
    state: dict[str, Backend] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            b = state["b"]
            b.hits[self.path] += 1
            length = self.headers.get("Content-Length")
            received = 0
            if length:
                remaining = int(length)
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    if not chunk:
                        break
                    received += len(chunk)
                    remaining -= len(chunk)
            elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    left = size
                    while left:
                        chunk = self.rfile.read(min(left, 1 << 20))
                        received += len(chunk)
                        left -= len(chunk)
                    self.rfile.readline()
            b.bytes_received += received
            if self.path.startswith("/slow"):
                time.sleep(float(self.path.split("s=")[1]) if "s=" in self.path else 1.0)
            elif delay_s:
                time.sleep(delay_s)
            body = f"{name} {received}\n".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", name)
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    b = Backend(name, server)
    state["b"] = b
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield b
    finally:
        server.shutdown()
        server.server_close()
