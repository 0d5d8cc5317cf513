"""Metrics of one worker, their snapshot files, and the merge the master's admin server serves.

Theory of operation:

* Each worker owns a :class:`Metrics` registry: counters, gauges and latency histograms named in
  Linkerd's flat slash style (``rt/outgoing/service/svc/users/requests``). Callers fetch a
  metric *handle* once (``scope.counter("requests")``) and keep it, so the per-request cost is an
  attribute increment, not a string format plus dict lookup.
* Names are built through :class:`Scope` objects (``metrics.router("out").service("/svc/a")``),
  which also remember which parts of the name are *labels* (router, service, client, server). A
  service name such as ``svc/users`` contains slashes, so a flat name alone cannot be split back
  into labels; the snapshot carries the scope table and the Prometheus renderer uses it.
* Every ``snapshot_interval_s`` (default 1.0 s) and at exit the worker writes
  ``<metrics_dir>/<pid>.json`` atomically (temp file + ``os.replace``), so a reader sees the old
  or the new snapshot, never half of one. The file format and the merge rules are
  ``shared.metrics``' (namerd's workers use the same).
* The master process merges: :func:`merge` sums the snapshots of live workers. When the master
  reaps a worker it calls :func:`retire`, which folds that worker's last counters and histograms
  into ``retired.json``: merged counters never go backwards when a worker is replaced or a
  reload swaps a generation (gauges, which describe the present, are dropped). A worker killed
  with SIGKILL loses at most its last ``snapshot_interval_s`` of counts.
* Histograms are cumulative since the linker started (like Prometheus, unlike Finagle's
  one-minute windows), with fixed millisecond buckets, exact count/sum/min/max, and
  percentiles interpolated inside the bucket.

Plain files, no shared memory or locks across processes: a worker that crashes mid-write
cannot corrupt anything, and the admin server keeps answering whatever the workers do.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path as FsPath
from typing import Any

from shared import metrics as shared_metrics
from shared.metrics import (
    compact_number,
    fold_retired,
    prom_histogram_lines,
    prom_labels,
    prom_name_part,
    prom_value,
    read_snapshot,
    snapshot_name,
    snapshot_pid,
    write_snapshot_file,
)

__all__ = [
    "LATENCY_BUCKETS_MS",
    "PERCENTILES",
    "RETIRED_FILE",
    "SNAPSHOT_INTERVAL_S",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "Scope",
    "clear",
    "merge",
    "percentile",
    "retire",
    "to_json",
    "to_prometheus",
]

#: How often a worker writes its snapshot, in seconds. The admin view lags by at most this much.
SNAPSHOT_INTERVAL_S = 1.0

#: Histogram bucket upper bounds in milliseconds (``value <= bound``), plus an implicit +Inf.
#: Dense below 10 ms, where a proxy's own overhead lives (20-50% apart up to 1 s, so an
#: interpolated percentile is close), then coarse up to a minute for slow upstreams.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80,
    100, 120, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000, 10000,
    20000, 30000, 60000,
)  # fmt: skip

#: Linkerd's histogram summary keys in metrics.json and the quantile each stands for.
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.5),
    ("p90", 0.9),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p9990", 0.999),
    ("p9999", 0.9999),
)

#: Where :func:`retire` keeps the counters and histograms of workers that have exited.
RETIRED_FILE = "retired.json"

#: Default cap on distinct metric names per worker. Per-name stats for names nobody asks for
#: any more were a known memory leak in Linkerd 1.x (#1824); past the cap, new names are counted
#: in ``metrics/dropped`` and not stored.
MAX_SERIES = 10_000

_SNAPSHOT_VERSION = 1

# merge() runs in admin threads and retire() in the master's main loop, in the same process;
# this lock keeps a merge from reading a worker both in retired.json and in its own file.
_fold_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Metric handles


class Counter:
    """A monotonically increasing count. Keep the handle; ``incr()`` is the hot path."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def incr(self, n: int = 1) -> None:
        self.value += n

    def __repr__(self) -> str:
        return f"<Counter {self.value}>"


