"""namerd's one pub/sub reader against a real redis-server: channels, payloads, reconnects.

The store's watches (tests/namerd/storage/test_store.py) and the mirrors
(tests/namerd/naming/namers) exercise it through their owners; these tests pin down what the
owners rely on: per-channel payloads and confirmations, unsubscribing, and ChannelFeed's state.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from namerd.storage.connection import pubsub_connection_factory
from namerd.storage.embedded_redis import EmbeddedRedis
from namerd.storage.pubsub import ChannelFeed, PubSubReader
from tests.namerd.naming.namers import eventually

pytestmark = pytest.mark.redis


async def numsub(client: aioredis.Redis, channel: str) -> int:
    _, count = await client.execute_command("PUBSUB", "NUMSUB", channel)
    return int(count)


def test_reader_delivers_payloads_per_channel_and_unsubscribes(redis_url: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        messages: list[tuple[str, str]] = []
        confirmed: list[str] = []
        reader = PubSubReader(
            pubsub_connection_factory(client),
            on_message=lambda channel, payload: messages.append((channel, payload)),
            on_subscribed=confirmed.append,
            name="test pub/sub",
            reconnect_min_s=0.01,
            reconnect_max_s=0.1,
            ping_interval_s=15.0,
        )
        try:
            reader.add("a")
            reader.add("b")
            reader.add("b")  # refcounted: one subscription
            await reader.flush()
            assert sorted(confirmed) == ["a", "b"]
            assert reader.is_subscribed("a")
            assert (await numsub(client, "a"), await numsub(client, "b")) == (1, 1)

            await client.publish("a", "1")
            await client.publish("b", "2")
            await eventually(lambda: len(messages) == 2, "two messages")
            assert messages == [("a", "1"), ("b", "2")]

            reader.remove("a")
            reader.remove("b")  # one reference of b is left
            await reader.flush()
            assert (await numsub(client, "a"), await numsub(client, "b")) == (0, 1)
            assert not reader.is_subscribed("a")
            await client.publish("a", "lost")
            await client.publish("b", "3")
            await eventually(lambda: len(messages) == 3, "the third message")
            assert messages[-1] == ("b", "3")
        finally:
            await reader.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            reader.add("c")
        await client.aclose()

    asyncio.run(main())


def test_channel_feed_reports_outages_and_resubscribes(
    redis_url: str, embedded_redis: EmbeddedRedis
) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        payloads: list[str] = []
        subscriptions = 0

        def subscribed() -> None:
            nonlocal subscriptions
            subscriptions += 1

        feed = ChannelFeed(
            client,
            "feed",
            on_message=payloads.append,
            on_subscribed=subscribed,
            name="test feed",
            reconnect_min_s=0.01,
            reconnect_max_s=0.1,
        )
        try:
            assert (feed.connected, feed.last_error) == (False, None)
            feed.start()
            await eventually(lambda: feed.connected, "the subscription")
            await client.publish("feed", "hello")
            await client.publish("other", "not ours")
            await eventually(lambda: payloads == ["hello"], "the message")

            await asyncio.to_thread(embedded_redis.stop)
            await eventually(lambda: not feed.connected, "the disconnect")
            await eventually(lambda: feed.last_error is not None, "the cause")
            assert "down" in repr(feed)

            # Back: the owner is told to re-read, since messages of the outage are lost.
            await asyncio.to_thread(embedded_redis.start)
            await eventually(lambda: feed.connected and subscriptions == 2, "the resubscription")
            assert feed.last_error is None

            await feed.close()
            assert not feed.connected
            await feed.close()  # again: nothing happens
            feed.start()  # a closed feed can start again
            await eventually(lambda: subscriptions == 3, "the new subscription")
        finally:
            await feed.close()
            await client.aclose()

    asyncio.run(main())
