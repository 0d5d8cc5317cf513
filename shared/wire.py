"""JSON codecs for namerd's HTTP API shapes (docs/namerd-api.md, JSON shapes).

``*_to_json`` build plain dicts/lists in namerd's field order (``type`` first, absent fields
left out); :func:`encode` renders them compactly, byte for byte as namerd's Jackson does for the
same values. ``*_from_json`` take parsed JSON (``json.loads`` output) and raise
:class:`WireFormatError` naming the JSON location of anything wrong. Framing (one value plus
``\\n`` per line in watch streams) is the API's business, not the codec's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._parser import parse_tree
from .addr import (
    ADDR_NEG,
    ADDR_PENDING,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrPending,
    parse_weight,
)
from .delegate import (
    DENTRY_REPEAT_MAX_BYTES,
    AltNode,
    DelegateNode,
    DelegateTree,
    EmptyNode,
    ExceptionNode,
    FailNode,
    LeafNode,
    NegNode,
    TransformationNode,
    UnionNode,
    WeightedNode,
    dentry_json_bytes,
)
from .dtab import Dentry, Dtab, Prefix
from .errors import DtabParseError, SharedError
from .names import Bound
from .nametree import EMPTY, FAIL, NEG, Alt, Fail, Leaf, NameTree, Neg, Union, Weighted, show_tree
from .path import Path

__all__ = [
    "WireFormatError",
    "addr_from_json",
    "addr_to_json",
    "address_from_json",
    "address_to_json",
    "bound_from_json",
    "bound_to_json",
    "bound_tree_from_json",
    "bound_tree_to_json",
    "delegate_tree_from_json",
    "delegate_tree_to_json",
    "dentry_from_json",
    "dentry_to_json",
    "dtab_from_json",
    "dtab_to_json",
    "encode",
]

Json = Any
AddrOf = Callable[[Bound], Addr | None]


class WireFormatError(SharedError):
    """JSON not shaped as namerd's API shapes it; ``where`` is a JSON path (``$.alt[0]``)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


def encode(value: Json) -> str:
    """Compact JSON as namerd writes it: no spaces, non-ASCII kept as UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# -- helpers ------------------------------------------------------------------------------------


def _obj(v: Json, where: str) -> Mapping[str, Json]:
    if not isinstance(v, dict):
        raise WireFormatError(where, f"expected an object, got {_kind(v)}")
    return v


def _str(o: Mapping[str, Json], key: str, where: str) -> str:
    v = o.get(key)
    if not isinstance(v, str):
        raise WireFormatError(f"{where}.{key}", f"expected a string, got {_kind(v)}")
    return v


def _kind(v: Json) -> str:
    if v is None:
        return "null/missing"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "a number"
    )


def _path(o: Mapping[str, Json], key: str, where: str) -> Path:
    text = _str(o, key, where)
    try:
        return Path.read(text)
    except DtabParseError as err:
        raise WireFormatError(f"{where}.{key}", f"invalid path: {err}") from err


def _meta(o: Mapping[str, Json], where: str) -> dict[str, Json]:
    m = o.get("meta", {})
    if not isinstance(m, dict):
        raise WireFormatError(f"{where}.meta", f"expected an object, got {_kind(m)}")
    return dict(m)


# -- dentries and dtabs ---------------------------------------------------------------------------


def dentry_to_json(d: Dentry) -> dict[str, Json]:
    """``{"prefix":"/svc","dst":"/#/io.l5d.fs"}``."""
    return {"prefix": d.prefix.show(), "dst": show_tree(d.dst)}


def dentry_from_json(v: Json, where: str = "$") -> Dentry:
    """Inverse of :func:`dentry_to_json`."""
    o = _obj(v, where)
    try:
        prefix = Prefix.read(_str(o, "prefix", where))
    except DtabParseError as err:
        raise WireFormatError(f"{where}.prefix", f"invalid prefix: {err}") from err
    try:
        dst = parse_tree(_str(o, "dst", where))
    except DtabParseError as err:
        raise WireFormatError(f"{where}.dst", f"invalid name tree: {err}") from err
    return Dentry(prefix, dst)


def dtab_to_json(d: Dtab) -> list[dict[str, Json]]:
    """A dtab as namerd's JSON body: a list of dentries."""
    return [dentry_to_json(x) for x in d]


def dtab_from_json(v: Json, where: str = "$") -> Dtab:
    """Inverse of :func:`dtab_to_json` (a ``null`` element is an error, as in namerd)."""
    if not isinstance(v, list):
        raise WireFormatError(where, f"expected an array of dentries, got {_kind(v)}")
    return Dtab(dentry_from_json(x, f"{where}[{i}]") for i, x in enumerate(v))


