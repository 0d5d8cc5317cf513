"""What every Redis user in namerd shares: the "Redis is down" errors, reply decoding, and the
private RESP2 connection that pub/sub readers use.

namerd talks to Redis through one ``redis.asyncio.Redis`` client per worker, built by the store
(``RedisDtabStore.from_url`` / ``from_sentinel``) with redis-py's retries off, so a write is
never sent twice behind our back. Pub/sub readers (``namerd.storage.pubsub``) do not use that
client's pool: each makes its own connection from the pool's connection class and settings
(same host, unix socket, password, TLS and Sentinel discovery), forced to RESP2 so that
messages arrive as plain arrays, and with retries off, because the reader alone reconnects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import redis.asyncio as aioredis
import redis.exceptions as redis_errors
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = [
    "UNAVAILABLE_ERRORS",
    "describe_pool",
    "pubsub_connection_factory",
    "redact_url",
    "resp2_connection_kwargs",
    "text",
]

#: Errors that mean "Redis cannot be reached right now", not "Redis refused this command".
#: BusyLoadingError (the server is replaying its AOF) and Sentinel's MasterNotFoundError are
#: ConnectionError subclasses. ReadOnlyError means we reached a replica, e.g. during a
#: failover. OSError also covers the builtin TimeoutError.
UNAVAILABLE_ERRORS: Final = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
)


def text(value: object) -> str:
    """A Redis reply element as str, whether the client decodes responses or not."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return str(value)


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


def pubsub_connection_factory(redis: aioredis.Redis) -> Callable[[], AbstractConnection]:
    """Make connections like ``redis``'s pool does, as RESP2 and without retries.

    Retries are off because the pub/sub reader backs off and reconnects itself, and must know
    each time it does (every reconnect means a re-read).
    """

    def make() -> AbstractConnection:
        pool = redis.connection_pool
        kwargs = resp2_connection_kwargs(pool.connection_kwargs)
        kwargs.update(retry=Retry(NoBackoff(), 0))
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection

    return make


def describe_pool(pool: Any) -> str:
    """Where a connection pool connects to, for messages (no password)."""
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    return repr(pool)


def redact_url(url: str) -> str:
    """Hide a password in a Redis URL, so it can be logged and put in error messages."""
    return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)
