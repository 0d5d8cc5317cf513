"""The systems under test, each a subprocess on 127.0.0.1 (free ports, one work directory).

* the **backend**: nginx serving ``/`` (``ok\\n``) and ``/64k`` (65,536 bytes) from memory /
  page cache with one worker, or, without nginx, :mod:`loadtests.bench.fastbackend` (asyncio);
* **nginx** as a reverse proxy: one worker, keep-alive upstream connections (the setup a user
  would compare a sidecar proxy with);
* **namerd** (embedded Redis, ``io.l5d.fs``) and a **linker** with every routing feature on:
  Host identification, dtab from namerd (watches), p2c balancer, failure accrual,
  retryableRead5XX with a retry budget, a total timeout (so ``l5d-ctx-deadline`` goes
  upstream), ``l5d-*`` headers and metrics.

Everything runs in its own session and is stopped by process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..stack import die_with_parent, free_ports

__all__ = [
    "Proc",
    "check_answers",
    "free_ports",
    "nginx_path",
    "rss_kib",
    "start_backend",
    "start_floor",
    "start_linker",
    "start_namerd",
    "start_nginx_proxy",
]

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
BODY_64K = 64 * 1024


@dataclass
class Proc:
    """A started system: its process (group leader), port and what to show in the report."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    admin_port: int | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """The leader and its descendants (linker workers, nginx workers)."""
        return [self.popen.pid, *_descendants(self.popen.pid)]

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the children if any (pre-fork), else the leader."""
        children = _children(self.popen.pid)
        return children or [self.popen.pid]

    def stop(self, timeout_s: float = 20) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


#: Set by ``--no-nginx``: behave as if nginx were not installed.
NGINX_DISABLED = False


def nginx_path() -> str | None:
    if NGINX_DISABLED:
        return None
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for child in _children(pid):
        out.append(child)
        out.extend(_descendants(child))
    return out


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _spawn(name: str, cmd: list[str], workdir: Path, port: int, **kw: object) -> Proc:
    log = workdir / f"{name}.log"
    out = open(log, "wb")
    # From the repository root, so that `python -m loadtests...` finds the package.
    # die_with_parent: even a SIGKILLed harness leaves no benchmark processes behind.
    popen = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=REPO,
        preexec_fn=die_with_parent,
    )
    out.close()
    return Proc(name, popen, port, log, **kw)  # type: ignore[arg-type]


def _wait_port(proc: Proc, port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout_s} s; see {proc.log}")


def _wait_http(
    proc: Proc, url: str, timeout_s: float = 60, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s} s ({last}); see {proc.log}")


def _nginx_conf(workdir: Path, name: str, server_block: str, extra_http: str = "") -> Path:
    conf = workdir / f"{name}.conf"
    conf.write_text(
        f"""worker_processes 1;
daemon off;
master_process on;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {workdir}/{name}-tmp;
  proxy_temp_path {workdir}/{name}-tmp;
  {extra_http}
  {server_block}
}}
"""
    )
    (workdir / f"{name}-tmp").mkdir(exist_ok=True)
    return conf


def start_backend(workdir: Path) -> Proc:
    """The fast backend (nginx if installed, else the asyncio one)."""
    (port,) = free_ports(1)
    nginx = nginx_path()
    if nginx:
        big = workdir / "64k.bin"
        big.write_bytes(os.urandom(BODY_64K))
        # nginx started as root serves as `nobody`: the file and its directory must be readable.
        big.chmod(0o644)
        workdir.chmod(0o755)
        conf = _nginx_conf(
            workdir,
            "backend",
            f"""server {{
    listen {HOST}:{port};
    location = /64k {{ alias {big}; default_type application/octet-stream; }}
    location / {{ default_type text/plain; return 200 "ok\\n"; }}
  }}""",
        )
        proc = _spawn("backend", [nginx, "-c", str(conf), "-p", str(workdir)], workdir, port)
        proc.notes["kind"] = "nginx (1 worker, static)"
    else:
        cmd = [sys.executable, "-m", "loadtests.bench.fastbackend", "--port", str(port)]
        proc = _spawn("backend", cmd, workdir, port)
        proc.notes["kind"] = "python asyncio (nginx not installed)"
    _wait_port(proc, port)
    return proc


def start_nginx_proxy(workdir: Path, backend_port: int) -> Proc | None:
    """nginx as a 1-worker keep-alive reverse proxy, or None if nginx is not installed."""
    nginx = nginx_path()
    if not nginx:
        return None
    (port,) = free_ports(1)
    conf = _nginx_conf(
        workdir,
        "proxy",
        f"""server {{
    listen {HOST}:{port};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}""",
        extra_http=f"upstream backend {{ server {HOST}:{backend_port}; keepalive 128; }}",
    )
    proc = _spawn("nginx", [nginx, "-c", str(conf), "-p", str(workdir)], workdir, port)
    _wait_port(proc, port)
    return proc


