"""namerd's one Redis pub/sub reader: subscriptions that survive Redis restarts and outages.

Every in-memory copy of Redis data in namerd is kept fresh by pub/sub: the dtab store's watches
(``namerd.storage.watches``, many channels on one connection), the registry namer's services
and the AddrMirror's addresses (one channel each, through :class:`ChannelFeed`). They all read
pub/sub through :class:`PubSubReader`, so reconnecting, re-subscribing and noticing a hung
server are written once.

A message is only a hint: messages published while we are disconnected are lost for good.
So the reader reports the moment a subscription is confirmed by the server
(``on_subscribed(channel)``, on the first connect and after every reconnect). From then on
every change arrives as a message, and a full re-read started at that moment misses nothing.
The owner re-reads then.

Theory of operation
-------------------
Owners change the *wanted* channels synchronously, with ``add(channel)`` and
``remove(channel)`` (a refcount per channel). Because those calls never await, a cancelled
owner can never leave the refcounts half-updated. One task runs the connection; per session
two tasks do the I/O:

* the controller compares the wanted channels with those sent on this connection, sends one
  UNSUBSCRIBE and/or one SUBSCRIBE for the difference, and waits for the server's per-channel
  replies. Then it marks that generation of changes as synced;
* the reader reads everything: messages, subscribe/unsubscribe replies, and PONGs. It calls
  ``on_message(channel, payload)`` for each message and ``on_subscribed(channel)`` for each
  subscribe confirmation.

``flush()`` waits until the server has confirmed every change made so far. While Redis is down
it returns at once, since nothing is subscribed. If the connection fails, or a PING sent after
``ping_interval_s`` of silence gets no reply within another interval (a Redis that hangs
without closing the socket: SIGSTOP, a dropped network), the session ends. The reader then
reconnects after ``namerd.aio.reconnect_delay_s`` (jittered exponential backoff between
``reconnect_min_s`` and ``reconnect_max_s``), and the new controller re-subscribes every
wanted channel.

The connection is our own (``namerd.storage.connection.pubsub_connection_factory``). It does
not use redis-py's ``PubSub``, which reconnects and re-subscribes inside ``get_message``
without telling us: here one place owns reconnection, and every (re)subscription is confirmed
before anything re-reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection

from namerd.aio import cancel_and_wait, reconnect_delay_s
from namerd.storage.connection import UNAVAILABLE_ERRORS, pubsub_connection_factory, text

__all__ = ["ChannelFeed", "PubSubReader", "Signal"]

log = logging.getLogger(__name__)


def _check_timing(reconnect_min_s: float, reconnect_max_s: float, ping_interval_s: float) -> None:
    if not 0 < reconnect_min_s <= reconnect_max_s or ping_interval_s <= 0:
        raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s and ping_interval_s > 0")


class Signal:
    """A broadcast wake-up: every task waiting when ``fire()`` is called wakes up.

    Unlike a bare Event, it needs no clear(), so a waiter can never miss a fire() that happens
    between its wake-up and its next wait.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class PubSubReader:
    """One pub/sub connection, its wanted channels, and reconnection (see the module docstring).

    Args:
        make_connection: makes a new, unconnected RESP2 connection (one per session).
        on_message: called with ``(channel, payload)`` for each message.
        on_subscribed: called with the channel each time the server confirms its
            subscription; anything written before that moment may have been missed.
        name: for log lines and the task name.
        reconnect_min_s: the first wait before reconnecting after a failure.
        reconnect_max_s: the longest such wait; the backoff doubles up to it, with jitter.
        ping_interval_s: silence after which the connection is PINGed; as long again without
            a reply ends the session.

    The callbacks run on the reader's task and must not block; an exception from one ends
    the session (it is logged) and the reader reconnects.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        *,
        on_message: Callable[[str, str], None],
        on_subscribed: Callable[[str], None],
        name: str,
        reconnect_min_s: float,
        reconnect_max_s: float,
        ping_interval_s: float,
    ) -> None:
        _check_timing(reconnect_min_s, reconnect_max_s, ping_interval_s)
        self._make_connection = make_connection
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.name = name
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._ping_interval_s = ping_interval_s
        self._refs: dict[str, int] = {}
        self._gen = 0  # bumped on every change to the wanted set
        self._synced_gen = 0  # the last generation the server has confirmed
        self._sent: set[str] = set()  # channels subscribed on the current connection
        self._confirmed: set[str] = set()  # ... and confirmed by the server
        self._awaiting_replies = 0
        self._reply = Signal()  # the reader got a subscribe/unsubscribe reply
        self._state_changed = Signal()  # synced, connected or disconnected
        self._wakeup = asyncio.Event()  # wakes the controller
        self._connected = False
        self._connecting = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        #: Why the last connection attempt or session failed; None once connected again.
        self.last_error: str | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connected else "connecting" if self._connecting else "down"
        return f"<PubSubReader {self.name} [{state}, {len(self._refs)} channels wanted]>"

    @property
    def connected(self) -> bool:
        """True while a session is up (the subscriptions may still be in flight)."""
        return self._connected

    @property
    def closed(self) -> bool:
        return self._closed

    def is_subscribed(self, channel: str) -> bool:
        """True while the server has confirmed ``channel`` on the current session."""
        return channel in self._confirmed

    def add(self, channel: str) -> None:
        """Want ``channel`` subscribed (refcounted); starts the connection task on first use.

        Synchronous, so cancellation-safe.

        Raises:
            RuntimeError: the reader is closed.
        """
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        count = self._refs.get(channel, 0)
        self._refs[channel] = count + 1
        if count == 0:
            self._changed()
        if self._task is None:
            self._connecting = True
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    def remove(self, channel: str) -> None:
        """Drop one reference to ``channel``; the last one unsubscribes. Synchronous."""
        count = self._refs.get(channel, 0)
        if count > 1:
            self._refs[channel] = count - 1
        elif count == 1:
            del self._refs[channel]
            self._changed()

    async def flush(self) -> None:
        """Wait until Redis has confirmed every add()/remove() made before this call.

        This returns at once if Redis is down or the reader is closed. In both cases no
        subscription exists on the server, so there is nothing to confirm.
        """
        target = self._gen
        while (
            not self._closed and (self._connected or self._connecting) and self._synced_gen < target
        ):
            await self._state_changed.wait()

    async def aclose(self) -> None:
        """Stop the connection task and disconnect. Calling it again does nothing."""
        self._closed = True
        self._refs.clear()
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        self._state_changed.fire()

    def _changed(self) -> None:
        self._gen += 1
        self._wakeup.set()

    async def _run(self) -> None:
        failures = 0  # consecutive failed connection attempts
        while not self._closed:
            self._connecting = True
            conn = self._make_connection()
            try:
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except (redis_errors.RedisError, OSError) as exc:
                    # Mostly ConnectionError; AuthenticationError, or a ResponseError for a bad
                    # db number, are retried too, because they may be fixed on the server.
                    failures += 1
                    self.last_error = str(exc) or type(exc).__name__
                    self._connecting = False
                    self._state_changed.fire()
                    # Warn on the first failure only, so an outage does not flood the log.
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "%s: cannot connect to Redis (%s); retrying", self.name, exc)
                else:
                    if failures:
                        log.info(
                            "%s: reconnected to Redis after %d failed attempts", self.name, failures
                        )
                    failures = 0
                    self.last_error = None
                    await self._session(conn)
            finally:
                self._end_session()
                await conn.disconnect(nowait=True)
            # After a lost session, the first retry also waits (at least reconnect_min_s,
            # jittered), so that replicas do not all reconnect in the same instant.
            step = max(failures, 1)
            await asyncio.sleep(
                reconnect_delay_s(step, self._reconnect_min_s, self._reconnect_max_s)
            )

    async def _session(self, conn: AbstractConnection) -> None:
        self._sent = set()
        self._confirmed = set()
        self._awaiting_replies = 0
        self._connected, self._connecting = True, False
        # A new generation: flush() waits until this connection has (re)subscribed.
        self._changed()
        self._state_changed.fire()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(conn))
                tg.create_task(self._control_loop(conn))
        except* UNAVAILABLE_ERRORS as group:
            self.last_error = str(group.exceptions[0]) or type(group.exceptions[0]).__name__
            log.warning(
                "%s: lost the Redis connection (%s); subscribers keep their last values and "
                "resume when it is back",
                self.name,
                group.exceptions[0],
            )
        except* Exception as group:
            # A RedisError such as a protocol error, or a bug. Reconnecting is the best
            # recovery, and it keeps every subscriber alive.
            self.last_error = repr(group.exceptions[0])
            log.error("%s: unexpected error, reconnecting: %r", self.name, group.exceptions)

    def _end_session(self) -> None:
        self._connected = self._connecting = False
        self._sent = set()
        self._confirmed = set()
        self._awaiting_replies = 0
        self._state_changed.fire()
        self._reply.fire()

    async def _control_loop(self, conn: AbstractConnection) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            target = self._gen
            wanted = set(self._refs)
            drop, add = self._sent - wanted, wanted - self._sent
            if drop:
                self._sent -= drop
                self._confirmed -= drop
                self._awaiting_replies += len(drop)
                await conn.send_command("UNSUBSCRIBE", *sorted(drop), check_health=False)
            if add:
                self._sent |= add
                self._awaiting_replies += len(add)
                await conn.send_command("SUBSCRIBE", *sorted(add), check_health=False)
            while self._awaiting_replies > 0:
                await self._reply.wait()
            self._synced_gen = target
            self._state_changed.fire()

    async def _read_loop(self, conn: AbstractConnection) -> None:
        ping_outstanding = False
        while True:
            # With an explicit timeout, read_response returns None on silence instead of
            # raising. redis-py's parser buffers partial replies, so a timeout mid-reply is safe.
            reply = await conn.read_response(timeout=self._ping_interval_s)
            if reply is None:
                if ping_outstanding:
                    raise redis_errors.TimeoutError(
                        f"no reply to PING within {self._ping_interval_s} s"
                    )
                await conn.send_command("PING", check_health=False)
                ping_outstanding = True
                continue
            ping_outstanding = False  # any traffic proves the server is alive
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # "+PONG" when nothing is subscribed
            kind, channel = text(reply[0]).lower(), text(reply[1])
            if kind == "message" and len(reply) >= 3:
                self._on_message(channel, text(reply[2]))
            elif kind in ("subscribe", "unsubscribe"):
                self._awaiting_replies -= 1
                self._reply.fire()
                # A confirmation for a channel dropped since it was sent is stale.
                if kind == "subscribe" and channel in self._sent:
                    self._confirmed.add(channel)
                    self._on_subscribed(channel)


class ChannelFeed:
    """One channel kept subscribed on a client's server: the feed behind a mirror.

    A mirror (the registry namer's services, the AddrMirror's addresses) applies each message
    with ``on_message(payload)`` and re-reads everything in ``on_subscribed()``.

    Args:
        redis: the client whose connection settings are copied.
        channel: the channel to subscribe to.
        on_message: called with each message payload (as str).
        on_subscribed: called each time the server confirms the subscription (first connect
            and every reconnect); re-read everything then.
        name: for logs and the task name.
        reconnect_min_s: the first wait before reconnecting. Default 0.05 s.
        reconnect_max_s: the longest wait; the backoff doubles up to it. Default 2 s.
        ping_interval_s: silence after which we PING; as long again without a reply ends the
            connection. Default 15 s.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        *,
        on_message: Callable[[str], None],
        on_subscribed: Callable[[], None],
        name: str,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        ping_interval_s: float = 15.0,
    ) -> None:
        _check_timing(reconnect_min_s, reconnect_max_s, ping_interval_s)
        self.channel = channel
        self.name = name
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.ping_interval_s = ping_interval_s
        self._make_connection = pubsub_connection_factory(redis)
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._reader: PubSubReader | None = None

    def __repr__(self) -> str:
        state = "subscribed" if self.connected else f"down ({self.last_error})"
        return f"<ChannelFeed {self.channel} [{state}]>"

    @property
    def connected(self) -> bool:
        """True between a subscribe confirmation and a disconnect."""
        return self._reader is not None and self._reader.is_subscribed(self.channel)

    @property
    def last_error(self) -> str | None:
        """Why the feed is down (None while it is up, or before its first attempt)."""
        return self._reader.last_error if self._reader is not None else None

    def start(self) -> None:
        """Start the connection task (on the running loop); again after close() restarts it."""
        if self._reader is None or self._reader.closed:
            self._reader = PubSubReader(
                self._make_connection,
                on_message=self._message,
                on_subscribed=self._subscribed,
                name=self.name,
                reconnect_min_s=self.reconnect_min_s,
                reconnect_max_s=self.reconnect_max_s,
                ping_interval_s=self.ping_interval_s,
            )
            self._reader.add(self.channel)

    async def close(self) -> None:
        """Stop the task and disconnect. Calling it again does nothing."""
        if self._reader is not None:
            await self._reader.aclose()

    def _message(self, channel: str, payload: str) -> None:
        if channel == self.channel:
            self._on_message(payload)

    def _subscribed(self, channel: str) -> None:
        if channel == self.channel:
            self._on_subscribed()
