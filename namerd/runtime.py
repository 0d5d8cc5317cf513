"""Everything one namerd worker process holds: store, namers, interpreter, caches, watches.

One :class:`Runtime` is created per worker in the ASGI lifespan (after gunicorn forks, so no
Redis connection or asyncio task crosses a fork) and closed on shutdown.

Watches. Every ``watch=1`` stream of the worker is a subscriber of a :class:`SharedWatch`,
found by key in :class:`SharedWatches`: streams with the same key (resource, namespace, path,
local dtab, media type) share one task that renders the answer once per change and publishes
it; each stream sends the newest value it has not sent yet (``namerd.http.streaming``). The
task listens only to the Notifier topics its answer depends on: ``("dtab", <ns>)``, which the
:class:`DtabCache` notifies when that namespace's dtab changes, and ``("names", ...)`` for the
namers, DNS and the address mirror. So 40 streams of one bind cost one bind per change, and a
write to namespace B costs nothing to the watches of namespace A.

Names in use. A dry run of a dtab change (``namerd.http.history``) shows the names linkers
route through the namespace. Each worker knows its own bind/resolve watches
(:meth:`SharedWatches.names_in_use`), so :class:`Runtime` writes them to Redis every
``limits.namesInUseRefreshMs`` (``namerd.storage.store``, "Names in use") and
:meth:`Runtime.names_in_use` answers with its own names plus those any worker or replica
reported within :data:`NAMES_IN_USE_TTL_REFRESHES` refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from namerd.aio import cancel_and_wait
from namerd.config import NamerdConfig
from namerd.errors import StorageError
from namerd.metrics import Metrics
from namerd.naming.interpreter import Interpreter
from namerd.naming.namers import build_namer
from namerd.naming.namers.addr_mirror import AddrMirror
from namerd.naming.namers.base import INET_TOPIC, MIRROR_TOPIC, Namer, Notifier, Topic
from namerd.naming.namers.inet import InetResolver
from namerd.storage.pubsub import Signal
from namerd.storage.store import RedisDtabStore, VersionedDtab
from shared import Dtab, DtabParseError

__all__ = [
    "DTAB_LIST_TOPIC",
    "DtabCache",
    "Runtime",
    "SharedWatch",
    "SharedWatches",
    "WatchSource",
    "dtab_topic",
    "parse_stored",
]

log = logging.getLogger("namerd")

_PARSED_MAX = 1024


def dtab_topic(namespace: str) -> Topic:
    """The Notifier topic of one namespace's stored dtab (notified by the DtabCache)."""
    return ("dtab", namespace)


#: The Notifier topic of the list of namespaces (notified by the dtab list stream's follower).
DTAB_LIST_TOPIC: Topic = ("dtabs",)


@dataclass(frozen=True, slots=True)
class ParsedDtab:
    """A stored dtab with its parsed form."""

    version: int
    text: str
    dtab: Dtab


_parsed: OrderedDict[tuple[str, int], ParsedDtab] = OrderedDict()


def parse_stored(namespace: str, value: VersionedDtab | None) -> ParsedDtab | None:
    """Parse a stored dtab, memoised by (namespace, version): a version's text never changes
    within one store. The text is compared on a hit all the same, because the memo is per
    process and a process may hold stores of several Redis servers (tests do)."""
    if value is None:
        return None
    key = (namespace, value.version)
    hit = _parsed.get(key)
    if hit is not None and hit.text == value.dtab:
        _parsed.move_to_end(key)
        return hit
    try:
        dtab = Dtab.read(value.dtab)
    except DtabParseError as err:
        # The API stores only canonical dtabs, so this is data written behind our back.
        raise StorageError(f"the stored dtab of {namespace!r} does not parse: {err}") from err
    parsed = ParsedDtab(value.version, value.dtab, dtab)
    _parsed[key] = parsed
    if len(_parsed) > _PARSED_MAX:
        _parsed.popitem(last=False)
    return parsed


