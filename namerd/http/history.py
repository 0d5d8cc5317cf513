"""Our extensions to ``/api/1/dtabs/{ns}``: its history, and a dry run of a new dtab.

* ``GET /api/1/dtabs/{ns}/history[?limit=N]``: the namespace's recorded writes, newest first
  (``namerd.storage.store``, "History"): ``[{"version", "etag", "op", "at", "who", "client",
  "dtab"}, ...]``. 404 if nothing was ever recorded and the namespace does not exist.
* ``POST /api/1/dtabs/{ns}/diff[?path=/svc/a&path=...]`` with a proposed dtab as the body (JSON
  or dtab text, the same rules as PUT): what the names in use would bind to before and after,
  without writing anything. A body that does not parse is 400 with the caret diagram, as for
  PUT. Nothing is written or recorded, but it needs the write token when one is configured:
  it binds a client's dtab under the stored-dtab budget once per name in use.

The names in use
----------------
A dry run binds every name a namerd worker currently serves a ``watch=1`` bind or resolve stream for
in that namespace, i.e. the linkers' routes (``Runtime.names_in_use``: this worker's own
streams at once, and those every other worker and replica sharing the Redis reports each
``limits.namesInUseRefreshMs``), plus every ``path`` parameter. With Redis down it shows the
answering worker's names alone; pass ``path`` for names that must be in the answer.

Each name is bound with the stored dtab (empty if the namespace does not exist) and with the
proposed one, waiting at most ``limits.lookupTimeoutMs`` for pending addresses (after that, a
pending address is shown as ``{"type":"pending"}`` rather than failing the whole answer). A
binding failure (a loop) is ``{"type":"exception","path":..,"message":..}``, as on bind streams.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi

from namerd.http.dtabs import etag, read_dtab_body
from namerd.http.problems import HTTPProblem, unparsable
from namerd.http.resource import JSON, Resource, json_line, namespace_of
from shared import Bound, DelegationError, Dtab, DtabParseError, NameTree, Path
from shared.wire import bound_tree_to_json, dtab_to_json

__all__ = ["DtabDiff", "DtabHistory"]


class DtabHistory(Resource):
    """``GET /api/1/dtabs/{ns}/history[?limit=N]``: recorded writes, newest first."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        raw = req.get_param("limit")
        limit: int | None = None
        if raw is not None:
            if not raw.isdigit() or int(raw) < 1:
                raise HTTPProblem(400, f"limit must be a positive integer, got {raw!r}\n")
            limit = int(raw)
        entries = await self.rt.store.history(ns, limit)
        if not entries and await self.rt.dtab(ns) is None:
            raise HTTPProblem(404, f"namespace {ns!r} does not exist and has no history\n")
        resp.content_type = JSON
        resp.text = json_line(
            [{"version": e.version, "etag": etag(e.version)} | e.to_json() for e in entries]
        )


class DtabDiff(Resource):
    """``POST /api/1/dtabs/{ns}/diff``: the names in use, bound before and after a new dtab."""

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        # The proposed dtab is bound under the *stored* budget (it is about to be stored; a
        # request budget would refuse the big dtabs a dry run is for), once per name in use:
        # that is write-sized work, so it takes the write token when one is configured.
        self.authorize(req)
        namespace_of(ns)
        proposed = read_dtab_body(req, await self.body(req))
        asked = _path_params(req)
        watched = await self.rt.names_in_use(ns)
        current = await self.rt.dtab(ns)
        before = current.dtab if current is not None else Dtab.empty()
        paths = sorted(watched | {p.show() for p in asked})
        trees = await self._bind_all(before, proposed, [Path.read(p) for p in paths])
        resp.content_type = JSON
        resp.text = json_line(
            {
                "namespace": ns,
                "version": etag(current.version) if current is not None else None,
                "before": dtab_to_json(before) if current is not None else None,
                "after": dtab_to_json(proposed),
                "names": [
                    {
                        "path": path,
                        "watched": path in watched,
                        "changed": old != new,
                        "before": old,
                        "after": new,
                    }
                    for path, (old, new) in zip(paths, trees, strict=True)
                ],
            }
        )

    async def _bind_all(
        self, before: Dtab, after: Dtab, paths: list[Path]
    ) -> list[tuple[Any, Any]]:
        """Each path's bound tree (as JSON) under both dtabs, once nothing is pending or
        ``lookupTimeoutMs`` has passed."""
        interp = self.rt.interpreter

        def bind(dtab: Dtab, path: Path) -> NameTree[Bound] | DelegationError:
            try:
                return interp.bind(dtab, path)
            except DelegationError as err:
                return err

        async def compute() -> list[tuple[Any, Any]]:
            return [(bind(before, p), bind(after, p)) for p in paths]

        def pending(value: list[tuple[Any, Any]]) -> bool:
            return any(
                not isinstance(t, DelegationError) and interp.tree_pending(t)
                for pair in value
                for t in pair
            )

        try:
            trees = await self.settle(compute, pending, "the names of the dry run")
        except HTTPProblem as problem:
            if problem.http_status != 503:
                raise
            trees = await compute()  # show what is pending rather than failing the diff

        def as_json(path: Path, tree: NameTree[Bound] | DelegationError) -> Any:
            if isinstance(tree, DelegationError):
                return {"type": "exception", "path": path.show(), "message": str(tree)}
            return bound_tree_to_json(tree, interp.addr_of)

        return [
            (as_json(p, old), as_json(p, new)) for p, (old, new) in zip(paths, trees, strict=True)
        ]


def _path_params(req: falcon.asgi.Request) -> list[Path]:
    """Every ``path`` query parameter (it may repeat); 400 with a caret if one is malformed."""
    out = []
    for raw in req.get_param_as_list("path") or []:
        try:
            out.append(Path.read(raw))
        except DtabParseError as err:
            raise unparsable(err, f"Invalid path: {raw} / {err}") from None
    return out
