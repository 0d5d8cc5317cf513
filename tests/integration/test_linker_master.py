"""The linker's process model with real processes: a master subprocess, forked trio workers.

The workers run :func:`echo_main`, a small but real trio HTTP/1.1 server written here (raw trio
sockets, one request per connection, ``200 <pid>``, ``/slow?ms=N`` to keep requests in flight,
drains on shutdown). The same scenarios are meant to be re-run later against the real linker
worker. Run as ``python -m tests.integration.test_linker_master '<json options>'`` this module
*is* the launcher (see :func:`launch`).

Every wait is bounded polling; nothing asserts on how long something took.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from linker.process.admin import AdminServer
from linker.process.heartbeat import Heartbeat
from linker.process.master import Master, MasterSettings
from linker.process.worker import (
    EXIT_BOOT_FAILURE,
    EXIT_ERROR,
    EXIT_OK,
    WorkerContext,
    accept_queued,
    run_worker,
)

REPO = Path(__file__).resolve().parents[2]

#: Upper bound of every polling loop, in seconds; it only limits how long a broken test hangs.
WAIT_S = 30.0
#: Seconds between two polls.
POLL_S = 0.02

#: The flat metric name echo_main counts its requests under.
REQUESTS = "rt/test/service/svc/echo/requests"
INFLIGHT = "rt/test/inflight"

T = TypeVar("T")


# =============================================================================================
# The worker under test (runs in the forked children of the master subprocess)

#: Seconds a connection may take to send its request head.
READ_TIMEOUT_S = 10.0


@dataclass
class _Echo:
    ctx: WorkerContext
    requests: Any
    inflight: Any
    latency: Any


async def echo_main(ctx: WorkerContext, shutdown: trio.Event) -> None:
    """Answer ``200 <pid>`` to anything; drain in-flight requests once ``shutdown`` is set.

    ``ctx.config`` (a dict) can make it misbehave: ``fail_boot`` raises before ready,
    ``never_ready`` never calls ``ctx.ready()``, ``crash_after_ready`` raises right after.
    """
    cfg: dict[str, Any] = ctx.config
    if cfg.get("fail_boot"):
        raise RuntimeError("echo_main: configured to fail at boot (fail_boot)")
    rt = ctx.metrics.router("test")
    svc = rt.service("/svc/echo")
    app = _Echo(
        ctx, svc.counter("requests"), rt.gauge("inflight"), svc.histogram("request_latency_ms")
    )
    socks = [s for group in ctx.listeners.values() for s in group]
    for s in socks:
        s.setblocking(False)
    async with trio.open_nursery() as handlers:
        async with trio.open_nursery() as acceptors:
            for s in socks:
                acceptors.start_soon(_accept_loop, s, handlers, app)
            if cfg.get("never_ready"):
                await shutdown.wait()
                acceptors.cancel_scope.cancel()
                return
            ctx.ready()
            if cfg.get("crash_after_ready"):
                raise RuntimeError("echo_main: configured to crash after ready")
            await shutdown.wait()
            acceptors.cancel_scope.cancel()
        # Stop accepting, but first take what the kernel already queued: those clients have
        # connected and may have sent their request; closing now would reset them.
        for s in socks:
            for conn in accept_queued(s):
                handlers.start_soon(_handle, conn, app)
            s.close()


async def _accept_loop(sock: socket.socket, handlers: trio.Nursery, app: _Echo) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took it (every worker waits on the same queue)
        handlers.start_soon(_handle, conn, app)


async def _handle(conn: socket.socket, app: _Echo) -> None:
    app.inflight.add(1)
    started = time.monotonic()
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
    try:
        async with stream:
            buf = b""
            with trio.move_on_after(READ_TIMEOUT_S):
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
            if b"\r\n\r\n" not in buf:
                return
            target = buf.split(b"\r\n", 1)[0].split(b" ")[1].decode()
            url = urlsplit(target)
            if url.path == "/slow":
                await trio.sleep(int(parse_qs(url.query)["ms"][0]) / 1000)
            body = str(os.getpid()).encode()
            head = (
                "HTTP/1.1 200 OK\r\n"
                f"Content-Length: {len(body)}\r\n"
                f"X-Tag: {app.ctx.config.get('tag', '')}\r\n"
                f"X-Generation: {app.ctx.generation}\r\n"
                "Connection: close\r\n\r\n"
            )
            app.requests.incr()
            app.latency.add((time.monotonic() - started) * 1000)
            await stream.send_all(head.encode() + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        app.inflight.add(-1)


def _delegate(path: str, dtab: str, router: str | None) -> tuple[int, Any]:
    if path == "/boom":
        return 502, "namerd unavailable"
    return 200, {"type": "delegate", "path": path, "dtab": dtab, "router": router}


def launch(opts: dict[str, Any]) -> int:
    """Run a master with :func:`echo_main` workers; the subprocess entry point of these tests."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    config_path = Path(opts["config_path"])

    def load() -> dict[str, Any]:
        return dict(json.loads(config_path.read_text(encoding="utf-8")))

    settings = MasterSettings(**opts["settings"])
    master: Master
    admin = AdminServer(
        "127.0.0.1",
        opts["admin_port"],
        metrics_dir=opts["metrics_dir"],
        config_json=lambda: {"config": master.config},
        delegate=_delegate,
        on_shutdown=lambda: master.request_shutdown(),
        master_stats=lambda: master.stats(),
    )
    master = Master(
        settings,
        {"test": [("127.0.0.1", opts["port"])]},
        echo_main,
        load(),
        admin=admin,
        reload=load,
    )
    return master.run()


