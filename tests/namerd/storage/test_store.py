"""RedisDtabStore against a real redis-server: CRUD, compare-and-set, watches, and outages.

pytest runs in trio mode, so each asyncio test is a plain function that calls
``asyncio.run()`` on an inner coroutine. Every wait is bounded by ``WAIT_S``, and no test
asserts on wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection

from namerd.errors import (
    EmbeddedRedisError,
    InvalidNamespace,
    NamerdError,
    NamespaceExists,
    NamespaceNotFound,
    StorageError,
    StorageUnavailable,
    VersionMismatch,
)
from namerd.storage.embedded_redis import EmbeddedRedis
from namerd.storage.store import RedisDtabStore, VersionedDtab, validate_namespace
from namerd.storage.watches import Watch

T = TypeVar("T")

# Upper bound for each wait. It only limits how long a broken test hangs.
WAIT_S = 10.0

StoreFactory = Callable[..., RedisDtabStore]


async def next_value(watch: Watch[T]) -> T:
    async with asyncio.timeout(WAIT_S):
        return await anext(watch)


async def until_value(watch: Watch[T], expected: T) -> T:
    """Consume values until ``expected`` arrives. For recoveries, where the order of
    intermediate values is not specified."""
    async with asyncio.timeout(WAIT_S):
        while (value := await anext(watch)) != expected:
            pass
        return value


async def eventually(attempt: Callable[[], Awaitable[T]]) -> T:
    """Retry ``attempt`` until it returns something truthy without StorageUnavailable."""
    async with asyncio.timeout(WAIT_S):
        while True:
            with contextlib.suppress(StorageUnavailable):
                if result := await attempt():
                    return result
            await asyncio.sleep(0.01)


async def numsub(admin: aioredis.Redis, channel: str) -> int:
    _, count = await admin.execute_command("PUBSUB", "NUMSUB", channel)
    return int(count)


async def subscribed_clients(admin: aioredis.Redis) -> int:
    """How many connections hold at least one channel subscription."""
    return sum(1 for client in await admin.client_list() if int(client["sub"]) > 0)


def kill(server: EmbeddedRedis) -> None:
    process = server.process
    assert process is not None
    process.kill()
    process.wait()


# =============================================================================================
# Pure parts: names, errors, backoff, construction
# =============================================================================================


@pytest.mark.parametrize("name", ["default", "a", "A-b_c.d", "1.2.3", "x" * 128])
def test_valid_namespace_names(name: str) -> None:
    assert validate_namespace(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must not be empty"),
        ("x" * 129, "129 characters long; the limit is 128"),
        ("a/b", "only letters, digits"),
        ("a:b", "only letters, digits"),
        ("a b", "only letters, digits"),
        ("{tag}", "only letters, digits"),
        ("naïve", "only letters, digits"),
        ("line\n", "only letters, digits"),
    ],
)
def test_invalid_namespace_names(name: str, reason: str) -> None:
    with pytest.raises(InvalidNamespace, match=reason) as info:
        validate_namespace(name)
    assert info.value.http_status == 400
    assert info.value.namespace == name


def test_non_string_namespace_is_invalid() -> None:
    with pytest.raises(InvalidNamespace, match="must be a str, not bytes"):
        validate_namespace(b"default")  # type: ignore[arg-type]


def test_error_tree_and_status_hints() -> None:
    cases: list[tuple[NamerdError, int]] = [
        (StorageError("x"), 500),
        (StorageUnavailable("x"), 503),
        (EmbeddedRedisError("x"), 503),
        (NamespaceExists("ns"), 409),
        (NamespaceNotFound("ns"), 404),
        (VersionMismatch("ns", expected=1, actual=2), 412),
        (InvalidNamespace("n s", "bad"), 400),
        (StorageError("x", http_status=502), 502),
    ]
    for error, status in cases:
        assert isinstance(error, NamerdError)
        assert isinstance(error, StorageError)
        assert error.http_status == status
    mismatch = VersionMismatch("ns", expected=1, actual=2)
    assert "version 2, not 1" in str(mismatch)


def test_constructor_rejects_bad_limits() -> None:
    async def main() -> None:
        client = aioredis.Redis()
        try:
            with pytest.raises(ValueError, match="reconnect_min_s"):
                RedisDtabStore(client, reconnect_min_s=2.0, reconnect_max_s=1.0)
            with pytest.raises(ValueError, match="reconnect_min_s"):
                RedisDtabStore(client, reconnect_min_s=0.0)
            with pytest.raises(ValueError, match="last_known_max_entries"):
                RedisDtabStore(client, last_known_max_entries=0)
        finally:
            await client.aclose()

    asyncio.run(main())


def test_from_url_schemes_and_password_redaction() -> None:
    async def main() -> None:
        async with RedisDtabStore.from_url("redis://:s3cret@localhost:1/0") as store:
            assert "s3cret" not in store.description
            assert "s3cret" not in repr(store)
            assert "localhost:1/0" in store.description
        async with RedisDtabStore.from_url("rediss://user:pw@localhost:1") as tls:
            assert tls._redis.connection_pool.connection_class is SSLConnection
            assert "pw@" not in tls.description
        async with RedisDtabStore.from_url("unix:///tmp/nowhere.sock") as unix:
            assert unix.description == "unix:///tmp/nowhere.sock"

    asyncio.run(main())


# =============================================================================================
# CRUD and compare-and-set
# =============================================================================================


@pytest.mark.redis
def test_crud_and_status_semantics(store_factory: StoreFactory) -> None:
    async def main() -> None:
        async with store_factory() as store:
            assert await store.list_namespaces() == []
            assert await store.get("default") is None

            assert await store.create("default", "/svc=>/#/io.l5d.fs") == 1
            assert await store.get("default") == VersionedDtab("/svc=>/#/io.l5d.fs", 1)

            with pytest.raises(NamespaceExists) as exists:
                await store.create("default", "/other=>/x")
            assert exists.value.http_status == 409
            assert await store.get("default") == VersionedDtab("/svc=>/#/io.l5d.fs", 1)

            assert await store.update("default", "/svc=>/b", version=1) == 2
            with pytest.raises(VersionMismatch) as stale:
                await store.update("default", "/svc=>/c", version=1)
            assert (stale.value.http_status, stale.value.actual) == (412, 2)
            # An If-Match that decodes to a huge int64 must mismatch, not be rounded.
            with pytest.raises(VersionMismatch):
                await store.update("default", "/svc=>/c", version=2**63 - 1)
            with pytest.raises(NamespaceNotFound) as missing:
                await store.update("nope", "/svc=>/c", version=1)
            assert missing.value.http_status == 404
            with pytest.raises(TypeError):
                await store.update("default", "/svc=>/c", version="2")  # type: ignore[arg-type]

            await store.create("another", "")  # an empty dtab is allowed
            assert await store.list_namespaces() == ["another", "default"]

            await store.delete("default")
            assert await store.get("default") is None
            assert await store.list_namespaces() == ["another"]
            with pytest.raises(NamespaceNotFound):
                await store.delete("default")

    asyncio.run(main())


@pytest.mark.redis
def test_dtab_text_is_opaque(store_factory: StoreFactory) -> None:
    text = "/svc => /#/io.l5d.fs;\n# ünïcode, quotes \" and 'percent' %s\n/x=>~"

    async def main() -> None:
        async with store_factory() as store:
            version = await store.put("opaque", text)
            assert await store.get("opaque") == VersionedDtab(text, version)

    asyncio.run(main())


@pytest.mark.redis
def test_invalid_names_are_rejected_before_redis(store_factory: StoreFactory) -> None:
    async def main() -> None:
        async with store_factory() as store:
            for call in (
                lambda: store.get("a/b"),
                lambda: store.create("a/b", ""),
                lambda: store.update("a/b", "", 1),
                lambda: store.put("", ""),
                lambda: store.delete("a b"),
            ):
                with pytest.raises(InvalidNamespace):
                    await call()
            with pytest.raises(InvalidNamespace):
                store.watch("x" * 200)
            assert await store.list_namespaces() == []

    asyncio.run(main())


@pytest.mark.redis
def test_put_upserts_and_always_bumps_the_version(store_factory: StoreFactory) -> None:
    async def main() -> None:
        async with store_factory() as store:
            assert await store.put("up", "/a=>/b") == 1
            assert await store.put("up", "/a=>/b") == 2  # same text: still a new version
            assert await store.put("up", "/a=>/c") == 3
            assert await store.get("up") == VersionedDtab("/a=>/c", 3)
            assert await store.list_namespaces() == ["up"]

    asyncio.run(main())


@pytest.mark.redis
def test_version_never_goes_backwards_across_delete_and_recreate(
    store_factory: StoreFactory, redis_url: str
) -> None:
    async def main() -> None:
        async with store_factory() as store:
            assert await store.create("mono", "/a=>/1") == 1
            assert await store.put("mono", "/a=>/2") == 2
            await store.delete("mono")
            # namerd's inMemory store would restart at 1 here; we continue.
            assert await store.create("mono", "/a=>/3") == 3
            # A client that read version 1 before the delete must not win a CAS now.
            with pytest.raises(VersionMismatch):
                await store.update("mono", "/a=>/stale", version=1)
            await store.delete("mono")
            assert await store.put("mono", "/a=>/4") == 4

            # Even if the counter key disappears (e.g. deleted by hand), the version stays
            # above the stored one.
            async with aioredis.Redis.from_url(redis_url) as admin:
                await admin.delete("namerd:version:mono")
            assert await store.put("mono", "/a=>/5") == 5

    asyncio.run(main())


@pytest.mark.redis
def test_concurrent_compare_and_set_has_exactly_one_winner(store_factory: StoreFactory) -> None:
    async def main() -> None:
        # Two stores, like two namerd replicas, each sending 10 updates at version 1.
        async with store_factory() as replica_a, store_factory() as replica_b:
            await replica_a.create("cas", "/a=>/0")
            results = await asyncio.gather(
                *(
                    (replica_a if i % 2 else replica_b).update("cas", f"/a=>/{i}", version=1)
                    for i in range(20)
                ),
                return_exceptions=True,
            )
            winners = [i for i, result in enumerate(results) if result == 2]
            losers = [result for result in results if isinstance(result, VersionMismatch)]
            assert len(winners) == 1
            assert len(losers) == 19
            assert {loser.actual for loser in losers} == {2}
            assert await replica_b.get("cas") == VersionedDtab(f"/a=>/{winners[0]}", 2)

    asyncio.run(main())


@pytest.mark.redis
def test_key_prefix_isolates_deployments(store_factory: StoreFactory, redis_url: str) -> None:
    async def main() -> None:
        async with store_factory(key_prefix="blue:") as blue, store_factory() as default:
            await blue.create("ns", "/a=>/blue")
            assert await default.get("ns") is None
            assert await default.list_namespaces() == []
            async with aioredis.Redis.from_url(redis_url, decode_responses=True) as admin:
                assert await admin.hgetall("blue:dtab:ns") == {"dtab": "/a=>/blue", "version": "1"}
                assert await admin.smembers("blue:namespaces") == {"ns"}
                assert await admin.get("blue:version:ns") == "1"

    asyncio.run(main())


# =============================================================================================
# Watches
# =============================================================================================


@pytest.mark.redis
def test_watch_sees_writes_made_by_another_replica(store_factory: StoreFactory) -> None:
    async def main() -> None:
        async with store_factory() as writer, store_factory() as reader:
            async with reader.watch("web") as updates:
                assert await next_value(updates) is None  # missing, but the watch stays open
                v1 = await writer.create("web", "/svc=>/a")
                assert await next_value(updates) == VersionedDtab("/svc=>/a", v1)
                v2 = await writer.update("web", "/svc=>/b", version=v1)
                assert await next_value(updates) == VersionedDtab("/svc=>/b", v2)
                await writer.delete("web")
                assert await next_value(updates) is None
                v3 = await writer.put("web", "/svc=>/c")
                assert await next_value(updates) == VersionedDtab("/svc=>/c", v3)
                assert v1 < v2 < v3

    asyncio.run(main())


@pytest.mark.redis
def test_watch_list_follows_creates_and_deletes(store_factory: StoreFactory) -> None:
    async def main() -> None:
        async with store_factory() as writer, store_factory() as reader:
            await writer.create("b", "")
            async with reader.watch_list() as names:
                assert await next_value(names) == ["b"]
                await writer.put("a", "")
                assert await next_value(names) == ["a", "b"]
                await writer.put("a", "/x=>/y")  # not a list change
                await writer.delete("b")
                assert await next_value(names) == ["a"]

    asyncio.run(main())


@pytest.mark.redis
def test_notifications_are_hints_and_repeats_are_dropped(
    store_factory: StoreFactory, redis_url: str
) -> None:
    channel = "namerd:chan:dtab:hints"

    async def main() -> None:
        async with store_factory() as store, aioredis.Redis.from_url(redis_url) as admin:
            v1 = await store.create("hints", "/a=>/1")
            async with store.watch("hints") as updates:
                assert await next_value(updates) == VersionedDtab("/a=>/1", v1)
                # Notifications without a change: each causes a re-read, and none yields.
                for _ in range(3):
                    await admin.publish(channel, "spurious")
                # A change *without* a notification (as if the message were lost), then a
                # bare notification: the watcher re-reads Redis, not the message.
                await admin.hset("namerd:dtab:hints", mapping={"dtab": "/a=>/raw", "version": 7})
                await admin.publish(channel, "7")
                assert await next_value(updates) == VersionedDtab("/a=>/raw", 7)
                # The counter was bypassed, yet versions still go up.
                assert await store.put("hints", "/a=>/2") == 8
                assert await next_value(updates) == VersionedDtab("/a=>/2", 8)

    asyncio.run(main())


@pytest.mark.redis
def test_watchers_share_one_connection_and_release_subscriptions(
    store_factory: StoreFactory, redis_url: str
) -> None:
    async def main() -> None:
        async with (
            store_factory() as store,
            aioredis.Redis.from_url(redis_url, decode_responses=True) as admin,
        ):
            channel, list_channel = "namerd:chan:dtab:shared", "namerd:chan:list"
            async with contextlib.AsyncExitStack() as stack:
                same = [await stack.enter_async_context(store.watch("shared")) for _ in range(3)]
                await stack.enter_async_context(store.watch_list())
                many = [await stack.enter_async_context(store.watch(f"ns{i}")) for i in range(100)]
                for watch in [*same, *many]:
                    assert await next_value(watch) is None
                # 104 watches, one pub/sub connection, one subscription per channel.
                assert await subscribed_clients(admin) == 1
                assert await numsub(admin, channel) == 1
                assert await numsub(admin, list_channel) == 1
                assert await numsub(admin, "namerd:chan:dtab:ns99") == 1

                await same[0].aclose()
                await same[1].aclose()
                assert await numsub(admin, channel) == 1  # one watcher is left
                await same[2].aclose()
                assert await numsub(admin, channel) == 0  # at once, no polling
                assert await numsub(admin, list_channel) == 1
                for watch in many:
                    await watch.aclose()
                assert await numsub(admin, "namerd:chan:dtab:ns0") == 0
            assert await numsub(admin, list_channel) == 0
            assert "0 channels, 0 watchers" in repr(store)

    asyncio.run(main())


@pytest.mark.redis
def test_cancelled_watcher_releases_its_subscription(
    store_factory: StoreFactory, redis_url: str
) -> None:
    channel = "namerd:chan:dtab:cancel"

    async def main() -> None:
        async with store_factory() as store, aioredis.Redis.from_url(redis_url) as admin:
            got_first = asyncio.Event()

            async def consume() -> None:
                async with store.watch("cancel") as updates:
                    async for _ in updates:
                        got_first.set()

            task = asyncio.create_task(consume())
            async with asyncio.timeout(WAIT_S):
                await got_first.wait()
            assert await numsub(admin, channel) == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert await numsub(admin, channel) == 0

    asyncio.run(main())


@pytest.mark.redis
def test_plain_async_for_without_context_manager(
    store_factory: StoreFactory, redis_url: str
) -> None:
    async def main() -> None:
        async with store_factory() as store, aioredis.Redis.from_url(redis_url) as admin:
            await store.create("plain", "/a=>/b")
            updates = store.watch("plain")
            async for value in updates:
                assert value == VersionedDtab("/a=>/b", 1)
                break
            assert await numsub(admin, "namerd:chan:dtab:plain") == 1
            await updates.aclose()
            assert await numsub(admin, "namerd:chan:dtab:plain") == 0
            with pytest.raises(StopAsyncIteration):
                await anext(updates)

    asyncio.run(main())


@pytest.mark.redis
def test_closing_the_store_ends_watches(store_factory: StoreFactory) -> None:
    async def main() -> None:
        store = store_factory()
        async with store.watch("end") as updates:
            assert await next_value(updates) is None
            pending = asyncio.create_task(anext(updates))
            await asyncio.sleep(0)  # let it start waiting
            await store.aclose()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(pending, WAIT_S)
        with pytest.raises(RuntimeError, match="closed"):
            await store.watch("end").__aenter__()

    asyncio.run(main())


# =============================================================================================
# Availability
# =============================================================================================


@pytest.mark.redis
def test_outage_serves_last_known_refuses_writes_and_recovers(
    embedded_redis: EmbeddedRedis, store_factory: StoreFactory, redis_url: str
) -> None:
    seen = "/a=>/before"

    async def main() -> None:
        async with store_factory() as store, contextlib.AsyncExitStack() as stack:
            v1 = await store.create("seen", seen)
            assert await store.list_namespaces() == ["seen"]
            async with store.watch("seen") as updates:
                assert await next_value(updates) == VersionedDtab(seen, v1)

                kill(embedded_redis)

                async def pubsub_down() -> bool:
                    return "pubsub down" in repr(store)

                # Let the pub/sub hub notice, so that it is reconnecting (and failing) from
                # here until the restart below.
                await eventually(pubsub_down)

                # Reads: last-known values; unknown ones fail with a helpful 503.
                assert await store.get("seen") == VersionedDtab(seen, v1)
                assert await store.list_namespaces() == ["seen"]
                with pytest.raises(StorageUnavailable) as down:
                    await store.get("never-read")
                assert down.value.http_status == 503
                assert "redis.log" in str(down.value)
                # Writes: refused, never queued.
                for write in (
                    lambda: store.create("new", "/x=>/y"),
                    lambda: store.put("seen", "/x=>/y"),
                    lambda: store.update("seen", "/x=>/y", v1),
                    lambda: store.delete("seen"),
                ):
                    with pytest.raises(StorageUnavailable):
                        await write()
                # A watch opened during the outage starts from the last-known value...
                async with store.watch("seen") as late:
                    assert await next_value(late) == VersionedDtab(seen, v1)
                # ...and one with no last-known value stays pending until Redis is back.
                unseen = await stack.enter_async_context(store.watch("unseen"))
                first_unseen = asyncio.create_task(next_value(unseen))
                await asyncio.sleep(0)
                assert not first_unseen.done()

                assert await asyncio.to_thread(embedded_redis.ensure_running) is True
                assert await first_unseen is None

                # Writes work again, and the watcher (re-subscribed) sees the change.
                v2 = await eventually(lambda: store.put("seen", "/a=>/after"))
                await until_value(updates, VersionedDtab("/a=>/after", v2))
                async with aioredis.Redis.from_url(redis_url) as admin:
                    assert await eventually(lambda: numsub(admin, "namerd:chan:dtab:seen")) == 1

    asyncio.run(main())


@pytest.mark.redis
def test_last_known_cache_is_bounded(
    embedded_redis: EmbeddedRedis, store_factory: StoreFactory
) -> None:
    async def main() -> None:
        async with store_factory(last_known_max_entries=2) as store:
            for name in ("a", "b", "c"):
                await store.put(name, f"/{name}=>/x")
            kill(embedded_redis)
            assert (await store.get("c")) == VersionedDtab("/c=>/x", 1)
            assert (await store.get("b")) == VersionedDtab("/b=>/x", 1)
            with pytest.raises(StorageUnavailable):
                await store.get("a")  # the least recently used entry was evicted

    asyncio.run(main())


@pytest.mark.redis
def test_frozen_redis_is_detected_by_pubsub_ping(
    embedded_redis: EmbeddedRedis, store_factory: StoreFactory
) -> None:
    """A Redis that stops answering but keeps its socket open (SIGSTOP, a network black hole)
    must not leave watchers stuck on a dead connection."""
    process = embedded_redis.process
    assert process is not None

    async def main() -> None:
        options: dict[str, Any] = {"pubsub_ping_interval_s": 0.05, "socket_timeout_s": 0.2}
        async with store_factory(**options) as store:
            async with store.watch("frozen") as updates:
                assert await next_value(updates) is None
                assert "pubsub connected" in repr(store)

                async def pubsub_down() -> bool:
                    return "pubsub down" in repr(store)

                os.kill(process.pid, signal.SIGSTOP)
                try:
                    await eventually(pubsub_down)
                finally:
                    os.kill(process.pid, signal.SIGCONT)
                version = await eventually(lambda: store.create("frozen", "/a=>/b"))
                await until_value(updates, VersionedDtab("/a=>/b", version))

    asyncio.run(main())


@pytest.mark.redis
def test_watches_over_a_tcp_url(tcp_redis_port: int) -> None:
    # redis-py >= 7 gives TCP pools RESP3-only settings; the RESP2 pub/sub connection must drop
    # them, or it cannot be built and every watch over a redis:// URL waits forever.
    url = f"redis://127.0.0.1:{tcp_redis_port}/0"

    async def main() -> None:
        async with (
            asyncio.timeout(WAIT_S),  # without the fix, entering the watch never returns
            RedisDtabStore.from_url(url, reconnect_min_s=0.01, reconnect_max_s=0.1) as watcher,
            RedisDtabStore.from_url(url) as writer,
        ):
            async with watcher.watch("tcp") as updates:
                assert await next_value(updates) is None
                version = await writer.create("tcp", "/a=>/b")
                assert await next_value(updates) == VersionedDtab("/a=>/b", version)

    asyncio.run(main())


@pytest.mark.redis
def test_sentinel_and_tcp_urls(sentinel_setup: tuple[int, int, str]) -> None:
    redis_port, sentinel_port, service = sentinel_setup
    fast: dict[str, Any] = {"reconnect_min_s": 0.01, "reconnect_max_s": 0.1}

    async def main() -> None:
        async with (
            RedisDtabStore.from_sentinel([("127.0.0.1", sentinel_port)], service, **fast) as ha,
            RedisDtabStore.from_url(f"redis://127.0.0.1:{redis_port}/0", **fast) as direct,
        ):
            assert f"sentinel service {service!r}" in ha.description
            async with ha.watch("ha") as updates:
                assert await next_value(updates) is None
                version = await direct.create("ha", "/a=>/b")
                assert await next_value(updates) == VersionedDtab("/a=>/b", version)
            assert await ha.update("ha", "/a=>/c", version) == version + 1
            assert await direct.get("ha") == VersionedDtab("/a=>/c", version + 1)

    asyncio.run(main())
