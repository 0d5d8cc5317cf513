"""The ASGI application: API and admin apps behind one entry, plus lifespan and shutdown.

gunicorn binds both the API port and the admin port and hands every connection to the same
ASGI callable; :class:`NamerdASGI` routes by the local port the request arrived on, so the
admin server is one per process tree (not per worker) from the user's point of view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import weakref
from typing import Any

import falcon
import falcon.asgi

from namerd.aio import cancel_and_wait
from namerd.config import NamerdConfig
from namerd.http.admin import build_admin_app
from namerd.http.routes import add_api_routes
from namerd.metrics import SNAPSHOT_INTERVAL_S
from namerd.runtime import Runtime

__all__ = ["NamerdASGI", "begin_shutdown", "create_app"]

log = logging.getLogger("namerd")

# Live apps of this process, so a signal handler can start a graceful drain in all of them.
_APPS: weakref.WeakSet[NamerdASGI] = weakref.WeakSet()


def begin_shutdown() -> None:
    """Ask every watch stream of this process to end now (called on SIGTERM/SIGINT)."""
    for app in list(_APPS):
        if app.runtime is not None:
            app.runtime.shutdown.set()


#: How often each worker PINGs Redis for the latency/error metrics, and how long it waits.
REDIS_PROBE_INTERVAL_S = 5.0
REDIS_PROBE_TIMEOUT_S = 2.0

_ENDPOINTS = frozenset({"dtabs", "bind", "addr", "resolve", "delegate", "bound-names", "registry"})


class _RequestMetrics:
    """Falcon middleware: requests by endpoint and status, and latency to response headers."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.started = time.monotonic()
        req.context.runtime = self.ref()

    async def process_response(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, ok: bool
    ) -> None:
        rt = self.ref()
        if rt is None:
            return
        parts = req.path.split("/")
        endpoint = parts[3] if len(parts) > 3 and parts[1] == "api" else "other"
        if endpoint not in _ENDPOINTS:
            endpoint = "other"  # unknown paths must not grow the label set without bound
        status = resp.status if isinstance(resp.status, int) else int(str(resp.status)[:3])
        rt.metrics.inc(f"requests/endpoint/{endpoint}/status/{status}")
        started = getattr(req.context, "started", None)
        if started is not None:
            rt.metrics.observe_ms(
                f"latency/endpoint/{endpoint}", (time.monotonic() - started) * 1000
            )


class NamerdASGI:
    """One worker's ASGI entry point."""

    def __init__(self, config: NamerdConfig, redis_url: str | None, run_dir: str | None) -> None:
        self.config = config
        self.redis_url = redis_url
        self.run_dir = run_dir
        self.runtime: Runtime | None = None
        self._snapshots: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None
        ref = self._runtime
        self.api = falcon.asgi.App(middleware=[_RequestMetrics(lambda: self.runtime)])
        self.api.req_options.strip_url_path_trailing_slash = True
        add_api_routes(self.api, ref)
        self.admin = build_admin_app(ref, run_dir)
        _APPS.add(self)

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("namerd is not started yet")
        return self.runtime

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        # Watch streams need receive() to notice a client that goes away (namerd.http.streaming).
        scope["namerd.receive"] = receive
        server = scope.get("server")
        port = server[1] if server else None
        app = self.admin if port == self.config.admin.port else self.api
        await app(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as err:
                    log.exception("namerd failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Create the Runtime (Redis connections, namers) in this worker."""
        rt = Runtime(self.config, self.redis_url)
        try:
            await rt.start()
        except BaseException:
            await rt.aclose()
            raise
        self.runtime = rt
        self._snapshots = asyncio.create_task(self._write_snapshots(), name="metrics-snapshots")
        self._probe = asyncio.create_task(self._probe_redis(), name="redis-probe")

    async def shutdown(self) -> None:
        """Stop streams and release every resource."""
        # cancel_and_wait, not cancel() and await: the probe's wait_for(ping) can swallow a
        # cancel while Redis is down (CPython bpo-42130), and shutdown would then hang.
        await cancel_and_wait(t for t in (self._snapshots, self._probe) if t is not None)
        if self.runtime is not None:
            await self.runtime.aclose()
        if self.run_dir:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.run_dir, "metrics", f"{os.getpid()}.json"))

    async def _probe_redis(self) -> None:
        """PING Redis every REDIS_PROBE_INTERVAL_S: latency histogram, error count, up gauge."""
        while True:
            rt = self.runtime
            if rt is not None:
                started = time.monotonic()
                try:
                    await asyncio.wait_for(rt.redis.ping(), REDIS_PROBE_TIMEOUT_S)
                except Exception:
                    rt.metrics.inc("redis/errors")
                    rt.metrics.set("redis/up", 0)
                else:
                    rt.metrics.observe_ms("redis/ping", (time.monotonic() - started) * 1000)
                    rt.metrics.set("redis/up", 1)
            await asyncio.sleep(REDIS_PROBE_INTERVAL_S)

    async def _write_snapshots(self) -> None:
        while True:
            rt = self.runtime
            if rt is not None:
                rt.metrics.set("process/watch_streams", rt.metrics.gauges.get("watches/open", 0))
                with contextlib.suppress(OSError):
                    rt.metrics.write_snapshot(self.run_dir)
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)


def create_app(
    config: NamerdConfig, redis_url: str | None = None, run_dir: str | None = None
) -> NamerdASGI:
    """Build the ASGI app for one worker (gunicorn calls this after forking)."""
    return NamerdASGI(config, redis_url, run_dir)
