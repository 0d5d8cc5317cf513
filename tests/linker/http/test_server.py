"""The HTTP/1.1 server: serve_connection over memory streams, serve_listeners over real sockets.

Most tests talk to ``serve_connection`` through ``trio.testing.memory_stream_pair()`` with raw
bytes or an h11 CLIENT as the peer, so protocol edge cases are exact and fast; timeouts run
under the ``autojump_clock`` fixture (virtual time).  As in h11's own tests, every request of
the tables is fed whole, one byte at a time, and followed by a pipelined second request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linker.errors import NoEndpoints
from linker.http.messages import Request, Response, bytes_body, read_body, stream_body
from linker.http.server import SERVER_EVENTS, ServerLimits, serve_connection, serve_listeners

CLIENT = ("192.0.2.7", 40000)
LIMITS = ServerLimits()
Handler = Callable[[Request], Awaitable[Response]]


# -- harness -----------------------------------------------------------------------------------


async def echo(req: Request) -> Response:
    """Answer with what the server made of the request, then the body it read."""
    body = await read_body(req.body)
    summary = f"{req.method} {req.target} {req.authority} {req.http_version} {len(body)}:"
    return Response(200, [(b"x-summary", summary.encode("latin-1"))], bytes_body(body))


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


def parse_replies(raw: bytes, methods: tuple[str, ...] = ()) -> list[Reply]:
    """Every response in ``raw`` (1xx included), parsed by an h11 client; ``methods[i]`` is
    the method of the i-th request (default GET), which decides whether a body follows."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    conn.receive_data(b"")
    replies: list[Reply] = []
    for i in range(1000):
        if not conn.trailing_data[0]:
            return replies  # nothing more was sent
        method = methods[i] if i < len(methods) else "GET"
        conn.send(h11.Request(method=method, target="/", headers=[("host", "t")]))
        conn.send(h11.EndOfMessage())
        reply: Reply | None = None
        while True:
            event = conn.next_event()
            if type(event) is h11.InformationalResponse:
                replies.append(Reply(event.status_code, list(event.headers)))
            elif type(event) is h11.Response:
                reply = Reply(event.status_code, list(event.headers))
            elif type(event) is h11.Data:
                assert reply is not None
                reply.body += event.data
            elif type(event) is h11.EndOfMessage:
                break
            else:
                assert reply is None, f"truncated response {reply}"
                return replies
        assert reply is not None
        replies.append(reply)
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            return replies
    raise AssertionError("too many responses")


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> bool:
    try:
        await stream.send_all(data)
        return True
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False  # the server closed first, which some tests expect


async def _read_all(stream: trio.abc.Stream) -> bytes:
    out = bytearray()
    try:
        while data := await stream.receive_some():
            out += data
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    return bytes(out)


async def converse(
    data: bytes,
    handler: Handler = echo,
    limits: ServerLimits = LIMITS,
    *,
    byte_at_a_time: bool = False,
    eof: bool = True,
    events: list[str] | None = None,
) -> bytes:
    """Run serve_connection, send ``data`` (then EOF), and return all it answered."""
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(
                serve_connection,
                server,
                handler,
                limits,
                CLIENT,
                on_event=events.append if events is not None else None,
            )
        )
        if byte_at_a_time:
            for i in range(len(data)):
                if not await _send_quietly(client, data[i : i + 1]):
                    break
                # Let the server process this byte alone, so every split point is exercised.
                await trio.testing.wait_all_tasks_blocked()
        else:
            await _send_quietly(client, data)
        if eof:
            try:
                await client.send_eof()
            except trio.ClosedResourceError:
                pass
        out = await _read_all(client)
    return out


