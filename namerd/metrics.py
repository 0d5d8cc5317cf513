"""Counters and gauges of one worker, and their merge across gunicorn workers.

Each worker keeps its metrics in memory and writes a snapshot to ``<run_dir>/metrics/<pid>.json``
every ``SNAPSHOT_INTERVAL_S`` (and when the admin page asks); the admin endpoint merges the
snapshots of live workers, so ``/admin/metrics.json`` describes the whole namerd process tree no
matter which worker answers. Plain files: no Redis dependency, so metrics work during a Redis
outage, which is exactly when you want them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import defaultdict
from pathlib import Path as FsPath
from typing import Any

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
        self.gauges[name] = value

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
        """A JSON-able copy of everything."""
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "counters": dict(self.counters),
            "gauges": dict(self.gauges),
            "histograms": {k: list(v) for k, v in self.histograms.items()},
        }

    def write_snapshot(self, run_dir: str | None) -> None:
        """Write the snapshot atomically where the admin endpoint will find it."""
        if not run_dir:
            return
        folder = FsPath(run_dir) / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}.tmp"
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, folder / f"{os.getpid()}.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_snapshots(run_dir: str | None, own: Metrics) -> dict[str, Any]:
    """Sum the snapshots of all live workers (this worker's from memory, not disk)."""
    snaps = [own.snapshot()]
    if run_dir:
        for f in sorted((FsPath(run_dir) / "metrics").glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                pid = int(f.stem)
                if pid == os.getpid():
                    continue
                if not _alive(pid):
                    f.unlink(missing_ok=True)
                    continue
                snaps.append(json.loads(f.read_text(encoding="utf-8")))
    counters: dict[str, float] = defaultdict(float)
    gauges: dict[str, float] = defaultdict(float)
    hists: dict[str, list[int]] = {}
    for s in snaps:
        for k, v in s.get("counters", {}).items():
            counters[k] += v
        for k, v in s.get("gauges", {}).items():
            gauges[k] += v
        for k, v in s.get("histograms", {}).items():
            acc = hists.setdefault(k, [0] * len(v))
            for i, n in enumerate(v):
                acc[i] += n
    return {
        "workers": len(snaps),
        "counters": dict(counters),
        "gauges": dict(gauges),
        "histograms": hists,
    }


def _prom_name(name: str) -> tuple[str, str]:
    """Split ``api/bind/status/200`` style names into a metric name and labels."""
    parts = name.split("/")
    labels = []
    base = []
    i = 0
    while i < len(parts):
        if parts[i] in ("endpoint", "status", "namespace") and i + 1 < len(parts):
            labels.append(f'{parts[i]}="{parts[i + 1]}"')
            i += 2
        else:
            base.append(parts[i])
            i += 1
    metric = "namerd_" + "_".join(p.replace(".", "_").replace("-", "_") for p in base)
    return metric, ("{" + ",".join(labels) + "}") if labels else ""


def prometheus_text(merged: dict[str, Any]) -> str:
    """Render merged metrics in the Prometheus text exposition format."""
    lines: list[str] = [f"namerd_workers {merged['workers']}"]
    for k, v in sorted(merged["counters"].items()):
        metric, labels = _prom_name(k)
        lines.append(f"{metric}{labels} {v:g}")
    for k, v in sorted(merged["gauges"].items()):
        metric, labels = _prom_name(k)
        lines.append(f"{metric}{labels} {v:g}")
    for k, buckets in sorted(merged["histograms"].items()):
        metric, labels = _prom_name(k)
        inner = labels[1:-1] + "," if labels else ""
        running = 0
        for bound, n in zip((*LATENCY_BUCKETS_MS, "+Inf"), buckets, strict=True):
            running += n
            lines.append(f'{metric}_bucket{{{inner}le="{bound}"}} {running}')
        lines.append(f"{metric}_count{labels} {running}")
    return "\n".join(lines) + "\n"
