"""Test endpoints on ephemeral 127.0.0.1 ports: the linker's own HTTP server, a bare trio
server that misbehaves on purpose, and a linker proxying to one of them through a pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import trio

from linker.http import hop
from linker.http.messages import Handler, Request, Response
from linker.http.server import ServerLimits, serve_listeners
from linker.http.upstream import UpstreamPool

LOCAL = "127.0.0.1"


@asynccontextmanager
async def endpoint(
    handler: Handler,
    limits: ServerLimits | None = None,
    on_event: Callable[[str], None] | None = None,
) -> AsyncIterator[int]:
    """Serve ``handler`` on an ephemeral port of 127.0.0.1; yields the port."""
    listeners = await trio.open_tcp_listeners(0, host=LOCAL)
    port = int(listeners[0].socket.getsockname()[1])
    shutdown = trio.Event()
    if limits is None:
        limits = ServerLimits(drain_timeout_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            partial(
                serve_listeners, listeners, handler, limits, shutdown=shutdown, on_event=on_event
            )
        )
        try:
            yield port
        finally:
            shutdown.set()


@asynccontextmanager
async def raw_endpoint(
    behaviour: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    """A bare trio server: ``behaviour(stream)`` per connection, then the socket is closed."""
    listeners = await trio.open_tcp_listeners(0, host=LOCAL)
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await behaviour(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, handle, listeners))
        yield port
        nursery.cancel_scope.cancel()


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


@asynccontextmanager
async def linker_in_front_of(
    up_port: int,
    pool: UpstreamPool,
    limits: ServerLimits | None = None,
    on_event: Callable[[str], None] | None = None,
) -> AsyncIterator[int]:
    """A linker server whose handler proxies everything to ``up_port`` through ``pool``."""

    async def proxy(req: Request) -> Response:
        upstream_req = Request(
            method=req.method,
            target=req.target,
            authority=req.authority,
            http_version="1.1",
            headers=hop.add_via(hop.strip_hop_by_hop(req.headers), req.http_version),
            body=req.body,
            client=req.client,
            received_at=req.received_at,
        )
        resp = await pool.request((LOCAL, up_port), upstream_req)
        return Response(resp.status, hop.strip_hop_by_hop(resp.headers), resp.body)

    async with endpoint(proxy, limits, on_event) as port:
        yield port