# -- addresses ----------------------------------------------------------------------------------


def address_to_json(a: Address) -> dict[str, Json]:
    """``{"ip":"10.0.0.1","port":8080,"meta":{}}``."""
    return {"ip": a.ip, "port": a.port, "meta": dict(a.meta)}


def address_from_json(v: Json, where: str = "$") -> Address:
    """Inverse of :func:`address_to_json`."""
    o = _obj(v, where)
    port = o.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise WireFormatError(f"{where}.port", f"expected a port number 0-65535, got {port!r}")
    return Address(_str(o, "ip", where), port, _meta(o, where))


def addr_to_json(a: Addr) -> dict[str, Json]:
    """``bound`` (with addrs sorted by ip, port), ``neg``, ``pending`` or ``failed``."""
    if isinstance(a, AddrBound):
        return {
            "type": "bound",
            "addrs": [address_to_json(x) for x in a.sorted_addrs()],
            "meta": dict(a.meta),
        }
    if isinstance(a, AddrFailed):
        return {"type": "failed", "cause": a.cause}
    if isinstance(a, AddrPending):
        return {"type": "pending"}
    return {"type": "neg"}


def addr_from_json(v: Json, where: str = "$") -> Addr:
    """Inverse of :func:`addr_to_json`."""
    o = _obj(v, where)
    kind = _str(o, "type", where)
    if kind == "bound":
        addrs = o.get("addrs", [])
        if not isinstance(addrs, list):
            raise WireFormatError(f"{where}.addrs", f"expected an array, got {_kind(addrs)}")
        return AddrBound(
            frozenset(address_from_json(x, f"{where}.addrs[{i}]") for i, x in enumerate(addrs)),
            _meta(o, where),
        )
    if kind == "neg":
        return ADDR_NEG
    if kind == "pending":
        return ADDR_PENDING
    if kind == "failed":
        cause = o.get("cause", "")
        return AddrFailed(cause if isinstance(cause, str) else str(cause))
    raise WireFormatError(f"{where}.type", f"unknown addr type {kind!r}")


# -- bound names and bound trees ----------------------------------------------------------------


def bound_to_json(b: Bound, addr: Addr | None) -> dict[str, Json]:
    """``{"addr":{...},"id":"/#/...","path":"/residual"}`` (``addr`` left out when None)."""
    out: dict[str, Json] = {}
    if addr is not None:
        out["addr"] = addr_to_json(addr)
    out["id"] = b.id.show()
    out["path"] = b.residual.show()
    return out


def bound_from_json(v: Json, where: str = "$") -> tuple[Bound, Addr | None]:
    """Inverse of :func:`bound_to_json`: the bound name and its inline addr, if any."""
    o = _obj(v, where)
    addr = addr_from_json(o["addr"], f"{where}.addr") if "addr" in o else None
    residual = _path(o, "path", where) if "path" in o else Path()
    return Bound(_path(o, "id", where), residual), addr


def _no_addr(_: Bound) -> Addr | None:
    return None


def bound_tree_to_json(tree: NameTree[Bound], addr_of: AddrOf = _no_addr) -> dict[str, Json]:
    """A bind result as namerd's ``/api/1/bind`` body (no ``path``/``dentry`` on nodes)."""
    if isinstance(tree, Leaf):
        return {"type": "leaf", "bound": bound_to_json(tree.value, addr_of(tree.value))}
    if isinstance(tree, Alt):
        return {"type": "alt", "alt": [bound_tree_to_json(t, addr_of) for t in tree.trees]}
    if isinstance(tree, Union):
        return {
            "type": "union",
            "union": [
                {"weight": w.weight, "tree": bound_tree_to_json(w.tree, addr_of)}
                for w in tree.weighted
            ],
        }
    if isinstance(tree, Neg):
        return {"type": "neg"}
    if isinstance(tree, Fail):
        return {"type": "fail"}
    return {"type": "empty"}


def _weight(v: Mapping[str, Json], where: str) -> float:
    # Union branch weights follow the endpoint weight rule (the dtab grammar cannot write a
    # negative one either); namerd never sends anything else.
    w = v.get("weight")
    if isinstance(w, bool) or not isinstance(w, int | float):
        raise WireFormatError(f"{where}.weight", f"expected a number, got {_kind(w)}")
    try:
        return parse_weight(w)
    except ValueError as err:
        raise WireFormatError(f"{where}.weight", f"{w!r} {err}") from None


