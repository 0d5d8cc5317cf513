"""``io.l5d.fs``: one file per service in a directory, watched live.

File format (Linkerd's)
-----------------------
Each file in ``rootDir`` is one service, named by the file name: ``rootDir/users`` is bound as
``/#/io.l5d.fs/users``. Each line is an endpoint::

    # comments and blank lines are ignored
    10.0.0.1 8080
    10.0.0.2 8080 * 0.5          <- weight 0.5, put in Address.meta["endpoint_addr_weight"]
    backend.internal 8080        <- a host name, resolved with the InetResolver (see below)

A line that does not parse makes *that service's* addr ``AddrFailed`` with a message naming the
file and line number. The rest of the directory keeps working, and so does binding the service,
so the operator sees the error instead of a silent fallback to another dtab branch. An empty
file (or one with only comments) is a service with no endpoints: ``bound`` with no addresses.

A file whose name is not a valid path label (``0-9 A-Z a-z _ : . # $ % -``; e.g. ``a b`` or
``users~``) cannot be named by a path, so it is ignored, with one warning. Hidden files (a
leading ``.``) are ignored silently, although ``.`` is a label character: editors and atomic
writers (write ``.users.tmp``, rename it to ``users``) use them as scratch files, and a service
must not flicker into existence because of one. Subdirectories are ignored. Symlinks are
followed, so a Kubernetes ConfigMap volume (files are symlinks through ``..data``) works.

Host names
----------
Linkerd resolves host names in these files too, so we do: an IP literal is used as is, and a
name is resolved in the background by an :class:`~namerd.namers.inet.InetResolver` (the
process's, if one is passed, or a private one), and re-resolved every 5 s. Until every name of a
service has a first answer, its addr is ``pending`` (namerd waits). A name that cannot be
resolved is left out, with its cause logged by the resolver; only if *no* address resolves does
the addr become ``AddrFailed`` (naming file, line and cause). Dropping an unresolvable entry is
Linkerd's behaviour too: it only renders addresses with a resolved IP (namerd-api.md §2.6).

Watching
--------
Every ``poll_interval_s`` (default 1 s) a thread lists the directory and stats each file
(stdlib only; no inotify, which is Linux-only and misses changes on network file systems). A
file is read again only if its signature (inode, size, mtime, ctime) changed. An atomic
rename-into-place changes the inode, an ordinary write changes size or mtime.

One hole remains: a rewrite with the same size, inside the file system's mtime granularity
(2 s on FAT, 1 s on ext3/HFS+), keeps the signature. As git does for its index ("racily clean"
entries), a file whose mtime was within ``_RACY_WINDOW_NS`` of the moment we read it is read
again on every poll until it is older than that. The notifier fires only when a parsed service
changed, not when a file was merely touched or a comment edited.

If ``rootDir`` is missing at ``start()``, that is a configuration error. If it vanishes later
(an unmounted volume), the last-known services are kept, with one warning, until it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, ClassVar, Final

from namerd.naming.namers.base import Namer, NamerConfigError, Notifier, config_interval_s
from namerd.naming.namers.inet import InetResolver
from shared import (
    ADDR_NEG,
    ADDR_PENDING,
    NEG,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    Bound,
    Leaf,
    NameTree,
    Path,
)
from shared.fsformat import (
    WEIGHT_META_KEY,
    FsEndpoint,
    FsFileError,
    parse_endpoints,
)
from shared.path import show_label

__all__ = [
    "DEFAULT_POLL_INTERVAL_S",
    "WEIGHT_META_KEY",
    "FsEndpoint",
    "FsFileError",
    "FsNamer",
    "parse_endpoints",
]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S: Final = 1.0

#: Finagle's ``WeightedAddress.weightKey``: the balancer multiplies load by it.

# The coarsest mtime granularity we expect (FAT); see "Watching" in the module docstring.
_RACY_WINDOW_NS: Final = 2_000_000_000


@dataclass(frozen=True, slots=True)
class _Service:
    """A parsed service file. ``fixed`` is its addr when it needs no DNS (or failed)."""

    source: str
    endpoints: tuple[FsEndpoint, ...]
    fixed: Addr | None


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the poller knows about one file."""

    signature: tuple[int, int, int, int]
    racy: bool  # modified within _RACY_WINDOW_NS of our read: read it again next poll
    service: _Service


