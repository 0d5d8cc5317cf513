"""``watch=1`` responses: chunked ``value + "\\n"`` lines, current value first, repeats dropped.

Better than namerd in three ways:

* the stream notices at once when its client goes away (it listens for the ASGI
  ``http.disconnect`` event instead of waiting for the next failed write), so its Redis
  subscription and tasks are released immediately;
* a stream that has had nothing written to it for ``limits.watchHeartbeatMs`` gets a bare
  ``\\n`` so proxies and NATs keep it open (JSON stream parsers treat it as whitespace, like
  Linkerd's own client does); the clock runs from the stream's own last write, so
  notifications for changes the stream does not show never postpone it;
* a failed lookup (a looping dtab, a failing namer) is sent as a value in the stream's own JSON
  vocabulary (each resource's ``render`` does that, see ``namerd.http.lookups``), and the
  stream stays open and recovers, instead of a plain-text line and a close.

A stream re-renders whenever the worker's Notifier fires: a namer's addresses changed, or a
dtab the stream uses changed (``namespace=`` keeps that namespace live in the Runtime's
DtabCache while the stream runs; ``follow=`` runs a task that notifies, e.g. a store watch of
the namespace list). On shutdown (SIGTERM) every stream ends cleanly with the terminating
chunk, and a draining worker refuses new streams with 503 so that clients reconnect to
another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import falcon
import falcon.asgi

from namerd.aio import cancel_and_wait
from namerd.http.problems import HTTPProblem
from namerd.naming.namers.base import Notifier
from namerd.runtime import Runtime

__all__ = ["respond_with_stream", "watch_stream"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def watch_stream(
    render: Callable[[], Awaitable[str | None]],
    *,
    notifier: Notifier,
    receive: Receive,
    heartbeat_s: float,
    shutdown: asyncio.Event,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """Yield ``render()`` now and after every change where it differs.

    ``render`` returns one complete line (value plus ``\\n``), or None while there is nothing
    to send (a pending address, a namespace that does not exist). Re-rendering happens
    whenever the process-wide ``notifier`` fires.
    """
    gone = asyncio.create_task(_until_disconnect(receive), name="watch-disconnect")
    stopping = asyncio.create_task(shutdown.wait(), name="watch-shutdown")
    changed: asyncio.Task[int] | None = None
    last: str | None = None
    loop = asyncio.get_running_loop()
    # The heartbeat clock runs from the last write to *this* stream, not from the last
    # notification: the Notifier is process-wide, so in a busy namerd it fires far more often
    # than watchHeartbeatMs for changes this stream does not show, and a timer restarted on
    # every notification would never go off (the client would time out a healthy stream).
    last_write = loop.time()
    stale = True  # re-render: first pass, and after each notification
    try:
        while True:
            if stale:
                generation = notifier.generation
                text = await render()
                if text is not None and text != last:
                    last = text
                    yield text.encode("utf-8")
                    last_write = loop.time()
            if loop.time() - last_write >= heartbeat_s:
                yield b"\n"  # heartbeat: keeps idle connections alive through middleboxes
                last_write = loop.time()
            if changed is None or changed.done():
                changed = asyncio.create_task(
                    notifier.wait_changed(generation), name="watch-change"
                )
            done, _ = await asyncio.wait(
                {gone, stopping, changed},
                timeout=max(0.0, last_write + heartbeat_s - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if gone in done or stopping in done:
                return
            stale = changed in done
    finally:
        for task in (gone, stopping, changed):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if on_close is not None:
            await on_close()


def respond_with_stream(
    rt: Runtime,
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    render: Callable[[], Awaitable[str | None]],
    *,
    namespace: str | None = None,
    content_type: str,
    follow: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Make ``resp`` a 200 watch stream of ``render()``; 503 if the worker is shutting down.

    ``namespace`` keeps that dtab live in ``rt.dtabs`` while the stream runs; ``follow`` is
    run as a task for the stream's lifetime (it notifies the Notifier on changes of its own).
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

    async def body() -> AsyncIterator[bytes]:
        metrics.add("watches/open", 1)
        follower: asyncio.Task[None] | None = None
        if follow is not None:
            follower = asyncio.create_task(follow())
        # A namespace-bound stream keeps that dtab live in the cache while it runs.
        live = rt.dtabs.using(namespace) if namespace is not None else contextlib.nullcontext()
        try:
            async with live:
                async for chunk in watch_stream(
                    render,
                    notifier=rt.notifier,
                    receive=receive,
                    heartbeat_s=rt.config.limits.watch_heartbeat_ms / 1000,
                    shutdown=rt.shutdown,
                ):
                    yield chunk
        finally:
            metrics.add("watches/open", -1)
            if follower is not None:
                await cancel_and_wait([follower])

    resp.status = falcon.HTTP_200
    resp.content_type = content_type
    resp.stream = body()
