"""The naming core shared by linker and namerd: paths, dtabs, name trees, binding, delegation.

Stdlib-only, with no sockets, clock, randomness, trio or Redis (``fsformat`` and ``metrics`` read
and write files): both the trio data plane and the asyncio name service import it and run
exactly the same rules. See ``shared/README.md`` for the model in one screen.
"""

from __future__ import annotations

from ._parser import MAX_NESTING
from ._parser import parse_tree as read_name_tree
from .addr import ADDR_NEG, ADDR_PENDING, Addr, AddrBound, Address, AddrFailed, AddrNeg, AddrPending
from .binding import DEFAULT_MAX_DEPTH, Binder, Done, NeedLookup, Stepper, bind, run_sync
from .budget import REQUEST_DTAB_BUDGET, STORED_DTAB_BUDGET, WorkBudget
from .delegate import (
    AltNode,
    DelegateNode,
    DelegateTree,
    Delegator,
    EmptyNode,
    ExceptionNode,
    FailNode,
    LeafNode,
    NegNode,
    TransformationNode,
    UnionNode,
    WeightedNode,
    delegate,
    simplify_delegate_tree,
)
from .dtab import ANY, Dentry, Dtab, Prefix
from .errors import (
    BudgetExceeded,
    DelegationError,
    DtabParseError,
    MaxDepthExceeded,
    NamerFailure,
    SharedError,
    UnknownNamer,
)
from .names import Bound, Name, system_lookup
from .nametree import (
    DEFAULT_WEIGHT,
    EMPTY,
    FAIL,
    NEG,
    Alt,
    Empty,
    Fail,
    Leaf,
    NameTree,
    Neg,
    Union,
    Weighted,
    eval_tree,
    format_weight,
    leaves,
    map_tree,
    show_tree,
    simplify,
)
from .path import Path
from .wire import WireFormatError

__all__ = [
    "ADDR_NEG",
    "ADDR_PENDING",
    "ANY",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_WEIGHT",
    "EMPTY",
    "FAIL",
    "MAX_NESTING",
    "NEG",
    "REQUEST_DTAB_BUDGET",
    "STORED_DTAB_BUDGET",
    "Addr",
    "AddrBound",
    "AddrFailed",
    "AddrNeg",
    "AddrPending",
    "Address",
    "Alt",
    "AltNode",
    "Binder",
    "Bound",
    "BudgetExceeded",
    "DelegateNode",
    "DelegateTree",
    "DelegationError",
    "Delegator",
    "Dentry",
    "Done",
    "Dtab",
    "DtabParseError",
    "Empty",
    "EmptyNode",
    "ExceptionNode",
    "Fail",
    "FailNode",
    "Leaf",
    "LeafNode",
    "MaxDepthExceeded",
    "Name",
    "NameTree",
    "NamerFailure",
    "NeedLookup",
    "Neg",
    "NegNode",
    "Path",
    "Prefix",
    "SharedError",
    "Stepper",
    "TransformationNode",
    "Union",
    "UnionNode",
    "UnknownNamer",
    "Weighted",
    "WeightedNode",
    "WireFormatError",
    "WorkBudget",
    "bind",
    "delegate",
    "eval_tree",
    "format_weight",
    "leaves",
    "map_tree",
    "read_name_tree",
    "run_sync",
    "show_tree",
    "simplify",
    "simplify_delegate_tree",
    "system_lookup",
]
