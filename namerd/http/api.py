"""namerd's HTTP control API (``io.l5d.httpController``), as Falcon ASGI resources.

Status codes, bodies and headers follow namerd (reference namerd-api.md §2). Where namerd is
weak we do better, and say so here:

* a missing ``path`` parameter is 400 (namerd: a 500 from a null pointer);
* a malformed ``dtab`` parameter is 400 ``Invalid dtab: ...`` (namerd: an empty 500);
* non-watch bind/addr/resolve wait at most ``limits.lookupTimeoutMs`` for a pending value, then
  503 (namerd waits forever, issue #1349);
* watch streams heartbeat, notice disconnects at once, and never send a plain-text error line
  (see ``streams.py``): an error is sent as ``{"type":"failed","cause":...}`` on addr/resolve
  streams and as ``{"type":"exception","path":...,"message":...}`` on bind streams;
* ``/api/1/resolve`` merges a union's branches instead of picking one at random per evaluation;
* an empty ``bound-names`` is ``[]`` (namerd: ``[""]``);
* writes can require a bearer token; bodies over ``limits.maxBodyBytes`` get 413;
* parse errors come with namerd's message line, then a caret diagram of where the problem is.

Added endpoints (not in namerd): ``/api/1/registry`` for the ``io.l5d.registry`` namer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from namerd.errors import NamerdError, StorageError
from namerd.http.streaming import watch_stream
from namerd.runtime import ParsedDtab, Runtime
from namerd.storage.store import validate_namespace
from shared import (
    ADDR_PENDING,
    Addr,
    AddrPending,
    Bound,
    DelegationError,
    Dtab,
    DtabParseError,
    NameTree,
    Path,
)
from shared.wire import (
    WireFormatError,
    addr_to_json,
    bound_tree_to_json,
    delegate_tree_to_json,
    dtab_from_json,
    dtab_to_json,
    encode,
)

__all__ = ["add_api_routes"]

JSON = "application/json"
DTAB = "application/dtab"
TEXT = "text/plain"
_TRUE = {"1", "t", "true"}


class HTTPProblem(NamerdError):
    """An API-level error with a plain-text body (namerd's error bodies are plain text)."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None):
        super().__init__(message, http_status=status)
        self.body = message
        self.headers = headers or {}


# -- small helpers ------------------------------------------------------------------------------


def etag(version: int) -> str:
    """namerd's ETag: base64 of the 8-byte big-endian version (``AAAAAAAAAAE=`` is v1)."""
    return base64.b64encode(version.to_bytes(8, "big", signed=True)).decode("ascii")


def parse_if_match(value: str) -> int | None:
    """Decode If-Match leniently (quotes and stray characters ignored, as twitter-util's MIME
    decoder does); None if it is not an 8-byte version, which then simply never matches."""
    cleaned = "".join(c for c in value if c.isalnum() or c in "+/=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 8:
        return None
    return int.from_bytes(raw, "big", signed=True)


def _truthy(req: falcon.asgi.Request, name: str) -> bool:
    value = req.get_param(name)
    return value is not None and value.lower() in _TRUE


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def negotiate(accept: str | None) -> str:
    """namerd's Accept rule: parameters (and q-values) ignored, first known type wins."""
    for part in (accept or "").split(","):
        media = _media_type(part)
        if media in (JSON, DTAB, TEXT):
            return media
    return JSON


def parse_path_param(req: falcon.asgi.Request, name: str = "path") -> Path:
    """The ``path`` query parameter as a Path; 400 if missing or malformed."""
    raw = req.get_param(name)
    if raw is None:
        raise HTTPProblem(400, f"Missing required query parameter: {name}\n")
    try:
        return Path.read(raw)
    except DtabParseError as err:
        raise HTTPProblem(400, f"Invalid path: {raw} / {err}\n{err.render()}\n") from None


def parse_dtab_param(raw: str | None) -> Dtab:
    """The optional ``dtab`` parameter (empty allowed); 400 if malformed."""
    if not raw:
        return Dtab.empty()
    try:
        return Dtab.read(raw)
    except DtabParseError as err:
        raise HTTPProblem(400, f"Invalid dtab: {err}\n{err.render()}\n") from None


def namespace_of(ns: str) -> str:
    """Validate a namespace from the URL (400 with the rule that failed)."""
    return validate_namespace(ns)


def _json_line(value: Any) -> str:
    return encode(value) + "\n"


class _Api:
    """Shared plumbing for the resources: runtime, limits, auth, body reading, waiting."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.limits = runtime.config.limits
        self.token = runtime.config.auth_token

    # -- writes ---------------------------------------------------------------------------------
    def authorize(self, req: falcon.asgi.Request) -> None:
        if not self.token:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), self.token):
            raise HTTPProblem(
                401,
                "This namerd requires a token for writes: send 'Authorization: Bearer <token>'.\n",
                {"WWW-Authenticate": 'Bearer realm="namerd"'},
            )

    async def body(self, req: falcon.asgi.Request) -> bytes:
        limit = self.limits.max_body_bytes
        if req.content_length is not None and req.content_length > limit:
            raise HTTPProblem(
                413, f"Request body is {req.content_length} bytes; the limit is {limit}.\n"
            )
        data = await req.stream.read(limit + 1)
        if len(data) > limit:
            raise HTTPProblem(413, f"Request body is over the limit of {limit} bytes.\n")
        return data

    def read_dtab_body(self, req: falcon.asgi.Request, body: bytes) -> Dtab:
        ct = _media_type(req.content_type)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as err:
            raise HTTPProblem(400, f"The body is not UTF-8: {err}\n") from None
        if ct == JSON:
            try:
                value = json.loads(text)
            except ValueError as err:
                raise HTTPProblem(400, f"The body is not valid JSON: {err}\n") from None
            if isinstance(value, list) and any(v is None for v in value):
                raise HTTPProblem(400, f"The dtab contains invalid dentries: {text}\n")
            try:
                return dtab_from_json(value)
            except WireFormatError as err:
                raise HTTPProblem(400, f"Invalid dtab: {err}\n") from None
        if ct in (DTAB, TEXT):
            try:
                return Dtab.read(text)
            except DtabParseError as err:
                raise HTTPProblem(400, f"{err}\n{err.render()}\n") from None
        raise HTTPProblem(
            400,
            f'Invalid Content-Type "{req.content_type or ""}". Use {JSON}, {DTAB} or {TEXT}.\n',
        )

    # -- reads ----------------------------------------------------------------------------------
    async def stored(self, ns: str) -> Dtab:
        parsed = await self.rt.dtab(ns)
        return parsed.dtab if parsed is not None else Dtab.empty()

    async def settle(
        self, compute: Callable[[], Awaitable[Any]], is_pending: Callable[[Any], bool], what: str
    ) -> Any:
        """Recompute until the value is no longer pending, at most lookupTimeoutMs."""
        deadline = time.monotonic() + self.limits.lookup_timeout_ms / 1000
        while True:
            generation = self.rt.notifier.generation
            value = await compute()
            if not is_pending(value):
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HTTPProblem(
                    503,
                    f"Timed out after {self.limits.lookup_timeout_ms} ms waiting for {what} to "
                    "resolve; its addresses are still pending. Retry, or use watch=1.\n",
                )
            try:
                await asyncio.wait_for(self.rt.notifier.wait_changed(generation), remaining)
            except TimeoutError:
                continue

    def stream(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        render: Callable[[], Awaitable[str | None]],
        namespace: str | None = None,
        content_type: str = JSON,
        follow: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        receive = req.scope.get("namerd.receive")
        if receive is None:  # not behind NamerdASGI (e.g. a test client): never "disconnects"

            async def receive() -> dict[str, Any]:
                await asyncio.Event().wait()
                return {}

        rt = self.rt
        metrics = rt.metrics
        if rt.shutdown.is_set():
            # A draining replica must not start long-lived streams: a client that reconnects
            # here just after we ended its stream would get whatever we render while shutting
            # down. 503 makes it retry (linkers keep their last-known state on a 5xx).
            raise HTTPProblem(503, "namerd is shutting down; retry (or use another replica).\n")

        async def body() -> AsyncIterator[bytes]:
            metrics.add("watches/open", 1)
            follower = asyncio.create_task(follow()) if follow is not None else None
            # A namespace-bound stream keeps that dtab live in the cache while it runs.
            live = rt.dtabs.using(namespace) if namespace is not None else contextlib.nullcontext()
            try:
                async with live:
                    async for chunk in watch_stream(
                        render,
                        notifier=rt.notifier,
                        receive=receive,
                        heartbeat_s=self.limits.watch_heartbeat_ms / 1000,
                        shutdown=rt.shutdown,
                    ):
                        yield chunk
            finally:
                metrics.add("watches/open", -1)
                if follower is not None:
                    follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await follower

        resp.status = falcon.HTTP_200
        resp.content_type = content_type
        resp.stream = body()


# -- dtabs --------------------------------------------------------------------------------------


class DtabList(_Api):
    """``/api/1/dtabs``: the sorted namespace names; ``watch=1`` streams the set."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if _truthy(req, "watch"):
            store = self.rt.store

            async def render() -> str | None:
                return _json_line(await store.list_namespaces())

            # A store watch on the list wakes the notifier while this stream is open.
            self.stream(req, resp, render, follow=self._follow_list)
            return
        resp.content_type = JSON
        resp.text = _json_line(await self.rt.store.list_namespaces())

    async def _follow_list(self) -> None:
        async with self.rt.store.watch_list() as updates:
            async for _ in updates:
                self.rt.notifier.notify()

    on_head = on_get
    on_post = on_get
    on_put = on_get
    on_delete = on_get


class DtabItem(_Api):
    """``/api/1/dtabs/{ns}``: GET/HEAD/POST/PUT/DELETE one namespace's dtab."""

    def _render(self, media: str, parsed: ParsedDtab) -> str:
        if media == JSON:
            return _json_line(dtab_to_json(parsed.dtab))
        return parsed.dtab.show() + "\n"

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        media = negotiate(req.get_header("Accept"))
        if _truthy(req, "watch"):
            cache = self.rt.dtabs

            async def render() -> str | None:
                from namerd.runtime import parse_stored

                parsed = parse_stored(ns, cache.current(ns))
                return None if parsed is None else self._render(media, parsed)

            self.stream(req, resp, render, namespace=ns, content_type=media)
            return
        parsed = await self.rt.dtab(ns)
        if parsed is None:
            raise HTTPProblem(404)
        resp.content_type = media
        resp.set_header("ETag", etag(parsed.version))
        resp.text = self._render(media, parsed)

    async def on_head(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        parsed = await self.rt.dtab(ns)
        if parsed is None:
            raise HTTPProblem(404)
        resp.set_header("ETag", etag(parsed.version))
        resp.content_type = negotiate(req.get_header("Accept"))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        self.authorize(req)
        namespace_of(ns)
        dtab = self.read_dtab_body(req, await self.body(req))
        await self.rt.store.create(ns, dtab.show())
        resp.status = falcon.HTTP_204

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        self.authorize(req)
        namespace_of(ns)
        dtab = self.read_dtab_body(req, await self.body(req))
        if_match = req.get_header("If-Match")
        if if_match is None:
            await self.rt.store.put(ns, dtab.show())
        else:
            version = parse_if_match(if_match)
            # An undecodable If-Match can never match: 412, as namerd answers `If-Match: yolo`
            # (but a missing namespace is still 404, checked by update()).
            await self.rt.store.update(ns, dtab.show(), version if version is not None else -1)
        resp.status = falcon.HTTP_204

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str
    ) -> None:
        self.authorize(req)
        namespace_of(ns)
        await self.rt.store.delete(ns)
        resp.status = falcon.HTTP_204


# -- bind / addr / resolve / delegate / bound-names ----------------------------------------------


class Bind(_Api):
    """``/api/1/bind/{ns}?path=...[&dtab=...][&watch=1]``: the bound tree, addresses inline."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        path = parse_path_param(req)
        extra = parse_dtab_param(req.get_param("dtab"))
        interp = self.rt.interpreter
        metrics = self.rt.metrics

        def render_tree(base: Dtab) -> str | None:
            try:
                tree = interp.bind(base + extra, path)
            except DelegationError as err:
                metrics.inc("bind/failures")
                return _json_line({"type": "exception", "path": path.show(), "message": str(err)})
            if interp.tree_pending(tree):
                return None
            return _json_line(bound_tree_to_json(tree, interp.addr_of))

        if _truthy(req, "watch"):
            cache = self.rt.dtabs

            async def render_watch() -> str | None:
                from namerd.runtime import parse_stored

                parsed = parse_stored(ns, cache.current(ns))
                return render_tree(parsed.dtab if parsed is not None else Dtab.empty())

            self.stream(req, resp, render_watch, namespace=ns)
            return

        async def compute() -> tuple[NameTree[Bound], Dtab] | DelegationError:
            base = await self.stored(ns)
            try:
                return interp.bind(base + extra, path), base
            except DelegationError as err:
                return err

        def pending(v: Any) -> bool:
            return not isinstance(v, DelegationError) and interp.tree_pending(v[0])

        result = await self.settle(compute, pending, path.show())
        if isinstance(result, DelegationError):
            raise HTTPProblem(502, f"Binding {path.show()} in namespace {ns!r} failed: {result}\n")
        resp.content_type = JSON
        resp.text = _json_line(bound_tree_to_json(result[0], interp.addr_of))

    on_post = on_get


def _addr_line(addr: Addr) -> str | None:
    if isinstance(addr, AddrPending):
        return None
    return _json_line(addr_to_json(addr))


class AddrResource(_Api):
    """``/api/1/addr/{ns}?path=<bound id>[&watch=1]``: the addresses of a concrete id."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        bound_id = parse_path_param(req)
        interp = self.rt.interpreter
        if _truthy(req, "watch"):

            async def render() -> str | None:
                return _addr_line(interp.addr(bound_id))

            self.stream(req, resp, render)
            return

        async def compute() -> Addr:
            return interp.addr(bound_id)

        addr = await self.settle(
            compute, lambda a: a is ADDR_PENDING or isinstance(a, AddrPending), bound_id.show()
        )
        resp.content_type = JSON
        resp.text = _json_line(addr_to_json(addr))

    on_post = on_get


class Resolve(_Api):
    """``/api/1/resolve/{ns}?path=...``: bind, then one address set for the whole tree."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        path = parse_path_param(req)
        extra = parse_dtab_param(req.get_param("dtab"))
        interp = self.rt.interpreter

        def resolve(base: Dtab) -> Addr:
            try:
                return interp.resolve(interp.bind(base + extra, path))
            except DelegationError as err:
                from shared import AddrFailed

                return AddrFailed(str(err))

        if _truthy(req, "watch"):
            cache = self.rt.dtabs

            async def render() -> str | None:
                from namerd.runtime import parse_stored

                parsed = parse_stored(ns, cache.current(ns))
                return _addr_line(resolve(parsed.dtab if parsed is not None else Dtab.empty()))

            self.stream(req, resp, render, namespace=ns)
            return

        async def compute() -> Addr:
            return resolve(await self.stored(ns))

        addr = await self.settle(compute, lambda a: isinstance(a, AddrPending), path.show())
        resp.content_type = JSON
        resp.text = _json_line(addr_to_json(addr))

    on_post = on_get


class Delegate(_Api):
    """``/api/1/delegate/{ns}`` and ``/api/1/delegate``: explain a lookup step by step."""

    async def _explain(self, ns: str | None, path: Path, extra: Dtab) -> str:
        interp = self.rt.interpreter
        base = await self.stored(ns) if ns else Dtab.empty()

        async def compute() -> Any:
            tree = interp.delegate(base + extra, path)
            return tree

        def pending(tree: Any) -> bool:
            from shared import LeafNode

            stack = [tree]
            while stack:
                node = stack.pop()
                if isinstance(node, LeafNode) and isinstance(node.value, Bound):
                    if isinstance(interp.addr(node.value.id), AddrPending):
                        return True
                for attr in ("tree", "trees", "weighted"):
                    child = getattr(node, attr, None)
                    if child is None:
                        continue
                    if isinstance(child, tuple):
                        stack.extend(getattr(c, "tree", c) for c in child)
                    else:
                        stack.append(child)
            return False

        try:
            deadline_ms = self.limits.delegate_timeout_ms
            tree = await asyncio.wait_for(self._settle_quiet(compute, pending), deadline_ms / 1000)
        except TimeoutError:
            raise HTTPProblem(503, "Request timed out.") from None
        except DelegationError as err:
            raise HTTPProblem(502, f"Delegating {path.show()} failed: {err}\n") from None
        return encode(delegate_tree_to_json(tree, interp.addr_of))

    async def _settle_quiet(
        self, compute: Callable[[], Awaitable[Any]], pending: Callable[[Any], bool]
    ) -> Any:
        while True:
            generation = self.rt.notifier.generation
            value = await compute()
            if not pending(value):
                return value
            await self.rt.notifier.wait_changed(generation)

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str | None = None
    ) -> None:
        if ns is None:
            ns = req.get_param("namespace") or None
        if ns is not None:
            namespace_of(ns)
        path = parse_path_param(req)
        extra = parse_dtab_param(req.get_param("dtab"))
        resp.content_type = JSON
        resp.text = await self._explain(ns, path, extra)  # no trailing newline, as namerd


class DelegateNoNs(Delegate):
    """``/api/1/delegate`` without a namespace: GET params or a POST JSON body."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if _media_type(req.content_type) != JSON:
            raise HTTPProblem(415, f"Expected {JSON}, got {req.content_type or 'nothing'}.\n")
        try:
            body = json.loads(await self.body(req))
        except ValueError as err:
            raise HTTPProblem(400, f"Malformed delegation request: {err}\n") from None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("path"), str)
            or not isinstance(body.get("dtab"), str)
        ):
            raise HTTPProblem(
                400, 'Malformed delegation request: need {"path": str, "dtab": str}\n'
            )
        try:
            path = Path.read(body["path"])
        except DtabParseError as err:
            raise HTTPProblem(400, f"Invalid path: {err}\n") from None
        extra = parse_dtab_param(body["dtab"])
        ns = body.get("namespace") or None
        if ns is not None:
            namespace_of(ns)
        resp.content_type = JSON
        resp.text = await self._explain(ns, path, extra)


