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

Work budget. ``max_depth`` bounds one chain, not the whole tree: entries that expand into each
other (``/a=>/b&/b;/b=>/c&/c``) double the work per entry. Every stepper therefore counts its
work on a :class:`~shared.budget.WorkMeter` (nodes visited and built, dentries compared, result
nodes; ``shared.budget`` says what and why) and raises :class:`~shared.errors.BudgetExceeded` as
soon as its :class:`~shared.budget.WorkBudget` is spent. A budget error is never confined to a
union branch or turned into a namer failure: it ends the whole run.

Slicing. A stepper built with ``pause_every=N`` also returns :class:`Pause` from
:meth:`Stepper.next_event` after every N units of work; the caller resumes it with
:meth:`Stepper.resume`. An async driver checkpoints its event loop there, so one bind never
holds the loop for more than a slice (``linker.naming.default``); :func:`run_sync` just resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from .budget import STORED_DTAB_BUDGET, WorkBudget, WorkMeter
from .dtab import Dtab
from .errors import BudgetExceeded, DelegationError, MaxDepthExceeded, NamerFailure
from .names import Bound, Name, system_lookup
from .nametree import FAIL, NEG, Alt, Empty, Fail, Leaf, NameTree, Neg, Union, Weighted
from .path import Path

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "Binder",
    "Done",
    "Lookup",
    "NeedLookup",
    "Pause",
    "Stepper",
    "answer_lookup",
    "bind",
    "lookup_by_prefix",
    "run_sync",
    "tree_size",
]

#: Finagle's ``namerMaxDepth`` default: at most this many lookups in one chain.
DEFAULT_MAX_DEPTH = 100

R = TypeVar("R")

#: Work units a ``/$`` lookup costs (it parses an address and builds a Bound name: measured at
#: about four nodes' worth).
_SYSTEM_LOOKUP_UNITS = 4


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
class Pause:
    """The stepper did a slice of work (``pause_every`` units); call ``resume()`` to go on.

    ``used`` is the work done so far. Only steppers built with ``pause_every`` pause.
    """

    used: int


@dataclass(frozen=True, slots=True)
class Done(Generic[R]):
    """The stepper finished; ``value`` is its result."""

    value: R


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str


_Answer = NameTree[Name] | _Failed | None
_Event = NeedLookup | Pause
_Gen = Generator[_Event, _Answer, R]


class Stepper(Generic[R]):
    """Drives a lookup-needing algorithm one request at a time (shared by bind and delegate).

    ``meter`` counts the work (the subclass's algorithm charges it); with ``pause_every`` the
    algorithm yields a :class:`Pause` after each that many units (:meth:`_pause`).
    """

    def __init__(self, gen: _Gen[R], meter: WorkMeter, pause_every: int | None = None) -> None:
        self.meter = meter
        if pause_every is not None and pause_every <= 0:
            raise ValueError(f"pause_every must be > 0, got {pause_every}")
        self._pause_every = pause_every
        self._pause_at = pause_every if pause_every is not None else None
        self._gen = gen
        self._pending: _Event | None = None
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

    def _pause(self) -> Pause:
        """The :class:`Pause` to yield now that a slice is done; sets the next one.

        The algorithms inline the test (``meter.used >= _pause_at``) and call this only when it
        holds: a generator per node would cost as much as the node.
        """
        assert self._pause_every is not None
        self._pause_at = self.meter.used + self._pause_every
        return Pause(self.meter.used)

    def next_event(self) -> NeedLookup | Pause | Done[R]:
        """What the caller must do next: answer a :class:`NeedLookup`, :meth:`resume` after a
        :class:`Pause`, or take the :class:`Done`.

        Calling it again without answering returns the same request.

        Raises:
            DelegationError: the algorithm failed (e.g. :class:`MaxDepthExceeded`, or
                :class:`~shared.errors.BudgetExceeded`).
        """
        if self._error is not None:
            raise self._error
        if self._done is not None:
            return self._done
        assert self._pending is not None
        return self._pending

    def send(self, tree: NameTree[Name]) -> None:
        """Answer the pending :class:`NeedLookup` with the namer's result."""
        self._require_pending(NeedLookup)
        self._advance(tree)

    def fail(self, message: str) -> None:
        """Answer the pending :class:`NeedLookup` with a namer error (``message`` is shown)."""
        self._require_pending(NeedLookup)
        self._advance(_Failed(message))

    def resume(self) -> None:
        """Go on after a :class:`Pause`."""
        self._require_pending(Pause)
        self._advance(None)

    def _require_pending(self, kind: type[_Event]) -> None:
        if not isinstance(self._pending, kind):
            raise RuntimeError(
                f"nothing is waiting for {'a lookup answer' if kind is NeedLookup else 'resume'}"
                "; call next_event() first"
            )


