"""The store's watches: every watcher of a channel shares one topic, every topic one connection.

``RedisDtabStore.watch(ns)`` and ``watch_list()`` return a :class:`Watch`. All watches of one
store go through one :class:`WatchHub`, which holds ONE pub/sub connection
(``namerd.storage.pubsub.PubSubReader``). 5,000 watch streams therefore cost one Redis
connection, not 5,000. All watchers of one channel also share one :class:`Topic`, which
re-reads the value *once* per notification and fans it out, so a change costs one read, not
one read per watcher. A channel is subscribed when its first watcher arrives. It is
unsubscribed, with the server's confirmation awaited, when its last watcher closes, so
``PUBSUB NUMSUB`` shows 0 as soon as ``Watch.aclose()`` returns.

A notification is only a hint to re-read. The value always comes from Redis (the topic's
``load``), so a lost message or a missed reconnect window cannot leave a watcher stale once the
next read succeeds: a subscribe confirmation (first connect, and after every reconnect) marks
the topic dirty too, so changes made during an outage arrive after it.

While Redis is down, watchers stay open and silent. A topic whose first read fails takes the
store's last-known value (``fallback``), so watchers are not left waiting when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

from redis.asyncio.connection import AbstractConnection

from namerd.aio import reconnect_delay_s
from namerd.errors import StorageUnavailable
from namerd.storage.pubsub import PubSubReader, Signal

__all__ = ["UNSET", "Topic", "Unset", "Watch", "WatchHub"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Unset:
    """Sentinel type: a topic has no value yet, or a cache has no entry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()


