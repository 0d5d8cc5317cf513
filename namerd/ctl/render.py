"""namerctl's drawings for people: delegation explanations, bound trees, and what a dtab
change does (``dtab_diff``: the dentry lines removed and added; ``name_diff``: a name's bound
tree before and after, from namerd's dry run).

Trees are drawn with box-drawing characters when stdout can encode them, else ASCII
(:func:`glyphs`). Drawing is iterative, so the ~100-level trees of looping dtabs draw without
deep recursion. Everything here returns lines; printing is the commands' business.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from namerd.ctl.errors import first_line
from shared import (
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrPending,
    Alt,
    AltNode,
    Bound,
    DelegateNode,
    DelegateTree,
    Empty,
    EmptyNode,
    ExceptionNode,
    Fail,
    FailNode,
    Leaf,
    LeafNode,
    NameTree,
    Neg,
    NegNode,
    Path,
    TransformationNode,
    Union,
    UnionNode,
    format_weight,
)
from shared.wire import encode

__all__ = [
    "ASCII",
    "MAX_ADDRS_SHOWN",
    "UNICODE",
    "Glyphs",
    "draw_tree",
    "dtab_diff",
    "glyphs",
    "name_diff",
    "negative_nodes",
    "pretty_dtab",
    "render_bound",
    "render_delegate",
    "show_addr",
    "show_address",
]

#: At most this many addresses are listed on one line of a tree (``--json`` has them all).
MAX_ADDRS_SHOWN = 8

T = TypeVar("T")


@dataclass(frozen=True)
class Glyphs:
    tee: str
    last: str
    pipe: str
    space: str
    arrow: str
    cross: str
    used: str


UNICODE = Glyphs("├─ ", "└─ ", "│  ", "   ", "→", "✗", "← used")
ASCII = Glyphs("|- ", "`- ", "|  ", "   ", "->", "x", "<- used")


def glyphs() -> Glyphs:
    """Box-drawing characters if stdout can encode them, else ASCII."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "├└│→✗←".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


def draw_tree(
    root: T, describe: Callable[[T], tuple[str, Sequence[T]]], g: Glyphs
) -> Iterator[str]:
    """Lines of an indented tree; ``describe(node)`` gives its text and children.

    Iterative, so the ~100-level trees of looping dtabs draw without deep recursion.
    """
    stack: list[tuple[T, bool | None, str]] = [(root, None, "")]
    while stack:
        node, is_last, indent = stack.pop()
        text, kids = describe(node)
        if is_last is None:
            yield text
            child_indent = ""
        else:
            yield indent + (g.last if is_last else g.tee) + text
            child_indent = indent + (g.space if is_last else g.pipe)
        for i in range(len(kids) - 1, -1, -1):
            stack.append((kids[i], i == len(kids) - 1, child_indent))


