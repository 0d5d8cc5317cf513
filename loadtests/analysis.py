"""What a scenario found: pure functions over the per-request CSV and sampled linker metrics.

Nothing here does I/O except :func:`read_requests` and :func:`write_csv`, so every finding is
a function of the recorded data and can be recomputed from a run's files later.

Conventions: wall-clock seconds (``time.time()``) throughout, since the requests are recorded
by another process (locust); durations relative to an action are in milliseconds and named
``*_ms``; a request belongs to the window its *start* falls in.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Request",
    "Sample",
    "backend_failure_findings",
    "by_service",
    "client_pattern",
    "flip_findings",
    "latency_summary",
    "metric_sum",
    "namerd_outage_findings",
    "overall",
    "percentile",
    "read_requests",
    "timeline",
    "top_errors",
    "write_csv",
]

#: A linker metrics sample: (wall time, flat metrics.json).
Sample = tuple[float, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the locustfile recorded it."""

    start: float
    latency_ms: float
    method: str
    service: str
    status: int
    served_by: str
    ok: bool
    error: str

    @property
    def end(self) -> float:
        """When the response (or the error) arrived."""
        return self.start + self.latency_ms / 1000


def read_requests(paths: Iterable[Path]) -> list[Request]:
    """Every request in the given per-request CSVs, ordered by start time."""
    out: list[Request] = []
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    out.append(
                        Request(
                            start=float(row["start_time"]),
                            latency_ms=float(row["latency_ms"]),
                            method=row["method"],
                            service=row["service"],
                            status=int(row["status"]),
                            served_by=row["served_by"],
                            ok=row["ok"] == "1",
                            error=row["error"],
                        )
                    )
                except (KeyError, ValueError, TypeError):
                    continue  # a row cut short by a killed locust
    out.sort(key=lambda r: r.start)
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write ``rows`` (dicts) with ``columns`` in that order; missing values are empty."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow(row)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def latency_summary(reqs: Sequence[Request]) -> dict[str, Any]:
    """Count, failures and latency percentiles (ms) of ``reqs``."""
    lat = sorted(r.latency_ms for r in reqs)
    return {
        "requests": len(reqs),
        "failures": sum(not r.ok for r in reqs),
        "p50_ms": _r(percentile(lat, 50), 2),
        "p95_ms": _r(percentile(lat, 95), 2),
        "p99_ms": _r(percentile(lat, 99), 2),
        "max_ms": _r(lat[-1] if lat else None, 2),
    }


def overall(reqs: Sequence[Request]) -> dict[str, Any]:
    """The headline numbers: rps over the span of the traffic, failures, percentiles."""
    out = latency_summary(reqs)
    span = (max(r.end for r in reqs) - reqs[0].start) if reqs else 0.0
    out["span_s"] = round(span, 3)
    out["rps"] = round(len(reqs) / span, 1) if span > 0 else 0.0
    out["failure_rate"] = round(out["failures"] / len(reqs), 5) if reqs else 0.0
    out["by_method"] = dict(Counter(r.method for r in reqs))
    return out


def by_service(reqs: Sequence[Request]) -> dict[str, dict[str, Any]]:
    """:func:`latency_summary` per service, plus which backends answered it."""
    out: dict[str, dict[str, Any]] = {}
    for svc in sorted({r.service for r in reqs}):
        mine = [r for r in reqs if r.service == svc]
        out[svc] = latency_summary(mine)
        out[svc]["served_by"] = dict(sorted(Counter(r.served_by for r in mine if r.ok).items()))
    return out


def top_errors(reqs: Iterable[Request], n: int = 10) -> dict[str, int]:
    """The ``n`` most frequent failure messages with their counts."""
    return dict(Counter(r.error or f"HTTP {r.status}" for r in reqs if not r.ok).most_common(n))


