"""The upstream pool against real endpoints on 127.0.0.1: our own server, or raw trio servers
that misbehave on purpose (garbage, early closes, silence, closing idle connections).

One test streams 200 MB through the whole data path (client → linker server → pool →
echo endpoint → back) and checks that memory stays flat: backpressure end to end.
"""

from __future__ import annotations

import resource
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import h11
import pytest
import trio
import trio.testing

from linker.errors import ConnectFailed, PoolExhausted, UpstreamProtocolError, UpstreamTimeout
from linker.http import hop
from linker.http.messages import (
    EMPTY_BODY,
    Body,
    Handler,
    Request,
    Response,
    bytes_body,
    read_body,
    stream_body,
)
from linker.http.upstream import PoolLimits, UpstreamPool
from linker.http.upstream.connection import UpstreamConnection

from .endpoints import LOCAL, endpoint, linker_in_front_of, raw_endpoint, read_head

# -- endpoints ----------------------------------------------------------------------------------


async def echo_info(req: Request) -> Response:
    """Answer with the framing and body the endpoint received."""
    body = await read_body(req.body)

    def show(name: bytes) -> str:
        value = hop.get(req.headers, name)
        return "None" if value is None else value.decode()

    info = (
        f"{req.method} cl={show(b'content-length')} te={show(b'transfer-encoding')} "
        f"host={show(b'host')} len={len(body)}"
    ).encode()
    return Response(200, [(b"x-info", info)], bytes_body(body))