class DtabCache:
    """Live dtabs of the namespaces that watch streams are using, fed by store watches.

    Each namespace in use has one store watch (one shared Redis subscription underneath);
    every change notifies the namespace's topic (``dtab_topic``), so the watches of that
    namespace re-render and no others. The watch is dropped when the last user leaves, so
    nothing lingers after clients disconnect.
    """

    def __init__(self, store: RedisDtabStore, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier
        self._values: dict[str, VersionedDtab | None] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._users: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @contextlib.asynccontextmanager
    async def using(self, namespace: str) -> AsyncIterator[None]:
        """Keep ``namespace`` live while the block runs; waits for its first value."""
        self._users[namespace] = self._users.get(namespace, 0) + 1
        if namespace not in self._tasks:
            self._ready[namespace] = asyncio.Event()
            self._tasks[namespace] = asyncio.create_task(
                self._follow(namespace), name=f"dtab-watch:{namespace}"
            )
        try:
            await self._ready[namespace].wait()
            yield
        finally:
            self._users[namespace] -= 1
            if self._users[namespace] == 0:
                del self._users[namespace]
                task = self._tasks.pop(namespace)
                self._ready.pop(namespace, None)
                self._values.pop(namespace, None)
                await cancel_and_wait([task])

    def current(self, namespace: str) -> VersionedDtab | None:
        """The latest value seen for a namespace in use (None while it does not exist)."""
        return self._values.get(namespace)

    async def _follow(self, namespace: str) -> None:
        async with self.store.watch(namespace) as updates:
            async for value in updates:
                self._values[namespace] = value
                ready = self._ready.get(namespace)
                if ready is not None:
                    ready.set()
                self.notifier.notify(*dtab_topic(namespace))

    async def aclose(self) -> None:
        """Stop every watch."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(tasks)


@dataclass(frozen=True, slots=True)
class WatchSource:
    """What one distinct watch computes, and what its answer depends on.

    Two streams whose keys are equal must be equivalent sources: the key holds everything
    that changes the output (resource, namespace, path, local dtab, media type).

    Attributes:
        render: one complete line (value + ``\\n``), or None while there is nothing to send.
            Synchronous work plus awaits is fine; it runs in the watch's own task.
        topics: the Notifier topics whose changes may change the answer (``()``: any change).
        hold: what the watch holds while it runs, entered before the first render (e.g.
            ``DtabCache.using(ns)``, which keeps the namespace's dtab live and waits for it).
        follow: a coroutine run for the watch's lifetime that notifies on changes of its own
            (e.g. a store watch of the namespace list).
    """

    render: Callable[[], Awaitable[str | None]]
    topics: frozenset[Topic]
    hold: Callable[[], AbstractAsyncContextManager[None]] | None = None
    follow: Callable[[], Coroutine[Any, Any, None]] | None = None


class SharedWatch:
    """One distinct watch: one task computes its answer; every stream of it reads ``value``.

    ``seq`` moves each time ``value`` changes (never for a repeat). A stream remembers the
    ``seq`` it last read and waits in ``wait_changed``; a slow stream simply reads the newest
    value when it gets round to it, so nothing queues and nobody waits for it. If ``render``
    raises, the error is kept in ``error`` and every stream of the watch re-raises it.
    """

    def __init__(self, key: Hashable, source: WatchSource) -> None:
        self.key = key
        self.source = source
        self.refs = 0
        self.value: str | None = None
        self.seq = 0
        self.renders = 0  # how many times it computed its answer
        self.error: BaseException | None = None
        self._changed = Signal()
        self._kick = asyncio.Event()
        self._dirty = False
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<SharedWatch {self.key!r} refs={self.refs} renders={self.renders}>"

    async def wait_changed(self, seen: int) -> None:
        """Return once ``seq`` differs from ``seen`` (at once if it already does)."""
        while self.seq == seen:
            await self._changed.wait()

    def mark_dirty(self) -> None:
        """A topic of this watch changed: render again (coalesced, never queued)."""
        self._dirty = True
        self._kick.set()

    async def run(self, notifier: Notifier, metrics: Metrics) -> None:
        """Render now and after every change of the source's topics, until cancelled.

        A render that raises ends the run with ``error`` set (and ``seq`` moved, so every
        stream sees it).
        """
        source = self.source
        follower: asyncio.Task[None] | None = None
        held = source.hold() if source.hold is not None else contextlib.nullcontext()
        stop_listening = notifier.listen(source.topics, self.mark_dirty)
        try:
            async with held:
                if source.follow is not None:
                    follower = asyncio.create_task(source.follow(), name=f"follow:{self.key!r}")
                while True:
                    # Cleared before rendering: a change while an async render awaits makes
                    # one more pass, so the last change is always rendered.
                    self._dirty = False
                    self._kick.clear()
                    self.renders += 1
                    metrics.inc("watches/renders")
                    value = await source.render()
                    if self.seq == 0 or value != self.value:
                        self._moved(value)
                    if not self._dirty:
                        await self._kick.wait()
        except Exception as err:
            # The streams re-raise it, as they did when each rendered for itself.
            self.error = err
            self._moved(self.value)
        finally:
            stop_listening()
            if follower is not None:
                await cancel_and_wait([follower])

    def _moved(self, value: str | None) -> None:
        self.value = value
        self.seq += 1
        self._changed.fire()


#: A name another worker reported stays "in use" for this many of its refresh periods, so one
#: late or failed refresh does not drop it.
NAMES_IN_USE_TTL_REFRESHES = 3

#: The lookups whose watches make a name "in use": they bind a path through a namespace. Their
#: shared keys are ``(media type, (kind, namespace, path, local dtab))`` (``namerd.http.lookups``).
_BINDING_KINDS = frozenset({"bind", "resolve"})


class SharedWatches:
    """The worker's distinct watches, by key: one computation per key, shared by its streams.

    ``acquire(key, make_source)`` returns the watch of ``key`` with one more stream, starting
    it (with ``make_source()``) if it is new; ``release`` takes the stream away, and the last
    one cancels the task, which stops listening and releases what it held (the namespace in
    the ``DtabCache``). The task renders once at start and once per change of one of its topics
    (changes that arrive while it renders make exactly one more render), so a change costs one
    render per distinct watch, whatever the number of streams.

    Metrics: ``watches/renders`` counts renders (each a bind, for a bind watch),
    ``watches/distinct`` is the number of distinct watches alive.
    """

    def __init__(self, notifier: Notifier, metrics: Metrics) -> None:
        self.notifier = notifier
        self.metrics = metrics
        self._watches: dict[Hashable, SharedWatch] = {}

    def __len__(self) -> int:
        return len(self._watches)

    def __iter__(self) -> Iterator[SharedWatch]:
        return iter(list(self._watches.values()))

    def names_in_use(self) -> dict[str, set[str]]:
        """Namespace -> the paths this worker's bind/resolve watches bind right now."""
        names: dict[str, set[str]] = {}
        for key in self._watches:
            inner = key[1] if isinstance(key, tuple) and len(key) == 2 else None
            if isinstance(inner, tuple) and len(inner) == 4 and inner[0] in _BINDING_KINDS:
                names.setdefault(str(inner[1]), set()).add(str(inner[2]))
        return names

    def acquire(self, key: Hashable, make_source: Callable[[], WatchSource]) -> SharedWatch:
        """The watch of ``key``, with one more stream; started if it is new."""
        watch = self._watches.get(key)
        if watch is None:
            watch = SharedWatch(key, make_source())
            watch.task = asyncio.create_task(self._run(watch), name=f"shared-watch:{key!r}")
            self._watches[key] = watch
            self.metrics.set("watches/distinct", len(self._watches))
        watch.refs += 1
        return watch

    async def release(self, watch: SharedWatch) -> None:
        """One stream fewer; the last one stops the watch and waits until it has stopped."""
        watch.refs -= 1
        if watch.refs > 0:
            return
        self._forget(watch)
        if watch.task is not None:
            await cancel_and_wait([watch.task])

    async def aclose(self) -> None:
        """Stop every watch (their streams end on the shutdown flag)."""
        watches = list(self._watches.values())
        self._watches.clear()
        self.metrics.set("watches/distinct", 0)
        await cancel_and_wait([w.task for w in watches if w.task is not None])

    async def _run(self, watch: SharedWatch) -> None:
        await watch.run(self.notifier, self.metrics)
        # It returns only when its render failed: the next stream of the key starts afresh.
        self._forget(watch)

    def _forget(self, watch: SharedWatch) -> None:
        if self._watches.get(watch.key) is watch:
            del self._watches[watch.key]
            self.metrics.set("watches/distinct", len(self._watches))


class Runtime:
    """The live state of one worker process."""

    def __init__(self, config: NamerdConfig, redis_url: str | None = None) -> None:
        self.config = config
        self.redis_url = redis_url
        self.notifier = Notifier()
        self.metrics = Metrics()
        self.shutdown = asyncio.Event()
        self.store: RedisDtabStore
        self.redis: aioredis.Redis
        self.namers: list[Namer] = []
        self.inet: InetResolver
        self.interpreter: Interpreter
        self.dtabs: DtabCache
        self.watches: SharedWatches

    async def start(self) -> None:
        """Connect to Redis and start the namers (their initial state is loaded on return)."""
        storage = self.config.storage
        if storage.sentinels:
            self.store = RedisDtabStore.from_sentinel(
                list(storage.sentinels), storage.service or "", key_prefix=storage.key_prefix
            )
        else:
            url = self.redis_url or storage.url
            if not url:
                raise StorageError("no Redis URL: the embedded redis-server was not started")
            self.store = RedisDtabStore.from_url(url, key_prefix=storage.key_prefix)
        self.redis = self.store.redis
        self.inet = InetResolver(self.notifier.channel(*INET_TOPIC))
        await self.inet.start()
        for nc in self.config.namers:
            namer = build_namer(nc.kind, nc.prefix, nc.options, self.notifier, self.redis)
            await namer.start()
            self.namers.append(namer)
        self.mirror = AddrMirror(
            self.redis,
            key_prefix=storage.key_prefix,
            notifier=self.notifier.channel(*MIRROR_TOPIC),
        )
        try:
            await self.mirror.start()
        except Exception as err:  # Redis down at boot: serve from local namers alone
            log.warning("address mirror unavailable, continuing without it: %s", err)
        self.interpreter = Interpreter(self.namers, self.inet, mirror=self.mirror)
        self.dtabs = DtabCache(self.store, self.notifier)
        self.watches = SharedWatches(self.notifier, self.metrics)
        self._in_use_task = asyncio.create_task(self._report_names_in_use(), name="names-in-use")

    def _names_ttl_ms(self) -> int:
        return NAMES_IN_USE_TTL_REFRESHES * self.config.limits.names_in_use_refresh_ms

    async def _report_names_in_use(self) -> None:
        """Every ``namesInUseRefreshMs``: tell Redis which names this worker watches."""
        period_s = self.config.limits.names_in_use_refresh_ms / 1000
        while True:
            try:
                await self.store.mark_names_in_use(
                    self.watches.names_in_use(), int(time.time() * 1000), self._names_ttl_ms()
                )
            except StorageError as err:  # advisory data: the next round tries again
                log.debug("names in use not reported: %s", err)
            await asyncio.sleep(period_s)

    async def names_in_use(self, namespace: str) -> set[str]:
        """The paths of ``namespace`` watched by this worker, or by any worker or replica that
        reported them recently; this worker's alone when Redis is down."""
        mine = self.watches.names_in_use().get(namespace, set())
        try:
            theirs = await self.store.names_in_use(
                namespace, int(time.time() * 1000), self._names_ttl_ms()
            )
        except StorageError as err:
            log.debug("names in use of other workers unknown: %s", err)
            return set(mine)
        return mine | theirs

    async def aclose(self) -> None:
        """Release every resource; safe to call after a partial start."""
        self.shutdown.set()
        if hasattr(self, "_in_use_task"):
            await cancel_and_wait([self._in_use_task])
        if hasattr(self, "watches"):
            await self.watches.aclose()
        if hasattr(self, "dtabs"):
            await self.dtabs.aclose()
        for namer in reversed(self.namers):
            with contextlib.suppress(Exception):
                await namer.close()
        if hasattr(self, "mirror"):
            with contextlib.suppress(Exception):
                await self.mirror.close()
        if hasattr(self, "inet"):
            with contextlib.suppress(Exception):
                await self.inet.close()
        if hasattr(self, "store"):
            await self.store.aclose()

    async def dtab(self, namespace: str) -> ParsedDtab | None:
        """The stored dtab of ``namespace`` (last-known while Redis is down); None if absent."""
        return parse_stored(namespace, await self.store.get(namespace))
