"""Binding, resolving and explaining names for namerd, by driving ``shared``'s steppers.

The steppers never do I/O; every namer answers synchronously from its in-memory state (kept
fresh by its own background tasks), so one bind is a tight synchronous loop. Addresses can be
*pending* (a DNS answer not in yet): callers re-render when the process-wide Notifier fires.

That loop runs on the worker's event loop, and ``delegateTimeoutMs`` cannot interrupt it, so
its length is bounded by the work budget the caller passes (``shared.budget``; the API picks
``limits.requestDtabBudget`` when the request adds ``dtab=``, else ``storedDtabBudget``).
Going over it raises ``shared.BudgetExceeded``, a ``DelegationError``: wherever a lookup
failure is a value (watch streams, resolve's failed addr) the budget error is one too; a
non-watch bind or delegate answers 400 naming the limit (``namerd.http.problems``). A stored
dtab that blows the stored budget is answered the same way: it is a dtab to fix, not a fault
behind namerd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from namerd.naming.namers.addr_mirror import AddrMirror
from namerd.naming.namers.base import Namer
from namerd.naming.namers.inet import InetResolver
from shared import (
    ADDR_NEG,
    ADDR_PENDING,
    STORED_DTAB_BUDGET,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrPending,
    Bound,
    DelegateTree,
    Dtab,
    Leaf,
    NameTree,
    Path,
    Union,
    WorkBudget,
    bind,
    delegate,
    leaves,
)
from shared.addr import WEIGHT_META_KEY, endpoint_weight
from shared.binding import lookup_by_prefix
from shared.names import system_lookup
from shared.nametree import Alt, Empty, Fail, Neg

__all__ = ["Interpreter"]

_SYS = b"$"
_TRANSFORMER = b"%"


class Interpreter:
    """The configured namers plus the system namer, behind the steppers of ``shared``."""

    def __init__(
        self,
        namers: Sequence[Namer],
        inet: InetResolver,
        max_depth: int = 100,
        mirror: AddrMirror | None = None,
    ) -> None:
        self.namers = tuple(namers)
        self.inet = inet
        self.max_depth = max_depth
        self.mirror = mirror
        self._published: dict[Path, Addr] = {}
        self._publishing: set[asyncio.Task[bool]] = set()
        self.prefixes = tuple(n.prefix for n in self.namers)
        self._by_prefix = {n.prefix: n for n in self.namers}
        self._lookup = lookup_by_prefix({n.prefix: n.lookup for n in self.namers})

    def bind(
        self, dtab: Dtab, path: Path, budget: WorkBudget = STORED_DTAB_BUDGET
    ) -> NameTree[Bound]:
        """Bind ``path`` through ``dtab`` and the namers, within ``budget``.

        Raises:
            shared.DelegationError: a loop, an unknown ``/$`` namer, a namer failure, or more
                work than ``budget`` allows (``shared.BudgetExceeded``).
        """
        return bind(dtab, path, self._lookup, self.prefixes, self.max_depth, budget)

    def delegate(
        self, dtab: Dtab, path: Path, budget: WorkBudget = STORED_DTAB_BUDGET
    ) -> DelegateTree:
        """Explain how ``path`` is bound (every branch, errors as exception nodes).

        The tree of ``shared.explain``'s explainer: the API renders it with
        ``delegate_tree_to_json(tree, addr_of)``, once no leaf's addresses are pending.

        Raises:
            shared.DelegationError: a dtab loop outside any alternative or union, or more work,
                nodes or output than ``budget`` allows (``shared.BudgetExceeded``).
        """
        return delegate(dtab, path, self._lookup, self.prefixes, self.max_depth, budget)

    def addr(self, bound_id: Path) -> Addr:
        """The addresses of a concrete bound id (what ``/api/1/addr`` serves).

        A transformer prefix (``/%/...``) is dropped up to the first ``/#`` or ``/$`` segment.
        Every resolved answer is written to Redis (``AddrMirror``) so all replicas can serve the
        same one; while this replica's own namer is still pending (a DNS answer not in yet, a
        cold start), the shared copy another replica resolved is served instead.
        """
        bound_id = _strip_transformers(bound_id)
        local = self._local_addr(bound_id)
        if self.mirror is None:
            return local
        if isinstance(local, AddrPending):
            shared_copy = self.mirror.get(bound_id)
            return shared_copy if shared_copy is not None else local
        if self._published.get(bound_id) != local:
            self._published[bound_id] = local
            self._publish(bound_id, local)
        return local

    def _publish(self, bound_id: Path, addr: Addr) -> None:
        assert self.mirror is not None
        try:
            task = asyncio.get_running_loop().create_task(self.mirror.publish(bound_id, addr))
        except RuntimeError:  # no loop (sync use, tests): nothing to mirror to
            return
        self._publishing.add(task)
        task.add_done_callback(self._published_done)

    def _published_done(self, task: asyncio.Task[bool]) -> None:
        self._publishing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Redis is down: forget what we "published" so the next render retries.
            self._published.clear()

    def _local_addr(self, bound_id: Path) -> Addr:
        for prefix, namer in self._by_prefix.items():
            if bound_id.startswith(prefix):
                return namer.addr(bound_id)
        labels = bound_id.labels
        if len(labels) >= 2 and labels[0] == _SYS:
            try:
                tree = system_lookup(bound_id)
            except Exception as err:  # UnknownNamer or a bad port: the id is not resolvable
                return AddrFailed(str(err))
            if isinstance(tree, Leaf):
                value = tree.value
                if isinstance(value, Bound) and value.residual.is_empty:
                    return self.inet.addr(value.id)
                return AddrFailed(f"{bound_id.show()} is not a concrete bound id")
            if isinstance(tree, Empty):
                return AddrBound()
            if isinstance(tree, Fail):
                return AddrFailed("name tree failed")
        return ADDR_NEG

    def addr_of(self, bound: Bound) -> Addr:
        """:meth:`addr` of a bound name (the shape ``shared.wire`` encoders take)."""
        return self.addr(bound.id)

    def tree_pending(self, tree: NameTree[Bound]) -> bool:
        """True while any leaf's addresses are still pending (namerd never sends those)."""
        return any(isinstance(self.addr(b.id), AddrPending) for b in leaves(tree))

    def resolve(self, tree: NameTree[Bound]) -> Addr:
        """Reduce a bound tree to one address set (``/api/1/resolve``).

        namerd picks ONE union branch at random on every evaluation, so a watch flaps between
        branches; we return the union of all branches' endpoints instead, each endpoint's
        ``endpoint_addr_weight`` scaled by its branch weight, which is stable and what a
        client balancing over the result actually needs. Alt takes its first branch that
        resolves; ``~``, ``!`` and ``$`` resolve to neg, as in namerd.
        """
        return self._resolve(tree, 1.0)

    def _resolve(self, tree: NameTree[Bound], weight: float) -> Addr:
        if isinstance(tree, Leaf):
            addr = self.addr(tree.value.id)
            if isinstance(addr, AddrBound) and weight != 1.0:
                return _scaled(addr, weight)
            return addr
        if isinstance(tree, Alt):
            for child in tree.trees:
                addr = self._resolve(child, weight)
                if addr is not ADDR_NEG:
                    return addr
            return ADDR_NEG
        if isinstance(tree, Union):
            total = sum(w.weight for w in tree.weighted) or 1.0
            parts = [self._resolve(w.tree, weight * w.weight / total) for w in tree.weighted]
            if any(isinstance(p, AddrPending) for p in parts):
                return ADDR_PENDING
            bound = [p for p in parts if isinstance(p, AddrBound)]
            if not bound:
                failed = [p for p in parts if isinstance(p, AddrFailed)]
                return failed[0] if failed else ADDR_NEG
            return _merge(bound)
        if isinstance(tree, (Neg, Fail, Empty)):
            return ADDR_NEG
        return ADDR_NEG


