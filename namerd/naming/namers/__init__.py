"""namerd's namers: in-memory views of service discovery, kept fresh in the background.

See ``base.py`` for the contract (synchronous answers from memory, one shared Notifier).

=====================  ==========================  =========================================
kind                   class                       config keys (besides ``kind``/``prefix``)
=====================  ==========================  =========================================
``io.l5d.fs``          :class:`FsNamer`            ``rootDir`` (required), ``pollIntervalSecs``
``io.l5d.registry``    :class:`RegistryNamer`      ``keyPrefix``, ``sweepIntervalSecs``
=====================  ==========================  =========================================

Also here: :class:`InetResolver` (addresses of the system namer's ``/$/inet`` ids) and
:class:`AddrMirror` (resolved address sets shared through Redis by all replicas).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from namerd.naming.namers.addr_mirror import AddrMirror
from namerd.naming.namers.base import (
    Namer,
    NamerConfigError,
    NamerError,
    NamerUnavailable,
    Notifier,
    NotRegistered,
)
from namerd.naming.namers.fs import FsNamer
from namerd.naming.namers.inet import InetResolver
from namerd.naming.namers.registry import RegistryNamer
from shared import Path

__all__ = [
    "NAMER_KINDS",
    "AddrMirror",
    "FsNamer",
    "InetResolver",
    "Namer",
    "NamerConfigError",
    "NamerError",
    "NamerUnavailable",
    "NotRegistered",
    "Notifier",
    "RegistryNamer",
    "build_namer",
]

#: Every namer kind this namerd knows, by its config ``kind``.
NAMER_KINDS: Final[Mapping[str, type[Namer]]] = {
    FsNamer.kind: FsNamer,
    RegistryNamer.kind: RegistryNamer,
}

# Keys of a Linkerd namer block that are not the namer's own: the caller turns them into the
# ``kind`` and ``prefix`` arguments, so the whole YAML block may be passed as ``config``.
_COMMON_KEYS: Final = frozenset({"kind", "prefix"})


def build_namer(
    kind: str,
    prefix: Path | None,
    config: Mapping[str, Any],
    notifier: Notifier,
    redis_client: Any = None,
) -> Namer:
    """Build (but do not start) the namer of ``kind``.

    Args:
        kind: e.g. ``io.l5d.fs``; see :data:`NAMER_KINDS`.
        prefix: the mount point; None means ``/#/<kind>``.
        config: the namer's config block. ``kind`` and ``prefix`` keys in it are ignored
            (they are the arguments above); any other key must be one the namer knows.
        notifier: the process-wide change signal.
        redis_client: a ``redis.asyncio.Redis``, for namers that need Redis.

    Raises:
        NamerConfigError: unknown kind, unknown config key (named), or a bad value.
    """
    cls = NAMER_KINDS.get(kind)
    if cls is None:
        known = ", ".join(sorted(NAMER_KINDS))
        raise NamerConfigError(f"unknown namer kind {kind!r}; known kinds: {known}")
    if not isinstance(config, Mapping):
        raise NamerConfigError(f"namer {kind}: config must be a mapping, got {config!r}")
    unknown = sorted(str(k) for k in config if k not in cls.config_keys | _COMMON_KEYS)
    if unknown:
        allowed = ", ".join(sorted(cls.config_keys))
        raise NamerConfigError(
            f"namer {kind}: unknown config key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; allowed keys: {allowed}"
        )
    return cls.from_config(prefix or cls.default_prefix(), config, notifier, redis_client)