class Peer:
    """An h11 CLIENT on one end of a stream: the server's counterpart in interactive tests."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, *events: h11.Event) -> None:
        for event in events:
            data = self.conn.send(event)
            if data:
                await self.stream.send_all(data)

    async def next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(bytes(await self.stream.receive_some()))
                continue
            assert isinstance(event, h11.Event)
            return event

    async def read_reply(self) -> Reply:
        event = await self.next_event()
        assert type(event) is h11.Response, event
        reply = Reply(event.status_code, list(event.headers))
        while type(event := await self.next_event()) is h11.Data:
            reply.body += event.data
        assert type(event) is h11.EndOfMessage
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        return reply

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        hdrs = [("host", "example.test"), *(headers or [])]
        if body:
            hdrs.append(("content-length", str(len(body))))
        await self.send(h11.Request(method=method, target=target, headers=hdrs))
        if body:
            await self.send(h11.Data(data=body))
        await self.send(h11.EndOfMessage())
        return await self.read_reply()


@dataclass
class Connected:
    peer: Peer
    events: list[str] = field(default_factory=list)


async def run_with_peer(
    handler: Handler, test: Callable[[Connected], Awaitable[None]], limits: ServerLimits = LIMITS
) -> list[str]:
    """Serve one memory connection, run ``test`` against it with an h11 peer, then hang up."""
    client, server = trio.testing.memory_stream_pair()
    ctx = Connected(Peer(client))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(serve_connection, server, handler, limits, CLIENT, on_event=ctx.events.append)
        )
        await test(ctx)
        await client.aclose()
    return ctx.events


# -- the request tables, fed whole / byte at a time / with a pipelined request behind ----------

NEXT = b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"

# (name, request bytes, the x-summary the echo handler answers with, body it echoes)
GOOD_REQUESTS = [
    ("get", b"GET /a?b=1 HTTP/1.1\r\nHost: svc\r\n\r\n", b"GET /a?b=1 svc 1.1 0:", b""),
    (
        "content-length body",
        b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /p svc 1.1 5:",
        b"hello",
    ),
    (
        "chunked body",
        b"PUT /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"PUT /c svc 1.1 7:",
        b"abcdefg",
    ),
    (
        "absolute-form",
        b"GET http://web.example:8080/x/y?z=1 HTTP/1.1\r\nHost: ignored\r\n\r\n",
        b"GET /x/y?z=1 web.example:8080 1.1 0:",
        b"",
    ),
    ("absolute-form no path", b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", b"GET / h 1.1 0:", b""),
    ("asterisk", b"OPTIONS * HTTP/1.1\r\nHost: svc\r\n\r\n", b"OPTIONS * svc 1.1 0:", b""),
    (
        "upgrade is declined",  # answered as a plain request; the connection stays HTTP/1.1
        b"GET /ws HTTP/1.1\r\nHost: svc\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /ws svc 1.1 0:",
        b"",
    ),
]


@pytest.mark.parametrize("mode", ["whole", "byte_at_a_time", "pipelined"])
@pytest.mark.parametrize(("name", "raw", "summary", "body"), GOOD_REQUESTS)
async def test_good_requests(name: str, raw: bytes, summary: bytes, body: bytes, mode: str) -> None:
    data = raw + NEXT if mode == "pipelined" else raw
    out = await converse(data, byte_at_a_time=mode == "byte_at_a_time")
    replies = parse_replies(out)
    assert replies[0].status == 200
    assert replies[0].header(b"x-summary") == summary
    assert replies[0].body == body
    assert replies[0].header(b"content-length") == str(len(body)).encode()
    if mode == "pipelined":
        assert [r.header(b"x-summary") for r in replies[1:]] == [b"GET /next t 1.1 0:"]
    else:
        assert len(replies) == 1


LONG_LINE = b"GET /" + b"a" * 4100 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
BIG_HEADERS = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n"
MANY_HEADERS = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-H: 0123456789\r\n" * 600 + b"\r\n"

# (name, request bytes, status): refused by the codec, always with l5d-err and a close.
BAD_REQUESTS = [
    ("tls hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ("words", b"HELLO WORLD\r\n\r\n", 400),
    ("no host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("bad version", b"GET / HTTX/1.1\r\nHost: t\r\n\r\n", 400),
    (
        "CL and TE",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    (
        "conflicting CL",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    ("bad CL", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    ("unknown TE", b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (
        "bad chunk size",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    ("CONNECT", b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n", 400),
    ("authority-form GET", b"GET db:5432 HTTP/1.1\r\nHost: db\r\n\r\n", 400),
    ("request line too long", LONG_LINE, 414),
    ("one huge header", BIG_HEADERS, 431),
    ("many headers", MANY_HEADERS, 431),
]


@pytest.mark.parametrize("byte_at_a_time", [False, True])
@pytest.mark.parametrize(("name", "raw", "status"), BAD_REQUESTS)
async def test_bad_requests_get_4xx_and_close(
    name: str, raw: bytes, status: int, byte_at_a_time: bool
) -> None:
    events: list[str] = []
    # A request behind it must never be answered: the connection is closed after the error.
    out = await converse(raw + NEXT, byte_at_a_time=byte_at_a_time, events=events)
    replies = parse_replies(out)
    assert [r.status for r in replies] == [status], out[:300]
    reply = replies[0]
    assert reply.header(b"connection") == b"close"
    assert reply.header(b"l5d-err")
    assert reply.header(b"content-type") == b"text/plain"
    assert reply.body.endswith(b"\n")
    assert "protocol_error" in events or name == "bad chunk size"  # that one is the handler's
    assert events[-1] == "connection_close"


async def test_limits_are_exact() -> None:
    limits = ServerLimits(max_initial_line_bytes=100, max_headers_bytes=200)
    line = b"GET /" + b"a" * (100 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1\r\n"
    assert len(line) == 102
    headers = b"Host: t\r\nX: " + b"h" * (200 - len(b"Host: t\r\nX: \r")) + b"\r\n\r\n"
    assert parse_replies(await converse(line + headers, limits=limits))[0].status == 200
    assert (
        parse_replies(await converse(line[:5] + b"a" + line[5:] + headers, limits=limits))[0].status
        == 414
    )
    assert (
        parse_replies(await converse(line + b"X-2: y\r\n" + headers, limits=limits))[0].status
        == 431
    )


# -- keep-alive, pipelining, HTTP/1.0 ---------------------------------------------------------


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def test(ctx: Connected) -> None:
        for i in range(3):
            reply = await ctx.peer.request("POST", f"/r{i}", body=b"x" * i)
            assert reply.status == 200
            assert reply.header(b"x-summary") == f"POST /r{i} example.test 1.1 {i}:".encode()
            assert reply.header(b"connection") is None

    events = await run_with_peer(echo, test)
    assert events.count("connection_open") == 1
    assert events.count("request") == 3
    assert set(events) <= set(SERVER_EVENTS)


async def test_pipelined_requests_are_answered_in_order() -> None:
    raw = b"".join(
        f"GET /{i} HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\n{i}".encode() for i in range(5)
    )
    replies = parse_replies(await converse(raw))
    assert [r.body for r in replies] == [str(i).encode() for i in range(5)]
    assert [r.header(b"x-summary") for r in replies] == [
        f"GET /{i} p 1.1 1:".encode() for i in range(5)
    ]


async def test_http10_no_keepalive_and_close_delimited_body() -> None:
    async def unknown_length(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"part1,"
            yield b"part2"

        return Response(200, [], stream_body(gen()))

    out = await converse(
        b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + NEXT, handler=unknown_length
    )
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert body == b"part1,part2"  # framed by the close; the pipelined request is not served


async def test_http10_request_sees_version_and_no_authority() -> None:
    replies = parse_replies(await converse(b"GET /x HTTP/1.0\r\n\r\n"))
    assert replies[0].header(b"x-summary") == b"GET /x None 1.0 0:"
    assert replies[0].header(b"connection") == b"close"


async def test_absolute_form_rewrites_host_header() -> None:
    seen: list[Request] = []

    async def handler(req: Request) -> Response:
        seen.append(req)
        return Response(204, [], bytes_body(b""))

    await converse(b"GET http://user@svc.local/p HTTP/1.1\r\nHost: other\r\nX: 1\r\n\r\n", handler)
    (req,) = seen
    assert (req.target, req.authority) == ("/p", "svc.local")
    assert req.headers == [(b"x", b"1"), (b"host", b"svc.local")]
    assert req.client == CLIENT


# -- 100-continue -------------------------------------------------------------------------------


async def test_100_continue_is_sent_when_the_handler_reads_the_body() -> None:
    async def test(ctx: Connected) -> None:
        peer = ctx.peer
        headers = [("host", "h"), ("content-length", "4"), ("expect", "100-continue")]
        await peer.send(h11.Request(method="POST", target="/", headers=headers))
        event = await peer.next_event()
        assert type(event) is h11.InformationalResponse
        assert event.status_code == 100
        await peer.send(h11.Data(data=b"data"), h11.EndOfMessage())
        reply = await peer.read_reply()
        assert (reply.status, reply.body) == (200, b"data")
        assert (await peer.request()).status == 200  # still keep-alive

    events = await run_with_peer(echo, test)
    assert "continue_sent" in events


async def test_100_continue_not_sent_when_refused_early() -> None:
    async def refuse(req: Request) -> Response:
        return Response(417, [], bytes_body(b"no thanks"))  # never touches req.body

    async def test(ctx: Connected) -> None:
        peer = ctx.peer
        headers = [("host", "h"), ("content-length", "100000"), ("expect", "100-continue")]
        await peer.send(h11.Request(method="POST", target="/", headers=headers))
        event = await peer.next_event()
        assert type(event) is h11.Response  # straight to the final answer, no 100
        assert event.status_code == 417
        assert (b"connection", b"close") in list(event.headers)
        assert type(await peer.next_event()) is h11.Data
        assert type(await peer.next_event()) is h11.EndOfMessage
        assert type(await peer.next_event()) is h11.ConnectionClosed

    events = await run_with_peer(refuse, test)
    assert "continue_sent" not in events


# -- bodies both ways ---------------------------------------------------------------------------


async def test_response_framing_chunked_vs_content_length() -> None:
    async def handler(req: Request) -> Response:
        if req.target == "/chunked":

            async def gen() -> AsyncIterator[bytes]:
                for piece in (b"a", b"", b"bc"):
                    yield piece

            return Response(200, [(b"content-length", b"999")], stream_body(gen()))
        return Response(200, [(b"transfer-encoding", b"chunked")], bytes_body(b"fixed"))

    async def test(ctx: Connected) -> None:
        chunked = await ctx.peer.request(target="/chunked")
        assert chunked.body == b"abc"
        assert chunked.header(b"transfer-encoding") == b"chunked"
        assert chunked.header(b"content-length") is None  # the handler's wrong value is dropped
        fixed = await ctx.peer.request(target="/fixed")
        assert (fixed.body, fixed.header(b"content-length")) == (b"fixed", b"5")
        assert fixed.header(b"transfer-encoding") is None

    await run_with_peer(handler, test)


async def test_head_and_204_and_304_have_no_body() -> None:
    async def handler(req: Request) -> Response:
        status = {"/204": 204, "/304": 304}.get(req.target, 200)
        headers = [(b"content-length", b"11")] if status != 204 else []
        return Response(status, headers, bytes_body(b"hello world"))

    raw = (
        b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /204 HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /304 HTTP/1.1\r\nHost: t\r\n\r\n" + NEXT
    )
    replies = parse_replies(await converse(raw, handler), ("HEAD", "GET", "GET", "GET"))
    assert [(r.status, r.body) for r in replies] == [
        (200, b""),
        (204, b""),
        (304, b""),
        (200, b"hello world"),
    ]
    assert replies[0].header(b"content-length") == b"11"  # what a GET would have had
    assert replies[1].header(b"content-length") is None


async def test_unread_small_body_is_drained_and_connection_kept() -> None:
    async def ignore(req: Request) -> Response:
        return Response(200, [], bytes_body(b"ok"))

    raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789" + NEXT
    replies = parse_replies(await converse(raw, ignore))
    assert [r.body for r in replies] == [b"ok", b"ok"]
    assert replies[0].header(b"connection") is None


async def test_unread_large_body_closes_connection() -> None:
    async def ignore(req: Request) -> Response:
        return Response(200, [], bytes_body(b"ok"))

    size = LIMITS.unread_body_max_bytes + 1
    raw = f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode() + b"x" * size
    replies = parse_replies(await converse(raw + NEXT, ignore))
    assert [r.body for r in replies] == [b"ok"]  # closed after: NEXT is never answered


async def test_echoing_the_request_body_keeps_the_connection() -> None:
    """A response that streams the request body back consumes it: no close is needed."""

    async def echo_stream(req: Request) -> Response:
        return Response(200, [], req.body)

    size = LIMITS.unread_body_max_bytes * 4
    raw = f"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode() + b"e" * size
    replies = parse_replies(await converse(raw + NEXT, echo_stream))
    assert [len(r.body) for r in replies] == [size, 0]
    assert replies[0].header(b"connection") is None


class CountingStream(trio.abc.HalfCloseableStream):
    """Wraps a stream and counts the bytes the server has taken from it."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_request_body_is_read_lazily() -> None:
    """Nothing of the body is read before the handler asks: backpressure from the handler."""
    client, server_end = trio.testing.memory_stream_pair()
    server = CountingStream(server_end)
    got_request = trio.Event()
    may_read = trio.Event()
    read: list[bytes] = []

    async def handler(req: Request) -> Response:
        got_request.set()
        await may_read.wait()
        async for chunk in req.body:
            read.append(chunk)
        return Response(200, [], bytes_body(b"done"))

    head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, handler, LIMITS, CLIENT)
        await client.send_all(head)
        await got_request.wait()
        await client.send_all(b"abcd")
        await trio.testing.wait_all_tasks_blocked()
        assert server.received == len(head)  # the body waits in the stream, unread
        may_read.set()
        await client.send_all(b"efgh")
        await client.send_eof()
        replies = parse_replies(await _read_all(client))
    assert b"".join(read) == b"abcdefgh"
    assert server.received == len(head) + 8
    assert replies[0].body == b"done"


