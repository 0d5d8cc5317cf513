"""Load balancers over one client's endpoints, as pure state machines (Linkerd ``loadBalancer``).

The router drives a balancer with three calls, and does all the I/O itself::

    ep = balancer.pick(now_s)            # None: no endpoint, or all marked dead by accrual
    ... send the request to ep.address ...
    balancer.release(ep, now_s, latency_s, ok)

and hands it each new endpoint set from namerd with ``update(endpoints, now_s)``.  Nothing in
here reads a clock, sleeps, touches a socket or uses the global random: time is passed in as
``now_s`` (any monotonic scale, e.g. ``trio.current_time()``) and randomness comes from an
injected :class:`random.Random`, so every decision replays exactly in tests (the h11 rule).
Balancers are synchronous and so need no lock under trio.

Kinds (Linkerd 1.x semantics, config ``client.loadBalancer``):

``p2c`` (default)
    Power of two random choices, least loaded: sample two endpoints (with probability
    proportional to weight), send to the one with fewer outstanding requests per unit of
    weight.  O(1) per pick.
``ewma``
    The same two choices, compared by *peak EWMA* cost: a time-decayed moving average of
    latency that jumps straight up on a slower sample, times (outstanding + 1), per unit of
    weight.  Shuns slow endpoints, not just busy ones.
``roundRobin``
    Smooth weighted round robin: over any run of picks each endpoint's share tracks its
    weight, interleaved rather than in bursts.  O(endpoints) per pick.

Each endpoint carries a :class:`~linker.policy.accrual.Accrual` (failure accrual).  A dead
endpoint is never picked unless its backoff has elapsed and it is due its single probe.
``p2c`` and ``ewma`` retry the two random choices up to ``maxEffort`` times (default 5) when
both land on unavailable endpoints, then fall back to scanning every endpoint, so ``pick``
returns None only when no endpoint at all is available (never merely because the dice were
unlucky).

Removed endpoints *drain*: they are never picked again, but ``release`` for their in-flight
requests still works; the record is dropped when the last one returns.  An endpoint re-added
while draining, or kept across an update, keeps its load, latency and accrual state.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from linker.policy.accrual import Accrual, build_accrual_factory
from shared.configtree import ConfigError

__all__ = [
    "DEFAULT_DECAY_TIME_MS",
    "DEFAULT_MAX_EFFORT",
    "Balancer",
    "Endpoint",
    "EndpointState",
    "EwmaBalancer",
    "P2CBalancer",
    "RoundRobinBalancer",
    "build_balancer",
]

#: ``loadBalancer.maxEffort``: how many times p2c/ewma redraw when both choices are unavailable.
DEFAULT_MAX_EFFORT: Final = 5
#: ``loadBalancer.decayTimeMs`` (ewma): the time constant of the latency average, 10 seconds.
DEFAULT_DECAY_TIME_MS: Final = 10_000

# A latency estimate of zero (nothing measured yet anywhere, or a clock too coarse to see the
# difference) would make every cost zero and the balancer blind to load; flooring it at 1 µs
# keeps such endpoints ordered by outstanding requests.
_MIN_LATENCY_S: Final = 1e-6
# With weighted sampling the second choice can repeat the first; redraw a few times so p2c
# keeps its "two distinct choices" power even with two endpoints, without looping on one.
_DISTINCT_REDRAWS: Final = 3


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One concrete address of a bound name, as namerd reports it.

    ``weight`` scales the endpoint's share (Finagle's ``WeightedAddress``); ``meta`` is carried
    for the router and metrics and ignored by equality and hashing (mappings aren't hashable).
    Balancers identify endpoints by ``address``: a new weight or meta for the same address is
    the same endpoint, updated.

    Raises:
        ValueError: weight is not a finite number > 0.
    """

    address: tuple[str, int]
    weight: float = 1.0
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, int | float) and math.isfinite(self.weight)):
            raise ValueError(
                f"endpoint {self.address}: weight must be a number, got {self.weight!r}"
            )
        if self.weight <= 0:
            raise ValueError(f"endpoint {self.address}: weight must be > 0, got {self.weight!r}")

    def show(self) -> str:
        """``host:port``, as used in metric names."""
        return f"{self.address[0]}:{self.address[1]}"


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What an error message or the dashboard shows of one endpoint.

    ``last_error`` is the cause of its last failure (None: it has not failed), ``age_s`` how
    long ago that was.
    """

    address: str
    state: str
    last_error: str | None
    age_s: float | None

    def describe(self) -> str:
        """``10.0.0.1:80 (connection refused 3 s ago)``, or just the address."""
        if self.last_error is None or self.age_s is None:
            return self.address
        return f"{self.address} ({self.last_error}, {self.age_s:.0f} s ago)"


class Balancer(Protocol):
    """What the router needs from a load balancer; every method is synchronous and pure."""

    def update(self, endpoints: Sequence[Endpoint], now_s: float) -> None:
        """Replace the endpoint set: keep state of kept endpoints, drain removed ones."""
        ...

    def pick(self, now_s: float) -> Endpoint | None:
        """Choose an endpoint for one request (counted outstanding until released).

        None when there is no endpoint, or all are marked dead by failure accrual; tell the
        two apart with ``stats()["size"]``.
        """
        ...

    def release(
        self, ep: Endpoint, now_s: float, latency_s: float, ok: bool, cause: str | None = None
    ) -> None:
        """Report the outcome of a request sent to ``ep`` (exactly once per pick); ``cause``
        names a failure in a few words (``connection refused``)."""
        ...

    def endpoints(self, now_s: float) -> list[EndpointState]:
        """Each endpoint's accrual state and last error, in namerd's order."""
        ...

    def stats(self) -> dict[str, float]:
        """Gauges for metrics: size, available, draining, outstanding; per endpoint: load,
        outstanding and accrual state (``dead``, ``probing``: 1 or 0)."""
        ...


class _Record:
    """A balancer's state for one address."""

    __slots__ = ("accrual", "endpoint", "ewma_s", "outstanding", "rr_credit", "sampled", "stamp_s")

    def __init__(self, endpoint: Endpoint, accrual: Accrual) -> None:
        self.endpoint = endpoint
        self.accrual = accrual
        self.outstanding = 0
        # ewma only: the peak-EWMA latency estimate, when it was last updated, and whether any
        # response has been measured yet (until then the balancer's fleet-wide average stands in).
        self.ewma_s = 0.0
        self.stamp_s = 0.0
        self.sampled = False
        # roundRobin only: smooth weighted round robin credit.
        self.rr_credit = 0.0

    def __repr__(self) -> str:
        return (
            f"<{self.endpoint.show()} w={self.endpoint.weight:g} out={self.outstanding} "
            f"{self.accrual.state()}>"
        )


