"""The lookup endpoints: bind, addr, resolve, delegate and bound-names.

* ``/api/1/bind/{ns}?path=...[&dtab=...]``: the bound tree of ``path`` under the stored dtab
  plus the optional extra ``dtab`` (which has priority, like ``l5d-dtab``), addresses inline;
* ``/api/1/addr/{ns}?path=<bound id>``: the addresses of one bound id;
* ``/api/1/resolve/{ns}?path=...``: bind, then one address set for the whole tree (a union's
  branches are merged, where namerd picks one at random per evaluation);
* ``/api/1/delegate/{ns}`` and ``/api/1/delegate`` (GET parameters, or a POST JSON body
  ``{"path", "dtab", "namespace"?}``): the step-by-step explanation tree of a lookup;
* ``/api/1/bound-names``: the ids the enumerating namers know (an empty set is ``[]``, where
  namerd answers ``[""]``).

namerd does not check the method on bind, addr and resolve, so POST is GET there;
``/api/1/delegate`` takes a POST JSON body. bind, addr, resolve and bound-names take ``watch=1``
(``namerd.http.streaming``).

Waiting. A non-watch bind/addr/resolve whose addresses are pending waits for them at most
``limits.lookupTimeoutMs`` (default 10000), then answers 503 (namerd waits forever, issue
#1349). A delegate explanation waits at most ``limits.delegateTimeoutMs`` (default 2000), then
answers 503 ``Request timed out.`` as namerd does. A lookup that fails (e.g. a dtab that
loops) is 502; on a stream it is a value instead: ``{"type":"exception","path":..,"message":..}``
on bind streams, an addr ``{"type":"failed","cause":..}`` on resolve streams.

Work budget: every bind and delegate runs within ``limits.requestDtabBudget`` when the request
adds ``dtab=``, else ``limits.storedDtabBudget`` (``Limits.dtab_budget``). Over it is 400 with
a JSON body naming the limit (``problems.lookup_failed``); on streams, a value as above.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import falcon.asgi

from namerd.http.problems import HTTPProblem, lookup_failed, unparsable
from namerd.http.resource import (
    JSON,
    Resource,
    json_body,
    json_line,
    media_type,
    namespace_of,
    parse_dtab_param,
    parse_path_param,
    truthy,
)
from namerd.naming.namers.base import (
    INET_TOPIC,
    NAMERS_TOPIC,
    NAMES_TOPIC,
    Namer,
    Topic,
    mirror_topic,
    namer_topic,
)
from namerd.runtime import dtab_topic
from shared import (
    ADDR_PENDING,
    Addr,
    AddrFailed,
    AddrPending,
    Bound,
    DelegationError,
    Dtab,
    DtabParseError,
    LeafNode,
    NameTree,
    Path,
)
from shared.wire import addr_to_json, bound_tree_to_json, delegate_tree_to_json, encode

__all__ = ["AddrResource", "Bind", "BoundNames", "Delegate", "DelegateNoNs", "Resolve"]


def _addr_topics(namers: Sequence[Namer], bound_id: Path) -> list[Topic]:
    """What ``addr(bound_id)`` depends on: the namer that owns the id (DNS for ``/$``) and the
    id's entry in the address mirror; every name source for an id it cannot place (e.g. a
    ``/%`` transformer, which the interpreter strips first)."""
    for namer in namers:
        if bound_id.startswith(namer.prefix):
            return [namer_topic(namer.prefix), mirror_topic(bound_id)]
    if bound_id.labels[:1] == (b"$",):
        return [INET_TOPIC, mirror_topic(bound_id)]
    return [NAMES_TOPIC]


def _addr_line(addr: Addr) -> str | None:
    if isinstance(addr, AddrPending):
        return None
    return json_line(addr_to_json(addr))


class _NameLookup(Resource):
    """What bind and resolve share: a watch of one name in one namespace."""

    def stream_name(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        render: Callable[[], Awaitable[str | None]],
        kind: str,
        ns: str,
        path: Path,
        extra: Dtab,
    ) -> None:
        """Stream ``render()``, shared by every watch of (kind, ns, path, local dtab).

        It depends on the namespace's dtab and on whatever names resolve through: any namer's
        change wakes it, since which namers a bind asks is not recorded.
        """
        self.stream(
            req,
            resp,
            render,
            namespace=ns,
            key=(kind, ns, path.show(), extra.show()),
            topics=[dtab_topic(ns), NAMES_TOPIC],
        )


class Bind(_NameLookup):
    """``/api/1/bind/{ns}?path=...[&dtab=...][&watch=1]``: the bound tree, addresses inline."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        path = parse_path_param(req)
        extra = parse_dtab_param(req.get_param("dtab"))
        interp = self.rt.interpreter
        metrics = self.rt.metrics
        budget = self.limits.dtab_budget(extra)

        def render_tree(base: Dtab) -> str | None:
            try:
                tree = interp.bind(base + extra, path, budget)
            except DelegationError as err:
                metrics.inc("bind/failures")
                return json_line({"type": "exception", "path": path.show(), "message": str(err)})
            if interp.tree_pending(tree):
                return None
            return json_line(bound_tree_to_json(tree, interp.addr_of))

        if truthy(req, "watch"):

            async def render_watch() -> str | None:
                return render_tree(self.live(ns))

            self.stream_name(req, resp, render_watch, "bind", ns, path, extra)
            return

        async def compute() -> tuple[NameTree[Bound], Dtab] | DelegationError:
            base = await self.stored(ns)
            try:
                return interp.bind(base + extra, path, budget), base
            except DelegationError as err:
                return err

        def pending(v: tuple[NameTree[Bound], Dtab] | DelegationError) -> bool:
            return not isinstance(v, DelegationError) and interp.tree_pending(v[0])

        result = await self.settle(compute, pending, path.show())
        if isinstance(result, DelegationError):
            raise lookup_failed(result, f"Binding {path.show()} in namespace {ns!r} failed")
        resp.content_type = JSON
        resp.text = json_line(bound_tree_to_json(result[0], interp.addr_of))

    on_post = on_get


