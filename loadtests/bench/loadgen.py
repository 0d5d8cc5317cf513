"""Load generators: wrk when installed, and a Python fallback; plus a fixed-rate prober.

* :func:`run_wrk` — closed loop, ``-t1`` (one load thread: the machine has few cores and the
  systems under test need them), ``--latency``.
* :func:`run_closed_loop` — the fallback when wrk is missing: the same closed loop (each
  connection sends its next request when the previous answer is complete) in ``processes``
  asyncio processes.  Slower than wrk, so its ceiling is lower; the report says which was used.
* :func:`run_fixed_rate` — an *open* loop at a fixed rate (wrk has none): requests are due at
  ``start + i / rate`` whatever happened before, and latency is measured from the due time, so
  a stall is charged to every request it delayed (no coordinated omission).  This is how the
  "added latency at 1k rps" figures are taken, for every system alike.

Every request is a keep-alive ``GET`` with a ``Host`` header; answers must carry
``Content-Length`` (every system here sends it).
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from .stats import LoadResult, parse_wrk, percentile

__all__ = [
    "Target",
    "run_closed_loop",
    "run_fixed_rate",
    "run_wrk",
    "wrk_path",
]

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_PERCENTILES = (50, 75, 90, 99, 99.9)


@dataclass(frozen=True)
class Target:
    """Where to send the load: ``http://host:port/path`` with ``Host: host_header``."""

    host: str
    port: int
    path: str
    host_header: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def request(self) -> bytes:
        head = f"GET {self.path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
        return (head + "User-Agent: l5py-bench\r\n\r\n").encode("ascii")


def wrk_path() -> str | None:
    """wrk's path if it is installed."""
    return shutil.which("wrk")


