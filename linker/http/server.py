"""The linker's HTTP/1.1 server: one h11 state machine per connection, driven by trio.

Theory of operation
-------------------
``serve_listeners`` runs one accept loop per listener and one *connection task* per accepted
socket, in a separate handler nursery (as ``trio.serve_listeners`` does), so stopping the accept
loops leaves in-flight connections alone.  Each connection task runs :func:`serve_connection`:

1.  **Read a request head.**  h11 parses; we check the raw buffer first, because h11 has a
    single ``max_incomplete_event_size`` and Linkerd answers 414 for a long request line but
    431 for large headers.  Waiting for the first byte of a request is bounded by
    ``keepalive_idle_timeout_s`` (or ``header_read_timeout_s`` on a new connection); once a
    byte has arrived the whole head must be complete within ``header_read_timeout_s``: that is
    the slowloris guard.  Shutdown closes a connection at once while it waits here.
2.  **Call the handler** with a :class:`~linker.http.messages.Request` whose body is a pull stream:
    nothing more is read from the socket until someone iterates it (backpressure), and the
    ``100 Continue`` a client waits for is sent only then, so a request refused from its
    headers never invites its upload.
3.  **Send the response**, streaming the handler's body as it yields: Content-Length when the
    body knows its length, chunked otherwise (close-delimited for HTTP/1.0 clients), nothing
    for HEAD, 204 and 304.
4.  **Decide keep-alive.**  If the request body was left unread, up to
    ``unread_body_max_bytes`` of it is read and discarded after the response so the
    connection can be reused; beyond that it is closed.  A client still waiting for a
    ``100 Continue`` has sent no body at all: its response says ``connection: close``.

HTTP/1.0 keep-alive.  h11 does not do it: it ends every HTTP/1.0 exchange in ``MUST_CLOSE``
and stamps ``Connection: close`` on the response head.  nginx and HAProxy keep such a client
(``Connection: keep-alive`` in its request), so we do too when the response can be delimited
without a close (a known length, or no body): the head h11 serialized gets its final
``Connection: close`` field turned into ``Connection: keep-alive`` (:func:`_keep_alive_head`),
and once both sides are in ``MUST_CLOSE`` the connection goes on with a *fresh* h11 state
machine fed with what the old one had buffered past the request (``trailing_data``: a
pipelined request, or nothing).  A response of unknown length is close-delimited for a 1.0
client and the connection closes, as before.  The same fresh start drops empty lines before a
request line, which RFC 9112 §2.2 asks a server to ignore (h11 refuses them): the connection
goes on with the buffer minus its leading CR/LF bytes, as nginx's parser skips them.

Leniencies and strictness beyond h11: a request line of ``HTTP/1.2`` ... ``HTTP/1.9`` is
served as HTTP/1.1 (RFC 9112 §2.3: the highest minor version we support; ``HTTP/2.0`` and
up get 505), and a chunked request body whose chunk-size line holds a bare CR (which h11's
chunk-extension pattern lets through) is refused with 400, as nginx does
(:class:`~linker.http.framing.ChunkLineGuard`).  The head limits (414/431) are measured on
the buffer before h11 parses it, so they hold however the bytes arrive, all in one read
included.

Error policy: no input may crash a connection task or the worker.  Protocol errors (h11's
``RemoteProtocolError``, our own limits, ambiguous framing) are answered with their status,
an ``l5d-err`` header and ``connection: close``, then the connection is closed.  A handler
that raises a :class:`~linker.errors.LinkerError` gets that error's response; any other
exception is logged and answered 502 (:class:`~linker.errors.InternalError`).  If the
response has already started, the connection is aborted instead (the client sees a truncated
body, never a wrong one).  The last write of an error response is shielded from cancellation
and bounded by ``write_timeout_s``, so a cancel can't leave half a response on the wire.

``on_event`` receives one of :data:`SERVER_EVENTS` as things happen (a metrics hook).
"""

from __future__ import annotations

import errno
import http
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio

from linker.errors import (
    BadRequest,
    FramingError,
    HeadersTooLarge,
    InternalError,
    LinkerError,
    RequestLineTooLong,
    RequestTimeout,
    VersionNotSupported,
    error_response,
)
from linker.http.accesslog import Recorder
from linker.http.events import emit
from linker.http.fastsocket import fast_stream
from linker.http.framing import BadChunkLine, ChunkLineGuard
from linker.http.messages import EMPTY_BODY, Body, Handler, Headers, Request, Response, bytes_body

__all__ = [
    "SERVER_EVENTS",
    "ServerLimits",
    "serve_connection",
    "serve_listeners",
]

log = logging.getLogger("linker.server")

SERVER_EVENTS: tuple[str, ...] = (
    "connection_open",  # serve_connection started
    "connection_close",  # serve_connection is returning (the socket is closed)
    "request",  # a request head was parsed and is handed to the handler
    "continue_sent",  # a 100 Continue was sent because the handler read the body
    "protocol_error",  # the request was refused by the codec (400/414/431/501/505), then close
    "header_timeout",  # the head was not complete within header_read_timeout_s
    "idle_timeout",  # a keep-alive connection sent nothing for keepalive_idle_timeout_s
    "body_timeout",  # the request body stalled for body_read_timeout_s
    "handler_error",  # the handler raised something that is not a LinkerError (a bug): 502
    "response_aborted",  # the response broke after its head was sent; the connection was cut
)
"""Every name ``serve_connection`` passes to ``on_event``."""