# =============================================================================================
# Harness


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            value = check()
            if value:
                return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Refused(Exception):
    """connect() was refused: nothing listens any more."""


class NoResponse(Exception):
    """The connection was reset or closed before a single response byte arrived."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def pid(self) -> int:
        return int(self.body)


def get(port: int, path: str = "/", timeout_s: float = 10.0) -> Reply:
    """One GET on a fresh connection, with errors sorted into :class:`Refused`,
    :class:`NoResponse` and anything else (a real failure)."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    except ConnectionRefusedError:
        raise Refused from None
    data = b""
    with s:
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
            while chunk := s.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            if not data:
                raise NoResponse from None
            raise
    if not data:
        raise NoResponse
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:])}
    if int(headers.get("content-length", -1)) != len(body):
        raise AssertionError(f"truncated response: {data!r}")
    return Reply(int(lines[0].split()[1]), headers, body)


@dataclass
class Linker:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    config_path: Path
    log_path: Path
    workers: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def admin(self, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metrics(self) -> dict[str, Any]:
        status, body = self.admin("/admin/metrics.json")
        assert status == 200
        return dict(json.loads(body))

    def set_config(self, **config: Any) -> None:
        self.config_path.write_text(json.dumps(config), encoding="utf-8")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def serving_pids(self, n: int) -> set[int]:
        """Send requests until ``n`` distinct workers have answered."""
        seen: set[int] = set()

        def more() -> set[int] | None:
            seen.add(get(self.port).pid)
            return seen if len(seen) >= n else None

        return wait_for(more, f"{n} distinct workers answering")

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"linker did not exit within {WAIT_S}s\n{self.log()}")


