"""watch_stream on its own: a Notifier the test drives, a render it controls, no server.

The heartbeat clock must run from the stream's last write. A busy namerd notifies changes a
given stream does not show; those must not postpone that stream's heartbeat, or clients time
out healthy streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from namerd.http.streaming import watch_stream
from namerd.metrics import Metrics
from namerd.naming.namers.base import Notifier
from namerd.runtime import SharedWatches, WatchSource

HEARTBEAT_S = 0.2
#: How long a heartbeat may take: generous, it only bounds how long a broken test waits.
HEARTBEAT_WAIT_S = 25 * HEARTBEAT_S


class Client:
    """The ASGI receive side of one stream: it disconnects when the test says so."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def _notify_forever(notifier: Notifier, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        notifier.notify()


async def _watch(
    render: Callable[[], Awaitable[str | None]],
    notifier: Notifier,
    client: Client,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """One stream of a shared watch of ``render`` that hears every change of ``notifier``."""
    watches = SharedWatches(notifier, Metrics())
    watch = watches.acquire("key", lambda: WatchSource(render, frozenset({()})))
    try:
        async for chunk in watch_stream(
            watch,
            receive=client.receive,
            heartbeat_s=HEARTBEAT_S,
            shutdown=asyncio.Event(),
            on_close=on_close,
        ):
            yield chunk
    finally:
        await watches.release(watch)


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), HEARTBEAT_WAIT_S)


def test_heartbeats_keep_coming_while_other_changes_notify_more_often() -> None:
    async def scenario() -> None:
        notifier, client = Notifier(), Client()
        renders = 0

        async def render() -> str:
            nonlocal renders
            renders += 1
            return "value\n"  # this stream's value never changes

        stream = _watch(render, notifier, client)
        busy = asyncio.create_task(_notify_forever(notifier, HEARTBEAT_S / 10))
        try:
            assert await _next(stream) == b"value\n"
            for _ in range(3):
                assert await _next(stream) == b"\n"
            assert renders > 3  # the notifications did reach the stream, and were all repeats
        finally:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await busy
            await stream.aclose()  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_changes_are_sent_once_and_a_disconnect_ends_the_stream() -> None:
    async def scenario() -> None:
        notifier, client = Notifier(), Client()
        value = "a\n"
        closed = asyncio.Event()

        async def render() -> str:
            return value

        async def on_close() -> None:
            closed.set()

        stream = _watch(render, notifier, client, on_close)
        assert await _next(stream) == b"a\n"
        notifier.notify()  # a repeat: dropped
        value = "b\n"
        notifier.notify()
        chunk = await _next(stream)
        while chunk == b"\n":  # a heartbeat may come first on a slow machine
            chunk = await _next(stream)
        assert chunk == b"b\n"
        client.gone.set()
        rest = [chunk async for chunk in stream]
        assert set(rest) <= {b"\n"}
        assert closed.is_set()

    asyncio.run(scenario())


def test_a_failing_render_fails_every_stream_of_it_and_the_next_starts_afresh() -> None:
    async def scenario() -> None:
        notifier = Notifier()
        watches = SharedWatches(notifier, Metrics())
        calls = 0

        async def render() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise RuntimeError("namer exploded")
            return "ok\n"

        def source() -> WatchSource:
            return WatchSource(render, frozenset({()}))

        clients = [Client(), Client()]
        shared = [watches.acquire("key", source) for _ in clients]
        assert shared[0] is shared[1]
        for watch, client in zip(shared, clients, strict=True):
            stream = watch_stream(
                watch, receive=client.receive, heartbeat_s=HEARTBEAT_S, shutdown=asyncio.Event()
            )
            with pytest.raises(RuntimeError, match="namer exploded"):
                await _next(stream)
        assert len(watches) == 0  # forgotten at once: a new stream does not inherit the error
        for watch in shared:
            await watches.release(watch)
        again = watches.acquire("key", source)
        stream = watch_stream(
            again, receive=Client().receive, heartbeat_s=HEARTBEAT_S, shutdown=asyncio.Event()
        )
        assert await _next(stream) == b"ok\n"
        await stream.aclose()  # type: ignore[attr-defined]
        await watches.release(again)
        assert len(watches) == 0

    asyncio.run(scenario())


def test_changes_during_a_render_cost_exactly_one_more_render() -> None:
    async def scenario() -> None:
        notifier = Notifier()
        metrics = Metrics()
        watches = SharedWatches(notifier, metrics)
        state = "a"
        rendering, proceed = asyncio.Event(), asyncio.Event()

        async def render() -> str:
            seen = state  # what a render reads before it awaits (as a Redis read would)
            rendering.set()
            await proceed.wait()
            return seen + "\n"

        watch = watches.acquire("key", lambda: WatchSource(render, frozenset({("t",)})))
        stream = watch_stream(
            watch, receive=Client().receive, heartbeat_s=HEARTBEAT_S, shutdown=asyncio.Event()
        )
        first = asyncio.create_task(_next(stream))
        await asyncio.wait_for(rendering.wait(), HEARTBEAT_WAIT_S)
        state = "b"
        for _ in range(3):
            notifier.notify("t")  # three changes while the first render awaits
        notifier.notify("other")  # not this watch's topic
        proceed.set()
        # The first render's value is overtaken before the stream reads it: it gets the newest.
        assert await first == b"b\n"
        assert metrics.counters["watches/renders"] == 2
        assert watch.value == "b\n"
        await stream.aclose()  # type: ignore[attr-defined]
        await watches.release(watch)

    asyncio.run(scenario())
