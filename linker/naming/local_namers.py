"""Namers for the ``default`` interpreter: ``io.l5d.fs`` and ``/$/inet`` addresses, on trio.

A linker without namerd binds names itself (``shared.Binder``) and needs the namers locally.
The binder asks a namer *synchronously* (it is a sans-I/O stepper), so each namer answers from
memory (``lookup(path)``, ``addr(id)``) and background tasks, started by ``run()`` in a nursery
the interpreter owns, keep that memory fresh. Every change bumps a :class:`Changes` counter, so
the interpreter knows when a cached binding may be stale and a waiting request wakes up.

``/$/inet`` (:class:`InetResolver`)
    ``/$/inet/<host>/<port>`` and ``/$/fixedinet/...``. Numeric IPs are answered at once, with
    no DNS. A host name is ``pending`` on first ask and resolved in the background with
    ``trio.socket.getaddrinfo``; ``inet`` names are resolved again every
    ``refresh_interval_s`` (default 5 s, Linkerd's DNS refresh), ``fixedinet`` ones until
    their first good answer (Finagle's meaning of "fixed"). ``/$/inet/<port>`` means
    ``127.0.0.1:<port>``. A name that does not exist is ``AddrFailed`` (it says why, where
    ``neg`` would not); a transient DNS error keeps the last good answer, because dropping
    every endpoint on a DNS hiccup is worse than routing to addresses that were right seconds
    ago. An entry nobody asked about for ``idle_ttl_s`` (default 600 s) is dropped, so names
    seen once do not cost a refresh forever. These rules are ``shared.inet_cache``'s, the
    same namerd's resolver runs; this module only drives them with trio tasks and a timeout
    (``resolve_timeout_s``, default 10 s).

``io.l5d.fs`` (:class:`FsNamer`)
    A directory with one file per service (``rootDir/users`` is ``/#/io.l5d.fs/users``). The
    file format, the directory rules (hidden files, sub-directories and names that are not
    path labels are skipped) and when a file is re-read are ``shared.fsformat``'s, the same
    code namerd's fs namer and the admin's route explainer use, so a service resolves the
    same with or without namerd. Here: the directory is scanned every ``poll_interval_s``
    (default 1 s) in a worker thread (``stat`` is portable, and inotify misses network file
    systems); a bad file name is warned about once per appearance; host names are resolved
    through the :class:`InetResolver`; a directory that vanishes keeps the last-known
    services until it is back.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, Final

import trio

from shared import (
    Addr,
    AddrBound,
    AddrFailed,
    DtabParseError,
    Name,
    NameTree,
    Path,
)
from shared.fsformat import BAD_NAME_REASON, FsDirectory, FsScan
from shared.inet_cache import (
    InetCache,
    InetKey,
    inet_outcome,
)
from shared.names import inet_addr

__all__ = [
    "DEFAULT_FS_POLL_INTERVAL_S",
    "DEFAULT_IDLE_TTL_S",
    "DEFAULT_INET_REFRESH_INTERVAL_S",
    "DEFAULT_RESOLVE_TIMEOUT_S",
    "FS_CONFIG_KEYS",
    "Changes",
    "FsNamer",
    "FsNamerSettings",
    "InetResolver",
    "NamerConfigError",
    "fs_namer_from_config",
    "fs_namer_settings",
    "namer_prefix",
]

log = logging.getLogger("linker.namers")

#: How often ``io.l5d.fs`` lists its directory (config ``pollIntervalSecs``).
DEFAULT_FS_POLL_INTERVAL_S: Final = 1.0
#: How often an ``inet`` host name is resolved again.
DEFAULT_INET_REFRESH_INTERVAL_S: Final = 5.0
#: A resolver entry nobody asked about for this long is dropped (Linkerd's binding cache TTL).
DEFAULT_IDLE_TTL_S: Final = 600.0
#: The longest wait for one ``getaddrinfo`` answer.
DEFAULT_RESOLVE_TIMEOUT_S: Final = 10.0

GetAddrInfo = Callable[[str, int], Awaitable[list[tuple[Any, ...]]]]


class NamerConfigError(ValueError):
    """A namer config block is wrong, or its ``rootDir`` cannot be listed at start."""


class Changes:
    """A generation counter with a wake-up: "something a binding depends on changed".

    Single trio thread, so no locks: ``notify()`` bumps :attr:`generation` and wakes every
    :meth:`wait_changed` waiter. A cached result remembers the generation it was made at.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._event = trio.Event()

    def notify(self) -> None:
        """Record a change and wake the waiters."""
        self.generation += 1
        self._event.set()
        self._event = trio.Event()

    async def wait_changed(self, since: int) -> None:
        """Return once :attr:`generation` differs from ``since`` (at once if it already does)."""
        while self.generation == since:
            await self._event.wait()


