"""The one endpoint-weight rule (``shared.addr``): what is valid, what readers do otherwise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.addr import (
    DEFAULT_ENDPOINT_WEIGHT,
    WEIGHT_META_KEY,
    endpoint_weight,
    parse_weight,
    serving_weights,
)


@pytest.mark.parametrize("value", [0, 0.0, 0.25, 1, 2.5, 1e6])
def test_finite_non_negative_numbers_are_weights(value: float) -> None:
    assert parse_weight(value) == float(value)
    assert isinstance(parse_weight(value), float)
    assert endpoint_weight({WEIGHT_META_KEY: value}) == float(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-1, "finite number >= 0"),
        (-0.001, "finite number >= 0"),
        (math.nan, "finite number >= 0"),
        (math.inf, "finite number >= 0"),
        (True, "must be a number"),
        ("2", "must be a number"),
        (None, "must be a number"),
        ([1], "must be a number"),
    ],
)
def test_everything_else_is_rejected_on_write_and_ignored_on_read(value: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_weight(value)
    assert endpoint_weight({WEIGHT_META_KEY: value}) == DEFAULT_ENDPOINT_WEIGHT


def test_no_weight_is_the_default() -> None:
    assert endpoint_weight({}) == DEFAULT_ENDPOINT_WEIGHT == 1.0
    assert endpoint_weight({"zone": "a"}) == 1.0


@given(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=3)
)
def test_a_reader_always_gets_a_usable_weight(value: object) -> None:
    weight = endpoint_weight({WEIGHT_META_KEY: value})
    assert math.isfinite(weight)
    assert weight >= 0


def test_zero_weights_serve_only_while_another_endpoint_has_weight() -> None:
    assert serving_weights([0.0, 2.0, 0.0]) == [0.0, 2.0, 0.0]
    assert serving_weights([0.0, 0.0]) == [DEFAULT_ENDPOINT_WEIGHT, DEFAULT_ENDPOINT_WEIGHT]
    assert serving_weights([]) == []


@given(st.lists(st.floats(min_value=0.0, max_value=1e9)))
def test_serving_weights_always_leave_something_to_serve(weights: list[float]) -> None:
    served = serving_weights(weights)
    if any(w > 0 for w in weights):
        assert served == weights
    else:
        assert served == [DEFAULT_ENDPOINT_WEIGHT] * len(weights)