class Gauge:
    """A value that goes up and down (open connections), or a function sampled at snapshot time."""

    __slots__ = ("fn", "value")

    def __init__(self, fn: Callable[[], float] | None = None) -> None:
        self.value: float = 0.0
        self.fn = fn

    def set(self, value: float) -> None:
        self.value = value

    def add(self, delta: float) -> None:
        self.value += delta

    def read(self) -> float:
        """The current value (calls ``fn`` if there is one)."""
        return float(self.fn()) if self.fn is not None else self.value

    def __repr__(self) -> str:
        return f"<Gauge {self.value if self.fn is None else 'fn'}>"


class Histogram:
    """Latencies in milliseconds over :data:`LATENCY_BUCKETS_MS`, with exact count/sum/min/max."""

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, value_ms: float) -> None:
        # bisect_left puts a value equal to a bound in that bound's bucket: Prometheus' ``le``.
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_MS, value_ms)] += 1
        self.count += 1
        self.sum += value_ms
        if value_ms < self.min:
            self.min = value_ms
        if value_ms > self.max:
            self.max = value_ms

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts),
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
        }

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.sum:g}ms>"


# ---------------------------------------------------------------------------------------------
# Registry and scopes


def _id(name: str) -> str:
    """A path-like identifier as Linkerd shows it inside a metric name: no leading slash."""
    return name.strip("/") or "/"


class Scope:
    """A name prefix plus the labels it stands for; hands out metrics under that prefix.

    Build scopes through :meth:`Metrics.router` and the methods here, so that Linkerd's names
    and the Prometheus labels agree:

    ========================================  ==========================================
    ``m.router("out")``                        ``rt/out``  ``{rt="out"}``
    ``.service("/svc/users")``                 ``rt/out/service/svc/users``  ``+service``
    ``.client("/$/inet/127.0.0.1/8081")``      ``rt/out/client/$/inet/127.0.0.1/8081``  ``+client``
    ``.server("0.0.0.0", 4140)``               ``rt/out/server/0.0.0.0/4140``  ``+server``
    ========================================  ==========================================
    """

    __slots__ = ("labels", "metrics", "prefix", "prom")

    def __init__(
        self, metrics: Metrics, prefix: str, prom: str, labels: tuple[tuple[str, str], ...]
    ) -> None:
        self.metrics = metrics
        self.prefix = prefix
        self.prom = prom
        self.labels = labels

    def _child(self, kind: str, ident: str) -> Scope:
        scope = Scope(
            self.metrics,
            f"{self.prefix}/{kind}/{ident}",
            f"{self.prom}:{kind}" if self.prom else kind,
            (*self.labels, (kind, ident)),
        )
        self.metrics._register_scope(scope)
        return scope

    def service(self, name: str) -> Scope:
        """``…/service/<name>``: per logical destination (``/svc/users``)."""
        return self._child("service", _id(name))

    def client(self, ident: str) -> Scope:
        """``…/client/<id>``: per bound replica set (``/#/io.l5d.fs/users``, ``/$/inet/h/p``)."""
        return self._child("client", _id(ident))

    def server(self, ip: str, port: int) -> Scope:
        """``…/server/<ip>/<port>``: per listening socket of a router."""
        return self._child("server", f"{ip}/{port}")

    def name(self, stat: str) -> str:
        """The full flat name of ``stat`` in this scope."""
        return f"{self.prefix}/{stat}" if self.prefix else stat

    def counter(self, stat: str) -> Counter:
        return self.metrics.counter(self.name(stat))

    def gauge(self, stat: str, fn: Callable[[], float] | None = None) -> Gauge:
        return self.metrics.gauge(self.name(stat), fn)

    def histogram(self, stat: str) -> Histogram:
        return self.metrics.histogram(self.name(stat))

    def __repr__(self) -> str:
        return f"<Scope {self.prefix!r} {dict(self.labels)}>"