# -- /$/inet ------------------------------------------------------------------------------------


async def _default_getaddrinfo(host: str, port: int) -> list[tuple[Any, ...]]:
    return list(await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


class InetResolver:
    """Addresses of ``/$/inet`` and ``/$/fixedinet`` ids, answered from memory.

    The cache's rules are ``shared.inet_cache``'s (namerd runs the same); this is their trio
    driver: :meth:`run` polls the cache when it is due, when a new name is asked and when a
    resolution ends, and starts one task per due name in its nursery.

    Args:
        changes: notified whenever an answer changes or an entry is dropped.
        refresh_interval_s: how often ``inet`` names are resolved again. Default 5 s.
        idle_ttl_s: drop entries nobody asked about for this long. Default 600 s.
        resolve_timeout_s: the longest wait for one ``getaddrinfo``. Default 10 s.
        getaddrinfo: ``(host, port) -> getaddrinfo tuples``; default ``trio.socket``'s, TCP.
            Injectable so tests can make DNS slow or fail without touching the system.

    Raises:
        ValueError: an interval that is not > 0.
    """

    def __init__(
        self,
        changes: Changes,
        *,
        refresh_interval_s: float = DEFAULT_INET_REFRESH_INTERVAL_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S,
        getaddrinfo: GetAddrInfo | None = None,
    ) -> None:
        self._cache = InetCache(
            refresh_interval_s=refresh_interval_s,
            idle_ttl_s=idle_ttl_s,
            resolve_timeout_s=resolve_timeout_s,
        )
        self.changes = changes
        self.refresh_interval_s = refresh_interval_s
        self.idle_ttl_s = idle_ttl_s
        self.resolve_timeout_s = resolve_timeout_s
        self._getaddrinfo = getaddrinfo or _default_getaddrinfo
        self._wake = trio.Event()

    # -- answering ------------------------------------------------------------------------------
    def addr(self, id: Path) -> Addr:
        """The addresses of ``/$/inet/<host>/<port>`` (or ``/<port>``, or ``fixedinet``).

        Any other id is ``neg``; a malformed inet id (bad port, host not UTF-8) is
        ``AddrFailed`` saying why.
        """
        return inet_addr(id, lambda host, port, fixed: self.resolve(host, port, fixed=fixed))

    def resolve(self, host: str, port: int, *, fixed: bool = False) -> Addr:
        """``host:port`` as an Addr: at once for an IP, else from the cache (``pending`` first).

        Asking marks the entry as used, which keeps it (and its refresh) alive. A name asked
        before :meth:`run` began is resolved once it does.
        """
        answer = self._cache.ask(host, port, fixed, trio.current_time())
        if answer.new:
            self._wake.set()
        return answer.addr

    # -- background -----------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resolve and refresh names until cancelled."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                due = self._cache.poll(trio.current_time())
                for key in due.resolve:
                    nursery.start_soon(self._resolve, key)
                if due.evicted:
                    # A binding that still cares asks again and re-creates the entry.
                    self.changes.notify()
                with trio.move_on_at(math.inf if due.next_poll_s is None else due.next_poll_s):
                    await self._wake.wait()

    async def _resolve(self, key: InetKey) -> None:
        host, port, _ = key
        got: list[tuple[Any, ...]] | BaseException
        try:
            with trio.fail_after(self.resolve_timeout_s):
                got = await self._getaddrinfo(host, port)
        except trio.TooSlowError:
            got = TimeoutError()
        except Exception as exc:  # every failure, bugs included, is the cache's to judge
            got = exc
        outcome = inet_outcome(host, port, got, self.resolve_timeout_s)
        result = self._cache.resolved(key, trio.current_time(), outcome)
        for level, message in result.logs:
            log.log(level, "inet: %s", message)
        if result.changed:
            self.changes.notify()
        self._wake.set()

    def state(self) -> dict[str, Any]:
        """What is cached, for admin and metrics."""
        return {
            "entries": [
                {
                    "id": f"/$/{'fixedinet' if e.fixed else 'inet'}/{e.host}/{e.port}",
                    "addr": _addr_summary(e.addr),
                    "resolutions": e.resolutions,
                    "last_error": e.last_error,
                }
                for e in self._cache.entries()
            ]
        }


def _addr_summary(addr: Addr) -> str:
    if isinstance(addr, AddrBound):
        return " ".join(f"{a.ip}:{a.port}" for a in addr.sorted_addrs()) or "(no endpoints)"
    if isinstance(addr, AddrFailed):
        return f"failed: {addr.cause}"
    return repr(addr)


# -- io.l5d.fs ----------------------------------------------------------------------------------


class FsNamer:
    """``io.l5d.fs``, mounted at ``prefix`` (``/#/io.l5d.fs``); see the module docstring.

    Args:
        prefix: where the namer is mounted, e.g. ``/#/io.l5d.fs``.
        root_dir: the directory of service files (config ``rootDir``).
        changes: notified when a service appears, disappears or changes.
        resolver: resolves host names written in the files.
        poll_interval_s: how often the directory is checked. Default 1 s.
    """

    kind: Final = "io.l5d.fs"

    def __init__(
        self,
        prefix: Path,
        root_dir: str | os.PathLike[str],
        changes: Changes,
        resolver: InetResolver,
        *,
        poll_interval_s: float = DEFAULT_FS_POLL_INTERVAL_S,
    ) -> None:
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s!r}")
        self.prefix = prefix
        self.root_dir = FsPath(root_dir)
        self.changes = changes
        self.resolver = resolver
        self.poll_interval_s = poll_interval_s
        self._dir = FsDirectory(self.root_dir)
        self._dir_missing = False
        self.scans = 0
        self.last_scan_at: float | None = None  # wall clock, for admin pages

    def lookup(self, path: Path) -> NameTree[Name]:
        """``/<service>/rest`` -> ``Leaf(Bound(prefix/<service>, /rest))`` if the file exists."""
        return self._dir.lookup(self.prefix, path)

    def addr(self, id: Path) -> Addr:
        """The endpoints of ``prefix/<service>``: ``neg`` if no such file, else its addresses."""
        return self._dir.addr(self.prefix, id, self.resolver.resolve)

    async def start(self) -> None:
        """Read the directory once (the services are known when this returns).

        Raises:
            NamerConfigError: the directory cannot be listed (a config mistake we want to
                see at once, not as 502s later).
        """
        try:
            scan = await trio.to_thread.run_sync(self._dir.scan, time.time_ns())
        except OSError as err:
            raise NamerConfigError(
                f"namer {self.kind}: rootDir {os.fspath(self.root_dir)!r} cannot be listed: "
                f"{err.strerror or err}; it must be an existing directory"
            ) from err
        self._apply(scan)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """:meth:`start` unless already done, report started, then poll until cancelled.

        Raises:
            NamerConfigError: see :meth:`start`.
        """
        if self.scans == 0:
            await self.start()
        task_status.started()
        while True:
            await trio.sleep(self.poll_interval_s)
            try:
                scan = await trio.to_thread.run_sync(self._dir.scan, time.time_ns())
            except OSError as err:
                if not self._dir_missing:
                    self._dir_missing = True
                    log.warning(
                        "%s: cannot list %s (%s); keeping the last-known services",
                        self.kind,
                        self.root_dir,
                        err.strerror or err,
                    )
                continue
            if self._dir_missing:
                self._dir_missing = False
                log.info("%s: %s is back", self.kind, self.root_dir)
            self._apply(scan)

    def _apply(self, scan: FsScan) -> None:
        changed, new_bad_names = self._dir.apply(scan)
        for name in new_bad_names:
            log.warning("%s: ignoring %s: %s", self.kind, self.root_dir / name, BAD_NAME_REASON)
        self.scans += 1
        self.last_scan_at = time.time()
        if changed:
            self.changes.notify()

    def state(self) -> dict[str, Any]:
        """Services and scan status, for admin and metrics."""
        return {
            "kind": self.kind,
            "prefix": self.prefix.show(),
            "rootDir": os.fspath(self.root_dir),
            "dir_missing": self._dir_missing,
            "scans": self.scans,
            "last_scan_at": self.last_scan_at,
            "services": {
                label.decode("utf-8", "backslashreplace"): (
                    _addr_summary(svc.fixed)
                    if svc.fixed is not None
                    else "host names: " + " ".join(f"{e.host}:{e.port}" for e in svc.endpoints)
                )
                for label, svc in sorted(self._dir.services.items())
            },
        }


