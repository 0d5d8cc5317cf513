"""Failure accrual as a pure state machine: virtual time passed in, seeded jitter, no sleeping."""

from __future__ import annotations

import random
import re

import pytest

from linker.policy.accrual import (
    Accrual,
    ConsecutiveFailures,
    ConstantBackoff,
    JitteredBackoff,
    NeverDead,
    SuccessRate,
    SuccessRateWindowed,
    build_accrual_factory,
    build_backoff,
)


def _consecutive(failures: int = 3, delay_s: float = 10.0) -> Accrual:
    return Accrual(ConsecutiveFailures(failures), ConstantBackoff(delay_s))


def _probe(acc: Accrual, now_s: float, ok: bool) -> None:
    """Send the one probe request the way a balancer does: check, pick, record."""
    assert acc.available(now_s)
    acc.on_pick(now_s)
    acc.record(ok, now_s)


def test_consecutive_failures_marks_dead_after_n() -> None:
    acc = _consecutive(failures=3)
    acc.record(False, 0.0)
    acc.record(False, 0.1)
    assert acc.available(0.2)
    acc.record(False, 0.2)
    assert acc.state() == "dead"
    assert not acc.available(0.3)
    assert acc.removals == 1


def test_a_success_resets_the_run() -> None:
    acc = _consecutive(failures=3)
    for ok in (False, False, True, False, False):
        acc.record(ok, 0.0)
    assert acc.state() == "alive"


def test_probe_after_backoff_and_revive_on_success() -> None:
    acc = _consecutive(failures=1, delay_s=10.0)
    acc.record(False, 100.0)
    assert not acc.available(109.999)
    assert acc.available(110.0)
    assert acc.state() == "probing"
    acc.on_pick(110.0)
    # Only one probe at a time: the next request must wait for its outcome.
    assert not acc.available(110.5)
    acc.record(True, 111.0)
    assert acc.state() == "alive"
    assert acc.available(111.0)
    assert (acc.removals, acc.revivals) == (1, 1)


def test_failed_probe_is_dead_again() -> None:
    acc = _consecutive(failures=1, delay_s=10.0)
    acc.record(False, 0.0)
    _probe(acc, 10.0, ok=False)
    assert acc.state() == "dead"
    assert not acc.available(19.9)
    assert acc.available(20.0)
    assert acc.removals == 2


def test_outcomes_while_dead_are_ignored() -> None:
    # Stragglers sent before the endpoint died must not revive it or extend its backoff.
    acc = _consecutive(failures=1, delay_s=10.0)
    acc.record(False, 0.0)
    acc.record(True, 1.0)
    acc.record(False, 2.0)
    assert acc.state() == "dead"
    assert acc.dead_until_s == 10.0
    # Due a probe but none picked yet: still not evidence.
    assert acc.available(10.0)
    acc.record(True, 10.0)
    assert acc.state() == "probing"


def test_revival_resets_policy_and_backoff() -> None:
    rng = random.Random(1)
    acc = Accrual(ConsecutiveFailures(2), JitteredBackoff(5.0, 300.0, rng))
    acc.record(False, 0.0)
    acc.record(False, 0.0)
    assert acc.dead_until_s == 5.0  # the first dead period is exactly min
    _probe(acc, 5.0, ok=True)
    # One failure after revival is not enough: the policy started over.
    acc.record(False, 6.0)
    assert acc.state() == "alive"
    acc.record(False, 6.0)
    assert acc.dead_until_s == 11.0  # and so did the backoff


