"""Dtab history in the store, against a real redis-server: every write is kept, atomically with
the write, bounded per namespace, and kept across a delete."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest

from namerd.errors import NamespaceExists, VersionMismatch
from namerd.storage.store import Author, HistoryEntry, RedisDtabStore

pytestmark = pytest.mark.redis

StoreFactory = Callable[..., RedisDtabStore]
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_every_write_is_recorded_newest_first(store_factory: StoreFactory) -> None:
    async def scenario() -> None:
        async with store_factory() as store:
            alice = Author("token", "10.0.0.7")
            await store.create("web", "/a=>/b", author=alice)
            await store.update("web", "/a=>/c", 1)
            await store.put("web", "/a=>/d", author=Author(None, "::1"))
            await store.delete("web", author=alice)

            history = await store.history("web")
            assert [(e.version, e.op, e.dtab) for e in history] == [
                (3, "delete", None),
                (3, "put", "/a=>/d"),
                (2, "update", "/a=>/c"),
                (1, "create", "/a=>/b"),
            ]
            assert (history[0].who, history[0].client) == ("token", "10.0.0.7")
            assert (history[1].who, history[1].client) == (None, "::1")
            assert (history[2].who, history[2].client) == (None, None)
            assert all(ISO_UTC.fullmatch(e.at) for e in history)
            assert [e.version for e in await store.history("web", limit=2)] == [3, 3]

            # Kept across the delete: a re-created namespace continues it.
            await store.create("web", "/a=>/e")
            assert [(e.version, e.op) for e in await store.history("web", limit=2)] == [
                (4, "create"),
                (3, "delete"),
            ]
            assert await store.history("never-written") == []

    asyncio.run(scenario())


def test_failed_writes_record_nothing(store_factory: StoreFactory) -> None:
    async def scenario() -> None:
        async with store_factory() as store:
            await store.create("cas", "/a=>/b")
            with pytest.raises(NamespaceExists):
                await store.create("cas", "/a=>/x")
            with pytest.raises(VersionMismatch):
                await store.update("cas", "/a=>/y", 7)
            assert [e.op for e in await store.history("cas")] == ["create"]

    asyncio.run(scenario())


def test_history_is_bounded_per_namespace(store_factory: StoreFactory) -> None:
    async def scenario() -> None:
        async with store_factory() as store:
            for i in range(8):
                await store.put("small", f"/a=>/v{i}", history_size=3)
            await store.put("other", "/a=>/z", history_size=3)
            kept = await store.history("small")
            assert [e.version for e in kept] == [8, 7, 6]
            assert kept[0].dtab == "/a=>/v7"
            assert len(await store.redis.lrange("namerd:history:small", 0, -1)) == 3
            assert [e.version for e in await store.history("other")] == [1]
            with pytest.raises(ValueError, match="history_size"):
                await store.put("small", "/a=>/b", history_size=0)

    asyncio.run(scenario())


def test_an_entry_written_by_hand_is_skipped(store_factory: StoreFactory) -> None:
    async def scenario() -> None:
        async with store_factory() as store:
            await store.create("hand", "/a=>/b")
            await store.redis.lpush("namerd:history:hand", "not json")
            assert await store.history("hand") == [
                HistoryEntry(1, "create", (await store.history("hand"))[0].at, None, None, "/a=>/b")
            ]

    asyncio.run(scenario())