def start_linker(
    tmp: Path, *, config: dict[str, Any] | None = None, wait_ready: bool = True, **settings: Any
) -> Linker:
    tmp.mkdir(parents=True, exist_ok=True)
    settings = {
        "workers": 2,
        "graceful_timeout_s": 15.0,
        "heartbeat_timeout_s": 2.0,
        "heartbeat_interval_s": 0.2,
        "boot_timeout_s": 10.0,
        "check_interval_s": 0.05,
        "snapshot_interval_s": 0.05,
        **settings,
    }
    config_path = tmp / "config.json"
    config_path.write_text(json.dumps(config or {"tag": "v1"}), encoding="utf-8")
    opts: dict[str, Any] = {
        "port": free_port(),
        "admin_port": free_port(),
        "config_path": str(config_path),
        "metrics_dir": str(tmp / "metrics"),
        "settings": settings,
    }
    log_path = tmp / "linker.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_linker_master", json.dumps(opts)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    lk = Linker(proc, opts["port"], opts["admin_port"], config_path, log_path, settings["workers"])
    if wait_ready:

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"linker exited with {proc.returncode}\n{lk.log()}")
            gauges = lk.metrics()
            return gauges.get("master/workers_ready") == lk.workers and get(lk.port).status == 200

        wait_for(ready, "the linker to serve")
    return lk


def stop_linker(lk: Linker) -> None:
    if lk.proc.poll() is None:
        lk.proc.send_signal(signal.SIGQUIT)
        try:
            lk.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            lk.proc.kill()
            lk.proc.wait(WAIT_S)


@contextlib.contextmanager
def running_linker(tmp: Path, **kwargs: Any) -> Iterator[Linker]:
    lk = start_linker(tmp, **kwargs)
    try:
        yield lk
    finally:
        stop_linker(lk)


@dataclass
class Load:
    """A thread that sends GETs back to back on fresh connections and sorts the outcomes."""

    port: int
    path: str = "/"
    stop_on_refused: bool = False
    ok: list[Reply] = field(default_factory=list)
    refused: int = 0
    no_response: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = get(self.port, self.path)
                if reply.status != 200:
                    self.errors.append(f"status {reply.status}")
                self.ok.append(reply)
            except Refused:
                self.refused += 1
                if self.stop_on_refused:
                    return
            except NoResponse:
                self.no_response += 1
            except Exception as exc:
                self.errors.append(repr(exc))

    def stop(self) -> Load:
        self._stop.set()
        self.join()
        return self

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "load thread did not finish"


def slow_requests(port: int, n: int, ms: int) -> tuple[list[threading.Thread], list[Any]]:
    """Start ``n`` threads each doing one ``/slow?ms=`` GET; results land in the list."""
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(get(port, f"/slow?ms={ms}", timeout_s=WAIT_S))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, results


# =============================================================================================
# run_worker on its own (forked from the test process)


def fork_worker(
    tmp: Path, main: Callable[[WorkerContext, trio.Event], Any], *, master_pid: int | None = None
) -> tuple[int, Heartbeat]:
    hb = Heartbeat(str(tmp))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ctx = WorkerContext(
                worker_id=7,
                generation=1,
                listeners={},
                heartbeat=hb,
                metrics_dir=str(tmp),
                config={},
                heartbeat_interval_s=0.05,
                snapshot_interval_s=0.05,
            )
            if master_pid is not None:
                ctx.master_pid = master_pid
            run_worker(ctx, main)
        finally:
            os._exit(99)
    return pid, hb


def wait_exit_code(pid: int) -> int:
    def reaped() -> tuple[int] | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return (os.waitstatus_to_exitcode(status),) if done else None

    return wait_for(reaped, f"pid {pid} to exit")[0]


async def _boot_fails(ctx: WorkerContext, shutdown: trio.Event) -> None:
    raise RuntimeError("cannot load the config")


async def _fails_after_ready(ctx: WorkerContext, shutdown: trio.Event) -> None:
    ctx.ready()
    raise RuntimeError("lost the plot")


async def _returns_early(ctx: WorkerContext, shutdown: trio.Event) -> None:
    ctx.ready()


async def _drains(ctx: WorkerContext, shutdown: trio.Event) -> None:
    ctx.metrics.counter("drain/test").incr(5)
    ctx.ready()
    await shutdown.wait()
    await trio.sleep(0.05)  # "in-flight work" finishing after shutdown
    ctx.metrics.counter("drain/test").incr()