class AddrResource(Resource):
    """``/api/1/addr/{ns}?path=<bound id>[&watch=1]``: the addresses of a concrete id."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        bound_id = parse_path_param(req)
        interp = self.rt.interpreter
        if truthy(req, "watch"):

            async def render() -> str | None:
                return _addr_line(interp.addr(bound_id))

            # The answer does not depend on the namespace: streams of every namespace share it.
            self.stream(
                req,
                resp,
                render,
                key=("addr", bound_id.show()),
                topics=_addr_topics(self.rt.namers, bound_id),
            )
            return

        async def compute() -> Addr:
            return interp.addr(bound_id)

        addr = await self.settle(
            compute, lambda a: a is ADDR_PENDING or isinstance(a, AddrPending), bound_id.show()
        )
        resp.content_type = JSON
        resp.text = json_line(addr_to_json(addr))

    on_post = on_get


class Resolve(_NameLookup):
    """``/api/1/resolve/{ns}?path=...``: bind, then one address set for the whole tree."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        path = parse_path_param(req)
        extra = parse_dtab_param(req.get_param("dtab"))
        interp = self.rt.interpreter
        budget = self.limits.dtab_budget(extra)

        def resolve(base: Dtab) -> Addr:
            try:
                return interp.resolve(interp.bind(base + extra, path, budget))
            except DelegationError as err:
                return AddrFailed(str(err))

        if truthy(req, "watch"):

            async def render() -> str | None:
                return _addr_line(resolve(self.live(ns)))

            self.stream_name(req, resp, render, "resolve", ns, path, extra)
            return

        async def compute() -> Addr:
            return resolve(await self.stored(ns))

        addr = await self.settle(compute, lambda a: isinstance(a, AddrPending), path.show())
        resp.content_type = JSON
        resp.text = json_line(addr_to_json(addr))

    on_post = on_get


class Delegate(Resource):
    """``/api/1/delegate/{ns}`` and ``/api/1/delegate``: explain a lookup step by step."""

    async def _explain(self, ns: str | None, path: Path, extra: Dtab) -> str:
        interp = self.rt.interpreter
        base = await self.stored(ns) if ns else Dtab.empty()

        async def compute() -> Any:
            return interp.delegate(base + extra, path, self.limits.dtab_budget(extra))

        def pending(tree: Any) -> bool:
            # Any leaf whose bound id still has pending addresses.
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
            raise lookup_failed(err, f"Delegating {path.show()} failed") from None
        return encode(delegate_tree_to_json(tree, interp.addr_of))

    async def _settle_quiet(
        self, compute: Callable[[], Awaitable[Any]], pending: Callable[[Any], bool]
    ) -> Any:
        """Recompute until nothing is pending; the caller bounds the wait."""
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
        if media_type(req.content_type) != JSON:
            raise HTTPProblem(415, f"Expected {JSON}, got {req.content_type or 'nothing'}.\n")
        body = json_body(await self.body(req), "Malformed delegation request")
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
            raise unparsable(err, f"Invalid path: {err}", diagram=False) from None
        extra = parse_dtab_param(body["dtab"])
        ns = body.get("namespace") or None
        if ns is not None:
            namespace_of(ns)
        resp.content_type = JSON
        resp.text = await self._explain(ns, path, extra)


class BoundNames(Resource):
    """``/api/1/bound-names``: ids the enumerating namers know (``io.l5d.fs``, the registry)."""

    def _names(self) -> str:
        ids: set[str] = set()
        for namer in self.rt.namers:
            listed = namer.enumerate()
            if listed:
                ids.update(p.show() for p in listed)
        return json_line(sorted(ids))

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if truthy(req, "watch"):

            async def render() -> str | None:
                return self._names()

            self.stream(req, resp, render, key=("bound-names",), topics=[NAMERS_TOPIC])
            return
        resp.content_type = JSON
        resp.text = self._names()
