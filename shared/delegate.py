"""The delegation explanation ("delegate tree"): how a path was routed, step by step.

This is what Linkerd's ``/delegator.json`` and namerd's ``/api/1/delegate`` show, and what the
dtab playground draws. Every node carries the ``path`` it is about and the ``dentry`` that
produced it (``None`` for the root, Linkerd's ``Dentry.nop``).

It differs from binding on purpose: an Alt explains ALL its branches (not just the first that
works), namer errors become :class:`ExceptionNode` leaves instead of failing everything, and the
result is simplified for reading (a Delegate whose child is about the same path disappears,
nested Alts about the same path are spliced). It is a sans-I/O stepper like :class:`Binder`,
with the same work budget (``shared.budget``): nodes visited and built, dentries compared,
nodes of the explanation, and an estimate of its JSON size (``max_output_bytes``). A budget
error ends the whole explanation; it never becomes an exception node.

Sharing the dentry. A dentry whose destination is a union of N branches labels all N branch
nodes (Linkerd's ``DelegateTree.fromNameTree`` does the same), so printing it on each would
make the JSON quadratic in N (42 MB for 2,000 branches). The nodes share one :class:`Dentry`
object in memory, and ``shared.wire`` prints a dentry longer than
:data:`DENTRY_REPEAT_MAX_BYTES` only where a reader could not infer it: a node leaves it out
when it is its previous sibling's (in an alt or union) or else its parent's, and the reader
puts it back. Shorter dentries are printed on every node, so ordinary dtabs get namerd's exact
bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeAlias

from .binding import (
    DEFAULT_MAX_DEPTH,
    NeedLookup,
    Stepper,
    _Answer,
    _Event,
    _lookup,
    _no_namers,
    run_sync,
    tree_size,
)
from .budget import STORED_DTAB_BUDGET, WorkBudget
from .dtab import Dentry, Dtab
from .errors import BudgetExceeded, DelegationError, MaxDepthExceeded
from .names import Bound, Name
from .nametree import Alt, Fail, Leaf, NameTree, Neg, Union
from .path import Path

__all__ = [
    "DENTRY_REPEAT_MAX_BYTES",
    "AltNode",
    "DelegateNode",
    "DelegateTree",
    "Delegator",
    "EmptyNode",
    "ExceptionNode",
    "FailNode",
    "LeafNode",
    "NegNode",
    "TransformationNode",
    "UnionNode",
    "WeightedNode",
    "delegate",
    "dentry_json_bytes",
    "simplify_delegate_tree",
]


#: JSON repeats a dentry a reader could infer (a sibling's, the parent's) only up to this size.
DENTRY_REPEAT_MAX_BYTES: Final = 1024

#: JSON bytes of a node besides its path and dentry (``{"type":"leaf","path":"",...}``).
_NODE_JSON_BYTES: Final = 48


def dentry_json_bytes(dentry: Dentry) -> int:
    """About how many bytes ``dentry`` takes as ``{"prefix":..,"dst":..}``."""
    return len(dentry.show()) + 24


@dataclass(frozen=True, slots=True)
class DelegateNode:
    """``path`` was rewritten by ``dentry``'s target ... into ``tree``."""

    path: Path
    dentry: Dentry | None
    tree: DelegateTree


@dataclass(frozen=True, slots=True)
class AltNode:
    """Fallback: the first branch that is not negative is used."""

    path: Path
    dentry: Dentry | None
    trees: tuple[DelegateTree, ...]


@dataclass(frozen=True, slots=True)
class WeightedNode:
    """A union branch and its weight."""

    weight: float
    tree: DelegateTree


@dataclass(frozen=True, slots=True)
class UnionNode:
    """Weighted union: traffic is split over the branches."""

    path: Path
    dentry: Dentry | None
    weighted: tuple[WeightedNode, ...]


@dataclass(frozen=True, slots=True)
class LeafNode:
    """The path was bound to a concrete name (``value`` is Bound; a Path only mid-algorithm)."""

    path: Path
    dentry: Dentry | None
    value: Bound | Path


@dataclass(frozen=True, slots=True)
class NegNode:
    """Nothing matched (or an explicit ``~``, shown with the empty path as ``"~"``)."""

    path: Path
    dentry: Dentry | None


@dataclass(frozen=True, slots=True)
class FailNode:
    """An explicit failure (``!`` or ``/$/fail``)."""

    path: Path
    dentry: Dentry | None


@dataclass(frozen=True, slots=True)
class EmptyNode:
    """The name exists but has no endpoints (``$`` or ``/$/nil``)."""

    path: Path
    dentry: Dentry | None


@dataclass(frozen=True, slots=True)
class ExceptionNode:
    """Looking this path up failed; ``message`` says why."""

    path: Path
    dentry: Dentry | None
    message: str


