"""Framing where nginx and HAProxy are strict, or RFC 9112 asks for leniency (issue 11, item 7).

Raw bytes over real sockets to the linker's server (and, for responses, from a raw origin
behind a linker and its pool): a bare CR in a chunk-size line is refused both ways, a response
head over the limit is refused even when it arrives in one read, ``HTTP/1.2`` is served as
1.1, empty lines before a request line are skipped, and an HTTP/1.0 client asking for
keep-alive keeps its connection when the response has a length.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

import h11
import pytest
import trio
import trio.testing

from linker.http.framing import BadChunkLine, ChunkLineGuard, head_size
from linker.http.messages import Request, Response, bytes_body, read_body, stream_body
from linker.http.upstream import UpstreamPool

from .endpoints import LOCAL, endpoint, linker_in_front_of, raw_endpoint, read_head


async def echo(req: Request) -> Response:
    body = await read_body(req.body)
    summary = f"{req.method} {req.target} {req.http_version} {len(body)}"
    return Response(200, [(b"x-summary", summary.encode())], bytes_body(body))


async def exchange_raw(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection, half-close, and return everything answered."""
    stream = await trio.open_tcp_stream(LOCAL, port)
    await stream.send_all(data)
    await stream.send_eof()
    return await read_to_eof(stream)


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    out = bytearray()
    try:
        while data := await stream.receive_some():
            out += data
    except trio.BrokenResourceError:
        pass
    await stream.aclose()
    return bytes(out)


def err(headers: dict[bytes, bytes]) -> str:
    return unquote(headers[b"l5d-err"].decode())


