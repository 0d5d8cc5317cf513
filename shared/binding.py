"""Binding a path through a dtab and namers, as a sans-I/O stepper.

The algorithm never performs a lookup itself. Like h11's ``next_event()`` returning
``NEED_DATA``, :meth:`Binder.next_event` returns :class:`NeedLookup` when it needs a configured
namer to look a path up; the caller does the I/O (namerd against Redis or the file system,
the linker against namerd) and resumes it with :meth:`Binder.send` or :meth:`Binder.fail`.
Both sides therefore run the very same rules.

Rules (Finagle ``Namer.bind`` + Linkerd ``ConfiguredNamersInterpreter``):

* one lookup of path ``p``: the dtab's ``lookup(p)``; only if that is exactly ``~``, each
  configured namer whose prefix matches ``p`` (in configuration order, until one answers
  something other than ``~``), and last the system namer (``/$/inet``...);
* Alt children are bound lazily in order; the first non-``~`` result wins, ``!`` stops;
* Union branches are all bound; failed branches are dropped unless all failed; the result is
  simplified; a leaf carries the weight of its innermost union branch;
* every lookup (dtab step or namer) counts one level; more than ``max_depth`` fails with
  :class:`MaxDepthExceeded` (how dtab loops are caught).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from .dtab import Dtab
from .errors import DelegationError, MaxDepthExceeded, NamerFailure
from .names import Bound, Name, system_lookup
from .nametree import FAIL, NEG, Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted, simplify
from .path import Path

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "Binder",
    "Done",
    "Lookup",
    "NeedLookup",
    "Stepper",
    "bind",
    "lookup_by_prefix",
    "run_sync",
]

#: Finagle's ``namerMaxDepth`` default: at most this many lookups in one chain.
DEFAULT_MAX_DEPTH = 100

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class NeedLookup:
    """The stepper needs the namer mounted at ``namer`` to look up ``path``.

    ``path`` is what is left after removing the namer's prefix; ``full`` is the whole path.
    Answer with ``send(tree)`` (a ``NameTree`` of paths and/or :class:`Bound` names; ``NEG``
    for "not mine") or ``fail(message)``.
    """

    namer: Path
    path: Path

    @property
    def full(self) -> Path:
        """The path as it appeared before the namer prefix was removed."""
        return self.namer + self.path


@dataclass(frozen=True, slots=True)
class Done(Generic[R]):
    """The stepper finished; ``value`` is its result."""

    value: R


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str


_Answer = NameTree[Name] | _Failed | None
_Gen = Generator[NeedLookup, _Answer, R]


class Stepper(Generic[R]):
    """Drives a lookup-needing algorithm one request at a time (shared by bind and delegate)."""

    def __init__(self, gen: _Gen[R]) -> None:
        self._gen = gen
        self._pending: NeedLookup | None = None
        self._done: Done[R] | None = None
        self._error: DelegationError | None = None
        self._advance(None)

    def _advance(self, answer: _Answer) -> None:
        try:
            self._pending = self._gen.send(answer)
        except StopIteration as stop:
            self._pending = None
            self._done = Done(stop.value)
        except DelegationError as err:
            self._pending = None
            self._error = err

    def next_event(self) -> NeedLookup | Done[R]:
        """What the caller must do next: answer a :class:`NeedLookup`, or take the :class:`Done`.

        Calling it again without answering returns the same request.

        Raises:
            DelegationError: the algorithm failed (e.g. :class:`MaxDepthExceeded`).
        """
        if self._error is not None:
            raise self._error
        if self._done is not None:
            return self._done
        assert self._pending is not None
        return self._pending

    def send(self, tree: NameTree[Name]) -> None:
        """Answer the pending :class:`NeedLookup` with the namer's result."""
        self._require_pending()
        self._advance(tree)

    def fail(self, message: str) -> None:
        """Answer the pending :class:`NeedLookup` with a namer error (``message`` is shown)."""
        self._require_pending()
        self._advance(_Failed(message))

    def _require_pending(self) -> None:
        if self._pending is None:
            raise RuntimeError("nothing is waiting for a lookup answer; call next_event() first")


def _lookup(
    dtab: Dtab, namers: Sequence[Path], path: Path
) -> Generator[NeedLookup, _Answer, NameTree[Name]]:
    """One lookup step: the dtab, then matching configured namers, then the system namer."""
    tree: NameTree[Name] = dtab.lookup(path)
    if tree is not NEG:
        return tree
    for prefix in namers:
        if path.startswith(prefix):
            answer = yield NeedLookup(prefix, path.drop(len(prefix)))
            if isinstance(answer, _Failed):
                raise NamerFailure(answer.message, path.show())
            if answer is None:
                raise RuntimeError("lookup answered with None")
            if answer is not NEG:
                return answer
    return system_lookup(path)