def _children(o: Mapping[str, Json], key: str, where: str) -> list[Json]:
    v = o.get(key)
    if not isinstance(v, list):
        raise WireFormatError(f"{where}.{key}", f"expected an array, got {_kind(v)}")
    return v


def bound_tree_from_json(v: Json, where: str = "$") -> tuple[NameTree[Bound], dict[Path, Addr]]:
    """Decode a bind result. Returns the tree and the inline addrs by bound id.

    Each leaf's :attr:`Bound.weight` is set from its innermost enclosing union branch, the same
    value binding produced on the namerd side.
    """
    addrs: dict[Path, Addr] = {}

    def go(v: Json, where: str, weight: float | None) -> NameTree[Bound]:
        o = _obj(v, where)
        kind = _str(o, "type", where)
        if kind == "leaf":
            b, addr = bound_from_json(o.get("bound"), f"{where}.bound")
            if addr is not None:
                addrs[b.id] = addr
            return Leaf(Bound(b.id, b.residual, weight))
        if kind == "alt":
            kids = _children(o, "alt", where)
            return Alt(tuple(go(x, f"{where}.alt[{i}]", weight) for i, x in enumerate(kids)))
        if kind == "union":
            branches = []
            for i, x in enumerate(_children(o, "union", where)):
                wo = _obj(x, f"{where}.union[{i}]")
                w = _weight(wo, f"{where}.union[{i}]")
                branches.append(Weighted(w, go(wo.get("tree"), f"{where}.union[{i}].tree", w)))
            return Union(tuple(branches))
        if kind == "neg":
            return NEG
        if kind == "fail":
            return FAIL
        if kind == "empty":
            return EMPTY
        raise WireFormatError(f"{where}.type", f"unknown bound tree node type {kind!r}")

    return go(v, where, None), addrs


# -- delegate trees -----------------------------------------------------------------------------


class _DelegateRenderer:
    """Renders one explanation; each distinct dentry is shown once (memo by identity).

    A node's dentry is printed unless it is longer than ``DENTRY_REPEAT_MAX_BYTES`` and is the
    one a reader infers for the node: its previous sibling's (in an ``alt``/``union`` list) or
    else its parent's (``shared.delegate``, "Sharing the dentry"). That keeps namerd's exact
    bytes for ordinary dtabs and makes the output linear for a dentry with thousands of
    branches (each branch would otherwise repeat all of them).
    """

    def __init__(self, addr_of: AddrOf) -> None:
        self.addr_of = addr_of
        # id(dentry) -> (its JSON, whether a node may repeat it); the tree keeps them alive.
        self._dentries: dict[int, tuple[dict[str, Json], bool]] = {}

    def children(self, trees: Iterable[DelegateTree], parent: Dentry | None) -> list[Json]:
        out: list[Json] = []
        inferred = parent
        for t in trees:
            out.append(self.render(t, inferred))
            if not isinstance(t, TransformationNode):
                inferred = t.dentry
        return out

    def head(
        self, kind: str, path: str, dentry: Dentry | None, inferred: Dentry | None
    ) -> dict[str, Json]:
        out: dict[str, Json] = {"type": kind, "path": path}
        if dentry is not None:
            known = self._dentries.get(id(dentry))
            if known is None:
                shown = dentry_to_json(dentry)
                size = dentry_json_bytes(dentry)
                known = self._dentries[id(dentry)] = (shown, size <= DENTRY_REPEAT_MAX_BYTES)
            if dentry is not inferred or known[1]:
                out["dentry"] = known[0]
        return out

    def render(self, node: DelegateTree, inferred: Dentry | None) -> dict[str, Json]:
        if isinstance(node, TransformationNode):
            return {
                "type": "transformation",
                "path": node.path.show(),
                "name": node.name,
                "bound": bound_to_json(node.bound, self.addr_of(node.bound)),
                "tree": self.render(node.tree, inferred),
            }
        d = node.dentry
        if isinstance(node, DelegateNode):
            out = self.head("delegate", node.path.show(), d, inferred)
            out["delegate"] = self.render(node.tree, d)
            return out
        if isinstance(node, AltNode):
            out = self.head("alt", node.path.show(), d, inferred)
            out["alt"] = self.children(node.trees, d)
            return out
        if isinstance(node, UnionNode):
            out = self.head("union", node.path.show(), d, inferred)
            trees = self.children((w.tree for w in node.weighted), d)
            out["union"] = [
                {"weight": w.weight, "tree": t} for w, t in zip(node.weighted, trees, strict=True)
            ]
            return out
        if isinstance(node, LeafNode):
            out = self.head("leaf", node.path.show(), d, inferred)
            value = node.value
            if isinstance(value, Bound):
                out["bound"] = bound_to_json(value, self.addr_of(value))
            else:  # only seen mid-algorithm; show the unbound path rather than crash
                out["bound"] = {"id": value.show(), "path": "/"}
            return out
        if isinstance(node, NegNode):
            return self.head("neg", "~" if node.path.is_empty else node.path.show(), d, inferred)
        if isinstance(node, FailNode):
            shown = node.path.show()
            is_sys_fail = node.path.labels[:2] == (b"$", b"fail")
            return self.head("fail", shown if is_sys_fail else "!", d, inferred)
        if isinstance(node, EmptyNode):
            return self.head("empty", node.path.show(), d, inferred)
        out = self.head("exception", node.path.show(), d, inferred)
        out["message"] = node.message
        return out


