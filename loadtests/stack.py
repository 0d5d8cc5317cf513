"""A self-started loopback stack for the locust scenarios: namerd, a linker, named backends.

Everything is a subprocess on free 127.0.0.1 ports under one work directory, driven over HTTP
only (the load tests import nothing of ours):

* **namerd** (``python -m namerd.main``) with its embedded Redis (data in ``<dir>/namerd-data``,
  which survives a namerd restart) and an ``io.l5d.fs`` namer over ``<dir>/disco``;
* **backends** (``python -m loadtests.backend``): every replica in one process, except the one
  the backend-failure scenario kills, which has a process of its own;
* **a linker** (``python -m linker.main``, 2 workers by default) bound by namerd.

Services, by Host header (dtab ``/svc => /#/io.l5d.fs; /svc/beta => /svc/beta-v1;``):

=======  ===========================  ===================================================
Host     replicas (X-Served-By)       used by
=======  ===========================  ===================================================
alpha    alpha-1, alpha-2, alpha-3    backend-failure kills alpha-3 (its own process)
beta     beta-v1 (beta-v2 after flip) flip appends ``/svc/beta => /svc/beta-v2``
gamma    gamma-1                      steady traffic only
=======  ===========================  ===================================================

Cleanup is the point of this module: every process runs in its own session and is stopped by
process group (SIGTERM, then SIGKILL after ``stop_timeout_s``); children that leave the group
(namerd's embedded Redis runs in a session of its own) are remembered by pid and start time and
killed too. On Linux each child also gets ``PR_SET_PDEATHSIG`` = SIGTERM, so even a SIGKILLed
orchestrator takes its stack down with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

__all__ = [
    "FLIP_DENTRY",
    "FLIP_SERVICE",
    "HOST",
    "INITIAL_DTAB",
    "LINKER_POLICY",
    "LINKER_POLICY_SUMMARY",
    "REPLICAS",
    "SERVICES",
    "VICTIM",
    "LocalStack",
    "StackError",
    "free_ports",
    "http_get",
    "spawn",
    "stop_group",
]

HOST = "127.0.0.1"
#: The repository root: children run here so ``python -m loadtests.backend`` imports.
REPO = Path(__file__).resolve().parents[1]
#: Host headers the local stack serves.
SERVICES = ("alpha", "beta", "gamma")
#: The fs namer's files (one per concrete name) and the replicas in each.
REPLICAS: dict[str, tuple[str, ...]] = {
    "alpha": ("alpha-1", "alpha-2", "alpha-3"),
    "beta-v1": ("beta-v1",),
    "beta-v2": ("beta-v2",),
    "gamma": ("gamma-1",),
}
#: The replica the backend-failure scenario kills (it runs in a process of its own).
VICTIM = "alpha-3"
FLIP_SERVICE = "beta"
INITIAL_DTAB = "/svc => /#/io.l5d.fs; /svc/beta => /svc/beta-v1;"
#: Appended to the dtab by the flip (later dentries win).
FLIP_DENTRY = "/svc/beta => /svc/beta-v2"
#: The local linker's client policy: Linkerd's defaults except two choices, both shown in
#: every summary (``LINKER_POLICY_SUMMARY``). Reads that fail are retried
#: (``retryableRead5XX``; the default classifier retries only requests that never reached a
#: server), and the accrual backoff is 1-5 s instead of 5-300 s, so that a short run sees a
#: restored replica probed and brought back.
LINKER_POLICY = """\
  client:
    failureAccrual:
      kind: io.l5d.consecutiveFailures
      failures: 5
      backoff: {kind: jittered, minMs: 1000, maxMs: 5000}
  service:
    responseClassifier: {kind: io.l5d.http.retryableRead5XX}
"""
LINKER_POLICY_SUMMARY = (
    "failureAccrual consecutiveFailures 5, backoff jittered 1-5 s; responseClassifier "
    "retryableRead5XX; retry budget, balancer (p2c) and timeouts at their defaults"
)

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A component of the local stack did not start (the message names its log)."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open together, so they cannot repeat)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def die_with_parent() -> None:
    """``preexec_fn``: ask Linux to SIGTERM this child when its parent dies (PR_SET_PDEATHSIG).

    The kernel watches the *thread* that forked, so only the orchestrator's main thread may
    spawn children: then "that thread exited" means "the orchestrator exited".
    """
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def http_get(url: str, timeout_s: float = 2.0, headers: dict[str, str] | None = None) -> bytes:
    """GET ``url`` and return the body (raises on a non-2xx status or a network error)."""
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return bytes(r.read())


def spawn(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a session (process group) of its own, output appended to ``log_path``.

    A terminal's Ctrl-C then reaches the orchestrator only, which stops each child by its
    group in a known order instead of every process dying at once mid-action.
    """
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )


