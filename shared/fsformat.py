"""The ``io.l5d.fs`` service file format: one file per service, one endpoint per line.

    # comment
    10.0.0.1 8080
    10.0.0.2 8080 * 0.5          # weight: Finagle's endpoint_addr_weight
    users-1.internal 8080        # a host name, resolved by the namer

Pure text parsing, shared by namerd's asyncio namer and the linker's trio one (each does its
own file watching and DNS). Errors name the file and the line.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["WEIGHT_META_KEY", "FsEndpoint", "FsFileError", "parse_endpoints", "parse_ip"]

#: Where an endpoint's weight goes in its Address meta (Finagle/Linkerd's key).
WEIGHT_META_KEY: Final = "endpoint_addr_weight"


class FsFileError(ValueError):
    """A service file does not parse; ``str()`` is ``<file>:<line>: <problem>``."""


def parse_ip(host: str) -> str | None:
    """The canonical text of ``host`` if it is an IPv4/IPv6 literal (``::1``), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FsEndpoint:
    """One endpoint line: ``host port [* weight]``. ``ip`` is set when ``host`` is an IP."""

    line: int
    host: str
    port: int
    weight: float | None = None

    @property
    def ip(self) -> str | None:
        """The canonical IP text if ``host`` is an IP literal, else None (a name to resolve)."""
        return parse_ip(self.host)

    @property
    def meta(self) -> dict[str, Any]:
        """The Address meta: the weight under Linkerd's key, when the line gives one."""
        return {} if self.weight is None else {WEIGHT_META_KEY: self.weight}


def parse_endpoints(text: str, source: str) -> list[FsEndpoint]:
    """Parse a service file.

    Args:
        text: the file content.
        source: how to name the file in errors (its path).

    Raises:
        FsFileError: on the first bad line, naming ``source`` and the 1-based line number.
    """
    endpoints: list[FsEndpoint] = []
    first_line: dict[tuple[str, int], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        endpoint = _parse_line(line, number, source)
        key = (endpoint.ip or endpoint.host.lower(), endpoint.port)
        if key in first_line:
            raise FsFileError(
                f"{source}:{number}: duplicate endpoint {endpoint.host} {endpoint.port} "
                f"(first on line {first_line[key]})"
            )
        first_line[key] = number
        endpoints.append(endpoint)
    return endpoints


def _parse_line(line: str, number: int, source: str) -> FsEndpoint:
    def bad(problem: str) -> FsFileError:
        return FsFileError(f"{source}:{number}: {problem} in {line!r}")

    fields = line.split()
    if len(fields) == 2:
        host, port_text, weight = fields[0], fields[1], None
    elif len(fields) == 4 and fields[2] == "*":
        host, port_text = fields[0], fields[1]
        try:
            weight = float(fields[3])
        except ValueError:
            raise bad(f"weight {fields[3]!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise bad(f"weight {fields[3]!r} must be a finite number >= 0")
    else:
        raise bad("expected 'host port' or 'host port * weight'")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise bad(f"port {port_text!r} must be a number 0-65535")
    if parse_ip(host) is None and not _is_host_name(host):
        raise bad(f"host {host!r} is neither an IP address nor a host name")
    return FsEndpoint(number, host, int(port_text), weight)


def _is_host_name(host: str) -> bool:
    # Letters, digits, '-', '_' and '.', as DNS names (and /etc/hosts names) use; the
    # resolver reports anything subtler, such as an empty label.
    return host.isascii() and all(c.isalnum() or c in "-_." for c in host)
