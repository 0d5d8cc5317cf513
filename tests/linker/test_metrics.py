"""linker.metrics: the worker registry, snapshot files, the merge, and both renderings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from linker.metrics import (
    LATENCY_BUCKETS_MS,
    RETIRED_FILE,
    Metrics,
    clear,
    merge,
    percentile,
    retire,
    to_json,
    to_prometheus,
)
from shared.metrics import write_snapshot_file


def dead_pid() -> int:
    """A pid that existed a moment ago and has been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def snap(pid: int, **parts: Any) -> dict[str, Any]:
    return {
        "pid": pid,
        "counters": parts.get("counters", {}),
        "gauges": parts.get("gauges", {}),
        "histograms": parts.get("histograms", {}),
        "scopes": parts.get("scopes", {}),
    }


def hist(*values: float) -> dict[str, Any]:
    m = Metrics()
    h = m.histogram("h")
    for v in values:
        h.add(v)
    return h.snapshot()


# -- registry ----------------------------------------------------------------------------------


def test_handles_are_shared_by_name() -> None:
    m = Metrics()
    assert m.counter("a") is m.counter("a")
    assert m.gauge("g") is m.gauge("g")
    assert m.histogram("h") is m.histogram("h")
    m.counter("a").incr()
    m.incr("a", 2)
    assert m.counter("a").value == 3


def test_linkerd_names() -> None:
    m = Metrics()
    rt = m.router("outgoing")
    rt.service("/svc/users").counter("requests").incr()
    rt.client("/$/inet/127.0.0.1/8081").counter("connects").incr()
    rt.server("0.0.0.0", 4140).gauge("connections").add(2)
    rt.service("/svc/users").counter("status/2XX").incr()
    rt.service("/svc/users").counter("failures/ConnectionRefused").incr()
    rt.service("/svc/users").histogram("request_latency_ms").add(3)
    s = m.snapshot()
    assert s["counters"] == {
        "rt/outgoing/service/svc/users/requests": 1,
        "rt/outgoing/client/$/inet/127.0.0.1/8081/connects": 1,
        "rt/outgoing/service/svc/users/status/2XX": 1,
        "rt/outgoing/service/svc/users/failures/ConnectionRefused": 1,
    }
    assert s["gauges"] == {"rt/outgoing/server/0.0.0.0/4140/connections": 2}
    assert list(s["histograms"]) == ["rt/outgoing/service/svc/users/request_latency_ms"]
    assert s["scopes"]["rt/outgoing/service/svc/users"] == [
        "rt:service",
        {"rt": "outgoing", "service": "svc/users"},
    ]
    assert s["pid"] == os.getpid()


def test_gauge_functions_are_sampled_and_broken_ones_skipped() -> None:
    m = Metrics()
    size = [3]
    m.gauge("pool/size", lambda: size[0])
    m.gauge("broken", lambda: 1 / 0)
    size[0] = 5
    assert m.snapshot()["gauges"] == {"pool/size": 5.0}


def test_series_cap_drops_new_names_and_counts_them() -> None:
    m = Metrics(max_series=2)
    m.counter("a").incr()
    m.counter("b").incr()
    detached = m.counter("c")
    detached.incr()  # usable, just not stored
    m.histogram("h").add(1)
    counters = m.snapshot()["counters"]
    assert counters == {"a": 1, "b": 1, "metrics/dropped": 2}
    assert len(m) == 2


def test_remove_forgets_a_scope() -> None:
    m = Metrics()
    rt = m.router("r")
    rt.client("/#/io.l5d.fs/a").counter("requests").incr()
    rt.client("/#/io.l5d.fs/a").histogram("request_latency_ms").add(1)
    rt.client("/#/io.l5d.fs/ab").counter("requests").incr()
    assert m.remove("rt/r/client/#/io.l5d.fs/a") == 2
    s = m.snapshot()
    assert s["counters"] == {"rt/r/client/#/io.l5d.fs/ab/requests": 1}
    assert "rt/r/client/#/io.l5d.fs/a" not in s["scopes"]


def test_histogram_buckets_use_le() -> None:
    m = Metrics()
    h = m.histogram("h")
    for v in (0.1, 0.11, 1, 100_000):
        h.add(v)
    assert h.counts[0] == 1  # 0.1 <= 0.1
    assert h.counts[1] == 1  # 0.11 <= 0.25
    assert h.counts[LATENCY_BUCKETS_MS.index(1)] == 1
    assert h.counts[-1] == 1  # +Inf
    assert (h.count, h.min, h.max) == (4, 0.1, 100_000)
    assert Metrics().histogram("e").snapshot() == {
        "counts": [0] * (len(LATENCY_BUCKETS_MS) + 1),
        "count": 0,
        "sum": 0.0,
        "min": None,
        "max": None,
    }


