"""The linker's exception tree: every failure a client can see, with its status and its advice.

    LinkerError                 root: ``status`` for the client, ``retryable`` for l5d-retryable
    ├── BadRequest              400  not valid HTTP/1.1, or not something we proxy (CONNECT)
    │   └── FramingError        400  conflicting Content-Length / Transfer-Encoding, broken body
    ├── NoNameIdentified        400  the router's identifier found nothing to route by
    ├── BadDtabHeader           400  an ``l5d-dtab`` / ``l5d-ctx-dtab`` header does not parse
    ├── DtabOverBudget          400  binding with the request's dtab needs more work than allowed
    ├── LoopDetected            400  more ``Via`` entries than ``maxCallDepth``
    ├── RequestTimeout          408  the client was too slow sending its head or its body
    ├── RequestLineTooLong      414  request line over ``maxInitialLineKB``
    ├── HeadersTooLarge         431  header section over ``maxHeadersKB``
    ├── VersionNotSupported     505  neither HTTP/1.1 nor HTTP/1.0
    ├── NoEndpoints             502  the name bound to nothing, or every endpoint is marked dead
    ├── ConnectFailed           502  could not connect to the chosen endpoint (retryable)
    ├── UpstreamProtocolError   502  the endpoint sent garbage or closed early
    ├── BindingFailed           502  resolving the name failed or timed out
    ├── InternalError           502  anything unexpected (a bug); the message names the exception
    ├── PoolExhausted           503  every connection to the endpoint busy, too many waiting
    └── UpstreamTimeout         503  the endpoint did not answer in time

The statuses are Linkerd 1.x's (``ErrorResponder.scala``, ``FramingFilter.scala``): 400 for what
the client did, 502 for what went wrong behind us, 503 for timeouts and overload, never 504.
Each message should say what to do next, because it is all the client will see (``l5d-err``
and the body).

:func:`error_response` is the one place that turns an error into the bytes of a response, so
the server, the router and the admin interface all answer in the same shape.  This module is
pure: no I/O, no trio, no h11.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "DEFAULT_MAX_ERR_BYTES",
    "MAX_L5D_ERR_BYTES",
    "MAX_LISTED_ENDPOINTS",
    "BadDtabHeader",
    "BadRequest",
    "BindingFailed",
    "ConnectFailed",
    "DtabOverBudget",
    "FramingError",
    "HeadersTooLarge",
    "InternalError",
    "LinkerError",
    "LoopDetected",
    "NoEndpoints",
    "NoNameIdentified",
    "PoolExhausted",
    "RequestLineTooLong",
    "RequestTimeout",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "VersionNotSupported",
    "error_response",
    "listing",
]

# Linkerd's maxErrResponseKB default (5120 KiB): the body of an error response is cut there.
DEFAULT_MAX_ERR_BYTES = 5120 * 1024

# Linkerd cuts l5d-err to maxHeadersKB (8 KiB).  We cut to half of that so that the whole
# response head still fits a peer linker's default 8 KiB header limit with room to spare.
MAX_L5D_ERR_BYTES = 4096


#: An error naming endpoints lists at most this many, then "and K more": a service with
#: hundreds of endpoints must not turn every 502 into a page of addresses (l5d-err is cut at
#: MAX_L5D_ERR_BYTES anyway; this keeps the cut from landing mid-list).
MAX_LISTED_ENDPOINTS = 5


def listing(items: list[str], limit: int = MAX_LISTED_ENDPOINTS) -> str:
    """``a, b, c`` or, past ``limit`` items, ``a, b, c and 4 more``."""
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


class LinkerError(Exception):
    """Root of every error the linker answers a client with.

    Attributes:
        status: the HTTP status the client gets (a class default; an instance may override it,
            e.g. to keep h11's ``error_status_hint``).
        retryable: True when the request is known to be safe to retry (it never reached the
            endpoint); sent as ``l5d-retryable: true`` so an upstream linker can retry it.
        message: the human-readable explanation, also ``str(err)``.
        cause: the same in a few words, without advice (``connection refused``), for lists of
            endpoints and their last errors (failure accrual, the dashboard); the message
            when not given.
    """

    status: int = 502
    retryable: bool = False

    def __init__(self, message: str, *, cause: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.cause = cause or message


class BadRequest(LinkerError):
    """The request is malformed or asks for something the linker does not do (e.g. CONNECT)."""

    status = 400


class FramingError(BadRequest):
    """The message's framing is ambiguous or broken (conflicting lengths, a truncated body).

    Ambiguous framing is how request smuggling works, so it is refused, never guessed at.
    """

    status = 400


class NoNameIdentified(LinkerError):
    """The router's identifier produced no name for the request (e.g. no Host header)."""

    status = 400


class BadDtabHeader(LinkerError):
    """An ``l5d-dtab`` or ``l5d-ctx-dtab`` header is not a valid dtab."""

    status = 400


class DtabOverBudget(LinkerError):
    """Binding the name needs more work than the interpreter's budget allows.

    Almost always a request dtab whose entries expand into each other; the message names the
    limit (e.g. ``requestDtabBudget.maxNodes``, configured on the router's interpreter).
    """

    status = 400


class LoopDetected(LinkerError):
    """The request passed through more linkers (``Via`` entries) than ``maxCallDepth``."""

    status = 400


class RequestTimeout(LinkerError):
    """The client did not finish sending its request head or body in time (RFC 9110 §15.5.9)."""

    status = 408


class RequestLineTooLong(LinkerError):
    """The request line is longer than ``maxInitialLineKB`` (RFC 9110 §15.5.15)."""

    status = 414


class HeadersTooLarge(LinkerError):
    """The header section is larger than ``maxHeadersKB`` (RFC 6585 §5)."""

    status = 431


class VersionNotSupported(LinkerError):
    """The request is not HTTP/1.0 or HTTP/1.1 (RFC 9110 §15.6.6: 505)."""

    status = 505


class NoEndpoints(LinkerError):
    """The name bound to no address (a neg or empty binding), or failure accrual has marked
    every endpoint dead: Linkerd's NoBrokersAvailable."""

    status = 502


class ConnectFailed(LinkerError):
    """Connecting to the chosen endpoint failed or timed out; the request was never sent."""

    status = 502
    retryable = True


class UpstreamProtocolError(LinkerError):
    """The endpoint answered with something that is not HTTP/1.1, or closed the connection early."""

    status = 502


class BindingFailed(LinkerError):
    """Resolving the name through the dtab and namers failed or timed out."""

    status = 502


class InternalError(LinkerError):
    """Something unexpected failed inside the linker (a bug): Linkerd's "any other error" 502."""

    status = 502


class PoolExhausted(LinkerError):
    """Every connection to the endpoint is busy and too many requests already wait (503)."""

    status = 503


class UpstreamTimeout(LinkerError):
    """The endpoint did not answer within the configured time (Finagle's TimeoutException → 503)."""

    status = 503


def error_response(
    err: LinkerError, *, max_err_bytes: int = DEFAULT_MAX_ERR_BYTES
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The response Linkerd gives for ``err``: its status, an ``l5d-err`` header and a text body.

    Args:
        err: the error to answer with.
        max_err_bytes: the body (the message plus a newline) is cut to this many bytes,
            as Linkerd's ``maxErrResponseKB``.

    Returns:
        ``(status, headers, body)``.  The headers are ``l5d-err`` (the message URL-encoded with
        :func:`urllib.parse.quote`, cut to :data:`MAX_L5D_ERR_BYTES` without splitting an
        escape), ``content-type: text/plain``, ``content-length`` and, when ``err.retryable``,
        ``l5d-retryable: true``.  Header names are lower-case bytes.
    """
    body = _cut_utf8((err.message + "\n").encode("utf-8"), max(0, max_err_bytes))
    headers: list[tuple[bytes, bytes]] = [
        (b"l5d-err", _l5d_err_value(err.message)),
        (b"content-type", b"text/plain"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if err.retryable:
        headers.append((b"l5d-retryable", b"true"))
    return err.status, headers, body


def _l5d_err_value(message: str) -> bytes:
    encoded = quote(message).encode("ascii")
    if len(encoded) <= MAX_L5D_ERR_BYTES:
        return encoded
    cut = encoded[:MAX_L5D_ERR_BYTES]
    # Never leave half a %XX escape at the end: a decoder would reject or garble it.
    pct = cut.rfind(b"%", len(cut) - 2)
    if pct != -1:
        cut = cut[:pct]
    return cut


def _cut_utf8(data: bytes, limit: int) -> bytes:
    """``data[:limit]`` without splitting a UTF-8 sequence (the body is declared text)."""
    if len(data) <= limit:
        return data
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")
