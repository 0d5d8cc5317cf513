"""One request and its response on one upstream connection (httpcore's ``HTTP11Connection``).

An :class:`Exchange` writes a request head to an :class:`~.connection.UpstreamConnection`,
returns the response head, and streams the response body as the caller iterates it.  When the
exchange ends it hands the connection back through its ``release`` callback, saying whether
the connection can carry another request: it never calls into the pool.  Errors are mapped
once, here, into the linker's tree: garbage or an early close →
:class:`~linker.errors.UpstreamProtocolError`, a late response head →
:class:`~linker.errors.UpstreamTimeout`.  A *reused* connection that broke before any response
byte raises :class:`StaleConnection` instead, so that the pool can retry on a fresh one.

Full duplex without a background task
-------------------------------------
:meth:`Exchange.start` returns as soon as the response head arrives, but the request body may
still be on its way up (an endpoint may answer early, or echo as it reads).  Rather than leave a
task running behind the caller's back, the upload is *pumped*: whenever the caller waits for
response bytes (in ``start()`` or while iterating the response body), a short-lived nursery
runs the upload next to the read.  When response bytes arrive, the upload is stopped at a safe
point: a pull from the request body is interrupted if the body says it is ``cancel_safe``
(the server's request bodies and in-memory bodies are), and a write in progress is always
allowed to finish while we keep reading, because an endpoint blocked writing to us may be
exactly what stops it reading from us.  So bodies move in both directions only as fast as
their consumers pull: backpressure end to end, one 64 KiB buffer per direction.

Idle response bodies
--------------------
Before the response head, ``response_header_timeout_s`` (the router's
``requestAttemptTimeoutMs``) and the router's ``totalTimeoutMs`` bound the exchange.  After it
they no longer apply (a download may rightly take minutes), so the body has its own bound: each
read of it may wait ``body_idle_timeout_s`` for a byte to move either way (response bytes
received, or request body bytes sent while uploading alongside).  When that passes, the
connection is discarded (its state is unknown), the pool's ``on_event`` hears
``response_body_idle_timeout``, a warning names the endpoint, and the reader gets
:class:`~linker.errors.UpstreamTimeout`: the server then cuts its client's connection, since
the status is already sent and HTTP/1.1 has no way to signal an error mid-body.  The idle
clock is a cancel scope around the read whose deadline every byte moves on, so a body that
trickles is never cut while a stalled one always is.

Heads and chunks are checked beyond h11: a response head over ``max_response_head_bytes`` is
refused however it arrived (h11's limit only covers a head still incomplete after a read), and
a chunked body's size lines are watched for bare CRs
(:class:`~linker.http.framing.ChunkLineGuard`), both as
:class:`~linker.errors.UpstreamProtocolError` (502 before the head is forwarded).

``Expect: 100-continue`` is honoured end to end: such a request's body is not pulled (so the
linker's own client is not sent a 100 either) until the endpoint answers 100, or until
``expect_continue_timeout_s`` passes; an endpoint that refuses from the headers alone is
never sent, and the client never uploads, a byte of the body.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import trio

from linker.errors import FramingError, LinkerError, UpstreamProtocolError, UpstreamTimeout
from linker.http.framing import BadChunkLine, ChunkLineGuard, head_size
from linker.http.messages import Body, Headers, Request, Response
from linker.http.upstream.connection import UpstreamConnection

__all__ = ["Exchange", "Release", "StaleConnection", "Upload"]

log = logging.getLogger("linker.upstream")

# One receive_some() asks for at most this much.
RECEIVE_BYTES = 64 * 1024

# While a write to the endpoint is in progress we keep reading its response so it can make
# progress, but we hold at most this much of it unparsed; beyond it we just wait for the write.
_PUMP_MAX_BUFFERED_BYTES = 1024 * 1024

Release = Callable[[UpstreamConnection, bool], Awaitable[None]]
"""``release(conn, reusable)``: how an exchange gives its connection back when it ends."""


class StaleConnection(Exception):
    """A reused connection failed before any response byte: the endpoint had closed it."""

    def __init__(self, error: UpstreamProtocolError) -> None:
        super().__init__(str(error))
        self.error = error


class Upload:
    """The request body on its way up; shared by the attempts of one request."""

    __slots__ = ("_iterator", "body", "cancel_safe", "consumed_bytes", "ended", "interrupted")

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
    """What the reader and the uploader of one pump tell each other (see Exchange._pump)."""

    __slots__ = (
        "error",
        "in_unsafe_pull",
        "pull_scope",
        "reader_scope",
        "stopping",
        "uploader_done",
    )

    def __init__(self) -> None:
        self.stopping = False  # the reader has response bytes: stop at the next safe point
        self.uploader_done = False
        self.pull_scope: trio.CancelScope | None = None  # set while in an interruptible pull
        self.in_unsafe_pull = False  # in a pull that a cancel would break (not cancel_safe)
        self.reader_scope: trio.CancelScope | None = None  # set while the reader waits
        self.error: BaseException | None = None  # what the request body raised


class Exchange:
    """One request and its response on one connection.

    Args:
        conn: the connection, ready for a request (h11 in state IDLE on our side).
        req: the request; its body is taken from ``upload``.
        upload: the request body, shared by every attempt of this request.
        release: called exactly once when the exchange ends, with whether ``conn`` can carry
            another request (both sides of h11 DONE; already reset for the next cycle).
        response_header_timeout_s: the response head must arrive this long after the request
            head was sent, else :class:`~linker.errors.UpstreamTimeout`; None: no limit.
        expect_continue_timeout_s: how long an ``Expect: 100-continue`` request holds its body
            while waiting for the endpoint's 100.
        body_idle_timeout_s: once the response head is here, the exchange may go this long
            without a byte moving either way (response bytes in, request body bytes out);
            then the response body fails with :class:`~linker.errors.UpstreamTimeout` and
            the connection is discarded.  None: no limit.
        on_event: called with ``"response_body_idle_timeout"`` when that happens.
    """

    __slots__ = (
        "_body_idle_timeout_s",
        "_buffered_at_start",
        "_chunk_guard",
        "_conn",
        "_eof",
        "_expect_continue_timeout_s",
        "_finished",
        "_framing_error",
        "_hold_upload",
        "_idle_scope",
        "_on_event",
        "_peeked",
        "_release",
        "_req",
        "_response_bytes",
        "_response_header_timeout_s",
        "_reused",
        "_upload",
        "_upload_broken",
        "_upload_sent",
    )

    def __init__(
        self,
        conn: UpstreamConnection,
        req: Request,
        upload: Upload,
        release: Release,
        *,
        response_header_timeout_s: float | None,
        expect_continue_timeout_s: float,
        body_idle_timeout_s: float | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self._release = release
        self._response_header_timeout_s = response_header_timeout_s
        self._expect_continue_timeout_s = expect_continue_timeout_s
        self._body_idle_timeout_s = body_idle_timeout_s
        self._on_event = on_event
        self._idle_scope: trio.CancelScope | None = None  # set while a body read waits
        self._chunk_guard: ChunkLineGuard | None = None  # for a chunked response body
        self._framing_error: str | None = None  # what the chunk guard refused
        self._conn = conn
        self._req = req
        self._upload = upload
        self._reused = conn.requests > 0
        self._response_bytes = 0  # received from the endpoint during this exchange
        # Left by the last exchange (a connection handed straight to a waiter is not checked
        # for leftovers as a pooled one is); usually nothing.
        self._buffered_at_start = len(conn.h11.trailing_data[0])
        self._eof = False  # the endpoint closed (or reset) its side
        self._upload_sent = False  # EndOfMessage of the request went out
        self._upload_broken = False  # the endpoint stopped taking the body (it may answer anyway)
        self._hold_upload = False  # waiting for the endpoint's 100 Continue before uploading
        self._finished = False
        # An event (or h11's error) taken from the buffer by UpstreamBody.ready() and not yet
        # consumed: the next read returns it first.
        self._peeked: h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED] | Exception | None = None
        conn.requests += 1

    def _where(self) -> str:
        host, port = self._conn.address
        return f"{host}:{port}"

    async def start(self) -> Response:
        """Send the request head and return the response head (see UpstreamPool.request).

        Raises:
            StaleConnection: the connection was reused and broke before any response byte.
            UpstreamProtocolError, UpstreamTimeout, LinkerError: see UpstreamPool.request.
        """
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
            await self.abort()
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
            timeout_s = self._response_header_timeout_s
            event = None
            # A bare CancelScope rather than trio.fail_after: cheaper on the hot path.
            with trio.CancelScope(
                deadline=trio.current_time() + timeout_s if timeout_s is not None else math.inf
            ):
                event = await self._response_head()
        except BaseException:
            await self.abort()
            raise
        if event is None:
            await self.abort()
            raise UpstreamTimeout(
                f"{self._where()} sent no response head within {timeout_s:g} s "
                "(client.requestAttemptTimeoutMs).",
                cause=f"no response head within {timeout_s:g} s",
            )
        if type(event) is not h11.Response:
            await self.abort()
            raise self._protocol_error(f"sent {type(event).__name__} instead of a response")
        length = _response_length(req.method, event)
        if length is None and any(n == b"transfer-encoding" for n, _ in event.headers):
            # h11 has the body's first bytes already; the guard sees them, then every receive.
            guard = ChunkLineGuard()
            try:
                guard.feed(conn.h11.trailing_data[0])
            except BadChunkLine as exc:
                await self.abort()
                raise self._protocol_error(f"sent a malformed chunked body ({exc})") from None
            self._chunk_guard = guard
        return Response(
            status=event.status_code,
            headers=[(bytes(n), bytes(v)) for n, v in event.headers],
            body=UpstreamBody(self, length),
            reason=bytes(event.reason),
        )

    async def _response_head(self) -> h11.Event:
        """The first event that is not a 1xx; a 100 releases a held upload."""
        while True:
            if self._hold_upload:
                with trio.move_on_after(self._expect_continue_timeout_s) as scope:
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
        return UpstreamProtocolError(f"{self._where()} {what}.", cause=what)

    def _early_close(self, what: str) -> LinkerError | StaleConnection:
        """The error for a connection that broke: stale if nothing of the response came yet."""
        err = self._protocol_error(what)
        if self._reused and self._response_bytes == 0:
            return StaleConnection(err)
        return err

    # -- writing ---------------------------------------------------------------------------

    async def _send(self, data: bytes | None) -> None:
        """Write to the endpoint.

        Raises:
            StaleConnection / UpstreamProtocolError: the endpoint closed or reset.
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
        self._touch()
        if chunk is None:
            self._upload_sent = True

    # -- reading, with the upload pumped alongside -----------------------------------------

    async def _next_event(self) -> h11.Event:
        """The next response event, reading (and uploading) as needed.

        Raises:
            UpstreamProtocolError / StaleConnection: garbage or an early close.
            LinkerError: the request body failed.
        """
        h = self._conn.h11
        while True:
            if (
                h.their_state is h11.SEND_RESPONSE
                and self._response_bytes + self._buffered_at_start
                > self._conn.max_response_head_bytes
            ):
                # Only then can a head be over the limit, so the common case costs no copy of
                # the buffer.
                self._check_head_size()
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
            if self._framing_error is not None:
                raise self._protocol_error(f"sent a malformed chunked body ({self._framing_error})")

    def _check_head_size(self) -> None:
        """Refuse a response head over the limit however it arrived: h11's own limit
        (``max_incomplete_event_size``) only applies to a head still incomplete after a read.

        Raises:
            UpstreamProtocolError: the head (or what there is of it) is over the limit.
        """
        limit = self._conn.max_response_head_bytes
        size, complete = head_size(self._conn.h11.trailing_data[0])
        if size > limit:
            raise self._protocol_error(
                f"sent a response head of {'' if complete else 'more than '}{size} bytes, over "
                f"the {limit}-byte limit (max_response_head_bytes)"
            )

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
        if data:
            self._touch()
            if self._chunk_guard is not None and self._framing_error is None:
                try:
                    self._chunk_guard.feed(data)
                except BadChunkLine as exc:
                    # Raised by _next_event once the pump is done (not from inside its nursery).
                    self._framing_error = str(exc)
        return data

    def _touch(self) -> None:
        """Bytes moved: the body idle timeout starts again."""
        scope = self._idle_scope
        if scope is not None and self._body_idle_timeout_s is not None:
            scope.deadline = trio.current_time() + self._body_idle_timeout_s

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
                except (StaleConnection, UpstreamProtocolError):
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
        """The response was read to its end: release the connection, reusable if it can carry
        another request."""
        if self._finished:
            return
        self._finished = True
        conn = self._conn
        h = conn.h11
        reusable = h.our_state is h11.DONE and h.their_state is h11.DONE
        if reusable:
            h.start_next_cycle()
        await self._release(conn, reusable)

    async def abort(self) -> None:
        """Give up on this exchange: the connection's state is unknown, so it is not reused."""
        if self._finished:
            return
        self._finished = True
        with trio.CancelScope(shield=True):
            await self._release(self._conn, False)

    async def next_body_event(self) -> h11.Event:
        """The next event of the response body, within the body idle timeout.

        Raises:
            UpstreamTimeout: nothing moved for ``body_idle_timeout_s``; the connection is
                discarded (the caller can only cut its client's response short).
            UpstreamProtocolError, LinkerError: as :meth:`_next_event`.
        """
        timeout_s = self._body_idle_timeout_s
        try:
            if timeout_s is None or self.ready():
                return await self._next_event()
            with trio.CancelScope(deadline=trio.current_time() + timeout_s) as scope:
                self._idle_scope = scope
                try:
                    return await self._next_event()
                finally:
                    self._idle_scope = None
            raise self._body_idle_timeout(timeout_s)  # only when the scope fired
        except StaleConnection as stale:
            await self.abort()
            raise stale.error from None
        except BaseException:
            await self.abort()
            raise

    def _body_idle_timeout(self, timeout_s: float) -> UpstreamTimeout:
        """Count and log a response body that stalled; the error its reader gets."""
        timeout_ms = round(timeout_s * 1000)
        log.warning(
            "upstream %s sent no body bytes for %d ms; closed (responseBodyIdleTimeoutMs)",
            self._where(),
            timeout_ms,
        )
        if self._on_event is not None:
            self._on_event("response_body_idle_timeout")
        return UpstreamTimeout(
            f"{self._where()} sent no response body bytes for {timeout_ms} ms "
            "(client.responseBodyIdleTimeoutMs); the response was cut short."
        )


class UpstreamBody:
    """A response body streamed from the endpoint as it is iterated."""

    __slots__ = ("_done", "_exchange", "length")

    def __init__(self, exchange: Exchange, length: int | None) -> None:
        self._exchange = exchange
        self.length = length
        self._done = False

    def __aiter__(self) -> UpstreamBody:
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