class Binder(Stepper[NameTree[Bound]]):
    """Bind ``path`` against ``dtab`` and the configured namers.

    Args:
        dtab: the full dtab (``base + local`` overrides).
        path: the logical name, e.g. ``/svc/users``.
        namers: prefixes of configured namers, e.g. ``[Path.read("/#/io.l5d.fs")]``; a path
            under one of them produces a :class:`NeedLookup` for it.
        max_depth: most lookups one chain may make (default :data:`DEFAULT_MAX_DEPTH`).

    The result (``Done.value``) is a tree of :class:`Bound` leaves, unions, ``~``, ``!``, ``$``.
    """

    def __init__(
        self,
        dtab: Dtab,
        path: Path,
        namers: Sequence[Path] = (),
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.dtab = dtab
        self.path = path
        self.namers = tuple(namers)
        self.max_depth = max_depth
        super().__init__(self._bind(Leaf(path), 0, None))

    def _bind(
        self, tree: NameTree[Name], depth: int, weight: float | None
    ) -> Generator[NeedLookup, _Answer, NameTree[Bound]]:
        # The depth check comes before looking at the node, as in Finagle.
        if depth > self.max_depth:
            raise MaxDepthExceeded(self.max_depth, self.path.show())
        if isinstance(tree, Leaf):
            value = tree.value
            if isinstance(value, Bound):
                return Leaf(replace(value, weight=weight))
            looked_up = yield from _lookup(self.dtab, self.namers, value)
            return (yield from self._bind(looked_up, depth + 1, weight))
        if isinstance(tree, (Neg, Fail, Empty)):
            return tree
        if isinstance(tree, Alt):
            for child in tree.trees:
                bound = yield from self._bind(child, depth, weight)
                if bound is FAIL:
                    return FAIL
                if bound is not NEG:
                    return bound
            return NEG
        if not tree.weighted:
            return NEG
        if len(tree.weighted) == 1:
            only = tree.weighted[0]
            return (yield from self._bind(only.tree, depth, only.weight))
        branches: list[Weighted[Bound]] = []
        errors: list[DelegationError] = []
        for w in tree.weighted:
            try:
                bound = yield from self._bind(w.tree, depth, w.weight)
            except DelegationError as err:
                errors.append(err)
            else:
                branches.append(Weighted(w.weight, bound))
        if not branches:
            raise errors[0]
        return simplify(Union(tuple(branches)))


def run_sync(stepper: Stepper[R], lookup: Callable[[NeedLookup], NameTree[Name]]) -> R:
    """Drive ``stepper`` to completion with a synchronous ``lookup`` function.

    An exception raised by ``lookup`` is reported to the stepper as a namer failure carrying
    its message (the delegator shows it as an exception node; binding propagates it).
    """
    while True:
        event = stepper.next_event()
        if isinstance(event, Done):
            return event.value
        try:
            answer = lookup(event)
        except Exception as err:  # a namer's error is data for the algorithm, not a crash
            stepper.fail(str(err) or type(err).__name__)
        else:
            stepper.send(answer)


def _no_namers(req: NeedLookup) -> NameTree[Name]:
    raise NamerFailure(f"no namer configured for {req.full.show()}")


#: Answers a :class:`NeedLookup` (synchronously; it may do I/O or read memory).
Lookup = Callable[[NeedLookup], NameTree[Name]]


def lookup_by_prefix(namers: Mapping[Path, Callable[[Path], NameTree[Name]]]) -> Lookup:
    """A lookup that asks the namer mounted at each request's prefix (``namer.lookup``)."""

    def lookup(req: NeedLookup) -> NameTree[Name]:
        namer = namers.get(req.namer)
        return _no_namers(req) if namer is None else namer(req.path)

    return lookup


def bind(
    dtab: Dtab,
    path: Path,
    lookup: Callable[[NeedLookup], NameTree[Name]] | None = None,
    namers: Sequence[Path] = (),
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> NameTree[Bound]:
    """Bind synchronously (tests, tools, and namers that need no I/O).

    Raises:
        DelegationError: a loop (MaxDepthExceeded), an unknown ``/$`` namer, or a namer error.
    """
    return run_sync(Binder(dtab, path, namers, max_depth), lookup or _no_namers)