# One receive_some() asks for at most this much: it bounds what a connection holds in memory.
RECEIVE_BYTES = 64 * 1024
#: Response bytes gathered before a write even when more is buffered (see _send_response).
WRITE_BATCH_BYTES = 64 * 1024

# h11 also needs an incomplete-head limit; ours is checked first, so this only has to be
# above max_initial_line_bytes + max_headers_bytes (+ the blank lines between them).
_HEAD_SLACK_BYTES = 1024

# At most this much is read and thrown away while lingering before a close (see _linger).
_LINGER_MAX_BYTES = 256 * 1024

# Errors from accept() that mean "out of resources, try again soon" rather than "broken":
# the same list and the same 100 ms pause as trio.serve_listeners.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY_S = 0.100

_BLANK_LINE = re.compile(rb"\n\r?\n")


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Every limit and timeout of the server side; sizes in bytes, times in seconds.

    Attributes:
        max_initial_line_bytes: longest request line; longer gets 414.  Default 4096, as
            Linkerd's ``maxInitialLineKB`` (4).
        max_headers_bytes: largest header section; larger gets 431.  Default 8192, as Linkerd's
            ``maxHeadersKB`` (8).
        header_read_timeout_s: a request head must be complete this long after its first
            byte (and a new connection must send a whole head this long after accept),
            else the connection is closed (408 if part of a head arrived): the slowloris guard.
            Default 10 s.
        keepalive_idle_timeout_s: an idle keep-alive connection is closed after this long.
            Default 60 s.
        shutdown_idle_grace_s: on shutdown, an idle keep-alive connection still gets this long
            for one more request (answered with ``connection: close``) before it is closed, so
            a client that was sending at that very moment is not reset (SIGHUP/SIGTERM with
            zero failed requests).  Default 1 s.
        body_read_timeout_s: the request body may stall this long between two reads before
            the reader gets :class:`~linker.errors.RequestTimeout` (408, or the connection is
            cut if the response has started), also while the body is streamed upstream.
            Default 30 s (``servers[].requestBodyIdleTimeoutMs``; ``math.inf``: no limit).
        write_timeout_s: one write to the client may block this long; then the client is
            considered gone and the connection is aborted.  Default 60 s.
        drain_timeout_s: after shutdown, in-flight connections get this long to finish before
            they are cancelled.  Default 10 s, as Linkerd's admin ``shutdownGraceMs`` (10000).
        unread_body_max_bytes: if the handler leaves this much or less of the request body
            unread, it is read and discarded so the connection can be kept alive; more, and
            the connection is closed instead.  Default 64 KiB.
        close_linger_s: before closing a connection whose client may still be sending (an
            error response, an unread body), we half-close and discard input for up to this
            long, so the kernel does not answer the unread bytes with a reset that could
            destroy our response before the client reads it.  Default 1 s.
    """

    max_initial_line_bytes: int = 4096
    max_headers_bytes: int = 8192
    header_read_timeout_s: float = 10.0
    keepalive_idle_timeout_s: float = 60.0
    shutdown_idle_grace_s: float = 1.0
    body_read_timeout_s: float = 30.0
    write_timeout_s: float = 60.0
    drain_timeout_s: float = 10.0
    unread_body_max_bytes: int = 64 * 1024
    close_linger_s: float = 1.0


def _reason(status: int) -> bytes:
    """The standard reason phrase (h11 sends none unless given one; curl users expect it)."""
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def serve_connection(
    stream: trio.abc.Stream,
    handler: Handler,
    limits: ServerLimits,
    client: tuple[str, int],
    *,
    on_event: Callable[[str], None] | None = None,
    shutdown: trio.Event | None = None,
    on_response: Recorder | None = None,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the client or a timeout ends it.

    Args:
        stream: the accepted connection.  It is closed when this returns.
        handler: called once per request, in this task.
        limits: timeouts and size limits.
        client: the peer address, copied into every :class:`~linker.http.messages.Request`.
        on_event: called with one of :data:`SERVER_EVENTS`; exceptions it raises are logged
            and ignored.
        shutdown: when set, an idle connection is closed at once and a busy one after its
            current response (which then carries ``connection: close``).
        on_response: called after each response to a request (sent whole or cut short), with
            its status and the body bytes sent: the access log (``linker.http.accesslog``).

    Error handling: never raises, except ``trio.Cancelled``.  See the module docstring.
    """
    conn = _ServerConnection(stream, handler, limits, client, on_event, shutdown, on_response)
    await conn.run()


