"""The API's URL table: every ``/api/1`` route, its resource, and the error handlers.

The app is built when gunicorn imports it, before the worker's lifespan has created its
Runtime (Redis connections and namers must not cross a fork). So each route gets a
:class:`_Deferred` proxy, which creates the real resource with the live Runtime on its first
request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import falcon.asgi

from namerd.http.dtabs import DtabItem, DtabList
from namerd.http.history import DtabDiff, DtabHistory
from namerd.http.lookups import AddrResource, Bind, BoundNames, Delegate, DelegateNoNs, Resolve
from namerd.http.problems import add_error_handlers
from namerd.http.registry import RegistryEndpoint, RegistryList, RegistryService
from namerd.http.resource import Resource
from namerd.runtime import Runtime

__all__ = ["ROUTES", "add_api_routes"]

#: URI template -> resource class.
ROUTES: tuple[tuple[str, type[Resource]], ...] = (
    ("/api/1/dtabs", DtabList),
    ("/api/1/dtabs/{ns}", DtabItem),
    ("/api/1/dtabs/{ns}/history", DtabHistory),
    ("/api/1/dtabs/{ns}/diff", DtabDiff),
    ("/api/1/bind/{ns}", Bind),
    ("/api/1/addr/{ns}", AddrResource),
    ("/api/1/resolve/{ns}", Resolve),
    ("/api/1/delegate/{ns}", Delegate),
    ("/api/1/delegate", DelegateNoNs),
    ("/api/1/bound-names", BoundNames),
    ("/api/1/registry", RegistryList),
    ("/api/1/registry/{service}", RegistryService),
    ("/api/1/registry/{service}/{host}/{port}", RegistryEndpoint),
)


def add_api_routes(
    app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response],
    runtime_ref: Callable[[], Runtime],
    prefix: str = "",
) -> None:
    """Mount every /api/1 route, under ``prefix`` if given (the admin app mounts them under
    ``/console`` for its console). ``runtime_ref`` returns the worker's Runtime once started."""
    for uri, cls in ROUTES:
        app.add_route(prefix + uri, _Deferred(cls, runtime_ref))
    add_error_handlers(app)


class _Deferred:
    """A resource proxy: creates the real resource on first request, with the live Runtime."""

    def __init__(self, cls: type[Resource], runtime_ref: Callable[[], Runtime]) -> None:
        self._cls = cls
        self._ref = runtime_ref
        self._inst: Resource | None = None
        # Falcon finds responders by attribute name, so mirror the class's on_* methods.
        for name in dir(cls):
            if name.startswith("on_"):
                setattr(self, name, self._bind(name))

    def _bind(self, name: str) -> Callable[..., Awaitable[None]]:
        async def handler(
            req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any
        ) -> None:
            if self._inst is None:
                self._inst = self._cls(self._ref())
            await getattr(self._inst, name)(req, resp, **params)

        return handler