def run_wrk(target: Target, *, connections: int, duration_s: float, timeout_s: float) -> LoadResult:
    """One wrk run; raises RuntimeError if wrk fails."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        "-H",
        f"Host: {target.host_header}",
        target.url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse_wrk(out.stdout)


# -- the asyncio client ------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection: send a request, read one Content-Length framed answer."""

    def __init__(self, request: bytes, on_answer: Callable[[_Client, int], None]) -> None:
        self.request = request
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need: int | None = None
        self.status = 0
        self.sent_at = 0.0
        self.due_at = 0.0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, due_at: float) -> None:
        assert self.transport is not None
        self.due_at = due_at
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[: end + 2]
                m = _CONTENT_LENGTH.search(head)
                if not m or len(head) < 12:
                    self._fail(ConnectionError("an answer without Content-Length"))
                    return
                self.status = int(head[9:12])
                self.need = end + 4 + int(m.group(1))
            if len(self.buf) < self.need:
                return
            self.buf = self.buf[self.need :]
            self.need = None
            self.on_answer(self, self.status)

    def _fail(self, exc: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        if not self.lost.done():
            self.lost.set_exception(exc)

    def close(self) -> None:
        """Our own close at the end of a run: not a failure."""
        if not self.lost.done():
            self.lost.set_result(None)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_exception(exc or ConnectionError("closed by the server"))


async def _connect(target: Target, on_answer: Callable[[_Client, int], None]) -> _Client:
    loop = asyncio.get_running_loop()
    request = target.request()
    _, proto = await loop.create_connection(
        lambda: _Client(request, on_answer), target.host, target.port
    )
    return proto


def _result(
    latencies_ms: list[float], errors: int, seconds: float, tool: str, answered: int | None = None
) -> LoadResult:
    n = len(latencies_ms) if answered is None else answered
    return LoadResult(
        requests=n,
        seconds=seconds,
        rps=n / seconds if seconds > 0 else 0.0,
        latency_ms={_pct_key(p): percentile(latencies_ms, p) for p in _PERCENTILES},
        errors=errors,
        tool=tool,
    )


def _pct_key(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


# -- closed loop (the wrk fallback) --------------------------------------------------------------


async def _closed_loop(
    target: Target, connections: int, duration_s: float
) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    deadline = 0.0

    def on_answer(client: _Client, status: int) -> None:
        nonlocal errors
        now = time.perf_counter()
        latencies.append((now - client.sent_at) * 1000)
        if status >= 400:
            errors += 1
        if now < deadline:
            client.send(now)

    clients = [await _connect(target, on_answer) for _ in range(connections)]
    start = time.perf_counter()
    deadline = start + duration_s
    for c in clients:
        c.send(start)
    await asyncio.sleep(duration_s)
    # Answers still in flight at the deadline are not waited for; they are not counted.
    elapsed = time.perf_counter() - start
    for c in clients:
        if c.lost.done() and c.lost.exception() is not None:
            errors += 1
        c.close()
    return latencies, errors, elapsed


def _closed_loop_process(args: tuple[Target, int, float]) -> tuple[list[float], int, float]:
    target, connections, duration_s = args
    return asyncio.run(_closed_loop(target, connections, duration_s))


def run_closed_loop(
    target: Target, *, connections: int, duration_s: float, processes: int = 2
) -> LoadResult:
    """The wrk fallback: ``connections`` closed-loop connections over ``processes`` processes."""
    processes = max(1, min(processes, connections))
    share = [connections // processes + (i < connections % processes) for i in range(processes)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes) as pool:
        parts = pool.map(_closed_loop_process, [(target, n, duration_s) for n in share])
    latencies = [x for part in parts for x in part[0]]
    errors = sum(part[1] for part in parts)
    seconds = max(part[2] for part in parts)
    return _result(latencies, errors, seconds, "python closed loop (wrk not installed)")


# -- open loop at a fixed rate ----------------------------------------------------------------


async def _fixed_rate(
    target: Target, rate_rps: float, duration_s: float, connections: int, max_backlog: int
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    idle: collections.deque[_Client] = collections.deque()
    backlog: collections.deque[float] = collections.deque()

    def on_answer(client: _Client, status: int) -> None:
        nonlocal errors
        latencies.append((time.perf_counter() - client.due_at) * 1000)
        if status >= 400:
            errors += 1
        if backlog:
            client.send(backlog.popleft())
        else:
            idle.append(client)

    clients = [await _connect(target, on_answer) for _ in range(connections)]
    idle.extend(clients)
    total = int(rate_rps * duration_s)
    start = time.perf_counter() + 0.05
    issued = 0
    overloaded = False
    while issued < total:
        now = time.perf_counter()
        due_now = min(total, int((now - start) * rate_rps) + 1) if now >= start else 0
        while issued < due_now:
            due = start + issued / rate_rps
            if idle:
                idle.popleft().send(due)
            else:
                backlog.append(due)
            issued += 1
        if len(backlog) > max_backlog:
            overloaded = True  # the system can't keep up with the rate: stop, don't queue forever
            break
        next_due = start + issued / rate_rps
        await asyncio.sleep(max(0.0, next_due - time.perf_counter()))
    # Wait for the answers still due (bounded).
    settle_deadline = time.perf_counter() + 10
    while len(latencies) < issued and time.perf_counter() < settle_deadline:
        if any(c.lost.done() for c in clients):
            break
        await asyncio.sleep(0.01)
    lost = issued - len(latencies)
    elapsed = time.perf_counter() - start
    for c in clients:
        if c.lost.done():
            c.lost.exception()  # a lost connection was counted in `lost`; mark it seen
        c.close()
    tool = f"python open loop at {rate_rps:g} rps" + (
        " (overloaded: stopped)" if overloaded else ""
    )
    return _result(latencies, errors + lost, elapsed, tool)


def _fixed_rate_process(args: tuple[Target, float, float, int, int]) -> LoadResult:
    return asyncio.run(_fixed_rate(*args))


def run_fixed_rate(
    target: Target,
    *,
    rate_rps: float,
    duration_s: float,
    connections: int = 32,
    max_backlog: int = 5_000,
) -> LoadResult:
    """Latency at a fixed request rate (open loop; see the module docstring).

    Runs in a process of its own so that the harness's other work can't delay the schedule.
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(
            _fixed_rate_process, ((target, rate_rps, duration_s, connections, max_backlog),)
        )