def test_jittered_backoff_is_exponential_within_bounds() -> None:
    rng = random.Random(7)
    acc = Accrual(ConsecutiveFailures(1), JitteredBackoff(5.0, 300.0, rng))
    now_s = 0.0
    acc.record(False, now_s)
    delays_s = [acc.dead_until_s - now_s]
    for _ in range(10):
        now_s = acc.dead_until_s
        _probe(acc, now_s, ok=False)
        delays_s.append(acc.dead_until_s - now_s)
    assert delays_s[0] == 5.0
    for n, d in enumerate(delays_s):
        low = min(300.0, 5.0 * 2 ** (n - 1)) if n else 5.0
        high = min(300.0, 5.0 * 2**n)
        assert low <= d <= high, (n, d)
        assert 5.0 <= d <= 300.0
    # Each failed probe waits at least as long as the one before, and the cap is reached.
    assert delays_s == sorted(delays_s)
    assert delays_s[-1] == 300.0
    # Jitter: an uncapped step lands inside its band, not on an edge.
    assert 10.0 < delays_s[2] < 20.0


def test_jitter_spreads_a_fleet() -> None:
    backoff = JitteredBackoff(5.0, 300.0, random.Random(3))
    draws = {round(backoff.delay_s(3), 6) for _ in range(50)}
    assert len(draws) > 40
    assert all(20.0 <= d <= 40.0 for d in draws)


def test_success_rate_needs_full_window_then_judges() -> None:
    policy = SuccessRate(success_rate=0.8, requests=10)
    # 5 failures in the first 9 responses: no verdict before 10 have been seen.
    outcomes = [False] * 5 + [True] * 4
    assert not any(policy.record(ok, 0.0) for ok in outcomes)
    assert policy.record(True, 0.0)  # 5/10 = 0.5 < 0.8


def test_success_rate_sliding_window() -> None:
    policy = SuccessRate(success_rate=0.8, requests=10)
    for _ in range(10):
        assert not policy.record(True, 0.0)
    # 2 failures in the last 10: 0.8 is not below 0.8.
    assert not policy.record(False, 0.0)
    assert not policy.record(False, 0.0)
    assert policy.record(False, 0.0)  # 7/10
    # Old failures slide out again as successes come in.
    for _ in range(10):
        verdict = policy.record(True, 0.0)
    assert not verdict


def test_success_rate_accrual_marks_dead() -> None:
    acc = Accrual(SuccessRate(0.8, 20), ConstantBackoff(1.0))
    for i in range(20):
        acc.record(i % 3 != 0, float(i))  # 1 in 3 fails: 0.65
    assert acc.state() == "dead"


def test_success_rate_windowed_forgets_old_outcomes() -> None:
    policy = SuccessRateWindowed(success_rate=0.8, window_s=10.0, min_requests=5)
    # Fewer than min_requests in the window: no verdict, however bad.
    for t in range(4):
        assert not policy.record(False, float(t))
    # Much later: the old failures have left the window.
    for t in range(5):
        assert not policy.record(True, 100.0 + t)
    assert not policy.record(False, 105.0)  # 5/6 = 0.83
    assert policy.record(False, 105.5)  # 5/7 = 0.71


def test_success_rate_windowed_via_config() -> None:
    factory = build_accrual_factory(
        {"kind": "io.l5d.successRateWindowed", "successRate": 0.9, "window": 5},
        random.Random(0),
    )
    acc = factory()
    for t in range(9):
        acc.record(True, float(t) * 0.1)
    acc.record(False, 1.0)
    assert acc.state() == "alive"  # 9/10
    acc.record(False, 1.1)
    assert acc.state() == "dead"  # 9/11


def test_none_never_marks_dead() -> None:
    acc = build_accrual_factory({"kind": "none"}, random.Random(0))()
    assert isinstance(acc.policy, NeverDead)
    for t in range(1000):
        acc.record(False, float(t))
    assert acc.available(1000.0)
    assert acc.state() == "alive"
    assert acc.removals == 0


def test_default_config_is_five_consecutive_failures_jittered_5s_to_300s() -> None:
    acc = build_accrual_factory(None, random.Random(0))()
    assert isinstance(acc.policy, ConsecutiveFailures)
    assert acc.policy.failures == 5
    assert isinstance(acc.backoff, JitteredBackoff)
    assert (acc.backoff.min_s, acc.backoff.max_s) == (5.0, 300.0)
    for _ in range(4):
        acc.record(False, 0.0)
    assert acc.state() == "alive"
    acc.record(False, 0.0)
    assert acc.state() == "dead"