@dataclass(frozen=True, slots=True)
class TransformationNode:
    """A transformer rewrote ``bound`` into ``tree`` (never produced by the core algorithm)."""

    path: Path
    name: str
    bound: Bound
    tree: DelegateTree


DelegateTree: TypeAlias = (
    DelegateNode
    | AltNode
    | UnionNode
    | LeafNode
    | NegNode
    | FailNode
    | EmptyNode
    | ExceptionNode
    | TransformationNode
)


def from_name_tree(path: Path, dentry: Dentry | None, tree: NameTree[Name]) -> DelegateTree:
    """Copy a name tree's shape, labelling each node with ``path`` and ``dentry``.

    An explicit ``~`` gets the empty path (Linkerd shows it as ``"~"``).
    """
    if isinstance(tree, Leaf):
        return LeafNode(path, dentry, tree.value)
    if isinstance(tree, Alt):
        if not tree.trees:
            return NegNode(path, dentry)
        if len(tree.trees) == 1:
            # Linkerd turns a 1-child Alt into a Delegate (kept by simplify when paths differ).
            return DelegateNode(path, dentry, from_name_tree(path, dentry, tree.trees[0]))
        return AltNode(path, dentry, tuple(from_name_tree(path, dentry, t) for t in tree.trees))
    if isinstance(tree, Union):
        if not tree.weighted:
            return NegNode(path, dentry)
        if len(tree.weighted) == 1:
            return DelegateNode(path, dentry, from_name_tree(path, dentry, tree.weighted[0].tree))
        return UnionNode(
            path,
            dentry,
            tuple(
                WeightedNode(w.weight, from_name_tree(path, dentry, w.tree)) for w in tree.weighted
            ),
        )
    if isinstance(tree, Neg):
        return NegNode(Path(), dentry)
    if isinstance(tree, Fail):
        return FailNode(path, dentry)
    return EmptyNode(path, dentry)


class Delegator(Stepper[DelegateTree]):
    """Explain how ``path`` is bound through ``dtab`` and the namers (see module docstring).

    Args mirror :class:`~shared.binding.Binder`. ``Done.value`` is the simplified tree.

    Raises (from ``next_event``):
        MaxDepthExceeded: the chain outside any Alt/Union is longer than ``max_depth``
            (inside an Alt or Union the branch becomes an :class:`ExceptionNode`).
        BudgetExceeded: more work, nodes or output than ``budget`` allows.
    """

    def __init__(
        self,
        dtab: Dtab,
        path: Path,
        namers: Sequence[Path] = (),
        max_depth: int = DEFAULT_MAX_DEPTH,
        budget: WorkBudget = STORED_DTAB_BUDGET,
        pause_every: int | None = None,
    ) -> None:
        self.dtab = dtab
        self.path = path
        self.namers = tuple(namers)
        self.max_depth = max_depth
        # id(dentry) -> its JSON size; the dentries live in self.dtab, so ids are stable.
        self._dentry_bytes: dict[int, int] = {}
        meter = budget.meter(f"delegating {path.show()}")
        super().__init__(self._run(), meter, pause_every)

    def _run(self) -> Generator[_Event, _Answer, DelegateTree]:
        tree = yield from self._delegate(LeafNode(Path(), None, self.path), 0, None)
        return simplify_delegate_tree(tree)

    def _charge(self, node: DelegateTree, parent: Dentry | None) -> None:
        """Count ``node`` in the explanation and its JSON (as ``shared.wire`` prints it)."""
        self.meter.result()
        size = _NODE_JSON_BYTES + sum(len(label) + 1 for label in node.path.labels)
        dentry = getattr(node, "dentry", None)
        if dentry is not None:
            d_size = self._dentry_bytes.get(id(dentry))
            if d_size is None:
                d_size = self._dentry_bytes[id(dentry)] = dentry_json_bytes(dentry)
            if dentry is not parent or d_size <= DENTRY_REPEAT_MAX_BYTES:
                size += d_size
        self.meter.output(size)

    def _delegate(
        self, node: DelegateTree, depth: int, parent: Dentry | None
    ) -> Generator[_Event, _Answer, DelegateTree]:
        if depth > self.max_depth:
            raise MaxDepthExceeded(self.max_depth, self.path.show())
        self.meter.nodes(1)
        if self._pause_at is not None and self.meter.used >= self._pause_at:
            yield self._pause()
        if isinstance(node, DelegateNode):
            self._charge(node, parent)
            child = yield from self._delegate(node.tree, depth, node.dentry)
            return replace(node, tree=child)
        if isinstance(node, AltNode):
            self._charge(node, parent)
            trees = []
            for t in node.trees:
                trees.append((yield from self._branch(node.path, node.dentry, t, depth)))
            return replace(node, trees=tuple(trees))
        if isinstance(node, UnionNode):
            self._charge(node, parent)
            branches = []
            for w in node.weighted:
                t = yield from self._branch(node.path, node.dentry, w.tree, depth)
                branches.append(WeightedNode(w.weight, t))
            return replace(node, weighted=tuple(branches))
        if isinstance(node, TransformationNode):
            self._charge(node, parent)
            child = yield from self._delegate(node.tree, depth, parent)
            return replace(node, tree=child)
        if not isinstance(node, LeafNode) or isinstance(node.value, Bound):
            self._charge(node, parent)
            return node
        name, dentry = node.value, node.dentry
        self.meter.nodes(len(self.dtab))  # matching() compares every dentry
        matches = self.dtab.matching(name)
        result: DelegateTree
        if not matches:
            try:
                looked_up = yield from _lookup(Dtab.empty(), self.namers, name, self.meter)
            except BudgetExceeded:
                raise
            except DelegationError as err:
                result = ExceptionNode(name, dentry, str(err))
                self._charge(result, parent)
                return result
            if isinstance(looked_up, Neg):
                result = NegNode(name, dentry)
                self._charge(result, parent)
                return result
            result = from_name_tree(name, dentry, looked_up)
        else:
            rewritten = []
            for d in matches:
                dst = d.rewrite(name)
                self.meter.nodes(tree_size(dst))
                rewritten.append(from_name_tree(name, d, dst))
            subtrees = tuple(rewritten)
            if len(subtrees) == 1:
                result = DelegateNode(name, dentry, subtrees[0])
            else:
                result = AltNode(name, dentry, subtrees)
        return (yield from self._delegate(result, depth + 1, parent))

    def _branch(
        self, path: Path, dentry: Dentry | None, tree: DelegateTree, depth: int
    ) -> Generator[_Event, _Answer, DelegateTree]:
        """Explain one Alt/Union branch; its failure is confined to an ExceptionNode."""
        try:
            return (yield from self._delegate(tree, depth, dentry))
        except BudgetExceeded:
            raise  # the whole explanation is over budget, not just this branch
        except DelegationError as err:
            return ExceptionNode(path, dentry, str(err))