def delegate_tree_to_json(node: DelegateTree, addr_of: AddrOf = _no_addr) -> dict[str, Json]:
    """A delegation explanation as ``/api/1/delegate`` and ``/delegator.json`` return it.

    A long dentry is left out where a reader can infer it (see :class:`_DelegateRenderer`);
    :func:`delegate_tree_from_json` puts it back.
    """
    return _DelegateRenderer(addr_of).render(node, None)


def delegate_tree_from_json(v: Json, where: str = "$") -> tuple[DelegateTree, dict[Path, Addr]]:
    """Decode a delegation explanation; also returns inline addrs by bound id.

    namerd prints a Neg's empty path as ``"~"`` and a non-``/$/fail`` Fail's path as ``"!"``;
    both decode to the empty path. A node without a ``dentry`` has its previous sibling's (in
    an ``alt``/``union`` list) or else its parent's: our renderer leaves long repeated dentries
    out, and namerd leaves one out only on the root, which has no parent.
    """
    addrs: dict[Path, Addr] = {}

    def path_of(o: Mapping[str, Json], where: str) -> Path:
        text = o.get("path", "/")
        if text in ("~", "!"):
            return Path()
        return _path(o, "path", where)

    def dentry_of(o: Mapping[str, Json], where: str, parent: Dentry | None) -> Dentry | None:
        return dentry_from_json(o["dentry"], f"{where}.dentry") if "dentry" in o else parent

    def leaf_bound(bv: Json, where: str) -> Bound:
        b, addr = bound_from_json(bv, where)
        if addr is not None:
            addrs[b.id] = addr
        return b

    def go(v: Json, where: str, parent: Dentry | None) -> DelegateTree:
        o = _obj(v, where)
        kind = _str(o, "type", where)
        if kind == "transformation":
            return TransformationNode(
                path_of(o, where),
                _str(o, "name", where),
                leaf_bound(o.get("bound"), f"{where}.bound"),
                go(o.get("tree"), f"{where}.tree", parent),
            )
        p, d = path_of(o, where), dentry_of(o, where, parent)
        if kind == "delegate":
            return DelegateNode(p, d, go(o.get("delegate"), f"{where}.delegate", d))
        if kind == "alt":
            trees: list[DelegateTree] = []
            inferred = d
            for i, x in enumerate(_children(o, "alt", where)):
                trees.append(go(x, f"{where}.alt[{i}]", inferred))
                inferred = getattr(trees[-1], "dentry", inferred)
            return AltNode(p, d, tuple(trees))
        if kind == "union":
            branches = []
            inferred = d
            for i, x in enumerate(_children(o, "union", where)):
                wo = _obj(x, f"{where}.union[{i}]")
                weight = _weight(wo, f"{where}.union[{i}]")
                tree = go(wo.get("tree"), f"{where}.union[{i}].tree", inferred)
                inferred = getattr(tree, "dentry", inferred)
                branches.append(WeightedNode(weight, tree))
            return UnionNode(p, d, tuple(branches))
        if kind == "leaf":
            return LeafNode(p, d, leaf_bound(o.get("bound"), f"{where}.bound"))
        if kind == "neg":
            return NegNode(p, d)
        if kind == "fail":
            return FailNode(p, d)
        if kind == "empty":
            return EmptyNode(p, d)
        if kind == "exception":
            msg = o.get("message", "")
            return ExceptionNode(p, d, msg if isinstance(msg, str) else str(msg))
        raise WireFormatError(f"{where}.type", f"unknown delegate tree node type {kind!r}")

    return go(v, where, None), addrs
