"""namerd's dtab storage on Redis: versioned CRUD, compare-and-set, and watches.

The store implements namerd's storage contract (namerd-api.md §1): list, create, delete,
update (compare-and-set on a version), put (upsert), and observe, here called ``watch``. Dtab
text is opaque. The API layer parses and canonicalises it before calling the store and renders
it afterwards, so a store never sees an invalid dtab and never parses one.

Redis layout (``P`` is the key prefix, ``namerd:`` by default)
--------------------------------------------------------------
=================================  ======  ===================================================
``P dtab:<ns>``                    hash    fields ``dtab`` (text) and ``version`` (decimal int)
``P version:<ns>``                 string  highest version ever issued for ``<ns>``; kept
                                           after a delete (see "Versions" below)
``P namespaces``                   set     names of the namespaces that exist
``P chan:dtab:<ns>``               chan    published on every write to ``<ns>``; the payload is
                                           the new version, or ``-`` on delete
``P chan:list``                    chan    published when a namespace is created (``+<ns>``)
                                           or deleted (``-<ns>``)
=================================  ======  ===================================================

For example, with the default prefix, namespace ``default`` lives in ``namerd:dtab:default``. A
namespace name cannot contain ``:``, so keys cannot collide. Every write is one Lua script
(EVALSHA, falling back to SCRIPT LOAD after a Redis restart): it checks, writes the hash, keeps
the set in step, bumps the counter, and PUBLISHes. So a notification is never sent for a
write that did not happen, and a write never happens without its notification. The scripts
touch several keys, so Redis Cluster is not supported; use a single primary or Sentinel.

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

Watches
-------
``watch(ns)`` and ``watch_list()`` share ONE pub/sub connection per store (``_PubSubHub``).
5,000 watch streams therefore cost one Redis connection, not 5,000. All watchers of one
channel also share one ``_Topic``, which re-reads the value *once* per notification and
fans it out, so a change costs one read, not one read per watcher. A channel is subscribed
when its first watcher arrives. It is unsubscribed, with the server's confirmation awaited,
when its last watcher closes, so ``PUBSUB NUMSUB`` shows 0 as soon as ``aclose()`` returns.
A notification is only a hint to re-read. The value always comes from Redis, so a lost
message or a missed reconnect window cannot leave a watcher stale once the next read succeeds.

Availability
------------
When Redis cannot be reached:

* Reads (``get``, ``list_namespaces``, and a watch's first value) return the last value this
  process saw. It is kept in a small LRU cache filled by reads, writes and watches. They raise
  StorageUnavailable only if there is no such value.
* Writes raise StorageUnavailable at once. They are never retried: a retried create or
  update can fail against its own earlier success (409/412), so the caller must decide.
* Watchers stay open and silent. The hub reconnects with jittered exponential backoff
  (``reconnect_min_s`` .. ``reconnect_max_s``). After each reconnect it re-subscribes and
  re-reads every watched value, so changes made during the outage still arrive.

Namespace names
---------------
A name must match ``NAMESPACE_PATTERN``: 1 to 128 characters from ``A-Z a-z 0-9 _ . -``. namerd
itself accepts any string (only its Consul store restricts names, to ``[A-Za-z0-9_-]+``). We
are stricter so that a name is always safe in a Redis key, a channel name, a URL path segment,
and a log line. ``:``, ``/``, ``{`` and whitespace are all excluded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from namerd.aio import reconnect_delay_s
from namerd.errors import (
    InvalidNamespace,
    NamespaceExists,
    NamespaceNotFound,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "NAMESPACE_PATTERN",
    "RedisDtabStore",
    "VersionedDtab",
    "Watch",
    "validate_namespace",
]

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX: Final = "namerd:"

NAMESPACE_PATTERN: Final = re.compile(r"[A-Za-z0-9_.-]{1,128}")
"""Allowed namespace names (matched in full). See "Namespace names" in the module docstring."""

# Errors that mean "Redis cannot be reached right now", not "Redis refused this command".
# BusyLoadingError (the server is replaying its AOF) and Sentinel's MasterNotFoundError are
# ConnectionError subclasses. ReadOnlyError means we reached a replica, e.g. during a
# failover. OSError also covers the builtin TimeoutError.
_UNAVAILABLE_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)

# Status codes returned by the write scripts, as the first element of {status, version}.
_OK, _EXISTS, _NOT_FOUND, _MISMATCH = 0, 1, 2, 3

# ---------------------------------------------------------------------------------------------
# Lua scripts. KEYS: 1 = dtab hash, 2 = version counter, 3 = namespace set.
# ARGV: 1 = namespace, 2 = dtab channel, 3 = list channel, 4 = dtab text, 5 = expected version.
# Each script returns {status, version}. Versions are compared as decimal strings, so an
# absurd If-Match (say, 2**63 - 1) simply mismatches and never gets rounded by Lua's doubles.
# ---------------------------------------------------------------------------------------------

_NEXT_VERSION_LUA = """
local function next_version()
  local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
  local issued = tonumber(redis.call('GET', KEYS[2]) or '0')
  local v = math.max(current, issued) + 1
  redis.call('SET', KEYS[2], v)
  return v
