"""The route explainer: how a path routes, as namerd's delegate JSON.

namerd's ``/api/1/delegate`` and the linker admin's ``/delegator.json`` (for a router with a
local dtab) answer with this. The walk is :class:`~shared.delegate.Delegator`, a stepper that
never does I/O: each side answers its :class:`~shared.binding.NeedLookup` requests with its own
namers (namerd from memory, the linker admin by reading ``rootDir``) and says what addresses a
bound leaf has (``addr_of``; None leaves the ``addr`` out). The JSON is
:func:`~shared.wire.delegate_tree_to_json`'s, byte-compatible with namerd's. A router bound by
namerd is explained by namerd itself, so every explanation comes from this code.
"""

from __future__ import annotations

from collections.abc import Sequence

from .binding import DEFAULT_MAX_DEPTH, Lookup
from .budget import STORED_DTAB_BUDGET, WorkBudget
from .delegate import delegate
from .dtab import Dtab
from .path import Path
from .wire import AddrOf, Json, delegate_tree_to_json

__all__ = ["explain"]


def explain(
    dtab: Dtab,
    path: Path,
    lookup: Lookup,
    addr_of: AddrOf,
    *,
    namers: Sequence[Path] = (),
    max_depth: int = DEFAULT_MAX_DEPTH,
    budget: WorkBudget = STORED_DTAB_BUDGET,
) -> dict[str, Json]:
    """How ``path`` routes through ``dtab``, the namers mounted at ``namers`` and ``/$``.

    Args:
        lookup: answers for the namers; its exceptions become exception nodes.
        addr_of: the addresses of a bound leaf, or None to leave them out.

    Raises:
        DelegationError: the chain outside any Alt/Union is longer than ``max_depth`` (a dtab
            loop); inside one, the branch becomes an exception node instead. Or the
            explanation needs more than ``budget`` allows (``BudgetExceeded``, anywhere).
    """
    tree = delegate(dtab, path, lookup, namers, max_depth, budget)
    return delegate_tree_to_json(tree, addr_of)
