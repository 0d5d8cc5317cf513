"""Retry budget (and its no-storm guarantee), backoffs, the retry decision, and its config."""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from fractions import Fraction
from itertools import accumulate, islice, pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linker.policy.classify import ResponseClass
from linker.policy.retries import (
    DEFAULT_BACKOFF,
    Backoff,
    RetryBudget,
    RetryPolicy,
    build_retry_policy,
)

S = ResponseClass.SUCCESS
R = ResponseClass.FAILURE_RETRYABLE
N = ResponseClass.FAILURE_NON_RETRYABLE


def delay_sequence(backoff: Backoff, rng: random.Random) -> Iterator[float]:
    """The endless sequence of delays, in seconds, one request's retries would wait."""
    delay: float | None = None
    while True:
        delay = backoff.next_delay_s(delay, rng)
        yield delay


class HighRandom(random.Random):
    """Always draws the top of the range: the fastest-growing jitter."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowRandom(random.Random):
    """Always draws the bottom of the range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def drain(budget: RetryBudget, now_s: float, limit: int = 100_000) -> int:
    """Withdraw at ``now_s`` until refused; return how many were granted."""
    granted = 0
    while granted < limit and budget.try_withdraw(now_s):
        granted += 1
    return granted


# --- RetryBudget: basics ----------------------------------------------------------------------


def test_a_fresh_budget_holds_min_retries_per_s_times_ttl() -> None:
    budget = RetryBudget()  # Linkerd's defaults: 10/s, 20%, 10 s
    assert budget.balance(0.0) == 100.0
    assert drain(budget, 0.0) == 100
    assert not budget.try_withdraw(0.0)
    assert budget.balance(0.0) == 0.0


def test_each_request_earns_percent_can_retry() -> None:
    budget = RetryBudget(min_retries_per_s=0, percent_can_retry=0.2)
    for _ in range(4):
        budget.deposit(1.0)
    assert not budget.try_withdraw(1.0)  # 0.8 of a retry is not a retry
    budget.deposit(1.0)
    assert budget.balance(1.0) == pytest.approx(1.0)
    assert budget.try_withdraw(1.0)
    assert not budget.try_withdraw(1.0)


def test_deposits_expire_after_ttl() -> None:
    budget = RetryBudget(ttl_s=10, min_retries_per_s=0, percent_can_retry=1.0)
    budget.deposit(0.0)
    assert budget.balance(9.98) == 1.0
    assert budget.balance(10.0) == 0.0
    assert not budget.try_withdraw(10.0)


def test_withdrawals_expire_after_ttl_so_the_floor_comes_back() -> None:
    budget = RetryBudget(ttl_s=1, min_retries_per_s=1, percent_can_retry=0)
    assert budget.try_withdraw(0.0)
    assert not budget.try_withdraw(0.5)
    assert not budget.try_withdraw(0.99)
    assert budget.try_withdraw(1.0)


def test_the_floor_is_min_retries_per_s_over_a_long_run() -> None:
    # Exactly representable times and ticks, so the count is exact: 1 retry/s for 40 s.
    budget = RetryBudget(ttl_s=4, min_retries_per_s=1, percent_can_retry=0, resolution_s=0.25)
    granted = sum(budget.try_withdraw(k * 0.25) for k in range(160))
    assert granted == 40


def test_balance_goes_negative_when_the_deposit_that_paid_expires_first() -> None:
    budget = RetryBudget(ttl_s=1, min_retries_per_s=0, percent_can_retry=1.0)
    budget.deposit(0.0)
    assert budget.try_withdraw(0.5)
    assert budget.balance(1.2) == -1.0  # the retry at 0.5 still counts until 1.5
    assert not budget.try_withdraw(1.2)
    budget.deposit(1.2)
    assert not budget.try_withdraw(1.2)
    assert budget.balance(1.5) == 1.0


def test_a_clock_stepping_back_stands_still() -> None:
    budget = RetryBudget(ttl_s=1, min_retries_per_s=1, percent_can_retry=0)
    assert budget.try_withdraw(5.0)
    assert not budget.try_withdraw(4.0)  # not a window "before" the retry at 5.0
    assert budget.balance(4.0) == 0.0
    assert budget.try_withdraw(6.0)


def test_zero_percent_and_zero_floor_never_retries() -> None:
    budget = RetryBudget(min_retries_per_s=0, percent_can_retry=0)
    for _ in range(1000):
        budget.deposit(0.0)
    assert not budget.try_withdraw(0.0)