#: Keys an ``io.l5d.fs`` namer config may have (Linkerd's plus namerd's ``pollIntervalSecs``).
FS_CONFIG_KEYS: Final = frozenset({"kind", "prefix", "rootDir", "pollIntervalSecs"})


def namer_prefix(kind: str, value: Any) -> Path:
    """Where a namer is mounted: ``/#`` + its ``prefix`` (default ``/<kind>``).

    Linkerd writes ``prefix: /disco``; ``disco`` and ``/#/disco`` are accepted too.
    """
    text = f"/{kind}" if value is None else value
    if not isinstance(text, str) or not text:
        raise NamerConfigError(f"namer {kind}: prefix must be a path such as /disco, got {value!r}")
    if not text.startswith("/"):
        text = "/" + text
    try:
        path = Path.read(text)
    except DtabParseError as err:
        raise NamerConfigError(f"namer {kind}: prefix {text!r} is not a path: {err}") from err
    if path.is_empty:
        raise NamerConfigError(f"namer {kind}: prefix must not be empty")
    return path if path[0] == b"#" else Path("#") + path


@dataclass(frozen=True, slots=True)
class FsNamerSettings:
    """An ``io.l5d.fs`` namer's config, checked: where it is mounted, its directory, its poll."""

    prefix: Path
    root_dir: str
    poll_interval_s: float = DEFAULT_FS_POLL_INTERVAL_S


