"""Body idle timeouts (issue 11, item 3), in virtual time over real sockets.

A raw origin behind a linker server and its pool, both built from a config the way a worker
builds them (``pool_limits`` / ``server_limits``), with the metric names the worker uses
(``linker.main._events``).  An origin that stalls after its headers, or a client that stalls
while its body is streamed upstream, costs the client its connection after the configured
idle time; the upstream connection is discarded, a counter and a log line say why.  A body that
trickles (or an upload that keeps moving) is never cut.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from linker.config.load import parse_config, pool_limits, server_limits
from linker.config.model import ConfigError, RouterConfig
from linker.http.upstream import UpstreamPool
from linker.main import _events
from linker.metrics import Metrics

from .endpoints import LOCAL, linker_in_front_of, raw_endpoint, read_head

IDLE_MS = 2000


def router_config(**keys: Any) -> RouterConfig:
    """The first router of a config with ``keys`` (plain YAML values)."""
    raw = {"routers": [{"protocol": "http", "label": "out", **keys}]}
    return parse_config(raw, "test.yaml", workers=1).routers[0]


@dataclass
class Linked:
    """A linker server and its pool, built from a router config as a worker builds them, in
    front of a raw origin; ``metrics`` gets the names a worker records."""

    port: int
    up_port: int
    pool: UpstreamPool
    metrics: Metrics


@asynccontextmanager
async def worker_linker(
    router: RouterConfig, origin: Callable[[trio.SocketStream], Awaitable[None]]
) -> AsyncIterator[Linked]:
    metrics = Metrics()
    ctx: Any = SimpleNamespace(metrics=metrics)
    pool = UpstreamPool(pool_limits(router), on_event=_events(ctx, "out", "client"))
    limits = server_limits(router, router.servers[0])
    async with (
        raw_endpoint(origin) as up_port,
        linker_in_front_of(up_port, pool, limits, _events(ctx, "out")) as port,
    ):
        yield Linked(port, up_port, pool, metrics)
    await pool.aclose()


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything until the linker closes; fails (in virtual time) if it never does."""
    out = bytearray()
    with trio.fail_after(120):
        try:
            while data := await stream.receive_some():
                out += data
        except trio.BrokenResourceError:
            pass
    return bytes(out)


