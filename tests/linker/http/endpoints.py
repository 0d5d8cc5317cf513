"""A test endpoint: the linker's own HTTP server on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from linker.http.messages import Handler
from linker.http.server import ServerLimits, serve_listeners

LOCAL = "127.0.0.1"


@asynccontextmanager
async def endpoint(handler: Handler) -> AsyncIterator[int]:
    """Serve ``handler`` on an ephemeral port of 127.0.0.1; yields the port."""
    listeners = await trio.open_tcp_listeners(0, host=LOCAL)
    port = int(listeners[0].socket.getsockname()[1])
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        limits = ServerLimits(drain_timeout_s=0.5)
        await nursery.start(partial(serve_listeners, listeners, handler, limits, shutdown=shutdown))
        try:
            yield port
        finally:
            shutdown.set()
