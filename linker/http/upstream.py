"""The upstream side: a pool of keep-alive HTTP/1.1 client connections, one h11 CLIENT each.

Layers (as httpcore): :class:`UpstreamPool` decides which connection serves a request (pure
bookkeeping, synchronous, so no lock is needed under trio), then ``_Exchange`` drives one
request/response over one ``_UpstreamConnection`` (h11 + a trio stream).  Errors are mapped
once, here, into the linker's tree: connect errors → :class:`~linker.errors.ConnectFailed`,
garbage or an early close → :class:`~linker.errors.UpstreamProtocolError`, a late response
head → :class:`~linker.errors.UpstreamTimeout`.

Full duplex without a background task
-------------------------------------
``request()`` returns as soon as the response head arrives, but the request body may still be
on its way up (an endpoint may answer early, or echo as it reads).  Rather than leave a task
running behind the caller's back, the upload is *pumped*: whenever the caller waits for
response bytes (in ``request()`` or while iterating the response body), a short-lived nursery
runs the upload next to the read.  When response bytes arrive, the upload is stopped at a safe
point: a pull from the request body is interrupted if the body says it is ``cancel_safe``
(the server's request bodies and in-memory bodies are), and a write in progress is always
allowed to finish while we keep reading, because an endpoint blocked writing to us may be
exactly what stops it reading from us.  So bodies move in both directions only as fast as
their consumers pull: backpressure end to end, one 64 KiB buffer per direction.

``Expect: 100-continue`` is honoured end to end: such a request's body is not pulled (so the
linker's own client is not sent a 100 either) until the endpoint answers 100, or until
``expect_continue_timeout_s`` passes; an endpoint that refuses from the headers alone is
never sent, and the client never uploads, a byte of the body.

Dead pooled connections
-----------------------
An idle connection the endpoint has closed looks fine until it is used.  Before reuse we poll
the socket with a zero timeout: an idle HTTP/1.1 connection has nothing to say, so readable
means EOF, a reset or garbage, and the connection is dropped.  The poll can't close the race
with a close in flight, so a request that fails on a *reused* connection before any response
byte arrived is retried once on a *fresh* connection, provided no byte of its body had been
taken yet (the body can't be replayed otherwise).  This is what makes keep-alive pools safe.
"""

from __future__ import annotations

import enum
import logging
import math
import select
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import h11
import trio

