"""l5d-ctx-deadline: wire form, round trip, malformed values, and the effective timeout."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linker.routing.deadline import (
    DEADLINE_HEADER,
    effective_timeout_s,
    format_deadline,
    parse_deadline,
    parse_deadline_headers,
)

NOW_S = 1_700_000_000.0  # 2023-11-14, a realistic wall clock
NOW_NS = 1_700_000_000_000_000_000


def test_wire_form_is_two_epoch_nanosecond_integers() -> None:
    assert format_deadline(NOW_S, 0.25) == b"1700000000000000000 1700000000250000000"
    assert format_deadline(NOW_S, 0.0) == b"1700000000000000000 1700000000000000000"


def test_parse_gives_seconds_left() -> None:
    value = b"%d %d" % (NOW_NS - 10**9, NOW_NS + 1_500_000_000)
    assert parse_deadline(value, NOW_S) == pytest.approx(1.5, abs=1e-6)
    assert parse_deadline(bytearray(value), NOW_S) == pytest.approx(1.5, abs=1e-6)
    assert parse_deadline(b"  " + value + b"\t", NOW_S) == pytest.approx(1.5, abs=1e-6)


def test_a_passed_deadline_parses_to_a_negative_time_left() -> None:
    value = b"%d %d" % (NOW_NS - 3 * 10**9, NOW_NS - 2 * 10**9)
    assert parse_deadline(value, NOW_S) == pytest.approx(-2.0, abs=1e-6)


def test_a_negative_remaining_is_written_as_expired() -> None:
    value = format_deadline(NOW_S, -5.0)
    assert value == b"1700000000000000000 1700000000000000000"
    assert parse_deadline(value, NOW_S + 1) == pytest.approx(-1.0, abs=1e-6)


@given(
    now_s=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    remaining_s=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_round_trip(now_s: float, remaining_s: float) -> None:
    value = format_deadline(now_s, remaining_s)
    left = parse_deadline(value, now_s)
    assert left is not None
    # now_s has ~0.5 us of float precision at 4e9 s; the wire carries nanoseconds.
    assert left == pytest.approx(remaining_s, abs=2e-6)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b" ",
        b"1700000000000000000",  # one field
        b"1 2 3",  # three fields
        b"1  2",  # two spaces: an empty field
        b"1,2",
        b"-1 2",
        b"1 -2",
        b"+1 2",
        b"1 +2",
        b"1_000 2",
        b"1.5 2",
        b"1 2.5",
        b"0x10 20",
        b"abc def",
        b"1 2e9",
        b"\xd9\xa1 2",  # an Arabic-Indic digit: int() would take it, the wire does not
        "١ 2".encode(),
        b"1 99999999999999999999",  # 20 digits
        b"1 9223372036854775808",  # 2**63: beyond a JVM long
        b"1\x002",
    ],
)
def test_malformed_values_are_none_never_an_exception(value: bytes) -> None:
    assert parse_deadline(value, NOW_S) is None


def test_largest_jvm_long_is_accepted() -> None:
    assert parse_deadline(b"1 9223372036854775807", NOW_S) is not None


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf])
def test_non_finite_now_is_none(now: float) -> None:
    assert parse_deadline(b"1 2", now) is None


def test_non_bytes_is_none() -> None:
    assert parse_deadline("1 2", NOW_S) is None  # type: ignore[arg-type]


@given(st.binary(max_size=48))
def test_any_bytes_parse_or_are_none(value: bytes) -> None:
    left = parse_deadline(value, NOW_S)
    assert left is None or math.isfinite(left)


def test_headers_take_the_strictest_and_skip_malformed() -> None:
    headers = [
        (b"host", b"users"),
        (DEADLINE_HEADER, b"%d %d" % (NOW_NS, NOW_NS + 5 * 10**9)),
        (b"L5d-Ctx-Deadline", b"garbage"),
        (b"l5d-ctx-deadline", b"%d %d" % (NOW_NS, NOW_NS + 2 * 10**9)),
        (b"l5d-ctx-deadline", b"%d %d" % (NOW_NS, NOW_NS + 9 * 10**9)),
    ]
    assert parse_deadline_headers(headers, NOW_S) == pytest.approx(2.0, abs=1e-6)
    assert parse_deadline_headers([(b"l5d-ctx-deadline", b"x")], NOW_S) is None
    assert parse_deadline_headers([], NOW_S) is None


@pytest.mark.parametrize(
    ("now", "remaining"), [(math.nan, 1.0), (NOW_S, math.inf), (-1.0, 1.0), (1e20, 0.0)]
)
def test_format_refuses_unrepresentable_times(now: float, remaining: float) -> None:
    with pytest.raises(ValueError, match=r"finite|out of range"):
        format_deadline(now, remaining)


@pytest.mark.parametrize(
    ("total", "incoming", "expected"),
    [
        (None, None, None),
        (30.0, None, 30.0),
        (None, 2.5, 2.5),
        (30.0, 2.5, 2.5),
        (1.0, 2.5, 1.0),
        (30.0, 0.0, 0.0),
        (30.0, -4.0, 0.0),  # already expired: fail fast
        (None, -0.001, 0.0),
        (0.0, 5.0, 0.0),
        (30.0, math.nan, 30.0),  # a NaN deadline is no deadline
        (None, math.nan, None),
    ],
)
def test_effective_timeout_is_the_stricter_never_negative(
    total: float | None, incoming: float | None, expected: float | None
) -> None:
    assert effective_timeout_s(total, incoming) == expected


@pytest.mark.parametrize("total", [-1.0, math.nan])
def test_effective_timeout_refuses_a_bad_total(total: float) -> None:
    with pytest.raises(ValueError, match="total_timeout_s"):
        effective_timeout_s(total, 1.0)
