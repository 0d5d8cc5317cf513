"""namerd's dtab storage on Redis: versioned CRUD, compare-and-set, and watches.

The store implements namerd's storage contract: list, create, delete, update (compare-and-set
on a version), put (upsert), and observe, here called ``watch``. Dtab text is opaque. The API
layer parses and canonicalises it before calling the store and renders it afterwards, so a
store never sees an invalid dtab and never parses one.

Redis layout (``P`` is the key prefix, ``namerd:`` by default)
--------------------------------------------------------------
=================================  ======  ===================================================
``P dtab:<ns>``                    hash    fields ``dtab`` (text) and ``version`` (decimal int)
``P version:<ns>``                 string  highest version ever issued for ``<ns>``; kept
                                           after a delete (see "Versions" below)
``P namespaces``                   set     names of the namespaces that exist
``P history:<ns>``                 list    the last writes to ``<ns>``, newest first, one JSON
                                           object each (see "History" below); kept after a
                                           delete
``P inuse:<ns>``                   zset    paths of ``<ns>`` that some namerd worker serves a
                                           bind/resolve watch for, scored by when it last said
                                           so (ms since the epoch; see "Names in use")
``P chan:dtab:<ns>``               chan    published on every write to ``<ns>``; the payload is
                                           the new version, or ``-`` on delete
``P chan:list``                    chan    published when a namespace is created (``+<ns>``)
                                           or deleted (``-<ns>``)
=================================  ======  ===================================================

For example, with the default prefix, namespace ``default`` lives in ``namerd:dtab:default``. A
namespace name cannot contain ``:``, so keys cannot collide. Every write is one Lua script
(``namerd.storage.scripts``; EVALSHA, falling back to SCRIPT LOAD after a Redis restart): it
checks, writes the hash, keeps the set in step, bumps the counter, records the write in
history, and PUBLISHes. So a notification is never sent for a write that did not happen, and
a write never happens without its notification (or its history entry). The scripts touch
several keys, so Redis Cluster is not supported; use a single primary or Sentinel.

Names in use
------------
A dry run of a dtab change shows the names the linkers route through that namespace, and each
namerd worker knows only its own watch streams. So every worker writes the paths it watches
into ``P inuse:<ns>`` (ZADD with the time as score) every ``limits.namesInUseRefreshMs``
(``namerd.runtime``), and a dry run reads the paths seen within a few refreshes. Old members
are trimmed on each write, and the key expires if no worker refreshes it. This is advisory:
with Redis down a dry run shows the answering worker's names alone.

Versions
--------
A version is a positive integer that strictly increases per namespace: create gives
``last + 1`` (1 for a new name), and each update or put adds 1. The API layer shows it as
``base64(int64 big-endian)`` to match namerd's inMemory ETags (``AAAAAAAAAAE=`` is v1).

Unlike namerd's inMemory store, we never *reuse* a version. namerd restarts at 1 when a
namespace is deleted and created again. A client holding ``If-Match: v1`` from the old
namespace could then overwrite the new one, because its stale compare-and-set still matches.
We keep ``P version:<ns>`` after a delete, so the recreated namespace continues from
``last + 1``, and any version issued before the delete can never match again. Each script
also takes the maximum of the counter and the stored version, so a missing counter (data
from an older layout, or one deleted by hand) cannot make versions go backwards either.

History
-------
Every write that happens (create, update, put, delete) also pushes one entry on
``P history:<ns>``, in the same script as the write, and trims the list to the caller's
``history_size`` (``storage.historySize``, default 50): so the history is exactly the writes
that happened, in order, and never more than that many per namespace. An entry is
``{"version", "op", "at", "who", "client", "dtab"}``: the version the write produced (for a
delete, the version deleted), the operation, the time (UTC ISO-8601, the writing process's
clock), the writer's identity and address as the API saw them (``Author``; null when
unknown), and the stored text (null for a delete). The list outlives a delete, like the version
counter, so a re-created namespace shows what came before it.

Watches
-------
``watch(ns)`` and ``watch_list()`` share ONE pub/sub connection per store, and all watchers of
one channel share one read per change (``namerd.storage.watches``; the connection itself is
``namerd.storage.pubsub``). A notification is only a hint to re-read: the value always comes
from Redis, so a lost message or a missed reconnect window cannot leave a watcher stale once
the next read succeeds.

Availability
------------
When Redis cannot be reached:

* Reads (``get``, ``list_namespaces``, and a watch's first value) return the last value this
  process saw. It is kept in a small LRU cache filled by reads, writes and watches. They raise
  StorageUnavailable only if there is no such value.
* Writes raise StorageUnavailable at once. They are never retried: a retried create or
  update can fail against its own earlier success (409/412), so the caller must decide.
* Watchers stay open and silent. The pub/sub reader reconnects with jittered exponential
  backoff (``reconnect_min_s`` .. ``reconnect_max_s``). After each reconnect it re-subscribes
  and every watched value is re-read, so changes made during the outage still arrive.

Namespace names
---------------
A name must match ``NAMESPACE_PATTERN``: 1 to 128 characters from ``A-Z a-z 0-9 _ . -``. namerd
itself accepts any string (only its Consul store restricts names, to ``[A-Za-z0-9_-]+``). We
are stricter so that a name is always safe in a Redis key, a channel name, a URL path segment,
and a log line. ``:``, ``/``, ``{`` and whitespace are all excluded, and so are ``.`` and
``..``, which HTTP clients normalise away in URL paths.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from namerd.errors import (
    InvalidNamespace,
    NamespaceExists,
    NamespaceNotFound,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)
from namerd.storage import scripts
from namerd.storage.connection import (
    UNAVAILABLE_ERRORS,
    describe_pool,
    pubsub_connection_factory,
    redact_url,
    text,
)
from namerd.storage.watches import UNSET, Unset, Watch, WatchHub

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_KEY_PREFIX",
    "NAMESPACE_PATTERN",
    "Author",
    "HistoryEntry",
    "RedisDtabStore",
    "VersionedDtab",
    "Watch",
    "validate_namespace",
]

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX: Final = "namerd:"

DEFAULT_HISTORY_SIZE: Final = 50
"""How many history entries a write keeps per namespace unless told otherwise."""

NAMESPACE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""Allowed namespace names (matched in full). See "Namespace names" in the module docstring."""