end
"""

_CREATE_LUA = (
    _NEXT_VERSION_LUA
    + """
local existing = redis.call('HGET', KEYS[1], 'version')
if existing then return {1, tonumber(existing)} end
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], v)
redis.call('PUBLISH', ARGV[3], '+' .. ARGV[1])
return {0, v}
"""
)

_UPDATE_LUA = (
    _NEXT_VERSION_LUA
    + """
local existing = redis.call('HGET', KEYS[1], 'version')
if not existing then return {2, 0} end
if existing ~= ARGV[5] then return {3, tonumber(existing)} end
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
redis.call('PUBLISH', ARGV[2], v)
return {0, v}
"""
)

_PUT_LUA = (
    _NEXT_VERSION_LUA
    + """
local v = next_version()
redis.call('HSET', KEYS[1], 'dtab', ARGV[4], 'version', v)
redis.call('PUBLISH', ARGV[2], v)
-- SADD also repairs a set that lost the name; the list changes only if it was missing.
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[3], '+' .. ARGV[1])
end
return {0, v}
"""
)

_DELETE_LUA = """
local existing = redis.call('HGET', KEYS[1], 'version')
if not existing then return {2, 0} end
-- Remember the deleted version, so a re-created namespace continues above it.
if tonumber(existing) > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], existing)
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], '-')
redis.call('PUBLISH', ARGV[3], '-' .. ARGV[1])
return {0, tonumber(existing)}
"""


@dataclass(frozen=True, slots=True)
class VersionedDtab:
    """A stored dtab (opaque text, as the API layer stored it) and its version (>= 1)."""

    dtab: str
    version: int


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


def _text(value: object) -> str:
    """Decode a reply element. It is bytes unless the client has ``decode_responses=True``."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class _Signal:
    """A broadcast wake-up: every task waiting when ``fire()`` is called wakes up.

    Unlike a bare Event, it needs no clear(), so a waiter can never miss a fire() that happens
    between its wake-up and its next wait.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class _Unset:
    """Sentinel type: a topic has no value yet, or the cache has no entry."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


# =============================================================================================
# The shared pub/sub connection
# =============================================================================================


