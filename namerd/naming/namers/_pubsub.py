"""One Redis pub/sub subscription that survives Redis restarts: the feed behind every mirror.

A mirror (the registry namer's services, the AddrMirror's addresses) is an in-memory copy of
Redis data, kept fresh by messages on one channel. Messages sent while we are disconnected are
lost for good, so after every (re)subscription the owner must re-read everything. The feed
reports that moment with ``on_subscribed()``: the server has confirmed the SUBSCRIBE, so every
later change will arrive as a message, and a full read started now misses nothing.

The connection is our own, made from the client pool's connection class and settings (same
host, socket path, password, TLS), forced to RESP2 so messages arrive as plain arrays, and with
redis-py's retries off: this loop alone reconnects, with jittered backoff, and so it alone
knows when a re-read is due. redis-py's ``PubSub`` would reconnect and re-subscribe inside
``get_message`` without telling us.

A Redis that hangs without closing the socket (SIGSTOP, a dropped network) is detected by a PING
after ``ping_interval_s`` of silence; no reply within another interval ends the session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from namerd.aio import cancel_and_wait, reconnect_delay_s
from namerd.storage.store import resp2_connection_kwargs

__all__ = ["UNAVAILABLE_ERRORS", "ChannelFeed", "text"]

log = logging.getLogger(__name__)

#: Errors meaning "Redis cannot be reached right now" (not "Redis refused the command").
#: BusyLoadingError (replaying the AOF) is a ConnectionError; OSError covers TimeoutError.
UNAVAILABLE_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)


def text(value: object) -> str:
    """A Redis reply as str, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return str(value)


class ChannelFeed:
    """Subscribe to one channel and keep it subscribed, reconnecting as needed.

    Args:
        redis: the client whose connection settings are copied.
        channel: the channel to subscribe to.
        on_message: called with each message payload (as str).
        on_subscribed: called each time the server confirms the subscription (first connect
            and every reconnect); re-read everything then.
        name: for logs and the task name.
        reconnect_min_s: the first wait before reconnecting. Default 0.05 s.
        reconnect_max_s: the longest wait; the backoff doubles up to it. Default 2 s.
        ping_interval_s: silence after which we PING; as long again without a reply ends the
            connection. Default 15 s.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        *,
        on_message: Callable[[str], None],
        on_subscribed: Callable[[], None],
        name: str,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 2.0,
        ping_interval_s: float = 15.0,
    ) -> None:
        if not 0 < reconnect_min_s <= reconnect_max_s or ping_interval_s <= 0:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s and ping_interval_s > 0")
        self._redis = redis
        self.channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self.name = name
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.ping_interval_s = ping_interval_s
        self.connected = False  # True between a subscribe confirmation and a disconnect
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "subscribed" if self.connected else f"down ({self.last_error})"
        return f"<ChannelFeed {self.channel} [{state}]>"

    def start(self) -> None:
        """Start the connection task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Stop the task and disconnect. Calling it again does nothing."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait([task])
        self.connected = False

    def _make_connection(self) -> AbstractConnection:
        pool = self._redis.connection_pool
        kwargs = resp2_connection_kwargs(pool.connection_kwargs)
        kwargs.update(retry=Retry(NoBackoff(), 0))
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection

    async def _run(self) -> None:
        failures = 0
        while True:
            conn = self._make_connection()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SUBSCRIBE", self.channel, check_health=False)
                if failures:
                    log.info("%s: reconnected to Redis after %d failures", self.name, failures)
                failures = 0
                await self._read_loop(conn)
            except (redis_errors.RedisError, OSError) as exc:
                failures += 1
                self.last_error = str(exc) or type(exc).__name__
                # Warn once per outage; the retries are at DEBUG.
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "%s: Redis pub/sub unavailable (%s); retrying", self.name, exc)
            finally:
                self.connected = False
                await conn.disconnect(nowait=True)
            await asyncio.sleep(
                reconnect_delay_s(max(failures, 1), self.reconnect_min_s, self.reconnect_max_s)
            )

    async def _read_loop(self, conn: AbstractConnection) -> None:
        ping_outstanding = False
        while True:
            # With an explicit timeout, read_response returns None on silence instead of
            # raising; the parser keeps a partial reply buffered, so nothing is lost.
            reply = await conn.read_response(timeout=self.ping_interval_s)
            if reply is None:
                if ping_outstanding:
                    raise redis_errors.TimeoutError(
                        f"no reply to PING within {self.ping_interval_s} s"
                    )
                await conn.send_command("PING", check_health=False)
                ping_outstanding = True
                continue
            ping_outstanding = False  # any traffic proves the server is alive
            if not isinstance(reply, list) or len(reply) < 2:
                continue
            kind = text(reply[0]).lower()
            if kind == "subscribe":
                self.connected = True
                self.last_error = None
                self._on_subscribed()
            elif kind == "message" and len(reply) >= 3:
                self._on_message(text(reply[2]))
