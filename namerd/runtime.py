"""Everything one namerd worker process holds: store, namers, interpreter, caches, shutdown.

One :class:`Runtime` is created per worker in the ASGI lifespan (after gunicorn forks, so no
Redis connection or asyncio task crosses a fork) and closed on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis.asyncio as aioredis

from namerd.aio import cancel_and_wait
from namerd.config import NamerdConfig
from namerd.errors import StorageError
from namerd.metrics import Metrics
from namerd.naming.interpreter import Interpreter
from namerd.naming.namers import build_namer
from namerd.naming.namers.addr_mirror import AddrMirror
from namerd.naming.namers.base import Namer, Notifier
from namerd.naming.namers.inet import InetResolver
from namerd.storage.store import RedisDtabStore, VersionedDtab
from shared import Dtab, DtabParseError

__all__ = ["DtabCache", "Runtime", "parse_stored"]

log = logging.getLogger("namerd")

_PARSED_MAX = 1024


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
    every change bumps the Notifier so bind/resolve streams re-render. The watch is dropped
    when the last user leaves, so nothing lingers after clients disconnect.
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
                self.notifier.notify()

    async def aclose(self) -> None:
        """Stop every watch."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_and_wait(tasks)


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
        self.inet = InetResolver(self.notifier)
        await self.inet.start()
        for nc in self.config.namers:
            namer = build_namer(nc.kind, nc.prefix, nc.options, self.notifier, self.redis)
            await namer.start()
            self.namers.append(namer)
        self.mirror = AddrMirror(self.redis, key_prefix=storage.key_prefix, notifier=self.notifier)
        try:
            await self.mirror.start()
        except Exception as err:  # Redis down at boot: serve from local namers alone
            log.warning("address mirror unavailable, continuing without it: %s", err)
        self.interpreter = Interpreter(self.namers, self.inet, mirror=self.mirror)
        self.dtabs = DtabCache(self.store, self.notifier)

    async def aclose(self) -> None:
        """Release every resource; safe to call after a partial start."""
        self.shutdown.set()
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