def fs_namer_settings(config: Mapping[str, Any]) -> FsNamerSettings:
    """Check ``{kind, prefix, rootDir, pollIntervalSecs}`` (the namer's and the explainer's).

    Raises:
        NamerConfigError: a missing ``rootDir``, an unknown key, a bad prefix or interval.
    """
    kind = "io.l5d.fs"
    unknown = sorted(set(config) - FS_CONFIG_KEYS)
    if unknown:
        allowed = ", ".join(sorted(FS_CONFIG_KEYS))
        raise NamerConfigError(f"namer {kind}: unknown key {unknown[0]!r} (allowed: {allowed})")
    root = config.get("rootDir")
    if not isinstance(root, str) or not root:
        raise NamerConfigError(f"namer {kind}: rootDir is required, got {root!r}")
    poll = config.get("pollIntervalSecs", DEFAULT_FS_POLL_INTERVAL_S)
    if isinstance(poll, bool) or not isinstance(poll, int | float) or not poll > 0:
        raise NamerConfigError(f"namer {kind}: pollIntervalSecs must be a number > 0, got {poll!r}")
    return FsNamerSettings(namer_prefix(kind, config.get("prefix")), root, float(poll))


def fs_namer_from_config(
    config: Mapping[str, Any], changes: Changes, resolver: InetResolver
) -> FsNamer:
    """Build an ``io.l5d.fs`` namer from ``{kind, prefix, rootDir, pollIntervalSecs}``.

    Raises:
        NamerConfigError: see :func:`fs_namer_settings`.
    """
    settings = fs_namer_settings(config)
    return FsNamer(
        settings.prefix,
        settings.root_dir,
        changes,
        resolver,
        poll_interval_s=settings.poll_interval_s,
    )
