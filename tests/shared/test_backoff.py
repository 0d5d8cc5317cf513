"""shared.backoff: the one reconnect rule (linker -> namerd, namerd -> Redis, namerd's mirrors)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.backoff import backoff_s


def test_schedule_first_then_doubling_to_the_cap() -> None:
    delays = [backoff_s(n, first_s=0.1, base_s=0.2, max_s=1.0, jitter=1.0) for n in range(7)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_no_overflow_at_absurd_failure_counts() -> None:
    assert backoff_s(10**9, first_s=0.1, base_s=0.2, max_s=3.0, jitter=1.0) == 3.0


@given(
    failures=st.integers(min_value=-5, max_value=10_000),
    first_s=st.floats(min_value=0.0, max_value=100.0),
    base_s=st.floats(min_value=0.0, max_value=100.0),
    max_s=st.floats(min_value=0.0, max_value=1000.0),
    jitter=st.floats(min_value=-10.0, max_value=10.0),
)
def test_delay_is_in_the_upper_half_of_a_capped_nominal(
    failures: int, first_s: float, base_s: float, max_s: float, jitter: float
) -> None:
    delay = backoff_s(failures, first_s=first_s, base_s=base_s, max_s=max_s, jitter=jitter)
    if failures < 1:
        assert delay == 0.0
        return
    top = backoff_s(failures, first_s=first_s, base_s=base_s, max_s=max_s, jitter=1.0)
    assert top <= max_s
    assert top / 2 <= delay <= top