class BoundNames(_Api):
    """``/api/1/bound-names``: ids the enumerating namers know (``io.l5d.fs``, the registry)."""

    def _names(self) -> str:
        ids: set[str] = set()
        for namer in self.rt.namers:
            listed = namer.enumerate()
            if listed:
                ids.update(p.show() for p in listed)
        return _json_line(sorted(ids))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if _truthy(req, "watch"):

            async def render() -> str | None:
                return self._names()

            self.stream(req, resp, render)
            return
        resp.content_type = JSON
        resp.text = self._names()


# -- registry -----------------------------------------------------------------------------------


class _RegistryBase(_Api):
    def registry(self) -> Any:
        for namer in self.rt.namers:
            if namer.kind == "io.l5d.registry":
                return namer
        raise HTTPProblem(404, "No io.l5d.registry namer is configured in this namerd.\n")


class RegistryService(_RegistryBase):
    """``/api/1/registry/{service}``: GET endpoints; POST {"host","port","ttlSeconds","meta"}."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, service: str
    ) -> None:
        reg = self.registry()
        resp.content_type = JSON
        resp.text = _json_line(addr_to_json(reg.addr(reg.prefix + Path(service))))

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, service: str
    ) -> None:
        self.authorize(req)
        reg = self.registry()
        try:
            body = json.loads(await self.body(req))
        except ValueError as err:
            raise HTTPProblem(400, f"The body is not valid JSON: {err}\n") from None
        host, port, ttl, meta = _endpoint_body(body)
        await reg.register(service, host, port, ttl, meta)
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
        body.get("ttlSeconds", 30),
        body.get("meta"),
    )
    if not isinstance(host, str) or not host:
        raise HTTPProblem(400, "host must be a non-empty string.\n")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise HTTPProblem(400, "port must be an integer 1-65535.\n")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not 0 < ttl <= 86400:
        raise HTTPProblem(400, "ttlSeconds must be a number in (0, 86400].\n")
    if meta is not None and not isinstance(meta, dict):
        raise HTTPProblem(400, "meta must be a JSON object.\n")
    return host, port, float(ttl), meta


class RegistryEndpoint(_RegistryBase):
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
        ttl = req.get_param_as_float("ttlSeconds", min_value=0.001, max_value=86400) or 30.0
        await reg.heartbeat(service, host, _port(port), ttl)
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


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise HTTPProblem(400, f"port must be an integer 1-65535, got {text!r}.\n")
    return int(text)


class RegistryList(_RegistryBase):
    """``/api/1/registry``: the services the registry knows."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        reg = self.registry()
        names = [p.drop(len(reg.prefix)).show()[1:] for p in (reg.enumerate() or [])]
        resp.content_type = JSON
        resp.text = _json_line(sorted(names))


