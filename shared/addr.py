"""Addresses: what a bound name resolves to (namerd's ``Addr``), and endpoint weights.

Endpoint weight (Finagle's ``WeightedAddress``): an endpoint's share of its replica set, kept in
``Address.meta`` under :data:`WEIGHT_META_KEY`. One rule for every reader (the ``io.l5d.fs``
file parser, the registry, namerd's resolve, the linker's balancer input):

* a weight is a real number (not a bool), finite and ``>= 0``: :func:`parse_weight`;
* ``0`` is valid and means "no traffic while another endpoint has some" (Finagle's meaning);
* an endpoint without a weight has :data:`DEFAULT_ENDPOINT_WEIGHT` (1.0).

Where a weight is *written* (a service file line, a registration) a bad one is rejected with an
error; where it is *read* back from meta that came from elsewhere, :func:`endpoint_weight`
ignores a bad one and gives the default, so one odd endpoint cannot fail a whole replica set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

__all__ = [
    "ADDR_NEG",
    "ADDR_PENDING",
    "DEFAULT_ENDPOINT_WEIGHT",
    "WEIGHT_META_KEY",
    "Addr",
    "AddrBound",
    "AddrFailed",
    "AddrNeg",
    "AddrPending",
    "Address",
    "endpoint_weight",
    "parse_weight",
    "serving_weights",
]

#: Where an endpoint's weight goes in its Address meta (Finagle/Linkerd's key).
WEIGHT_META_KEY: Final = "endpoint_addr_weight"
#: The weight of an endpoint whose meta gives none (or an invalid one).
DEFAULT_ENDPOINT_WEIGHT: Final = 1.0


@dataclass(frozen=True, slots=True)
class Address:
    """One endpoint. ``meta`` is free-form JSON (``authority``, ``nodeName``, weights...)."""

    ip: str
    port: int
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class AddrBound:
    """The name has these endpoints (possibly none: a name that exists but is empty)."""

    addrs: frozenset[Address] = frozenset()
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def sorted_addrs(self) -> list[Address]:
        """Endpoints in a stable order (by ip, then port) for output and comparison."""
        return sorted(self.addrs, key=lambda a: (a.ip, a.port))


@dataclass(frozen=True, slots=True)
class AddrFailed:
    """Resolving the name failed; ``cause`` says why."""

    cause: str


class AddrNeg:
    """The name does not exist."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ADDR_NEG"


class AddrPending:
    """Not resolved yet (never sent on the wire by namerd: it waits instead)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ADDR_PENDING"


ADDR_NEG = AddrNeg()
ADDR_PENDING = AddrPending()

Addr: TypeAlias = AddrBound | AddrNeg | AddrPending | AddrFailed


def parse_weight(value: object) -> float:
    """``value`` as an endpoint weight: a finite real number ``>= 0``.

    Raises:
        ValueError: a bool, a non-number, NaN, an infinity or a negative number; the message
            says what a weight must be (callers prefix it with where the weight came from).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    try:
        weight = float(value)
    except OverflowError:  # an int too big for a float
        weight = math.inf
    if not math.isfinite(weight) or weight < 0:
        raise ValueError("must be a finite number >= 0")
    return weight


def serving_weights(weights: Sequence[float]) -> list[float]:
    """The weights a balancer serves with: zero-weight endpoints get no traffic while another
    endpoint has a positive weight; if every weight is zero, all share equally (weight 1.0).

    The result has one entry per input; an entry of ``0.0`` means "leave this endpoint out".
    """
    if any(w > 0 for w in weights):
        return [float(w) for w in weights]
    return [DEFAULT_ENDPOINT_WEIGHT] * len(weights)


def endpoint_weight(meta: Mapping[str, Any]) -> float:
    """The weight in an Address ``meta``: :data:`DEFAULT_ENDPOINT_WEIGHT` if absent or invalid."""
    value = meta.get(WEIGHT_META_KEY)
    if value is None:
        return DEFAULT_ENDPOINT_WEIGHT
    try:
        return parse_weight(value)
    except ValueError:
        return DEFAULT_ENDPOINT_WEIGHT