def test_percent_can_retry_up_to_1000() -> None:
    budget = RetryBudget(min_retries_per_s=0, percent_can_retry=1000)
    budget.deposit(0.0)
    assert drain(budget, 0.0) == 1000


def test_memory_is_bounded_by_ticks_not_requests() -> None:
    budget = RetryBudget(ttl_s=1, resolution_s=0.1)
    for i in range(10_000):
        budget.deposit(i * 0.001)
    assert len(budget._entries) <= 10


def test_repr_shows_the_window() -> None:
    budget = RetryBudget()
    budget.deposit(0.0)
    budget.try_withdraw(0.0)
    assert repr(budget) == (
        "<RetryBudget ttl_s=10 min_retries_per_s=10 percent_can_retry=0.2 "
        "| window: 1 deposits, 1 withdrawals>"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl_s": 0.5}, "ttl_s must be 1 to 60"),
        ({"ttl_s": 61}, "ttl_s must be 1 to 60"),
        ({"ttl_s": math.nan}, "ttl_s"),
        ({"min_retries_per_s": -1}, "min_retries_per_s"),
        ({"min_retries_per_s": math.inf}, "min_retries_per_s"),
        ({"percent_can_retry": -0.1}, "percent_can_retry must be 0 to 1000"),
        ({"percent_can_retry": 1000.5}, "percent_can_retry"),
        ({"resolution_s": 0}, "resolution_s"),
        ({"ttl_s": 2, "resolution_s": 3}, "resolution_s"),
    ],
)
def test_budget_refuses_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryBudget(**kwargs)


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_budget_refuses_a_non_finite_clock(now: float) -> None:
    with pytest.raises(ValueError, match="now_s"):
        RetryBudget().deposit(now)


# --- RetryBudget: the no-storm guarantee ------------------------------------------------------

budget_params = st.fixed_dictionaries(
    {
        "ttl_s": st.sampled_from([1.0, 2.0, 2.5, 10.0]),
        "min_retries_per_s": st.one_of(
            st.sampled_from([0.0, 1.0, 10.0]), st.floats(min_value=0, max_value=20)
        ),
        "percent_can_retry": st.one_of(
            st.sampled_from([0.0, 0.1, 0.2, 1.0, 3.0]), st.floats(min_value=0, max_value=5)
        ),
    }
)

# One step of traffic: after `gap_ms`, `requests` arrive (all of which fail), then up to
# `attempts` retries are tried (None: as many as the budget grants, the worst case).
steps = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4000),
        st.integers(min_value=0, max_value=40),
        st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
    ),
    min_size=1,
    max_size=40,
)


class Ledger:
    """Per-tick counts of deposits and granted withdrawals, with window sums."""

    def __init__(self, ticks: list[int], deposits: list[int], withdrawals: list[int]) -> None:
        self.ticks = ticks
        self.dep = [0, *accumulate(deposits)]
        self.wd = [0, *accumulate(withdrawals)]

    def _sum(self, prefix: list[int], lo: int, hi: int) -> int:
        """Sum over ticks in (lo, hi]."""
        return prefix[bisect_right(self.ticks, hi)] - prefix[bisect_right(self.ticks, lo)]

    def deposits(self, lo: int, hi: int) -> int:
        return self._sum(self.dep, lo, hi)

    def withdrawals(self, lo: int, hi: int) -> int:
        return self._sum(self.wd, lo, hi)


def run_storm(params: dict[str, float], traffic: list[tuple[int, int, int | None]]) -> Ledger:
    budget = RetryBudget(**params)
    ticks: list[int] = []
    deposits: list[int] = []
    withdrawals: list[int] = []
    now_ms = 0
    for gap_ms, requests, attempts in traffic:
        now_ms += gap_ms
        now_s = now_ms / 1000
        for _ in range(requests):
            budget.deposit(now_s)
        granted = drain(budget, now_s, limit=attempts if attempts is not None else 100_000)
        tick = budget.tick(now_s)
        if ticks and ticks[-1] == tick:
            deposits[-1] += requests
            withdrawals[-1] += granted
        else:
            ticks.append(tick)
            deposits.append(requests)
            withdrawals.append(granted)
    return Ledger(ticks, deposits, withdrawals)


