"""io.l5d.registry against a real redis-server: TTLs, heartbeats, replicas, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import ip_network
from typing import Any

import pytest
import redis.asyncio as aioredis

from namerd.naming.namers import (
    NamerConfigError,
    NamerUnavailable,
    Notifier,
    NotRegistered,
    RegistryNamer,
    build_namer,
)
from namerd.naming.namers.registry import AddressPolicy, BadWeight
from namerd.storage.embedded_redis import EmbeddedRedis
from shared import ADDR_NEG, NEG, AddrBound, Address, Bound, Leaf, Path
from shared.addr import WEIGHT_META_KEY as WEIGHT

from . import changed, eventually, redis_client, restart_with_changes

pytestmark = pytest.mark.redis

PREFIX = Path.read("/#/io.l5d.registry")

# Short intervals so expiry and reconnects happen within a test; waits stay bounded.
SWEEP_INTERVAL_S = 0.1
SHORT_TTL_S = 0.3
LONG_TTL_S = 60.0  # for endpoints that must not expire during a test
HEARTBEAT_TTL_S = 1.0  # heartbeats come every 0.1 s: ten of them fit in one TTL
HEARTBEAT_EVERY_S = 0.1
RECONNECT_OPTIONS: dict[str, Any] = {"reconnect_min_s": 0.01, "reconnect_max_s": 0.1}


def _id(service: str) -> Path:
    return PREFIX + Path(service)


def _addrs(namer: RegistryNamer, service: str) -> set[tuple[str, int]]:
    addr = namer.addr(_id(service))
    return {(a.ip, a.port) for a in addr.addrs} if isinstance(addr, AddrBound) else set()


@asynccontextmanager
async def running(
    client: aioredis.Redis, notifier: Notifier | None = None, **options: Any
) -> AsyncIterator[RegistryNamer]:
    namer = RegistryNamer(
        PREFIX,
        notifier or Notifier(),
        client,
        sweep_interval_s=SWEEP_INTERVAL_S,
        # These tests register ::1 too; the address policy has tests of its own.
        address_policy=AddressPolicy(allow=[ip_network("10.0.0.0/8"), ip_network("::1/128")]),
        **{**RECONNECT_OPTIONS, **options},
    )
    await namer.start()
    try:
        yield namer
    finally:
        await namer.close()


def test_register_lookup_deregister_forget(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        notifier = Notifier()
        try:
            async with running(client, notifier) as namer:
                assert namer.lookup(Path.read("/users")) is NEG
                assert namer.addr(_id("users")) is ADDR_NEG
                assert namer.enumerate() == []

                gen = notifier.generation
                await namer.register("users", "10.0.0.1", 8080, LONG_TTL_S, {"zone": "a"})
                # Read-your-writes: visible as soon as register() returns.
                assert notifier.generation > gen
                assert namer.lookup(Path.read("/users/rest")) == Leaf(
                    Bound(_id("users"), Path.read("/rest"))
                )
                await namer.register("users", "::1", 8081, LONG_TTL_S)
                assert namer.addr(_id("users")) == AddrBound(
                    frozenset({Address("10.0.0.1", 8080, {"zone": "a"}), Address("::1", 8081)})
                )
                assert namer.enumerate() == [_id("users")]

                # Re-registering with the same meta is not a change.
                gen = notifier.generation
                await namer.register("users", "10.0.0.1", 8080, LONG_TTL_S, {"zone": "a"})
                assert notifier.generation == gen
                # New meta is.
                await namer.register("users", "10.0.0.1", 8080, LONG_TTL_S, {"zone": "b"})
                assert notifier.generation > gen
                users = namer.addr(_id("users"))
                assert isinstance(users, AddrBound)
                assert Address("10.0.0.1", 8080, {"zone": "b"}) in users.addrs

                assert await namer.deregister("users", "10.0.0.1", 8080) is True
                assert await namer.deregister("users", "10.0.0.1", 8080) is False
                assert await namer.deregister("users", "::1", 8081) is True
                # No live endpoint, but the service is known: it still binds, to nothing.
                assert namer.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))
                assert namer.addr(_id("users")) == AddrBound()

                assert await namer.forget("users") is True
                assert namer.lookup(Path.read("/users")) is NEG
                assert namer.addr(_id("users")) is ADDR_NEG
                assert await namer.forget("users") is False
        finally:
            await client.aclose()

    asyncio.run(main())


def test_redis_key_layout(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        try:
            async with running(client) as namer:
                await namer.register("web", "10.0.0.1", 80, LONG_TTL_S, {"k": 1})
                await namer.register("web", "::1", 81, LONG_TTL_S)
                assert await client.smembers("namerd:registry:services") == {b"web"}
                members = await client.zrange("namerd:registry:endpoints:web", 0, -1)
                assert sorted(members) == [b"10.0.0.1:80", b"[::1]:81"]
                assert await client.hgetall("namerd:registry:meta:web") == {
                    b"10.0.0.1:80": b'{"k":1}'
                }
                # Scores are expiry times in ms of the server's clock.
                seconds, micros = await client.time()
                score = await client.zscore("namerd:registry:endpoints:web", "10.0.0.1:80")
                assert score is not None
                now_ms = seconds * 1000 + micros // 1000
                assert 0 < score - now_ms <= LONG_TTL_S * 1000
        finally:
            await client.aclose()

    asyncio.run(main())


def test_argument_validation(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        try:
            async with running(client) as namer:
                with pytest.raises(ValueError, match="IPv4 or IPv6"):
                    await namer.register("web", "example.com", 80, 1.0)
                with pytest.raises(ValueError, match="path label"):
                    await namer.register("a/b", "10.0.0.1", 80, 1.0)
                with pytest.raises(ValueError, match="path label"):
                    await namer.register("", "10.0.0.1", 80, 1.0)
                with pytest.raises(ValueError, match="port"):
                    await namer.register("web", "10.0.0.1", 0, 1.0)
                with pytest.raises(ValueError, match="ttl_s"):
                    await namer.register("web", "10.0.0.1", 80, 0)
                with pytest.raises(ValueError, match="flat map"):
                    await namer.register("web", "10.0.0.1", 80, 1.0, {"x": object()})
                assert namer.services() == []
        finally:
            await client.aclose()

    asyncio.run(main())


def test_weights_follow_the_shared_rule(redis_server: EmbeddedRedis) -> None:
    """A bad endpoint_addr_weight is refused on register and ignored if found in Redis."""

    async def main() -> None:
        client = redis_client(redis_server)
        try:
            async with running(client) as namer:
                for bad in (-1, float("nan"), "heavy", True):
                    with pytest.raises(BadWeight, match="endpoint_addr_weight") as info:
                        await namer.register("web", "10.0.0.1", 80, 1.0, {WEIGHT: bad})
                    assert info.value.http_status == 400  # the API's answer
                await namer.register("web", "10.0.0.1", 80, LONG_TTL_S, {WEIGHT: 0})
                # Written behind the namer's back (or by an older namerd): served without it.
                await client.hset(
                    "namerd:registry:meta:web", "10.0.0.1:80", '{"endpoint_addr_weight":-2,"z":1}'
                )
                await namer.register("web", "10.0.0.2", 80, LONG_TTL_S, {WEIGHT: 2.5})
                addr = namer.addr(_id("web"))
                assert isinstance(addr, AddrBound)
                assert {a.ip: a.meta for a in addr.addrs} == {
                    "10.0.0.1": {"z": 1},
                    "10.0.0.2": {WEIGHT: 2.5},
                }
        finally:
            await client.aclose()

    asyncio.run(main())


def test_heartbeat_keeps_alive_and_ttl_expires(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        notifier = Notifier()
        try:
            async with running(client, notifier) as namer:
                with pytest.raises(NotRegistered, match="not registered"):
                    await namer.heartbeat("users", "10.0.0.1", 80, HEARTBEAT_TTL_S)

                await namer.register("users", "10.0.0.1", 80, HEARTBEAT_TTL_S)
                for _ in range(5):
                    await asyncio.sleep(HEARTBEAT_EVERY_S)
                    await namer.heartbeat("users", "10.0.0.1", 80, HEARTBEAT_TTL_S)
                    assert _addrs(namer, "users") == {("10.0.0.1", 80)}

                # A short TTL and no heartbeat: the sweeper removes it and notifies.
                await namer.register("users", "10.0.0.2", 80, SHORT_TTL_S)
                gen = notifier.generation
                await eventually(
                    lambda: ("10.0.0.2", 80) not in _addrs(namer, "users"), "the TTL to expire"
                )
                assert notifier.generation > gen
                with pytest.raises(NotRegistered):
                    await namer.heartbeat("users", "10.0.0.2", 80, SHORT_TTL_S)
                assert await client.hget("namerd:registry:meta:users", "10.0.0.2:80") is None
                # Stop the heartbeats of the first: it expires too, the service stays known.
                await namer.heartbeat("users", "10.0.0.1", 80, SHORT_TTL_S)
                await eventually(lambda: _addrs(namer, "users") == set(), "the last expiry")
                assert namer.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))
        finally:
            await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("decode_responses", [False, True])
def test_two_instances_share_one_registry(
    redis_server: EmbeddedRedis, decode_responses: bool
) -> None:
    async def main() -> None:
        client_a = redis_client(redis_server, decode_responses=decode_responses)
        client_b = redis_client(redis_server, decode_responses=not decode_responses)
        notifier_b = Notifier()
        try:
            async with running(client_a) as a, running(client_b, notifier_b) as b:
                gen = notifier_b.generation
                await a.register("users", "10.0.0.1", 80, LONG_TTL_S)
                await changed(notifier_b, gen)
                await eventually(lambda: _addrs(b, "users") == {("10.0.0.1", 80)}, "b to see a")
                assert b.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))

                await b.register("users", "10.0.0.2", 80, SHORT_TTL_S)
                await eventually(
                    lambda: _addrs(a, "users") == {("10.0.0.1", 80), ("10.0.0.2", 80)},
                    "a to see b",
                )
                # Whichever instance sweeps the expired endpoint, both see it go.
                await eventually(
                    lambda: _addrs(a, "users") == _addrs(b, "users") == {("10.0.0.1", 80)},
                    "both to see the expiry",
                )
                await b.forget("users")
                await eventually(lambda: a.lookup(Path.read("/users")) is NEG, "a to forget")
        finally:
            await client_a.aclose()
            await client_b.aclose()

    asyncio.run(main())


def test_mirror_survives_redis_outage_and_resyncs(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        try:
            async with running(client) as namer:
                await namer.register("users", "10.0.0.1", 80, LONG_TTL_S)
                await namer.register("users", "10.0.0.2", 80, LONG_TTL_S)
                await eventually(lambda: namer.redis_connected, "the subscription")

                # Redis goes away: the last-known registry keeps being served.
                await asyncio.to_thread(redis_server.stop)
                await eventually(lambda: not namer.redis_connected, "the disconnect")
                assert _addrs(namer, "users") == {("10.0.0.1", 80), ("10.0.0.2", 80)}
                assert namer.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))
                with pytest.raises(NamerUnavailable, match="Redis is unavailable"):
                    await namer.register("users", "10.0.0.3", 80, LONG_TTL_S)
                assert _addrs(namer, "users") == {("10.0.0.1", 80), ("10.0.0.2", 80)}

                # Redis returns with data changed behind our back (no message reached us).
                async def change(other: EmbeddedRedis) -> None:
                    other_client = redis_client(other)
                    try:
                        async with running(other_client) as elsewhere:
                            await elsewhere.deregister("users", "10.0.0.2", 80)
                            await elsewhere.register("orders", "10.0.0.9", 90, LONG_TTL_S)
                    finally:
                        await other_client.aclose()

                await restart_with_changes(redis_server, change)
                await eventually(
                    lambda: (
                        namer.services() == ["orders", "users"]
                        and _addrs(namer, "users") == {("10.0.0.1", 80)}
                    ),
                    "the re-sync after reconnect",
                )
                assert _addrs(namer, "orders") == {("10.0.0.9", 90)}
                # And it is live again.
                await namer.register("users", "10.0.0.3", 80, LONG_TTL_S)
                assert ("10.0.0.3", 80) in _addrs(namer, "users")
        finally:
            await client.aclose()

    asyncio.run(main())


def test_start_fails_clearly_without_redis(tmp_path: Any) -> None:
    async def main() -> None:
        client = aioredis.Redis(unix_socket_path=str(tmp_path / "nobody.sock"))
        namer = RegistryNamer(PREFIX, Notifier(), client, start_timeout_s=0.3, **RECONNECT_OPTIONS)
        try:
            with pytest.raises(NamerUnavailable, match="could not load the registry"):
                await namer.start()
            with pytest.raises(RuntimeError, match="not running"):
                await namer.register("users", "10.0.0.1", 80, 1.0)
        finally:
            await namer.close()
            await client.aclose()

    asyncio.run(main())


def test_build_namer_registry(redis_server: EmbeddedRedis) -> None:
    async def main() -> None:
        client = redis_client(redis_server)
        try:
            namer = build_namer(
                "io.l5d.registry",
                None,
                {"kind": "io.l5d.registry", "keyPrefix": "test:", "sweepIntervalSecs": 0.5},
                Notifier(),
                client,
            )
            assert isinstance(namer, RegistryNamer)
            assert namer.prefix == PREFIX
            assert namer.sweep_interval_s == 0.5
            await namer.start()
            try:
                await namer.register("web", "10.0.0.1", 80, LONG_TTL_S)
                assert await client.smembers("test:registry:services") == {b"web"}
            finally:
                await namer.close()
        finally:
            await client.aclose()

        with pytest.raises(NamerConfigError, match="needs Redis"):
            build_namer("io.l5d.registry", None, {}, Notifier(), None)
        with pytest.raises(NamerConfigError, match="unknown config key 'ttl'"):
            build_namer("io.l5d.registry", None, {"ttl": 1}, Notifier(), client)

    asyncio.run(main())


def test_registry_works_over_a_tcp_url(tcp_redis_port: int) -> None:
    # The mirror's pub/sub connection over TCP (redis:// URLs: every real deployment).
    async def main() -> None:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{tcp_redis_port}/0")
        try:
            async with running(client) as a, running(client) as b:
                await a.register("users", "10.0.0.1", 8080, ttl_s=LONG_TTL_S)
                await eventually(
                    lambda: _addrs(b, "users") == {("10.0.0.1", 8080)}, "b sees a's endpoint"
                )
        finally:
            await client.aclose()

    asyncio.run(main())
