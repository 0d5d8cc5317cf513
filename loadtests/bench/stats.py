"""Pure helpers of the benchmark: parsing wrk's output, percentiles, medians and ratios.

No I/O here, so every number the report shows can be checked by a unit test.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "LoadResult",
    "duration_ms",
    "median_or_nan",
    "parse_wrk",
    "percentile",
    "ratio",
]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class LoadResult:
    """One measured run: throughput and the latency percentiles the tool reported (ms)."""

    requests: int
    seconds: float
    rps: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # "p50", "p90", "p99", ...
    errors: int = 0  # socket errors, timeouts and non-2xx/3xx answers
    tool: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "rps": round(self.rps, 1),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_ms.items()},
            "errors": self.errors,
            "tool": self.tool,
        }


def duration_ms(text: str) -> float:
    """``"334.00us"`` / ``"1.20ms"`` / ``"2.00s"`` in milliseconds.

    Raises:
        ValueError: not a wrk duration.
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)(us|ms|s|m)\s*", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read wrk's report (run with ``--latency``).

    Raises:
        ValueError: the output has no ``Requests/sec`` line (wrk failed; the text says why).
    """
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m),", output, re.M)
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.M)
    if not m or not rps:
        raise ValueError(f"wrk output without a result:\n{output}")
    requests = int(m.group(1))
    seconds = duration_ms(m.group(2) + m.group(3)) / 1000
    latency: dict[str, float] = {}
    for pct, value in re.findall(r"^\s+(\d+)%\s+([0-9.]+(?:us|ms|s|m))\s*$", output, re.M):
        latency[f"p{pct}"] = duration_ms(value)
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return LoadResult(requests, seconds, float(rps.group(1)), latency, errors, "wrk")


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile by the nearest-rank method (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median_or_nan(values: Iterable[float]) -> float:
    """The median of the finite values (NaN if there are none)."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when either is missing or ``b`` is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b
