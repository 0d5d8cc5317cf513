"""One keep-alive HTTP/1.1 connection to an endpoint: a trio stream and its h11 CLIENT.

A connection knows nothing of pools or requests.  :func:`connect` opens one (mapping every
connect failure to :class:`~linker.errors.ConnectFailed`, which names the address); an
exchange (:mod:`linker.http.upstream.exchange`) drives one request/response over it at a time;
the pool (:mod:`linker.http.upstream.pool`) moves it between ``ACTIVE`` (carrying an exchange)
and ``IDLE`` (pooled), and asks it one question before reuse: :meth:`UpstreamConnection.looks_dead`.
"""

from __future__ import annotations

import enum
import os
import select
from typing import Any

import h11
import trio

from linker.errors import ConnectFailed
from linker.http.fastsocket import fast_stream

__all__ = ["ConnState", "UpstreamConnection", "connect", "os_error_cause"]


class ConnState(enum.Enum):
    ACTIVE = "active"  # carrying an exchange (or just connected for one)
    IDLE = "idle"  # in the pool, waiting for the next request
    CLOSED = "closed"


class UpstreamConnection:
    """One TCP connection to an endpoint and its h11 CLIENT state machine.

    Attributes:
        address: the endpoint, ``(host, port)``.
        state: see :class:`ConnState`; the pool sets it.
        idle_since: when it last became idle, on trio's clock (seconds).
        requests: exchanges started on it; more than 0 means a reused connection.
        max_response_head_bytes: the largest response head accepted on it.
    """

    __slots__ = (
        "_poller",
        "address",
        "h11",
        "idle_since",
        "max_response_head_bytes",
        "requests",
        "state",
        "stream",
    )

    def __init__(
        self,
        address: tuple[str, int],
        stream: trio.abc.Stream,
        *,
        max_response_head_bytes: int,
        now: float,
    ) -> None:
        self.address = address
        self.stream = stream
        self.max_response_head_bytes = max_response_head_bytes  # checked by the exchange too
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_response_head_bytes)
        self.state = ConnState.ACTIVE
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
        self.state = ConnState.CLOSED
        await trio.aclose_forcefully(self.stream)


def os_error_cause(exc: BaseException) -> str:
    """The operating system's reason, lower case (``connection refused``).

    trio's ``open_tcp_stream`` raises a bare "all attempts to connect ... failed" whose
    ``__cause__`` groups one error per address tried; the first with an ``errno`` says why.
    The reason is the operating system's text for that errno: trio's own text embeds the
    address as a Python tuple, which no client should see.
    """
    pending: list[BaseException] = [exc]
    while pending:
        err = pending.pop(0)
        if isinstance(err, OSError) and err.errno:
            return os.strerror(err.errno).lower()
        if isinstance(err, BaseExceptionGroup):
            pending.extend(err.exceptions)
        if err.__cause__ is not None:
            pending.append(err.__cause__)
    return str(exc) or type(exc).__name__


async def connect(
    address: tuple[str, int],
    *,
    connect_timeout_s: float,
    max_response_head_bytes: int,
) -> UpstreamConnection:
    """Open a connection to ``address`` (DNS included) within ``connect_timeout_s`` seconds.

    Raises:
        ConnectFailed: refused, unreachable, or too slow; the message names the address.
    """
    host, port = address
    try:
        with trio.fail_after(connect_timeout_s):
            stream = fast_stream(await trio.open_tcp_stream(host, port))
    except trio.TooSlowError:
        raise ConnectFailed(
            f"Connecting to {host}:{port} timed out after {connect_timeout_s:g} s "
            "(client.connectTimeoutMs); is the endpoint up and reachable from the linker?",
            cause=f"connect timeout after {connect_timeout_s:g} s",
        ) from None
    except OSError as exc:
        why = os_error_cause(exc)
        raise ConnectFailed(
            f"Connection to {host}:{port} failed ({why}); "
            "is the endpoint up and listening on that port?",
            cause=why,
        ) from None
    return UpstreamConnection(
        address,
        stream,
        max_response_head_bytes=max_response_head_bytes,
        now=trio.current_time(),
    )