def start_floor(workdir: Path, backend_port: int) -> Proc:
    """The trio + h11 framework floor (:mod:`loadtests.bench.floor`) in front of the backend."""
    (port,) = free_ports(1)
    cmd = [
        sys.executable,
        "-m",
        "loadtests.bench.floor",
        "--port",
        str(port),
        "--upstream",
        f"{HOST}:{backend_port}",
    ]
    proc = _spawn("floor", cmd, workdir, port)
    _wait_port(proc, port)
    return proc


def _command(name: str) -> list[str]:
    exe = shutil.which(name)
    if exe:
        return [exe]
    module = "namerd.main" if name == "namerd" else "linker.main"
    return [sys.executable, "-m", module]


def start_namerd(workdir: Path, backend_port: int) -> Proc:
    """namerd with its embedded Redis and an io.l5d.fs namer holding ``app`` -> the backend."""
    api, admin = free_ports(2)
    disco = workdir / "disco"
    disco.mkdir(exist_ok=True)
    (disco / "app").write_text(f"{HOST} {backend_port}\n")
    cfg = workdir / "namerd.yaml"
    cfg.write_text(
        f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
        f"interfaces:\n- kind: io.l5d.httpController\n  ip: {HOST}\n  port: {api}\n"
        f"admin:\n  ip: {HOST}\n  port: {admin}\n"
    )
    cmd = [*_command("namerd"), str(cfg), "--data-dir", str(workdir / "namerd-data")]
    proc = _spawn("namerd", cmd, workdir, api, admin_port=admin)
    _wait_http(proc, f"http://{HOST}:{admin}/admin/ping")
    req = urllib.request.Request(
        f"http://{HOST}:{api}/api/1/dtabs/default",
        data=b"/svc => /#/io.l5d.fs;",
        method="PUT",
        headers={"Content-Type": "application/dtab"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status not in (200, 204):
            raise RuntimeError(f"seeding the dtab failed: {r.status}")
    return proc


def start_linker(workdir: Path, namerd_api_port: int, workers: int, name: str) -> Proc:
    """A linker with ``workers`` workers, bound by namerd, every routing feature on."""
    port, admin = free_ports(2)
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(
        f"""admin: {{ip: {HOST}, port: {admin}}}
routers:
- protocol: http
  label: bench
  servers: [{{ip: {HOST}, port: {port}}}]
  identifier: {{kind: io.l5d.header.token, header: Host}}
  interpreter:
    kind: io.l5d.namerd.http
    dst: /$/inet/{HOST}/{namerd_api_port}
    namespace: default
  client:
    loadBalancer: {{kind: p2c}}
    failureAccrual: {{kind: io.l5d.consecutiveFailures, failures: 5}}
    requestAttemptTimeoutMs: 10000
  service:
    totalTimeoutMs: 30000
    responseClassifier: {{kind: io.l5d.http.retryableRead5XX}}
    retries:
      budget: {{minRetriesPerSec: 10, percentCanRetry: 0.2, ttlSecs: 10}}
"""
    )
    cmd = [*_command("linker"), "-c", str(cfg), "--workers", str(workers)]
    proc = _spawn(name, cmd, workdir, port, admin_port=admin)
    _wait_http(proc, f"http://{HOST}:{admin}/admin/ping")
    # Routed end to end on every worker (each binds the name on its first request).
    deadline = time.monotonic() + 60
    ok = 0
    while ok < 20 * workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} never routed app to the backend; see {proc.log}")
        try:
            req = urllib.request.Request(f"http://{HOST}:{port}/", headers={"Host": "app"})
            with urllib.request.urlopen(req, timeout=5) as r:
                ok += r.status == 200
        except OSError:
            time.sleep(0.05)
    proc.notes["workers"] = str(workers)
    return proc


def check_answers(name: str, port: int, host_header: str, expected: dict[str, int]) -> None:
    """Fail loudly unless every ``path`` answers 200 with ``expected[path]`` body bytes (a
    misconfigured system would otherwise be benchmarked answering errors very fast)."""
    for path, size in expected.items():
        req = urllib.request.Request(f"http://{HOST}:{port}{path}", headers={"Host": host_header})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            if r.status != 200 or len(body) != size:
                raise RuntimeError(
                    f"{name} answered {path} with {r.status} and {len(body)} bytes, "
                    f"expected 200 and {size}"
                )