class _BaseBalancer:
    """Endpoint bookkeeping shared by every kind: the set, draining, accrual and stats."""

    kind = "?"

    def __init__(self, *, accrual_factory: Callable[[], Accrual], rng: random.Random) -> None:
        self._accrual_factory = accrual_factory
        self._rng = rng
        # Insertion-ordered, so scans (and roundRobin's order) follow namerd's order.
        self._active: dict[tuple[str, int], _Record] = {}
        self._draining: dict[tuple[str, int], _Record] = {}
        # The latest time we were given: stats() has no clock of its own.
        self._now_s = 0.0

    # -- endpoint set ---------------------------------------------------------------------------

    def update(self, endpoints: Sequence[Endpoint], now_s: float) -> None:
        """Replace the endpoint set (a later duplicate address wins)."""
        self._now_s = now_s
        new: dict[tuple[str, int], _Record] = {}
        for ep in endpoints:
            addr = ep.address
            rec = new.get(addr) or self._active.get(addr) or self._draining.pop(addr, None)
            if rec is None:
                rec = _Record(ep, self._accrual_factory())
                rec.accrual.name = ep.show()  # for its log lines
                self._on_new(rec, now_s)
            rec.endpoint = ep
            new[addr] = rec
        for addr, rec in self._active.items():
            if addr not in new and rec.outstanding > 0:
                self._draining[addr] = rec
        self._active = new
        self._on_set_changed()

    def _on_new(self, rec: _Record, now_s: float) -> None:
        """Hook: initialise kind-specific state of a brand new endpoint."""

    def _on_set_changed(self) -> None:
        """Hook: rebuild kind-specific indexes after update()."""

    # -- picking --------------------------------------------------------------------------------

    def pick(self, now_s: float) -> Endpoint | None:
        self._now_s = now_s
        rec = self._choose(now_s)
        if rec is None:
            return None
        rec.outstanding += 1
        rec.accrual.on_pick(now_s)  # if it was due a probe, this request is the probe
        return rec.endpoint

    def _choose(self, now_s: float) -> _Record | None:
        raise NotImplementedError

    def _available(self, now_s: float) -> list[_Record]:
        return [r for r in self._active.values() if r.accrual.available(now_s)]

    # -- outcomes -------------------------------------------------------------------------------

    def release(
        self, ep: Endpoint, now_s: float, latency_s: float, ok: bool, cause: str | None = None
    ) -> None:
        self._now_s = now_s
        addr = ep.address
        rec = self._active.get(addr) or self._draining.get(addr)
        if rec is None:
            return  # drained and gone, or never ours: nothing left to account for
        # Never below zero, so a stray or duplicate release can't make an endpoint look idler
        # than idle.
        rec.outstanding = max(0, rec.outstanding - 1)
        rec.accrual.record(ok, now_s, cause)
        self._observe(rec, now_s, max(0.0, latency_s))
        if addr in self._draining and rec.outstanding == 0:
            del self._draining[addr]

    def _observe(self, rec: _Record, now_s: float, latency_s: float) -> None:
        """Hook: take a latency sample (ewma)."""

    def endpoints(self, now_s: float) -> list[EndpointState]:
        out = []
        for rec in self._active.values():
            acc = rec.accrual
            acc.available(now_s)  # brings a dead endpoint whose backoff elapsed to probing
            age = None if acc.last_error is None else max(0.0, now_s - acc.last_error_at_s)
            out.append(EndpointState(rec.endpoint.show(), acc.state(), acc.last_error, age))
        return out

    # -- metrics --------------------------------------------------------------------------------

    def _load(self, rec: _Record, now_s: float) -> float:
        """The quantity p2c minimises; also reported per endpoint in stats()."""
        return rec.outstanding / rec.endpoint.weight

    def stats(self) -> dict[str, float]:
        now_s = self._now_s
        recs = list(self._active.values())
        out: dict[str, float] = {
            "size": float(len(recs)),
            "available": float(sum(r.accrual.available(now_s) for r in recs)),
            "draining": float(len(self._draining)),
            "outstanding": float(
                sum(r.outstanding for r in recs)
                + sum(r.outstanding for r in self._draining.values())
            ),
            "removals": float(sum(r.accrual.removals for r in recs)),
            "revivals": float(sum(r.accrual.revivals for r in recs)),
        }
        for r in recs:
            name = f"endpoint/{r.endpoint.show()}"
            out[f"{name}/outstanding"] = float(r.outstanding)
            out[f"{name}/load"] = self._load(r, now_s)
            # Accrual state as 0/1 gauges, so that summing over workers counts the workers
            # that see the endpoint dead or probing (the dashboard shows live/dead/probing).
            state = r.accrual.state()
            out[f"{name}/dead"] = float(state == "dead")
            out[f"{name}/probing"] = float(state == "probing")
        return out

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"<{type(self).__name__} size={s['size']:g} available={s['available']:g} "
            f"draining={s['draining']:g} outstanding={s['outstanding']:g}>"
        )