def tree_size(tree: NameTree[object]) -> int:
    """Number of nodes in ``tree`` (what building it cost), without recursion."""
    n = 0
    stack: list[NameTree[object]] = [tree]
    while stack:
        t = stack.pop()
        n += 1
        if isinstance(t, Alt):
            stack.extend(t.trees)
        elif isinstance(t, Union):
            stack.extend(w.tree for w in t.weighted)
    return n


def _lookup(
    dtab: Dtab, namers: Sequence[Path], path: Path, meter: WorkMeter
) -> Generator[_Event, _Answer, NameTree[Name]]:
    """One lookup step: the dtab, then matching configured namers, then the system namer.

    Charges ``meter`` for the dentries compared and the nodes of the tree it returns.
    """
    meter.nodes(len(dtab))
    tree: NameTree[Name] = dtab.lookup(path)
    if tree is not NEG:
        meter.nodes(tree_size(tree))
        return tree
    for prefix in namers:
        if path.startswith(prefix):
            answer = yield NeedLookup(prefix, path.drop(len(prefix)))
            if isinstance(answer, _Failed):
                raise NamerFailure(answer.message, path.show())
            if answer is None:
                raise RuntimeError("lookup answered with None")
            if answer is not NEG:
                meter.nodes(tree_size(answer))
                return answer
    meter.nodes(_SYSTEM_LOOKUP_UNITS)
    return system_lookup(path)


class Binder(Stepper[NameTree[Bound]]):
    """Bind ``path`` against ``dtab`` and the configured namers.

    Args:
        dtab: the full dtab (``base + local`` overrides).
        path: the logical name, e.g. ``/svc/users``.
        namers: prefixes of configured namers, e.g. ``[Path.read("/#/io.l5d.fs")]``; a path
            under one of them produces a :class:`NeedLookup` for it.
        max_depth: most lookups one chain may make (default :data:`DEFAULT_MAX_DEPTH`).
        budget: the work allowed (default :data:`~shared.budget.STORED_DTAB_BUDGET`; use
            ``REQUEST_DTAB_BUDGET`` when ``dtab`` includes a client's dtab).
        pause_every: if set, :class:`Pause` after each that many units of work.

    The result (``Done.value``) is a tree of :class:`Bound` leaves, unions, ``~``, ``!``, ``$``.
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
        meter = budget.meter(f"binding {path.show()}")
        super().__init__(self._bind(Leaf(path), 0, None), meter, pause_every)

    def _bind(
        self, tree: NameTree[Name], depth: int, weight: float | None
    ) -> Generator[_Event, _Answer, NameTree[Bound]]:
        # The depth check comes before looking at the node, as in Finagle.
        if depth > self.max_depth:
            raise MaxDepthExceeded(self.max_depth, self.path.show())
        self.meter.nodes(1)
        if self._pause_at is not None and self.meter.used >= self._pause_at:
            yield self._pause()
        if isinstance(tree, Leaf):
            value = tree.value
            if isinstance(value, Bound):
                self.meter.result()
                return Leaf(replace(value, weight=weight))
            looked_up = yield from _lookup(self.dtab, self.namers, value, self.meter)
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
            except BudgetExceeded:
                raise  # the whole bind is over budget, not just this branch
            except DelegationError as err:
                errors.append(err)
            else:
                branches.append(Weighted(w.weight, bound))
        if not branches:
            raise errors[0]
        self.meter.result(len(branches))
        # Each branch is already simplified, so only this level needs it (a deep simplify here
        # re-walked every subtree once per level: quadratic in the depth of nested unions).
        kept = [b for b in branches if not isinstance(b.tree, (Neg, Fail))]
        if not kept:
            return NEG
        return kept[0].tree if len(kept) == 1 else Union(tuple(kept))


def run_sync(stepper: Stepper[R], lookup: Callable[[NeedLookup], NameTree[Name]]) -> R:
    """Drive ``stepper`` to completion with a synchronous ``lookup`` function.

    An exception raised by ``lookup`` is reported to the stepper as a namer failure carrying
    its message (the delegator shows it as an exception node; binding propagates it).
    A :class:`Pause` is resumed at once.
    """
    while True:
        event = stepper.next_event()
        if isinstance(event, Done):
            return event.value
        if isinstance(event, Pause):
            stepper.resume()
        else:
            answer_lookup(stepper, event, lookup)


def answer_lookup(
    stepper: Stepper[R], event: NeedLookup, lookup: Callable[[NeedLookup], NameTree[Name]]
) -> None:
    """Answer ``event`` with ``lookup``; an exception it raises becomes a namer failure."""
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
    budget: WorkBudget = STORED_DTAB_BUDGET,
) -> NameTree[Bound]:
    """Bind synchronously (tests, tools, and namers that need no I/O).

    Raises:
        DelegationError: a loop (MaxDepthExceeded), an unknown ``/$`` namer, a namer error, or
            more work than ``budget`` allows (BudgetExceeded).
    """
    return run_sync(Binder(dtab, path, namers, max_depth, budget), lookup or _no_namers)