@settings(max_examples=300, deadline=None)
@given(params=budget_params, traffic=steps)
def test_retries_never_exceed_percent_of_requests_plus_the_floor(
    params: dict[str, float], traffic: list[tuple[int, int, int | None]]
) -> None:
    ledger = run_storm(params, traffic)
    p = Fraction(params["percent_can_retry"])
    reserve = Fraction(params["min_retries_per_s"]) * Fraction(params["ttl_s"])
    window = round(params["ttl_s"] / 0.01)  # ticks per ttl at the default resolution

    # 1. whenever retries were granted at tick n, the window (n - ttl, n] obeys the bound
    for tick in ledger.ticks:
        if ledger.withdrawals(tick - 1, tick):
            retries = ledger.withdrawals(tick - window, tick)
            assert retries <= p * ledger.deposits(tick - window, tick) + reserve

    # 2. every ttl-long window, wherever it ends, counting requests of it and the one before:
    #    the window sums only change at an event tick, one ttl or two after it.
    ends = {t + k * window for t in ledger.ticks for k in (0, 1, 2)}
    for n in ends:
        retries = ledger.withdrawals(n - window, n)
        assert retries <= p * ledger.deposits(n - 2 * window, n) + reserve

    # 3. a run shorter than one ttl: total retries <= p * requests + min_retries_per_s * ttl_s
    if ledger.ticks[-1] - ledger.ticks[0] < window:
        total_retries = ledger.wd[-1]
        assert total_retries <= p * ledger.dep[-1] + reserve


@settings(max_examples=200, deadline=None)
@given(
    params=budget_params,
    requests=st.integers(min_value=0, max_value=2000),
)
def test_a_burst_earns_exactly_the_bound(params: dict[str, float], requests: int) -> None:
    """The bound is tight: the budget does not refuse retries it promised."""
    budget = RetryBudget(**params)
    for _ in range(requests):
        budget.deposit(3.0)
    p = Fraction(params["percent_can_retry"])
    reserve = Fraction(params["min_retries_per_s"]) * Fraction(params["ttl_s"])
    assert drain(budget, 3.0) == math.floor(p * requests + reserve)


def test_a_failing_service_sees_at_most_a_fifth_more_traffic_plus_the_floor() -> None:
    """End to end: 100 rps for 60 s, every attempt fails, every failure retried with backoff."""
    policy = RetryPolicy(
        budget=RetryBudget(),
        backoff=Backoff.jittered(0.01, 1.0),
        rng=random.Random(7),
    )
    # (time_s, seq, attempt, prev_delay_s): attempts waiting to run
    queue: list[tuple[float, int, int, float | None]] = []
    seq = 0
    for i in range(6000):
        heapq.heappush(queue, (i / 100, seq, 1, None))
        seq += 1
    requests = 0
    retry_times: list[float] = []
    while queue:
        now_s, _, attempt, prev = heapq.heappop(queue)
        if attempt == 1:
            policy.record_request(now_s)
            requests += 1
        retry, delay_s = policy.should_retry(R, attempt, True, now_s, prev_delay_s=prev)
        if retry:
            retry_times.append(now_s)
            heapq.heappush(queue, (now_s + delay_s, seq, attempt + 1, delay_s))
            seq += 1
    assert requests == 6000
    assert policy.retries_total == len(retry_times)
    assert policy.budget_exhausted > 0
    # 20% of 6000 requests plus 10/s over the 60 s run (the floor renews every ttl):
    # 1200 + 600, and the run's last retries may spill one ttl past its requests.
    assert policy.retries_total <= 1200 + 10 * 70
    # Any 10 s window: at most 20% of 20 s of requests (2000) plus the 100 floor.
    retry_times.sort()
    for start in retry_times:
        in_window = bisect_left(retry_times, start + 10) - bisect_left(retry_times, start)
        assert in_window <= 0.2 * 2000 + 100


# --- Backoff ----------------------------------------------------------------------------------


def test_constant_backoff() -> None:
    assert list(islice(delay_sequence(Backoff.constant(0.25), random.Random(1)), 5)) == [0.25] * 5
    assert list(islice(delay_sequence(DEFAULT_BACKOFF, random.Random(1)), 3)) == [0.0] * 3


def test_jittered_backoff_starts_at_min_and_grows_3x_up_to_max() -> None:
    delays = list(islice(delay_sequence(Backoff.jittered(0.01, 1.0), HighRandom()), 8))
    assert delays == pytest.approx([0.01, 0.03, 0.09, 0.27, 0.81, 1.0, 1.0, 1.0])


def test_jittered_backoff_low_draws_stay_at_min() -> None:
    assert list(islice(delay_sequence(Backoff.jittered(0.01, 1.0), LowRandom()), 4)) == [0.01] * 4


def test_jittered_backoff_reaches_max_with_a_real_rng() -> None:
    delays = list(islice(delay_sequence(Backoff.jittered(0.01, 10.0), random.Random(0)), 100))
    assert max(delays) == 10.0


