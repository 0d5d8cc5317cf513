"""The admin server (default 127.0.0.1:9991): the console, ping, metrics summed over workers.

``/`` is the console and ``/delegator`` the dtab playground (``namerd.http.console``); the
admin app mounts the API's routes under ``/console`` (``/console/api/1/...``), so the console's
calls are same-origin (the resources, their auth and limits are the API's own: one copy). Not at
``/api/1`` itself: a client given the admin port by mistake (namerctl#28) must still get 404s,
not a working API. ``/admin`` keeps the plain table of namespaces, which needs no JavaScript.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi

from namerd.http.console import CONSOLE_API, ConsoleAsset, ConsolePage
from namerd.http.routes import add_api_routes
from namerd.metrics import merge_snapshots, prometheus_text
from namerd.runtime import Runtime, parse_stored
from shared import show_tree

__all__ = ["build_admin_app"]


class Ping:
    """``/admin/ping``: ``pong`` while this worker is serving."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = "text/plain"
        resp.text = "pong"


class MetricsJson:
    """``/admin/metrics.json``: every counter, gauge and histogram, summed over live workers."""

    def __init__(self, ref: Callable[[], Runtime], run_dir: str | None) -> None:
        self.ref, self.run_dir = ref, run_dir

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = "application/json"
        resp.text = json.dumps(await self.merged(), sort_keys=True)

    async def merged(self) -> dict[str, Any]:
        rt = self.ref()
        merged = merge_snapshots(self.run_dir, rt.metrics)
        # Store versions are facts about Redis, not per worker: added after the merge so
        # they are not summed over workers.
        merged["gauges"].update(await _store_gauges(rt))
        return merged


class MetricsPrometheus(MetricsJson):
    """``/admin/metrics/prometheus``: the same numbers in Prometheus' text format."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = "text/plain; version=0.0.4"
        resp.text = prometheus_text(await self.merged())


async def _store_gauges(rt: Runtime) -> dict[str, float]:
    """Each namespace's current version, and whether Redis answered."""
    out: dict[str, float] = {}
    started = time.monotonic()
    try:
        for ns in await rt.store.list_namespaces():
            value = await rt.store.get(ns)
            if value is not None:
                out[f"store/namespace/{ns}/version"] = value.version
        await rt.redis.ping()
        out["store/redis_up"] = 1
    except Exception:  # the admin page must answer even while Redis is down
        out["store/redis_up"] = 0
    out["store/admin_read_ms"] = (time.monotonic() - started) * 1000
    return out


class Index:
    """``/admin``: the namespaces and their dtabs as a plain table (no JavaScript needed)."""

    def __init__(self, ref: Callable[[], Runtime]) -> None:
        self.ref = ref

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        rt = self.ref()
        rows: list[str] = []
        error = ""
        try:
            for ns in await rt.store.list_namespaces():
                parsed = parse_stored(ns, await rt.store.get(ns))
                if parsed is None:
                    continue
                dentries = "\n".join(
                    f"{html.escape(d.prefix.show())} =&gt; {html.escape(show_tree(d.dst))};"
                    for d in parsed.dtab
                )
                rows.append(
                    f"<tr><td><b>{html.escape(ns)}</b></td><td>v{parsed.version}</td>"
                    f"<td><pre>{dentries}</pre></td></tr>"
                )
        except Exception as err:  # show what is wrong instead of a blank 500
            error = f"<p class=err>Storage error: {html.escape(str(err))}</p>"
        resp.content_type = "text/html; charset=utf-8"
        resp.text = (
            "<!doctype html><html><head><title>namerd</title><style>"
            "body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:.3em 1em}"
            "pre{margin:0}.err{color:#b00}</style></head><body><h1>namerd</h1>"
            f"{error}<table><tr><th>namespace</th><th>version</th><th>dtab</th></tr>"
            + "".join(rows)
            + "</table><p><a href=/admin/metrics.json>metrics.json</a> · "
            "<a href=/admin/metrics/prometheus>prometheus</a> · <a href=/admin/ping>ping</a> · "
            "<a href=/>console</a> · <a href=/delegator>dtab playground</a></p>"
            "</body></html>"
        )


def build_admin_app(
    ref: Callable[[], Runtime], run_dir: str | None
) -> falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]:
    """The admin ASGI app; ``ref`` returns the worker's Runtime."""
    app = falcon.asgi.App()
    app.add_route("/admin/ping", Ping())
    app.add_route("/admin/metrics.json", MetricsJson(ref, run_dir))
    app.add_route("/admin/metrics/prometheus", MetricsPrometheus(ref, run_dir))
    app.add_route("/", ConsolePage("namerd.html"))
    app.add_route("/delegator", ConsolePage("delegator.html"))
    app.add_route("/console/{name}", ConsoleAsset())
    app.add_route("/admin", Index(ref))
    add_api_routes(app, ref, prefix=CONSOLE_API.removesuffix("/api/1"))
    return app
