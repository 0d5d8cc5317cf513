"""``io.l5d.fs``: one file per service in a directory, watched live.

The file format (``host port [* weight]`` per line), the directory rules (hidden files,
sub-directories and names that are not path labels are skipped; symlinks are followed) and
when a file is re-read (its stat signature changed, or it was modified too recently to trust
the signature) are ``shared.fsformat``'s: the linker's own fs namer and its admin's route
explainer use the same code, so a service resolves the same with or without namerd. A file
that does not parse makes *that service's* addr ``AddrFailed`` naming file and line; the service
still binds, so the operator sees the error instead of a silent fallback. A file whose name is
not a path label is warned about once each time it appears.

Host names
----------
Linkerd resolves host names in these files too, so we do: an IP literal is used as is, and a
name is resolved in the background by an :class:`~namerd.naming.namers.inet.InetResolver` (the
process's, if one is passed, or a private one), and re-resolved every 5 s. Until every name of a
service has a first answer, its addr is ``pending`` (namerd waits). A name that cannot be
resolved is left out, with its cause logged by the resolver; only if *no* address resolves does
the addr become ``AddrFailed`` (naming file, line and cause). Dropping an unresolvable entry is
Linkerd's behaviour too: it only renders addresses with a resolved IP (docs/namerd-api.md, Addr).

Watching
--------
Every ``poll_interval_s`` (default 1 s) a thread scans the directory
(``shared.fsformat.scan_service_dir``: stdlib only; no inotify, which is Linux-only and misses
changes on network file systems). The notifier fires only when a parsed service changed, not
when a file was merely touched or a comment edited.

If ``rootDir`` is missing at ``start()``, that is a configuration error. If it vanishes later
(an unmounted volume), the last-known services are kept, with one warning, until it returns.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import Any, ClassVar, Final

from namerd.naming.namers.base import Namer, NamerConfigError, Notifier, config_interval_s
from namerd.naming.namers.inet import InetResolver
from shared import Addr, Bound, NameTree, Path
from shared.fsformat import (
    BAD_NAME_REASON,
    FsDirectory,
    FsScan,
)

__all__ = ["DEFAULT_POLL_INTERVAL_S", "FsNamer"]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_S: Final = 1.0


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
        self._dir = FsDirectory(self.root_dir)
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
            scan = await asyncio.to_thread(self._dir.scan, time.time_ns())
        except OSError as exc:
            raise NamerConfigError(
                f"namer {self.kind}: rootDir {os.fspath(self.root_dir)!r} cannot be listed: "
                f"{exc.strerror or exc}; it must be an existing directory"
            ) from exc
        self._apply(scan)
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
        return self._dir.lookup(self.prefix, path)

    def addr(self, id: Path) -> Addr:
        """The endpoints of ``prefix/<service>``; see the module docstring for the rules."""
        return self._dir.addr(self.prefix, id, self._resolver.resolve)

    def enumerate(self) -> list[Path]:
        """Every service file, as bound ids, sorted."""
        return sorted(self.prefix + Path(label) for label in self._dir.services)

    def _apply(self, scan: FsScan) -> None:
        changed, new_bad_names = self._dir.apply(scan)
        for name in new_bad_names:
            log.warning("%s: ignoring %s: %s", self.kind, self.root_dir / name, BAD_NAME_REASON)
        if changed:
            self.notifier.notify()

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                scan = await asyncio.to_thread(self._dir.scan, time.time_ns())
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
            self._apply(scan)