async def test_a_response_body_that_stalls_closes_the_client_connection(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    router = router_config(client={"responseBodyIdleTimeoutMs": IDLE_MS})
    origin_closed = trio.Event()
    connections = 0

    async def origin(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!")
        while await stream.receive_some():  # hangs until the linker gives up on us
            pass
        origin_closed.set()

    async with worker_linker(router, origin) as linked:
        client = await trio.open_tcp_stream(LOCAL, linked.port)
        await client.send_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        asked_at = trio.current_time()
        got = await read_until_closed(client)
        closed_after_s = trio.current_time() - asked_at
        with trio.fail_after(1):
            await origin_closed.wait()  # the upstream connection was closed, not pooled
        stats = linked.pool.stats()
    assert got.startswith(b"HTTP/1.1 200 ")
    assert got.endswith(b"\r\n\r\nhalf!")  # the status was sent: the only signal is the close
    assert closed_after_s == pytest.approx(IDLE_MS / 1000, abs=0.1)
    counters = linked.metrics.counters
    assert counters["rt/out/client/response_body_idle_timeout"].value == 1
    assert counters["rt/out/server/response_aborted"].value == 1
    assert (stats["response_body_idle_timeout"], stats["open"], stats["idle"]) == (1, 0, 0)
    assert connections == 1
    line = f"upstream {LOCAL}:{linked.up_port} sent no body bytes for 2000 ms; closed"
    assert line in caplog.text


async def test_a_response_body_that_trickles_is_not_cut(autojump_clock: trio.abc.Clock) -> None:
    """Each gap is under the idle timeout; the whole body takes far longer than it."""
    router = router_config(client={"responseBodyIdleTimeoutMs": IDLE_MS})
    pieces = [b"chunk%d;" % i for i in range(8)]

    async def origin(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            await trio.sleep(IDLE_MS / 1000 * 0.75)
            await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
        await stream.send_all(b"0\r\n\r\n")
        await trio.sleep_forever()

    async with worker_linker(router, origin) as linked:
        client = await trio.open_tcp_stream(LOCAL, linked.port)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        got = await read_until_closed(client)
        timeouts = linked.pool.stats()["response_body_idle_timeout"]
    assert trio.current_time() > 4 * IDLE_MS / 1000
    for piece in pieces:
        assert piece in got
    assert got.endswith(b"0\r\n\r\n")
    assert timeouts == 0


async def test_an_upload_that_keeps_moving_keeps_a_silent_response_alive(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Full duplex: the origin answers its head at once, then reads the whole upload (longer
    than the idle timeout) before sending its body.  Bytes moving up count as activity."""
    router = router_config(client={"responseBodyIdleTimeoutMs": IDLE_MS})
    parts = [b"p%d" % i for i in range(6)]

    async def origin(stream: trio.SocketStream) -> None:
        head = await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        body = head.partition(b"\r\n\r\n")[2]
        while not body.endswith(b"0\r\n\r\n"):
            data = await stream.receive_some()
            if not data:
                return  # the linker gave up on us
            body += data
        await stream.send_all(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        await trio.sleep_forever()

    async with worker_linker(router, origin) as linked:
        client = await trio.open_tcp_stream(LOCAL, linked.port)
        await client.send_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for part in parts:
            await trio.sleep(IDLE_MS / 1000 * 0.75)
            await client.send_all(b"%x\r\n%s\r\n" % (len(part), part))
        await client.send_all(b"0\r\n\r\n")
        got = await read_until_closed(client)
        timeouts = linked.pool.stats()["response_body_idle_timeout"]
    assert got.startswith(b"HTTP/1.1 200 ")
    # The origin echoes the upload as it read it (chunk framing included) after the last part.
    assert b"".join(b"2\r\n%s\r\n" % p for p in parts) + b"0\r\n\r\n" in got
    assert timeouts == 0


async def test_a_request_body_that_stalls_while_streamed_upstream_closes_both(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The origin answered at once and waits for the body; the client sends part of it and
    stalls: after ``requestBodyIdleTimeoutMs`` the client's connection is cut (its status is
    out) and the origin's is closed, not pooled."""
    router = router_config(servers=[{"port": 4140, "requestBodyIdleTimeoutMs": IDLE_MS}])
    origin_got = bytearray()
    origin_closed = trio.Event()

    async def origin(stream: trio.SocketStream) -> None:
        head = await read_head(stream)
        origin_got.extend(head.partition(b"\r\n\r\n")[2])
        await stream.send_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while data := await stream.receive_some():
            origin_got.extend(data)
        origin_closed.set()

    async with worker_linker(router, origin) as linked:
        client = await trio.open_tcp_stream(LOCAL, linked.port)
        await client.send_all(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        await client.send_all(b"first-part")
        sent_at = trio.current_time()
        got = await read_until_closed(client)
        closed_after_s = trio.current_time() - sent_at
        with trio.fail_after(1):
            await origin_closed.wait()
        stats = linked.pool.stats()
    assert got.startswith(b"HTTP/1.1 200 ")
    assert bytes(origin_got) == b"first-part"
    assert closed_after_s == pytest.approx(IDLE_MS / 1000, abs=0.1)
    assert linked.metrics.counters["rt/out/server/body_timeout"].value == 1
    assert (stats["open"], stats["idle"]) == (0, 0)
    assert "sent no request body bytes for 2000 ms" in caplog.text


async def test_a_request_body_that_stalls_before_the_response_gets_408(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The origin waits for the whole body before answering: the client gets 408 after the
    request body idle timeout (well before requestAttemptTimeoutMs, 10 s), and the origin's
    connection is closed."""
    router = router_config(servers=[{"port": 4140, "requestBodyIdleTimeoutMs": IDLE_MS}])
    origin_closed = trio.Event()

    async def origin(stream: trio.SocketStream) -> None:
        await read_head(stream)
        while await stream.receive_some():
            pass
        origin_closed.set()

    async with worker_linker(router, origin) as linked:
        client = await trio.open_tcp_stream(LOCAL, linked.port)
        await client.send_all(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\npart")
        head = await read_head(client)
        answered_at = trio.current_time()
        await read_until_closed(client)  # after the server's linger (close_linger_s)
        with trio.fail_after(1):
            await origin_closed.wait()
        stats = linked.pool.stats()
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"requestBodyIdleTimeoutMs" in head
    assert b"connection: close" in head.lower()
    assert answered_at == pytest.approx(IDLE_MS / 1000, abs=0.1)
    assert stats["open"] == 0


def test_the_keys_and_their_defaults() -> None:
    default = router_config()
    assert pool_limits(default).response_body_idle_timeout_s == 30.0
    assert server_limits(default, default.servers[0]).body_read_timeout_s == 30.0
    off = router_config(
        client={"responseBodyIdleTimeoutMs": 0},
        servers=[{"port": 4140, "requestBodyIdleTimeoutMs": 0}],
    )
    assert pool_limits(off).response_body_idle_timeout_s is None
    assert server_limits(off, off.servers[0]).body_read_timeout_s == float("inf")


@pytest.mark.parametrize(
    "keys",
    [
        {"client": {"responseBodyIdleTimeoutMs": -1}},
        {"servers": [{"port": 4140, "requestBodyIdleTimeoutMs": -5}]},
    ],
)
def test_negative_idle_timeouts_are_refused(keys: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"IdleTimeoutMs: must be >= 0"):
        router_config(**keys)