# -- percentiles -------------------------------------------------------------------------------


def test_percentile_of_one_value_is_that_value() -> None:
    h = hist(7.3)
    assert {percentile(h, q) for q in (0.5, 0.99, 0.9999)} == {7.3}


def test_percentile_interpolates_and_stays_in_range() -> None:
    h = hist(*range(1, 101))  # 1..100 ms
    p50 = percentile(h, 0.5)
    assert 40 <= p50 <= 60
    assert percentile(h, 0.99) <= 100
    assert percentile(h, 0.0001) >= 1
    assert percentile(hist(), 0.5) == 0.0
    # Everything above the last bound: between the exact min and max, never infinity.
    assert 70_000 < percentile(hist(70_000, 90_000), 0.99) <= 90_000
    assert percentile(hist(70_000, 90_000), 1.0) == 90_000


# -- snapshots and merge -----------------------------------------------------------------------


def test_write_snapshot_is_atomic_and_named_by_pid(tmp_path: Path) -> None:
    m = Metrics()
    m.counter("x").incr(3)
    m.write_snapshot(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [f"{os.getpid()}.json"]
    assert json.loads((tmp_path / f"{os.getpid()}.json").read_text())["counters"] == {"x": 3}


def test_merge_sums_live_workers_and_drops_dead_ones(tmp_path: Path) -> None:
    live_a, live_b, dead = os.getpid(), os.getppid(), dead_pid()
    d = str(tmp_path)
    write_snapshot_file(
        d, snap(live_a, counters={"c": 2}, gauges={"g": 1}, histograms={"h": hist(1, 5)})
    )
    write_snapshot_file(
        d, snap(live_b, counters={"c": 3, "d": 1}, gauges={"g": 2}, histograms={"h": hist(0.5)})
    )
    write_snapshot_file(d, snap(dead, counters={"c": 100}))
    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / "123.json.tmp").write_text("not json")

    merged = merge(d)
    assert merged["workers"] == 2
    assert merged["counters"] == {"c": 5, "d": 1}
    assert merged["gauges"] == {"g": 3}
    h = merged["histograms"]["h"]
    assert (h["count"], h["sum"], h["min"], h["max"]) == (3, 6.5, 0.5, 5)
    assert not (tmp_path / f"{dead}.json").exists()  # dead pid's file removed
    assert (tmp_path / "junk.json").exists()  # not ours: left alone


def test_merge_skips_unreadable_snapshots(tmp_path: Path) -> None:
    (tmp_path / f"{os.getpid()}.json").write_text("{truncated")
    assert merge(str(tmp_path))["workers"] == 0
    assert merge(str(tmp_path / "missing"))["counters"] == {}


def test_merge_refuses_histograms_with_other_buckets(tmp_path: Path) -> None:
    d = str(tmp_path)
    odd = {"counts": [1, 2], "count": 3, "sum": 3.0, "min": 1, "max": 1}
    write_snapshot_file(d, snap(os.getpid(), histograms={"h": hist(2)}))
    write_snapshot_file(d, snap(os.getppid(), histograms={"h": odd}))
    assert merge(d)["histograms"]["h"]["count"] in (1, 3)  # one of them, never a mix


def test_retire_keeps_counters_monotonic(tmp_path: Path) -> None:
    d = str(tmp_path)
    gone = dead_pid()
    write_snapshot_file(
        d, snap(gone, counters={"c": 4}, gauges={"open": 9}, histograms={"h": hist(2)})
    )
    write_snapshot_file(d, snap(os.getpid(), counters={"c": 1}))
    retire(d, gone)
    retire(d, gone)  # idempotent
    assert not (tmp_path / f"{gone}.json").exists()
    assert (tmp_path / RETIRED_FILE).exists()
    merged = merge(d)
    assert merged["counters"] == {"c": 5}
    assert merged["gauges"] == {}  # a dead worker's open connections are not open
    assert merged["histograms"]["h"]["count"] == 1
    assert merged["workers"] == 1

    gone2 = dead_pid()
    write_snapshot_file(d, snap(gone2, counters={"c": 10}))
    retire(d, gone2)
    assert merge(d)["counters"] == {"c": 15}


def test_clear_removes_only_our_files(tmp_path: Path) -> None:
    d = str(tmp_path)
    write_snapshot_file(d, snap(os.getpid(), counters={"c": 1}))
    gone = dead_pid()
    write_snapshot_file(d, snap(gone, counters={"c": 1}))
    retire(d, gone)
    (tmp_path / "notes.txt").write_text("keep")
    clear(d)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# -- renderings --------------------------------------------------------------------------------