# -- handler failures ---------------------------------------------------------------------------


async def test_handler_exception_gives_502_with_l5d_err_and_close() -> None:
    async def broken(req: Request) -> Response:
        raise ZeroDivisionError("oops")

    events: list[str] = []
    replies = parse_replies(
        await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + NEXT, broken, events=events)
    )
    assert len(replies) == 1
    reply = replies[0]
    assert reply.status == 502
    assert b"ZeroDivisionError" in (reply.header(b"l5d-err") or b"")
    assert reply.header(b"connection") == b"close"
    assert "handler_error" in events


async def test_handler_linker_error_keeps_connection() -> None:
    async def handler(req: Request) -> Response:
        if req.target == "/fail":
            raise NoEndpoints("No hosts are available for /svc/x")
        return Response(200, [], bytes_body(b"fine"))

    raw = b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n" + NEXT
    replies = parse_replies(await converse(raw, handler))
    assert [r.status for r in replies] == [502, 200]
    assert replies[0].header(b"l5d-err") == b"No%20hosts%20are%20available%20for%20/svc/x"
    assert replies[0].body == b"No hosts are available for /svc/x\n"


async def test_handler_error_inside_exception_group_is_unwrapped() -> None:
    async def handler(req: Request) -> Response:
        async with trio.open_nursery() as nursery:

            async def fail() -> None:
                raise NoEndpoints("none")

            nursery.start_soon(fail)
        raise AssertionError("unreachable")

    replies = parse_replies(await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", handler))
    assert (replies[0].status, replies[0].header(b"l5d-err")) == (502, b"none")


async def test_invalid_response_from_handler_gives_502() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, [(b"bad header", b"x")], bytes_body(b""))

    replies = parse_replies(await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", handler))
    assert replies[0].status == 502


async def test_body_failing_midway_aborts_the_response() -> None:
    async def handler(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"first"
            raise OSError("upstream died")

        return Response(200, [], stream_body(gen()))

    events: list[str] = []
    out = await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" + NEXT, handler, events=events)
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"first" in out
    assert not out.endswith(b"0\r\n\r\n")  # no last-chunk: the client can tell it was cut
    assert "response_aborted" in events


async def test_wrong_declared_length_aborts() -> None:
    async def handler(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"short"

        return Response(200, [], stream_body(gen(), length=10))

    out = await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", handler)
    assert b"content-length: 10" in out.lower()
    assert out.endswith(b"short")


# -- timeouts (virtual time) --------------------------------------------------------------------


async def test_slowloris_trickle_is_cut_at_header_timeout(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(serve_connection, server, echo, LIMITS, CLIENT, on_event=events.append)
        )
        trickle = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X: " + b"y" * 1000
        sent_until = 0.0
        for byte in trickle:  # one byte a second: each read is "recent", the head never ends
            if not await _send_quietly(client, bytes([byte])):
                break
            sent_until = trio.current_time()
            await trio.sleep(1)
        out = await _read_all(client)
    assert LIMITS.header_read_timeout_s <= sent_until <= LIMITS.header_read_timeout_s + 3
    assert parse_replies(out)[0].status == 408
    assert "header_timeout" in events


async def test_silent_new_connection_is_closed(autojump_clock: trio.abc.Clock) -> None:
    out = await converse(b"", eof=False)
    assert out == b""
    assert trio.current_time() == pytest.approx(LIMITS.header_read_timeout_s)


async def test_idle_keepalive_connection_is_closed(autojump_clock: trio.abc.Clock) -> None:
    events: list[str] = []
    out = await converse(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n", eof=False, events=events)
    assert [r.status for r in parse_replies(out)] == [200]
    assert trio.current_time() == pytest.approx(LIMITS.keepalive_idle_timeout_s)
    assert "idle_timeout" in events


async def test_stalled_body_gives_408(autojump_clock: trio.abc.Clock) -> None:
    events: list[str] = []
    raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part"
    out = await converse(raw, eof=False, events=events)
    reply = parse_replies(out)[0]
    assert reply.status == 408
    assert reply.header(b"connection") == b"close"
    assert "body_timeout" in events


# -- serve_listeners: real sockets, graceful shutdown -------------------------------------------


async def _raw_request(port: int, data: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    return stream


async def test_serve_listeners_graceful_shutdown() -> None:
    release = trio.Event()
    busy_started = trio.Event()

    async def handler(req: Request) -> Response:
        if req.target == "/slow":
            busy_started.set()
            await release.wait()
        return Response(200, [], bytes_body(b"done " + req.target.encode()))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    shutdown = trio.Event()
    returned = trio.Event()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        await serve_listeners(
            listeners, handler, LIMITS, shutdown=shutdown, task_status=task_status
        )
        returned.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve)
        idle = Peer(await trio.open_tcp_stream("127.0.0.1", port))
        assert (await idle.request(target="/quick")).body == b"done /quick"
        busy = await _raw_request(port, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        await busy_started.wait()

        shutdown.set()
        # The idle keep-alive connection is closed at once...
        assert type(await idle.next_event()) is h11.ConnectionClosed
        await trio.testing.wait_all_tasks_blocked()
        # ...no new connection is accepted...
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)
        assert not returned.is_set()
        # ...and the in-flight request still finishes, with connection: close.
        release.set()
        replies = parse_replies(await _read_all(busy))
        assert [(r.status, r.body) for r in replies] == [(200, b"done /slow")]
        assert replies[0].header(b"connection") == b"close"
        await returned.wait()


async def test_serve_listeners_drain_timeout_cancels_stuck_requests() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    started = trio.Event()

    async def stuck(req: Request) -> Response:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    shutdown = trio.Event()
    limits = ServerLimits(drain_timeout_s=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_listeners, listeners, stuck, limits, shutdown=shutdown))
        stream = await _raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await started.wait()
        shutdown.set()
    # serve_listeners returned (the nursery exited): the stuck request was cancelled and its
    # connection closed without a response.
    assert await _read_all(stream) == b""


async def test_client_address_reaches_the_handler() -> None:
    seen: list[tuple[str, int]] = []

    async def handler(req: Request) -> Response:
        seen.append(req.client)
        return Response(200, [], bytes_body(b""))

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_listeners, listeners, handler, LIMITS, shutdown=shutdown))
        stream = await _raw_request(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        local = stream.socket.getsockname()
        await _read_all(stream)
        shutdown.set()
    assert seen == [(local[0], local[1])]


# -- fuzz: no input crashes the connection task -------------------------------------------------

_FRAGMENTS = [
    b"GET / HTTP/1.1\r\n",
    b"POST /x HTTP/1.0\r\n",
    b"Host: a\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"\r\n",
    b"\n",
    b"3\r\nabc\r\n0\r\n\r\n",
    b"ffffffffffffffffffff\r\n",
    b"GET http://[::1]:80/ HTTP/1.1\r\n",
    b"\x00\xff",
    b" ",
]


class ErrorCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=40)), min_size=1, max_size=12
    )
)
def test_random_input_never_crashes(pieces: list[bytes]) -> None:
    async def main() -> bytes:
        events: list[str] = []
        client, server = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            # serve_connection itself must return normally; an exception would fail the test.
            nursery.start_soon(
                partial(serve_connection, server, echo, LIMITS, CLIENT, on_event=events.append)
            )
            for piece in pieces:
                if not await _send_quietly(client, piece):
                    break
                await trio.testing.wait_all_tasks_blocked()
            out = await _read_all(client)  # no EOF from us: the server must end it by itself
        assert events[0] == "connection_open"
        assert events[-1] == "connection_close"
        return out

    # serve_connection logs and swallows what it did not expect: that must not happen either.
    catcher = ErrorCatcher()
    logger = logging.getLogger("linker.server")
    logger.addHandler(catcher)
    try:
        out = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(catcher)
    assert not catcher.records, [r.getMessage() for r in catcher.records]
    if out:
        head = out.split(b"\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 "), out[:100]
        status = int(head.split()[1])
        assert status in (100, 200) or 400 <= status < 600
        if status >= 400:
            assert b"\r\nl5d-err: " in out


