"""``/api/1/registry``: register service endpoints with the ``io.l5d.registry`` namer.

Not in namerd; this is how services announce themselves to the registry namer
(``namerd.naming.namers.registry``), which keeps them in Redis with a TTL:

* ``GET /api/1/registry``: the sorted JSON list of known services;
* ``GET /api/1/registry/{service}``: its endpoints, as an addr (``{"type":"bound",...}``);
* ``POST /api/1/registry/{service}`` with ``{"host", "port", "ttlSeconds"?, "meta"?}``:
  register (or refresh) an endpoint, 204. ``ttlSeconds`` is in (0, 86400], default 30;
* ``PUT /api/1/registry/{service}/{host}/{port}[?ttlSeconds=]``: heartbeat, 204;
* ``DELETE /api/1/registry/{service}/{host}/{port}``: deregister, 204.

Writes pass the guards of every write (``Resource.authorize``: Host, cross-origin, token);
a POST body must be ``application/json`` (415 otherwise). ``host`` must be an IP literal
without leading zeros or a zone id, ``meta`` a flat object, the service one path label (400
otherwise), and the address one the namer's address policy accepts (403, with ``reason`` and
``configKey``). Errors are JSON objects (``{"error": ..., "status": ...}``). Every route is
404 when no ``io.l5d.registry`` namer is configured.
"""

from __future__ import annotations

import math
from typing import Any

import falcon
import falcon.asgi

from namerd.http.problems import HTTPProblem
from namerd.http.resource import JSON, Resource, json_body, json_line, media_type
from namerd.naming.namers.registry import RegistryNamer, check_service
from shared import Path
from shared.wire import addr_to_json

__all__ = ["RegistryEndpoint", "RegistryList", "RegistryService"]

#: The TTL of an endpoint registered or refreshed without ``ttlSeconds``.
DEFAULT_TTL_S = 30.0
#: The longest TTL a client may ask for (one day).
MAX_TTL_S = 86400


class _RegistryResource(Resource):
    def registry(self) -> RegistryNamer:
        """The configured registry namer; 404 if there is none."""
        for namer in self.rt.namers:
            if isinstance(namer, RegistryNamer):
                return namer
        raise HTTPProblem(404, "No io.l5d.registry namer is configured in this namerd.\n")


class RegistryList(_RegistryResource):
    """``/api/1/registry``: the services the registry knows."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        reg = self.registry()
        names = [p.drop(len(reg.prefix)).show()[1:] for p in (reg.enumerate() or [])]
        resp.content_type = JSON
        resp.text = json_line(sorted(names))


class RegistryService(_RegistryResource):
    """``/api/1/registry/{service}``: GET endpoints; POST {"host","port","ttlSeconds","meta"}."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, service: str
    ) -> None:
        reg = self.registry()
        resp.content_type = JSON
        resp.text = json_line(addr_to_json(reg.addr(reg.prefix + Path(check_service(service)))))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, service: str
    ) -> None:
        self.authorize(req)
        reg = self.registry()
        if media_type(req.content_type) != JSON:
            raise HTTPProblem(
                415, f'Content-Type must be {JSON}, got "{req.content_type or ""}".\n'
            )
        host, port, ttl, meta = _endpoint_body(json_body(await self.body(req)))
        await reg.register(service, host, port, ttl, meta)
        resp.status = falcon.HTTP_204


class RegistryEndpoint(_RegistryResource):
    """``/api/1/registry/{service}/{host}/{port}``: PUT heartbeat (``?ttlSeconds=``), DELETE."""

    async def on_put(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        service: str,
        host: str,
        port: str,
    ) -> None:
        self.authorize(req)
        reg = self.registry()
        await reg.heartbeat(service, host, _port(port), _ttl_param(req.get_param("ttlSeconds")))
        resp.status = falcon.HTTP_204

    async def on_delete(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        service: str,
        host: str,
        port: str,
    ) -> None:
        self.authorize(req)
        reg = self.registry()
        await reg.deregister(service, host, _port(port))
        resp.status = falcon.HTTP_204


def _endpoint_body(body: Any) -> tuple[str, int, float, dict[str, Any] | None]:
    if not isinstance(body, dict):
        raise HTTPProblem(
            400,
            'Expected a JSON object like {"host": "10.0.0.1", "port": 8080, "ttlSeconds": 30}.\n',
        )
    host, port, ttl, meta = (
        body.get("host"),
        body.get("port"),
        body.get("ttlSeconds", DEFAULT_TTL_S),
        body.get("meta"),
    )
    if not isinstance(host, str) or not host:
        raise HTTPProblem(400, "host must be a non-empty string.\n")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise HTTPProblem(400, "port must be an integer 1-65535.\n")
    if not _valid_ttl(ttl):
        raise HTTPProblem(400, f"ttlSeconds must be a number in (0, {MAX_TTL_S}].\n")
    if meta is not None and not isinstance(meta, dict):
        raise HTTPProblem(400, "meta must be a JSON object.\n")
    return host, port, float(ttl), meta


def _valid_ttl(ttl: object) -> bool:
    # NaN fails every comparison, so "not 0 < ttl" already refuses it; inf is over the max.
    return isinstance(ttl, int | float) and not isinstance(ttl, bool) and 0 < ttl <= MAX_TTL_S


def _ttl_param(text: str | None) -> float:
    """``?ttlSeconds=``: a decimal number in (0, MAX_TTL_S]; absent is DEFAULT_TTL_S."""
    if text is None:
        return DEFAULT_TTL_S
    try:
        ttl = float(text) if text.isascii() else math.nan
    except ValueError:
        ttl = math.nan
    if not _valid_ttl(ttl):
        raise HTTPProblem(400, f"ttlSeconds must be a number in (0, {MAX_TTL_S}], got {text!r}.\n")
    return ttl


def _port(text: str) -> int:
    # isdecimal() alone accepts other scripts' digits ("١٢" is 12 to int()).
    if not (text.isascii() and text.isdecimal()) or not 0 < int(text) < 65536:
        raise HTTPProblem(400, f"port must be an integer 1-65535, got {text!r}.\n")
    return int(text)