def stop_group(popen: subprocess.Popen[bytes], timeout_s: float, sig: int = signal.SIGTERM) -> None:
    """Signal ``popen``'s process group, wait up to ``timeout_s``, then SIGKILL the group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)
    try:
        popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout_s)
    # Helpers that outlived their leader are still in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, signal.SIGKILL)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class LocalStack:
    """The loopback stack of the scenarios; use as a context manager (always torn down)."""

    workdir: Path
    workers: int = 2
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0
    namerd_shutdown_grace_ms: int = 2000
    procs: dict[str, _Proc] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # (pid, start time) of descendants that left their leader's group (namerd's embedded Redis).
    _strays: list[tuple[int, str]] = field(default_factory=list)

    # -- addresses ------------------------------------------------------------------------------
    @property
    def target(self) -> str:
        """The linker's router URL."""
        return f"http://{HOST}:{self.ports['linker']}"

    @property
    def linker_admin(self) -> str:
        """The linker's admin URL."""
        return f"http://{HOST}:{self.ports['linker-admin']}"

    @property
    def namerd_url(self) -> str:
        """namerd's HTTP API."""
        return f"http://{HOST}:{self.ports['namerd']}"

    @property
    def namerd_admin(self) -> str:
        """namerd's admin URL."""
        return f"http://{HOST}:{self.ports['namerd-admin']}"

    def describe(self) -> str:
        """One line for the summary."""
        backends = ", ".join(f"{r}:{self.ports[r]}" for reps in REPLICAS.values() for r in reps)
        return (
            f"local: namerd {self.namerd_url} (embedded Redis), linker {self.target} "
            f"({self.workers} workers, admin {self.linker_admin}), backends {backends}"
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Start every component and wait until each service routes through the linker."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        names = [r for reps in REPLICAS.values() for r in reps]
        ports = free_ports(len(names) + 4)
        roles = [*names, "namerd", "namerd-admin", "linker", "linker-admin"]
        self.ports = dict(zip(roles, ports, strict=True))
        disco = self.workdir / "disco"
        disco.mkdir(exist_ok=True)
        for concrete, reps in REPLICAS.items():
            (disco / concrete).write_text("".join(f"{HOST} {self.ports[r]}\n" for r in reps))
        (self.workdir / "namerd.yaml").write_text(
            f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
            f"interfaces:\n- kind: io.l5d.httpController\n  port: {self.ports['namerd']}\n"
            f"admin:\n  port: {self.ports['namerd-admin']}\n"
            f"  shutdownGraceMs: {self.namerd_shutdown_grace_ms}\n"
        )
        (self.workdir / "linker.yaml").write_text(
            f"admin:\n  port: {self.ports['linker-admin']}\n"
            "routers:\n- protocol: http\n  label: outgoing\n"
            f"  servers:\n  - port: {self.ports['linker']}\n"
            "  interpreter:\n    kind: io.l5d.namerd.http\n    experimental: true\n"
            f"    dst: /$/inet/{HOST}/{self.ports['namerd']}\n    namespace: default\n"
            + LINKER_POLICY
        )
        self.start_backends([r for r in names if r != VICTIM], "backends")
        self.start_backends([VICTIM], VICTIM)
        self.start_namerd()
        self.put_initial_dtab()
        self._spawn(
            "linker",
            [
                sys.executable,
                "-m",
                "linker.main",
                "-c",
                str(self.workdir / "linker.yaml"),
                "--workers",
                str(self.workers),
            ],
        )
        self._wait(
            "linker",
            lambda: self.linker_metrics().get("master/workers_ready") == self.workers,
        )
        for svc in SERVICES:
            # The first request of a name also waits for the linker's namerd watches.
            self._wait(f"routing of {svc}", partial(self._routes, svc), "linker")

    def start_backends(self, replicas: list[str], proc_name: str) -> None:
        """Start one backend process serving ``replicas``; waits until each port answers."""
        self._spawn(
            proc_name,
            [
                sys.executable,
                "-m",
                "loadtests.backend",
                *(f"{r}={self.ports[r]}" for r in replicas),
            ],
        )
        for r in replicas:
            self._wait(f"backend {r}", partial(self._answers, r), proc_name)

    def kill_backend(self, proc_name: str = VICTIM) -> None:
        """SIGKILL a backend process: its sockets vanish at once, as in a crash."""
        proc = self.procs.pop(proc_name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(self.stop_timeout_s)

    def start_namerd(self) -> None:
        """Start namerd (again, on the same ports and data) and wait until its API answers."""
        self._spawn(
            "namerd",
            [
                sys.executable,
                "-m",
                "namerd.main",
                str(self.workdir / "namerd.yaml"),
                "--data-dir",
                str(self.workdir / "namerd-data"),
            ],
        )
        self._wait("namerd", self.namerd_up)

    def stop_namerd(self, sig: int = signal.SIGTERM) -> float:
        """Stop namerd with ``sig`` and wait until it exited; returns how long that took (s).

        SIGTERM is namerd's graceful stop (it drains, then stops its embedded Redis); SIGKILL is a
        crash, which leaves the embedded Redis running on the data dir as it would in production
        (the next namerd reuses it); that Redis is still cleaned up by :meth:`close`.
        """
        proc = self.procs.pop("namerd")
        self._remember_strays(proc)
        started = time.monotonic()
        stop_group(proc.popen, self.stop_timeout_s, sig)
        return time.monotonic() - started

    def close(self) -> None:
        """Stop everything this stack started (safe to call twice, and after a failed start)."""
        for proc in self.procs.values():
            self._remember_strays(proc)
        # All at once (each drains in parallel), the linker first so that it is not left
        # logging reconnect noise against a namerd that has gone.
        order = sorted(self.procs.values(), key=lambda p: p.name != "linker")
        for proc in order:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for proc in order:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(self.stop_timeout_s)
            # Workers or helpers that outlived their master are still in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
        self.procs.clear()
        self._kill_strays()

    # -- helpers --------------------------------------------------------------------------------
    def linker_metrics(self) -> dict[str, Any]:
        """The linker's merged metrics (flat JSON)."""
        return dict(json.loads(http_get(f"{self.linker_admin}/admin/metrics.json")))

    def namerd_up(self) -> bool:
        """True when namerd's admin and API both answer."""
        try:
            return (
                http_get(f"{self.namerd_admin}/admin/ping", 1.0).strip() == b"pong"
                and http_get(f"{self.namerd_url}/api/1/dtabs", 1.0) is not None
            )
        except (OSError, urllib.error.URLError):
            return False

    def put_initial_dtab(self) -> None:
        """Seed the ``default`` namespace with :data:`INITIAL_DTAB`."""
        req = urllib.request.Request(
            f"{self.namerd_url}/api/1/dtabs/default",
            data=INITIAL_DTAB.encode(),
            method="PUT",
            headers={"Content-Type": "application/dtab"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status != 204:
                raise StackError(f"PUT of the initial dtab answered {r.status}")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        """The end of component ``name``'s log."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def _answers(self, replica: str) -> bool:
        return bool(http_get(f"http://{HOST}:{self.ports[replica]}/", 1.0))

    def _routes(self, svc: str) -> bool:
        return bool(http_get(self.target + "/", 5.0, {"Host": svc}))

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log_path = self.workdir / f"{name}.log"
        # A token in the caller's environment would make this private namerd refuse our writes.
        env = {k: v for k, v in os.environ.items() if k != "NAMERD_TOKEN"}
        self.procs[name] = _Proc(name, spawn(cmd, log_path, env), log_path)

    def _wait(self, what: str, ready: Callable[[], bool], proc_name: str | None = None) -> None:
        """Poll ``ready`` until it is true; fail early if ``proc_name`` (default ``what``) died."""
        proc = self.procs.get(proc_name or what)
        deadline = time.monotonic() + self.start_timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if proc is not None and proc.popen.poll() is not None:
                raise StackError(
                    f"{what} exited with {proc.popen.returncode}; see {proc.log_path}:\n"
                    + self.log_tail(proc.name)
                )
            try:
                if ready():
                    return
            except (OSError, urllib.error.URLError, ValueError) as err:
                last = err
            time.sleep(0.1)
        raise StackError(
            f"{what} not ready within {self.start_timeout_s:.0f} s ({last}); logs in {self.workdir}"
        )

    def _remember_strays(self, proc: _Proc) -> None:
        for pid in _descendants(proc.popen.pid):
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == proc.popen.pid:
                    continue  # killed with the group
            start = _start_time(pid)
            if start is not None and (pid, start) not in self._strays:
                self._strays.append((pid, start))

    def _kill_strays(self) -> None:
        for pid, start in self._strays:
            # The start time guards against a recycled pid: only our own process is killed.
            if _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for pid, start in self._strays:
            while _start_time(pid) == start and time.monotonic() < deadline:
                time.sleep(0.05)
            if _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._strays.clear()