def request(
    method: str = "GET",
    target: str = "/",
    body: Body = EMPTY_BODY,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Request:
    return Request(
        method=method,
        target=target,
        authority="up.test",
        http_version="1.1",
        headers=[(b"host", b"up.test")] if headers is None else headers,
        body=body,
        client=(LOCAL, 1),
        received_at=0.0,
    )


def refused_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


# -- reuse and stats ----------------------------------------------------------------------------


async def test_connection_is_reused_and_counted() -> None:
    pool = UpstreamPool()
    async with endpoint(echo_info) as port:
        for i in range(3):
            resp = await pool.request((LOCAL, port), request(target=f"/{i}"))
            assert resp.status == 200
            assert await read_body(resp.body) == b""
        stats = pool.stats()
        assert (stats["created"], stats["reused"], stats["idle"], stats["active"]) == (1, 2, 1, 0)
        assert stats["open"] == 1
        assert "1 idle" in repr(pool)
    await pool.aclose()
    assert pool.stats()["open"] == 0
    with pytest.raises(trio.ClosedResourceError):
        await pool.request((LOCAL, port), request())


async def test_connection_returns_to_pool_only_after_body_is_read() -> None:
    pool = UpstreamPool()
    async with endpoint(echo_info) as port:
        resp = await pool.request((LOCAL, port), request("POST", body=bytes_body(b"abc")))
        assert resp.body.length == 3
        assert pool.stats()["active"] == 1
        assert await read_body(resp.body) == b"abc"
        assert (pool.stats()["active"], pool.stats()["idle"]) == (0, 1)
    await pool.aclose()


async def test_abandoned_body_closes_the_connection() -> None:
    async def big(req: Request) -> Response:
        return Response(200, [], bytes_body(b"x" * 500_000))

    pool = UpstreamPool()
    async with endpoint(big) as port:
        resp = await pool.request((LOCAL, port), request())
        await resp.body.aclose()  # type: ignore[attr-defined]
        assert pool.stats()["idle"] == 0
        assert pool.stats()["closed"] == 1
    await pool.aclose()


async def test_head_and_204_release_without_reading() -> None:
    async def handler(req: Request) -> Response:
        return Response(204 if req.target == "/204" else 200, [], bytes_body(b"body"))

    pool = UpstreamPool()
    async with endpoint(handler) as port:
        for method, target in (("HEAD", "/"), ("GET", "/204")):
            resp = await pool.request((LOCAL, port), request(method, target))
            assert resp.body.length == 0
            await resp.body.aclose()  # type: ignore[attr-defined]
            assert pool.stats()["idle"] == 1
        assert pool.stats()["created"] == 1
    await pool.aclose()


async def test_max_idle_per_host() -> None:
    pool = UpstreamPool(PoolLimits(max_idle_per_host=2))
    async with endpoint(echo_info) as port:
        responses = [await pool.request((LOCAL, port), request()) for _ in range(4)]
        assert pool.stats()["active"] == 4
        for resp in responses:
            await read_body(resp.body)
        stats = pool.stats()
        assert (stats["idle"], stats["closed"], stats["created"]) == (2, 2, 4)
    await pool.aclose()


async def test_idle_connections_expire() -> None:
    pool = UpstreamPool(PoolLimits(idle_timeout_s=0.01))
    async with endpoint(echo_info) as port:
        await read_body((await pool.request((LOCAL, port), request())).body)
        await trio.sleep(0.05)
        await read_body((await pool.request((LOCAL, port), request())).body)
        stats = pool.stats()
        assert (stats["created"], stats["reused"], stats["expired"]) == (2, 0, 1)
    await pool.aclose()


# -- what goes on the wire ----------------------------------------------------------------------


async def test_request_framing_and_headers() -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    pool = UpstreamPool()
    cases = [
        (request(), b"GET cl=None te=None host=up.test len=0"),
        (request("POST", body=bytes_body(b"xyz")), b"POST cl=3 te=None host=up.test len=3"),
        (request("POST", body=stream_body(gen())), b"POST cl=None te=chunked host=up.test len=4"),
        # An explicit empty body keeps its Content-Length: 0 (a POST without a body has one).
        (
            request("POST", headers=[(b"host", b"h"), (b"content-length", b"0")]),
            b"POST cl=0 te=None host=h len=0",
        ),
        # Without a Host header, the authority supplies it (HTTP/1.1 requires one).
        (request(headers=[]), b"GET cl=None te=None host=up.test len=0"),
    ]
    async with endpoint(echo_info) as port:
        for req, info in cases:
            resp = await pool.request((LOCAL, port), req)
            assert hop.get(resp.headers, b"x-info") == info
            await read_body(resp.body)
    await pool.aclose()


async def test_headers_are_sent_as_given() -> None:
    seen: list[bytes] = []

    async def capture(stream: trio.SocketStream) -> None:
        seen.append(await read_head(stream))
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Up: 1\r\n\r\nok")

    pool = UpstreamPool()
    headers = [(b"host", b"svc"), (b"x-b", b"2"), (b"x-a", b"1"), (b"x-a", b"3")]
    async with raw_endpoint(capture) as port:
        resp = await pool.request((LOCAL, port), request(target="/p?q=1", headers=headers))
        assert (resp.status, resp.reason) == (200, b"OK")
        assert resp.headers == [(b"content-length", b"2"), (b"x-up", b"1")]
        assert await read_body(resp.body) == b"ok"
    assert seen == [b"GET /p?q=1 HTTP/1.1\r\nhost: svc\r\nx-b: 2\r\nx-a: 1\r\nx-a: 3\r\n\r\n"]
    await pool.aclose()


async def test_http10_close_delimited_response_is_not_pooled() -> None:
    async def old(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close")

    pool = UpstreamPool()
    async with raw_endpoint(old) as port:
        resp = await pool.request((LOCAL, port), request())
        assert resp.body.length is None
        assert await read_body(resp.body) == b"until close"
    assert (pool.stats()["idle"], pool.stats()["closed"]) == (0, 1)
    await pool.aclose()


# -- dead pooled connections --------------------------------------------------------------------


def one_response_then_close(closed: trio.Event) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """Answer one request with a keep-alive response, then close: an endpoint's idle timeout."""
    count = 0

    async def behaviour(stream: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n%02d" % count)
        await stream.aclose()
        closed.set()

    return behaviour


async def test_dead_pooled_connection_is_detected_before_reuse() -> None:
    closed = trio.Event()
    pool = UpstreamPool()
    async with raw_endpoint(one_response_then_close(closed)) as port:
        assert await read_body((await pool.request((LOCAL, port), request())).body) == b"01"
        await closed.wait()
        await trio.sleep(0.01)  # let the FIN reach our socket
        assert await read_body((await pool.request((LOCAL, port), request())).body) == b"02"
    stats = pool.stats()
    assert (stats["dead_on_checkout"], stats["created"], stats["retried"]) == (1, 2, 0)
    await pool.aclose()


async def test_request_failing_on_reused_connection_is_retried_on_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The endpoint closes between our liveness check and our write: simulate by trusting
    # every pooled connection.
    monkeypatch.setattr(UpstreamConnection, "looks_dead", lambda self: False)
    closed = trio.Event()
    pool = UpstreamPool()
    async with raw_endpoint(one_response_then_close(closed)) as port:
        assert await read_body((await pool.request((LOCAL, port), request())).body) == b"01"
        await closed.wait()
        assert await read_body((await pool.request((LOCAL, port), request())).body) == b"02"
    stats = pool.stats()
    assert (stats["retried"], stats["created"], stats["reused"]) == (1, 2, 1)
    await pool.aclose()


async def test_no_retry_once_the_body_was_consumed() -> None:
    """A reused connection that fails before any response byte is retried only if the body
    can be sent again; here part of it already went to the endpoint."""

    async def behaviour(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        data = b""
        while b"sent twice" not in data:  # the POST's head and the start of its body
            data += await stream.receive_some()
        # ...and then the endpoint goes away without answering.

    async def gen() -> AsyncIterator[bytes]:
        yield b"can't be sent twice"
        await trio.sleep_forever()

    pool = UpstreamPool()
    async with raw_endpoint(behaviour) as port:
        await read_body((await pool.request((LOCAL, port), request())).body)
        with pytest.raises(UpstreamProtocolError, match=f"{LOCAL}:{port} closed the connection"):
            await pool.request((LOCAL, port), request("POST", body=stream_body(gen())))
    assert (pool.stats()["retried"], pool.stats()["reused"]) == (0, 1)
    await pool.aclose()


# -- failures -----------------------------------------------------------------------------------


async def test_connect_refused_names_the_address() -> None:
    pool = UpstreamPool()
    port = refused_port()
    with pytest.raises(ConnectFailed, match=f"{LOCAL}:{port}") as info:
        await pool.request((LOCAL, port), request())
    assert info.value.retryable
    assert info.value.status == 502
    assert pool.stats()["connect_failed"] == 1


async def test_garbage_response() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    pool = UpstreamPool()
    async with raw_endpoint(garbage) as port:
        with pytest.raises(UpstreamProtocolError, match=r"invalid HTTP/1\.1 response"):
            await pool.request((LOCAL, port), request())
    assert pool.stats()["open"] == 0
    await pool.aclose()


async def test_close_before_response_on_fresh_connection() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await read_head(stream)

    pool = UpstreamPool()
    async with raw_endpoint(hang_up) as port:
        with pytest.raises(UpstreamProtocolError, match="closed the connection"):
            await pool.request((LOCAL, port), request())
    assert pool.stats()["retried"] == 0
    await pool.aclose()


async def test_truncated_response_body() -> None:
    async def short(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")

    pool = UpstreamPool()
    async with raw_endpoint(short) as port:
        resp = await pool.request((LOCAL, port), request())
        with pytest.raises(UpstreamProtocolError, match="before the response ended"):
            await read_body(resp.body)
    assert pool.stats()["open"] == 0
    await pool.aclose()


async def test_response_header_timeout() -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await trio.sleep_forever()

    pool = UpstreamPool(PoolLimits(response_header_timeout_s=0.05))
    async with raw_endpoint(silent) as port:
        with pytest.raises(UpstreamTimeout) as info:
            await pool.request((LOCAL, port), request())
    assert info.value.status == 503
    assert pool.stats()["open"] == 0
    await pool.aclose()


async def test_early_response_stops_the_upload() -> None:
    """An endpoint may answer before reading the body (413): we get the answer, stop pulling
    the body, and do not pool the connection (its request was never finished)."""

    async def refuse(req: Request) -> Response:
        return Response(413, [], bytes_body(b"too big"))

    pulled = 0

    async def huge() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(10_000):
            pulled += 1
            yield b"z" * 65536

    pool = UpstreamPool()
    async with endpoint(refuse) as port:
        resp = await pool.request((LOCAL, port), request("POST", body=stream_body(huge())))
        assert resp.status == 413
        assert await read_body(resp.body) == b"too big"
    assert pulled < 1000  # far less than the 655 MB on offer
    assert (pool.stats()["idle"], pool.stats()["open"]) == (0, 0)
    await pool.aclose()


async def test_full_duplex_echo_through_the_pool() -> None:
    """The endpoint streams its answer while still reading the request: neither side may wait
    for the other to finish."""

    async def echo(req: Request) -> Response:
        return Response(200, [], req.body)

    chunks = [bytes([i]) * 65536 for i in range(64)]

    async def gen() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    pool = UpstreamPool()
    async with endpoint(echo) as port:
        resp = await pool.request((LOCAL, port), request("PUT", body=stream_body(gen())))
        assert await read_body(resp.body) == b"".join(chunks)
        assert pool.stats()["idle"] == 1
    await pool.aclose()


# -- Expect: 100-continue, end to end ----------------------------------------------------------

EXPECT = [(b"host", b"up.test"), (b"expect", b"100-continue")]


def counted_body(pulls: list[int], size: int = 3) -> Body:
    async def gen() -> AsyncIterator[bytes]:
        pulls.append(1)
        yield b"x" * size

    return stream_body(gen(), length=size)


async def test_expect_continue_refused_early_never_pulls_the_body() -> None:
    async def refuse(req: Request) -> Response:
        return Response(401, [], bytes_body(b"who are you?"))

    pulls: list[int] = []
    pool = UpstreamPool()
    async with endpoint(refuse) as port:
        req = request("POST", body=counted_body(pulls), headers=EXPECT)
        resp = await pool.request((LOCAL, port), req)
        assert (resp.status, await read_body(resp.body)) == (401, b"who are you?")
    assert pulls == []
    assert pool.stats()["idle"] == 0  # the request was never finished: not reusable
    await pool.aclose()


async def test_expect_continue_accepted_uploads_after_100() -> None:
    pulls: list[int] = []
    pool = UpstreamPool()
    async with endpoint(echo_info) as port:
        req = request("POST", body=counted_body(pulls), headers=EXPECT)
        resp = await pool.request((LOCAL, port), req)
        assert await read_body(resp.body) == b"xxx"
        assert pool.stats()["idle"] == 1
    assert pulls == [1]
    await pool.aclose()


async def test_expect_continue_without_100_uploads_after_timeout() -> None:
    async def no_100(stream: trio.SocketStream) -> None:
        data = await read_head(stream)
        while not data.endswith(b"xxx"):  # this server just waits for the body
            data += await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ngot!")

    pulls: list[int] = []
    pool = UpstreamPool(PoolLimits(expect_continue_timeout_s=0.02))
    async with raw_endpoint(no_100) as port:
        req = request("POST", body=counted_body(pulls), headers=EXPECT)
        resp = await pool.request((LOCAL, port), req)
        assert await read_body(resp.body) == b"got!"
    assert pulls == [1]
    await pool.aclose()


async def test_expect_continue_through_the_linker() -> None:
    async def handler(req: Request) -> Response:
        if req.target == "/refuse":
            return Response(403, [], bytes_body(b"no"))
        return Response(200, [], bytes_body(await read_body(req.body)))

    pool = UpstreamPool()
    async with endpoint(handler) as up_port, linker_in_front_of(up_port, pool) as port:
        stream = await trio.open_tcp_stream(LOCAL, port)
        conn = h11.Connection(h11.CLIENT)

        async def next_event() -> h11.Event:
            while (event := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some())
            assert isinstance(event, h11.Event)
            return event

        headers = [("host", "svc"), ("content-length", "5"), ("expect", "100-continue")]
        # Accepted: the 100 travels back from the endpoint, then the body goes up.
        await stream.send_all(conn.send(h11.Request(method="PUT", target="/", headers=headers)))
        event = await next_event()
        assert (type(event), getattr(event, "status_code", None)) == (
            h11.InformationalResponse,
            100,
        )
        await stream.send_all(conn.send(h11.Data(data=b"hello")) + conn.send(h11.EndOfMessage()))
        assert type(event := await next_event()) is h11.Response
        assert event.status_code == 200
        data = await next_event()
        assert isinstance(data, h11.Data)
        assert data.data == b"hello"
        assert type(await next_event()) is h11.EndOfMessage
        conn.start_next_cycle()
        # Refused: no 100 ever reaches the client, and the linker closes after answering.
        await stream.send_all(
            conn.send(h11.Request(method="PUT", target="/refuse", headers=headers))
        )
        event = await next_event()
        assert type(event) is h11.Response
        assert event.status_code == 403
        assert (b"connection", b"close") in list(event.headers)
        await stream.aclose()
    await pool.aclose()


# -- 200 MB through the whole path, in constant memory ------------------------------------------

TOTAL_BYTES = 200 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


async def test_200mb_stream_through_linker_and_pool_in_constant_memory() -> None:
    async def echo(req: Request) -> Response:
        return Response(200, [], req.body)

    pool = UpstreamPool()
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with endpoint(echo) as up_port, linker_in_front_of(up_port, pool) as linker_port:
        stream = await trio.open_tcp_stream(LOCAL, linker_port)
        conn = h11.Connection(h11.CLIENT)
        sent = received = max_in_flight = 0
        crc_sent = crc_received = 0
        pattern = bytes(range(256)) * (CHUNK_BYTES // 256)

        async def upload() -> None:
            nonlocal sent, crc_sent
            head = h11.Request(
                method="POST",
                target="/big",
                headers=[("host", "svc"), ("transfer-encoding", "chunked")],
            )
            await stream.send_all(conn.send(head))
            for i in range(TOTAL_BYTES // CHUNK_BYTES):
                chunk = pattern[i % 256 :] + pattern[: i % 256]  # lazily made, never stored
                crc_sent = zlib.crc32(chunk, crc_sent)
                sent += len(chunk)
                await stream.send_all(conn.send(h11.Data(data=chunk)))
            await stream.send_all(conn.send(h11.EndOfMessage()))

        async def download() -> h11.Response:
            nonlocal received, max_in_flight, crc_received
            response: h11.Response | None = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(CHUNK_BYTES))
                elif type(event) is h11.Response:
                    response = event
                elif type(event) is h11.Data:
                    received += len(event.data)
                    crc_received = zlib.crc32(event.data, crc_received)
                    max_in_flight = max(max_in_flight, sent - received)
                elif type(event) is h11.EndOfMessage:
                    assert response is not None
                    return response

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload)
            response = await download()
        await stream.aclose()
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kb) / 1024
    assert response.status_code == 200
    assert (received, crc_received) == (TOTAL_BYTES, crc_sent)
    # Nothing along the path buffers the body: what is in flight is bounded by socket
    # buffers (a few MB each on loopback), and the process does not grow.
    assert max_in_flight < 64 * 1024 * 1024, max_in_flight
    in_flight_mib = max_in_flight / 2**20
    print(f"200 MB echoed: max in flight {in_flight_mib:.1f} MiB, RSS +{rss_growth_mb:.1f} MiB")
    assert rss_growth_mb < 50, rss_growth_mb
    assert pool.stats()["created"] == 1
    await pool.aclose()


# -- hostConnectionPool maxSize / maxWaiters / minSize --------------------------------------------


async def test_max_size_makes_requests_wait_for_a_connection() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    busy = 0
    peak = 0

    async def slow(req: Request) -> Response:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await trio.sleep(0.05)
        busy -= 1
        return Response(200, [], bytes_body(b"ok"))

    results: list[bytes] = []
    async with endpoint(slow) as port:

        async def one() -> None:
            resp = await pool.request((LOCAL, port), request())
            results.append(await read_body(resp.body))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
        stats = pool.stats()
    assert results == [b"ok"] * 3
    assert peak == 1  # the endpoint never saw two requests at once
    assert stats["created"] == 1  # all three shared the one connection
    await pool.aclose()


async def test_max_waiters_rejects_at_once_with_503() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1, max_waiters_per_host=0))
    gate = trio.Event()

    async def held(req: Request) -> Response:
        await gate.wait()
        return Response(200, [], bytes_body(b"ok"))

    async with endpoint(held) as port:
        async with trio.open_nursery() as nursery:
            first: list[Response] = []

            async def take() -> None:
                first.append(await pool.request((LOCAL, port), request()))

            nursery.start_soon(take)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(PoolExhausted) as info:
                await pool.request((LOCAL, port), request())
            assert info.value.status == 503
            assert "maxSize/maxWaiters" in str(info.value)
            gate.set()
        await read_body(first[0].body)
        assert pool.stats()["rejected"] == 1
    await pool.aclose()


async def test_min_size_keeps_idle_connections_past_the_idle_timeout() -> None:
    pool = UpstreamPool(PoolLimits(idle_timeout_s=0.01, min_idle_per_host=1))
    async with endpoint(echo_info) as port:
        await read_body((await pool.request((LOCAL, port), request())).body)
        await trio.sleep(0.05)
        await read_body((await pool.request((LOCAL, port), request())).body)
        stats = pool.stats()
        assert (stats["created"], stats["reused"], stats["expired"]) == (1, 1, 0)
    await pool.aclose()


def first_held_until(gate: trio.Event, served: list[str]) -> Handler:
    """An endpoint that notes each request's target and holds ``/first`` until ``gate``."""

    async def handler(req: Request) -> Response:
        served.append(req.target)
        if req.target == "/first":
            await gate.wait()
        return Response(200, [], bytes_body(b"ok"))

    return handler


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    gate = trio.Event()
    served: list[str] = []

    async with endpoint(first_held_until(gate, served)) as port:

        async def one(target: str) -> None:
            resp = await pool.request((LOCAL, port), request(target=target))
            await read_body(resp.body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "/first")
            await trio.testing.wait_all_tasks_blocked()
            for i in range(6):
                nursery.start_soon(one, f"/{i}")
                await trio.testing.wait_all_tasks_blocked()  # each one queued before the next
            assert pool.stats()["waiting"] == 6
            gate.set()
        stats = pool.stats()
    # One connection, handed from each request to the next waiter in the order they came
    # (waking them all to race for it would serve them in scheduler order).
    assert served == ["/first", *(f"/{i}" for i in range(6))]
    assert (stats["created"], stats["reused"], stats["waiting"]) == (1, 0, 0)
    await pool.aclose()


async def test_a_cancelled_waiter_leaves_the_line() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    gate = trio.Event()
    served: list[str] = []

    async with endpoint(first_held_until(gate, served)) as port:

        async def one(target: str, scope: trio.CancelScope | None = None) -> None:
            with scope or trio.CancelScope():
                resp = await pool.request((LOCAL, port), request(target=target))
                await read_body(resp.body)

        impatient = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "/first")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(one, "/impatient", impatient)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(one, "/patient")
            await trio.testing.wait_all_tasks_blocked()
            impatient.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert pool.stats()["waiting"] == 1
            gate.set()
        stats = pool.stats()
    assert impatient.cancelled_caught
    assert served == ["/first", "/patient"]
    assert (stats["created"], stats["open"], stats["waiting"]) == (1, 1, 0)
    await pool.aclose()


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    gate = trio.Event()
    served: list[str] = []
    first: list[Response] = []

    async with endpoint(first_held_until(gate, served)) as port:

        async def one(target: str, scope: trio.CancelScope | None = None) -> None:
            with scope or trio.CancelScope():
                resp = await pool.request((LOCAL, port), request(target=target))
                if target == "/first":
                    first.append(resp)  # its body is read by the test, at the right moment
                else:
                    await read_body(resp.body)

        impatient = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            for target, scope in (("/first", None), ("/impatient", impatient), ("/2", None)):
                nursery.start_soon(one, target, scope)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
            assert first[0].body.ready()  # type: ignore[attr-defined]  # no I/O left to do
            # The cancel lands first; then, with no checkpoint between, reading the rest of the
            # first response releases its connection to the head of the line: the cancelled
            # waiter, which must pass it on to the next one rather than drop it.
            impatient.cancel()
            assert await read_body(first[0].body) == b"ok"
        stats = pool.stats()
    assert impatient.cancelled_caught
    assert served == ["/first", "/2"]
    assert (stats["created"], stats["closed"], stats["waiting"]) == (1, 0, 0)
    await pool.aclose()


async def test_a_failed_connect_passes_its_slot_to_the_next_waiter() -> None:
    """maxSize 1 and nothing listening: each queued request gets its turn to connect (and
    fail) rather than waiting forever for a slot nobody frees."""
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    port = refused_port()
    failures: list[str] = []

    async def one() -> None:
        with pytest.raises(ConnectFailed) as info:
            await pool.request((LOCAL, port), request())
        failures.append(str(info.value))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
    assert len(failures) == 4
    assert (pool.stats()["connect_failed"], pool.stats()["open"]) == (4, 0)
    await pool.aclose()


async def test_aclose_fails_the_waiters() -> None:
    pool = UpstreamPool(PoolLimits(max_per_host=1))
    gate = trio.Event()

    async def held(req: Request) -> Response:
        await gate.wait()
        return Response(200, [], bytes_body(b"ok"))

    async with endpoint(held) as port:

        async def first() -> None:
            with pytest.raises(UpstreamProtocolError):  # its connection was closed under it
                await pool.request((LOCAL, port), request())

        async def waiter() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await pool.request((LOCAL, port), request())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            await pool.aclose()
            gate.set()


async def test_aclose_closes_every_connection_even_when_cancelled() -> None:
    """A worker closes its pools while its nursery is being cancelled: a cancel delivered
    after the first close must not leave the other connections open."""
    closed = 0
    arrived = 0
    both_in = trio.Event()
    both_closed = trio.Event()

    async def answer_then_wait_for_eof(stream: trio.SocketStream) -> None:
        nonlocal closed, arrived
        await read_head(stream)
        arrived += 1
        if arrived == 2:
            both_in.set()
        await both_in.wait()  # so the two requests hold two connections at once
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        while await stream.receive_some():
            pass
        closed += 1
        if closed == 2:
            both_closed.set()

    pool = UpstreamPool()
    async with raw_endpoint(answer_then_wait_for_eof) as port:

        async def one() -> None:
            await read_body((await pool.request((LOCAL, port), request())).body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)
            nursery.start_soon(one)
        assert pool.stats()["idle"] == 2
        with trio.CancelScope() as scope:
            scope.cancel()
            await pool.aclose()
        with trio.fail_after(5):
            await both_closed.wait()
    assert pool.stats()["closed"] == 2