class P2CBalancer(_BaseBalancer):
    """``p2c``: two weighted random choices, the one with the lower load wins."""

    kind = "p2c"

    def __init__(
        self,
        *,
        accrual_factory: Callable[[], Accrual],
        rng: random.Random,
        max_effort: int = DEFAULT_MAX_EFFORT,
    ) -> None:
        super().__init__(accrual_factory=accrual_factory, rng=rng)
        self.max_effort = max_effort
        # Cumulative weights over _order, for O(log n) weighted sampling.
        self._order: list[_Record] = []
        self._cum_weights: list[float] = []

    def _on_set_changed(self) -> None:
        self._order = list(self._active.values())
        self._cum_weights = []
        total = 0.0
        for r in self._order:
            total += r.endpoint.weight
            self._cum_weights.append(total)

    def _sample(self) -> _Record:
        # Sampling by weight (not just comparing load/weight) is what makes weights count when
        # nothing is outstanding: with every load at zero, a plain uniform draw would ignore them.
        x = self._rng.random() * self._cum_weights[-1]
        i = bisect.bisect_right(self._cum_weights, x)
        return self._order[min(i, len(self._order) - 1)]

    def _better(self, a: _Record, b: _Record, now_s: float) -> _Record:
        # Ties go to a, itself a weighted random draw, so ties are broken in proportion to weight.
        return a if self._load(a, now_s) <= self._load(b, now_s) else b

    def _choose(self, now_s: float) -> _Record | None:
        if not self._order:
            return None
        for _ in range(self.max_effort):
            a = self._sample()
            b = self._sample()
            for _ in range(_DISTINCT_REDRAWS):
                if b is not a:
                    break
                b = self._sample()
            a_ok = a.accrual.available(now_s)
            b_ok = b.accrual.available(now_s)
            if a_ok and b_ok:
                return self._better(a, b, now_s)
            if a_ok or b_ok:
                return a if a_ok else b
        # Unlucky maxEffort times: most endpoints are probably dead.  Choose among the
        # available ones directly (O(n), only in this degraded case) rather than send a request
        # to a dead endpoint, as Finagle would, or fail while healthy endpoints remain.
        live = self._available(now_s)
        if not live:
            return None
        weights = [r.endpoint.weight for r in live]
        a, b = self._rng.choices(live, weights=weights, k=2)
        return self._better(a, b, now_s)