class Topic:
    """The shared, current value of one channel, for every watcher of it.

    ``mark_dirty()`` (on a notification, a subscribe confirmation, or creation) makes the
    topic re-read through ``load``. The read is coalesced: marks that arrive while a read is
    running cause exactly one more read. If the first read fails, ``fallback`` (the store's
    last-known cache) supplies the value, so watchers are not left waiting.
    ``seq`` increases only when the value really changes, which drops repeats for everyone.

    Retries. While the pub/sub connection is down, a topic whose read failed with
    StorageUnavailable does not retry on its own timer. It waits for the connection, which marks
    every topic dirty once it has re-subscribed. So 5,000 watched namespaces do not mean 5,000
    connection attempts per backoff period against a Redis that is down. Any other failed read
    (the connection is up, or an unexpected error) is retried with backoff, and a new mark cuts
    that wait short.
    """

    def __init__(
        self,
        load: Callable[[], Awaitable[object]],
        fallback: Callable[[], object],
        hub_connected: Callable[[], bool],
        *,
        retry_min_s: float,
        retry_max_s: float,
    ) -> None:
        self._load = load
        self._fallback = fallback
        self._hub_connected = hub_connected
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self.refs = 0
        self.value: object = UNSET
        self.seq = 0
        self.changed = Signal()
        self.closed = False
        self._dirty = False
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def mark_dirty(self) -> None:
        if self.closed:
            return
        self._dirty = True
        self._kick.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())

    def close(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        self.changed.fire()

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _set(self, value: object) -> None:
        if self.value is UNSET or value != self.value:
            self.value = value
            self.seq += 1
            self.changed.fire()

    async def _refresh(self) -> None:
        failures = 0
        while self._dirty and not self.closed:
            self._dirty = False
            self._kick.clear()
            try:
                value = await self._load()
            except Exception as exc:
                # StorageUnavailable is expected during an outage (the reader logs it). Anything
                # else (say, WRONGTYPE from a key written by hand) is logged once per streak.
                if not isinstance(exc, StorageUnavailable) and failures == 0:
                    log.error("store watch: re-read failed, retrying with backoff: %r", exc)
                if self.value is UNSET:
                    fallback = self._fallback()
                    if fallback is not UNSET:
                        self._set(fallback)
                failures += 1
                self._dirty = True
                wait_s: float | None = reconnect_delay_s(
                    failures, self._retry_min_s, self._retry_max_s
                )
                if isinstance(exc, StorageUnavailable) and not self._hub_connected():
                    wait_s = None  # until the reader reconnects and marks us dirty
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._kick.wait()
                continue
            failures = 0
            self._set(value)


class WatchHub:
    """Every watch of one store: the channel -> :class:`Topic` table and its pub/sub reader.

    Args:
        make_connection: makes the reader's RESP2 connection (see ``namerd.storage.connection``).
        reconnect_min_s, reconnect_max_s: backoff bounds for reconnecting the reader and for
            re-reading a topic after a failed read.
        ping_interval_s: the reader's PING interval (see ``PubSubReader``).
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        *,
        reconnect_min_s: float,
        reconnect_max_s: float,
        ping_interval_s: float,
    ) -> None:
        self._retry_min_s = reconnect_min_s
        self._retry_max_s = reconnect_max_s
        self._topics: dict[str, Topic] = {}
        self._reader = PubSubReader(
            make_connection,
            on_message=lambda channel, _payload: self._mark_dirty(channel),
            on_subscribed=self._mark_dirty,
            name="store pub/sub",
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            ping_interval_s=ping_interval_s,
        )
        self._closed = False

    @property
    def connected(self) -> bool:
        """True while the pub/sub connection is up."""
        return self._reader.connected

    @property
    def channels(self) -> int:
        """How many channels are watched."""
        return len(self._topics)

    @property
    def watchers(self) -> int:
        """How many watches are open, over all channels."""
        return sum(topic.refs for topic in self._topics.values())

    def acquire(
        self,
        channel: str,
        load: Callable[[], Awaitable[object]],
        fallback: Callable[[], object],
    ) -> Topic:
        """The topic of ``channel`` with one more watcher; the first one subscribes."""
        if self._closed:
            raise RuntimeError("the store is closed")
        topic = self._topics.get(channel)
        if topic is None:
            topic = Topic(
                load,
                fallback,
                lambda: self._reader.connected,
                retry_min_s=self._retry_min_s,
                retry_max_s=self._retry_max_s,
            )
            self._topics[channel] = topic
            self._reader.add(channel)
            # Read at once, rather than after the SUBSCRIBE confirmation, so the first value
            # does not wait for a round trip; the confirmation triggers one more read anyway.
            topic.mark_dirty()
        topic.refs += 1
        return topic

    def release(self, channel: str, topic: Topic) -> None:
        """One watcher fewer; the last one closes the topic and unsubscribes."""
        topic.refs -= 1
        if topic.refs == 0 and self._topics.get(channel) is topic:
            del self._topics[channel]
            topic.close()
            self._reader.remove(channel)

    async def flush(self) -> None:
        """Wait until Redis has confirmed every (un)subscription so far (``PubSubReader``)."""
        await self._reader.flush()

    async def aclose(self) -> None:
        """End every watch (their iteration stops) and close the pub/sub connection."""
        self._closed = True
        topics = list(self._topics.values())
        self._topics.clear()
        for topic in topics:
            topic.close()
        await self._reader.aclose()
        for topic in topics:
            await topic.wait_closed()

    def _mark_dirty(self, channel: str) -> None:
        topic = self._topics.get(channel)
        if topic is not None:
            topic.mark_dirty()


class Watch(Generic[T]):
    """An open watch: an async iterator of values, best used as an async context manager.

    ::

        async with store.watch("default") as updates:
            async for versioned in updates:   # VersionedDtab | None
                ...

    The first value is the current one. After that, a value is yielded each time it changes,
    and a value equal to the previous one is never yielded twice. A slow consumer skips
    intermediate values and gets the latest one. The first value waits while Redis is down
    and this process has no last-known value. Iteration ends only when the store is closed.

    Resource handling: leaving the ``async with`` block, or calling ``aclose()``, releases the
    subscription and waits for Redis to confirm it. A plain ``async for`` without the context
    manager also works, but then the subscription lasts until ``aclose()`` is called.
    """

    def __init__(
        self,
        hub: WatchHub,
        channel: str,
        load: Callable[[], Awaitable[object]],
        fallback: Callable[[], object],
        present: Callable[[Any], T],
    ) -> None:
        self._hub = hub
        self._channel = channel
        self._load = load
        self._fallback = fallback
        self._present = present
        self._topic: Topic | None = None
        self._closed = False
        self._seen_seq = 0
        self._last: object = UNSET

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._topic is not None else "new"
        return f"<Watch {self._channel} [{state}, last={self._last!r}]>"

    async def __aenter__(self) -> Watch[T]:
        self._open()
        try:
            # Wait for the SUBSCRIBE to be confirmed (if Redis is up), so that every write
            # after this point is guaranteed to produce a notification for us.
            await self._hub.flush()
        except BaseException:
            self._release()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> Watch[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        topic = self._open()
        while True:
            if self._closed or topic.closed:
                raise StopAsyncIteration
            if topic.seq != self._seen_seq:
                self._seen_seq = topic.seq
                value = topic.value
                # The topic changes seq on every change; this watcher may have missed an
                # A -> B -> A round trip, which would look like a repeat to its consumer.
                if self._last is UNSET or value != self._last:
                    self._last = value
                    return self._present(value)
                continue
            await topic.changed.wait()

    async def aclose(self) -> None:
        """Stop watching; if this was the channel's last watcher, wait for Redis to confirm
        the UNSUBSCRIBE."""
        if self._closed:
            return
        self._closed = True
        if self._topic is not None:
            self._release()
            await self._hub.flush()

    def _open(self) -> Topic:
        if self._topic is None:
            if self._closed:
                raise RuntimeError("this watch is closed")
            self._topic = self._hub.acquire(self._channel, self._load, self._fallback)
        return self._topic

    def _release(self) -> None:
        topic, self._topic = self._topic, None
        self._closed = True
        if topic is not None:
            self._hub.release(self._channel, topic)