def responses(raw: bytes, methods: int = 10) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """(status, headers, body) of each response in ``raw``, parsed by an h11 client."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(raw)
    conn.receive_data(b"")
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []
    for _ in range(methods):
        if not conn.trailing_data[0]:
            break
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "t")]))
        conn.send(h11.EndOfMessage())
        status, headers, body = 0, {}, b""
        while True:
            event = conn.next_event()
            if type(event) is h11.Response:
                status, headers = event.status_code, dict(event.headers)
            elif type(event) is h11.Data:
                body += event.data
            else:
                break
        out.append((status, headers, body))
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            break
    return out


# -- the chunk guard alone: every split point ----------------------------------------------------

GOOD_CHUNKED = b'3\r\nabc\r\n4;ext=1;q="a b"\r\nd\re\rf\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n'
BAD_CHUNKED = b"3\r\nabc\r\n4;ext\rx\r\ndefg\r\n0\r\n\r\n"


@pytest.mark.parametrize("split", range(len(GOOD_CHUNKED) + 1))
def test_the_guard_passes_good_chunks_split_anywhere(split: int) -> None:
    guard = ChunkLineGuard()
    guard.feed(GOOD_CHUNKED[:split])
    guard.feed(GOOD_CHUNKED[split:])  # bare CRs in chunk *data* and after the body are fine


@pytest.mark.parametrize("split", range(len(BAD_CHUNKED) + 1))
def test_the_guard_refuses_a_bare_cr_split_anywhere(split: int) -> None:
    def feed_in_two() -> None:
        guard = ChunkLineGuard()
        guard.feed(BAD_CHUNKED[:split])
        guard.feed(BAD_CHUNKED[split:])

    with pytest.raises(BadChunkLine, match="bare CR"):
        feed_in_two()


def test_head_size_measures_to_the_blank_line() -> None:
    assert head_size(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody") == (
        len(b"HTTP/1.1 200 OK\r\nA: b"),
        True,
    )
    assert head_size(b"HTTP/1.1 200 OK\r\nA: b") == (len(b"HTTP/1.1 200 OK\r\nA: b"), False)


# -- requests from clients -----------------------------------------------------------------------


async def test_bare_cr_in_a_chunk_extension_gets_400() -> None:
    raw = (
        b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;a\rb\r\nhello\r\n0\r\n\r\n"
    )
    async with endpoint(echo) as port:
        out = await exchange_raw(port, raw)
        good = await exchange_raw(port, raw.replace(b"a\rb", b"a=b"))
    [(status, headers, _)] = responses(out)
    assert status == 400
    assert "bare CR" in err(headers)
    assert headers[b"connection"] == b"close"
    assert responses(good)[0][:1] == (200,)


async def test_bare_cr_in_a_later_chunk_gets_400_before_the_handler_sees_it() -> None:
    seen: list[bytes] = []

    async def reader(req: Request) -> Response:
        async for chunk in req.body:
            seen.append(chunk)
        return Response(200, [], bytes_body(b""))

    async with endpoint(reader) as port:
        stream = await trio.open_tcp_stream(LOCAL, port)
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_all(b"4;x\ry\r\ndefg\r\n0\r\n\r\n")
        out = await read_to_eof(stream)
    assert responses(out)[0][0] == 400
    assert seen == [b"abc"]


async def test_a_request_head_over_the_limit_in_one_read_gets_431() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-H: v\r\n" * 3000 + b"\r\n"
    async with endpoint(echo) as port:
        out = await exchange_raw(port, raw)
    assert responses(out)[0][0] == 431


@pytest.mark.parametrize("version", [b"1.2", b"1.9"])
async def test_a_higher_http_1_minor_version_is_served_as_1_1(version: bytes) -> None:
    raw = b"GET /v HTTP/" + version + b"\r\nHost: t\r\n\r\nGET /w HTTP/1.1\r\nHost: t\r\n\r\n"
    async with endpoint(echo) as port:
        out = await exchange_raw(port, raw)
    got = responses(out)
    assert [(s, h[b"x-summary"]) for s, h, _ in got] == [
        (200, b"GET /v 1.1 0"),
        (200, b"GET /w 1.1 0"),
    ]


@pytest.mark.parametrize("version", [b"2.0", b"3.0", b"0.9"])
async def test_other_major_versions_get_505(version: bytes) -> None:
    async with endpoint(echo) as port:
        out = await exchange_raw(port, b"GET / HTTP/" + version + b"\r\nHost: t\r\n\r\n")
    assert responses(out)[0][0] == 505


@pytest.mark.parametrize("empty", [b"\r\n", b"\r\n\r\n", b"\n"])
async def test_empty_lines_before_a_request_line_are_ignored(empty: bytes) -> None:
    first = b"POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
    second = b"GET /b HTTP/1.1\r\nHost: t\r\n\r\n"
    async with endpoint(echo) as port:
        # Before the first request, and between two on one keep-alive connection (old clients
        # send a CRLF after a POST body), in one read and in separate ones.
        together = await exchange_raw(port, empty + first + empty + second)
        stream = await trio.open_tcp_stream(LOCAL, port)
        for piece in (empty, first, empty, second):
            await stream.send_all(piece)
            await trio.testing.wait_all_tasks_blocked()
        await stream.send_eof()
        apart = await read_to_eof(stream)
    for out in (together, apart):
        assert [(s, h[b"x-summary"]) for s, h, _ in responses(out)] == [
            (200, b"POST /a 1.1 2"),
            (200, b"GET /b 1.1 0"),
        ]


async def test_an_http_1_0_keep_alive_client_keeps_its_connection() -> None:
    async with endpoint(echo) as port:
        stream = await trio.open_tcp_stream(LOCAL, port)
        replies = []
        for path in (b"/one", b"/two"):
            await stream.send_all(b"GET " + path + b" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            head = await read_head(stream)
            replies.append(head)
        await stream.send_all(b"GET /three HTTP/1.0\r\n\r\n")  # no keep-alive: closed after
        last = await read_to_eof(stream)
    for head, path in zip(replies, (b"/one", b"/two"), strict=True):
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"\r\nx-summary: GET " + path + b" 1.0 0\r\n" in head
        assert b"\r\nconnection: keep-alive\r\n" in head.lower()
        assert b"content-length: 0" in head.lower()
    assert b"x-summary: GET /three 1.0 0" in last
    assert b"connection: close" in last.lower()


async def test_http_1_0_keep_alive_pipelined_with_a_body() -> None:
    raw = (
        b"POST /p HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    async with endpoint(echo) as port:
        stream = await trio.open_tcp_stream(LOCAL, port)
        await stream.send_all(raw)
        data = b""
        while b"GET /q" not in data or not data.endswith(b"\r\n\r\n"):
            more = await stream.receive_some()
            if not more:
                break  # closed after the first response
            data += more
        await stream.aclose()
    got = responses(data)
    assert [(s, h[b"x-summary"], h[b"connection"], b) for s, h, b in got] == [
        (200, b"POST /p 1.0 3", b"keep-alive", b"abc"),
        (200, b"GET /q 1.0 0", b"keep-alive", b""),
    ]


async def test_http_1_0_keep_alive_with_an_unknown_length_still_closes() -> None:
    async def streamed(req: Request) -> Response:
        async def gen() -> AsyncIterator[bytes]:
            yield b"a"
            yield b"b"

        return Response(200, [], stream_body(gen()))

    async with endpoint(streamed) as port:
        out = await exchange_raw(
            port, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n"
        )
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"ab"  # close-delimited; the second request is not served


# -- responses from origins ----------------------------------------------------------------------


MANY_RESPONSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n" + b"X-H: 0123456\r\n" * 3000 + b"Content-Length: 0\r\n\r\n"
)
BAD_RESPONSES = [
    (
        "bare CR in a chunk extension",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
        "bare CR",
    ),
    # > 33 KB in one send: h11's incomplete-head limit never sees it.
    ("3,000 headers in one send", MANY_RESPONSE_HEADERS, "over the 16384-byte limit"),
]


@pytest.mark.parametrize(("name", "response", "why"), BAD_RESPONSES)
async def test_a_bad_upstream_response_gets_502(name: str, response: bytes, why: str) -> None:
    async def origin(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(response)  # one send, so one read on the linker's side
        await trio.sleep_forever()

    pool = UpstreamPool()
    async with raw_endpoint(origin) as up_port, linker_in_front_of(up_port, pool) as port:
        out = await exchange_raw(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    [(status, headers, _)] = responses(out)
    assert status == 502
    assert why in err(headers)
    assert pool.stats()["open"] == 0  # the connection is discarded
    await pool.aclose()


async def test_an_upstream_head_at_the_limit_passes() -> None:
    filler = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: "
    head = filler + b"v" * (16 * 1024 - len(filler)) + b"\r\n\r\nok"

    async def origin(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(head)

    pool = UpstreamPool()
    async with raw_endpoint(origin) as up_port, linker_in_front_of(up_port, pool) as port:
        out = await exchange_raw(port, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    assert responses(out)[0][0::2] == (200, b"ok")
    await pool.aclose()