class EwmaBalancer(P2CBalancer):
    """``ewma``: p2c compared by peak-EWMA latency × (outstanding + 1) per unit of weight.

    On each response the endpoint's estimate moves toward the measured latency with weight
    ``1 - exp(-Δt/decay)`` (Δt: time since its previous response), or jumps straight to it if
    it is slower ("peak": react to trouble at once, forgive slowly).  When *read*, an estimate
    not refreshed for Δt is scaled by ``exp(-Δt/decay)``, so an endpoint shunned for being slow
    is eventually tried again rather than starved forever on stale evidence.  A fresh endpoint
    starts with a neutral cost: the time-decayed average latency of every response this
    balancer has seen, so it is neither flooded nor avoided.
    """

    kind = "ewma"

    def __init__(
        self,
        *,
        accrual_factory: Callable[[], Accrual],
        rng: random.Random,
        max_effort: int = DEFAULT_MAX_EFFORT,
        decay_time_s: float = DEFAULT_DECAY_TIME_MS / 1000,
    ) -> None:
        super().__init__(accrual_factory=accrual_factory, rng=rng, max_effort=max_effort)
        self.decay_time_s = decay_time_s
        # Fleet-wide latency average, the stand-in for endpoints not yet measured.
        self._neutral_s = 0.0
        self._neutral_stamp_s = 0.0
        self._neutral_sampled = False

    def _decay(self, elapsed_s: float) -> float:
        return math.exp(-max(0.0, elapsed_s) / self.decay_time_s)

    def latency_estimate_s(self, rec: _Record, now_s: float) -> float:
        """The endpoint's current latency estimate (the neutral one until it is measured)."""
        if not rec.sampled:
            return self._neutral_s
        return rec.ewma_s * self._decay(now_s - rec.stamp_s)

    def _load(self, rec: _Record, now_s: float) -> float:
        latency_s = max(self.latency_estimate_s(rec, now_s), _MIN_LATENCY_S)
        return latency_s * (rec.outstanding + 1) / rec.endpoint.weight

    def _observe(self, rec: _Record, now_s: float, latency_s: float) -> None:
        if rec.sampled:
            w = self._decay(now_s - rec.stamp_s)
            rec.ewma_s = max(latency_s, rec.ewma_s * w + latency_s * (1 - w))
        else:
            rec.ewma_s = latency_s
            rec.sampled = True
        rec.stamp_s = now_s
        if self._neutral_sampled:
            w = self._decay(now_s - self._neutral_stamp_s)
            self._neutral_s = self._neutral_s * w + latency_s * (1 - w)
        else:
            self._neutral_s = latency_s
            self._neutral_sampled = True
        self._neutral_stamp_s = now_s

    def stats(self) -> dict[str, float]:
        out = super().stats()
        for r in self._active.values():
            out[f"endpoint/{r.endpoint.show()}/ewma_ms"] = (
                self.latency_estimate_s(r, self._now_s) * 1000
            )
        return out


