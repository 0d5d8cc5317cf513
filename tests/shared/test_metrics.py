"""shared.metrics: the snapshot merge both admins serve, its files, and Prometheus pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.metrics import (
    compact_number,
    fold_retired,
    live_snapshots,
    merge,
    prom_histogram_lines,
    prom_labels,
    prom_name_part,
    prom_value,
    read_snapshot,
    snapshot_pid,
    write_snapshot_file,
)


def dead_pid() -> int:
    """A pid that existed a moment ago and has been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def hist(counts: list[int], total: float, lo: float | None, hi: float | None) -> dict[str, Any]:
    return {"counts": counts, "count": sum(counts), "sum": total, "min": lo, "max": hi}


def test_merge_rules() -> None:
    a = {
        "counters": {"c": 2, "only_a": 1},
        "gauges": {"g": 1.5},
        "histograms": {"h": hist([1, 0, 1], 6.0, 1.0, 5.0)},
        "scopes": {"rt/a": ["rt", {"rt": "a"}]},
    }
    b = {
        "counters": {"c": 3},
        "gauges": {"g": 2},
        "histograms": {"h": hist([0, 1, 0], 2.0, 2.0, 2.0), "odd": hist([1], 1.0, None, None)},
        "scopes": {"rt/a": ["other", {}]},
    }
    retired = {
        "counters": {"c": 10},
        "gauges": {"g": 100},
        "histograms": {"h": hist([1, 0, 0], 0.5, 0.5, 0.5)},
    }
    merged = merge([a, b], retired)
    assert merged["workers"] == 2
    assert merged["counters"] == {"c": 15, "only_a": 1}
    assert merged["gauges"] == {"g": 3.5}  # retired gauges are not the present
    assert merged["histograms"]["h"] == hist([2, 1, 1], 8.5, 0.5, 5.0)
    assert merged["scopes"] == {"rt/a": ["rt", {"rt": "a"}]}  # first one wins
    assert merge([]) == {"workers": 0, "counters": {}, "gauges": {}, "histograms": {}, "scopes": {}}


def test_histograms_with_other_buckets_are_not_mixed() -> None:
    merged = merge(
        [
            {"histograms": {"h": hist([1, 1], 2.0, 1, 1)}},
            {"histograms": {"h": hist([5], 5.0, 1, 1)}},
        ]
    )
    assert merged["histograms"]["h"]["counts"] == [1, 1]


def test_junk_values_are_skipped() -> None:
    junk: dict[str, Any] = {
        "counters": {"ok": 1, "text": "7", "flag": True, "none": None},
        "gauges": ["not", "a", "table"],
        "histograms": {
            "no_counts": {"count": 1, "sum": 1},
            "bad_counts": {"counts": ["x"], "count": 1, "sum": 1},
            "no_sum": {"counts": [1], "count": 1},
            "not_a_dict": 5,
        },
        "scopes": None,
    }
    assert merge([junk]) == {
        "workers": 1,
        "counters": {"ok": 1},
        "gauges": {},
        "histograms": {},
        "scopes": {},
    }


def test_fold_retired_keeps_counters_and_histograms_only() -> None:
    snap = {
        "counters": {"c": 4},
        "gauges": {"open": 9},
        "histograms": {"h": hist([1], 2.0, 2, 2)},
        "scopes": {"s": 1},
    }
    once = fold_retired(None, snap)
    assert once == {
        "counters": {"c": 4},
        "histograms": {"h": hist([1], 2.0, 2, 2)},
        "scopes": {"s": 1},
    }
    twice = fold_retired(once, {"counters": {"c": 1, "d": 2}})
    assert twice["counters"] == {"c": 5, "d": 2}


counter_tables = st.dictionaries(st.sampled_from("abcd"), st.integers(0, 10**6), max_size=4)
histograms = st.lists(st.integers(0, 50), min_size=3, max_size=3).map(
    lambda c: hist(c, float(sum(c)), 0.0 if sum(c) else None, float(sum(c)) if sum(c) else None)
)
snapshots = st.fixed_dictionaries(
    {
        "counters": counter_tables,
        "gauges": counter_tables,
        "histograms": st.dictionaries(st.sampled_from("xy"), histograms, max_size=2),
    }
)


