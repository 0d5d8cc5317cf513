"""``AddrMirror``: address sets resolved by any replica, kept in Redis so all replicas agree.

Two namerd replicas can resolve the same id differently for a while (DNS round robin, a
directory synced to one host before the other). The replica that resolves an id publishes the
result here, and every replica serves what Redis holds, so linkers behind different replicas
see one answer.

Redis layout (``P`` is the key prefix, ``namerd:`` by default)
--------------------------------------------------------------
=====================  ====  ==============================================================
``P addrs``            hash  field = bound id (``Path.show()``), value = the Addr's JSON
                             (``shared.wire.addr_to_json`` + ``encode``, namerd's shape)
``P chan:addrs``       chan  payload ``<id>\\n<json>``, published when a value changes
=====================  ====  ==============================================================

An id's text never holds a newline (``Path.show()`` escapes it), so the payload splits on the
first one. The value travels in the message, so applying messages needs no read; they arrive
in the order Redis published them, so the mirror ends on the latest value. After every
(re)subscription the whole hash is read again (``HGETALL``), except ids a message updated while
that read was in flight, which are already newer.

``pending`` is never published: namerd never sends it, and it would overwrite a real answer
held by another replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Final

import redis.asyncio as aioredis

from namerd.aio import cancel_and_wait, reconnect_delay_s
from namerd.naming.namers.base import NamerUnavailable, Notifier
from namerd.storage.connection import UNAVAILABLE_ERRORS, text
from namerd.storage.pubsub import ChannelFeed
from shared import ADDR_PENDING, Addr, Path
from shared.wire import WireFormatError, addr_from_json, addr_to_json, encode

__all__ = ["DEFAULT_KEY_PREFIX", "AddrMirror"]

log = logging.getLogger(__name__)

DEFAULT_KEY_PREFIX: Final = "namerd:"

# KEYS: the addrs hash. ARGV: id, JSON, channel. Writes and publishes only a changed value.
_PUBLISH_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. '\\n' .. ARGV[2])
return 1
"""


class AddrMirror:
    """A Redis hash of id -> Addr JSON, mirrored in memory through pub/sub.

    Args:
        redis: the client.
        key_prefix: prefix of the key and channel. Default ``namerd:``.
        notifier: if given, fired whenever the in-memory mirror changes: with the id as the
            topic when one id changed, with no topic after a full reload.
        reconnect_min_s / reconnect_max_s: backoff bounds after a Redis failure. Defaults
            0.05 s and 2 s.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        notifier: Notifier | None = None,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
    ) -> None:
        self._redis = redis
        self._key = f"{key_prefix}addrs"
        self._channel = f"{key_prefix}chan:addrs"
        self._notifier = notifier
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._script = redis.register_script(_PUBLISH_LUA)
        self._values: dict[str, Addr] = {}
        self._touched: set[str] = set()  # ids set by messages during a full reload
        self._reload_wanted = asyncio.Event()
        self._loaded_once = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._feed = ChannelFeed(
            redis,
            self._channel,
            on_message=self._on_message,
            on_subscribed=self._reload_wanted.set,
            name="addr-mirror-pubsub",
            reconnect_min_s=reconnect_min_s,
            reconnect_max_s=reconnect_max_s,
        )

    def __repr__(self) -> str:
        return f"<AddrMirror {self._key} [{len(self._values)} ids, {self._feed!r}]>"

    async def start(self, timeout_s: float = 10.0) -> None:
        """Subscribe and load the whole hash.

        Args:
            timeout_s: how long to wait for the first load. Default 10 s.

        Raises:
            NamerUnavailable: the hash could not be loaded within ``timeout_s``.
        """
        self._feed.start()
        self._task = asyncio.get_running_loop().create_task(self._reload_loop(), name="addr-mirror")
        try:
            await asyncio.wait_for(self._loaded_once.wait(), timeout=timeout_s)
        except TimeoutError:
            cause = self._feed.last_error or "no reply"
            await self.close()
            raise NamerUnavailable(
                f"addr mirror: could not load {self._key} from Redis within {timeout_s} s: {cause}"
            ) from None

    async def close(self) -> None:
        """Stop the subscription. Calling it again does nothing."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        await self._feed.close()

    def get(self, id: Path) -> Addr | None:
        """The last value of ``id`` this process saw in Redis, or None if it saw none."""
        return self._values.get(id.show())

    async def publish(self, id: Path, addr: Addr) -> bool:
        """Store ``addr`` as the answer for ``id``, if it differs from what Redis holds.

        Returns:
            True if Redis changed (and the change was published).

        Raises:
            NamerUnavailable: Redis is down.
        """
        if addr is ADDR_PENDING:
            return False
        field, value = id.show(), encode(addr_to_json(addr))
        try:
            changed = int(await self._script(keys=[self._key], args=[field, value, self._channel]))
        except UNAVAILABLE_ERRORS as exc:
            raise NamerUnavailable(f"addr mirror: Redis is unavailable ({exc})") from exc
        # Redis now holds our value, whether we wrote it or it was there already.
        self._set(field, addr)
        return changed == 1

    def _set(self, field: str, addr: Addr) -> None:
        if self._values.get(field) != addr:
            self._values[field] = addr
            if self._notifier is not None:
                self._notifier.notify(field)  # the id as the topic: only its watches re-render

    def _on_message(self, payload: str) -> None:
        field, sep, value = payload.partition("\n")
        addr = _decode(field, value) if sep else None
        if addr is not None:
            self._touched.add(field)
            self._set(field, addr)

    async def _reload_loop(self) -> None:
        failures = 0
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted.clear()
            self._touched = set()
            try:
                raw = await self._redis.hgetall(self._key)
            except UNAVAILABLE_ERRORS as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "addr mirror: cannot read %s (%s); keeping the last-known values",
                    self._key,
                    exc,
                )
                await asyncio.sleep(
                    reconnect_delay_s(failures, self.reconnect_min_s, self.reconnect_max_s)
                )
                self._reload_wanted.set()
                continue
            failures = 0
            loaded = {text(k): _decode(text(k), text(v)) for k, v in raw.items()}
            fresh = {k: v for k, v in loaded.items() if v is not None}
            changed = False
            for field in set(self._values) | set(fresh):
                if field in self._touched:
                    continue  # a message newer than our read already set it
                new = fresh.get(field)
                if new is None:
                    changed |= self._values.pop(field, None) is not None
                elif self._values.get(field) != new:
                    self._values[field] = new
                    changed = True
            if changed and self._notifier is not None:
                self._notifier.notify()
            self._loaded_once.set()


def _decode(field: str, value: str) -> Addr | None:
    try:
        return addr_from_json(json.loads(value))
    except (ValueError, WireFormatError) as exc:
        log.warning("addr mirror: ignoring a bad value for %s: %s", field, exc)
        return None