class RoundRobinBalancer(_BaseBalancer):
    """``roundRobin``: smooth weighted round robin over the available endpoints.

    Each pick every available endpoint earns credit equal to its weight; the richest is chosen
    and pays the total.  Over any window of picks each endpoint's share tracks its weight, and
    picks of a heavy endpoint are spread out instead of coming in a burst.
    """

    kind = "roundRobin"

    def _choose(self, now_s: float) -> _Record | None:
        live = self._available(now_s)
        if not live:
            return None
        total = 0.0
        best = live[0]
        for r in live:
            r.rr_credit += r.endpoint.weight
            total += r.endpoint.weight
            if r.rr_credit > best.rr_credit:
                best = r
        best.rr_credit -= total
        return best


# --- config -----------------------------------------------------------------------------------

_COMMON_KEYS: Final = frozenset({"kind", "maxEffort", "enableProbation"})
_KIND_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "p2c": _COMMON_KEYS,
    "ewma": _COMMON_KEYS | {"decayTimeMs"},
    # maxEffort is accepted for Linkerd compatibility; a full scan has no use for it.
    "roundRobin": _COMMON_KEYS,
}
_NOT_IMPLEMENTED: Final = frozenset({"aperture", "heap"})


def _positive(key: str, value: Any, *, integer: bool) -> float:
    # bool is an int in Python, but `maxEffort: true` is a mistake, not 1.
    ok_type = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"loadBalancer.{key}: must be {what}, got {value!r}")
    if value <= 0:
        raise ConfigError(f"loadBalancer.{key}: must be > 0, got {value!r}")
    return float(value)


def build_balancer(
    config: Mapping[str, Any] | None,
    *,
    rng: random.Random,
    accrual_factory: Callable[[], Accrual] | None = None,
) -> Balancer:
    """Build a balancer from a Linkerd ``loadBalancer`` section (None: ``{kind: p2c}``).

    ``accrual_factory`` makes each endpoint's failure accrual (see
    :func:`linker.policy.accrual.build_accrual_factory`); None means Linkerd's default policy.

    Raises:
        ConfigError (a ValueError): an unknown or unimplemented kind, an unknown key, or a bad
        value; the message names it.
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"loadBalancer: must be a mapping, got {config!r}")
    kind = config.get("kind", "p2c")
    if kind in _NOT_IMPLEMENTED:
        raise ConfigError(f"loadBalancer.kind: {kind!r} is not implemented yet")
    if kind not in _KIND_KEYS:
        known = ", ".join(_KIND_KEYS)
        raise ConfigError(f"loadBalancer.kind: unknown kind {kind!r} (known kinds: {known})")
    allowed = _KIND_KEYS[kind]
    unknown = sorted(str(k) for k in config if k not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ConfigError(
            f"loadBalancer: unknown key {unknown[0]!r} for kind {kind!r} (known keys: {known})"
        )
    probation = config.get("enableProbation", False)
    if not isinstance(probation, bool):
        raise ConfigError(f"loadBalancer.enableProbation: must be true or false, got {probation!r}")
    if probation:
        raise ConfigError("loadBalancer.enableProbation: true is not implemented yet")
    max_effort = int(
        _positive("maxEffort", config.get("maxEffort", DEFAULT_MAX_EFFORT), integer=True)
    )
    if accrual_factory is None:
        accrual_factory = build_accrual_factory(None, rng)

    if kind == "p2c":
        return P2CBalancer(accrual_factory=accrual_factory, rng=rng, max_effort=max_effort)
    if kind == "ewma":
        decay_ms = _positive(
            "decayTimeMs", config.get("decayTimeMs", DEFAULT_DECAY_TIME_MS), integer=False
        )
        return EwmaBalancer(
            accrual_factory=accrual_factory,
            rng=rng,
            max_effort=max_effort,
            decay_time_s=decay_ms / 1000,
        )
    return RoundRobinBalancer(accrual_factory=accrual_factory, rng=rng)
