"""The value types the linker's HTTP layers exchange: Request, Response and streaming bodies.

These are what a handler sees and returns; neither h11 nor sockets appear here, so the router
and the admin code never depend on how bytes reach the wire (the h11 rule of keeping protocol
values apart from I/O).

Theory of bodies: a :class:`Body` is an async iterable of byte chunks plus a ``length`` (the
Content-Length when known, ``None`` for chunked or read-until-close).  Bodies are *pull*
streams: the server reads the client's socket only when someone iterates the request body,
and the upstream pool reads the endpoint's socket only when someone iterates the response body.
That is the whole of backpressure: a slow consumer stalls the producer's TCP window, and at
most one receive buffer (64 KiB) per stream is held in memory.

Three optional extras:

* ``async def aclose()``: the server calls it when it stops iterating early (the client went
  away, or a HEAD response), so a body that owns a connection can release or discard it at once
  instead of waiting for garbage collection.
* ``ready()`` on the iterator: True when the next ``__anext__`` will not wait for I/O (the
  next chunk, or the end, is already buffered).  The server then gathers the head and those
  chunks into one write; without it every chunk is written as it comes.
* ``cancel_safe = True``: cancelling ``__anext__`` loses no data.  The upstream pool then
  interrupts a pull from the request body as soon as response bytes arrive; for other bodies it
  waits for the pull to finish (see :mod:`linker.http.upstream.exchange`).  The server's
  request bodies and :func:`bytes_body` are cancel-safe; :func:`stream_body` is not (an async
  generator dies when a cancel hits it mid-await).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "EMPTY_BODY",
    "Body",
    "Handler",
    "Headers",
    "Request",
    "Response",
    "bytes_body",
    "read_body",
    "stream_body",
]

Headers = list[tuple[bytes, bytes]]
"""Header fields in arrival order: names are lower-case bytes, duplicates are kept."""


class Body(Protocol):
    """An async byte stream with backpressure (see the module docstring).

    Attributes:
        length: the exact number of bytes the stream yields, if known in advance; ``None`` for
            chunked or close-delimited bodies.
    """

    length: int | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the server hands it to a handler (or a handler to the upstream pool).

    Attributes:
        method: e.g. ``"GET"`` (case preserved; methods are case-sensitive).
        target: origin-form path and query (``"/a?b=1"``), or ``"*"``.  An absolute-form target
            (``GET http://host/a``, as sent to a proxy) is converted to origin form, and its
            host goes to ``authority`` (RFC 9112 §3.2.2).  Decoded as latin-1, so every byte
            round-trips.
        authority: the host (and port) the client asked for: the absolute-form authority if
            there was one, else the ``Host`` header, else ``None`` (an HTTP/1.0 request).
        http_version: ``"1.0"`` or ``"1.1"``.
        headers: see :data:`Headers`.
        body: the request body, read lazily.
        client: the peer's ``(host, port)``.
        received_at: ``trio.current_time()`` when the request head was complete.
    """

    method: str
    target: str
    authority: str | None
    http_version: str
    headers: Headers
    body: Body
    client: tuple[str, int]
    received_at: float


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response: what a handler returns, and what the upstream pool hands back.

    The server chooses the framing itself from ``body.length`` (Content-Length when known,
    chunked otherwise), so ``Transfer-Encoding`` in ``headers`` is ignored.
    """

    status: int
    headers: Headers
    body: Body
    reason: bytes = b""


Handler = Callable[[Request], Awaitable[Response]]
"""What the server calls for each request.  It may raise :class:`linker.errors.LinkerError`."""


class _BytesBody:
    """A body held in memory: re-iterable, so a request carrying it can be retried."""

    __slots__ = ("_data", "length")

    cancel_safe = True  # its iterator never awaits

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length: int | None = len(data)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _OneChunk(self._data)

    def __repr__(self) -> str:
        return f"<bytes body, {len(self._data)} bytes>"


class _OneChunk:
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data if data else None

    def __aiter__(self) -> _OneChunk:
        return self

    def ready(self) -> bool:
        return True  # in memory: never waits

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if data is None:
            raise StopAsyncIteration
        return data


class _StreamBody:
    """Adapts any async iterable of bytes (e.g. an async generator) to :class:`Body`."""

    __slots__ = ("_chunks", "length")

    def __init__(self, chunks: AsyncIterable[bytes], length: int | None) -> None:
        self._chunks = chunks
        self.length = length

    def __aiter__(self) -> AsyncIterator[bytes]:
        return aiter(self._chunks)

    async def aclose(self) -> None:
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()


EMPTY_BODY: Body = _BytesBody(b"")
"""A body of zero bytes (``length == 0``)."""


def bytes_body(data: bytes) -> Body:
    """A body that yields ``data`` in one chunk, with ``length = len(data)``; re-iterable."""
    return _BytesBody(data)


def stream_body(chunks: AsyncIterable[bytes], length: int | None = None) -> Body:
    """Wrap an async iterable (e.g. an async generator) as a :class:`Body`.

    Args:
        chunks: produces the body's bytes; it is iterated only once, and only on demand.
        length: the exact total, if known (it becomes Content-Length, so it must be right: the
            server aborts the connection rather than send a body of another size).
    """
    return _StreamBody(chunks, length)


async def read_body(body: Body, *, max_bytes: int | None = None) -> bytes:
    """Read a whole body into memory.  Only for bodies known to be small (admin, tests).

    Raises:
        ValueError: the body is longer than ``max_bytes``; the rest is left unread.
    """
    parts: list[bytes] = []
    total = 0
    async for chunk in body:
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise ValueError(f"body is longer than {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)