async def serve_listeners(
    listeners: list[trio.SocketListener],
    handler: Handler,
    limits: ServerLimits,
    *,
    shutdown: trio.Event,
    on_event: Callable[[str], None] | None = None,
    on_response: Recorder | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on every listener and serve each one in its own task.

    Args:
        listeners: already bound and listening.
        handler, limits, on_event, on_response: passed to :func:`serve_connection` for each
            connection.
        shutdown: set it to stop.  Accepting stops at once and the listeners are closed (with
            pre-forked workers sharing a socket, only this process's copy closes, so the
            others go on accepting); idle connections close at once, busy ones after their
            current response; connections still running after ``limits.drain_timeout_s`` are
            cancelled.  Returns when every connection is done.
        task_status: ``started()`` once the accept loops are running.

    Error handling: ``accept()`` failing for lack of resources (EMFILE, ENFILE, ENOMEM,
    ENOBUFS) is logged and retried after 100 ms; any other accept error propagates (as
    ``trio.serve_listeners``).  Connection tasks never raise.
    """
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptors:
            for listener in listeners:
                acceptors.start_soon(
                    _accept_loop,
                    listener,
                    connections,
                    handler,
                    limits,
                    shutdown,
                    on_event,
                    on_response,
                )
            task_status.started()
            await shutdown.wait()
            acceptors.cancel_scope.cancel()
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        connections.cancel_scope.deadline = trio.current_time() + limits.drain_timeout_s


async def _accept_loop(
    listener: trio.SocketListener,
    connections: trio.Nursery,
    handler: Handler,
    limits: ServerLimits,
    shutdown: trio.Event,
    on_event: Callable[[str], None] | None,
    on_response: Recorder | None,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                raise
            log.error("accept() on %s failed (%s); retrying in 100 ms", listener, exc)
            await trio.sleep(_ACCEPT_RETRY_S)
            continue
        connections.start_soon(
            _serve_socket, stream, handler, limits, shutdown, on_event, on_response
        )


async def _serve_socket(
    stream: trio.SocketStream,
    handler: Handler,
    limits: ServerLimits,
    shutdown: trio.Event,
    on_event: Callable[[str], None] | None,
    on_response: Recorder | None,
) -> None:
    try:
        peer = stream.socket.getpeername()
        client = (str(peer[0]), int(peer[1]))
    except (OSError, IndexError, TypeError, ValueError):
        client = ("", 0)  # the peer is already gone, or not an IP socket
    fast = fast_stream(stream)  # see linker.http.fastsocket: no scheduler trip per send/recv
    await serve_connection(
        fast, handler, limits, client, on_event=on_event, shutdown=shutdown, on_response=on_response
    )


# -- pure helpers ---------------------------------------------------------------------------


def _head_limit_error(
    buf: bytes, max_line_bytes: int, max_headers_bytes: int
) -> LinkerError | None:
    """The 414 or 431 that the (possibly incomplete) request head at the start of ``buf``
    deserves, or ``None`` if it is within limits so far.

    Sizes are raw bytes without the line terminators (``\\r\\n`` or bare ``\\n``).
    """
    eol = buf.find(b"\n")
    line_len = eol if eol != -1 else len(buf)
    if eol > 0 and buf[eol - 1] == 0x0D:
        line_len -= 1
    if line_len > max_line_bytes:
        return RequestLineTooLong(
            f"The request line is longer than {max_line_bytes} bytes (maxInitialLineKB). "
            "Shorten the URL, e.g. by moving query parameters into the request body."
        )
    if eol == -1:
        return None
    end = _BLANK_LINE.search(buf, eol)
    headers_len = (end.start() if end is not None else len(buf)) - (eol + 1)
    if headers_len > max_headers_bytes:
        return HeadersTooLarge(
            f"The request headers are larger than {max_headers_bytes} bytes (maxHeadersKB). "
            "Send fewer or smaller headers (large cookies or tokens?)."
        )
    return None


def _split_target(raw: bytes, host: bytes | None) -> tuple[str, str | None]:
    """(origin-form target, authority) for a request target (RFC 9112 §3.2).

    An absolute-form target (what clients send to a proxy, e.g. with ``http_proxy=``) gives
    its path and query, and its authority replaces the Host header's (RFC 9112 §3.2.2).

    Raises:
        BadRequest: authority-form, or an absolute form without a host.
    """
    text = raw.decode("latin-1")
    authority = host.decode("latin-1") if host is not None else None
    if text.startswith("/") or text == "*":
        return text, authority
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        cut = len(rest)
        for stop in "/?#":
            i = rest.find(stop)
            if i != -1:
                cut = min(cut, i)
        netloc = rest[:cut].rpartition("@")[2]  # drop userinfo, never forwarded
        path = rest[cut:].partition("#")[0]
        if not netloc:
            raise BadRequest(f"The request target {text!r} has no host.")
        if not path.startswith("/"):
            path = "/" + path
        return path, netloc
    raise BadRequest(
        f"The request target {text!r} is neither a path (/...) nor an absolute http:// URL."
    )


def _response_headers(
    method: str, status: int, headers: Headers, length: int | None, close: bool
) -> Headers:
    """The headers to send: the handler's, with framing chosen by us.

    Transfer-Encoding is always ours (h11 adds ``chunked`` when no length is given).  A HEAD
    or 304 response keeps the Content-Length the handler gave, because it describes the body
    a GET would have had (RFC 9110 §8.6); 204 has none; every other response gets the body's
    own length, or none.
    """
    out = [(n, v) for n, v in headers if n.lower() != b"transfer-encoding"]
    if method == "HEAD" or status == 304:
        pass
    else:
        out = [(n, v) for n, v in out if n.lower() != b"content-length"]
        if length is not None and status != 204:
            out.append((b"content-length", str(length).encode("ascii")))
    if close:
        out = [(n, v) for n, v in out if n.lower() != b"connection"]
        out.append((b"connection", b"close"))
    return out


def _tokens(value: bytes) -> list[bytes]:
    """The comma-separated tokens of a header value, lower-cased (``Connection``)."""
    return [t.strip().lower() for t in value.split(b",")]


_H11_CLOSE_END = b"\r\nConnection: close\r\n\r\n"
_KEEP_ALIVE_END = b"\r\nConnection: keep-alive\r\n\r\n"


def _keep_alive_head(head: bytes) -> tuple[bytes, bool]:
    """An HTTP/1.0 response head h11 serialized, saying keep-alive instead of close.

    h11 has no HTTP/1.0 keep-alive: it ends such a head with ``Connection: close`` (the last
    field, which it appends itself).  For a response we keep alive, that field becomes
    ``Connection: keep-alive``; if h11 ever serializes differently, the head is left as it is
    and the connection simply closes, which is what the head says.  Returns the head and
    whether it now says keep-alive.
    """
    if head.endswith(_H11_CLOSE_END):
        return head[: -len(_H11_CLOSE_END)] + _KEEP_ALIVE_END, True
    return head, False


def _protocol_error(exc: h11.RemoteProtocolError) -> LinkerError:
    """Our error for what h11 refused, keeping h11's status hint (400, 431, 501)."""
    hint = exc.error_status_hint
    if hint == 431:
        return HeadersTooLarge(f"The request head is too large: {exc}.")
    text = str(exc)
    cls = FramingError if ("Content-Length" in text or "Transfer-Encoding" in text) else BadRequest
    err = cls(f"Malformed HTTP/1.1 request: {text}. The connection is closed.")
    err.status = hint if 400 <= hint <= 599 else 400
    return err


def _find_linker_error(exc: BaseException) -> LinkerError | None:
    """The LinkerError inside ``exc``, also when a nursery wrapped it in an ExceptionGroup."""
    if isinstance(exc, LinkerError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_linker_error(inner)
            if found is not None:
                return found
    return None


async def _aclose_body(body: Body) -> None:
    closer = getattr(body, "aclose", None)
    if closer is None:
        return
    try:
        await closer()
    except Exception:
        log.debug("closing a response body failed", exc_info=True)


# -- the connection task --------------------------------------------------------------------


class _ClientGone(Exception):
    """A write to the client failed or timed out: nothing more can be said on this connection."""


class _RequestBody:
    """The request body handed to the handler: reads the socket only when iterated."""

    __slots__ = ("_conn", "continue_sent", "done", "length", "received")

    # Cancelling __anext__ loses nothing: bytes are handed to h11 only after a receive
    # completes, and the 100 Continue write is shielded.  The upstream pool relies on this.
    cancel_safe = True

    def __init__(self, conn: _ServerConnection, length: int | None) -> None:
        self._conn = conn
        self.length = length
        self.received = 0
        self.done = False
        self.continue_sent = False

    def __aiter__(self) -> _RequestBody:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._conn.read_body_chunk(self)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def __repr__(self) -> str:
        state = "done" if self.done else "open"
        return f"<request body {state}: {self.received} of {self.length} bytes read>"


class _ServerConnection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        handler: Handler,
        limits: ServerLimits,
        client: tuple[str, int],
        on_event: Callable[[str], None] | None,
        shutdown: trio.Event | None,
        on_response: Recorder | None = None,
    ) -> None:
        self._stream = stream
        self._on_response = on_response
        self._sent_status = 0  # the last response head sent (0: none yet)
        self._sent_body_bytes = 0  # and how many body bytes of it went out
        self._handler = handler
        self._limits = limits
        self._client = client
        self._on_event = on_event
        self._shutdown = shutdown
        self._h11 = self._new_h11()
        # A 100 Continue (from whoever reads the body) and the response may be written from
        # different tasks; trio allows only one send_all at a time.
        self._send_lock = trio.Lock()
        # linker.http.fastsocket's checkpoint-free fast paths, when the stream has them.
        self._send_nowait: Callable[[bytes], int] | None = getattr(stream, "send_nowait", None)
        # Only one reader of the request body at a time (the handler's, then our drain).
        self._recv_lock = trio.Lock()
        self._closing = False  # shutdown was requested: finish the current exchange, then close
        self._idle_scope: trio.CancelScope | None = None
        self._body_error: LinkerError | None = None  # sticky: the body's receive side broke
        self._client_gone = False
        self._method = ""  # the current request's method, "" between requests
        # The request is HTTP/1.0 asking for keep-alive; once the response head is out, whether
        # that head said keep-alive (see _next_cycle).
        self._keep_alive_10 = False
        self._chunk_guard: ChunkLineGuard | None = None  # the chunked request body's guard

    def _new_h11(self) -> h11.Connection:
        limits = self._limits
        return h11.Connection(
            h11.SERVER,
            max_incomplete_event_size=(
                limits.max_initial_line_bytes + limits.max_headers_bytes + _HEAD_SLACK_BYTES
            ),
        )

    def _renew_h11(self, leftover: bytes, closed: bool) -> None:
        """Go on with a fresh h11 state machine that has received ``leftover`` (and the EOF,
        if ``closed``): what the old one had buffered, minus what we took from it."""
        self._h11 = h = self._new_h11()
        if leftover:
            h.receive_data(leftover)
        if closed:
            h.receive_data(b"")

    def __repr__(self) -> str:
        h = self._h11
        return (
            f"<server connection {self._client[0]}:{self._client[1]} "
            f"client={h.their_state.__name__} server={h.our_state.__name__}>"
        )

    def _emit(self, name: str) -> None:
        emit(self._on_event, name, log)

    async def run(self) -> None:
        self._emit("connection_open")
        try:
            async with trio.open_nursery() as nursery:
                if self._shutdown is not None:
                    nursery.start_soon(self._watch_shutdown, self._shutdown)
                await self._serve()
                nursery.cancel_scope.cancel()
        except Exception:
            # Belt and braces: every expected failure is handled below, so this is a bug; it
            # must still cost only this connection.
            log.exception("connection from %s:%s failed", *self._client)
        finally:
            try:
                await self._close()
            finally:
                self._emit("connection_close")

    async def _watch_shutdown(self, shutdown: trio.Event) -> None:
        await shutdown.wait()
        self._closing = True
        if self._idle_scope is not None:
            # Not at once: a keep-alive client may be sending its next request right now, and
            # closing under it would reset that request. Serve one more (with connection:
            # close) if it arrives within the grace, then close.
            grace_deadline = trio.current_time() + self._limits.shutdown_idle_grace_s
            self._idle_scope.deadline = min(self._idle_scope.deadline, grace_deadline)

    async def _serve(self) -> None:
        first = True
        while True:
            if not first:
                # The write that ended the last exchange may not have yielded (send_nowait),
                # and a pipelining client's next head may already be buffered: yield here so
                # that one busy connection can't hold the worker.
                await trio.lowlevel.checkpoint()
            self._method = ""  # no request in this cycle yet (error responses look at it)
            try:
                event = await self._read_head(first)
            except h11.RemoteProtocolError as exc:
                self._emit("protocol_error")
                await self._send_error(_protocol_error(exc))
                return
            except LinkerError as err:  # our own head limits
                self._emit("protocol_error")
                await self._send_error(err)
                return
            if event is None:
                return
            first = False
            if not await self._exchange(event):
                return

    # -- reading ---------------------------------------------------------------------------

    async def _receive(self) -> bytes:
        try:
            return bytes(await self._stream.receive_some(RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""  # a reset is an end of input like any other

    def _skip_empty_lines(self) -> bytes:
        """Drop CR/LF bytes buffered before a request line; what stays buffered.

        RFC 9112 §2.2: a server SHOULD ignore empty lines received before a request line
        (nginx skips any CR and LF there).  h11 refuses them, so it gets a fresh start
        without them.  Only called between requests (their state IDLE).
        """
        buffered, closed = self._h11.trailing_data
        if buffered[:1] in (b"\r", b"\n"):
            buffered = buffered.lstrip(b"\r\n")
            self._renew_h11(buffered, closed)
        return buffered

    async def _read_head(self, first: bool) -> h11.Request | None:
        """The next request head, or None when the connection should just be closed.

        Raises:
            h11.RemoteProtocolError: the bytes are not an HTTP/1.1 request.
            LinkerError: the head is over our limits (414/431).
        """
        limits = self._limits
        # Pipelined bytes of this head already arrived (empty lines left by the last request
        # do not count: the connection is as idle as without them).
        started = bool(self._skip_empty_lines())
        h = self._h11
        deadline = trio.current_time() + limits.header_read_timeout_s if first or started else None
        while True:
            if h.their_state is h11.IDLE:
                buffered = self._skip_empty_lines()
                h = self._h11
                err = _head_limit_error(
                    buffered, limits.max_initial_line_bytes, limits.max_headers_bytes
                )
                if err is not None:
                    raise err
            event = h.next_event()
            if event is h11.NEED_DATA:
                if not started:
                    idle_deadline = (
                        deadline
                        if deadline is not None
                        else trio.current_time() + limits.keepalive_idle_timeout_s
                    )
                    if self._closing:
                        idle_deadline = min(
                            idle_deadline, trio.current_time() + limits.shutdown_idle_grace_s
                        )
                    with trio.CancelScope(deadline=idle_deadline) as scope:
                        self._idle_scope = scope
                        data = await self._receive()
                    self._idle_scope = None
                    if scope.cancelled_caught:
                        if not self._closing:
                            self._emit("header_timeout" if first else "idle_timeout")
                        return None
                    started = True
                    if deadline is None:
                        deadline = trio.current_time() + limits.header_read_timeout_s
                else:
                    assert deadline is not None
                    with trio.move_on_at(deadline) as scope:
                        data = await self._receive()
                    if scope.cancelled_caught:
                        self._emit("header_timeout")
                        await self._send_error(
                            RequestTimeout(
                                f"The request head was not complete within "
                                f"{limits.header_read_timeout_s:g} s; the connection is closed."
                            )
                        )
                        return None
                h.receive_data(data)
                continue
            if type(event) is h11.Request:
                if not event.http_version.startswith(b"1."):
                    # h11 parses any HTTP/x.y; forwarding HTTP/2.0 as 1.1 would misframe it.
                    # A higher 1.x minor is served as 1.1 (RFC 9112 §2.3), as h11 frames it.
                    raise VersionNotSupported(
                        f"HTTP/{event.http_version.decode('ascii', 'replace')} is not supported; "
                        "use HTTP/1.1 or HTTP/1.0."
                    )
                return event
            # ConnectionClosed (a clean EOF between requests), or PAUSED, which can't happen
            # here since their state is IDLE; either way there is nothing more to serve.
            return None

    async def read_body_chunk(self, body: _RequestBody) -> bytes | None:
        """The next piece of the request body, or None at its end (called by _RequestBody).

        Raises:
            FramingError: the body is malformed, or the client closed the connection early.
            RequestTimeout: the body stalled for ``body_read_timeout_s``.
        """
        if body.done:
            return None
        async with self._recv_lock:
            if self._body_error is not None:
                raise self._body_error
            h = self._h11
            if h.they_are_waiting_for_100_continue and h.our_state is h11.SEND_RESPONSE:
                # The handler wants the body: now, and only now, invite the upload.
                try:
                    await self._write(
                        h.send(h11.InformationalResponse(status_code=100, headers=[])), shield=True
                    )
                except _ClientGone:
                    self._body_error = FramingError("The client went away during the request.")
                    raise self._body_error from None
                body.continue_sent = True
                self._emit("continue_sent")
            while True:
                try:
                    event = h.next_event()
                except h11.RemoteProtocolError as exc:
                    self._body_error = FramingError(
                        f"The request body is malformed or incomplete: {exc}."
                    )
                    raise self._body_error from None
                if event is h11.NEED_DATA:
                    with trio.move_on_after(self._limits.body_read_timeout_s) as scope:
                        data = await self._receive()
                    if scope.cancelled_caught:
                        self._emit("body_timeout")
                        timeout_ms = round(self._limits.body_read_timeout_s * 1000)
                        log.warning(
                            "client %s:%s sent no request body bytes for %d ms after %d bytes; "
                            "closed (requestBodyIdleTimeoutMs)",
                            *self._client,
                            timeout_ms,
                            body.received,
                        )
                        self._body_error = RequestTimeout(
                            f"The request body stalled for {timeout_ms} ms after "
                            f"{body.received} bytes (requestBodyIdleTimeoutMs)."
                        )
                        raise self._body_error
                    if self._chunk_guard is not None:
                        try:
                            self._chunk_guard.feed(data)
                        except BadChunkLine as exc:
                            self._body_error = FramingError(
                                f"Malformed chunked request body: {exc}."
                            )
                            raise self._body_error from None
                    h.receive_data(data)
                    continue
                if type(event) is h11.Data:
                    if not event.data:
                        continue
                    body.received += len(event.data)
                    return bytes(event.data)
                if type(event) is h11.EndOfMessage:
                    body.done = True
                    return None
                self._body_error = FramingError(
                    "The client closed the connection before sending the whole request body."
                )
                raise self._body_error

    # -- one request/response exchange -----------------------------------------------------

    def _make_request(self, event: h11.Request) -> tuple[Request, _RequestBody | None]:
        """Our Request for h11's event.

        Raises:
            BadRequest: CONNECT, a bad target, or both Content-Length and Transfer-Encoding.
        """
        method = event.method.decode("ascii")
        if method == "CONNECT":
            raise BadRequest("CONNECT is not supported: the linker routes requests, not tunnels.")
        headers: Headers = [(bytes(n), bytes(v)) for n, v in event.headers]
        content_length: bytes | None = None
        chunked = False
        host: bytes | None = None
        keep_alive = False
        for name, value in headers:
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"host" and host is None:
                host = value
            elif name == b"connection":
                keep_alive = keep_alive or b"keep-alive" in _tokens(value)
        self._keep_alive_10 = keep_alive and event.http_version == b"1.0"
        if chunked and content_length is not None:
            # RFC 9112 §6.3 allows refusing this; a proxy must, or it invites request
            # smuggling (the next hop may frame the message differently).
            raise FramingError(
                "The request has both Content-Length and Transfer-Encoding; send only one."
            )
        target, authority = _split_target(event.target, host)
        if authority is not None and (host is None or authority != host.decode("latin-1")):
            # RFC 9112 §3.2.2: a proxy given an absolute-form target replaces Host with its
            # authority (Linkerd's ProxyRewriteFilter).
            encoded = authority.encode("latin-1")
            headers = [(n, v) for n, v in headers if n != b"host"] + [(b"host", encoded)]
        length = None if chunked else int(content_length) if content_length is not None else 0
        self._chunk_guard = None
        if chunked:
            # h11 has the body's first bytes already; the guard sees them, then every receive.
            guard = ChunkLineGuard()
            try:
                guard.feed(self._h11.trailing_data[0])
            except BadChunkLine as exc:
                raise FramingError(f"Malformed chunked request body: {exc}.") from None
            self._chunk_guard = guard
        body: Body
        request_body: _RequestBody | None = None
        if length == 0:
            # h11 has the EndOfMessage ready without any I/O; take it now so the handler gets
            # a plain empty body and the connection is ready for the next request.
            end = self._h11.next_event()
            assert type(end) is h11.EndOfMessage, end
            body = EMPTY_BODY
        else:
            body = request_body = _RequestBody(self, length)
        request = Request(
            method=method,
            target=target,
            authority=authority,
            http_version="1.0" if event.http_version == b"1.0" else "1.1",
            headers=headers,
            body=body,
            client=self._client,
            received_at=trio.current_time(),
        )
        return request, request_body

    async def _exchange(self, event: h11.Request) -> bool:
        """Serve one request; True if the connection may carry another."""
        self._method = method = event.method.decode("ascii", "replace")
        try:
            request, body = self._make_request(event)
        except LinkerError as err:
            self._emit("protocol_error")
            await self._send_error(err)
            return False
        self._emit("request")
        close_after = False
        try:
            response = await self._handler(request)
            if not isinstance(response, Response):
                raise TypeError(f"the handler returned {type(response).__name__}, not a Response")
        except Exception as exc:
            failure = _find_linker_error(exc)
            if failure is None:
                self._emit("handler_error")
                log.exception("handler failed on %s %s", request.method, request.target)
                failure = InternalError(
                    f"The linker failed unexpectedly ({type(exc).__name__}: {exc}); "
                    "this is a bug, please report it with the linker's log."
                )
                close_after = True  # we can't know what state the handler left things in
            response = _error_as_response(failure)
        if body is not None and self._must_close_for_unread(body):
            close_after = True
        # The head says `connection: close` iff this is true when it is built (at the start of
        # _send_response). Close only then: if shutdown starts while the body is streaming, the
        # client was told to keep the connection, so it gets the idle grace and one more
        # request instead of a reset.
        announced_close = close_after or self._closing
        # An HTTP/1.0 client asking for keep-alive keeps its connection if the response can be
        # delimited without a close: a length, or no body at all.
        bodyless = method == "HEAD" or response.status in (204, 304)
        keep_10 = self._keep_alive_10 and (bodyless or response.body.length is not None)
        self._sent_status = 0
        sent = await self._send_response(method, response, close_after, keep_10=keep_10)
        if self._on_response is not None:
            self._record(event)
        if not sent:
            return False
        if announced_close:
            return False
        h = self._h11
        if h.their_state is h11.SEND_BODY and body is not None:
            if not await self._discard_unread_body(body):
                return False
        return self._next_cycle()

    def _record(self, event: h11.Request) -> None:
        """The access log's line for this exchange; a failure costs the line, not the request."""
        assert self._on_response is not None
        try:
            self._on_response(
                self._client[0],
                event.method,
                event.target,
                event.http_version,
                event.headers,
                self._sent_status,
                self._sent_body_bytes,
            )
        except Exception:
            log.exception("the access log failed")

    def _next_cycle(self) -> bool:
        """Make h11 ready for the next request; False if the connection must close instead.

        h11 ends every HTTP/1.0 exchange in MUST_CLOSE (it does not do 1.0 keep-alive), so a
        1.0 exchange we keep alive continues on a fresh h11 state machine holding the bytes
        the old one had buffered past the request (a pipelined request, or nothing).
        """
        h = self._h11
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            return True
        if (
            self._keep_alive_10
            and h.our_state is h11.MUST_CLOSE
            and h.their_state is h11.MUST_CLOSE
        ):
            self._renew_h11(*h.trailing_data)
            return True
        return False

    def _must_close_for_unread(self, body: _RequestBody) -> bool:
        """Whether the unread rest of the request body rules out keep-alive, decided before
        the response head goes out so that it can say ``connection: close``."""
        if self._body_error is not None or self._h11.their_state is h11.ERROR:
            return True  # the request body broke: nothing more can be read on this connection
        if body.done or self._h11.their_state is not h11.SEND_BODY:
            return False
        # A client waiting for our 100 Continue holds its body back, and the 100 will never
        # come: reading on would wait for bytes that may never be sent.  Anything else is
        # judged after the response, because its body may still consume the request body
        # (an echo, or a proxied full-duplex exchange).
        return self._h11.they_are_waiting_for_100_continue and not body.continue_sent

    async def _discard_unread_body(self, body: _RequestBody) -> bool:
        """Read and drop what the handler left of the body; True if it ended within limits."""
        budget = self._limits.unread_body_max_bytes
        try:
            with trio.move_on_after(self._limits.body_read_timeout_s):
                while (chunk := await self.read_body_chunk(body)) is not None:
                    budget -= len(chunk)
                    if budget < 0:
                        return False
                return True
        except LinkerError:
            return False
        return False

    async def _send_response(
        self, method: str, response: Response, close: bool, *, keep_10: bool = False
    ) -> bool:
        """Send ``response``, streaming its body; True if it was sent completely.

        ``keep_10``: the request is HTTP/1.0 with keep-alive and the response is delimited:
        its head says ``Connection: keep-alive`` (unless it says close).
        """
        h = self._h11
        body = response.body
        try:
            try:
                head = h11.Response(
                    status_code=response.status,
                    headers=_response_headers(
                        method,
                        response.status,
                        response.headers,
                        body.length,
                        close or self._closing,
                    ),
                    reason=response.reason or _reason(response.status),
                )
            except h11.LocalProtocolError as exc:
                self._emit("handler_error")
                log.error("handler returned an invalid response (%s): %r", exc, response)
                await _aclose_body(body)
                err = InternalError(f"The linker built an invalid response ({exc}); a bug.")
                body = EMPTY_BODY
                response = _error_as_response(err)
                return await self._send_response(method, response, True)
            # Head, body and end go out in as few writes as possible: a body that says its next
            # chunk is already buffered (``ready()``, see linker.http) is gathered with what
            # precedes it, so a small response costs one send instead of three. Anything that
            # would wait is preceded by a flush, so a slow stream still gets its head at once.
            head_bytes = h.send(head)
            self._sent_status, self._sent_body_bytes = response.status, 0
            # From here on: whether the head said keep-alive to an HTTP/1.0 client.
            self._keep_alive_10 = False
            if keep_10 and not (close or self._closing):
                head_bytes, self._keep_alive_10 = _keep_alive_head(head_bytes)
            out = [head_bytes]
            pending = len(out[0])
            bodyless = method == "HEAD" or response.status in (204, 304)
            if not bodyless:
                chunks = body.__aiter__()
                ready = getattr(chunks, "ready", None)
                while True:
                    if ready is None or pending >= WRITE_BATCH_BYTES or not ready():
                        await self._write(b"".join(out))
                        out.clear()
                        pending = 0
                    try:
                        chunk = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                    if chunk:
                        piece = h.send(h11.Data(data=chunk))
                        out.append(piece)
                        pending += len(piece)
                        # Counted when handed to the write batch; a client that goes away
                        # mid-batch is over-counted by at most WRITE_BATCH_BYTES.
                        self._sent_body_bytes += len(chunk)
            out.append(h.send(h11.EndOfMessage()))
            await self._write(b"".join(out))
            return True
        except _ClientGone:
            self._emit("response_aborted")
            return False
        except Exception as exc:
            # The body failed (e.g. the endpoint died mid-stream), or it did not match its
            # declared length: the head is out, so the only honest thing left is to cut the
            # connection; the client sees a truncated message.
            self._emit("response_aborted")
            if isinstance(_find_linker_error(exc), LinkerError):
                log.warning("response to %s aborted: %s", self._client[0], exc)
            else:
                log.exception("response to %s aborted", self._client[0])
            return False
        finally:
            await _aclose_body(body)

    async def _write(self, data: bytes | None, *, shield: bool = False) -> None:
        """Send ``data`` to the client, within ``write_timeout_s``.

        Raises:
            _ClientGone: the client closed, reset or stopped reading.
        """
        if not data:
            return
        if self._client_gone:
            raise _ClientGone
        if self._send_nowait is not None and not self._send_lock.locked():
            sent = self._send_nowait(data)  # the usual case: the kernel takes it all at once
            if sent == len(data):
                return
            data = data[sent:]
        # One scope for both: a shielded scope's own deadline still applies.
        deadline = trio.current_time() + self._limits.write_timeout_s
        with trio.CancelScope(deadline=deadline, shield=shield) as scope:
            lock = self._send_lock
            try:
                try:
                    lock.acquire_nowait()  # uncontended (the usual case): no extra checkpoint
                except trio.WouldBlock:
                    await lock.acquire()
                try:
                    await self._stream.send_all(data)
                finally:
                    lock.release()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._client_gone = True
                raise _ClientGone from None
        if scope.cancelled_caught:
            self._client_gone = True
            raise _ClientGone

    async def _send_error(self, err: LinkerError) -> None:
        """Answer ``err`` with ``connection: close`` if no response has started; the caller
        then closes.  The write is shielded: a cancel must not cut the error in half."""
        h = self._h11
        if h.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        status, headers, body = error_response(err)
        headers.append((b"connection", b"close"))
        data = b""
        try:
            data += h.send(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
            if self._method != "HEAD":
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11 frames by the last request's method (a HEAD before this garbage): the head
            # is still worth sending; the close ends the message.
            log.debug("could not send all of %s to %s", status, self._client[0], exc_info=True)
        try:
            await self._write(data, shield=True)
        except _ClientGone:
            pass

    # -- closing ---------------------------------------------------------------------------

    async def _close(self) -> None:
        try:
            # Linger only if the client may still be sending: mid-body, mid-head, or garbage.
            their = self._h11.their_state
            mid_head = their is h11.IDLE and bool(self._h11.trailing_data[0])
            if not self._client_gone and (their in (h11.SEND_BODY, h11.ERROR) or mid_head):
                await self._linger()
        finally:
            await trio.aclose_forcefully(self._stream)

    async def _linger(self) -> None:
        """Half-close, then read and drop input briefly before the real close.

        Closing a socket with unread input makes the kernel send a reset, and a reset can
        destroy our response in the client's receive buffer before it is read (RFC 9112 §9.6).
        """
        stream = self._stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return
        with trio.move_on_after(self._limits.close_linger_s):
            try:
                await stream.send_eof()
                budget = _LINGER_MAX_BYTES
                while budget > 0:
                    data = await stream.receive_some(RECEIVE_BYTES)
                    if not data:
                        break
                    budget -= len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                pass


def _error_as_response(err: LinkerError) -> Response:
    status, headers, body = error_response(err)
    return Response(status, headers, bytes_body(body))