class _PubSubHub:
    """One pub/sub connection, shared by every watcher of a store.

    Theory of operation. Watchers change the *wanted* state synchronously, with ``add(channel)``
    and ``remove(channel)`` (a refcount per channel). Because those calls never await, a
    cancelled watcher can never leave the refcounts half-updated. Per connection, two tasks
    do the I/O:

    * the controller compares the wanted channels with those sent on this connection, sends
      one UNSUBSCRIBE and/or one SUBSCRIBE for the difference, and waits for the server's
      per-channel replies. Then it marks that generation of changes as synced;
    * the reader reads everything: messages, subscribe/unsubscribe replies, and PONGs. It
      calls ``on_event(channel)`` for each message and each subscribe confirmation. The
      confirmation matters, because anything written before it may have been missed, so
      the owner must re-read.

    ``flush()`` waits until the server has confirmed every change made so far. While Redis is
    down it returns at once, since nothing is subscribed. If the connection fails, or a PING
    sent after ``ping_interval_s`` of silence gets no reply within another interval, the
    session ends. The hub then reconnects with jittered backoff, and the new controller
    re-subscribes every wanted channel.

    The connection is our own, made from the client pool's connection class and settings, so
    it uses the same host, TLS, password and Sentinel discovery. It does not use redis-py's
    PubSub, which retries and re-subscribes internally. Here one place owns reconnection, and
    every (re)subscription is confirmed before anything re-reads. The connection is forced to
    RESP2, so pub/sub messages arrive as plain arrays.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        on_event: Callable[[str], None],
        *,
        reconnect_min_s: float,
        reconnect_max_s: float,
        ping_interval_s: float,
    ) -> None:
        self._make_connection = make_connection
        self._on_event = on_event
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._ping_interval_s = ping_interval_s
        self._refs: dict[str, int] = {}
        self._gen = 0  # bumped on every change to the wanted set
        self._synced_gen = 0  # the last generation the server has confirmed
        self._sent: set[str] = set()  # channels subscribed on the current connection
        self._awaiting_replies = 0
        self._reply = _Signal()  # the reader got a subscribe/unsubscribe reply
        self._state_changed = _Signal()  # synced, connected or disconnected
        self._wakeup = asyncio.Event()  # wakes the controller
        self._connected = False
        self._connecting = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connected else "connecting" if self._connecting else "down"
        return f"<_PubSubHub [{state}, {len(self._refs)} channels wanted]>"

    @property
    def connected(self) -> bool:
        return self._connected

    def add(self, channel: str) -> None:
        """Want ``channel`` subscribed (refcounted). Synchronous, so cancellation-safe."""
        if self._closed:
            raise RuntimeError("the store is closed")
        count = self._refs.get(channel, 0)
        self._refs[channel] = count + 1
        if count == 0:
            self._changed()
        if self._task is None:
            self._connecting = True
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="namerd-store-pubsub"
            )

    def remove(self, channel: str) -> None:
        """Drop one reference to ``channel``; the last one unsubscribes. Synchronous."""
        count = self._refs.get(channel, 0)
        if count > 1:
            self._refs[channel] = count - 1
        elif count == 1:
            del self._refs[channel]
            self._changed()

    async def flush(self) -> None:
        """Wait until Redis has confirmed every add()/remove() made before this call.

        This returns at once if Redis is down or the hub is closed. In both cases no
        subscription exists on the server, so there is nothing to confirm.
        """
        target = self._gen
        while (
            not self._closed and (self._connected or self._connecting) and self._synced_gen < target
        ):
            await self._state_changed.wait()

    async def aclose(self) -> None:
        """Stop the connection task and disconnect. Watchers must be woken by the caller."""
        self._closed = True
        self._refs.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._state_changed.fire()

    def _changed(self) -> None:
        self._gen += 1
        self._wakeup.set()

    async def _run(self) -> None:
        failures = 0  # consecutive failed connection attempts
        while not self._closed:
            self._connecting = True
            conn = self._make_connection()
            try:
                try:
                    await conn.connect()  # type: ignore[no-untyped-call]
                except (redis_errors.RedisError, OSError) as exc:
                    # Mostly ConnectionError; AuthenticationError, or a ResponseError for a bad
                    # db number, are retried too, because they may be fixed on the server.
                    failures += 1
                    self._connecting = False
                    self._state_changed.fire()
                    # Warn on the first failure only, so an outage does not flood the log.
                    level = logging.WARNING if failures == 1 else logging.DEBUG
                    log.log(level, "store pub/sub: cannot connect to Redis (%s); retrying", exc)
                else:
                    if failures:
                        log.info(
                            "store pub/sub: reconnected to Redis after %d failed attempts",
                            failures,
                        )
                    failures = 0
                    await self._session(conn)
            finally:
                self._end_session()
                await conn.disconnect(nowait=True)
            # After a lost session, the first retry also waits (at least reconnect_min_s,
            # jittered), so that replicas do not all reconnect in the same instant.
            step = max(failures, 1)
            await asyncio.sleep(
                reconnect_delay_s(step, self._reconnect_min_s, self._reconnect_max_s)
            )

    async def _session(self, conn: AbstractConnection) -> None:
        self._sent = set()
        self._awaiting_replies = 0
        self._connected, self._connecting = True, False
        # A new generation: flush() waits until this connection has (re)subscribed.
        self._changed()
        self._state_changed.fire()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read_loop(conn))
                tg.create_task(self._control_loop(conn))
        except* _UNAVAILABLE_ERRORS as group:
            log.warning(
                "store pub/sub: lost the Redis connection (%s); watchers keep their last "
                "values and resume when it is back",
                group.exceptions[0],
            )
        except* Exception as group:
            # A RedisError such as a protocol error, or a bug. Reconnecting is the best
            # recovery, and it keeps every watcher alive.
            log.error("store pub/sub: unexpected error, reconnecting: %r", group.exceptions)

    def _end_session(self) -> None:
        self._connected = self._connecting = False
        self._sent = set()
        self._awaiting_replies = 0
        self._state_changed.fire()
        self._reply.fire()

    async def _control_loop(self, conn: AbstractConnection) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            target = self._gen
            wanted = set(self._refs)
            drop, add = self._sent - wanted, wanted - self._sent
            if drop:
                self._sent -= drop
                self._awaiting_replies += len(drop)
                await conn.send_command("UNSUBSCRIBE", *sorted(drop), check_health=False)
            if add:
                self._sent |= add
                self._awaiting_replies += len(add)
                await conn.send_command("SUBSCRIBE", *sorted(add), check_health=False)
            while self._awaiting_replies > 0:
                await self._reply.wait()
            self._synced_gen = target
            self._state_changed.fire()

    async def _read_loop(self, conn: AbstractConnection) -> None:
        ping_outstanding = False
        while True:
            # With an explicit timeout, read_response returns None on silence instead of
            # raising. redis-py's parser buffers partial replies, so a timeout mid-reply is safe.
            reply = await conn.read_response(timeout=self._ping_interval_s)
            if reply is None:
                if ping_outstanding:
                    raise redis_errors.TimeoutError(
                        f"no reply to PING within {self._ping_interval_s} s"
                    )
                await conn.send_command("PING", check_health=False)
                ping_outstanding = True
                continue
            ping_outstanding = False  # any traffic proves the server is alive
            if not isinstance(reply, list) or len(reply) < 2:
                continue  # "+PONG" when nothing is subscribed
            kind, channel = _text(reply[0]).lower(), _text(reply[1])
            if kind == "message":
                self._on_event(channel)
            elif kind in ("subscribe", "unsubscribe"):
                self._awaiting_replies -= 1
                self._reply.fire()
                if kind == "subscribe" and channel in self._sent:
                    self._on_event(channel)


# =============================================================================================
# Topics and watches
# =============================================================================================

T = TypeVar("T")


class _Topic:
    """The shared, current value of one channel, for every watcher of it.

    ``mark_dirty()`` (on a notification, a subscribe confirmation, or creation) makes the
    topic re-read through ``load``. The read is coalesced: marks that arrive while a read is
    running cause exactly one more read. If the first read fails, ``fallback`` (the store's
    last-known cache) supplies the value, so watchers are not left waiting.
    ``seq`` increases only when the value really changes, which drops repeats for everyone.

    Retries. While the pub/sub hub is down, a topic whose read failed with StorageUnavailable
    does not retry on its own timer. It waits for the hub, which marks every topic dirty once
    it has re-subscribed. So 5,000 watched namespaces do not mean 5,000 connection attempts
    per backoff period against a Redis that is down. Any other failed read (the hub is up, or
    an unexpected error) is retried with backoff, and a new mark cuts that wait short.
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
        self.value: object = _UNSET
        self.seq = 0
        self.changed = _Signal()
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
        if self.value is _UNSET or value != self.value:
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
                # StorageUnavailable is expected during an outage (the hub logs it). Anything
                # else (say, WRONGTYPE from a key written by hand) is logged once per streak.
                if not isinstance(exc, StorageUnavailable) and failures == 0:
                    log.error("store watch: re-read failed, retrying with backoff: %r", exc)
                if self.value is _UNSET:
                    fallback = self._fallback()
                    if fallback is not _UNSET:
                        self._set(fallback)
                failures += 1
                self._dirty = True
                wait_s: float | None = reconnect_delay_s(
                    failures, self._retry_min_s, self._retry_max_s
                )
                if isinstance(exc, StorageUnavailable) and not self._hub_connected():
                    wait_s = None  # until the hub reconnects and marks us dirty
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._kick.wait()
                continue
            failures = 0
            self._set(value)


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
        store: RedisDtabStore,
        channel: str,
        load: Callable[[], Awaitable[object]],
        fallback: Callable[[], object],
        present: Callable[[Any], T],
    ) -> None:
        self._store = store
        self._channel = channel
        self._load = load
        self._fallback = fallback
        self._present = present
        self._topic: _Topic | None = None
        self._closed = False
        self._seen_seq = 0
        self._last: object = _UNSET

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._topic is not None else "new"
        return f"<Watch {self._channel} [{state}, last={self._last!r}]>"

    async def __aenter__(self) -> Watch[T]:
        self._open()
        try:
            # Wait for the SUBSCRIBE to be confirmed (if Redis is up), so that every write
            # after this point is guaranteed to produce a notification for us.
            await self._store._hub.flush()
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
                if self._last is _UNSET or value != self._last:
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
            await self._store._hub.flush()

    def _open(self) -> _Topic:
        if self._topic is None:
            if self._closed:
                raise RuntimeError("this watch is closed")
            self._topic = self._store._acquire_topic(self._channel, self._load, self._fallback)
        return self._topic

    def _release(self) -> None:
        topic, self._topic = self._topic, None
        self._closed = True
        if topic is not None:
            self._store._release_topic(self._channel, topic)


