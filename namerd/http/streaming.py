"""``watch=1`` responses: chunked ``value + "\\n"`` lines, current value first, repeats dropped.

One computation per distinct watch. A stream does not compute its own answer: it subscribes to
the worker's :class:`~namerd.runtime.SharedWatch` of its key (resource, namespace, path, local
``dtab``, media type; ``rt.watches``), whose one task renders the answer when a Notifier topic
it depends on changes and publishes the line. Every stream of that key then sends the newest
line it has not sent yet, so 40 streams of one bind cost one bind per change, not 40; and a
write to one namespace re-renders only the watches of that namespace (``namerd.runtime``).
A stream holds no queue: it reads the newest value when it is ready to write, so a client that
reads slowly (or not at all) skips intermediate values and never delays the other streams or
the computation. The last stream of a key to leave stops its task and releases what the task
held (its namespace in the ``DtabCache``, its Redis subscription, its ``follow`` task).

Better than namerd in three ways:

* the stream notices at once when its client goes away (it listens for the ASGI
  ``http.disconnect`` event instead of waiting for the next failed write), so its share of
  the watch (and, if it was the last, the Redis subscription and tasks) is released at once;
* a stream that has had nothing written to it for ``limits.watchHeartbeatMs`` gets a bare
  ``\\n`` so proxies and NATs keep it open (JSON stream parsers treat it as whitespace, like
  Linkerd's own client does); the clock runs from the stream's own last write, so changes
  the stream does not show never postpone it;
* a failed lookup (a looping dtab, a failing namer) is sent as a value in the stream's own JSON
  vocabulary (each resource's ``render`` does that, see ``namerd.http.lookups``), and the
  stream stays open and recovers, instead of a plain-text line and a close.

On shutdown (SIGTERM) every stream ends cleanly with the terminating chunk, and a draining
worker refuses new streams with 503 so that clients reconnect to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Hashable, Iterable
from typing import Any

import falcon
import falcon.asgi

from namerd.http.problems import HTTPProblem
from namerd.naming.namers.base import Topic
from namerd.runtime import Runtime, SharedWatch, WatchSource

__all__ = ["respond_with_stream", "watch_stream"]

Receive = Callable[[], Awaitable[dict[str, Any]]]

#: The topics of a watch that does not say what it depends on: every change.
_EVERYTHING: frozenset[Topic] = frozenset({()})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def watch_stream(
    watch: SharedWatch,
    *,
    receive: Receive,
    heartbeat_s: float,
    shutdown: asyncio.Event,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Yield ``watch``'s value now and after every change that differs from what was sent.

    A value of None (a pending address, a namespace that does not exist) sends nothing. If
    the watch's render failed, the error is raised here, as it would be by a render of the
    stream's own.
    """
    gone = asyncio.create_task(_until_disconnect(receive), name="watch-disconnect")
    stopping = asyncio.create_task(shutdown.wait(), name="watch-shutdown")
    changed: asyncio.Task[None] | None = None
    seen = 0  # the watch's seq this stream last read (0: nothing rendered yet)
    last: str | None = None
    loop = asyncio.get_running_loop()
    # The heartbeat clock runs from the last write to *this* stream, not from the last
    # change: the watch's value may change without this stream writing (a value it already
    # sent), and a timer restarted on every change could keep the heartbeat away forever.
    last_write = loop.time()
    try:
        while True:
            if watch.seq != seen:
                seen = watch.seq
                if watch.error is not None:
                    raise watch.error
                text = watch.value
                if text is not None and text != last:
                    last = text
                    yield text.encode("utf-8")
                    last_write = loop.time()
            if loop.time() - last_write >= heartbeat_s:
                yield b"\n"  # heartbeat: keeps idle connections alive through middleboxes
                last_write = loop.time()
            if changed is None or changed.done():
                changed = asyncio.create_task(watch.wait_changed(seen), name="watch-change")
            done, _ = await asyncio.wait(
                {gone, stopping, changed},
                timeout=max(0.0, last_write + heartbeat_s - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if gone in done or stopping in done:
                return
    finally:
        for task in (gone, stopping, changed):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if on_close is not None:
            await on_close()


def _request_key(req: falcon.asgi.Request) -> Hashable:
    """The URL path and query parameters but ``watch``: what a resource's answer is made of,
    for callers that do not name their key."""
    params = sorted(
        (name, tuple(value) if isinstance(value, list) else value)
        for name, value in req.params.items()
        if name != "watch"
    )
    return ("url", req.path, tuple(params))


def respond_with_stream(
    rt: Runtime,
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    render: Callable[[], Awaitable[str | None]],
    *,
    content_type: str,
    key: Hashable | None = None,
    topics: Iterable[Topic] | None = None,
    namespace: str | None = None,
    follow: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Make ``resp`` a 200 watch stream of ``render()``; 503 if the worker is shutting down.

    The stream shares the worker's watch of (``content_type``, ``key``): equal keys must mean
    equal ``render`` output. Without a key, the URL path and query (but ``watch``) are the key.
    ``topics`` are the Notifier topics the answer depends on (default: every change);
    ``namespace`` keeps that dtab live in ``rt.dtabs`` while the watch runs; ``follow`` is run
    as a task for the watch's lifetime (it notifies the Notifier on changes of its own). Only
    the first stream of a key supplies them; later ones share its watch.
    """
    receive = req.scope.get("namerd.receive")
    if receive is None:  # not behind NamerdASGI (e.g. a test client): never "disconnects"

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

    metrics = rt.metrics
    if rt.shutdown.is_set():
        # A draining replica must not start long-lived streams: a client that reconnects
        # here just after we ended its stream would get whatever we render while shutting
        # down. 503 makes it retry (linkers keep their last-known state on a 5xx).
        raise HTTPProblem(503, "namerd is shutting down; retry (or use another replica).\n")
    shared_key = (content_type, key if key is not None else _request_key(req))

    def source() -> WatchSource:
        return WatchSource(
            render,
            frozenset(topics) if topics is not None else _EVERYTHING,
            # A namespace-bound watch keeps that dtab live in the cache while it runs.
            hold=(lambda: rt.dtabs.using(namespace)) if namespace is not None else None,
            follow=follow,
        )

    async def body() -> AsyncIterator[bytes]:
        metrics.add("watches/open", 1)
        watch = rt.watches.acquire(shared_key, source)
        try:
            async for chunk in watch_stream(
                watch,
                receive=receive,
                heartbeat_s=rt.config.limits.watch_heartbeat_ms / 1000,
                shutdown=rt.shutdown,
            ):
                yield chunk
        finally:
            metrics.add("watches/open", -1)
            await rt.watches.release(watch)

    resp.status = falcon.HTTP_200
    resp.content_type = content_type
    resp.stream = body()
