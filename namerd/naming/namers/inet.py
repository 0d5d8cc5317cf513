"""Addresses of the system namer's ids: ``/$/inet/<host>/<port>`` and ``/$/fixedinet/...``.

*Binding* ``/$/inet/...`` is pure and done by ``shared.names.system_lookup``. Turning the host
into IP addresses is DNS, so it happens here, in the background, in the same style as the
namers: ``addr()`` answers synchronously from a cache, and tasks keep the cache fresh.

The cache's rules (numeric hosts answered at once, ``pending`` on first ask, refresh every
``refresh_interval_s`` for ``inet`` and until one good answer for ``fixedinet``, eviction after
``idle_ttl_s`` unasked, which getaddrinfo errors fail a name and which keep the last good
answer) are ``shared.inet_cache``'s, the same the linker's local resolver runs. This module is
its asyncio driver:

* A **ticker** task (created on the first ask of a host name) polls the cache whenever it is
  due, whenever a new name is asked and whenever a resolution ends; it starts one task per
  due name and calls ``notifier.notify()`` when entries are evicted.
* A **resolution** task calls ``getaddrinfo`` (IPv4 and IPv6, TCP) under ``asyncio.wait_for``
  with ``resolve_timeout_s``, hands the outcome to the cache and notifies if the answer
  changed. namerd never sends ``pending``: a request waits for the notification and asks
  again (docs/namerd-api.md, Addr). Eviction notifies too, so a watch that still cares asks
  again at once; it sees ``pending`` in between, which namerd never sends, so the stream just
  waits for the fresh answer (and drops it as a repeat if nothing changed).
* What to log (a failure once per episode, a recovery, a bug's traceback) is decided by the
  cache and written here.

Defaults: ``refresh_interval_s`` 5 s (Linkerd's ``io.l5d.dnssrv`` ``refreshIntervalSeconds``),
``idle_ttl_s`` 600 s (Linkerd's ``bindingCache.idleTtlSecs``), ``resolve_timeout_s`` 10 s.

Resolution goes through an injectable ``getaddrinfo`` callable (default: the event loop's),
as falcon's ``ImageStore(..., fopen=io.open)`` injects stdlib functions; tests use it to point
a name at another real loopback address instead of editing ``/etc/hosts``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Final

from namerd.aio import cancel_and_wait
from namerd.naming.namers.base import Notifier
from shared import Addr, AddrFailed, Path
from shared.fsformat import parse_ip
from shared.inet_cache import (
    InetCache,
    InetKey,
    inet_outcome,
)
from shared.names import inet_addr

__all__ = [
    "DEFAULT_IDLE_TTL_S",
    "DEFAULT_REFRESH_INTERVAL_S",
    "DEFAULT_RESOLVE_TIMEOUT_S",
    "GetAddrInfo",
    "InetResolver",
]

log = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL_S: Final = 5.0
DEFAULT_IDLE_TTL_S: Final = 600.0
DEFAULT_RESOLVE_TIMEOUT_S: Final = 10.0

#: ``getaddrinfo(host, port)`` returning ``socket.getaddrinfo``-shaped tuples.
GetAddrInfo = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]


class InetResolver:
    """Resolve ``/$/inet`` and ``/$/fixedinet`` ids in the background; answer from a cache.

    Args:
        notifier: fired when a cached answer changes or an entry is evicted.
        refresh_interval_s: how often ``inet`` hosts are resolved again. Default 5 s.
        idle_ttl_s: drop entries nobody asked about for this long. Default 600 s.
        resolve_timeout_s: the longest wait for one ``getaddrinfo``. Default 10 s. (The
            stdlib resolver thread cannot be cancelled; we only stop waiting for it.)
        getaddrinfo: the resolver function. Default: the running loop's ``getaddrinfo``,
            asking for TCP addresses of any family.

    Raises:
        ValueError: an interval that is not > 0.
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self._cache = InetCache(
            refresh_interval_s=refresh_interval_s,
            idle_ttl_s=idle_ttl_s,
            resolve_timeout_s=resolve_timeout_s,
        )
        self.notifier = notifier
        self.refresh_interval_s = refresh_interval_s
        self.idle_ttl_s = idle_ttl_s
        self.resolve_timeout_s = resolve_timeout_s
        self._getaddrinfo = getaddrinfo or _loop_getaddrinfo
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._resolving: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._cache)} cached"
        return f"<InetResolver [{state}]>"

    async def start(self) -> None:
        """Nothing to load: entries are created on demand. Present for symmetry with Namer."""

    async def close(self) -> None:
        """Cancel the ticker and every resolution and forget the cache. Idempotent."""
        self._closed = True
        tasks = [*self._resolving, *([self._ticker] if self._ticker is not None else [])]
        self._ticker = None
        self._resolving.clear()
        self._cache.clear()
        await cancel_and_wait(tasks)

    def addr(self, id: Path) -> Addr:
        """The addresses of ``/$/inet/[<host>/]<port>`` or ``/$/fixedinet/...``.

        Returns:
            ``AddrBound`` (numeric hosts at once; names once resolved), ``ADDR_PENDING`` while a
            name is being resolved for the first time, ``AddrFailed`` with the cause, or
            ``ADDR_NEG`` for an id that is not an inet id at all.
        """
        return inet_addr(id, lambda host, port, fixed: self.resolve(host, port, fixed=fixed))

    def resolve(self, host: str, port: int, *, fixed: bool = False) -> Addr:
        """The cached addresses of ``host:port``, starting a resolution on the first ask.

        This is ``addr()`` without the path syntax; the fs namer uses it for host names in its
        files. Must be called on the event loop thread (it may create a task).
        """
        if self._closed and parse_ip(host) is None:
            return AddrFailed("the inet resolver is closed")
        loop = asyncio.get_running_loop()
        answer = self._cache.ask(host, port, fixed, loop.time())
        if answer.new:
            if self._ticker is None:
                self._ticker = loop.create_task(self._tick(), name="inet-resolver ticker")
            self._wake.set()
        return answer.addr

    def cached(self) -> dict[str, Addr]:
        """Every cached entry (``host:port`` or ``host:port (fixed)``) and its current answer."""
        return {
            f"{e.host}:{e.port}" + (" (fixed)" if e.fixed else ""): e.addr
            for e in self._cache.entries()
        }

    def resolutions(self, host: str, port: int, *, fixed: bool = False) -> int:
        """How many times resolving ``host:port`` ended (0 if not cached)."""
        entry = self._cache.get(host, port, fixed)
        return 0 if entry is None else entry.resolutions

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            due = self._cache.poll(loop.time())
            for key in due.resolve:
                task = loop.create_task(self._resolve(key), name=f"inet-resolve {key[0]}:{key[1]}")
                self._resolving.add(task)
                task.add_done_callback(self._resolving.discard)
            if due.evicted:
                log.debug("inet: evicted idle %s", ", ".join(f"{h}:{p}" for h, p, _ in due.evicted))
                self.notifier.notify()
            timeout = None if due.next_poll_s is None else max(0.0, due.next_poll_s - loop.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _resolve(self, key: InetKey) -> None:
        host, port, _ = key
        call = self._getaddrinfo(host, port)
        got: list[tuple[Any, ...]] | BaseException
        try:
            got = await asyncio.wait_for(call, timeout=self.resolve_timeout_s)
        except Exception as exc:  # TimeoutError too: every failure is the cache's to judge
            got = exc
        outcome = inet_outcome(host, port, got, self.resolve_timeout_s)
        done = self._cache.resolved(key, asyncio.get_running_loop().time(), outcome)
        for level, message in done.logs:
            log.log(level, "inet: %s", message)
        if done.changed:
            self.notifier.notify()
        self._wake.set()


async def _loop_getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The default resolver: the running loop's getaddrinfo, TCP, IPv4 and IPv6."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
