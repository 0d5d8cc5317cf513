"""The interpreter contract: what the router asks of an interpreter and what it gets back.

A :class:`Destination` is the bound tree (``shared.NameTree[Bound]``: leaves, weighted unions,
``~``/``!``/``$``) and the addresses of every bound id in it; the router picks an endpoint
from it. Two interpreters implement :class:`Interpreter`, chosen by the router's
``interpreter`` config as in Linkerd (docs/linkerd-compat.md, Interpreters; built by
``interpreter.build_interpreter``): ``io.l5d.namerd.http`` (``namerd.py``) and ``default``
(``default.py``).

Both follow one contract for :meth:`Interpreter.resolve`: the first call for a name waits for
a complete answer (tree and every id's addresses) at most ``bind_timeout_s`` (default 10 s,
Linkerd's ``bindingTimeoutMs``), then raises :class:`BindTimeout` saying what it was waiting
for; once known, a name is answered from memory without waiting. A binding that fails (a dtab
loop, an unknown namer, namerd's ``exception``) raises :class:`BindFailure` with the reason.
The router maps both to a 502 with ``l5d-err``, except :class:`BindBudgetExceeded` (the dtab
needs more work than the budget allows, ``shared.budget``), which is the client's 400.

Dtab convention: ``resolve`` takes the *full local dtab* (router dtab ++ overrides, what
Linkerd calls ``Dtab.local`` plus the router's base). An interpreter built with
``base_dtab`` (the router's dtab) recognises a local dtab that already starts with it and does
not apply it twice (:func:`full_dtab`), so a caller may pass either the full local dtab or just
the overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import trio

from shared import Addr, Bound, Dtab, NameTree, Path

__all__ = [
    "DEFAULT_BIND_TIMEOUT_S",
    "BindBudgetExceeded",
    "BindFailure",
    "BindTimeout",
    "Destination",
    "Interpreter",
    "InterpreterConfigError",
    "InterpreterError",
    "full_dtab",
    "wait_started",
]

#: Longest wait for a name's first complete answer (Linkerd's ``bindingTimeoutMs``: 10000).
DEFAULT_BIND_TIMEOUT_S: Final = 10.0


class InterpreterError(Exception):
    """Resolving a name failed; ``str()`` is a message fit for ``l5d-err``."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BindTimeout(InterpreterError):
    """No complete answer for a name within ``bind_timeout_s`` (e.g. namerd unreachable)."""


class BindFailure(InterpreterError):
    """Binding failed: a dtab loop, an unknown namer, namerd's binding exception..."""


class BindBudgetExceeded(BindFailure):
    """Binding needed more work than the interpreter's budget allows (``shared.budget``).

    ``limit`` names the config key (e.g. ``requestDtabBudget.maxNodes``). The router answers
    400: the dtab the request brought (``l5d-dtab``) is at fault, not anything behind us.
    """

    def __init__(self, message: str, limit: str = "") -> None:
        super().__init__(message)
        self.limit = limit


class InterpreterConfigError(ValueError):
    """The ``interpreter`` (or ``namers``) config is wrong; the message names the key."""


@dataclass(frozen=True)
class Destination:
    """A bound name: the tree and the addresses of every bound id in it.

    ``addrs`` holds one entry per distinct ``Bound.id`` of ``tree``'s leaves; none is
    ``pending`` (an interpreter waits for those, or times out).
    """

    tree: NameTree[Bound]
    addrs: dict[Path, Addr] = field(default_factory=dict)


class Interpreter(Protocol):
    """What the router needs from an interpreter.

    Optionally also ``resolve_now(path, local_dtab) -> Destination | None``: the current
    answer if it is already known, without waiting (the router's hot path; None sends it to
    :meth:`resolve`), and ``async why_neg(path, local_dtab) -> str | None``: why the name
    bound to ``neg`` when the interpreter knows better than the dtab (namerd: the namespace
    does not exist), for the router's 502.
    """

    async def resolve(self, path: Path, local_dtab: Dtab) -> Destination:
        """The current destination of ``path`` bound with ``local_dtab``.

        Raises:
            BindTimeout: no complete answer within the bind timeout.
            BindFailure: binding failed; the message says why.
        """
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able view of the interpreter's state, for metrics and admin."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run background work (watches, namer refresh) until cancelled; report started."""
        ...


def full_dtab(base: Dtab, local: Dtab) -> Dtab:
    """``base ++ local``, unless ``local`` already starts with ``base`` (then just ``local``)."""
    if base and local.dentries[: len(base)] == base.dentries:
        return local
    return base + local


async def wait_started(started: trio.Event, deadline: float, what: str) -> None:
    with trio.move_on_at(deadline):
        await started.wait()
    if not started.is_set():
        raise BindTimeout(f"{what}: the interpreter is not running (its run() task never started)")