def _load(path: str) -> _Service:
    """Read and parse one file; any problem becomes that service's AddrFailed."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return _Service(path, (), AddrFailed(f"{path}: cannot read: {exc.strerror or exc}"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return _Service(path, (), AddrFailed(f"{path}:{line}: not UTF-8 text"))
    try:
        endpoints = tuple(parse_endpoints(text, path))
    except FsFileError as exc:
        return _Service(path, (), AddrFailed(str(exc)))
    if all(e.ip is not None for e in endpoints):
        addrs = frozenset(Address(e.ip or e.host, e.port, e.meta) for e in endpoints)
        return _Service(path, endpoints, AddrBound(addrs))
    return _Service(path, endpoints, None)


class FsNamer(Namer):
    """``io.l5d.fs``: services are the files of ``root_dir``; see the module docstring.

    Args:
        prefix: mount point, default ``/#/io.l5d.fs``.
        notifier: fired when a service appears, disappears or changes.
        root_dir: the directory (config key ``rootDir``).
        poll_interval_s: how often the directory is checked (config ``pollIntervalSecs``).
            Default 1 s.
        resolver: resolves host names in files. Default: a private InetResolver started
            and closed with the namer.
    """

    kind: ClassVar[str] = "io.l5d.fs"
    config_keys: ClassVar[frozenset[str]] = frozenset({"rootDir", "pollIntervalSecs"})

    def __init__(
        self,
        prefix: Path,
        notifier: Notifier,
        *,
        root_dir: str | os.PathLike[str],
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        resolver: InetResolver | None = None,
    ) -> None:
        super().__init__(prefix, notifier)
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be > 0")
        self.root_dir = FsPath(root_dir)
        self.poll_interval_s = poll_interval_s
        self._owns_resolver = resolver is None
        self._resolver = resolver if resolver is not None else InetResolver(notifier)
        self._seen: dict[str, _Seen] = {}
        self._services: dict[bytes, _Service] = {}
        self._warned_names: set[str] = set()  # touched only by the poll thread
        self._dir_missing = False

    @classmethod
    def from_config(
        cls,
        prefix: Path,
        config: Mapping[str, Any],
        notifier: Notifier,
        redis_client: Any,
    ) -> FsNamer:
        """``rootDir`` (required) and ``pollIntervalSecs`` (default 1)."""
        root = config.get("rootDir")
        if not isinstance(root, str) or not root:
            raise NamerConfigError(
                f"namer {cls.kind}: rootDir is required and must be a directory path, got {root!r}"
            )
        return cls(
            prefix,
            notifier,
            root_dir=root,
            poll_interval_s=config_interval_s(
                cls.kind, config, "pollIntervalSecs", DEFAULT_POLL_INTERVAL_S
            ),
        )

    async def start(self) -> None:
        """Read every service file, then start polling.

        Raises:
            NamerConfigError: ``root_dir`` does not exist, is not a directory, or cannot be
                listed.
        """
        try:
            seen = await asyncio.to_thread(self._scan, {})
        except OSError as exc:
            raise NamerConfigError(
                f"namer {self.kind}: rootDir {os.fspath(self.root_dir)!r} cannot be listed: "
                f"{exc.strerror or exc}; it must be an existing directory"
            ) from exc
        self._apply(seen)
        if self._owns_resolver:
            await self._resolver.start()
        self._spawn(self._poll_loop(), name=f"fs-poll {self.prefix.show()}")

    async def close(self) -> None:
        """Stop polling (and the private resolver). Calling it again does nothing."""
        await super().close()
        if self._owns_resolver:
            await self._resolver.close()

    def lookup(self, path: Path) -> NameTree[Path | Bound]:
        """``/<service>/rest`` -> ``Leaf(Bound(prefix/<service>, /rest))`` if the file exists."""
        if path.is_empty or path[0] not in self._services:
            return NEG
        return Leaf(Bound(self.prefix + path.take(1), path.drop(1)))

    def addr(self, id: Path) -> Addr:
        """The endpoints of ``prefix/<service>``; see the module docstring for the rules."""
        label = self._label_under_prefix(id)
        service = None if label is None else self._services.get(label)
        if service is None:
            return ADDR_NEG
        if service.fixed is not None:
            return service.fixed
        return self._resolve(service)

    def enumerate(self) -> list[Path]:
        """Every service file, as bound ids, sorted."""
        return sorted(self.prefix + Path(label) for label in self._services)

    def _resolve(self, service: _Service) -> Addr:
        addrs: dict[tuple[str, int], Address] = {}
        failures: list[str] = []
        pending = False
        for e in service.endpoints:
            answer = self._resolver.resolve(e.host, e.port)
            if isinstance(answer, AddrBound):
                for a in answer.sorted_addrs():
                    # Two lines may resolve to one address; the first line wins.
                    addrs.setdefault((a.ip, a.port), Address(a.ip, a.port, e.meta))
            elif answer is ADDR_PENDING:
                pending = True
            elif isinstance(answer, AddrFailed):
                failures.append(f"{service.source}:{e.line}: {answer.cause}")
            else:
                failures.append(f"{service.source}:{e.line}: host {e.host!r} not found")
        if pending:
            return ADDR_PENDING
        if not addrs and failures:
            return AddrFailed("; ".join(failures))
        return AddrBound(frozenset(addrs.values()))

    def _apply(self, seen: dict[str, _Seen]) -> None:
        services = {os.fsencode(name): s.service for name, s in seen.items()}
        self._seen = seen
        if services != self._services:
            self._services = services
            self.notifier.notify()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                seen = await asyncio.to_thread(self._scan, self._seen)
            except OSError as exc:
                if not self._dir_missing:
                    self._dir_missing = True
                    log.warning(
                        "%s: cannot list rootDir %s (%s); serving the last-known services "
                        "until it is back",
                        self.kind,
                        self.root_dir,
                        exc.strerror or exc,
                    )
                continue
            if self._dir_missing:
                self._dir_missing = False
                log.info("%s: rootDir %s is back", self.kind, self.root_dir)
            self._apply(seen)

    def _scan(self, previous: Mapping[str, _Seen]) -> dict[str, _Seen]:
        """List the directory and re-read changed files. Runs in a worker thread.

        Raises:
            OSError: the directory cannot be listed.
        """
        seen: dict[str, _Seen] = {}
        names: set[str] = set()
        with os.scandir(self.root_dir) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue  # scratch files; see "File format" in the module docstring
                try:
                    if not entry.is_file():  # follows symlinks; skips dirs such as ..data
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # removed while we were listing
                names.add(name)
                if show_label(os.fsencode(name)) != name:
                    if name not in self._warned_names:
                        self._warned_names.add(name)
                        log.warning(
                            "%s: ignoring %s: a file name must be a path label "
                            "(only 0-9 A-Z a-z _ : . # $ %% -)",
                            self.kind,
                            entry.path,
                        )
                    continue
                signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                old = previous.get(name)
                if old is not None and old.signature == signature and not old.racy:
                    seen[name] = old
                    continue
                read_at_ns = time.time_ns()
                service = _load(entry.path)
                if old is not None and old.service == service:
                    service = old.service  # keep identity; nothing changed
                racy = st.st_mtime_ns >= read_at_ns - _RACY_WINDOW_NS
                seen[name] = _Seen(signature, racy, service)
        self._warned_names &= names  # warn again if a bad name disappears and comes back
        return seen