def _with_dentry(node: DelegateTree, dentry: Dentry | None) -> DelegateTree:
    if isinstance(node, TransformationNode):
        return node
    return replace(node, dentry=dentry)


def simplify_delegate_tree(node: DelegateTree) -> DelegateTree:
    """Linkerd's ``DelegateTree.simplified``: drop Delegates about the same path, splice Alts."""
    if isinstance(node, DelegateNode):
        child = simplify_delegate_tree(node.tree)
        if not isinstance(child, (NegNode, FailNode, EmptyNode)) and child.path == node.path:
            return _with_dentry(child, node.dentry)
        return replace(node, tree=child)
    if isinstance(node, AltNode):
        if not node.trees:
            return NegNode(node.path, node.dentry)
        if len(node.trees) == 1:
            return simplify_delegate_tree(DelegateNode(node.path, node.dentry, node.trees[0]))
        spliced: list[DelegateTree] = []
        for t in node.trees:
            s = simplify_delegate_tree(t)
            if isinstance(s, AltNode) and s.path == node.path:
                spliced.extend(s.trees)
            else:
                spliced.append(s)
        return replace(node, trees=tuple(spliced))
    if isinstance(node, UnionNode):
        if not node.weighted:
            return NegNode(node.path, node.dentry)
        if len(node.weighted) == 1:
            return simplify_delegate_tree(
                DelegateNode(node.path, node.dentry, node.weighted[0].tree)
            )
        return replace(
            node,
            weighted=tuple(
                WeightedNode(w.weight, simplify_delegate_tree(w.tree)) for w in node.weighted
            ),
        )
    if isinstance(node, TransformationNode):
        return replace(node, tree=simplify_delegate_tree(node.tree))
    return node


def delegate(
    dtab: Dtab,
    path: Path,
    lookup: Callable[[NeedLookup], NameTree[Name]] | None = None,
    namers: Sequence[Path] = (),
    max_depth: int = DEFAULT_MAX_DEPTH,
    budget: WorkBudget = STORED_DTAB_BUDGET,
) -> DelegateTree:
    """Explain synchronously; namer errors from ``lookup`` become exception nodes.

    Raises:
        DelegationError: the chain outside any Alt/Union is longer than ``max_depth``, or
            the explanation needs more than ``budget`` allows (BudgetExceeded).
    """
    return run_sync(Delegator(dtab, path, namers, max_depth, budget), lookup or _no_namers)
