"""``/delegator.json`` for the admin server: explain how a path is routed.

Runs in the (synchronous, trio-free) master. For a router bound by namerd it asks namerd's
delegate API with the router's dtab appended (exactly what the workers send when binding);
for a router with a local dtab it runs ``shared``'s Delegator here, looking local ``io.l5d.fs``
services up on disk.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from linker.config.model import LinkerConfig, RouterConfig
from shared import Dtab, DtabParseError, Leaf, NameTree, NeedLookup, Path, delegate
from shared.names import Bound, Name
from shared.nametree import NEG
from shared.wire import delegate_tree_to_json, encode

__all__ = ["make_delegate"]

#: How long the admin server waits for namerd's delegate API.
NAMERD_DELEGATE_TIMEOUT_S = 5.0

Delegate = Callable[[str, str, str | None], tuple[int, str]]


def _namerd_dst(interp: dict[str, Any]) -> tuple[str, int]:
    dst = Path.read(str(interp.get("dst", "/$/inet/127.0.0.1/4180")))
    labels = [label.decode() for label in dst.labels]
    if len(labels) >= 4 and labels[:2] == ["$", "inet"]:
        return labels[2], int(labels[3])
    raise ValueError(f"interpreter dst {dst.show()} is not /$/inet/<host>/<port>")


def _fs_lookup(
    namers: tuple[dict[str, Any], ...],
) -> tuple[list[Path], Callable[[NeedLookup], NameTree[Name]]]:
    roots: dict[Path, FsPath] = {}
    for n in namers:
        prefix = Path.read(str(n.get("prefix", "/io.l5d.fs")))
        if not prefix.labels or prefix.labels[0] != b"#":
            prefix = Path("#") + prefix
        roots[prefix] = FsPath(str(n["rootDir"]))

    def lookup(req: NeedLookup) -> NameTree[Name]:
        root = roots[req.namer]
        if req.path.is_empty:
            return NEG
        service = req.path.labels[0].decode("utf-8", "replace")
        if (root / service).is_file():
            return Leaf(Bound(req.namer + req.path.take(1), req.path.drop(1)))
        return NEG

    return list(roots), lookup


def make_delegate(config: LinkerConfig) -> Delegate:
    """The ``delegate(path, dtab, router)`` callable the admin server calls."""
    routers = {r.label: r for r in config.routers}

    def run(path_text: str, extra_text: str, label: str | None) -> tuple[int, str]:
        router: RouterConfig | None = routers.get(label) if label else config.routers[0]
        if router is None:
            return 404, f"no router labelled {label!r} (routers: {', '.join(routers)})\n"
        try:
            path = Path.read(path_text)
        except DtabParseError as err:
            return 400, f"Invalid path: {err}\n{err.render()}\n"
        try:
            extra = Dtab.read(extra_text) if extra_text else Dtab.empty()
        except DtabParseError as err:
            return 400, f"Invalid dtab: {err}\n{err.render()}\n"
        local = router.dtab + extra
        interp = router.interpreter or {}
        if interp.get("kind") == "io.l5d.namerd.http":
            host, port = _namerd_dst(interp)
            ns = str(interp.get("namespace", "default"))
            query = urllib.parse.urlencode({"path": path.show(), "dtab": local.show()})
            url = f"http://{host}:{port}/api/1/delegate/{urllib.parse.quote(ns)}?{query}"
            try:
                with urllib.request.urlopen(url, timeout=NAMERD_DELEGATE_TIMEOUT_S) as r:
                    return 200, r.read().decode()
            except urllib.error.HTTPError as err:
                return 502, f"namerd answered {err.code}: {err.read().decode(errors='replace')}"
            except OSError as err:
                return (
                    502,
                    f"cannot reach namerd at {host}:{port} to explain {path.show()}: {err}\n",
                )
        prefixes, lookup = _fs_lookup(config.namers)
        tree = delegate(local, path, lookup, namers=prefixes)
        return 200, encode(delegate_tree_to_json(tree))

    return run