@given(
    min_s=st.floats(min_value=1e-4, max_value=10),
    span=st.floats(min_value=1, max_value=1000),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_jittered_backoff_stays_in_bounds(min_s: float, span: float, seed: int) -> None:
    backoff = Backoff.jittered(min_s, min_s * span)
    delays = list(islice(delay_sequence(backoff, random.Random(seed)), 50))
    assert delays[0] == min_s
    for prev, delay in pairwise(delays):
        assert backoff.min_s <= delay <= backoff.max_s
        assert delay <= max(backoff.min_s, 3 * prev)


def test_same_seed_same_delays() -> None:
    b = Backoff.jittered(0.01, 10.0)
    assert list(islice(delay_sequence(b, random.Random(3)), 20)) == list(
        islice(delay_sequence(b, random.Random(3)), 20)
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Backoff.jittered(0, 1), "0 < min <= max"),
        (lambda: Backoff.jittered(2, 1), "0 < min <= max"),
        (lambda: Backoff.constant(-1), "constant backoff"),
        (lambda: Backoff.constant(math.inf), "finite"),
        (lambda: Backoff("linear", 1, 2), "unknown backoff kind 'linear'"),  # type: ignore[arg-type]
    ],
)
def test_backoff_refuses_bad_parameters(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


# --- RetryPolicy.should_retry -----------------------------------------------------------------


def policy(**budget: float) -> RetryPolicy:
    return RetryPolicy(
        budget=RetryBudget(**budget),
        backoff=Backoff.jittered(0.1, 5.0),
        rng=HighRandom(),
    )


@pytest.mark.parametrize("cls", [S, N])
def test_only_retryable_failures_are_retried(cls: ResponseClass) -> None:
    p = policy()
    assert p.should_retry(cls, 1, True, 0.0) == (False, 0.0)
    assert p.budget.balance(0.0) == 100.0  # no token taken
    assert p.stats() == {
        "retries/total": 0,
        "retries/budget_exhausted": 0,
        "retries/not_replayable": 0,
        "retries/deadline_exceeded": 0,
    }


def test_a_streamed_body_is_never_retried() -> None:
    p = policy()
    assert p.should_retry(R, 1, False, 0.0) == (False, 0.0)
    assert p.not_replayable == 1
    assert p.budget.balance(0.0) == 100.0


def test_an_exhausted_budget_refuses_and_counts() -> None:
    p = policy(min_retries_per_s=0, percent_can_retry=0.5)
    p.record_request(0.0)
    p.record_request(0.0)
    assert p.should_retry(R, 1, True, 0.0) == (True, 0.1)
    assert p.should_retry(R, 1, True, 0.0) == (False, 0.0)
    assert p.retries_total == 1
    assert p.budget_exhausted == 1
    assert p.stats()["retries/budget_exhausted"] == 1


def test_delays_follow_the_backoff_per_request() -> None:
    p = policy()
    retry, d1 = p.should_retry(R, 1, True, 0.0)
    assert (retry, d1) == (True, 0.1)
    _, d2 = p.should_retry(R, 2, True, 0.0, prev_delay_s=d1)
    _, d3 = p.should_retry(R, 3, True, 0.0, prev_delay_s=d2)
    assert (d2, d3) == pytest.approx((0.3, 0.9))
    # without the previous delay, a later retry jitters from the minimum
    retry, d4 = p.should_retry(R, 4, True, 0.0)
    assert retry
    assert d4 == pytest.approx(0.3)
    # a first attempt ignores a stale previous delay
    assert p.should_retry(R, 1, True, 0.0, prev_delay_s=4.0) == (True, 0.1)
    assert p.retries_total == 5


def test_no_retry_whose_backoff_outlasts_the_time_left() -> None:
    p = policy()
    assert p.should_retry(R, 1, True, 0.0, remaining_s=0.05) == (False, 0.0)
    assert p.deadline_exceeded == 1
    assert p.budget.balance(0.0) == 100.0  # no token wasted on a retry that cannot finish
    assert p.should_retry(R, 1, True, 0.0, remaining_s=0.5) == (True, 0.1)


def test_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        policy().should_retry(R, 0, True, 0.0)


# --- build_retry_policy -----------------------------------------------------------------------


def test_defaults_are_linkerds() -> None:
    configs: list[dict[str, Any] | None] = [None, {}, {"retries": {}}, {"retries": None}]
    for config in configs:
        p = build_retry_policy(config, random.Random(0))
        assert p.budget.ttl_s == 10.0
        assert p.budget.min_retries_per_s == 10.0
        assert p.budget.percent_can_retry == 0.2
        assert p.backoff == Backoff.constant(0.0)
        assert p.classifier.kind == "io.l5d.http.nonRetryable5XX"


def test_the_linkerd_shape() -> None:
    rng = random.Random(0)
    p = build_retry_policy(
        {
            "totalTimeoutMs": 30000,  # the router's key: accepted and left alone
            "kind": "io.l5d.global",
            "retries": {
                "budget": {"minRetriesPerSec": 5, "percentCanRetry": 0.5, "ttlSecs": 15},
                "backoff": {"kind": "jittered", "minMs": 10, "maxMs": 10000},
            },
            "responseClassifier": {"kind": "io.l5d.http.retryableIdempotent5XX"},
        },
        rng,
    )
    assert (p.budget.ttl_s, p.budget.min_retries_per_s, p.budget.percent_can_retry) == (
        15.0,
        5.0,
        0.5,
    )
    assert p.backoff == Backoff.jittered(0.01, 10.0)
    assert p.classifier.kind == "io.l5d.http.retryableIdempotent5XX"
    assert p.rng is rng


def test_constant_backoff_config() -> None:
    rng = random.Random(0)
    p = build_retry_policy({"retries": {"backoff": {"kind": "constant", "ms": 250}}}, rng)
    assert p.backoff == Backoff.constant(0.25)
    p = build_retry_policy({"retries": {"backoff": {"kind": "constant"}}}, rng)
    assert p.backoff == Backoff.constant(0.0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"retry": {}}, r"unknown key\(s\) 'retry' in service \(known keys: kind, prefix, "),
        ({"retries": {"budgets": {}}}, r"'budgets' in service\.retries \(known keys: backoff"),
        (
            {"retries": {"budget": {"ttl": 10}}},
            r"'ttl' in service\.retries\.budget \(known keys: minRetriesPerSec, percentCanRetry",
        ),
        (
            {"retries": {"backoff": {"kind": "jittered", "minMs": 1, "maxMs": 2, "ms": 3}}},
            r"'ms' in service\.retries\.backoff",
        ),
        ({"retries": {"backoff": {"kind": "constant", "minMs": 1}}}, "'minMs'"),
        ({"retries": {"backoff": {"kind": "expo"}}}, r"backoff\.kind must be .*'expo'"),
        ({"retries": {"backoff": {"ms": 5}}}, r"backoff\.kind must be .*None"),
        ({"retries": {"backoff": {"kind": "jittered", "maxMs": 5}}}, r"minMs is required"),
        ({"retries": {"backoff": {"kind": "jittered", "minMs": 0, "maxMs": 5}}}, "0 < minMs"),
        ({"retries": {"backoff": {"kind": "jittered", "minMs": 9, "maxMs": 5}}}, "<= maxMs"),
        ({"retries": {"backoff": {"kind": "constant", "ms": -1}}}, r"\.ms must be >= 0"),
        ({"retries": {"budget": {"ttlSecs": 0}}}, r"ttlSecs must be 1 to 60, got 0"),
        ({"retries": {"budget": {"ttlSecs": 61}}}, r"ttlSecs must be 1 to 60"),
        ({"retries": {"budget": {"percentCanRetry": 1001}}}, r"percentCanRetry must be 0 to 1000"),
        ({"retries": {"budget": {"percentCanRetry": -0.1}}}, r"percentCanRetry"),
        ({"retries": {"budget": {"minRetriesPerSec": -1}}}, r"minRetriesPerSec must be >= 0"),
        ({"retries": {"budget": {"minRetriesPerSec": True}}}, r"must be a number, got True"),
        ({"retries": {"budget": {"ttlSecs": "10"}}}, r"ttlSecs must be a number, got '10'"),
        ({"retries": {"budget": {"ttlSecs": math.nan}}}, r"ttlSecs must be a number"),
        ({"retries": [1]}, r"service\.retries must be a mapping"),
        ({"retries": {"backoff": "jittered"}}, r"service\.retries\.backoff must be a mapping"),
        ({"responseClassifier": {"kind": "io.l5d.bogus"}}, r"service: .*'io\.l5d\.bogus'"),
        ({"responseClassifier": {"kind": "x", "y": 1}}, r"service: unknown key.*'y'"),
        ("retries", r"service must be a mapping"),
    ],
)
def test_bad_config_is_named(config: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_retry_policy(config, random.Random(0))  # type: ignore[arg-type]


def test_where_names_the_section() -> None:
    with pytest.raises(ValueError, match=r"routers\[0\]\.service\.retries\.budget\.ttlSecs"):
        build_retry_policy(
            {"retries": {"budget": {"ttlSecs": 0}}}, random.Random(0), where="routers[0].service"
        )