def merged_example() -> dict[str, Any]:
    m = Metrics()
    rt = m.router("outgoing")
    svc = rt.service("/svc/users")
    svc.counter("requests").incr(12)
    svc.counter("status/2XX").incr(11)
    for v in (1, 2, 3, 4, 50):
        svc.histogram("request_latency_ms").add(v)
    rt.server("127.0.0.1", 4140).gauge("connections").set(3)
    rt.client('/$/inet/we"ird\\name/1').counter("connects").incr()
    m.counter("unscoped/thing").incr()
    s = m.snapshot()
    return {
        "workers": 1,
        "counters": {**s["counters"], "master/worker_restarts": 2},
        "gauges": s["gauges"],
        "histograms": s["histograms"],
        "scopes": s["scopes"],
    }


def test_to_json_is_linkerd_flat() -> None:
    out = to_json(merged_example())
    lat = "rt/outgoing/service/svc/users/request_latency_ms"
    assert out["rt/outgoing/service/svc/users/requests"] == 12
    assert out["rt/outgoing/server/127.0.0.1/4140/connections"] == 3
    assert isinstance(out["rt/outgoing/server/127.0.0.1/4140/connections"], int)
    assert out["master/worker_restarts"] == 2
    assert out[f"{lat}.count"] == 5
    assert out[f"{lat}.sum"] == 60
    assert out[f"{lat}.avg"] == 12
    assert (out[f"{lat}.min"], out[f"{lat}.max"]) == (1, 50)
    assert 40 < out[f"{lat}.p9999"] <= 50
    assert out[f"{lat}.p50"] <= out[f"{lat}.p90"] <= out[f"{lat}.p99"]
    assert set(k.rsplit(".", 1)[1] for k in out if k.startswith(lat + ".")) == {
        "count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99", "p9990", "p9999",
    }  # fmt: skip
    assert list(out) == sorted(out)
    json.dumps(out)


def test_to_prometheus_labels_and_types() -> None:
    text = to_prometheus(merged_example())
    lines = text.splitlines()
    assert 'rt:service:requests{rt="outgoing",service="svc/users"} 12' in lines
    assert 'rt:service:status:2XX{rt="outgoing",service="svc/users"} 11' in lines
    assert 'rt:server:connections{rt="outgoing",server="127.0.0.1/4140"} 3' in lines
    assert 'rt:client:connects{rt="outgoing",client="$/inet/we\\"ird\\\\name/1"} 1' in lines
    assert "unscoped:thing 1" in lines
    assert "master:worker_restarts 2" in lines
    assert "# TYPE rt:service:requests counter" in lines
    assert "# TYPE rt:server:connections gauge" in lines
    assert "# TYPE rt:service:request_latency_ms histogram" in lines
    assert sum(1 for line in lines if line.startswith("# TYPE rt:service:requests ")) == 1
    labels = 'rt="outgoing",service="svc/users"'
    assert f'rt:service:request_latency_ms_bucket{{{labels},le="1"}} 1' in lines
    assert f'rt:service:request_latency_ms_bucket{{{labels},le="+Inf"}} 5' in lines
    assert f"rt:service:request_latency_ms_count{{{labels}}} 5" in lines
    assert f"rt:service:request_latency_ms_sum{{{labels}}} 60" in lines
    assert text.endswith("\n")


def test_to_prometheus_without_scopes_and_with_prefix() -> None:
    merged = {
        "counters": {"rt/incoming/service/svc/a/requests": 1, "9lives": 2},
        "gauges": {},
        "histograms": {},
    }
    lines = to_prometheus(merged, prefix="l5d_").splitlines()
    # Scope unknown (e.g. from an older snapshot): the router is still a label.
    assert 'l5d_rt:service:svc:a:requests{rt="incoming"} 1' in lines
    assert "l5d_9lives 2" in lines
    assert "_9lives 2" in to_prometheus(merged).splitlines()  # no leading digit
    assert to_prometheus({"counters": {}, "gauges": {}, "histograms": {}}) == ""


@pytest.mark.parametrize("bad", ["a-b", "a.b", "a b"])
def test_prometheus_names_are_sanitised(bad: str) -> None:
    text = to_prometheus({"counters": {f"x/{bad}": 1}, "gauges": {}, "histograms": {}})
    assert "x:a_b 1" in text.splitlines()


def test_details_are_sampled_into_the_snapshot_and_removed_with_their_scope() -> None:
    m = Metrics()
    errors = ["connection refused"]
    m.detail("rt/a/client/x/loadbalancer/endpoints", lambda: list(errors))
    m.detail("rt/a/client/y/broken", lambda: 1 / 0)
    errors.append("a failure")
    details = m.snapshot()["details"]
    # Sampled when the snapshot is taken; a broken function costs only its own entry.
    assert details == {"rt/a/client/x/loadbalancer/endpoints": ["connection refused", "a failure"]}
    m.remove("rt/a/client/x")
    assert m.snapshot()["details"] == {}
