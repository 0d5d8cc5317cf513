"""namerd.metrics: one worker's registry, the merge over workers, and namerd's two renderings.

The merge rules are shared.metrics' (tests/shared/test_metrics.py); these tests pin namerd's own
output shapes, which the admin endpoints serve as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from namerd.metrics import Metrics, merge_snapshots, prometheus_text
from shared.metrics import write_snapshot_file


def busy() -> Metrics:
    m = Metrics()
    m.inc("requests/endpoint/bind/status/200", 20)
    m.set("redis/up", 1)
    m.add("watches/open", 3)
    m.add("watches/open", -1)
    m.set("store/namespace/default/version", 7)
    for v in (0.5, 3, 12, 20000):
        m.observe_ms("requests/endpoint/bind", v)
    return m


def test_merge_over_workers_keeps_namerds_json_shape(tmp_path: Path) -> None:
    own, other = busy(), busy()
    other_snapshot = {**other.snapshot(), "pid": os.getppid()}  # a live "worker"
    (tmp_path / "metrics").mkdir()
    write_snapshot_file(tmp_path / "metrics", other_snapshot)
    own.write_snapshot(str(tmp_path))  # our own file is read from memory, not twice
    merged = merge_snapshots(str(tmp_path), own)
    assert json.dumps(merged, sort_keys=True) == json.dumps(
        {
            "counters": {
                "requests/endpoint/bind/status/200": 40.0,
                "requests/endpoint/bind/sum_ms": 40031.0,
            },
            "gauges": {
                "redis/up": 2.0,
                "store/namespace/default/version": 14.0,
                "watches/open": 4.0,
            },
            "histograms": {"requests/endpoint/bind": [2, 0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2]},
            "workers": 2,
        },
        sort_keys=True,
    )
    assert merge_snapshots(None, own)["workers"] == 1


def test_prometheus_text_is_namerds() -> None:
    text = prometheus_text(merge_snapshots(None, busy()))
    lines = text.splitlines()
    assert lines[:6] == [
        "namerd_workers 1",
        'namerd_requests{endpoint="bind",status="200"} 20',
        'namerd_requests_sum_ms{endpoint="bind"} 20015.5',
        "namerd_redis_up 1",
        'namerd_store_version{namespace="default"} 7',
        "namerd_watches_open 2",
    ]
    assert 'namerd_requests_bucket{endpoint="bind",le="1"} 1' in lines
    assert 'namerd_requests_bucket{endpoint="bind",le="10000"} 3' in lines
    assert 'namerd_requests_bucket{endpoint="bind",le="+Inf"} 4' in lines
    assert lines[-1] == 'namerd_requests_count{endpoint="bind"} 4'
    assert text.endswith("\n")