async def _ignores_shutdown(ctx: WorkerContext, shutdown: trio.Event) -> None:
    ctx.ready()
    await trio.sleep_forever()


@pytest.mark.parametrize(
    ("main", "code"),
    [
        (_boot_fails, EXIT_BOOT_FAILURE),
        (_fails_after_ready, EXIT_ERROR),
        (_returns_early, EXIT_ERROR),
    ],
)
def test_run_worker_exit_codes(tmp_path: Path, main: Any, code: int) -> None:
    pid, hb = fork_worker(tmp_path, main)
    assert wait_exit_code(pid) == code
    assert hb.is_ready() == (code != EXIT_BOOT_FAILURE)
    hb.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_worker_drains_on_sigterm_and_sigint(tmp_path: Path, sig: int) -> None:
    pid, hb = fork_worker(tmp_path, _drains)
    wait_for(hb.is_ready, "the worker to be ready")
    os.kill(pid, sig)
    assert wait_exit_code(pid) == EXIT_OK
    # The final snapshot was written after the drain finished.
    snap = json.loads((tmp_path / f"{pid}.json").read_text())
    assert snap["counters"]["drain/test"] == 6
    hb.close()


def test_run_worker_quits_on_sigquit(tmp_path: Path) -> None:
    pid, hb = fork_worker(tmp_path, _ignores_shutdown)
    wait_for(hb.is_ready, "the worker to be ready")
    os.kill(pid, signal.SIGQUIT)
    assert wait_exit_code(pid) == EXIT_OK
    hb.close()


def test_run_worker_beats_while_its_loop_runs(tmp_path: Path) -> None:
    pid, hb = fork_worker(tmp_path, _ignores_shutdown)
    wait_for(hb.is_ready, "the worker to be ready")
    first = os.fstat(hb.fileno()).st_mtime
    wait_for(lambda: os.fstat(hb.fileno()).st_mtime > first, "a second heartbeat")
    os.kill(pid, signal.SIGQUIT)
    assert wait_exit_code(pid) == EXIT_OK
    hb.close()


def test_run_worker_drains_when_its_master_dies(tmp_path: Path) -> None:
    marker = tmp_path / "drained"

    async def main(ctx: WorkerContext, shutdown: trio.Event) -> None:
        ctx.ready()
        await shutdown.wait()
        marker.write_text("yes")

    # A throwaway "master" forks the worker and exits at once; the worker is reparented.
    middle = os.fork()
    if middle == 0:  # pragma: no cover - child
        try:
            fork_worker(tmp_path, main, master_pid=os.getpid())
        finally:
            os._exit(0)
    assert wait_exit_code(middle) == 0
    wait_for(marker.exists, "the orphaned worker to drain")


# =============================================================================================
# The admin server on its own (in this process, no master)


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[tuple[AdminServer, list[str]]]:
    from linker.metrics import Metrics

    m = Metrics()
    m.router("r").service("/svc/a").counter("requests").incr(4)
    m.write_snapshot(str(tmp_path))
    calls: list[str] = []
    server = AdminServer(
        "127.0.0.1",
        0,
        metrics_dir=str(tmp_path),
        config_json=lambda: {"routers": [{"label": "r"}]},
        delegate=None,
        on_shutdown=lambda: calls.append("shutdown"),
        master_stats=lambda: {"counters": {"master/worker_restarts": 1}, "gauges": {}},
    )
    server.start()
    try:
        yield server, calls
    finally:
        server.stop()
        server.stop()  # idempotent