def test_factory_makes_independent_accruals() -> None:
    factory = build_accrual_factory({"failures": 1}, random.Random(0))
    a, b = factory(), factory()
    a.record(False, 0.0)
    assert (a.state(), b.state()) == ("dead", "alive")


def test_constant_backoff_config() -> None:
    backoff = build_backoff({"kind": "constant", "ms": 2500}, random.Random(0))
    assert [backoff.delay_s(n) for n in range(3)] == [2.5, 2.5, 2.5]


def test_repr_shows_state() -> None:
    acc = _consecutive(failures=1, delay_s=10.0)
    assert repr(acc).startswith("<Accrual alive removals=0 revivals=0")
    acc.record(False, 0.0)
    assert "dead until=10.000s" in repr(acc)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"kind": "io.l5d.consecutiveFailure"}, "io.l5d.consecutiveFailure"),
        ({"failures": 5, "successRate": 0.9}, "successRate"),
        ({"kind": "io.l5d.successRate", "window": 5}, "window"),
        ({"failures": 0}, "failures"),
        ({"failures": 2.5}, "failures"),
        ({"failures": True}, "failures"),
        ({"kind": "io.l5d.successRate", "successRate": 1.5}, "successRate"),
        ({"kind": "io.l5d.successRate", "requests": "20"}, "requests"),
        ({"backoff": {"kind": "exponential"}}, "exponential"),
        ({"backoff": {"kind": "jittered", "minMs": 1, "maxMS": 2}}, "maxMS"),
        ({"backoff": {"kind": "jittered", "minMs": 10, "maxMs": 5}}, "maxMs"),
        ({"backoff": {"kind": "constant"}}, "ms"),
        ({"backoff": {"kind": "constant", "ms": -1}}, "ms"),
    ],
)
def test_config_errors_name_the_culprit(config: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        build_accrual_factory(config, random.Random(0))


def test_the_last_failure_and_its_time_are_remembered() -> None:
    acc = _consecutive(failures=3)
    assert acc.last_error is None
    acc.record(False, 1.0, "connection refused")
    acc.record(True, 2.0)
    acc.record(False, 3.0)  # no cause given: still named, never None once failed
    assert (acc.last_error, acc.last_error_at_s) == ("a failure", 3.0)
    acc.record(False, 4.0, "500 Internal Server Error from a classifier")
    assert (acc.last_error, acc.last_error_at_s) == (
        "500 Internal Server Error from a classifier",
        4.0,
    )


def test_each_state_change_is_logged_once_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="linker.policy.accrual")
    acc = _consecutive(failures=2, delay_s=10.0)
    acc.name = "10.0.0.1:80"
    for t in range(2):
        acc.record(False, float(t), "connection refused")
    for t in range(2, 9):  # dead: requests keep coming, nothing more is logged
        assert not acc.available(float(t))
    _probe(acc, 11.0, ok=False)  # dead -> probing -> dead
    _probe(acc, 21.0, ok=True)  # dead -> probing -> alive
    lines = [r.getMessage() for r in caplog.records if r.name == "linker.policy.accrual"]
    assert lines == [
        "endpoint 10.0.0.1:80: alive -> dead for 10.0 s by failure accrual "
        "(last error: connection refused)",
        "endpoint 10.0.0.1:80: dead -> probing (its backoff has elapsed)",
        "endpoint 10.0.0.1:80: probing -> dead for 10.0 s by failure accrual "
        "(last error: a failure)",
        "endpoint 10.0.0.1:80: dead -> probing (its backoff has elapsed)",
        "endpoint 10.0.0.1:80: probing -> alive (the probe succeeded)",
    ]