def _merge(parts: list[AddrBound]) -> AddrBound:
    """Union of address sets; an endpoint in several branches gets the sum of its weights."""
    by_endpoint: dict[tuple[str, int], Address] = {}
    for part in parts:
        for a in part.addrs:
            key = (a.ip, a.port)
            seen = by_endpoint.get(key)
            if seen is None:
                by_endpoint[key] = a
            else:
                total = endpoint_weight(seen.meta) + endpoint_weight(a.meta)
                by_endpoint[key] = Address(
                    a.ip, a.port, {**seen.meta, **a.meta, WEIGHT_META_KEY: total}
                )
    meta = {k: v for p in parts for k, v in p.meta.items()}
    return AddrBound(frozenset(by_endpoint.values()), meta)


def _scaled(addr: AddrBound, weight: float) -> AddrBound:
    out = []
    for a in addr.addrs:
        out.append(
            Address(a.ip, a.port, {**a.meta, WEIGHT_META_KEY: endpoint_weight(a.meta) * weight})
        )
    return AddrBound(frozenset(out), addr.meta)


def _strip_transformers(bound_id: Path) -> Path:
    labels = bound_id.labels
    if not labels or labels[0] != _TRANSFORMER:
        return bound_id
    for i, label in enumerate(labels):
        if label in (b"#", b"$"):
            return bound_id.drop(i)
    return bound_id