def test_admin_server_in_process(admin_server: tuple[AdminServer, list[str]]) -> None:
    server, calls = admin_server
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        # One keep-alive connection for several requests, HEAD included.
        conn.request("GET", "/admin/metrics.json?pretty=1")
        resp = conn.getresponse()
        body = resp.read()
        assert (resp.status, resp.getheader("content-type")) == (200, "application/json")
        assert b"\n  " in body
        assert json.loads(body) == {
            "master/worker_restarts": 1,
            "rt/r/service/svc/a/requests": 4,
        }
        conn.request("HEAD", "/admin/ping")
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("content-length"), resp.read()) == (200, "4", b"")
        conn.request("GET", "/config.json")
        assert json.loads(conn.getresponse().read()) == {"routers": [{"label": "r"}]}
        conn.request("GET", "/delegator.json?path=/svc/a")
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (404, {"error": "no delegator configured"})
        conn.request("GET", "/admin/metrics/prometheus")
        resp = conn.getresponse()
        assert resp.getheader("content-type") == "text/plain; version=0.0.4"
        assert b'rt:service:requests{rt="r",service="svc/a"} 4' in resp.read()
    finally:
        conn.close()

    def one(method: str, path: str, body: bytes | None = None) -> tuple[int, str | None]:
        c = http.client.HTTPConnection(*server.address, timeout=10)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("allow")
        finally:
            c.close()

    assert one("DELETE", "/admin/shutdown") == (405, "POST")
    assert one("PUT", "/admin/ping") == (405, "GET, HEAD")
    assert one("GET", "/") == (200, None)  # the dashboard (linker.process.console)
    assert one("GET", "/nope") == (404, None)
    assert calls == []
    assert one("POST", "/admin/shutdown", b"ignored body") == (200, None)
    assert calls == ["shutdown"]


def test_admin_delegator_rejects_bad_bodies(tmp_path: Path) -> None:
    server = AdminServer(
        "127.0.0.1",
        0,
        metrics_dir=str(tmp_path),
        config_json=dict,
        delegate=_delegate,
        on_shutdown=lambda: None,
        master_stats=dict,
    )
    server.start()
    try:
        for body in (b"not json", b"[1]", json.dumps({"path": 3}).encode()):
            c = http.client.HTTPConnection(*server.address, timeout=10)
            c.request("POST", "/delegator.json", body=body)
            r = c.getresponse()
            assert r.status == 400, body
            assert "error" in json.loads(r.read())
            c.close()
    finally:
        server.stop()


def test_admin_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = AdminServer(
            "127.0.0.1",
            taken.getsockname()[1],
            metrics_dir=str(tmp_path),
            config_json=dict,
            delegate=None,
            on_shutdown=lambda: None,
            master_stats=dict,
        )
        with pytest.raises(OSError, match="in use"):
            server.start()


# =============================================================================================
# The master with real workers


@pytest.fixture(scope="module")
def linker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linker]:
    """Two workers shared by the tests that leave the linker healthy behind them."""
    with running_linker(tmp_path_factory.mktemp("linker")) as lk:
        yield lk


def test_workers_share_the_port(tmp_path: Path) -> None:
    with running_linker(tmp_path, workers=3) as lk:
        pids = lk.serving_pids(3)
        assert lk.proc.pid not in pids
        assert lk.metrics()["master/workers"] == 3


def test_admin_endpoints(linker: Linker) -> None:
    assert linker.admin("/admin/ping") == (200, b"pong")
    status, body = linker.admin("/config.json")
    assert (status, json.loads(body)) == (200, {"config": {"tag": "v1"}})
    status, body = linker.admin("/delegator.json?path=/svc/users&dtab=/svc=>/%23/io.l5d.fs")
    assert status == 200
    assert json.loads(body) == {
        "type": "delegate",
        "path": "/svc/users",
        "dtab": "/svc=>/#/io.l5d.fs",
        "router": None,
    }
    status, body = linker.admin(
        "/delegator.json", "POST", json.dumps({"path": "/svc/a", "namespace": "test"}).encode()
    )
    assert (status, json.loads(body)["router"]) == (200, "test")
    assert linker.admin("/delegator.json?path=/boom") == (502, b"namerd unavailable")
    status, body = linker.admin("/delegator.json")
    assert status == 400
    assert "path" in json.loads(body)["error"]
    assert linker.admin("/admin/nope")[0] == 404
    assert linker.admin("/admin/metrics.json", "POST")[0] == 405
    # GET must never stop the linker: only POST does.
    assert linker.admin("/admin/shutdown")[0] == 405
    assert linker.admin("/admin/ping") == (200, b"pong")
    status, body = linker.admin("/admin/metrics/prometheus")
    assert status == 200
    assert b'rt:service:requests{rt="test",service="svc/echo"}' in body
    assert b"# TYPE master:worker_restarts counter" in body


