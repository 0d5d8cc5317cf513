"""The work budget of binding and delegation: how much one bind or explanation may cost.

A dtab can be small and still expensive: ``/a=>/b&/b;/b=>/c&/c;...`` doubles the tree at each
entry, so 250 bytes ask for millions of nodes. ``max_depth`` does not catch it (each chain is
short); only counting the work does. The steppers (:class:`~shared.binding.Binder`,
:class:`~shared.delegate.Delegator`) count it themselves, so namerd and the linker enforce the
same limits, and raise :class:`~shared.errors.BudgetExceeded` naming the limit as soon as one is
passed: the cost of a refused request is bounded by the limit, not by the dtab.

What is counted (units, each one to two microseconds of CPython work):

* ``max_nodes``: every name-tree node the stepper steps into, every node of each tree a dtab
  lookup builds (a rewritten destination; Alt branches after the winner are built too, though
  never visited), and every dentry a lookup compares with the path (``Dtab.lookup`` scans the
  whole dtab at each step, so a 500-entry dtab costs 500 per step);
* ``max_result_nodes``: nodes of the result (bound leaves, union branches; delegate nodes), so a
  bind cannot hand a megabyte tree to the JSON encoder or the load balancer;
* ``max_output_bytes`` (delegate only): an estimate, made while explaining, of the JSON the
  explanation renders to (paths plus the dentries that are printed, ``shared.wire``).

Two budgets, because who wrote the dtab matters: :data:`STORED_DTAB_BUDGET` for dtabs an
operator stored (namerd's namespaces, the linker's router ``dtab``) and the tighter
:data:`REQUEST_DTAB_BUDGET` for any bind that includes a dtab a client sent (``l5d-dtab``,
``l5d-ctx-dtab``, namerd's ``dtab=``).

How the defaults were chosen (CPython 3.11, CPU time of one process on a loaded 2-core machine;
about 450-700 units per millisecond, the dentry comparisons of ``Dtab.lookup`` being the bulk):

=====================================================  =======  =============  ========
case                                                   units    result nodes   CPU
=====================================================  =======  =============  ========
bind through a 500-entry dtab                          1,513    1              2 ms
bind a union of 100 / 2,000 branches                   804 /    200 /          1 / 34 ms
                                                       16,004   4,000
delegate a union of 2,000 / 8,000 branches             14,005 / 2,002 /        24 / 89 ms
                                                       56,005   8,002 (534 KB)
100-entry router dtab plus a one-entry override        426      1              0.6 ms
``/n0=>/n1&/n1;...`` (16 entries), request budget      stops at 4,000          6 ms
the same, stored budget                                stops at 100,000        165 ms
=====================================================  =======  =============  ========

So the request budget (4,000 units) is a few milliseconds of CPU and leaves room for a router
dtab of a few hundred entries; the stored budget (100,000) passes every legitimate case above
and ends an exponential stored dtab within a few hundred milliseconds.

``slice_units`` is how much work an asynchronous driver lets a stepper do between two
checkpoints of its event loop (the linker's default interpreter: ``linker.naming.default``), so
a bind never holds a worker's loop longer than one slice (plus the one lookup step that
crosses it) whatever the budget: 500 units, a millisecond or two.

Configuration (the same shape in namerd's ``limits`` and the linker's ``interpreter``)::

    storedDtabBudget:  {maxNodes: 100000, maxResultNodes: 20000, maxOutputBytes: 16777216}
    requestDtabBudget: {maxNodes: 4000, maxResultNodes: 1000, maxOutputBytes: 1048576}

read by :func:`budget_from_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from .configtree import ConfigError, Pos, Section
from .errors import BudgetExceeded

__all__ = [
    "DEFAULT_SLICE_UNITS",
    "REQUEST_DTAB_BUDGET",
    "STORED_DTAB_BUDGET",
    "UNLIMITED",
    "WorkBudget",
    "WorkMeter",
    "budget_from_config",
]

#: Work an async driver allows between two event-loop checkpoints (a millisecond or two).
DEFAULT_SLICE_UNITS: Final = 500


@dataclass(frozen=True, slots=True)
class WorkBudget:
    """The limits of one bind or delegation (see the module docstring for the units).

    ``name`` is the config key the limits are read from (``storedDtabBudget``,
    ``requestDtabBudget``); errors name the limit as ``name.maxNodes``.
    """

    name: str
    max_nodes: int
    max_result_nodes: int
    max_output_bytes: int
    slice_units: int = DEFAULT_SLICE_UNITS

    def meter(self, what: str) -> WorkMeter:
        """A fresh counter for one bind/delegation of ``what`` (a path, shown in errors)."""
        return WorkMeter(self, what)


#: Dtabs an operator stored (namerd namespaces, the router's ``dtab``).
STORED_DTAB_BUDGET: Final = WorkBudget("storedDtabBudget", 100_000, 20_000, 16 * 1024 * 1024)
#: Any bind that includes a client-sent dtab (``l5d-dtab``, ``l5d-ctx-dtab``, ``dtab=``).
REQUEST_DTAB_BUDGET: Final = WorkBudget("requestDtabBudget", 4_000, 1_000, 1024 * 1024)
#: No limit (tools and tests that want the old behaviour).
UNLIMITED: Final = WorkBudget("unlimited", 1 << 62, 1 << 62, 1 << 62)


class WorkMeter:
    """Counts the work of one stepper run against its :class:`WorkBudget`.

    The stepper calls :meth:`nodes` / :meth:`result` / :meth:`output` as it works; each raises
    :class:`BudgetExceeded` once the total passes its limit. :attr:`used` is the running total
    of ``max_nodes`` units (what an async driver slices on).
    """

    __slots__ = ("budget", "output_bytes", "result_nodes", "used", "what")

    def __init__(self, budget: WorkBudget, what: str) -> None:
        self.budget = budget
        self.what = what
        self.used = 0
        self.result_nodes = 0
        self.output_bytes = 0

    def nodes(self, n: int = 1) -> None:
        """``n`` more units of work (nodes visited or built, dentries compared)."""
        self.used += n
        if self.used > self.budget.max_nodes:
            self._exceeded("maxNodes", self.budget.max_nodes, "name-tree nodes and dentries")

    def result(self, n: int = 1) -> None:
        """``n`` more nodes in the result tree."""
        self.result_nodes += n
        if self.result_nodes > self.budget.max_result_nodes:
            self._exceeded("maxResultNodes", self.budget.max_result_nodes, "result-tree nodes")

    def output(self, n: int) -> None:
        """``n`` more bytes of rendered explanation (an estimate; see ``shared.delegate``)."""
        self.output_bytes += n
        if self.output_bytes > self.budget.max_output_bytes:
            self._exceeded("maxOutputBytes", self.budget.max_output_bytes, "bytes of output")

    def _exceeded(self, key: str, limit: int, unit: str) -> None:
        raise BudgetExceeded(f"{self.budget.name}.{key}", limit, unit, self.what)


def budget_from_config(
    value: Any,
    where: str,
    default: WorkBudget,
    *,
    pos: Pos | str | None = None,
    error: type[Exception] = ConfigError,
) -> WorkBudget:
    """Read ``{maxNodes, maxResultNodes, maxOutputBytes}`` (each optional, each > 0).

    Args:
        value: the mapping as loaded (None: all defaults).
        where: how errors name it, e.g. ``limits.requestDtabBudget``.
        default: the budget whose values (and ``name``) absent keys keep.
        error: the exception class to raise (each package has its own).
    """
    sec = Section(value, where, pos, error=error)
    budget = replace(
        default,
        max_nodes=sec.positive_int("maxNodes", default.max_nodes),
        max_result_nodes=sec.positive_int("maxResultNodes", default.max_result_nodes),
        max_output_bytes=sec.positive_int("maxOutputBytes", default.max_output_bytes),
    )
    sec.done()
    return budget