class Metrics:
    """One worker's registry. Single-threaded by design (one trio loop), so no locks.

    Args:
        max_series: at most this many distinct names are stored; see :data:`MAX_SERIES`.
    """

    def __init__(self, *, max_series: int = MAX_SERIES) -> None:
        self.max_series = max_series
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}
        self.scopes: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
        #: Functions sampled at snapshot time for facts that are not numbers (an endpoint's
        #: last error): written under the snapshot's ``details`` key, shown per worker by the
        #: admin (``/admin/workers.json``), never merged (text cannot be summed).
        self.details: dict[str, Callable[[], Any]] = {}
        self._dropped = Counter()
        self.root = Scope(self, "", "", ())

    def __len__(self) -> int:
        return len(self.counters) + len(self.gauges) + len(self.histograms)

    def _full(self) -> bool:
        if len(self) >= self.max_series:
            self._dropped.value += 1
            return True
        return False

    def _register_scope(self, scope: Scope) -> None:
        if scope.prefix not in self.scopes:
            self.scopes[scope.prefix] = (scope.prom, scope.labels)

    def router(self, label: str) -> Scope:
        """The scope of one router: ``rt/<label>``."""
        scope = Scope(self, f"rt/{label}", "rt", (("rt", label),))
        self._register_scope(scope)
        return scope

    def counter(self, name: str) -> Counter:
        """The counter called ``name`` (created at 0). Past ``max_series``, a detached one."""
        c = self.counters.get(name)
        if c is None:
            c = Counter()
            if not self._full():
                self.counters[name] = c
        return c

    def gauge(self, name: str, fn: Callable[[], float] | None = None) -> Gauge:
        """The gauge called ``name``; ``fn``, if given, is sampled at each snapshot instead."""
        g = self.gauges.get(name)
        if g is None:
            g = Gauge(fn)
            if not self._full():
                self.gauges[name] = g
        elif fn is not None:
            g.fn = fn
        return g

    def histogram(self, name: str) -> Histogram:
        """The latency histogram called ``name`` (milliseconds)."""
        h = self.histograms.get(name)
        if h is None:
            h = Histogram()
            if not self._full():
                self.histograms[name] = h
        return h

    def detail(self, name: str, fn: Callable[[], Any]) -> None:
        """Sample ``fn`` (returning a JSON-able value) into every snapshot's ``details``.

        Bounded like the series: past ``max_series`` names it is dropped (and counted).
        """
        if name not in self.details and len(self.details) >= self.max_series:
            self._dropped.value += 1
            return
        self.details[name] = fn

    def incr(self, name: str, n: int = 1) -> None:
        """Convenience for cold paths; hot paths should keep the :class:`Counter` handle."""
        self.counter(name).incr(n)

    def remove(self, prefix: str) -> int:
        """Forget every metric named ``prefix`` or under ``prefix/`` (an expired client, say).

        Returns:
            How many metrics were removed. Their counts disappear from the merged view.
        """
        under = prefix.rstrip("/") + "/"
        removed = 0

        def doomed(table: Iterable[str]) -> list[str]:
            return [k for k in table if k == prefix or k.startswith(under)]

        for k in doomed(self.counters):
            del self.counters[k]
            removed += 1
        for k in doomed(self.gauges):
            del self.gauges[k]
            removed += 1
        for k in doomed(self.histograms):
            del self.histograms[k]
            removed += 1
        for k in doomed(self.scopes):
            del self.scopes[k]
        for k in doomed(self.details):
            del self.details[k]
        return removed

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of everything, as written to ``<pid>.json``."""
        gauges: dict[str, float] = {}
        for name, g in self.gauges.items():
            # A gauge function belongs to the caller; a broken one must not cost the snapshot.
            with contextlib.suppress(Exception):
                gauges[name] = g.read()
        details: dict[str, Any] = {}
        for name, fn in self.details.items():
            with contextlib.suppress(Exception):  # as for gauges: never cost the snapshot
                details[name] = fn()
        counters = {name: c.value for name, c in self.counters.items()}
        if self._dropped.value:
            counters["metrics/dropped"] = self._dropped.value
        return {
            "version": _SNAPSHOT_VERSION,
            "pid": os.getpid(),
            "time": time.time(),
            "counters": counters,
            "gauges": gauges,
            "histograms": {name: h.snapshot() for name, h in self.histograms.items()},
            "scopes": {p: [prom, dict(labels)] for p, (prom, labels) in self.scopes.items()},
            "details": details,
        }

    def write_snapshot(self, metrics_dir: str, snapshot: dict[str, Any] | None = None) -> None:
        """Write ``<metrics_dir>/<pid>.json`` atomically (``snapshot`` defaults to a fresh one).

        Raises:
            OSError: if the directory is not writable; the caller decides whether that matters.
        """
        write_snapshot_file(metrics_dir, self.snapshot() if snapshot is None else snapshot)

    def __repr__(self) -> str:
        return (
            f"<Metrics counters={len(self.counters)} gauges={len(self.gauges)} "
            f"histograms={len(self.histograms)} dropped={self._dropped.value}>"
        )


# ---------------------------------------------------------------------------------------------
# Merging across processes (master side): the rules are shared.metrics'; here the files.


def merge(metrics_dir: str) -> dict[str, Any]:
    """Sum the snapshots in ``metrics_dir``: live workers plus :data:`RETIRED_FILE`.

    Files of pids that no longer exist (left over from a crashed master) are deleted, not
    counted. Gauges are summed over live workers only.

    Returns:
        ``{"workers": n, "counters": {...}, "gauges": {...}, "histograms": {name: {"counts",
        "count", "sum", "min", "max"}}, "scopes": {prefix: [prom_name, labels]}}``.
    """
    folder = FsPath(metrics_dir)
    with _fold_lock:
        return shared_metrics.merge(
            shared_metrics.live_snapshots(folder), read_snapshot(folder / RETIRED_FILE)
        )


def retire(metrics_dir: str, pid: int) -> None:
    """Fold the last snapshot of the exited worker ``pid`` into :data:`RETIRED_FILE`.

    The master calls this right after reaping ``pid``, so merged counters stay monotonic.
    Idempotent: the worker's file is deleted once folded.
    """
    folder = FsPath(metrics_dir)
    own = folder / snapshot_name(pid)
    with _fold_lock:
        snap = read_snapshot(own)
        if snap is not None:
            body = fold_retired(read_snapshot(folder / RETIRED_FILE), snap)
            tmp = folder / f".{RETIRED_FILE}.tmp"
            tmp.write_text(json.dumps(body, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, folder / RETIRED_FILE)
        for path in (own, folder / f".{own.name}.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def clear(metrics_dir: str) -> None:
    """Delete every snapshot and the retired totals (a master starting on a reused directory)."""
    folder = FsPath(metrics_dir)
    with _fold_lock:
        for path in folder.iterdir():
            if (
                snapshot_pid(path.name) is not None
                or path.name == RETIRED_FILE
                or (path.name.startswith(".") and path.name.endswith(".tmp"))
            ):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


# ---------------------------------------------------------------------------------------------
# Rendering


def percentile(h: Mapping[str, Any], q: float) -> float:
    """Estimate the ``q`` quantile (0..1) of a histogram snapshot.

    Interpolates linearly inside the bucket that holds the rank, narrowed by the exact min and
    max, so a histogram of one value reports that value at every percentile.
    """
    count = h["count"]
    if not count:
        return 0.0
    lo_v, hi_v = h.get("min"), h.get("max")
    rank = q * count
    seen = 0
    for i, n in enumerate(h["counts"]):
        if not n or seen + n < rank:
            seen += n
            continue
        lower = LATENCY_BUCKETS_MS[i - 1] if i > 0 else 0.0
        upper = LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else math.inf
        # The exact min and max narrow the first and last buckets (and bound +Inf).
        if lo_v is not None:
            lower = max(lower, lo_v)
        if hi_v is not None:
            upper = min(upper, hi_v)
        upper = max(upper, lower)
        return float(lower + (upper - lower) * max(0.0, rank - seen) / n)
    return float(hi_v or 0.0)


def to_json(merged: Mapping[str, Any]) -> dict[str, float | int]:
    """Linkerd's flat ``metrics.json``: ``{"rt/out/service/svc/a/requests": 12, ...}``.

    Histograms expand to ``<name>.count``, ``.sum``, ``.avg``, ``.min``, ``.max`` and
    ``.p50`` … ``.p9999`` (see :data:`PERCENTILES`).
    """
    out: dict[str, float | int] = {}
    for k, v in merged.get("counters", {}).items():
        out[k] = compact_number(v)
    for k, v in merged.get("gauges", {}).items():
        out[k] = compact_number(v)
    for k, h in merged.get("histograms", {}).items():
        count = h["count"]
        out[f"{k}.count"] = count
        out[f"{k}.sum"] = compact_number(round(h["sum"], 3))
        out[f"{k}.avg"] = compact_number(round(h["sum"] / count, 3)) if count else 0
        out[f"{k}.min"] = compact_number(h["min"]) if h.get("min") is not None else 0
        out[f"{k}.max"] = compact_number(h["max"]) if h.get("max") is not None else 0
        for key, q in PERCENTILES:
            out[f"{k}.{key}"] = compact_number(round(percentile(h, q), 3))
    return dict(sorted(out.items()))


def _prom_split(name: str, scopes: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """Map a flat name to ``(prometheus_name, labels)`` using the longest registered scope."""
    cut = len(name)
    while True:
        cut = name.rfind("/", 0, cut)
        if cut <= 0:
            break
        entry = scopes.get(name[:cut])
        if entry is not None:
            prom, labels = entry
            rest = name[cut + 1 :].split("/")
            metric = ":".join([prom, *(prom_name_part(p) for p in rest)])
            return metric, tuple((str(k), str(v)) for k, v in dict(labels).items())
    parts = name.split("/")
    if len(parts) > 2 and parts[0] == "rt":
        # A router-scoped name whose scope was never registered: still label the router.
        return ":".join(["rt", *(prom_name_part(p) for p in parts[2:])]), (("rt", parts[1]),)
    return ":".join(prom_name_part(p) for p in parts), ()


def to_prometheus(merged: Mapping[str, Any], *, prefix: str = "") -> str:
    """Render merged metrics in the Prometheus text format (version 0.0.4).

    Router, service, client and server become labels, as Linkerd's ``io.l5d.prometheus`` does:
    ``rt:service:requests{rt="out",service="svc/users"} 12``. Histograms are Prometheus
    histograms (cumulative ``_bucket{le=…}``, ``_sum``, ``_count``), so they aggregate across
    instances. ``prefix`` is prepended to every metric name (Linkerd's ``prefix`` option).
    """
    scopes = merged.get("scopes", {})
    families: dict[str, tuple[str, list[str]]] = {}

    def family(name: str, kind: str) -> list[str]:
        entry = families.get(name)
        if entry is None:
            entry = families[name] = (kind, [])
        return entry[1]

    def split(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        metric, labels = _prom_split(name, scopes)
        metric = prefix + metric
        # A metric name may not start with a digit.
        return ("_" + metric if metric[:1].isdigit() else metric), labels

    for table, kind in (("counters", "counter"), ("gauges", "gauge")):
        for k, v in merged.get(table, {}).items():
            metric, labels = split(k)
            family(metric, kind).append(f"{metric}{prom_labels(labels)} {prom_value(v)}")
    for k, h in merged.get("histograms", {}).items():
        metric, labels = split(k)
        family(metric, "histogram").extend(
            prom_histogram_lines(
                metric, labels, LATENCY_BUCKETS_MS, h["counts"], total=h["sum"], count=h["count"]
            )
        )
    out: list[str] = []
    for name in sorted(families):
        kind, lines = families[name]
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n" if out else ""