def test_metrics_merge_across_workers_and_shutdown_by_post(tmp_path: Path) -> None:
    lk = start_linker(tmp_path)
    try:
        # start_linker sent probe requests already: count from the merged value, not from zero.
        base = wait_for(lambda: lk.metrics().get(REQUESTS), "the first snapshot")
        pids: set[int] = set()
        sent = 0
        while len(pids) < 2 or sent < 40:
            pids.add(get(lk.port).pid)
            sent += 1
            assert sent < 5000, "only one worker ever answered"
        want = base + sent
        wait_for(lambda: lk.metrics().get(REQUESTS) == want, f"{REQUESTS} == {want}")
        m = lk.metrics()
        assert m[f"{REQUESTS.rsplit('/', 1)[0]}/request_latency_ms.count"] >= sent
        assert m["master/workers"] == 2
        assert m["master/worker_restarts"] == 0
        status, body = lk.admin("/admin/metrics/prometheus")
        assert status == 200
        assert f'rt:service:requests{{rt="test",service="svc/echo"}} {want}\n' in body.decode()

        assert lk.admin("/admin/shutdown", "POST") == (200, b"shutting down\n")
        assert lk.wait_exit() == 0
        assert "shutdown requested through the admin server" in lk.log()
    finally:
        stop_linker(lk)


def test_sigkilled_worker_is_replaced(linker: Linker) -> None:
    before = linker.metrics()["master/worker_restarts"]
    pids = linker.serving_pids(2)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: linker.metrics()["master/worker_restarts"] == before + 1, "a restart")
    wait_for(lambda: not pid_alive(victim), "the killed worker to be reaped")
    fresh = wait_for(lambda: (get(linker.port).pid not in pids) or None, "a new worker answering")
    assert fresh
    assert "killed by SIGKILL" in linker.log()
    wait_for(lambda: linker.metrics()["master/workers_ready"] == 2, "two ready workers again")


def test_silent_worker_is_killed_and_replaced(linker: Linker) -> None:
    before = linker.metrics()["master/worker_restarts"]
    victim = min(linker.serving_pids(2))
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: not pid_alive(victim), "the stopped worker to be killed")
        wait_for(lambda: linker.metrics()["master/worker_restarts"] == before + 1, "a restart")
        assert "silent for" in linker.log()
        wait_for(lambda: linker.metrics()["master/workers_ready"] == 2, "two ready workers again")
        assert victim not in linker.serving_pids(2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)


def test_ttin_ttou_change_the_worker_count(linker: Linker) -> None:
    before = linker.metrics()["master/worker_restarts"]
    linker.signal(signal.SIGTTIN)
    wait_for(lambda: linker.metrics()["master/workers_ready"] == 3, "a third worker")
    linker.signal(signal.SIGTTOU)
    wait_for(lambda: linker.metrics()["master/workers"] == 2, "back to two workers")
    assert linker.metrics()["master/worker_restarts"] == before  # retired, not "restarted"


def test_boot_failure_stops_the_master_without_fork_loop(tmp_path: Path) -> None:
    lk = start_linker(tmp_path, config={"fail_boot": True}, wait_ready=False)
    try:
        assert lk.wait_exit() == EXIT_BOOT_FAILURE
        log = lk.log()
        assert "failed to boot" in log
        assert "Not forking again" in log
        assert "configured to fail at boot" in log  # the worker's own traceback
        assert log.count("booting worker") == 2  # one per slot, never a respawn
    finally:
        stop_linker(lk)


