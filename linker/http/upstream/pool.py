"""The upstream pool: which keep-alive connection serves a request (httpcore's ``ConnectionPool``).

Theory of operation
-------------------
Per endpoint address the pool keeps a ``_Host``: its idle connections (most recently used
last), the active ones (each carrying an exchange), how many are being connected, and the
requests waiting for a connection, in arrival order.  Every decision is synchronous and makes
its state change before the next checkpoint, so under trio no lock is needed.  A request
(:meth:`UpstreamPool.request`) goes through three steps:

1.  **Acquire.**  The most recently used idle connection that has not expired
    (``idle_timeout_s``, except that ``min_idle_per_host`` of them are kept regardless) and
    does not look dead; else, below ``max_per_host``, a new connection, its slot counted
    before the connect awaits so concurrent requests can't all see room; else the request
    queues behind the host's earlier waiters (at most ``max_waiters_per_host``; one more fails
    at once with :class:`~linker.errors.PoolExhausted`).
2.  **Exchange.**  An :class:`~.exchange.Exchange` sends the request and returns the response
    head; when the response has ended (or was abandoned) it gives the connection back through
    the pool's release callback, saying whether the connection can be reused.
3.  **Release.**  A reusable connection is handed straight to the first waiter, if any, else
    pooled as idle (at most ``max_idle_per_host``; the least recently used goes beyond that).
    A connection that can't be reused is closed, and its slot goes to the first waiter, who
    connects in it.  Handing over directly, rather than waking every waiter to race for the
    slot, serves waiters strictly first come, first served, and a request arriving meanwhile
    can't jump the queue: while anyone waits there is neither an idle connection nor a free
    slot for it to take.  A waiter cancelled after being handed something passes it on.

Dead pooled connections
-----------------------
An idle connection the endpoint has closed looks fine until it is used.  Before reuse we poll
the socket with a zero timeout (:meth:`~.connection.UpstreamConnection.looks_dead`): an idle
HTTP/1.1 connection has nothing to say, so readable means EOF, a reset or garbage, and the
connection is dropped.  The poll can't close the race with a close in flight, so a request that
fails on a *reused* connection before any response byte arrived is retried once on a *fresh*
connection, provided no byte of its body had been taken yet (the body can't be replayed
otherwise).  That fresh connection replaces the stale one and is never held back by
``max_per_host``.  This is what makes keep-alive pools safe.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import trio

from linker.errors import ConnectFailed, PoolExhausted
from linker.http.events import EventHook, emit
from linker.http.messages import Request, Response
from linker.http.upstream.connection import ConnState, UpstreamConnection, connect
from linker.http.upstream.exchange import Exchange, StaleConnection, Upload

__all__ = ["POOL_EVENTS", "PoolLimits", "UpstreamPool"]

log = logging.getLogger("linker.upstream")

# Idle connections of every host are checked for expiry at most this often.
_PRUNE_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """Limits of the upstream pool; sizes in bytes, times in seconds.

    Attributes:
        max_idle_per_host: idle connections kept per endpoint; more are closed when released
            (Linkerd's ``hostConnectionPool.maxIdle``).  Default 100: a busy worker sends one
            endpoint dozens of requests at once, and a pool that kept fewer closed and
            reopened connections on every burst.
        idle_timeout_s: an idle connection older than this is closed rather than reused
            (checked whenever the pool is used; ``idleTimeMs``, default 60 s; endpoints often
            close after 60-75 s).
        connect_timeout_s: connecting (including DNS) takes at most this long, else
            :class:`~linker.errors.ConnectFailed`.  Default 3 s: tolerates one lost SYN.
        response_header_timeout_s: the response head must arrive this long after the request
            was sent, else :class:`~linker.errors.UpstreamTimeout`.  ``None`` (the default):
            no limit (the router's request timeouts apply).
        max_response_head_bytes: largest response head (status line and headers) accepted;
            default 16 KiB, h11's default, which cites node, tomcat, IIS and Apache.
        expect_continue_timeout_s: a request with ``Expect: 100-continue`` holds its body
            until the endpoint answers 100 (or refuses with a final response), but at most
            this long, as RFC 9110 §10.1.1 advises.  Default 1 s, as curl.
        max_per_host: most connections (busy + idle + connecting) to one endpoint; a request
            finding all of them busy waits for one, in arrival order (Linkerd
            ``hostConnectionPool.maxSize``; None, the default, is unbounded as in Linkerd).
        max_waiters_per_host: most requests waiting for a connection to one endpoint; one more
            fails at once with :class:`~linker.errors.PoolExhausted` (503)
            (``hostConnectionPool.maxWaiters``; None, the default, is unbounded).
        min_idle_per_host: idle connections kept even past ``idle_timeout_s``
            (``hostConnectionPool.minSize``; default 0).
        response_body_idle_timeout_s: once a response head has arrived, its exchange may go
            this long without a byte moving (response bytes in, request body bytes out);
            then the response is cut short (the client's connection is closed: its status
            is already sent) and the upstream connection is discarded.  ``None``: no limit.
            Default 30 s (``client.responseBodyIdleTimeoutMs``), below nginx's
            ``proxy_read_timeout`` (60 s) and as HAProxy's usual ``timeout server``.
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
    response_body_idle_timeout_s: float | None = 30.0


POOL_EVENTS: tuple[str, ...] = (
    "response_body_idle_timeout",  # a response body stalled (response_body_idle_timeout_s)
)
"""Every name an :class:`UpstreamPool` passes to its ``on_event``."""


class _Waiter:
    """A request waiting for a connection to one host (maxSize reached)."""

    __slots__ = ("conn", "event", "granted")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.granted = False  # handed a connection, or a slot (counted in connecting) to open one
        self.conn: UpstreamConnection | None = None

    def grant(self, conn: UpstreamConnection | None) -> None:
        self.granted = True
        self.conn = conn
        self.event.set()


class _Host:
    """The pool's state for one endpoint address."""

    __slots__ = ("active", "connecting", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[UpstreamConnection] = []  # most recently used last
        self.active: set[UpstreamConnection] = set()
        self.connecting = 0  # slots taken by connects in progress (or granted to a waiter)
        self.waiters: deque[_Waiter] = deque()

    def open(self) -> int:
        """Connections counted against ``max_per_host``."""
        return len(self.active) + len(self.idle) + self.connecting


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to endpoints, reused across requests.

    One pool per router in each worker (the limits are the router's ``hostConnectionPool``);
    it needs no background task.  Not thread-safe (trio is single-threaded).

    Args:
        limits: see :class:`PoolLimits`.
        on_event: called with one of :data:`POOL_EVENTS` as things happen (a metrics hook);
            exceptions it raises are logged and ignored.
    """

    def __init__(
        self,
        limits: PoolLimits = PoolLimits(),
        *,
        on_event: EventHook | None = None,
    ) -> None:
        self._limits = limits
        self._on_event = on_event
        self._hosts: dict[tuple[str, int], _Host] = {}
        self._closed = False
        self._last_prune_s = 0.0
        self._counts = {
            "created": 0,
            "reused": 0,
            "closed": 0,
            "dead_on_checkout": 0,
            "expired": 0,
            "retried": 0,
            "rejected": 0,
            "connect_failed": 0,
            "response_body_idle_timeout": 0,
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
            ``open`` (connections now open or being opened), ``active`` (serving a request),
            ``idle`` (pooled), ``hosts`` (endpoints with idle connections), ``waiting``
            (requests waiting for a connection), and since creation: ``created``, ``reused``,
            ``closed``, ``dead_on_checkout`` (pooled connections found closed by the peer),
            ``expired`` (idle longer than ``idle_timeout_s``), ``retried`` (requests retried
            on a fresh connection after a reused one failed), ``rejected`` (requests refused
            because ``max_waiters_per_host`` were waiting), ``connect_failed`` and
            ``response_body_idle_timeout`` (responses cut short because their body stalled).
        """
        hosts = self._hosts.values()
        return {
            "open": sum(h.open() for h in hosts),
            "active": sum(len(h.active) for h in hosts),
            "idle": sum(len(h.idle) for h in hosts),
            "hosts": sum(1 for h in hosts if h.idle),
            "waiting": sum(len(h.waiters) for h in hosts),
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
            PoolExhausted: ``max_per_host`` connections are busy and ``max_waiters_per_host``
                requests already wait.
            UpstreamProtocolError: the endpoint sent something that is not HTTP/1.1, or closed
                the connection before its response head.
            UpstreamTimeout: no response head within ``response_header_timeout_s``.
            LinkerError: whatever reading ``req.body`` raised (e.g. the client's body broke).
            trio.ClosedResourceError: the pool was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("UpstreamPool is closed")
        limits = self._limits
        upload = Upload(req.body)
        fresh = False
        while True:
            conn = await self._acquire(address, fresh=fresh)
            exchange = Exchange(
                conn,
                req,
                upload,
                self._release,
                response_header_timeout_s=limits.response_header_timeout_s,
                expect_continue_timeout_s=limits.expect_continue_timeout_s,
                body_idle_timeout_s=limits.response_body_idle_timeout_s,
                on_event=self._event,
            )
            try:
                return await exchange.start()
            except StaleConnection as stale:
                # The endpoint closed a pooled connection just as we reused it; nothing reached
                # it, so trying once more on a new connection is safe if the body can be sent
                # again.
                if fresh or not upload.replayable:
                    raise stale.error from None
                self._counts["retried"] += 1
                log.debug("retrying on a fresh connection to %s:%s: %s", *address, stale.error)
                fresh = True

    def _event(self, name: str) -> None:
        self._counts[name] += 1
        emit(self._on_event, name, log)

    async def aclose(self) -> None:
        """Close every connection, idle or active; later requests raise ClosedResourceError.

        Responses still streaming fail with UpstreamProtocolError, and requests waiting for a
        connection raise ClosedResourceError.
        """
        self._closed = True
        conns: list[UpstreamConnection] = []
        for host in self._hosts.values():
            conns += host.idle
            conns += host.active
            for waiter in host.waiters:
                waiter.event.set()  # not granted: it sees the pool closed
        self._hosts.clear()
        for conn in conns:
            conn.state = ConnState.CLOSED  # before any checkpoint: releases are now no-ops
        await self._close_all(conns)

    # -- acquiring ---------------------------------------------------------------------------

    async def _acquire(self, address: tuple[str, int], *, fresh: bool) -> UpstreamConnection:
        now = trio.current_time()
        to_close = self._prune(now)
        host = self._hosts.get(address)
        if host is None:
            host = self._hosts[address] = _Host()
        conn = None if fresh else self._take_idle(host, now, to_close)
        waiter = None
        rejected = False
        if conn is None:
            limit = self._limits.max_per_host
            max_waiters = self._limits.max_waiters_per_host
            if fresh or limit is None or host.open() < limit:
                host.connecting += 1  # the slot is ours before the first await
            elif max_waiters is not None and len(host.waiters) >= max_waiters:
                rejected = True
            else:
                waiter = _Waiter()
                host.waiters.append(waiter)
        if to_close:
            await self._close_all(to_close)  # never raises; their slots were freed above
        if conn is not None:
            return conn
        if rejected:
            self._counts["rejected"] += 1
            raise PoolExhausted(
                f"All {self._limits.max_per_host} connections to {address[0]}:{address[1]} are "
                f"busy and {len(host.waiters)} requests are already waiting "
                "(hostConnectionPool maxSize/maxWaiters)"
            )
        if waiter is not None:
            conn = await self._wait(host, waiter)
            if conn is not None:
                return conn
        return await self._connect(host, address)

    def _take_idle(
        self, host: _Host, now: float, to_close: list[UpstreamConnection]
    ) -> UpstreamConnection | None:
        """An idle connection to reuse (now active), or None; unusable ones go to ``to_close``."""
        idle = host.idle
        limits = self._limits
        while idle:
            # Most recently used first: the least likely to have been closed by the endpoint.
            conn = idle.pop()
            kept_by_min_size = len(idle) + 1 <= limits.min_idle_per_host
            if now - conn.idle_since >= limits.idle_timeout_s and not kept_by_min_size:
                self._counts["expired"] += 1
                to_close.append(conn)
            elif conn.looks_dead():
                self._counts["dead_on_checkout"] += 1
                to_close.append(conn)
            else:
                conn.state = ConnState.ACTIVE
                host.active.add(conn)
                self._counts["reused"] += 1
                return conn
        return None

    async def _wait(self, host: _Host, waiter: _Waiter) -> UpstreamConnection | None:
        """Wait for ``waiter``'s turn: the connection handed over, or None when a slot was
        reserved for it to connect in.

        Raises:
            trio.ClosedResourceError: the pool was closed meanwhile.
        """
        try:
            await waiter.event.wait()
        except BaseException:
            # Cancelled: leave the line, or pass on what we were handed to the next in it.
            if not waiter.granted:
                if waiter in host.waiters:
                    host.waiters.remove(waiter)
            elif waiter.conn is not None:
                await self._release(waiter.conn, True)  # unused: as good as just released
            else:
                host.connecting -= 1
                self._serve_waiters(host)
            raise
        if self._closed:
            raise trio.ClosedResourceError("UpstreamPool is closed")
        return waiter.conn

    async def _connect(self, host: _Host, address: tuple[str, int]) -> UpstreamConnection:
        """Open a connection in a slot already counted in ``host.connecting``."""
        limits = self._limits
        try:
            conn = await connect(
                address,
                connect_timeout_s=limits.connect_timeout_s,
                max_response_head_bytes=limits.max_response_head_bytes,
            )
        except BaseException as exc:
            if isinstance(exc, ConnectFailed):
                self._counts["connect_failed"] += 1
            host.connecting -= 1
            self._serve_waiters(host)  # the slot is free again: the next waiter tries
            raise
        host.connecting -= 1
        if self._closed:
            await conn.close()
            raise trio.ClosedResourceError("UpstreamPool is closed")
        host.active.add(conn)
        self._counts["created"] += 1
        return conn

    # -- releasing ---------------------------------------------------------------------------

    async def _release(self, conn: UpstreamConnection, reusable: bool) -> None:
        """The release callback of every exchange: hand ``conn`` over, pool it, or close it."""
        if conn.state is not ConnState.ACTIVE:
            return  # closed by aclose() meanwhile
        host = self._hosts[conn.address]
        if reusable:
            if host.waiters:
                host.waiters.popleft().grant(conn)  # stays active: straight to the next request
                return
            max_idle = self._limits.max_idle_per_host
            if max_idle > 0:
                host.active.discard(conn)
                conn.state = ConnState.IDLE
                conn.idle_since = trio.current_time()
                host.idle.append(conn)
                if len(host.idle) > max_idle:
                    await self._close_all([host.idle.pop(0)])  # keep the most recently used
                return
        host.active.discard(conn)
        conn.state = ConnState.CLOSED
        self._serve_waiters(host)  # its slot is free
        await self._close_all([conn])

    def _serve_waiters(self, host: _Host) -> None:
        """Give what is free to the host's waiters, first come first served: idle connections
        first, then slots below ``max_per_host`` (reserved in ``connecting`` for them)."""
        waiters = host.waiters
        limit = self._limits.max_per_host
        while waiters:
            if host.idle:
                conn = host.idle.pop()
                conn.state = ConnState.ACTIVE
                host.active.add(conn)
                waiters.popleft().grant(conn)
            elif limit is None or host.open() < limit:
                host.connecting += 1
                waiters.popleft().grant(None)
            else:
                return

    def _prune(self, now: float) -> list[UpstreamConnection]:
        """Expired idle connections of every host, removed from the pool (at most once per
        ``_PRUNE_INTERVAL_S``); hosts with nothing left are forgotten."""
        if now - self._last_prune_s < _PRUNE_INTERVAL_S:
            return []
        self._last_prune_s = now
        expired: list[UpstreamConnection] = []
        timeout_s = self._limits.idle_timeout_s
        for address, host in list(self._hosts.items()):
            conns = host.idle
            if conns:
                fresh_ones = [c for c in conns if now - c.idle_since < timeout_s]
                old = [c for c in conns if now - c.idle_since >= timeout_s]
                # minSize: keep the newest of the expired ones up to the floor.
                spare = max(0, self._limits.min_idle_per_host - len(fresh_ones))
                host.idle = fresh_ones + old[len(old) - spare :] if spare else fresh_ones
                expired += old[: len(old) - spare] if spare else old
            if not host.open() and not host.waiters:
                del self._hosts[address]
        self._counts["expired"] += len(expired)
        return expired

    async def _close_all(self, conns: list[UpstreamConnection]) -> None:
        """Close ``conns`` (already out of the pool's books).  Shielded, so it never raises,
        not even Cancelled (a cancel is delivered at the caller's next checkpoint): a
        forceful close cannot block, and one cancel must not leave the rest open."""
        with trio.CancelScope(shield=True):
            for conn in conns:
                self._counts["closed"] += 1
                await conn.close()
