"""Counters and gauges of one worker, and their merge across gunicorn workers.

Each worker keeps its metrics in memory and writes a snapshot to ``<run_dir>/metrics/<pid>.json``
every ``SNAPSHOT_INTERVAL_S`` (and when the admin page asks); the admin endpoint merges the
snapshots of live workers, so ``/admin/metrics.json`` describes the whole namerd process tree no
matter which worker answers. Plain files: no Redis dependency, so metrics work during a Redis
outage, which is exactly when you want them. The snapshot files and the merge rules are
``shared.metrics``', the same as the linker's; the names, the JSON shape of
``/admin/metrics.json`` (histograms as bare bucket counts, their sums as ``<name>/sum_ms``
counters) and the Prometheus naming (``namerd_`` + labels for ``endpoint``, ``status`` and
``namespace``) are namerd's own.

Unlike the linker's master, gunicorn's arbiter does not fold an exited worker's counts into a
retired total, so namerd's merged counters restart from the live workers' when one is replaced.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path as FsPath
from typing import Any

from shared.metrics import (
    live_snapshots,
    merge,
    prom_histogram_lines,
    prom_labels,
    prom_name_part,
    prom_value,
    write_snapshot_file,
)

__all__ = ["SNAPSHOT_INTERVAL_S", "Metrics", "merge_snapshots", "prometheus_text"]

#: How often a worker writes its metrics snapshot.
SNAPSHOT_INTERVAL_S = 1.0

# Histogram bucket upper bounds for request and Redis latencies, in milliseconds.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """In-memory metrics of one worker (single-threaded asyncio, so no locks)."""

    def __init__(self) -> None:
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, list[int]] = {}

    def inc(self, name: str, amount: float = 1.0) -> None:
        """Add to a counter. Names use Linkerd's slash style: ``api/bind/requests``."""
        self.counters[name] += amount

    def set(self, name: str, value: float) -> None:
        """Set a gauge."""
        self.gauges[name] = float(value)

    def add(self, name: str, delta: float) -> None:
        """Move a gauge by ``delta``."""
        self.gauges[name] = self.gauges.get(name, 0.0) + delta

    def observe_ms(self, name: str, value_ms: float) -> None:
        """Record a latency in a histogram (buckets + count + sum)."""
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            self.counters.setdefault(f"{name}/sum_ms", 0.0)
        idx = next(
            (i for i, b in enumerate(LATENCY_BUCKETS_MS) if value_ms <= b), len(LATENCY_BUCKETS_MS)
        )
        h[idx] += 1
        self.counters[f"{name}/sum_ms"] += value_ms

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of everything, in ``shared.metrics``' snapshot format."""
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "histograms": {
                k: {
                    "counts": list(v),
                    "count": sum(v),
                    "sum": self.counters.get(f"{k}/sum_ms", 0.0),
                    "min": None,
                    "max": None,
                }
                for k, v in self.histograms.items()
            },
        }

    def write_snapshot(self, run_dir: str | None) -> None:
        """Write the snapshot atomically where the admin endpoint will find it."""
        if not run_dir:
            return
        folder = FsPath(run_dir) / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        write_snapshot_file(folder, self.snapshot())


def merge_snapshots(run_dir: str | None, own: Metrics) -> dict[str, Any]:
    """Sum the snapshots of all live workers (this worker's from memory, not disk).

    Returns:
        ``{"workers": n, "counters": {...}, "gauges": {...}, "histograms": {name: [counts]}}``.
    """
    others = live_snapshots(FsPath(run_dir) / "metrics", skip_pid=os.getpid()) if run_dir else []
    merged = merge([own.snapshot(), *others])
    return {
        "workers": merged["workers"],
        "counters": merged["counters"],
        "gauges": merged["gauges"],
        "histograms": {k: h["counts"] for k, h in merged["histograms"].items()},
    }


def _prom_name(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Split ``api/bind/status/200`` style names into a metric name and labels."""
    parts = name.split("/")
    labels: list[tuple[str, str]] = []
    base = []
    i = 0
    while i < len(parts):
        if parts[i] in ("endpoint", "status", "namespace") and i + 1 < len(parts):
            labels.append((parts[i], parts[i + 1]))
            i += 2
        else:
            base.append(parts[i])
            i += 1
    return "namerd_" + "_".join(prom_name_part(p) for p in base), tuple(labels)


def prometheus_text(merged: dict[str, Any]) -> str:
    """Render merged metrics in the Prometheus text exposition format."""
    lines: list[str] = [f"namerd_workers {merged['workers']}"]
    for table in ("counters", "gauges"):
        for k, v in sorted(merged[table].items()):
            metric, labels = _prom_name(k)
            lines.append(f"{metric}{prom_labels(labels)} {prom_value(v)}")
    for k, buckets in sorted(merged["histograms"].items()):
        metric, labels = _prom_name(k)
        lines.extend(prom_histogram_lines(metric, labels, LATENCY_BUCKETS_MS, buckets))
    return "\n".join(lines) + "\n"
