"""``default``: the interpreter that binds in the linker itself.

The linker binds with ``shared.bind`` (the same stepper namerd runs), its own ``io.l5d.fs``
namers and ``/$/inet`` (``local_namers.py``). Results are cached per (path, dtab), at most
``max_cached`` of them, and recomputed only after a namer reported a change (the shared
``Changes`` generation); one unused for ``idle_ttl_s`` is forgotten. It keeps the contract of
``contract.Interpreter``.

Binding runs on the worker's event loop, next to every other connection, so it is bounded
twice (``shared.budget``):

* a work budget: ``storedDtabBudget`` when the dtab is the router's own, the tighter
  ``requestDtabBudget`` as soon as a request added ``l5d-dtab`` / ``l5d-ctx-dtab`` entries.
  Going over it raises :class:`~linker.naming.contract.BindBudgetExceeded` (cached like any
  failure), which the router answers 400 with an ``l5d-err`` naming the limit;
* slices: the binder pauses after every ``slice_units`` of work and this driver checkpoints
  the loop there (``trio.lowlevel.checkpoint``), so other tasks run between slices. One slice
  is at most ``slice_units`` plus one dtab lookup (a lookup step is not split). ``bind_units``
  counts all the work done, for metrics and for tests that check the slicing.

Config keys (the ``interpreter`` object of a router, ``kind: default``; Linkerd has none)::

    interpreter:
      kind: default
      storedDtabBudget:  {maxNodes: 100000, maxResultNodes: 20000, maxOutputBytes: 16777216}
      requestDtabBudget: {maxNodes: 4000, maxResultNodes: 1000, maxOutputBytes: 1048576}

=================================  ========  =================================================
key                                default   meaning
=================================  ========  =================================================
storedDtabBudget.maxNodes          100000    work units (nodes visited and built, dentries
                                             compared) of one bind with the router's dtab
storedDtabBudget.maxResultNodes    20000     nodes of the bound tree
storedDtabBudget.maxOutputBytes    16777216  (delegate explanations only; unused here)
requestDtabBudget.maxNodes         4000      the same, for a bind with request dtab entries
requestDtabBudget.maxResultNodes   1000
requestDtabBudget.maxOutputBytes   1048576
=================================  ========  =================================================

The slice (:data:`shared.budget.DEFAULT_SLICE_UNITS`, 500 units: one or two milliseconds of
CPU) is not configurable: it is a property of the event loop, not of the dtab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import trio

from linker.naming.contract import (
    DEFAULT_BIND_TIMEOUT_S,
    BindBudgetExceeded,
    BindFailure,
    BindTimeout,
    Destination,
    InterpreterConfigError,
    InterpreterError,
    full_dtab,
    wait_started,
)
from linker.naming.local_namers import (
    DEFAULT_IDLE_TTL_S,
    DEFAULT_INET_REFRESH_INTERVAL_S,
    Changes,
    FsNamer,
    InetResolver,
    NamerConfigError,
    fs_namer_from_config,
)
from shared import (
    ADDR_NEG,
    REQUEST_DTAB_BUDGET,
    STORED_DTAB_BUDGET,
    Addr,
    AddrPending,
    Binder,
    BudgetExceeded,
    DelegationError,
    Done,
    Dtab,
    Path,
    WorkBudget,
    leaves,
    show_tree,
)
from shared.binding import Lookup, Pause, Stepper, answer_lookup, lookup_by_prefix

__all__ = ["DEFAULT_MAX_CACHED", "DefaultInterpreter"]

#: Most (path, dtab) results the default interpreter caches (Linkerd's binding cache size).
DEFAULT_MAX_CACHED: Final = 1000


@dataclass
class _Cached:
    generation: int
    result: Destination | InterpreterError | None  # None: some addr still pending
    last_used: float
    pending_id: Path | None = None
    touched_at: float = 0.0  # when the DNS entries behind ``result`` were last marked used


class DefaultInterpreter:
    """``default``: bind locally with ``shared.Binder``, local namers and ``/$/inet``.

    Args:
        dtab: the interpreter's base dtab (the router's ``dtab``; see ``contract``'s dtab
            convention).
        namers: namer configs, Linkerd's shape: ``{kind: io.l5d.fs, rootDir, prefix}``.
        bind_timeout_s: longest wait for a name's first complete answer. Default 10 s.
        idle_ttl_s: forget cached results and DNS names unused this long. Default 600 s.
        inet_refresh_interval_s: how often ``/$/inet`` host names are re-resolved. Default 5 s.
        max_cached: most (path, dtab) results kept. Default 1000.
        max_depth: binding depth limit (Finagle ``namerMaxDepth``). Default 100.
        stored_budget / request_budget: the work budgets (module docstring); defaults
            ``shared.STORED_DTAB_BUDGET`` / ``shared.REQUEST_DTAB_BUDGET``.
        getaddrinfo: the DNS function for ``/$/inet`` (tests inject slow or failing ones).

    Raises:
        InterpreterConfigError: a namer config is wrong or its kind unsupported.
    """

    kind: Final = "default"

    def __init__(
        self,
        dtab: Dtab,
        namers: Sequence[Mapping[str, Any]] = (),
        *,
        bind_timeout_s: float = DEFAULT_BIND_TIMEOUT_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        inet_refresh_interval_s: float = DEFAULT_INET_REFRESH_INTERVAL_S,
        max_cached: int = DEFAULT_MAX_CACHED,
        max_depth: int = 100,
        stored_budget: WorkBudget = STORED_DTAB_BUDGET,
        request_budget: WorkBudget = REQUEST_DTAB_BUDGET,
        getaddrinfo: Any = None,
    ) -> None:
        if not bind_timeout_s > 0:
            raise ValueError(f"bind_timeout_s must be > 0, got {bind_timeout_s!r}")
        self.dtab = dtab
        self.bind_timeout_s = bind_timeout_s
        self.idle_ttl_s = idle_ttl_s
        self.max_cached = max_cached
        self.max_depth = max_depth
        self.stored_budget = stored_budget
        self.request_budget = request_budget
        #: Work units of every bind run so far (``shared.budget``).
        self.bind_units = 0
        self.changes = Changes()
        self.resolver = InetResolver(
            self.changes,
            refresh_interval_s=inet_refresh_interval_s,
            idle_ttl_s=idle_ttl_s,
            getaddrinfo=getaddrinfo,
        )
        self.namers: list[FsNamer] = []
        for i, cfg in enumerate(namers):
            if not isinstance(cfg, Mapping):
                raise InterpreterConfigError(f"namers[{i}] must be an object, got {cfg!r}")
            kind = cfg.get("kind")
            if kind != "io.l5d.fs":
                raise InterpreterConfigError(
                    f"namers[{i}]: unsupported namer kind {kind!r} (the linker has io.l5d.fs; "
                    "use namerd for other service discovery)"
                )
            try:
                namer = fs_namer_from_config(cfg, self.changes, self.resolver)
            except NamerConfigError as err:
                raise InterpreterConfigError(f"namers[{i}]: {err}") from None
            if any(n.prefix == namer.prefix for n in self.namers):
                raise InterpreterConfigError(
                    f"namers[{i}]: prefix {namer.prefix.show()} is used by another namer"
                )
            self.namers.append(namer)
        self._prefixes = [n.prefix for n in self.namers]
        self._lookup = lookup_by_prefix({n.prefix: n.lookup for n in self.namers})
        self._cache: dict[tuple[Path, Dtab], _Cached] = {}
        # Touching is cheap but not free; a few times per TTL is plenty.
        self._touch_interval_s = min(1.0, idle_ttl_s / 4)
        self._started = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the resolver and every namer (first directory scan included), then refresh.

        Raises:
            NamerConfigError: a namer's ``rootDir`` cannot be listed at start.
        """
        # The first scans run before any nursery so a bad rootDir surfaces as a plain
        # NamerConfigError for the worker to report, not wrapped in an exception group.
        for namer in self.namers:
            await namer.start()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.resolver.run)
            for namer in self.namers:
                await nursery.start(namer.run)
            self._started.set()
            task_status.started()
            interval_s = max(0.05, min(self.idle_ttl_s / 4, 30.0))
            while True:
                await trio.sleep(interval_s)
                self._reap()

    def _reap(self) -> None:
        cutoff = trio.current_time() - self.idle_ttl_s
        for key in [k for k, c in self._cache.items() if c.last_used < cutoff]:
            del self._cache[key]

    # -- binding --------------------------------------------------------------------------------
    def _addr(self, id: Path) -> Addr:
        for namer in self.namers:
            if id.startswith(namer.prefix):
                return namer.addr(id)
        if id.labels[:1] == (b"$",):
            return self.resolver.addr(id)
        return ADDR_NEG

    async def _compute(self, path: Path, dtab: Dtab) -> _Cached:
        now = trio.current_time()
        generation = self.changes.generation
        # ``dtab`` starts with the router's (full_dtab); anything longer came with the request.
        budget = self.stored_budget if len(dtab) <= len(self.dtab) else self.request_budget
        binder = Binder(
            dtab, path, self._prefixes, self.max_depth, budget, pause_every=budget.slice_units
        )
        try:
            tree = await self._drive(binder, self._lookup)
        except BudgetExceeded as err:
            failure: InterpreterError = BindBudgetExceeded(f"{err}", err.limit)
            return _Cached(generation, failure, now)
        except DelegationError as err:
            return _Cached(generation, BindFailure(f"binding {path.show()} failed: {err}"), now)
        addrs: dict[Path, Addr] = {}
        for b in leaves(tree):
            if b.id in addrs:
                continue
            addr = self._addr(b.id)
            if isinstance(addr, AddrPending):
                return _Cached(generation, None, now, b.id)
            addrs[b.id] = addr
        return _Cached(generation, Destination(tree, addrs), now)

    async def _drive(self, stepper: Stepper[Any], lookup: Lookup) -> Any:
        """Run ``stepper`` to its end, letting other tasks run at each of its pauses.

        The lookups are the local namers' in-memory answers, so the only waits are the
        checkpoints. ``bind_units`` is brought up to date before each one.
        """
        counted = 0
        try:
            while True:
                event = stepper.next_event()
                if isinstance(event, Done):
                    return event.value
                if isinstance(event, Pause):
                    self.bind_units += event.used - counted
                    counted = event.used
                    await trio.lowlevel.checkpoint()
                    stepper.resume()
                    continue
                answer_lookup(stepper, event, lookup)
        finally:
            self.bind_units += stepper.meter.used - counted

    def resolve_now(self, path: Path, local_dtab: Dtab) -> Destination | None:
        """The cached destination if it is current, without waiting; else None."""
        if not self._started.is_set():
            return None
        cached = self._cache.get((path, full_dtab(self.dtab, local_dtab)))
        if (
            cached is None
            or cached.generation != self.changes.generation
            or not isinstance(cached.result, Destination)
        ):
            return None
        return self._hit(cached)

    def _hit(self, cached: _Cached) -> Destination | None:
        """``cached``'s destination (marked used, its DNS names touched), or None."""
        now = cached.last_used = trio.current_time()
        if not isinstance(cached.result, Destination):
            return None
        if now - cached.touched_at > self._touch_interval_s:
            self._touch(cached.result)
            cached.touched_at = now
        return cached.result

    async def resolve(self, path: Path, local_dtab: Dtab) -> Destination:
        """See :meth:`Interpreter.resolve`: binding is cached until a namer changes."""
        deadline = trio.current_time() + self.bind_timeout_s
        if not self._started.is_set():  # the hot path skips a checkpoint and a cancel scope
            await wait_started(self._started, deadline, f"binding {path.show()}")
        dtab = full_dtab(self.dtab, local_dtab)
        key = (path, dtab)
        while True:
            cached = self._cache.get(key)
            if cached is None or cached.generation != self.changes.generation:
                cached = await self._compute(path, dtab)
                self._store(key, cached)
            dest = self._hit(cached)
            if dest is not None:
                return dest
            failure = cached.result
            if isinstance(failure, BindBudgetExceeded):
                raise BindBudgetExceeded(failure.message, failure.limit)
            if isinstance(failure, InterpreterError):
                raise type(failure)(failure.message)
            if trio.current_time() >= deadline:
                pending = cached.pending_id.show() if cached.pending_id else "?"
                raise BindTimeout(
                    f"binding {path.show()} timed out after {self.bind_timeout_s * 1000:g} ms "
                    f"(bindingTimeoutMs) waiting for the addresses of {pending} "
                    "(DNS has not answered)"
                )
            with trio.move_on_at(deadline):
                await self.changes.wait_changed(cached.generation)

    def _touch(self, dest: Destination) -> None:
        """Mark the DNS names behind a cached answer as used.

        A cached answer does not ask the resolver again, so without this a name in constant
        use would look idle, be dropped after ``idle_ttl_s``, and make a request wait for DNS.
        """
        for id in dest.addrs:
            self._addr(id)

    def _store(self, key: tuple[Path, Dtab], cached: _Cached) -> None:
        if key not in self._cache and len(self._cache) >= self.max_cached:
            oldest = min(self._cache, key=lambda k: self._cache[k].last_used)
            del self._cache[oldest]
        self._cache[key] = cached

    def state(self) -> dict[str, Any]:
        """Namers, DNS entries and cached bindings, for metrics and admin."""
        return {
            "kind": self.kind,
            "dtab": self.dtab.show(),
            "running": self._started.is_set(),
            "namers": [n.state() for n in self.namers],
            "inet": self.resolver.state(),
            "cached": len(self._cache),
            "bindUnits": self.bind_units,
            "bindings": [
                {
                    "path": p.show(),
                    "dtab": d.show(),
                    "result": (
                        show_tree(c.result.tree)
                        if isinstance(c.result, Destination)
                        else (str(c.result) if c.result is not None else "pending")
                    ),
                }
                for (p, d), c in list(self._cache.items())[:100]
            ],
        }