def _number(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def show_address(a: Address, full_meta: bool = False) -> str:
    host = f"[{a.ip}]" if ":" in a.ip else a.ip
    text = f"{host}:{a.port}"
    weight = a.meta.get("endpoint_addr_weight")
    if weight is not None:
        text += f" w={_number(weight)}"
    if full_meta:
        for key in sorted(k for k in a.meta if k != "endpoint_addr_weight"):
            text += f" {key}={encode(a.meta[key])}"
    return text


def show_addr(addr: Addr | None, g: Glyphs) -> str:
    """An inline addr on a tree line."""
    if addr is None:
        return ""
    if isinstance(addr, AddrBound):
        addrs = addr.sorted_addrs()
        if not addrs:
            return "[] (exists, no endpoints)"
        shown = [show_address(a) for a in addrs[:MAX_ADDRS_SHOWN]]
        if len(addrs) > MAX_ADDRS_SHOWN:
            shown.append(f"... {len(addrs) - MAX_ADDRS_SHOWN} more")
        return "[" + ", ".join(shown) + "]"
    if isinstance(addr, AddrFailed):
        return f"{g.cross} addresses failed: {first_line(addr.cause)}"
    if isinstance(addr, AddrPending):
        return "(addresses pending)"
    return "(no addresses: the namer does not know this id)"


def _join(*parts: str) -> str:
    return "  ".join(p for p in parts if p)


def _shares(weights: Sequence[float]) -> list[str]:
    total = sum(w for w in weights if w > 0)
    out_: list[str] = []
    for w in weights:
        share = f" ({w / total:.0%})" if total > 0 and w >= 0 else ""
        out_.append(f"{format_weight(w)}{share}")
    return out_


def _message(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return lines[0].strip() + (" ..." if len(lines) > 1 else "")


# -- delegate trees -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    """A display-only line under a node (the bound name of a leaf)."""

    text: str


@dataclass(frozen=True)
class _DNode:
    node: DelegateTree | _Text
    parent_dentry: str | None = None
    weight: str | None = None
    used: bool = False


def _delegate_children(node: DelegateTree) -> list[DelegateTree]:
    if isinstance(node, DelegateNode | TransformationNode):
        return [node.tree]
    if isinstance(node, AltNode):
        return list(node.trees)
    if isinstance(node, UnionNode):
        return [w.tree for w in node.weighted]
    return []


def negative_nodes(root: DelegateTree) -> set[int]:
    """ids of the nodes that evaluate to ``~`` (an Alt skips them): a neg, or a node all of
    whose children are negative. Computed bottom-up without recursion."""
    neg: set[int] = set()
    order: list[DelegateTree] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(_delegate_children(node))
    for node in reversed(order):  # children before parents
        kids = _delegate_children(node)
        if isinstance(node, NegNode) or (kids and all(id(k) in neg for k in kids)):
            neg.add(id(node))
        elif isinstance(node, AltNode | UnionNode) and not kids:
            neg.add(id(node))
    return neg


def render_delegate(root: DelegateTree, addrs: Mapping[Path, Addr], g: Glyphs) -> list[str]:
    """A delegation explanation as an indented tree.

    Each line is one node: its weight (union branches), the dentry that produced it (only
    when it differs from its parent's), ``→``, the path it is about, and what it is. A leaf
    gets a child line with its bound id, residual and addresses; on an alt the first
    non-negative branch, the one binding uses, is marked.
    """
    neg = negative_nodes(root)

    def bound_line(b: Bound) -> _Text:
        residual = f"residual {b.residual.show()}" if not b.residual.is_empty else ""
        return _Text(_join(f"bound {b.id.show()}", residual, show_addr(addrs.get(b.id), g)))

    def describe(d: _DNode) -> tuple[str, list[_DNode]]:
        node = d.node
        if isinstance(node, _Text):
            return node.text, []
        weight = d.weight or ""
        used = g.used if d.used else ""
        if isinstance(node, TransformationNode):
            head = f"{node.path.show()}  (transformed by {node.name})"
            return _join(weight, head, used), [
                _DNode(bound_line(node.bound)),
                _DNode(node.tree, d.parent_dentry),
            ]
        dentry = node.dentry.show() if node.dentry is not None else None
        via = f"{dentry}  {g.arrow}  " if dentry is not None and dentry != d.parent_dentry else ""
        if isinstance(node, NegNode | FailNode) and node.path.is_empty:
            path = "~" if isinstance(node, NegNode) else "!"
        else:
            path = node.path.show()
        head = via + path
        kids: list[_DNode] = []
        what = ""
        if isinstance(node, DelegateNode):
            kids = [_DNode(node.tree, dentry)]
        elif isinstance(node, AltNode):
            what = "(alt: the first branch that is not ~ wins)"
            chosen = next((i for i, t in enumerate(node.trees) if id(t) not in neg), None)
            if len(node.trees) < 2:
                chosen = None
            kids = [_DNode(t, dentry, used=i == chosen) for i, t in enumerate(node.trees)]
        elif isinstance(node, UnionNode):
            what = "(union: split by weight)"
            labels = _shares([w.weight for w in node.weighted])
            kids = [
                _DNode(w.tree, dentry, weight=label)
                for w, label in zip(node.weighted, labels, strict=True)
            ]
        elif isinstance(node, LeafNode):
            value = node.value
            bound = value if isinstance(value, Bound) else Bound(value)
            kids = [_DNode(bound_line(bound))]
        elif isinstance(node, NegNode):
            what = "(neg: nothing here, falls back)"
        elif isinstance(node, FailNode):
            what = "(fail: the lookup stops here)"
        elif isinstance(node, EmptyNode):
            what = "(empty: exists, no endpoints)"
        elif isinstance(node, ExceptionNode):
            what = f"{g.cross} error: {_message(node.message)}"
        return _join(weight, head, what, used), kids

    return list(draw_tree(_DNode(root), describe, g))


# -- bound trees ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BNode:
    tree: NameTree[Bound]
    weight: str | None = None
    used: bool = False


def _bound_negative(root: NameTree[Bound]) -> set[int]:
    neg: set[int] = set()
    order: list[NameTree[Bound]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(_bound_children(node))
    for node in reversed(order):
        kids = _bound_children(node)
        if isinstance(node, Neg) or (
            isinstance(node, Alt | Union) and all(id(k) in neg for k in kids)
        ):
            neg.add(id(node))
    return neg


def _bound_children(node: NameTree[Bound]) -> list[NameTree[Bound]]:
    if isinstance(node, Alt):
        return list(node.trees)
    if isinstance(node, Union):
        return [w.tree for w in node.weighted]
    return []


def render_bound(root: NameTree[Bound], addrs: Mapping[Path, Addr], g: Glyphs) -> list[str]:
    """A bind result as an indented tree: ids, residuals, weights and addresses."""
    neg = _bound_negative(root)

    def describe(b: _BNode) -> tuple[str, list[_BNode]]:
        node = b.tree
        weight = b.weight or ""
        used = g.used if b.used else ""
        kids: list[_BNode] = []
        if isinstance(node, Leaf):
            value = node.value
            residual = f"residual {value.residual.show()}" if not value.residual.is_empty else ""
            text = _join(value.id.show(), residual, show_addr(addrs.get(value.id), g))
        elif isinstance(node, Alt):
            text = "alt (the first branch that is not ~ wins)"
            chosen = next((i for i, t in enumerate(node.trees) if id(t) not in neg), None)
            if len(node.trees) < 2:
                chosen = None
            kids = [_BNode(t, used=i == chosen) for i, t in enumerate(node.trees)]
        elif isinstance(node, Union):
            text = "union (split by weight)"
            labels = _shares([w.weight for w in node.weighted])
            kids = [
                _BNode(w.tree, weight=label) for w, label in zip(node.weighted, labels, strict=True)
            ]
        elif isinstance(node, Neg):
            text = "~  (neg: the name does not resolve)"
        elif isinstance(node, Fail):
            text = "!  (fail: the dtab says this name fails)"
        elif isinstance(node, Empty):
            text = "$  (empty: exists, no endpoints)"
        else:  # pragma: no cover - NameTree is closed
            text = repr(node)
        return _join(weight, text, used), kids

    return list(draw_tree(_BNode(root), describe, g))


def pretty_dtab(dentries: Sequence[Mapping[str, str]]) -> list[str]:
    """namerctl's pretty form: prefixes padded to one width, then ``  => dst ;``."""
    width = max((len(d["prefix"]) for d in dentries), default=0)
    return [f"{d['prefix'].ljust(width)}  => {d['dst']} ;" for d in dentries]


def dtab_diff(old: Sequence[Mapping[str, str]], new: Sequence[Mapping[str, str]]) -> list[str]:
    """The dentries ``new`` removes (``- ``) and adds (``+ ``), one ``prefix => dst`` per line,
    in dtab order; no context lines. Empty when the two are the same."""
    a = [f"{d['prefix']} => {d['dst']}" for d in old]
    b = [f"{d['prefix']} => {d['dst']}" for d in new]
    return [
        line[:1] + " " + line[1:]
        for line in difflib.unified_diff(a, b, n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def name_diff(
    entry: Mapping[str, Any],
    decode: Callable[[Any], tuple[NameTree[Bound], Mapping[Path, Addr]]],
    g: Glyphs,
) -> list[str]:
    """One name of a dry run: its path and whether it changes, then its bound tree before and
    after (only once if unchanged), indented. A binding failure is one ``✗ error:`` line."""
    marks = ["changed" if entry["changed"] else "unchanged"]
    if entry.get("watched"):
        marks.append("in use")
    lines = [f"{entry['path']}  ({', '.join(marks)})"]
    sides = (("before", entry["before"]), ("after", entry["after"]))
    for label, tree in sides if entry["changed"] else (("now", entry["before"]),):
        lines.append(f"  {label}:")
        if isinstance(tree, Mapping) and tree.get("type") == "exception":
            lines.append(f"    {g.cross} error: {_message(str(tree.get('message', '')))}")
            continue
        root, addrs = decode(tree)
        lines.extend("    " + line for line in render_bound(root, addrs, g))
    return lines