from linker.errors import (
    ConnectFailed,
    FramingError,
    LinkerError,
    PoolExhausted,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from linker.http.fastsocket import fast_stream
from linker.http.messages import Body, Headers, Request, Response

__all__ = ["PoolLimits", "UpstreamPool"]

log = logging.getLogger("linker.upstream")

# One receive_some() asks for at most this much.
RECEIVE_BYTES = 64 * 1024

# While a write to the endpoint is in progress we keep reading its response so it can make
# progress, but we hold at most this much of it unparsed; beyond it we just wait for the write.
_PUMP_MAX_BUFFERED_BYTES = 1024 * 1024

# Idle connections of every host are checked for expiry at most this often.
_PRUNE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Limits of the upstream pool; sizes in bytes, times in seconds.

    Attributes:
        max_idle_per_host: idle connections kept per endpoint; more are closed when released.
            Linkerd's ``hostConnectionPool.maxSize`` is unbounded; 16 covers the concurrency
            one worker sends to one endpoint without hoarding sockets.
        idle_timeout_s: an idle connection older than this is closed rather than reused
            (checked whenever the pool is used; endpoints often close after 60-75 s).
        connect_timeout_s: connecting (including DNS) takes at most this long, else
            :class:`~linker.errors.ConnectFailed`.  Finagle's connect timeout is 1 s; 3 s
            tolerates one lost SYN.
        response_header_timeout_s: the response head must arrive this long after the request
            was sent, else :class:`~linker.errors.UpstreamTimeout`.  ``None``: no limit (the
            router's request timeouts apply), as Linkerd's default.
        max_response_head_bytes: largest response head (status line and headers) accepted;
            h11's default, which cites node, tomcat, IIS and Apache.
        max_per_host: most connections (busy + idle) to one endpoint; a request finding all
            of them busy waits for one (Linkerd ``hostConnectionPool.maxSize``; None, the
            default, is unbounded as in Linkerd).
        max_waiters_per_host: most requests waiting for a connection to one endpoint; one more
            fails at once with :class:`~linker.errors.PoolExhausted` (503)
            (``hostConnectionPool.maxWaiters``; None = unbounded).
        min_idle_per_host: idle connections kept even past ``idle_timeout_s``
            (``hostConnectionPool.minSize``; default 0).
        expect_continue_timeout_s: a request with ``Expect: 100-continue`` holds its body
            until the endpoint answers 100 (or refuses with a final response), but at most
            this long, as RFC 9110 §10.1.1 advises; curl waits 1 s too.
    """

    max_idle_per_host: int = 100
    idle_timeout_s: float = 60.0
    connect_timeout_s: float = 3.0
    response_header_timeout_s: float | None = None
    max_response_head_bytes: int = 16 * 1024
    expect_continue_timeout_s: float = 1.0
    max_per_host: int | None = None
    max_waiters_per_host: int | None = None
    min_idle_per_host: int = 0


class _ConnState(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    CLOSED = "closed"


class _UpstreamConnection:
    """One TCP connection to an endpoint and its h11 CLIENT state machine."""

    def __init__(
        self, address: tuple[str, int], stream: trio.abc.Stream, limits: PoolLimits, now: float
    ) -> None:
        self.address = address
        self.stream = stream
        self.h11 = h11.Connection(
            h11.CLIENT, max_incomplete_event_size=limits.max_response_head_bytes
        )
        self.state = _ConnState.ACTIVE
        self.idle_since = now
        self.requests = 0
        self._poller: Any = None  # a poll object for looks_dead(), registered once

    def __repr__(self) -> str:
        host, port = self.address
        return f"<upstream connection {host}:{port} {self.state.value}, {self.requests} requests>"

    def looks_dead(self) -> bool:
        """Whether this idle connection can't be reused: leftover bytes, EOF, reset or error.

        A zero-timeout poll: an idle HTTP/1.1 connection has nothing to read, so being
        readable at all means the endpoint closed it (or sent something it shouldn't have).
        """
        if self.h11.trailing_data[0]:
            return True
        sock = getattr(self.stream, "socket", None)
        if sock is None:
            return False  # not a socket (tests): nothing to poll
        try:
            fd = sock.fileno()
            if fd < 0:
                return True
            if hasattr(select, "poll"):
                poller = self._poller
                if poller is None:
                    poller = self._poller = select.poll()
                    poller.register(fd, select.POLLIN | select.POLLPRI)
                return bool(poller.poll(0))
            readable, _, errored = select.select([fd], [], [fd], 0)
            return bool(readable or errored)
        except (OSError, ValueError):
            return True

    async def close(self) -> None:
        self.state = _ConnState.CLOSED
        await trio.aclose_forcefully(self.stream)


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to endpoints, reused across requests.

    One pool per worker, shared by all routers; it needs no background task.  Not thread-safe
    (trio is single-threaded).
    """

    def __init__(self, limits: PoolLimits = PoolLimits()) -> None:
        self._limits = limits
        self._idle: dict[tuple[str, int], list[_UpstreamConnection]] = {}
        self._active: set[_UpstreamConnection] = set()
        self._closed = False
        self._last_prune_s = 0.0
        self._waiting: dict[tuple[str, int], int] = {}
        self._connecting: dict[tuple[str, int], int] = {}
        self._slot_events: dict[tuple[str, int], trio.Event] = {}
        self._counts = {
            "created": 0,
            "reused": 0,
            "closed": 0,
            "dead_on_checkout": 0,
            "expired": 0,
            "retried": 0,
            "rejected": 0,
            "connect_failed": 0,
        }

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<UpstreamPool [Connections: {s['active']} active, {s['idle']} idle | "
            f"created {s['created']}, reused {s['reused']}, retried {s['retried']}]>"
        )

    def stats(self) -> dict[str, int]:
        """Counters for metrics.

        Returns:
            ``open`` (connections now open), ``active`` (serving a request), ``idle`` (pooled),
            ``hosts`` (endpoints with idle connections), and since creation: ``created``,
            ``reused``, ``closed``, ``dead_on_checkout`` (pooled connections found closed by
            the peer), ``expired`` (idle longer than ``idle_timeout_s``), ``retried``
            (requests retried on a fresh connection after a reused one failed) and
            ``connect_failed``.
        """
        idle = sum(len(conns) for conns in self._idle.values())
        return {
            "open": idle + len(self._active),
            "active": len(self._active),
            "idle": idle,
            "hosts": sum(1 for conns in self._idle.values() if conns),
            **self._counts,
        }

    async def request(self, address: tuple[str, int], req: Request) -> Response:
        """Send ``req`` to ``address`` and return once the response head has arrived.

        The request goes with its headers as given, plus framing (Content-Length or chunked,
        from ``req.body.length``) and, only if it has none, a Host header from
        ``req.authority`` (HTTP/1.1 requires one).  The body is streamed up as the endpoint
        takes it.  The response body streams the endpoint's bytes; when it has been read to
        the end the connection returns to the pool, and if it is abandoned (``aclose()``
        before the end, an error, a cancel) the connection is closed.

        Raises:
            ConnectFailed: could not connect (refused, unreachable, timeout); names the address.
            UpstreamProtocolError: the endpoint sent something that is not HTTP/1.1, or closed
                the connection before its response head.
            UpstreamTimeout: no response head within ``response_header_timeout_s``.
            LinkerError: whatever reading ``req.body`` raised (e.g. the client's body broke).
            trio.ClosedResourceError: the pool was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("UpstreamPool is closed")
        upload = _Upload(req.body)
        fresh = False
        while True:
            conn = await self._acquire(address, fresh=fresh)
            exchange = _Exchange(self, conn, req, upload)
            try:
                return await exchange.start()
            except _StaleConnection as stale:
                # The endpoint closed a pooled connection just as we reused it; nothing reached
                # it, so trying once more on a new connection is safe if the body can be sent
                # again.
                if fresh or not upload.replayable:
                    raise stale.error from None
                self._counts["retried"] += 1
                log.debug("retrying on a fresh connection to %s:%s: %s", *address, stale.error)
                fresh = True

    async def aclose(self) -> None:
        """Close every connection, idle or active; later requests raise ClosedResourceError.

        Responses still streaming fail with UpstreamProtocolError.
        """
        self._closed = True
        conns = [c for host in self._idle.values() for c in host] + list(self._active)
        self._idle.clear()
        self._active.clear()
        await self._close_all(conns)

    # -- pure decisions --------------------------------------------------------------------

    def _take_idle(
        self, address: tuple[str, int], now: float
    ) -> tuple[_UpstreamConnection | None, list[_UpstreamConnection]]:
        """An idle connection to reuse for ``address`` (or None), and the ones to close."""
        conns = self._idle.get(address)
        to_close: list[_UpstreamConnection] = []
        while conns:
            # Most recently used first: the least likely to have been closed by the endpoint.
            conn = conns.pop()
            kept_by_min_size = len(conns) + 1 <= self._limits.min_idle_per_host
            if now - conn.idle_since >= self._limits.idle_timeout_s and not kept_by_min_size:
                self._counts["expired"] += 1
                to_close.append(conn)
            elif conn.looks_dead():
                self._counts["dead_on_checkout"] += 1
                to_close.append(conn)
            else:
                conn.state = _ConnState.ACTIVE
                self._active.add(conn)
                self._counts["reused"] += 1
                return conn, to_close
        return None, to_close

    def _release(
        self, conn: _UpstreamConnection, reusable: bool, now: float
    ) -> list[_UpstreamConnection]:
        """Return ``conn`` after an exchange; the connections to close."""
        if conn.state is not _ConnState.ACTIVE:
            return []  # closed by aclose() meanwhile
        self._active.discard(conn)
        if not reusable or self._closed or self._limits.max_idle_per_host <= 0:
            return [conn]
        conns = self._idle.setdefault(conn.address, [])
        to_close: list[_UpstreamConnection] = []
        if len(conns) >= self._limits.max_idle_per_host:
            to_close.append(conns.pop(0))  # keep the most recently used ones
        conn.state = _ConnState.IDLE
        conn.idle_since = now
        conns.append(conn)
        return to_close

    def _prune(self, now: float) -> list[_UpstreamConnection]:
        """Expired idle connections of every host, removed from the pool."""
        if now - self._last_prune_s < _PRUNE_INTERVAL_S:
            return []
        self._last_prune_s = now
        expired: list[_UpstreamConnection] = []
        for address in list(self._idle):
            conns = self._idle[address]
            fresh_ones = [c for c in conns if now - c.idle_since < self._limits.idle_timeout_s]
            old = [c for c in conns if now - c.idle_since >= self._limits.idle_timeout_s]
            # minSize: keep the newest of the expired ones up to the floor.
            spare = max(0, self._limits.min_idle_per_host - len(fresh_ones))
            keep = fresh_ones + old[len(old) - spare :] if spare else fresh_ones
            expired += old[: len(old) - spare] if spare else old
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]
        self._counts["expired"] += len(expired)
        return expired

    # -- I/O -------------------------------------------------------------------------------

    async def _close_all(self, conns: list[_UpstreamConnection]) -> None:
        for conn in conns:
            self._counts["closed"] += 1
            await conn.close()
            self._wake(conn.address)

    async def _acquire(self, address: tuple[str, int], *, fresh: bool) -> _UpstreamConnection:
        while True:
            now = trio.current_time()
            to_close = self._prune(now)
            conn = None
            if not fresh:
                conn, stale = self._take_idle(address, now)
                to_close += stale
            await self._close_all(to_close)
            if conn is not None:
                return conn
            limit = self._limits.max_per_host
            # A fresh connection replaces a stale one that was just closed: never held back.
            if fresh or limit is None or self._open_to(address) < limit:
                # Count the slot before the await, or concurrent requests would all see room.
                self._connecting[address] = self._connecting.get(address, 0) + 1
                try:
                    return await self._connect(address)
                finally:
                    self._connecting[address] -= 1
                    self._wake(address)
            await self._wait_for_slot(address, limit)

    def _open_to(self, address: tuple[str, int]) -> int:
        busy = sum(1 for c in self._active if c.address == address)
        return busy + len(self._idle.get(address, ())) + self._connecting.get(address, 0)

    async def _wait_for_slot(self, address: tuple[str, int], limit: int) -> None:
        """Wait until a connection to ``address`` is released or closed (maxSize reached)."""
        waiting = self._waiting.get(address, 0)
        max_waiters = self._limits.max_waiters_per_host
        if max_waiters is not None and waiting >= max_waiters:
            self._counts["rejected"] += 1
            raise PoolExhausted(
                f"All {limit} connections to {address[0]}:{address[1]} are busy and "
                f"{waiting} requests are already waiting (hostConnectionPool maxSize/maxWaiters)"
            )
        self._waiting[address] = waiting + 1
        try:
            await self._slot_event(address).wait()
        finally:
            self._waiting[address] -= 1

    def _slot_event(self, address: tuple[str, int]) -> trio.Event:
        event = self._slot_events.get(address)
        if event is None:
            event = self._slot_events[address] = trio.Event()
        return event

    def _wake(self, address: tuple[str, int]) -> None:
        event = self._slot_events.pop(address, None)
        if event is not None:
            event.set()

    async def _connect(self, address: tuple[str, int]) -> _UpstreamConnection:
        host, port = address
        timeout_s = self._limits.connect_timeout_s
        try:
            with trio.fail_after(timeout_s):
                stream = fast_stream(await trio.open_tcp_stream(host, port))
        except trio.TooSlowError:
            self._counts["connect_failed"] += 1
            raise ConnectFailed(
                f"Connecting to {host}:{port} timed out after {timeout_s:g} s; "
                "is the endpoint up and reachable from the linker?"
            ) from None
        except OSError as exc:
            self._counts["connect_failed"] += 1
            raise ConnectFailed(
                f"Connection to {host}:{port} failed ({exc.strerror or exc}); "
                "is the endpoint up and listening on that port?"
            ) from None
        if self._closed:
            await trio.aclose_forcefully(stream)
            raise trio.ClosedResourceError("UpstreamPool is closed")
        conn = _UpstreamConnection(address, stream, self._limits, trio.current_time())
        self._counts["created"] += 1
        self._active.add(conn)
        return conn

    async def _finish(self, conn: _UpstreamConnection, reusable: bool) -> None:
        """An exchange on ``conn`` ended: pool it if ``reusable``, else close it."""
        if reusable:
            conn.h11.start_next_cycle()
        await self._close_all(self._release(conn, reusable, trio.current_time()))
        self._wake(conn.address)  # a waiter can now reuse it, or connect in its place


class _StaleConnection(Exception):
    """A reused connection failed before any response byte: the endpoint had closed it."""

    def __init__(self, error: UpstreamProtocolError) -> None:
        super().__init__(str(error))
        self.error = error


class _Upload:
    """The request body on its way up; shared by the attempts of one request."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self.cancel_safe = bool(getattr(body, "cancel_safe", False))
        self._iterator: AsyncIterator[bytes] | None = None
        self.consumed_bytes = 0
        self.ended = body.length == 0  # nothing to pull for an empty body
        self.interrupted = False  # a pull was cancelled half-way: the body is in pieces

    @property
    def replayable(self) -> bool:
        """Whether a new attempt can still send the whole body: nothing was taken from it."""
        return self.consumed_bytes == 0 and not self.interrupted

    async def pull(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        if self.ended:
            return None
        if self._iterator is None:
            self._iterator = self.body.__aiter__()
        while True:
            try:
                chunk = await self._iterator.__anext__()
            except StopAsyncIteration:
                self.ended = True
                return None
            if chunk:
                self.consumed_bytes += len(chunk)
                return chunk


class _PumpState:
    """What the reader and the uploader of one pump tell each other (see _Exchange._pump)."""

    def __init__(self) -> None:
        self.stopping = False  # the reader has response bytes: stop at the next safe point
        self.uploader_done = False
        self.pull_scope: trio.CancelScope | None = None  # set while in an interruptible pull
        self.in_unsafe_pull = False  # in a pull that a cancel would break (not cancel_safe)
        self.reader_scope: trio.CancelScope | None = None  # set while the reader waits
        self.error: BaseException | None = None  # what the request body raised


class _Exchange:
    """One request and its response on one connection."""

    def __init__(
        self, pool: UpstreamPool, conn: _UpstreamConnection, req: Request, upload: _Upload
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._req = req
        self._upload = upload
        self._reused = conn.requests > 0
        self._response_bytes = 0  # received from the endpoint during this exchange
        self._eof = False  # the endpoint closed (or reset) its side
        self._upload_sent = False  # EndOfMessage of the request went out
        self._upload_broken = False  # the endpoint stopped taking the body (it may answer anyway)
        self._hold_upload = False  # waiting for the endpoint's 100 Continue before uploading
        self._finished = False
        # An event (or h11's error) taken from the buffer by _UpstreamBody.ready() and not yet
        # consumed: the next read returns it first.
        self._peeked: h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED] | Exception | None = None
        conn.requests += 1

    def _where(self) -> str:
        host, port = self._conn.address
        return f"{host}:{port}"

    async def start(self) -> Response:
        """Send the request head and return the response head (see UpstreamPool.request)."""
        conn = self._conn
        req = self._req
        try:
            head = h11.Request(
                method=req.method.encode("ascii"),
                target=req.target.encode("latin-1"),
                headers=_request_headers(req, conn.address),
            )
            data = conn.h11.send(head)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            await self._abort()
            raise UpstreamProtocolError(
                f"The request can't be sent to {self._where()} as HTTP/1.1: {exc}."
            ) from None
        try:
            await self._send(data)
            if self._upload.ended:
                await self._send_body_piece(None)
            elif any(n == b"expect" and v.lower() == b"100-continue" for n, v in req.headers):
                # Let the endpoint refuse before the body moves: it is not pulled (so the
                # linker's client gets no 100 Continue either) until a 100 arrives.
                self._hold_upload = True
            timeout_s = self._pool._limits.response_header_timeout_s
            event = None
            # A bare CancelScope rather than trio.fail_after: cheaper on the hot path.
            with trio.CancelScope(
                deadline=trio.current_time() + timeout_s if timeout_s is not None else math.inf
            ):
                event = await self._response_head()
        except BaseException:
            await self._abort()
            raise
        if event is None:
            await self._abort()
            raise UpstreamTimeout(
                f"{self._where()} sent no response head within {timeout_s:g} s "
                "(response_header_timeout_s)."
            )
        if type(event) is not h11.Response:
            await self._abort()
            raise self._protocol_error(f"sent {type(event).__name__} instead of a response")
        return Response(
            status=event.status_code,
            headers=[(bytes(n), bytes(v)) for n, v in event.headers],
            body=_UpstreamBody(self, _response_length(req.method, event)),
            reason=bytes(event.reason),
        )

    async def _response_head(self) -> h11.Event:
        """The first event that is not a 1xx; a 100 releases a held upload."""
        limits = self._pool._limits
        while True:
            if self._hold_upload:
                with trio.move_on_after(limits.expect_continue_timeout_s) as scope:
                    event = await self._next_event()
                if scope.cancelled_caught:
                    # RFC 9110 §10.1.1: a client that sent Expect must not wait forever for
                    # a 100; many servers never send one.
                    self._hold_upload = False
                    continue
            else:
                event = await self._next_event()
            if type(event) is not h11.InformationalResponse:
                return event
            if event.status_code == 101:
                raise self._protocol_error("switched protocols (101), which we never ask")
            if event.status_code == 100:
                self._hold_upload = False
            # Other 1xx (e.g. 103 Early Hints) are not forwarded: skip them.

    # -- errors ----------------------------------------------------------------------------

    def _protocol_error(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(f"{self._where()} {what}.")

    def _early_close(self, what: str) -> LinkerError | _StaleConnection:
        """The error for a connection that broke: stale if nothing of the response came yet."""
        err = self._protocol_error(what)
        if self._reused and self._response_bytes == 0:
            return _StaleConnection(err)
        return err

    # -- writing ---------------------------------------------------------------------------

    async def _send(self, data: bytes | None) -> None:
        """Write to the endpoint.

        Raises:
            _StaleConnection / UpstreamProtocolError: the endpoint closed or reset.
        """
        if not data:
            return
        try:
            await self._conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._early_close("closed the connection while we sent the request") from None

    async def _send_body_piece(self, chunk: bytes | None) -> None:
        """Frame and write one piece of the request body (None: its end)."""
        try:
            event = h11.Data(data=chunk) if chunk is not None else h11.EndOfMessage()
            data = self._conn.h11.send(event)
        except h11.LocalProtocolError as exc:
            raise FramingError(
                f"The request body did not match its declared length ({exc})."
            ) from None
        await self._send(data)
        if chunk is None:
            self._upload_sent = True

    # -- reading, with the upload pumped alongside -----------------------------------------

    async def _next_event(self) -> h11.Event:
        """The next response event, reading (and uploading) as needed.

        Raises:
            UpstreamProtocolError / _StaleConnection: garbage or an early close.
            LinkerError: the request body failed.
        """
        h = self._conn.h11
        while True:
            try:
                event = self._take_event()
            except h11.RemoteProtocolError as exc:
                # After EOF, h11 says "peer unexpectedly closed connection" (a partial message
                # was buffered) or refuses a ConnectionClosed in mid-exchange (nothing was).
                if self._eof and (not h.trailing_data[0] or "unexpectedly closed" in str(exc)):
                    raise self._early_close(
                        "closed the connection before the response ended"
                    ) from None
                raise self._protocol_error(f"sent an invalid HTTP/1.1 response ({exc})") from None
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                raise self._protocol_error("sent more than one response")
            await self._pump()  # NEED_DATA

    def _take_event(self) -> Any:
        """h11's next event from the buffer (the peeked one first); raises what h11 raised."""
        peeked = self._peeked
        if peeked is None:
            return self._conn.h11.next_event()
        self._peeked = None
        if isinstance(peeked, Exception):
            raise peeked
        return peeked

    def ready(self) -> bool:
        """Whether the next response event is buffered (no I/O is needed to get it)."""
        if self._peeked is None:
            try:
                self._peeked = self._conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._peeked = exc
        return self._peeked is not h11.NEED_DATA

    async def _receive(self) -> bytes:
        try:
            data = bytes(await self._conn.stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # a reset ends the input like an EOF; h11 will say what was cut short
        self._response_bytes += len(data)
        self._eof = self._eof or not data
        return data

    async def _pump(self) -> None:
        """Receive more of the response into h11, uploading the request body meanwhile.

        Returns after at least one receive (possibly EOF) with the upload stopped at a safe
        point: never half-way through a write, and never after taking a chunk from the body
        that was not written.
        """
        h = self._conn.h11
        if self._upload_sent or self._upload_broken or self._hold_upload:
            h.receive_data(await self._receive())
            return
        state = _PumpState()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._upload_until_stopped, state)
            buffered = 0
            while state.error is None and not (buffered and state.uploader_done):
                with trio.CancelScope() as scope:
                    state.reader_scope = scope
                    data = await self._receive()
                state.reader_scope = None
                if scope.cancelled_caught:
                    continue  # the uploader stopped (or failed): see the loop condition
                h.receive_data(data)
                buffered += len(data)
                state.stopping = True
                if state.pull_scope is not None:
                    state.pull_scope.cancel()
                if not data:
                    # The endpoint closed: nothing we upload can matter any more, so stop the
                    # uploader wherever it is.  A body interrupted mid-pull can't be replayed.
                    self._upload_broken = True
                    if state.in_unsafe_pull:
                        self._upload.interrupted = True
                    nursery.cancel_scope.cancel()
                    break
                if buffered >= _PUMP_MAX_BUFFERED_BYTES:
                    break
                # Until the uploader reaches a safe point (it may be in a write, or in a pull
                # that can't be interrupted) keep reading: an endpoint blocked on writing to us
                # may be what stops it reading our write.  The uploader cancels this read.
        if state.error is not None:
            raise state.error

    async def _upload_until_stopped(self, state: _PumpState) -> None:
        upload = self._upload
        try:
            while not state.stopping and not self._upload_sent:
                if upload.cancel_safe:
                    with trio.CancelScope() as scope:
                        state.pull_scope = scope
                        chunk = await upload.pull()
                    state.pull_scope = None
                    if scope.cancelled_caught:
                        return  # interrupted before taking anything: safe
                else:
                    state.in_unsafe_pull = True
                    chunk = await upload.pull()
                    state.in_unsafe_pull = False
                try:
                    await self._send_body_piece(chunk)
                except (_StaleConnection, UpstreamProtocolError):
                    # The endpoint stopped reading our body; it may still answer (e.g. 413),
                    # so the reader goes on.
                    self._upload_broken = True
                    return
        except Exception as exc:
            state.error = exc  # the request body failed: re-raised by _pump
            state.stopping = True
        finally:
            state.uploader_done = True
            if (state.stopping or state.error is not None) and state.reader_scope is not None:
                state.reader_scope.cancel()

    # -- the end ---------------------------------------------------------------------------

    async def finish_from_buffer(self) -> bool:
        """Complete the response from bytes already received, without I/O; True if it ended."""
        while True:
            try:
                event = self._take_event()
            except h11.RemoteProtocolError:
                return False
            if type(event) is h11.Data:
                continue
            if type(event) is h11.EndOfMessage:
                await self.end()
                return True
            return False

    async def end(self) -> None:
        """The response was read to its end: pool the connection if it can carry another."""
        if self._finished:
            return
        self._finished = True
        h = self._conn.h11
        reusable = h.our_state is h11.DONE and h.their_state is h11.DONE
        await self._pool._finish(self._conn, reusable)

    async def _abort(self) -> None:
        """Give up on this exchange: the connection's state is unknown, so it is closed."""
        if self._finished:
            return
        self._finished = True
        with trio.CancelScope(shield=True):
            await self._pool._finish(self._conn, False)

    async def next_body_event(self) -> h11.Event:
        try:
            return await self._next_event()
        except _StaleConnection as stale:
            await self._abort()
            raise stale.error from None
        except BaseException:
            await self._abort()
            raise

    async def abort(self) -> None:
        await self._abort()


class _UpstreamBody:
    """A response body streamed from the endpoint as it is iterated."""

    __slots__ = ("_done", "_exchange", "length")

    def __init__(self, exchange: _Exchange, length: int | None) -> None:
        self._exchange = exchange
        self.length = length
        self._done = False

    def __aiter__(self) -> _UpstreamBody:
        return self

    def ready(self) -> bool:
        """True when the next ``__anext__`` needs no I/O (the server then batches its writes)."""
        return self._done or self._exchange.ready()

    async def __anext__(self) -> bytes:
        while not self._done:
            event = await self._exchange.next_body_event()
            if type(event) is h11.Data:
                if event.data:
                    return bytes(event.data)
                continue
            if type(event) is h11.EndOfMessage:
                self._done = True
                await self._exchange.end()
                break
            await self._exchange.abort()
            raise UpstreamProtocolError(
                f"{self._exchange._where()} sent {type(event).__name__} inside a response body."
            )
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop reading: the connection goes back to the pool if the rest of the response was
        already received (e.g. a HEAD or 204 response), else it is closed."""
        if self._done:
            return
        self._done = True
        if not await self._exchange.finish_from_buffer():
            await self._exchange.abort()


def _request_headers(req: Request, address: tuple[str, int]) -> Headers:
    """``req.headers`` with framing for ``req.body`` and, if missing, a Host header."""
    headers = [(n, v) for n, v in req.headers if n not in (b"content-length", b"transfer-encoding")]
    had_length = any(n == b"content-length" for n, _ in req.headers)
    length = req.body.length
    if length is None:
        headers.append((b"transfer-encoding", b"chunked"))
    elif length > 0 or had_length:
        headers.append((b"content-length", str(length).encode("ascii")))
    if not any(n == b"host" for n, _ in headers):
        host = req.authority or f"{address[0]}:{address[1]}"
        headers.append((b"host", host.encode("latin-1")))
    return headers


def _response_length(method: str, event: h11.Response) -> int | None:
    """The body length h11 will deliver for this response (RFC 9112 §6.3), or None."""
    if method == "HEAD" or event.status_code in (204, 304):
        return 0
    length = None
    for name, value in event.headers:
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            length = int(value)
    return length