def test_boot_timeout_on_first_boot_stops_the_master(tmp_path: Path) -> None:
    lk = start_linker(tmp_path, config={"never_ready": True}, wait_ready=False, boot_timeout_s=1.0)
    try:
        assert lk.wait_exit() == EXIT_BOOT_FAILURE
        log = lk.log()
        assert "not ready after boot_timeout_s=1s" in log
        assert log.count("booting worker") == 2
    finally:
        stop_linker(lk)


def test_restart_storm_stops_the_master(tmp_path: Path) -> None:
    lk = start_linker(tmp_path, config={"crash_after_ready": True}, wait_ready=False, workers=1)
    try:
        assert lk.wait_exit() == EXIT_ERROR
        log = lk.log()
        assert "restart storm" in log
        # Bounded: the limit (5) plus the one that tripped it, plus the first boot.
        assert log.count("booting worker") <= 7
    finally:
        stop_linker(lk)


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with running_linker(tmp_path) as lk:
        old = lk.serving_pids(2)
        load = Load(lk.port, stop_on_refused=True).start()
        slow, results = slow_requests(lk.port, 3, ms=1500)
        wait_for(lambda: lk.metrics().get(INFLIGHT, 0) >= 3, "3 slow requests in flight")
        lk.signal(signal.SIGTERM)
        assert lk.wait_exit() == 0
        load.join()
        for t in slow:
            t.join(WAIT_S)
        assert [type(r).__name__ for r in results] == ["Reply"] * 3, results
        assert {r.status for r in results} == {200}
        assert {r.pid for r in results} <= old
        assert not load.errors, load.errors
        assert load.ok, "the load loop never got an answer"
        # After the listeners closed, the only outcome is a refused connect. A connection that
        # the kernel queued in the instant between the last worker's final accept() and its
        # close() is reset before any byte (RFC 9110 §9.2.2: safe to retry). Linux offers no
        # way to stop a listener from queueing while keeping what it queued, so that window
        # can't be closed; it was hit once in ~7 CI runs. At most that one connection.
        assert load.refused == 1
        assert load.no_response <= 1
        assert "stopped (exit code 0)" in lk.log()


def test_sighup_reload_under_load(tmp_path: Path) -> None:
    with running_linker(tmp_path) as lk:
        old = lk.serving_pids(2)
        load = Load(lk.port).start()
        slow, results = slow_requests(lk.port, 3, ms=2500)
        wait_for(lambda: lk.metrics().get(INFLIGHT, 0) >= 3, "3 slow requests in flight")

        # A new config whose workers cannot boot: the reload is abandoned, nothing changes.
        lk.set_config(fail_boot=True)
        lk.signal(signal.SIGHUP)
        wait_for(lambda: "reload abandoned" in lk.log(), "the bad reload to be abandoned")
        assert json.loads(lk.admin("/config.json")[1]) == {"config": {"tag": "v1"}}

        lk.set_config(tag="v2")
        lk.signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in lk.log(), "the reload to complete")
        wait_for(lambda: not any(pid_alive(p) for p in old), "the old workers to drain and exit")
        new = lk.serving_pids(2)
        load.stop()
        for t in slow:
            t.join(WAIT_S)

        assert not new & old
        assert {r.status for r in results} == {200}, results
        assert {r.pid for r in results} <= old, "slow requests were served by the old workers"
        assert not load.errors, load.errors
        assert (load.refused, load.no_response) == (0, 0)
        tags = [r.headers["x-tag"] for r in load.ok]
        assert tags[0] == "v1"
        assert tags[-1] == "v2"
        assert "v2" in tags
        assert tags.index("v2") > 0
        assert json.loads(lk.admin("/config.json")[1]) == {"config": {"tag": "v2"}}
        m = lk.metrics()
        assert m["master/generation"] == 3  # 2 was the abandoned one
        assert m["master/worker_restarts"] == 0


if __name__ == "__main__":
    sys.exit(launch(json.loads(sys.argv[1])))
