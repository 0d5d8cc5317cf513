"""Addresses of the system namer's ids: ``/$/inet/<host>/<port>`` and ``/$/fixedinet/...``.

*Binding* ``/$/inet/...`` is pure and done by ``shared.names.system_lookup``. Turning the host
into IP addresses is DNS, so it happens here, in the background, in the same style as the
namers: ``addr()`` answers synchronously from a cache, and tasks keep the cache fresh.

Theory of operation
-------------------
* **First ask.** ``addr(id)`` for a host not in the cache returns ``ADDR_PENDING``, and starts a
  task that resolves it with ``loop.getaddrinfo`` (IPv4 and IPv6, TCP). When the answer
  arrives, the task stores it and calls ``notifier.notify()``. namerd never sends ``pending``:
  a request waits for the notification and asks again (docs/namerd-api.md, Addr).
* **Numeric hosts** (``127.0.0.1``, ``::1``) need no DNS; they are answered at once and never
  cached. ``/$/inet/<port>`` (no host) means ``127.0.0.1:<port>``.
* **Refresh.** ``inet`` hosts are resolved again every ``refresh_interval_s`` (default 5 s, as
  Linkerd's ``io.l5d.dnssrv`` ``refreshIntervalSeconds``); the notifier fires only if the
  address set changed. ``fixedinet`` hosts are resolved once and never again (Finagle's
  meaning of "fixed").
* **Idle eviction.** An entry nobody asked about for ``idle_ttl_s`` (default 600 s, Linkerd's
  ``bindingCache.idleTtlSecs``) is dropped and its task stops; that also forgets a
  ``fixedinet`` answer, so a later ask resolves it afresh. Each distinct name otherwise costs
  a task forever: random names from scanners made namerd leak watches (Linkerd issue
  #1766). Eviction notifies, so a watch that still cares asks again at once and restarts the
  refresh; it sees ``pending`` in between, which namerd never sends, so the stream just
  waits for the fresh answer (and drops it as a repeat if nothing changed).
* **Failures.** A name that does not exist (``EAI_NONAME``/``EAI_NODATA``) or cannot be a
  host name at all gives ``AddrFailed`` with the resolver's message, even if it resolved
  before: the name is gone. We chose ``AddrFailed`` over ``ADDR_NEG`` so namerd's answer says
  *why*. A transient failure (``EAI_AGAIN``, a timeout after ``resolve_timeout_s``) keeps the
  last good answer, because dropping every endpoint on a DNS hiccup is worse than routing to
  addresses that were right ``refresh_interval_s`` ago; with no good answer yet, it is
  ``AddrFailed`` too, and the refresh keeps trying.

Resolution goes through an injectable ``getaddrinfo`` callable (default: the event loop's),
as falcon's ``ImageStore(..., fopen=io.open)`` injects stdlib functions; tests use it to point
a name at another real loopback address instead of editing ``/etc/hosts``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from namerd.aio import cancel_and_wait
from namerd.naming.namers.base import Notifier
from shared import ADDR_PENDING, Addr, AddrBound, Address, AddrFailed, Path
from shared.fsformat import parse_ip
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

# getaddrinfo errors that mean "this name does not exist", as opposed to "DNS is unwell".
# EAI_NODATA is missing from the socket module on some platforms (e.g. macOS).
_NAME_GONE_ERRNOS: Final = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


@dataclass(slots=True)
class _Entry:
    """One cached host:port, and the task keeping it fresh."""

    host: str
    port: int
    fixed: bool
    last_asked_s: float
    addr: Addr = ADDR_PENDING
    resolutions: int = 0  # how many times getaddrinfo answered; shown in repr/state
    stale_since_error: bool = False  # serving the last good answer after a transient error
    task: asyncio.Task[None] | None = field(default=None, repr=False)


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
        if refresh_interval_s <= 0 or idle_ttl_s <= 0 or resolve_timeout_s <= 0:
            raise ValueError("refresh_interval_s, idle_ttl_s and resolve_timeout_s must be > 0")
        self.notifier = notifier
        self.refresh_interval_s = refresh_interval_s
        self.idle_ttl_s = idle_ttl_s
        self.resolve_timeout_s = resolve_timeout_s
        self._getaddrinfo = getaddrinfo or _loop_getaddrinfo
        self._entries: dict[tuple[str, int, bool], _Entry] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._entries)} cached"
        return f"<InetResolver [{state}]>"

    async def start(self) -> None:
        """Nothing to load: entries are created on demand. Present for symmetry with Namer."""

    async def close(self) -> None:
        """Cancel every refresh task and forget the cache. Calling it again does nothing."""
        self._closed = True
        entries, self._entries = self._entries, {}
        await cancel_and_wait(e.task for e in entries.values() if e.task is not None)

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
        if (ip := parse_ip(host)) is not None:
            return AddrBound(frozenset({Address(ip, port)}))
        if self._closed:
            return AddrFailed("the inet resolver is closed")
        now = time.monotonic()
        key = (host, port, fixed)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(host, port, fixed, last_asked_s=now)
            self._entries[key] = entry
            entry.task = asyncio.get_running_loop().create_task(
                self._run(key, entry), name=f"inet-resolve {host}:{port}"
            )
        entry.last_asked_s = now
        return entry.addr

    def cached(self) -> dict[str, Addr]:
        """Every cached entry (``host:port`` or ``host:port (fixed)``) and its current answer."""
        return {
            f"{e.host}:{e.port}" + (" (fixed)" if e.fixed else ""): e.addr
            for e in self._entries.values()
        }

    def resolutions(self, host: str, port: int, *, fixed: bool = False) -> int:
        """How many times ``host:port`` was answered by getaddrinfo (0 if not cached)."""
        entry = self._entries.get((host, port, fixed))
        return 0 if entry is None else entry.resolutions

    async def _run(self, key: tuple[str, int, bool], entry: _Entry) -> None:
        try:
            await self._refresh_loop(key, entry)
        except Exception:
            # A bug must not leave the entry pending forever: forget it, so the next ask
            # starts over, and say so loudly.
            log.exception("inet: refreshing %s:%s failed", entry.host, entry.port)
            if self._entries.get(key) is entry:
                del self._entries[key]
                self.notifier.notify()

    async def _refresh_loop(self, key: tuple[str, int, bool], entry: _Entry) -> None:
        while True:
            new = await self._resolve_once(entry)
            entry.resolutions += 1
            if new != entry.addr:
                entry.addr = new
                self.notifier.notify()
            # Sleep one interval at a time so idleness is noticed within an interval even for
            # fixedinet entries, which never re-resolve.
            while True:
                await asyncio.sleep(self.refresh_interval_s)
                if time.monotonic() - entry.last_asked_s > self.idle_ttl_s:
                    if self._entries.get(key) is entry:
                        del self._entries[key]
                        log.debug("inet: %s:%s idle, evicted", entry.host, entry.port)
                        self.notifier.notify()
                    return
                if not entry.fixed:
                    break

    async def _resolve_once(self, entry: _Entry) -> Addr:
        host, port, previous = entry.host, entry.port, entry.addr
        try:
            infos = await asyncio.wait_for(
                self._getaddrinfo(host, port), timeout=self.resolve_timeout_s
            )
        except TimeoutError:
            return self._transient(
                entry, f"resolving host {host!r} timed out after {self.resolve_timeout_s} s"
            )
        except socket.gaierror as exc:
            cause = f"cannot resolve host {host!r}: {exc.strerror} (getaddrinfo error {exc.errno})"
            if exc.errno in _NAME_GONE_ERRNOS:
                return self._failed(entry, cause)
            return self._transient(entry, cause)
        except (UnicodeError, ValueError) as exc:
            # e.g. an empty or over-long DNS label: the idna codec refuses it before any DNS.
            return self._failed(entry, f"invalid host name {host!r}: {exc}")
        except OSError as exc:
            return self._transient(entry, f"cannot resolve host {host!r}: {exc}")
        addrs = frozenset(Address(info[4][0], info[4][1]) for info in infos)
        if not addrs:
            return self._failed(entry, f"host {host!r} has no addresses")
        if isinstance(previous, AddrFailed) or entry.stale_since_error:
            log.info("inet: %s resolves again", host)
        entry.stale_since_error = False
        return AddrBound(addrs)

    def _failed(self, entry: _Entry, cause: str) -> Addr:
        entry.stale_since_error = False
        if entry.addr != AddrFailed(cause):
            log.warning("inet: %s", cause)
        return AddrFailed(cause)

    def _transient(self, entry: _Entry, cause: str) -> Addr:
        if isinstance(entry.addr, AddrBound):
            # Keep serving the last good answer; see "Failures" in the module docstring.
            # Warn once per episode, not on every refresh.
            if not entry.stale_since_error:
                log.warning("inet: %s; keeping the last good addresses", cause)
            entry.stale_since_error = True
            return entry.addr
        return self._failed(entry, cause)


async def _loop_getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    """The default resolver: the running loop's getaddrinfo, TCP, IPv4 and IPv6."""
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