@dataclass(frozen=True, slots=True)
class VersionedDtab:
    """A stored dtab (opaque text, as the API layer stored it) and its version (>= 1)."""

    dtab: str
    version: int


@dataclass(frozen=True, slots=True)
class Author:
    """Who made a write, as history records it: an identity (e.g. ``token`` when the API
    checked a bearer token; None when nobody is known) and the client's address."""

    who: str | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One write, as kept in a namespace's history (see "History" in the module docstring)."""

    version: int
    op: str
    at: str
    who: str | None
    client: str | None
    dtab: str | None

    def to_json(self) -> dict[str, Any]:
        """The entry as a JSON object, fields in this order."""
        return {
            "version": self.version,
            "op": self.op,
            "at": self.at,
            "who": self.who,
            "client": self.client,
            "dtab": self.dtab,
        }


def _entry(op: str, dtab: str | None, author: Author | None) -> str:
    """A history entry without its version (the write script adds it; see ``scripts``)."""
    author = author or Author()
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(
        {"op": op, "at": at, "who": author.who, "client": author.client, "dtab": dtab},
        separators=(",", ":"),
    )


def _parse_entry(raw: str) -> HistoryEntry | None:
    """An entry as stored, or None if it is not one (written by hand): skipped, not fatal."""
    try:
        value = json.loads(raw)
        entry = HistoryEntry(
            int(value["version"]),
            str(value["op"]),
            str(value["at"]),
            value.get("who"),
            value.get("client"),
            value.get("dtab"),
        )
    except (ValueError, TypeError, KeyError):
        return None
    return entry


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` unchanged if it is an allowed name.

    Raises:
        InvalidNamespace: it is not a str, or does not match ``NAMESPACE_PATTERN``. The
            message says which rule failed, so it can go straight into a 400 response.
    """
    if not isinstance(namespace, str):
        raise InvalidNamespace(repr(namespace), f"must be a str, not {type(namespace).__name__}")
    if NAMESPACE_PATTERN.fullmatch(namespace) is None:
        if not namespace:
            reason = "must not be empty"
        elif len(namespace) > 128:
            reason = f"is {len(namespace)} characters long; the limit is 128"
        else:
            reason = "may contain only letters, digits, '_', '.' and '-'"
        raise InvalidNamespace(namespace, reason)
    if namespace in (".", ".."):
        # HTTP clients normalise these away in URL paths, so such a namespace could be
        # created but never addressed again.
        raise InvalidNamespace(namespace, "'.' and '..' cannot be used in URLs")
    return namespace


class RedisDtabStore:
    """Versioned dtabs in Redis, with atomic compare-and-set and shared pub/sub watches.

    Build one per process (per worker, after fork) with ``from_url`` or ``from_sentinel``, or
    pass a ``redis.asyncio.Redis`` client. All methods must run on the event loop the store is
    first used on. See the module docstring for the key layout and the failure behaviour.

    Args:
        redis: the client. Its retries should be disabled, as ``from_url`` does: a retried
            script can turn our own success into NamespaceExists or VersionMismatch.
        key_prefix: prefix for every key and channel (default ``namerd:``). Several namerd
            deployments can share one Redis by using different prefixes.
        reconnect_min_s: the shortest wait before reconnecting the pub/sub connection, or
            re-reading a watched value, after a failure. Default 0.1 s.
        reconnect_max_s: the longest such wait; backoff doubles up to it, with jitter.
            Default 5 s. It bounds how long watchers lag behind after Redis returns.
        pubsub_ping_interval_s: after this much silence on the pub/sub connection, PING it;
            if another interval passes without a reply, reconnect. This catches a Redis that
            hangs, or a network that drops packets, without closing the socket. Default 15 s.
        last_known_max_entries: the size of the LRU cache of last-known dtabs that serves
            reads while Redis is down. Default 10,000.
        owns_client: close ``redis`` in ``aclose()``. ``from_url`` and ``from_sentinel`` set it.
        description: how to name Redis in messages, e.g. a URL without a password.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        reconnect_min_s: float = 0.1,
        reconnect_max_s: float = 5.0,
        pubsub_ping_interval_s: float = 15.0,
        last_known_max_entries: int = 10_000,
        owns_client: bool = False,
        description: str | None = None,
    ) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if pubsub_ping_interval_s <= 0:
            raise ValueError("pubsub_ping_interval_s must be > 0")
        if last_known_max_entries < 1:
            raise ValueError("last_known_max_entries must be >= 1")
        self._redis = redis
        self.key_prefix = key_prefix
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._owns_client = owns_client
        self._sentinel: Sentinel | None = None  # set by from_sentinel, so aclose() can close it
        self.description = description or describe_pool(redis.connection_pool)
        self._namespaces_key = f"{key_prefix}namespaces"
        self._list_channel = f"{key_prefix}chan:list"
        self._create = redis.register_script(scripts.CREATE_LUA)
        self._update = redis.register_script(scripts.UPDATE_LUA)
        self._put = redis.register_script(scripts.PUT_LUA)
        self._delete = redis.register_script(scripts.DELETE_LUA)
        self._last_known: OrderedDict[str, VersionedDtab | None] = OrderedDict()
        self._last_known_max_entries = last_known_max_entries
        self._last_list: tuple[str, ...] | None = None
        self._watches = WatchHub(
            pubsub_connection_factory(redis),
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
            ping_interval_s=pubsub_ping_interval_s,
        )
        self._closed = False

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        redis_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RedisDtabStore:
        """Connect to ``redis://``, ``rediss://`` (TLS) or ``unix://`` URLs.

        Examples: ``redis://:secret@redis.internal:6379/0``, ``unix:///srv/namerd/.namerd/redis.sock``
        (the embedded server's ``EmbeddedRedis.url``).

        Args:
            url: the Redis URL. Query parameters are handled as redis-py's ``from_url`` does.
            socket_timeout_s: the longest wait for any one command. Default 5 s.
            connect_timeout_s: the longest wait for a connection. Default 2 s.
            redis_kwargs: more ``redis.asyncio.Redis.from_url`` arguments (e.g. TLS files).
            **options: keyword arguments of ``RedisDtabStore.__init__``.
        """
        kwargs: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": connect_timeout_s,
            # Fail fast and never re-send a write; see the class docstring.
            "retry": Retry(NoBackoff(), 0),
        }
        kwargs.update(redis_kwargs or {})
        client = aioredis.Redis.from_url(url, **kwargs)
        options.setdefault("description", redact_url(url))
        return cls(client, owns_client=True, **options)

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service: str,
        *,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        redis_kwargs: Mapping[str, Any] | None = None,
        sentinel_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> RedisDtabStore:
        """Connect to the current primary of ``service``, found through Redis Sentinel.

        On failover, connections re-discover the primary. The pub/sub connection does too,
        because it is made by the same Sentinel-managed pool.

        Args:
            sentinels: ``(host, port)`` of each sentinel.
            service: the monitored service name (``sentinel monitor <service> ...``).
            socket_timeout_s, connect_timeout_s: as for ``from_url``; they also apply to the
                sentinels.
            redis_kwargs: more connection arguments for the primary (e.g. ``password``).
            sentinel_kwargs: connection arguments for the sentinels themselves.
            **options: keyword arguments of ``RedisDtabStore.__init__``.
        """
        timeouts = {"socket_timeout": socket_timeout_s, "socket_connect_timeout": connect_timeout_s}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(sentinels),
            sentinel_kwargs={**timeouts, "retry": Retry(NoBackoff(), 0), **(sentinel_kwargs or {})},
        )
        client = sentinel.master_for(
            service,
            **{
                **timeouts,
                "decode_responses": True,
                "retry": Retry(NoBackoff(), 0),
                **(redis_kwargs or {}),
            },
        )
        hosts = ",".join(f"{host}:{port}" for host, port in sentinels)
        options.setdefault("description", f"sentinel service {service!r} via {hosts}")
        store = cls(client, owns_client=True, **options)
        store._sentinel = sentinel
        return store

    def __repr__(self) -> str:
        pubsub = "connected" if self._watches.connected else "down"
        state = "closed" if self._closed else f"pubsub {pubsub}"
        return (
            f"<RedisDtabStore {self.description} prefix={self.key_prefix!r} "
            f"[{state} | {self._watches.channels} channels, {self._watches.watchers} watchers]>"
        )

    async def __aenter__(self) -> RedisDtabStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """End all watches (their iteration stops), close the pub/sub connection, and close
        the client if the store owns it."""
        if self._closed:
            return
        self._closed = True
        await self._watches.aclose()
        if self._owns_client:
            await self._redis.aclose()
        if self._sentinel is not None:
            for sentinel_client in self._sentinel.sentinels:
                await sentinel_client.aclose()

    # -- keys -------------------------------------------------------------------------------

    def _dtab_key(self, namespace: str) -> str:
        return f"{self.key_prefix}dtab:{namespace}"

    def _version_key(self, namespace: str) -> str:
        return f"{self.key_prefix}version:{namespace}"

    def _history_key(self, namespace: str) -> str:
        return f"{self.key_prefix}history:{namespace}"

    def _dtab_channel(self, namespace: str) -> str:
        return f"{self.key_prefix}chan:dtab:{namespace}"

    # -- reads ------------------------------------------------------------------------------

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client this store uses (shared with namers that keep state in Redis)."""
        return self._redis

    async def list_namespaces(self) -> list[str]:
        """Return the names of all namespaces, sorted.

        Raises:
            StorageUnavailable: Redis is down and this process has never read the list.
        """
        try:
            return list(await self._read_list())
        except StorageUnavailable:
            if self._last_list is None:
                raise
            return list(self._last_list)

    async def get(self, namespace: str) -> VersionedDtab | None:
        """Return the dtab and version of ``namespace``, or None if it does not exist.

        Raises:
            InvalidNamespace: bad name.
            StorageUnavailable: Redis is down and this process has no last-known value.
        """
        validate_namespace(namespace)
        try:
            return await self._read_dtab(namespace)
        except StorageUnavailable:
            cached = self._cached_dtab(namespace)
            if isinstance(cached, Unset):
                raise
            return cached

    async def history(self, namespace: str, limit: int | None = None) -> list[HistoryEntry]:
        """The writes kept for ``namespace``, newest first; at most ``limit`` of them.

        An empty list means no write was recorded (the namespace may still exist, written
        before history was kept). Entries that do not parse (written by hand) are skipped.

        Raises:
            InvalidNamespace: bad name. ValueError: ``limit`` < 1.
            StorageUnavailable: Redis is down (history has no last-known fallback).
        """
        validate_namespace(namespace)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        stop = -1 if limit is None else limit - 1
        raw = await self._read(lambda: self._redis.lrange(self._history_key(namespace), 0, stop))
        return [e for e in (_parse_entry(text(r)) for r in raw) if e is not None]

    def _in_use_key(self, namespace: str) -> str:
        return f"{self.key_prefix}inuse:{namespace}"

    async def mark_names_in_use(
        self, names: Mapping[str, Iterable[str]], now_ms: int, ttl_ms: int
    ) -> None:
        """Record that this worker watches ``names`` (namespace -> paths) at ``now_ms``.

        Members older than ``ttl_ms`` are trimmed, and a key nobody refreshes expires after
        ``ttl_ms`` ("Names in use").

        Raises:
            StorageError: Redis is down or failed.
        """
        if not names:
            return
        pipe = self._redis.pipeline(transaction=False)
        for namespace, paths in names.items():
            key = self._in_use_key(namespace)
            members = dict.fromkeys(paths, now_ms)
            if members:
                pipe.zadd(key, members)
            pipe.zremrangebyscore(key, "-inf", now_ms - ttl_ms)
            pipe.pexpire(key, ttl_ms)
        await self._read(pipe.execute)  # idempotent: repeating it records the same thing

    async def names_in_use(self, namespace: str, now_ms: int, ttl_ms: int) -> set[str]:
        """The paths of ``namespace`` some worker said it watches within ``ttl_ms``.

        Raises:
            InvalidNamespace: bad name. StorageError: Redis is down or failed.
        """
        validate_namespace(namespace)
        key = self._in_use_key(namespace)
        raw = await self._read(lambda: self._redis.zrangebyscore(key, now_ms - ttl_ms, "+inf"))
        return {text(m) for m in raw}

    async def _read_list(self) -> tuple[str, ...]:
        members = await self._read(lambda: self._redis.smembers(self._namespaces_key))
        names = tuple(sorted(text(m) for m in members))
        self._last_list = names
        return names

    async def _read_dtab(self, namespace: str) -> VersionedDtab | None:
        dtab, version = await self._read(
            lambda: self._redis.hmget(self._dtab_key(namespace), ["dtab", "version"])
        )
        value = None if version is None else VersionedDtab(text(dtab or ""), int(version))
        self._remember(namespace, value)
        return value

    async def _read(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run an idempotent read. Retry once at once on a broken connection (a pooled
        connection can outlive a Redis restart), then map errors to StorageError."""
        try:
            try:
                return await command()
            except redis_errors.ConnectionError:
                return await command()
        except UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except redis_errors.RedisError as exc:
            raise StorageError(f"Redis read failed: {exc}") from exc

    # -- last-known cache -------------------------------------------------------------------

    def _remember(self, namespace: str, value: VersionedDtab | None) -> None:
        self._last_known[namespace] = value
        self._last_known.move_to_end(namespace)
        while len(self._last_known) > self._last_known_max_entries:
            self._last_known.popitem(last=False)

    def _cached_dtab(self, namespace: str) -> VersionedDtab | Unset | None:
        if namespace in self._last_known:
            self._last_known.move_to_end(namespace)
            return self._last_known[namespace]
        return UNSET

    def _cached_list(self) -> tuple[str, ...] | Unset:
        return UNSET if self._last_list is None else self._last_list

    # -- writes -----------------------------------------------------------------------------

    async def create(
        self,
        namespace: str,
        dtab: str,
        *,
        author: Author | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> int:
        """Create ``namespace`` with ``dtab``. It must not exist yet.

        Every write takes ``author`` (who made it, for history; default unknown) and
        ``history_size`` (how many entries the namespace's history keeps, >= 1).

        Returns:
            The new version: 1 for a brand-new name, or one more than the last version this
            name ever had, if it was deleted before.

        Raises:
            InvalidNamespace: bad name. NamespaceExists: it already exists (409).
            StorageUnavailable: Redis is down; the write may or may not have happened.
        """
        entry = _entry("create", dtab, author)
        status, version = await self._write(self._create, namespace, dtab, "", entry, history_size)
        if status == scripts.EXISTS:
            raise NamespaceExists(namespace)
        self._written(namespace, VersionedDtab(dtab, version), added=True)
        return version

    async def update(
        self,
        namespace: str,
        dtab: str,
        version: int,
        *,
        author: Author | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> int:
        """Replace the dtab of ``namespace`` only if it is still at ``version`` (compare-and-set).

        Returns:
            The new version.

        Raises:
            InvalidNamespace: bad name. NamespaceNotFound: it does not exist (404).
            VersionMismatch: it is at another version (412); read it again first.
            StorageUnavailable: Redis is down; the write may or may not have happened.
        """
        if isinstance(version, bool) or not isinstance(version, int):
            raise TypeError(f"version must be an int, not {type(version).__name__}")
        entry = _entry("update", dtab, author)
        status, current = await self._write(
            self._update, namespace, dtab, str(version), entry, history_size
        )
        if status == scripts.NOT_FOUND:
            raise NamespaceNotFound(namespace)
        if status == scripts.MISMATCH:
            raise VersionMismatch(namespace, expected=version, actual=current)
        self._written(namespace, VersionedDtab(dtab, current), added=False)
        return current

    async def put(
        self,
        namespace: str,
        dtab: str,
        *,
        author: Author | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> int:
        """Set the dtab of ``namespace`` unconditionally, creating it if needed (upsert).

        Returns:
            The new version. Every put bumps it, even if the text is unchanged, as namerd does.

        Raises:
            InvalidNamespace: bad name.
            StorageUnavailable: Redis is down; the write may or may not have happened.
        """
        entry = _entry("put", dtab, author)
        _, version = await self._write(self._put, namespace, dtab, "", entry, history_size)
        self._written(namespace, VersionedDtab(dtab, version), added=True)
        return version

    async def delete(
        self,
        namespace: str,
        *,
        author: Author | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        """Delete ``namespace``. Its version counter is kept; see "Versions" above.

        Raises:
            InvalidNamespace: bad name. NamespaceNotFound: it does not exist (404).
            StorageUnavailable: Redis is down; the delete may or may not have happened.
        """
        entry = _entry("delete", None, author)
        status, _ = await self._write(self._delete, namespace, "", "", entry, history_size)
        if status == scripts.NOT_FOUND:
            raise NamespaceNotFound(namespace)
        self._remember(namespace, None)
        if self._last_list is not None:
            self._last_list = tuple(n for n in self._last_list if n != namespace)

    async def _write(
        self,
        script: AsyncScript,
        namespace: str,
        dtab: str,
        expected_version: str,
        entry: str,
        history_size: int,
    ) -> tuple[int, int]:
        validate_namespace(namespace)
        if not isinstance(dtab, str):
            raise TypeError(f"dtab must be a str, not {type(dtab).__name__}")
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"history_size must be an int >= 1, not {history_size!r}")
        keys = [
            self._dtab_key(namespace),
            self._version_key(namespace),
            self._namespaces_key,
            self._history_key(namespace),
        ]
        args = [
            namespace,
            self._dtab_channel(namespace),
            self._list_channel,
            dtab,
            expected_version,
            entry,
            str(history_size),
        ]
        try:
            status, version = await script(keys=keys, args=args)
        except UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except redis_errors.RedisError as exc:
            raise StorageError(f"Redis write to namespace {namespace!r} failed: {exc}") from exc
        return int(status), int(version)

    def _written(self, namespace: str, value: VersionedDtab, *, added: bool) -> None:
        """Record our own successful write, so a later outage serves what we just wrote."""
        self._remember(namespace, value)
        if added and self._last_list is not None and namespace not in self._last_list:
            self._last_list = tuple(sorted((*self._last_list, namespace)))

    def _unavailable(self, exc: BaseException) -> StorageUnavailable:
        return StorageUnavailable(
            f"Redis ({self.description}) is unavailable: {exc}. Reads are served from this "
            "process's last-known values; writes are refused until Redis is back, and a "
            "write that failed this way may or may not have been applied. Check that "
            "redis-server is running and reachable (namerd's embedded Redis logs to "
            "<data_dir>/redis.log)."
        )

    # -- watches ----------------------------------------------------------------------------

    def watch(self, namespace: str) -> Watch[VersionedDtab | None]:
        """Watch one namespace: yields its ``VersionedDtab``, or None while it does not exist.

        Raises:
            InvalidNamespace: bad name (raised here, before anything is subscribed).
        """
        validate_namespace(namespace)
        return Watch(
            self._watches,
            self._dtab_channel(namespace),
            lambda: self._read_dtab(namespace),
            lambda: self._cached_dtab(namespace),
            _identity,
        )

    def watch_list(self) -> Watch[list[str]]:
        """Watch the set of namespaces: yields the sorted list of names on every change."""
        return Watch(self._watches, self._list_channel, self._read_list, self._cached_list, list)


def _identity(value: Any) -> Any:
    return value
