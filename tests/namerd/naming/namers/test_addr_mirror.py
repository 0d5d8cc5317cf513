"""AddrMirror against a real redis-server: replicas converge on the value in Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path as FsPath

import pytest
import redis.asyncio as aioredis

from namerd.naming.namers import AddrMirror, NamerUnavailable, Notifier
from namerd.storage.embedded_redis import EmbeddedRedis
from shared import ADDR_NEG, ADDR_PENDING, AddrBound, Address, AddrFailed, Path
from shared.wire import addr_to_json, encode

from . import changed, eventually, redis_client, restart_with_changes

pytestmark = pytest.mark.redis

USERS = Path.read("/#/io.l5d.fs/users")
WEB = Path.read("/$/inet/web.internal/80")
ONE = AddrBound(frozenset({Address("10.0.0.1", 80, {"endpoint_addr_weight": 0.5})}))
TWO = AddrBound(frozenset({Address("10.0.0.1", 80), Address("10.0.0.2", 80)}))

# Fast reconnects so the outage test finishes quickly.
RECONNECT_MIN_S = 0.01
RECONNECT_MAX_S = 0.1


@asynccontextmanager
async def running(
    client: aioredis.Redis, notifier: Notifier | None = None
) -> AsyncIterator[AddrMirror]:
    mirror = AddrMirror(
        client,
        notifier=notifier,
        reconnect_min_s=RECONNECT_MIN_S,
        reconnect_max_s=RECONNECT_MAX_S,
    )
    await mirror.start()
    try:
        yield mirror
    finally:
        await mirror.close()


def test_publish_get_and_key_layout(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        notifier = Notifier()
        try:
            async with running(client, notifier) as mirror:
                assert mirror.get(USERS) is None
                assert await mirror.publish(USERS, ONE) is True
                assert mirror.get(USERS) == ONE
                assert notifier.generation == 1
                # The same value again: Redis is not written, nothing is published.
                assert await mirror.publish(USERS, ONE) is False
                assert notifier.generation == 1

                assert await client.hget("namerd:addrs", "/#/io.l5d.fs/users") == encode(
                    addr_to_json(ONE)
                ).encode("utf-8")

                for value in (ADDR_NEG, AddrFailed("no such host"), AddrBound()):
                    assert await mirror.publish(WEB, value) is True
                    assert mirror.get(WEB) == value
                # pending is never published: it would hide another replica's real answer.
                assert await mirror.publish(WEB, ADDR_PENDING) is False
                assert mirror.get(WEB) == AddrBound()
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("decode_responses", [False, True])
def test_replicas_see_each_others_values(
    redis_server: EmbeddedRedis, decode_responses: bool
) -> None:
    async def main() -> None:
        client_a = redis_client(redis_server, decode_responses=decode_responses)
        client_b = redis_client(redis_server, decode_responses=not decode_responses)
        notifier_b = Notifier()
        try:
            async with running(client_a) as a:
                await a.publish(USERS, ONE)
                # A replica that starts later loads what is already there.
                async with running(client_b, notifier_b) as b:
                    assert b.get(USERS) == ONE
                    gen = notifier_b.generation
                    await a.publish(USERS, TWO)
                    await changed(notifier_b, gen)
                    await eventually(lambda: b.get(USERS) == TWO, "b to see a's value")
                    # Last writer wins, everywhere.
                    await b.publish(USERS, ONE)
                    await eventually(lambda: a.get(USERS) == ONE, "a to see b's value")
        finally:
            await client_a.aclose()
            await client_b.aclose()

    asyncio.run(main())


def test_outage_keeps_values_and_reload_after_restart(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        try:
            async with running(client) as mirror:
                await mirror.publish(USERS, ONE)
                await mirror.publish(WEB, TWO)
                await asyncio.to_thread(redis_server.stop)
                await eventually(lambda: not mirror._feed.connected, "the disconnect")
                assert mirror.get(USERS) == ONE
                with pytest.raises(NamerUnavailable, match="Redis is unavailable"):
                    await mirror.publish(USERS, TWO)
                assert mirror.get(USERS) == ONE

                async def change(other: EmbeddedRedis) -> None:
                    other_client = redis_client(other)
                    try:
                        await other_client.hset(
                            "namerd:addrs", USERS.show(), encode(addr_to_json(TWO))
                        )
                        await other_client.hdel("namerd:addrs", WEB.show())
                    finally:
                        await other_client.aclose()

                await restart_with_changes(redis_server, change)
                await eventually(
                    lambda: mirror.get(USERS) == TWO and mirror.get(WEB) is None,
                    "the reload after reconnect",
                )
        finally:
            await client.aclose()

    asyncio.run(main())


def test_start_fails_clearly_without_redis(tmp_path: FsPath) -> None:
    async def main() -> None:
        client = aioredis.Redis(unix_socket_path=f"{tmp_path}/nobody.sock")
        mirror = AddrMirror(
            client, reconnect_min_s=RECONNECT_MIN_S, reconnect_max_s=RECONNECT_MAX_S
        )
        try:
            with pytest.raises(NamerUnavailable, match="could not load namerd:addrs"):
                await mirror.start(timeout_s=0.3)
        finally:
            await mirror.close()
            await client.aclose()

    asyncio.run(main())
