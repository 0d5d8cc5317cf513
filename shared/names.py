"""Names after binding, and the system namer for ``/$/...`` paths.

A *bound* name is what a namer hands back: an ``id`` (the concrete name whose addresses can be
watched, e.g. ``/$/inet/127.0.0.1/8080`` or ``/#/io.l5d.fs/users``) and a ``residual`` path that
the namer did not consume (Linkerd forwards it as ``l5d-dst-residual``). Addresses are not part
of a bound name: resolving an id to addresses is I/O and belongs to namerd or the linker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .addr import ADDR_NEG, Addr, AddrFailed
from .errors import NamerFailure, UnknownNamer
from .nametree import EMPTY, FAIL, NEG, Leaf, NameTree
from .path import Path

__all__ = [
    "INET_SCHEMES",
    "LOCAL_HOST",
    "Bound",
    "Name",
    "inet_addr",
    "inet_address",
    "system_lookup",
]


@dataclass(frozen=True, slots=True)
class Bound:
    """A bound name. Two bound names are equal when their ids are (Finagle's rule).

    ``weight`` is the weight of the innermost union branch the name was reached through
    (``None`` outside any union); Finagle stores it in the address metadata as
    ``namer_nametree_weight``, and a load balancer multiplies endpoint weights by it.
    """

    id: Path
    residual: Path = field(default=Path(), compare=False)
    weight: float | None = field(default=None, compare=False)

    def show(self) -> str:
        """A bound name is shown by its id."""
        return self.id.show()


#: A name in a tree before or during binding: a path still to look up, or a bound name.
Name = Path | Bound

#: ``/$/<scheme>/...`` kinds served by the inet rule.
INET_SCHEMES = frozenset({b"inet", b"fixedinet"})
#: The host of ``/$/inet/<port>`` (no host given).
LOCAL_HOST = "127.0.0.1"

# Java's Integer.parseInt accepts any Unicode decimal digit; so does str-pattern \d.
_JAVA_INT = re.compile(r"[+-]?\d+\Z")
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


def _port(label: bytes) -> int | None:
    """The label as a Java ``int`` (what Finagle accepts as a port), or None."""
    try:
        text = label.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not _JAVA_INT.match(text):
        return None
    value = int(text)
    return value if _INT_MIN <= value <= _INT_MAX else None


def _check_port(port: int, path: Path) -> None:
    # Finagle would throw from InetSocketAddress; we say what is wrong instead.
    if not 0 <= port <= 65535:
        raise NamerFailure(f"port {port} out of range 0-65535 in {path.show()}", path.show())


def system_lookup(path: Path) -> NameTree[Name]:
    """The global namer: what ``/$/...`` paths mean, with no I/O.

    * ``/$/inet/<host>/<port>/rest`` and ``/$/fixedinet/...``: a bound name whose id is the
      consumed prefix and whose residual is ``rest``; ``/$/inet/<port>`` means a local port.
    * ``/$/fail/...`` is ``!``; ``/$/nil/...`` is ``$``.
    * any other ``/$/<kind>`` raises :class:`UnknownNamer` (this includes malformed inet paths
      such as ``/$/inet/host``, exactly as in Finagle).
    * every path not under ``/$/<kind>`` is ``~``.

    Resolving the host to addresses (and re-resolving it) is the caller's job.
    """
    labels = path.labels
    if len(labels) < 2 or labels[0] != b"$":
        return NEG
    kind = labels[1]
    if kind in INET_SCHEMES:
        if len(labels) >= 4 and (port := _port(labels[3])) is not None:
            _check_port(port, path)
            return Leaf(Bound(path.take(4), path.drop(4)))
        if len(labels) >= 3 and (port := _port(labels[2])) is not None:
            _check_port(port, path)
            return Leaf(Bound(path.take(3), path.drop(3)))
    elif kind == b"fail":
        return FAIL
    elif kind == b"nil":
        return EMPTY
    raise UnknownNamer(kind.decode("utf-8", "backslashreplace"), path.show())


def inet_address(id: Path) -> tuple[str, int, bool] | None:
    """``(host, port, fixed)`` of a bound inet id, or None if ``id`` is not one.

    The ids are what :func:`system_lookup` binds: ``/$/inet/<host>/<port>``,
    ``/$/inet/<port>`` (host :data:`LOCAL_HOST`) and the same under ``/$/fixedinet`` (resolved
    once, never refreshed). Turning the host into addresses is the caller's DNS.

    Raises:
        ValueError: an inet id whose host is not UTF-8 or whose port is not 0-65535 (the
            message names the id).
    """
    labels = id.labels
    if len(labels) not in (3, 4) or labels[0] != b"$" or labels[1] not in INET_SCHEMES:
        return None
    try:
        host = labels[2].decode("utf-8") if len(labels) == 4 else LOCAL_HOST
    except UnicodeDecodeError:
        raise ValueError(f"invalid host in {id.show()}: not UTF-8") from None
    port = labels[-1]
    if not (port.isdigit() and int(port) <= 65535):
        raise ValueError(f"invalid port in {id.show()}: expected 0-65535")
    return host, int(port), labels[1] == b"fixedinet"


def inet_addr(id: Path, resolve: Callable[[str, int, bool], Addr]) -> Addr:
    """The addresses of an inet id, asked of ``resolve(host, port, fixed)`` (the caller's DNS).

    ``neg`` if ``id`` is not an inet id; ``AddrFailed`` saying why if it is a malformed one.
    """
    try:
        target = inet_address(id)
    except ValueError as err:
        return AddrFailed(str(err))
    return ADDR_NEG if target is None else resolve(*target)
