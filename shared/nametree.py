"""Name trees: the destinations of dentries and the results of binding.

``Leaf(v)`` a name; ``Alt`` ordered fallback (``a | b``); ``Union`` weighted union
(``0.4*/a & 0.6*/b``); ``NEG`` (``~``, nothing here, fall back); ``FAIL`` (``!``, stop and fail);
``EMPTY`` (``$``, exists but has no endpoints).

The rules (simplify, eval, show) follow Finagle exactly, including its less obvious corners:
``simplify`` does not flatten nested Alts, a ``!`` in an Alt stops the fallback while a ``!`` in a
Union is dropped, ``$`` is not negative, and weights print with Java's ``%.2f`` rounding.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

__all__ = [
    "DEFAULT_WEIGHT",
    "EMPTY",
    "FAIL",
    "NEG",
    "Alt",
    "Empty",
    "Fail",
    "Leaf",
    "NameTree",
    "Neg",
    "Union",
    "Weighted",
    "eval_tree",
    "format_weight",
    "leaves",
    "map_tree",
    "show_tree",
    "simplify",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")

#: The weight of a union branch written without ``w *``.
DEFAULT_WEIGHT = 1.0


@dataclass(frozen=True, slots=True)
class Leaf(Generic[T_co]):
    """A single name (a Path before binding, a Bound name after)."""

    value: T_co


@dataclass(frozen=True, slots=True)
class Alt(Generic[T_co]):
    """Ordered fallback: the first child that is not negative wins."""

    trees: tuple[NameTree[T_co], ...]

    @staticmethod
    def of(*trees: NameTree[U]) -> Alt[U]:
        """``Alt.of(a, b)`` == ``Alt((a, b))``."""
        return Alt(tuple(trees))


@dataclass(frozen=True, slots=True)
class Weighted(Generic[T_co]):
    """One branch of a Union with its relative weight."""

    weight: float
    tree: NameTree[T_co]


@dataclass(frozen=True, slots=True)
class Union(Generic[T_co]):
    """Weighted union: traffic is spread over all non-negative branches."""

    weighted: tuple[Weighted[T_co], ...]

    @staticmethod
    def of(*branches: Weighted[U] | NameTree[U]) -> Union[U]:
        """Build a Union; bare trees get :data:`DEFAULT_WEIGHT`."""
        return Union(
            tuple(b if isinstance(b, Weighted) else Weighted(DEFAULT_WEIGHT, b) for b in branches)
        )


class _Sentinel:
    __slots__ = ()
    _text = "?"

    def __repr__(self) -> str:
        return type(self).__name__.upper()

    def __reduce__(self) -> str:
        return type(self).__name__.upper()


class Neg(_Sentinel):
    """``~``: no destination here; an enclosing Alt tries its next branch."""

    __slots__ = ()


class Fail(_Sentinel):
    """``!``: stop; the name fails (no fallback through an Alt)."""

    __slots__ = ()


class Empty(_Sentinel):
    """``$``: the name exists but currently has no endpoints."""

    __slots__ = ()


NEG = Neg()
FAIL = Fail()
EMPTY = Empty()

NameTree: TypeAlias = Leaf[T] | Alt[T] | Union[T] | Neg | Fail | Empty


# -- show ---------------------------------------------------------------------------------------

_CENT = decimal.Decimal("0.01")
_DEC_CTX = decimal.Context(prec=400, rounding=decimal.ROUND_HALF_UP)


def format_weight(w: float) -> str:
    """Format a weight as Java's ``String.format("%.2f", w)`` does.

    Java rounds the shortest decimal form of the double HALF_UP, so 0.125 -> ``0.13`` and
    2.675 -> ``2.68`` where Python's ``'%.2f'`` gives ``0.12`` and ``2.67``.
    """
    if math.isnan(w):
        return "NaN"
    if math.isinf(w):
        return "Infinity" if w > 0 else "-Infinity"
    d = decimal.Decimal(repr(w)).quantize(_CENT, context=_DEC_CTX)
    return f"{d:f}"


def _leaf_text(value: object) -> str:
    show = getattr(value, "show", None)
    return show() if callable(show) else str(value)


def show_tree(tree: NameTree[T], show_leaf: Callable[[T], str] | None = None) -> str:
    """The canonical text of a tree (``/a | (/b | /c)``, ``0.50*/a & /b``).

    Leaves are shown with ``show_leaf`` or, by default, their ``show()`` method.
    """
    sl: Callable[[T], str] = show_leaf if show_leaf is not None else _leaf_text
    return _show_top(tree, sl)


def _single(tree: NameTree[T]) -> NameTree[T] | None:
    """The only child of a 1-child Alt/Union (such nodes are transparent when shown)."""
    if isinstance(tree, Alt) and len(tree.trees) == 1:
        return tree.trees[0]
    if isinstance(tree, Union) and len(tree.weighted) == 1:
        return tree.weighted[0].tree
    return None


def _show_top(tree: NameTree[T], sl: Callable[[T], str]) -> str:
    while (child := _single(tree)) is not None:
        tree = child
    if isinstance(tree, Alt):
        return " | ".join(_show_union(t, sl) for t in tree.trees)
    if isinstance(tree, Union) and not tree.weighted:
        return ""
    return _show_union(tree, sl)


def _show_union(tree: NameTree[T], sl: Callable[[T], str]) -> str:
    while (child := _single(tree)) is not None:
        tree = child
    if isinstance(tree, Union) and tree.weighted:
        parts = []
        for w in tree.weighted:
            text = _show_simple(w.tree, sl)
            parts.append(
                text if w.weight == DEFAULT_WEIGHT else f"{format_weight(w.weight)}*{text}"
            )
        return " & ".join(parts)
    return _show_simple(tree, sl)


def _show_simple(tree: NameTree[T], sl: Callable[[T], str]) -> str:
    while (child := _single(tree)) is not None:
        tree = child
    if isinstance(tree, Leaf):
        return sl(tree.value)
    if isinstance(tree, Neg):
        return "~"
    if isinstance(tree, Fail):
        return "!"
    if isinstance(tree, Empty):
        return "$"
    return "(" + _show_top(tree, sl) + ")"


# -- algebra ------------------------------------------------------------------------------------


def map_tree(f: Callable[[T], U], tree: NameTree[T]) -> NameTree[U]:
    """Apply ``f`` to every leaf value, keeping shape, weights and ``~ ! $`` nodes."""
    if isinstance(tree, Leaf):
        return Leaf(f(tree.value))
    if isinstance(tree, Alt):
        return Alt(tuple(map_tree(f, t) for t in tree.trees))
    if isinstance(tree, Union):
        return Union(tuple(Weighted(w.weight, map_tree(f, w.tree)) for w in tree.weighted))
    return tree


def leaves(tree: NameTree[T]) -> Iterator[T]:
    """Every leaf value, left to right."""
    if isinstance(tree, Leaf):
        yield tree.value
    elif isinstance(tree, Alt):
        for t in tree.trees:
            yield from leaves(t)
    elif isinstance(tree, Union):
        for w in tree.weighted:
            yield from leaves(w.tree)


def simplify(tree: NameTree[T]) -> NameTree[T]:
    """An evaluation-equivalent smaller tree; a fixpoint: ``simplify(simplify(t)) == simplify(t)``.

    Alt: drop ``~`` children, cut everything after the first ``!``; Union: drop ``~`` and ``!``
    branches, keep the weights of the rest. A 0-child node becomes ``~``, a 1-child node its
    (simplified) child. Nested Alts are deliberately not flattened (Finagle doesn't either).
    """
    if isinstance(tree, Alt):
        if len(tree.trees) <= 1:
            return simplify(tree.trees[0]) if tree.trees else NEG
        kept: list[NameTree[T]] = []
        for child in tree.trees:
            s = simplify(child)
            if isinstance(s, Fail):
                kept.append(s)
                break
            if not isinstance(s, Neg):
                kept.append(s)
        if not kept:
            return NEG
        return kept[0] if len(kept) == 1 else Alt(tuple(kept))
    if isinstance(tree, Union):
        if len(tree.weighted) <= 1:
            return simplify(tree.weighted[0].tree) if tree.weighted else NEG
        branches: list[Weighted[T]] = []
        for w in tree.weighted:
            s = simplify(w.tree)
            if not isinstance(s, (Neg, Fail)):
                branches.append(Weighted(w.weight, s))
        if not branches:
            return NEG
        return branches[0].tree if len(branches) == 1 else Union(tuple(branches))
    return tree


def _eval(tree: NameTree[T]) -> frozenset[T] | Neg | Fail:
    if isinstance(tree, Leaf):
        return frozenset((tree.value,))
    if isinstance(tree, Empty):
        return frozenset()
    if isinstance(tree, (Neg, Fail)):
        return tree
    if isinstance(tree, Alt):
        if len(tree.trees) == 1:
            return _eval(tree.trees[0])
        for child in tree.trees:
            r = _eval(child)
            if not isinstance(r, Neg):
                return r  # a set, or FAIL: a failure stops the fallback
        return NEG
    if len(tree.weighted) == 1:
        return _eval(tree.weighted[0].tree)
    acc: set[T] | None = None
    for w in tree.weighted:
        r = _eval(w.tree)
        if isinstance(r, frozenset):
            acc = set(r) if acc is None else acc | r
    return NEG if acc is None else frozenset(acc)


def eval_tree(tree: NameTree[T]) -> frozenset[T] | None:
    """Evaluate to the set of leaf values, or ``None`` when the tree is negative or failed.

    ``$`` gives the empty set (a name with no endpoints), not ``None``. Weights are ignored.
    """
    r = _eval(tree)
    return r if isinstance(r, frozenset) else None