# -- wiring -------------------------------------------------------------------------------------


async def _problem(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    status = getattr(err, "http_status", 500)
    rt = getattr(req.context, "runtime", None)
    if isinstance(err, StorageError) and status >= 500 and rt is not None:
        rt.metrics.inc("store/errors")
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = TEXT
    if isinstance(err, HTTPProblem):
        for k, v in err.headers.items():
            resp.set_header(k, v)
        resp.text = err.body
        return
    message = str(err)
    if isinstance(err, StorageError) and status == 503:
        message = (
            f"Storage is unavailable: {message}. "
            "Reads serve the last-known state; retry writes later."
        )
    resp.text = message + "\n" if message else ""


def add_api_routes(app: falcon.asgi.App, runtime_ref: Callable[[], Runtime]) -> None:
    """Mount every /api/1 route. ``runtime_ref`` returns the worker's Runtime once started."""

    routes: list[tuple[str, type[_Api]]] = [
        ("/api/1/dtabs", DtabList),
        ("/api/1/dtabs/{ns}", DtabItem),
        ("/api/1/bind/{ns}", Bind),
        ("/api/1/addr/{ns}", AddrResource),
        ("/api/1/resolve/{ns}", Resolve),
        ("/api/1/delegate/{ns}", Delegate),
        ("/api/1/delegate", DelegateNoNs),
        ("/api/1/bound-names", BoundNames),
        ("/api/1/registry", RegistryList),
        ("/api/1/registry/{service}", RegistryService),
        ("/api/1/registry/{service}/{host}/{port}", RegistryEndpoint),
    ]
    for uri, cls in routes:
        app.add_route(uri, _Deferred(cls, runtime_ref))
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(NamerdError, _problem)
    # namerd answers unknown routes (and other methods on a dtab) with 404 and an empty body.
    app.add_error_handler(falcon.HTTPNotFound, _empty_404)
    app.add_error_handler(falcon.HTTPMethodNotAllowed, _empty_404)


async def _unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    import logging

    logging.getLogger("namerd").exception("unexpected error serving %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.content_type = TEXT
    resp.text = f"Internal error: {type(err).__name__}: {err}. This is a namerd bug; see its log.\n"


async def _empty_404(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    resp.status = falcon.HTTP_404
    resp.content_type = TEXT
    resp.text = ""


class _Deferred:
    """A resource proxy: creates the real resource on first request, with the live Runtime."""

    def __init__(self, cls: type[_Api], runtime_ref: Callable[[], Runtime]) -> None:
        self._cls = cls
        self._ref = runtime_ref
        self._inst: _Api | None = None
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
