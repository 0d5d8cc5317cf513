"""``watch=1`` responses: chunked ``value + "\\n"`` lines, current value first, repeats dropped.

Better than namerd (namerd-api.md §2.11) in three ways:

* the stream notices at once when its client goes away (it listens for the ASGI
  ``http.disconnect`` event instead of waiting for the next failed write), so its Redis
  subscription and tasks are released immediately;
* an idle stream gets a bare ``\\n`` every ``watchHeartbeatMs`` so proxies and NATs keep it
  open (JSON stream parsers treat it as whitespace, like Linkerd's own client does);
* a render failure is sent as a value in the stream's own JSON vocabulary (see ``api.py``)
  and the stream stays open and recovers, instead of a plain-text line and a close.

On shutdown (SIGTERM) every stream ends cleanly with the terminating chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from namerd.naming.namers.base import Notifier

__all__ = ["watch_stream"]

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
    try:
        while True:
            generation = notifier.generation
            text = await render()
            if text is not None and text != last:
                last = text
                yield text.encode("utf-8")
            if changed is None or changed.done():
                changed = asyncio.create_task(
                    notifier.wait_changed(generation), name="watch-change"
                )
            done, _ = await asyncio.wait(
                {gone, stopping, changed}, timeout=heartbeat_s, return_when=asyncio.FIRST_COMPLETED
            )
            if gone in done or stopping in done:
                return
            if not done:
                yield b"\n"  # heartbeat: keeps idle connections alive through middleboxes
    finally:
        for task in (gone, stopping, changed):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if on_close is not None:
            await on_close()