def timeline(
    reqs: Sequence[Request],
    t0: float,
    end: float,
    extras: Mapping[str, Callable[[float, float], object]] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per-second rows from ``t0`` to ``end``: requests, failures, latency, who served them.

    ``extras`` adds columns: name -> f(second_start, second_end). Returns (rows, columns).
    """
    labels = sorted({r.served_by for r in reqs if r.served_by})
    n = max(1, math.ceil(end - t0))
    buckets: list[list[Request]] = [[] for _ in range(n)]
    for r in reqs:
        i = int(r.start - t0)
        if 0 <= i < n:
            buckets[i].append(r)
    rows: list[dict[str, Any]] = []
    for i, b in enumerate(buckets):
        lat = sorted(r.latency_ms for r in b)
        served = Counter(r.served_by for r in b if r.ok)
        row: dict[str, Any] = {
            "second": i,
            "wall_time": round(t0 + i, 3),
            "requests": len(b),
            "failures": sum(not r.ok for r in b),
            "p50_ms": _r(percentile(lat, 50), 2),
            "p99_ms": _r(percentile(lat, 99), 2),
        }
        for label in labels:
            row[f"served:{label}"] = served.get(label, 0)
        for name, fn in (extras or {}).items():
            row[name] = fn(t0 + i, t0 + i + 1)
        rows.append(row)
    columns = [
        "second",
        "wall_time",
        "requests",
        "failures",
        "p50_ms",
        "p99_ms",
        *(f"served:{label}" for label in labels),
        *(extras or {}),
    ]
    return rows, columns


def _ms(t: float | None, ref: float) -> float | None:
    return None if t is None else round((t - ref) * 1000, 1)


def _failures_in(reqs: Iterable[Request], a: float, b: float) -> int:
    return sum(1 for r in reqs if not r.ok and a <= r.start < b)


# -- scenario findings ----------------------------------------------------------------------------


def flip_findings(
    reqs: Sequence[Request],
    *,
    service: str,
    v1: str,
    v2: str,
    put_at: float,
    run_end: float,
    window_s: float = 5.0,
    final_s: float = 1.0,
) -> dict[str, Any]:
    """When traffic to ``service`` moved from ``v1`` to ``v2`` after the dtab PUT at ``put_at``.

    A response counts as a version when its served-by value starts with that label. The key
    figure is ``last_v1_started_ms``: the last request that *started* after the PUT and was
    still answered by v1, i.e. how long the linker kept routing by the old dtab.
    """
    mine = [r for r in reqs if r.service == service]
    is_v1 = [r for r in mine if r.ok and r.served_by.startswith(v1)]
    is_v2 = [r for r in mine if r.ok and r.served_by.startswith(v2)]
    v1_after = [r for r in is_v1 if r.start >= put_at]
    final = [r for r in mine if r.start >= run_end - final_s]
    final_v2 = sum(1 for r in final if r.ok and r.served_by.startswith(v2))
    return {
        "service": service,
        "v1": v1,
        "v2": v2,
        "v2_before_put": sum(1 for r in is_v2 if r.end < put_at),
        "first_v2_seen_ms": _ms(
            min((r.end for r in is_v2 if r.end >= put_at), default=None), put_at
        ),
        "last_v1_seen_ms": _ms(max((r.end for r in is_v1), default=None), put_at),
        "last_v1_started_ms": _ms(max((r.start for r in v1_after), default=None), put_at),
        "v1_started_after_put": len(v1_after),
        "v2_started_after_put": sum(1 for r in is_v2 if r.start >= put_at),
        "other_answers": sum(1 for r in mine if r.ok and not r.served_by.startswith((v1, v2))),
        "service_failures": sum(not r.ok for r in mine),
        "failures_around_flip": _failures_in(reqs, put_at - 1.0, put_at + window_s),
        "flip_window_s": [-1.0, window_s],
        "final_window_s": final_s,
        "final_requests": len(final),
        "final_v2_share": round(final_v2 / len(final), 4) if final else None,
        "ended_on_v2": bool(final) and final_v2 == len(final),
    }


def metric_sum(sample: Mapping[str, float], pattern: re.Pattern[str]) -> float:
    """The sum of every metric in ``sample`` whose name matches ``pattern`` (all workers,
    all matching clients)."""
    return sum(v for k, v in sample.items() if pattern.fullmatch(k))


def client_pattern(service: str, stat: str) -> re.Pattern[str]:
    """Metric names of ``stat`` for every bound client whose id ends with ``/<service>``
    (``rt/outgoing/client/#/io.l5d.fs/alpha/loadbalancer/available`` for ``alpha``)."""
    return re.compile(rf"rt/[^/]+/client/(?:.*/)?{re.escape(service)}/{re.escape(stat)}")


def backend_failure_findings(
    reqs: Sequence[Request],
    samples: Sequence[Sample],
    *,
    service: str,
    victim: str | None,
    fail_at: float,
    restore_at: float | None,
    run_end: float,
) -> dict[str, Any]:
    """Failures around a replica's death, and how fast the linker stopped using it.

    Client side (always): failures per phase, which replicas answered per phase, when the
    victim answered last and (after a restore) first again. Linker side (when ``samples`` of
    the admin metrics exist): when failure accrual marked the victim dead in the first and in
    every worker, and how many retries that cost. Metric times are upper bounds: workers
    publish their metrics once a second. ``restore_at`` is when the restore *began* (the
    replica may serve before the restore action returns); None if it was not restored.
    """
    mine = [r for r in reqs if r.service == service]
    until = restore_at if restore_at is not None else run_end
    phases = {
        "before": (float("-inf"), fail_at),
        "down": (fail_at, until),
        "after_restore": (until, float("inf")),
    }
    replicas_before = {r.served_by for r in mine if r.ok and r.start < fail_at and r.served_by}
    per_phase: dict[str, Any] = {}
    for phase, (a, b) in phases.items():
        rs = [r for r in mine if a <= r.start < b]
        per_phase[phase] = {
            "requests": len(rs),
            "failures": sum(not r.ok for r in rs),
            "all_failures": _failures_in(reqs, a, b),
            "served_by": dict(sorted(Counter(r.served_by for r in rs if r.ok).items())),
        }
    failed = [r for r in mine if not r.ok and r.start >= fail_at - 1.0]
    out: dict[str, Any] = {
        "service": service,
        "victim": victim,
        "replicas_seen_before": sorted(replicas_before),
        "phases": per_phase,
        "first_failure_ms": _ms(min((r.start for r in failed), default=None), fail_at),
        "last_failure_ms": _ms(max((r.start for r in failed), default=None), fail_at),
        "errors": top_errors(r for r in mine if r.start >= fail_at),
    }
    if victim:
        theirs = [r for r in mine if r.ok and r.served_by.startswith(victim)]
        out["victim_last_seen_ms"] = _ms(
            max((r.end for r in theirs if r.start < until), default=None), fail_at
        )
        out["victim_answers_started_while_down"] = sum(
            1 for r in theirs if fail_at <= r.start < until
        )
        if restore_at is not None:
            out["victim_back_after_restore_ms"] = _ms(
                min((r.end for r in theirs if r.start >= restore_at), default=None), restore_at
            )
    out["linker"] = _accrual_findings(
        samples, service, len(replicas_before), fail_at, restore_at, run_end
    )
    return out


def _accrual_findings(
    samples: Sequence[Sample],
    service: str,
    replicas: int,
    fail_at: float,
    restore_at: float | None,
    run_end: float,
) -> dict[str, Any] | None:
    if not samples:
        return None
    pats = {
        s: client_pattern(service, s)
        for s in (
            "loadbalancer/size",
            "loadbalancer/available",
            "loadbalancer/removals",
            "loadbalancer/revivals",
            "retries",
        )
    }
    series = [(t, {s: metric_sum(m, p) for s, p in pats.items()}) for t, m in samples]
    if not any(v["loadbalancer/size"] for _, v in series):
        return {"note": f"no linker client metrics end with /{service}"}
    before = [v for t, v in series if t < fail_at]
    base = before[-1] if before else series[0][1]
    until = restore_at if restore_at is not None else run_end
    down = [(t, v) for t, v in series if fail_at <= t < until]
    first_removal = next(
        (t for t, v in down if v["loadbalancer/removals"] > base["loadbalancer/removals"]), None
    )
    everywhere = None
    if replicas >= 2:
        # Each worker balances on its own: the victim is out everywhere when the merged
        # `available` lost one replica's share of the merged `size`.
        everywhere = next(
            (
                t
                for t, v in down
                if v["loadbalancer/size"]
                and v["loadbalancer/available"]
                <= v["loadbalancer/size"] * (replicas - 1) / replicas + 1e-9
            ),
            None,
        )
    at_everywhere = next((v for t, v in down if t == everywhere), None)
    last_down = down[-1][1] if down else base
    out: dict[str, Any] = {
        "size_before": base["loadbalancer/size"],
        "available_before": base["loadbalancer/available"],
        "ejected_first_worker_ms": _ms(first_removal, fail_at),
        "ejected_every_worker_ms": _ms(everywhere, fail_at),
        "retries_until_ejected": (
            None if at_everywhere is None else at_everywhere["retries"] - base["retries"]
        ),
        "retries_while_down": last_down["retries"] - base["retries"],
        "removals_while_down": last_down["loadbalancer/removals"] - base["loadbalancer/removals"],
        "min_available_while_down": min(
            (v["loadbalancer/available"] for _, v in down), default=None
        ),
        "resolution_note": "metric times are upper bounds (workers publish metrics every ~1 s)",
    }
    if restore_at is not None:
        after = [(t, v) for t, v in series if t >= restore_at]
        out["revived_ms"] = _ms(
            next(
                (
                    t
                    for t, v in after
                    if v["loadbalancer/revivals"] > last_down["loadbalancer/revivals"]
                ),
                None,
            ),
            restore_at,
        )
        out["all_available_again_ms"] = _ms(
            next(
                (
                    t
                    for t, v in after
                    if v["loadbalancer/size"]
                    and v["loadbalancer/available"] >= v["loadbalancer/size"]
                ),
                None,
            ),
            restore_at,
        )
    return out


WATCHES_CONNECTED = re.compile(r"rt/[^/]+/interpreter/namerd/watches/connected")
RECONNECTS = re.compile(r"rt/[^/]+/interpreter/namerd/reconnects")


def namerd_outage_findings(
    reqs: Sequence[Request],
    samples: Sequence[Sample],
    *,
    down_at: float,
    namerd_up_at: float | None,
    run_end: float,
) -> dict[str, Any]:
    """Failures while namerd was away (from the stop until it answered again) and after, and
    (with linker metrics) when the linker's watches dropped and were all connected again."""
    up = namerd_up_at if namerd_up_at is not None else run_end
    out: dict[str, Any] = {
        "failures_before": _failures_in(reqs, float("-inf"), down_at),
        "failures_while_down": _failures_in(reqs, down_at, up),
        "requests_while_down": sum(1 for r in reqs if down_at <= r.start < up),
        "failures_after": _failures_in(reqs, up, float("inf")),
        "errors_while_down": top_errors(r for r in reqs if down_at <= r.start < up),
        "errors_after": top_errors(r for r in reqs if r.start >= up),
    }
    if samples:
        series = [
            (t, metric_sum(m, WATCHES_CONNECTED), metric_sum(m, RECONNECTS)) for t, m in samples
        ]
        before = [s for s in series if s[0] < down_at]
        base = before[-1] if before else series[0]
        lost = next((t for t, c, _ in series if t >= down_at and c < base[1]), None)
        back = None
        if namerd_up_at is not None:
            back = next((t for t, c, _ in series if t >= namerd_up_at and c >= base[1]), None)
        out["linker"] = {
            "watches_connected_before": base[1],
            "watches_lost_ms": _ms(lost, down_at),
            "watches_reconnected_ms": _ms(back, down_at),
            "watches_reconnected_after_namerd_up_ms": (
                None if back is None or namerd_up_at is None else _ms(back, namerd_up_at)
            ),
            "reconnects": series[-1][2] - base[2],
            "resolution_note": "metric times are upper bounds (workers publish metrics every ~1 s)",
        }
    return out
