"""Addresses: what a bound name resolves to (namerd's ``Addr``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "ADDR_NEG",
    "ADDR_PENDING",
    "Addr",
    "AddrBound",
    "AddrFailed",
    "AddrNeg",
    "AddrPending",
    "Address",
]


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
