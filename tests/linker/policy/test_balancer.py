"""Load balancers as pure state machines: seeded randomness, virtual time, shares of many picks."""

from __future__ import annotations

import heapq
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from linker.policy.accrual import build_accrual_factory
from linker.policy.balancer import (
    Balancer,
    Endpoint,
    EwmaBalancer,
    P2CBalancer,
    RoundRobinBalancer,
    build_balancer,
)

KINDS = ["p2c", "ewma", "roundRobin"]


def _eps(n: int, weights: Sequence[float] | None = None) -> list[Endpoint]:
    weights = weights or [1.0] * n
    return [Endpoint(("10.0.0.1", 8000 + i), weight=w) for i, w in enumerate(weights)]


def _balancer(
    kind: str = "p2c",
    endpoints: Sequence[Endpoint] = (),
    *,
    seed: int = 1,
    accrual: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Balancer:
    rng = random.Random(seed)
    lb = build_balancer(
        {"kind": kind, **extra}, rng=rng, accrual_factory=build_accrual_factory(accrual, rng)
    )
    lb.update(endpoints, 0.0)
    return lb


def _pick(lb: Balancer, now_s: float) -> Endpoint:
    ep = lb.pick(now_s)
    assert ep is not None
    return ep


def _shares_instant_release(lb: Balancer, picks: int) -> Counter[int]:
    """Pick ``picks`` times, releasing each at once (so nothing is ever outstanding)."""
    counts: Counter[int] = Counter()
    for i in range(picks):
        now_s = i * 0.001
        ep = _pick(lb, now_s)
        counts[ep.address[1] - 8000] += 1
        lb.release(ep, now_s, 0.001, True)
    return counts


# --- p2c ----------------------------------------------------------------------------------------


def test_p2c_rarely_picks_the_loaded_endpoint() -> None:
    eps = _eps(4)
    lb = _balancer("p2c", eps[:1])
    for _ in range(10):
        assert _pick(lb, 0.0) == eps[0]
    lb.update(eps, 0.0)  # the 10 outstanding requests on eps[0] survive the update
    assert lb.stats()["endpoint/10.0.0.1:8000/outstanding"] == 10

    counts = _shares_instant_release(lb, 10_000)
    assert counts[0] < 100  # < 1%: both choices would have to land on it
    for i in (1, 2, 3):
        assert 3000 < counts[i] < 3700


def test_p2c_weights_shift_shares_proportionally() -> None:
    weights = [1.0, 2.0, 3.0, 4.0]
    counts = _shares_instant_release(_balancer("p2c", _eps(4, weights)), 10_000)
    for i, w in enumerate(weights):
        assert abs(counts[i] / 10_000 - w / 10) < 0.02, counts


def test_p2c_weights_scale_load_when_requests_pile_up() -> None:
    weights = [1.0, 3.0]
    lb = _balancer("p2c", _eps(2, weights))
    counts = Counter(_pick(lb, 0.0).address[1] - 8000 for _ in range(4000))
    # Least loaded per unit of weight: outstanding ends up proportional to weight.
    assert abs(counts[1] / 4000 - 0.75) < 0.01, counts


def test_p2c_skips_dead_endpoints_even_past_max_effort() -> None:
    # With 3 of 4 dead and maxEffort 1, the random choices usually miss the live one; the
    # fallback scan must still find it rather than give up or pick a dead endpoint.
    eps = _eps(4)
    lb = _balancer("p2c", eps, accrual={"failures": 1}, maxEffort=1)
    for ep in eps[1:]:
        lb.release(ep, 0.0, 0.01, False)
    assert lb.stats()["available"] == 1
    for i in range(1000):
        ep = _pick(lb, 1.0 + i * 0.001)
        assert ep == eps[0]
        lb.release(ep, 1.0 + i * 0.001, 0.01, True)


# --- ewma vs roundRobin: a slow endpoint --------------------------------------------------------


def _simulate(lb: Balancer, latencies_s: Sequence[float], requests: int) -> list[float]:
    """One request every millisecond of virtual time; each completes after its endpoint's
    latency.  Returns each endpoint's share of the requests."""
    interval_s = 0.001
    in_flight: list[tuple[float, int, Endpoint]] = []  # (done at, seq, endpoint)
    counts = [0] * len(latencies_s)
    for seq in range(requests):
        now_s = seq * interval_s
        while in_flight and in_flight[0][0] <= now_s:
            done_s, _, ep = heapq.heappop(in_flight)
            lb.release(ep, done_s, latencies_s[ep.address[1] - 8000], True)
        ep = _pick(lb, now_s)
        i = ep.address[1] - 8000
        counts[i] += 1
        heapq.heappush(in_flight, (now_s + latencies_s[i], seq, ep))
    return [c / requests for c in counts]


def test_slow_endpoint_gets_far_less_traffic_than_with_round_robin() -> None:
    latencies_s = [0.010, 0.010, 0.010, 0.100]  # the last is 10× slower
    shares = {kind: _simulate(_balancer(kind, _eps(4)), latencies_s, 20_000) for kind in KINDS}
    rr_slow = shares["roundRobin"][3]
    assert rr_slow == pytest.approx(0.25)
    assert shares["ewma"][3] < rr_slow / 2, shares
    assert shares["p2c"][3] < rr_slow / 2, shares
    # Latency-aware beats merely load-aware.
    assert shares["ewma"][3] < shares["p2c"][3], shares


def test_ewma_prefers_fast_endpoint_without_concurrency() -> None:
    # Requests released at once: every load is zero outstanding, so plain p2c can't tell the
    # endpoints apart, but ewma still steers by measured latency.
    eps = _eps(2)
    lb = _balancer("ewma", eps)
    counts = Counter[int]()
    for i in range(5000):
        now_s = i * 0.01
        ep = _pick(lb, now_s)
        counts[ep.address[1] - 8000] += 1
        lb.release(ep, now_s, 0.005 if ep == eps[0] else 0.050, True)
    assert counts[1] < 0.1 * 5000, counts
    assert counts[1] > 0  # but the slow one is re-tried as its estimate ages


def test_ewma_estimate_is_peak_then_decays() -> None:
    rng = random.Random(0)
    lb = EwmaBalancer(accrual_factory=build_accrual_factory(None, rng), rng=rng, decay_time_s=10.0)
    ep = _eps(1)[0]
    lb.update([ep], 0.0)
    rec = lb._active[ep.address]
    for t in range(10):
        lb.release(_pick(lb, float(t)), float(t), 0.010, True)
    assert lb.latency_estimate_s(rec, 9.0) == pytest.approx(0.010)
    # One slow response: the estimate jumps straight to it (peak) ...
    lb.release(_pick(lb, 10.0), 10.0, 0.200, True)
    assert lb.latency_estimate_s(rec, 10.0) == pytest.approx(0.200)
    # ... and a fast one only pulls it down by the time-weighted share (1 - e^-0.1).
    lb.release(_pick(lb, 11.0), 11.0, 0.010, True)
    w = math.exp(-0.1)
    assert lb.latency_estimate_s(rec, 11.0) == pytest.approx(0.200 * w + 0.010 * (1 - w))
    # Left alone for one decay time, it is trusted e-times less.
    est = lb.latency_estimate_s(rec, 11.0)
    assert lb.latency_estimate_s(rec, 21.0) == pytest.approx(est / math.e)


def test_ewma_fresh_endpoint_starts_neutral() -> None:
    eps = _eps(4)
    lb = _balancer("ewma", eps[:3])
    assert isinstance(lb, EwmaBalancer)
    for i in range(300):
        now_s = i * 0.01
        ep = _pick(lb, now_s)
        lb.release(ep, now_s, 0.010 + 0.010 * (ep.address[1] - 8000), True)  # 10, 20, 30 ms
    lb.update(eps, 3.0)
    fresh = lb._active[eps[3].address]
    estimates = [lb.latency_estimate_s(lb._active[ep.address], 3.0) for ep in eps[:3]]
    # Neither flooded (as if free) nor shunned (as if infinitely slow).
    assert min(estimates) < lb.latency_estimate_s(fresh, 3.0) < max(estimates)
    assert "endpoint/10.0.0.1:8003/ewma_ms" in lb.stats()


# --- roundRobin ---------------------------------------------------------------------------------


def test_round_robin_is_fair() -> None:
    eps = _eps(3)
    lb = _balancer("roundRobin", eps)
    seq = [_pick(lb, 0.0) for _ in range(300)]
    assert seq[:6] == [eps[0], eps[1], eps[2]] * 2
    assert Counter(seq) == {eps[0]: 100, eps[1]: 100, eps[2]: 100}


def test_round_robin_is_weighted_and_smooth() -> None:
    eps = _eps(3, [1.0, 2.0, 3.0])
    lb = _balancer("roundRobin", eps)
    seq = [_pick(lb, 0.0) for _ in range(600)]
    assert Counter(seq) == {eps[0]: 100, eps[1]: 200, eps[2]: 300}
    # Smooth: every run of 6 picks (the total weight) has exactly the weighted counts, so a
    # heavy endpoint never gets its share in one burst.
    for start in range(0, 600, 6):
        assert Counter(seq[start : start + 6]) == {eps[0]: 1, eps[1]: 2, eps[2]: 3}
    assert seq[:3] != [eps[2]] * 3


def test_round_robin_skips_dead_endpoints() -> None:
    eps = _eps(3)
    lb = _balancer("roundRobin", eps, accrual={"failures": 1})
    lb.release(eps[1], 0.0, 0.01, False)
    seq = [_pick(lb, 1.0) for _ in range(10)]
    assert eps[1] not in seq
    assert Counter(seq) == {eps[0]: 5, eps[2]: 5}


# --- update(): endpoint sets from namerd --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_update_adds_and_removes(kind: str) -> None:
    eps = _eps(4)
    lb = _balancer(kind, eps[:2])
    held = _pick(lb, 0.0)  # in flight across the update
    lb.update([ep for ep in eps[1:] if ep != held] + [eps[3]], 1.0)  # held is removed
    picked = {_pick(lb, 1.0 + i * 0.001) for i in range(200)}
    assert held not in picked
    assert eps[2] in picked
    assert eps[3] in picked
    assert lb.stats()["draining"] == 1
    # The in-flight request to the removed endpoint finishes: harmless, and the drained
    # endpoint is forgotten.
    lb.release(held, 2.0, 0.01, False)
    assert lb.stats()["draining"] == 0
    # A second, stray release for something long gone is ignored too.
    lb.release(held, 3.0, 0.01, False)
    lb.release(Endpoint(("192.0.2.1", 1)), 3.0, 0.01, True)
    assert held not in {_pick(lb, 4.0) for _ in range(100)}


@pytest.mark.parametrize("kind", KINDS)
def test_update_keeps_state_of_kept_endpoints(kind: str) -> None:
    eps = _eps(3)
    lb = _balancer(
        kind, eps[:2], accrual={"failures": 1, "backoff": {"kind": "constant", "ms": 10_000}}
    )
    lb.release(eps[0], 0.0, 0.01, False)  # eps[0] dead until t=10
    held = _pick(lb, 0.0)
    assert held == eps[1]
    # Kept endpoints keep their accrual and load, even with a new weight.
    lb.update([Endpoint(eps[0].address, weight=5.0), eps[1], eps[2]], 1.0)
    stats = lb.stats()
    assert stats["size"] == 3
    assert stats["available"] == 2
    assert stats["endpoint/10.0.0.1:8001/outstanding"] == 1
    assert eps[0] not in {_pick(lb, 2.0 + i * 0.001) for i in range(100)}


def test_endpoint_readded_while_draining_keeps_its_state() -> None:
    eps = _eps(2)
    lb = _balancer("p2c", eps)
    for _ in range(6):
        _pick(lb, 0.0)
    outstanding = lb.stats()["endpoint/10.0.0.1:8000/outstanding"]
    lb.update(eps[1:], 1.0)
    lb.update(eps, 2.0)
    assert lb.stats()["endpoint/10.0.0.1:8000/outstanding"] == outstanding
    assert lb.stats()["draining"] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_no_endpoints_picks_none(kind: str) -> None:
    lb = _balancer(kind, [])
    assert lb.pick(0.0) is None
    assert lb.stats()["size"] == 0


# --- failure accrual through the balancer -------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_all_dead_picks_none_then_one_revived_is_picked(kind: str) -> None:
    eps = _eps(3)
    lb = _balancer(
        kind, eps, accrual={"failures": 2, "backoff": {"kind": "constant", "ms": 10_000}}
    )
    for ep in eps:
        lb.release(ep, 0.0, 0.01, False)
        lb.release(ep, 0.5, 0.01, False)
    assert lb.pick(1.0) is None
    assert lb.pick(10.499) is None  # dead from the second failure, at 0.5, for 10 s
    stats = lb.stats()
    assert (stats["size"], stats["available"], stats["removals"]) == (3, 0, 3)

    # Backoff elapsed: each endpoint gets exactly one probe, then nothing until they answer.
    probes = [lb.pick(10.5) for _ in range(3)]
    assert sorted(p.address for p in probes if p) == [ep.address for ep in eps]
    assert lb.pick(10.5) is None
    # One probe fails (dead again), one succeeds (revived), one is still out.
    lb.release(eps[0], 10.6, 0.01, False)
    lb.release(eps[1], 10.6, 0.01, True)
    assert lb.stats()["revivals"] == 1
    picked = {_pick(lb, 10.7 + i * 0.001) for i in range(50)}
    assert picked == {eps[1]}


def test_accrual_none_never_removes_endpoints() -> None:
    eps = _eps(2)
    lb = _balancer("p2c", eps, accrual={"kind": "none"})
    for i in range(100):
        ep = _pick(lb, float(i))
        lb.release(ep, float(i), 0.01, False)
    assert lb.stats()["available"] == 2


# --- config, values, stats ----------------------------------------------------------------------


def test_default_is_p2c_with_linkerd_defaults() -> None:
    lb = build_balancer(None, rng=random.Random(0))
    assert isinstance(lb, P2CBalancer)
    assert not isinstance(lb, EwmaBalancer)
    assert lb.max_effort == 5
    ewma = build_balancer({"kind": "ewma"}, rng=random.Random(0))
    assert isinstance(ewma, EwmaBalancer)
    assert ewma.decay_time_s == 10.0
    tuned = build_balancer(
        {"kind": "ewma", "decayTimeMs": 2500, "maxEffort": 3}, rng=random.Random(0)
    )
    assert isinstance(tuned, EwmaBalancer)
    assert (tuned.decay_time_s, tuned.max_effort) == (2.5, 3)
    rr = build_balancer({"kind": "roundRobin", "maxEffort": 2}, rng=random.Random(0))
    assert isinstance(rr, RoundRobinBalancer)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"kind": "leastLoaded"}, "'leastLoaded'"),
        ({"kind": "aperture"}, "'aperture'"),
        ({"kind": "heap"}, "'heap'"),
        ({"kind": "p2c", "decayTimeMs": 100}, "'decayTimeMs'"),
        ({"kind": "ewma", "maxEfort": 3}, "'maxEfort'"),
        ({"maxEffort": 0}, "maxEffort"),
        ({"maxEffort": 2.5}, "maxEffort"),
        ({"maxEffort": True}, "maxEffort"),
        ({"kind": "ewma", "decayTimeMs": "10s"}, "decayTimeMs"),
        ({"kind": "ewma", "decayTimeMs": -1}, "decayTimeMs"),
        ({"enableProbation": True}, "enableProbation"),
        ({"enableProbation": "no"}, "enableProbation"),
    ],
)
def test_config_errors_name_the_culprit(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        build_balancer(config, rng=random.Random(0))


@pytest.mark.parametrize("weight", [0.0, -1.0, math.inf, math.nan])
def test_endpoint_weight_must_be_positive(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        Endpoint(("h", 1), weight=weight)


def test_endpoint_identity_ignores_meta() -> None:
    a = Endpoint(("h", 1), meta={"zone": "a"})
    b = Endpoint(("h", 1), meta={"zone": "b"})
    assert a == b
    assert hash(a) == hash(b)
    assert a.show() == "h:1"


def test_stats_and_repr_show_state() -> None:
    eps = _eps(2, [1.0, 2.0])
    lb = _balancer("p2c", eps)
    _pick(lb, 0.0)
    _pick(lb, 0.0)
    stats = lb.stats()
    assert (stats["size"], stats["available"], stats["outstanding"]) == (2, 2, 2)
    assert stats["endpoint/10.0.0.1:8000/load"] == stats["endpoint/10.0.0.1:8000/outstanding"]
    assert stats["endpoint/10.0.0.1:8001/load"] == stats["endpoint/10.0.0.1:8001/outstanding"] / 2
    assert repr(lb) == "<P2CBalancer size=2 available=2 draining=0 outstanding=2>"


def test_same_seed_same_picks() -> None:
    def run() -> list[Endpoint | None]:
        lb = _balancer("p2c", _eps(5), seed=42)
        return [lb.pick(0.0) for _ in range(100)]

    assert run() == run()