# =============================================================================================
# The store
# =============================================================================================


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
        self.description = description or _describe_pool(redis.connection_pool)
        self._namespaces_key = f"{key_prefix}namespaces"
        self._list_channel = f"{key_prefix}chan:list"
        self._create = redis.register_script(_CREATE_LUA)
        self._update = redis.register_script(_UPDATE_LUA)
        self._put = redis.register_script(_PUT_LUA)
        self._delete = redis.register_script(_DELETE_LUA)
        self._last_known: OrderedDict[str, VersionedDtab | None] = OrderedDict()
        self._last_known_max_entries = last_known_max_entries
        self._last_list: tuple[str, ...] | None = None
        self._topics: dict[str, _Topic] = {}
        self._hub = _PubSubHub(
            self._make_pubsub_connection,
            self._on_channel_event,
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
        options.setdefault("description", _redact_url(url))
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
        watchers = sum(topic.refs for topic in self._topics.values())
        pubsub = "connected" if self._hub.connected else "down"
        state = "closed" if self._closed else f"pubsub {pubsub}"
        return (
            f"<RedisDtabStore {self.description} prefix={self.key_prefix!r} "
            f"[{state} | {len(self._topics)} channels, {watchers} watchers]>"
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
        topics = list(self._topics.values())
        self._topics.clear()
        for topic in topics:
            topic.close()
        await self._hub.aclose()
        for topic in topics:
            await topic.wait_closed()
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
            if isinstance(cached, _Unset):
                raise
            return cached

    async def _read_list(self) -> tuple[str, ...]:
        members = await self._read(lambda: self._redis.smembers(self._namespaces_key))
        names = tuple(sorted(_text(m) for m in members))
        self._last_list = names
        return names

    async def _read_dtab(self, namespace: str) -> VersionedDtab | None:
        dtab, version = await self._read(
            lambda: self._redis.hmget(self._dtab_key(namespace), ["dtab", "version"])
        )
        value = None if version is None else VersionedDtab(_text(dtab or ""), int(version))
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
        except _UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(exc) from exc
        except redis_errors.RedisError as exc:
            raise StorageError(f"Redis read failed: {exc}") from exc

    # -- last-known cache -------------------------------------------------------------------

    def _remember(self, namespace: str, value: VersionedDtab | None) -> None:
        self._last_known[namespace] = value
        self._last_known.move_to_end(namespace)
        while len(self._last_known) > self._last_known_max_entries:
            self._last_known.popitem(last=False)

    def _cached_dtab(self, namespace: str) -> VersionedDtab | _Unset | None:
        if namespace in self._last_known:
            self._last_known.move_to_end(namespace)
            return self._last_known[namespace]
        return _UNSET

    def _cached_list(self) -> tuple[str, ...] | _Unset:
        return _UNSET if self._last_list is None else self._last_list

    # -- writes -----------------------------------------------------------------------------

    async def create(self, namespace: str, dtab: str) -> int:
        """Create ``namespace`` with ``dtab``. It must not exist yet.

        Returns:
            The new version: 1 for a brand-new name, or one more than the last version this
            name ever had, if it was deleted before.

        Raises:
            InvalidNamespace: bad name. NamespaceExists: it already exists (409).
            StorageUnavailable: Redis is down; the write may or may not have happened.
        """
        status, version = await self._write(self._create, namespace, dtab, "")
        if status == _EXISTS:
            raise NamespaceExists(namespace)
        self._written(namespace, VersionedDtab(dtab, version), added=True)
        return version

    async def update(self, namespace: str, dtab: str, version: int) -> int:
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
        status, current = await self._write(self._update, namespace, dtab, str(version))
        if status == _NOT_FOUND:
            raise NamespaceNotFound(namespace)
        if status == _MISMATCH:
            raise VersionMismatch(namespace, expected=version, actual=current)
        self._written(namespace, VersionedDtab(dtab, current), added=False)
        return current

    async def put(self, namespace: str, dtab: str) -> int:
        """Set the dtab of ``namespace`` unconditionally, creating it if needed (upsert).

        Returns:
            The new version. Every put bumps it, even if the text is unchanged, as namerd does.

        Raises:
            InvalidNamespace: bad name.
            StorageUnavailable: Redis is down; the write may or may not have happened.
        """
        _, version = await self._write(self._put, namespace, dtab, "")
        self._written(namespace, VersionedDtab(dtab, version), added=True)
        return version

    async def delete(self, namespace: str) -> None:
        """Delete ``namespace``. Its version counter is kept; see "Versions" above.

        Raises:
            InvalidNamespace: bad name. NamespaceNotFound: it does not exist (404).
            StorageUnavailable: Redis is down; the delete may or may not have happened.
        """
        status, _ = await self._write(self._delete, namespace, "", "")
        if status == _NOT_FOUND:
            raise NamespaceNotFound(namespace)
        self._remember(namespace, None)
        if self._last_list is not None:
            self._last_list = tuple(n for n in self._last_list if n != namespace)

    async def _write(
        self, script: AsyncScript, namespace: str, dtab: str, expected_version: str
    ) -> tuple[int, int]:
        validate_namespace(namespace)
        if not isinstance(dtab, str):
            raise TypeError(f"dtab must be a str, not {type(dtab).__name__}")
        keys = [
            self._dtab_key(namespace),
            self._version_key(namespace),
            self._namespaces_key,
        ]
        args = [
            namespace,
            self._dtab_channel(namespace),
            self._list_channel,
            dtab,
            expected_version,
        ]
        try:
            status, version = await script(keys=keys, args=args)
        except _UNAVAILABLE_ERRORS as exc:
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
            self,
            self._dtab_channel(namespace),
            lambda: self._read_dtab(namespace),
            lambda: self._cached_dtab(namespace),
            _identity,
        )

    def watch_list(self) -> Watch[list[str]]:
        """Watch the set of namespaces: yields the sorted list of names on every change."""
        return Watch(self, self._list_channel, self._read_list, self._cached_list, list)

    def _acquire_topic(
        self,
        channel: str,
        load: Callable[[], Awaitable[object]],
        fallback: Callable[[], object],
    ) -> _Topic:
        if self._closed:
            raise RuntimeError("the store is closed")
        topic = self._topics.get(channel)
        if topic is None:
            topic = _Topic(
                load,
                fallback,
                lambda: self._hub.connected,
                retry_min_s=self.reconnect_min_s,
                retry_max_s=self.reconnect_max_s,
            )
            self._topics[channel] = topic
            self._hub.add(channel)
            # Read at once, rather than after the SUBSCRIBE confirmation, so the first value
            # does not wait for a round trip; the confirmation triggers one more read anyway.
            topic.mark_dirty()
        topic.refs += 1
        return topic

    def _release_topic(self, channel: str, topic: _Topic) -> None:
        topic.refs -= 1
        if topic.refs == 0 and self._topics.get(channel) is topic:
            del self._topics[channel]
            topic.close()
            self._hub.remove(channel)

    def _on_channel_event(self, channel: str) -> None:
        topic = self._topics.get(channel)
        if topic is not None:
            topic.mark_dirty()

    def _make_pubsub_connection(self) -> AbstractConnection:
        pool = self._redis.connection_pool
        kwargs = resp2_connection_kwargs(pool.connection_kwargs)
        # No retries: _PubSubHub backs off.
        kwargs.update(retry=Retry(NoBackoff(), 0))
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection


#: Connection settings redis-py >= 7 adds to TCP pools for "maintenance notifications"; they
#: need RESP3, so a RESP2 connection built with them raises in its constructor.
_RESP3_ONLY_KWARGS: Final = (
    "maint_notifications_config",
    "maint_notifications_pool_handler",
    "oss_cluster_maint_notifications_handler",
)


def resp2_connection_kwargs(pool_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A pool's connection settings for our own RESP2 connection (pub/sub readers).

    RESP2 so that pub/sub messages arrive as plain arrays; same host, socket, password and TLS.
    Settings that only work with RESP3 are dropped (redis-py >= 7 sets them on TCP pools, and
    the connection would refuse to be built: no pub/sub, so no watch, over any redis:// URL).
    """
    kwargs = {k: v for k, v in pool_kwargs.items() if k not in _RESP3_ONLY_KWARGS}
    kwargs["protocol"] = 2
    return kwargs


def _identity(value: Any) -> Any:
    return value


def _describe_pool(pool: Any) -> str:
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    return repr(pool)


def _redact_url(url: str) -> str:
    """Hide a password in a Redis URL, so it can be logged and put in error messages."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