# -- write batching --------------------------------------------------------------------------


class _CountingStream(trio.abc.HalfCloseableStream):
    """A memory stream end that records each send_all (to count the writes)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_buffered_response_goes_out_in_one_write() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, [(b"x", b"y")], bytes_body(b"all of it at once"))

    client, server = trio.testing.lockstep_stream_pair()
    counting = _CountingStream(server)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(serve_connection, counting, handler, LIMITS, CLIENT))
        peer = Peer(client)
        reply = await peer.request("GET", "/")
        assert reply.body == b"all of it at once"
        await client.aclose()
    assert len(counting.writes) == 1  # head, body and end of message together
    assert counting.writes[0].endswith(b"\r\n\r\nall of it at once")


async def test_a_streamed_body_gets_its_head_before_the_first_chunk() -> None:
    # A body without ready() may wait (an event stream): its head must not wait with it.
    release = trio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        await release.wait()
        yield b"later"

    async def handler(req: Request) -> Response:
        return Response(200, [], stream_body(chunks(), None))

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(serve_connection, server, handler, LIMITS, CLIENT))
        peer = Peer(client)
        await peer.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
        await peer.send(h11.EndOfMessage())
        with trio.fail_after(5):
            head = await peer.next_event()
        assert isinstance(head, h11.Response)
        assert head.status_code == 200
        release.set()
        with trio.fail_after(5):
            data = await peer.next_event()
        assert isinstance(data, h11.Data)
        assert data.data == b"later"
        await client.aclose()