@given(st.lists(snapshots, max_size=5), st.lists(snapshots, max_size=3))
def test_retiring_never_loses_or_doubles_a_count(
    live: list[dict[str, Any]], exited: list[dict[str, Any]]
) -> None:
    """Counters and histograms are the same whether a process is live or retired; the order of
    the processes does not matter; gauges come from live processes only."""
    retired: dict[str, Any] | None = None
    for snap in exited:
        retired = fold_retired(retired, snap)
    folded = merge(live, retired)
    everyone = merge(live + exited)
    assert folded["counters"] == everyone["counters"]
    assert {k: h["counts"] for k, h in folded["histograms"].items()} == {
        k: h["counts"] for k, h in everyone["histograms"].items()
    }
    assert folded["gauges"] == merge(live)["gauges"]
    backwards = merge(list(reversed(live)), retired)
    assert backwards["counters"] == folded["counters"]
    assert backwards["gauges"] == folded["gauges"]
    for name, h in folded["histograms"].items():
        assert h["count"] == sum(h["counts"])
        assert backwards["histograms"][name]["counts"] == h["counts"]


# -- files ---------------------------------------------------------------------------------------


def test_snapshot_files(tmp_path: Path) -> None:
    me, parent, gone = os.getpid(), os.getppid(), dead_pid()
    write_snapshot_file(tmp_path, {"pid": me, "counters": {"c": 1}})
    write_snapshot_file(tmp_path, {"pid": parent, "counters": {"c": 2}})
    write_snapshot_file(tmp_path, {"pid": gone, "counters": {"c": 100}})
    (tmp_path / "junk.json").write_text("{}")
    (tmp_path / f".{me}.json.tmp").write_text("half")
    assert not list(tmp_path.glob(f".{parent}*"))  # the temp file was renamed into place
    assert json.loads((tmp_path / f"{me}.json").read_text()) == {"pid": me, "counters": {"c": 1}}

    assert [s["pid"] for s in live_snapshots(tmp_path, skip_pid=me)] == sorted([parent])
    assert not (tmp_path / f"{gone}.json").exists()  # nobody retired it: deleted, not counted
    assert (tmp_path / "junk.json").exists()  # not ours
    assert sorted(s["pid"] for s in live_snapshots(tmp_path)) == sorted([me, parent])

    (tmp_path / f"{me}.json").write_text("{truncated")
    assert [s["pid"] for s in live_snapshots(tmp_path)] == [parent]
    assert read_snapshot(tmp_path / "missing.json") is None
    (tmp_path / "list.json").write_text("[1]")
    assert read_snapshot(tmp_path / "list.json") is None
    assert live_snapshots(tmp_path / "missing") == []
    assert snapshot_pid("12.json") == 12
    assert snapshot_pid(".12.json.tmp") is None
    assert snapshot_pid("retired.json") is None


# -- Prometheus pieces ---------------------------------------------------------------------------


def test_prometheus_pieces() -> None:
    assert prom_name_part("a.b-c/d:e") == "a_b_c_d_e"
    assert prom_labels([]) == ""
    assert prom_labels([], 'le="1"') == '{le="1"}'
    assert prom_labels([("rt", 'we"ird\\\n'), ("a.b", "x")], 'le="1"') == (
        '{rt="we\\"ird\\\\\\n",a_b="x",le="1"}'
    )
    assert [prom_value(v) for v in (3, 3.0, 0.5, 1e20, float("nan"), float("-inf"))] == [
        "3",
        "3",
        "0.5",
        "1e+20",
        "NaN",
        "-Inf",
    ]
    assert prom_value(1234567.0) == "1234567"  # no %g rounding
    assert compact_number(2.0) == 2
    assert compact_number(2.5) == 2.5
    assert prom_histogram_lines("h", [("k", "v")], [1, 2.5], [1, 0, 2]) == [
        'h_bucket{k="v",le="1"} 1',
        'h_bucket{k="v",le="2.5"} 1',
        'h_bucket{k="v",le="+Inf"} 3',
        'h_count{k="v"} 3',
    ]
    assert prom_histogram_lines("h", [], [1], [1, 1], total=2.0, count=2) == [
        'h_bucket{le="1"} 1',
        'h_bucket{le="+Inf"} 2',
        "h_sum 2",
        "h_count 2",
    ]
