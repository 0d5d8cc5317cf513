"""The benchmark harness's arithmetic: wrk parsing, percentiles, medians, ratios, targets."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtests.bench.report import render, summarize
from loadtests.bench.stats import duration_ms, parse_wrk, percentile, ratio

WRK_OK = """Running 2s test @ http://127.0.0.1:18080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   492.89us  686.94us   6.67ms   94.09%
    Req/Sec    63.22k     9.53k   72.50k    80.00%
  Latency Distribution
     50%  334.00us
     75%  365.00us
     90%  639.00us
     99%    4.30ms
  125664 requests in 2.00s, 8.99MB read
Requests/sec:  62795.39
Transfer/sec:      8.98MB
"""

WRK_ERRORS = """Running 1s test @ http://127.0.0.1:1/64k
  1 threads and 4 connections
  Latency Distribution
     50%   60.00us
     75%   95.00us
     90%  108.00us
     99%    1.85ms
  57997 requests in 1.10s, 17.04MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 57997
Requests/sec:  52741.37
Transfer/sec:     15.49MB
"""


def test_parse_wrk() -> None:
    r = parse_wrk(WRK_OK)
    assert (r.requests, r.seconds, r.rps, r.errors, r.tool) == (125664, 2.0, 62795.39, 0, "wrk")
    assert r.latency_ms == {"p50": 0.334, "p75": 0.365, "p90": 0.639, "p99": 4.3}


def test_parse_wrk_counts_socket_errors_and_bad_statuses() -> None:
    r = parse_wrk(WRK_ERRORS)
    assert r.errors == 57997 + 5
    assert r.seconds == pytest.approx(1.1)


def test_parse_wrk_without_a_result_says_so() -> None:
    with pytest.raises(ValueError, match="without a result"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "ms"), [("334.00us", 0.334), ("4.30ms", 4.3), ("2.00s", 2000.0), ("1.5m", 90000.0)]
)
def test_duration_units(text: str, ms: float) -> None:
    assert duration_ms(text) == pytest.approx(ms)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 99.9) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0.1, 100))
def test_percentile_is_an_element_and_monotonic(values: list[float], pct: float) -> None:
    p = percentile(values, pct)
    assert p in values
    assert percentile(values, min(100.0, pct + 5)) >= p


def test_ratio_handles_missing_values() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def _run(rps: float, p50: float = 1.0, p99: float = 2.0, errors: int = 0) -> dict[str, object]:
    return {"rps": rps, "latency_ms": {"p50": p50, "p99": p99}, "errors": errors}


def _lat(p50: float, p99: float) -> dict[str, object]:
    lat = {"p50": p50, "p75": p50, "p90": p99, "p99": p99, "p99_9": p99}
    return {"rps": 1000, "latency_ms": lat, "errors": 0}


RESULTS = {
    "started_at": "2026-11-27T00:00:00+00:00",
    "finished_at": "2026-11-27T00:05:00+00:00",
    "wall_s": 300,
    "command": "python -m loadtests.bench",
    "tool": "wrk",
    "tool_note": "wrk -t1 (closed loop)",
    "machine": {
        "cpu_model": "test cpu",
        "cpus": 2,
        "cpus_usable": 2,
        "memory_gib": 24,
        "kernel": "6",
        "os": "linux",
        "python": "3.11",
        "trio": "0.35",
        "h11": "0.16",
        "nginx": "1.22",
        "wrk": "wrk 4",
        "commit": "abc",
        "load_average": ["0", "0", "0"],
    },
    "settings": {
        "repeats": 3,
        "duration_s": 5,
        "connections": 32,
        "workers": 2,
        "rate_rps": 1000,
        "latency_duration_s": 10,
    },
    "systems": {"direct": {"kind": "nginx"}, "nginx": {}, "linker-1": {}, "linker-2": {}},
    "throughput": {
        "tiny": {
            "direct": [_run(90000), _run(100000), _run(95000)],
            "nginx": [_run(50000), _run(60000), _run(55000)],
            "linker-1": [_run(5000), _run(6000), _run(5500, errors=2)],
            "linker-2": [_run(9000), _run(11000), _run(10000)],
        }
    },
    "latency": {
        "direct": [_lat(0.5, 1.0), _lat(0.6, 1.2), _lat(0.4, 1.1)],
        "nginx": [_lat(0.6, 1.3), _lat(0.6, 1.3), _lat(0.6, 1.3)],
        "linker-1": [_lat(0.9, 2.6), _lat(1.0, 3.0), _lat(1.1, 2.8)],
        "linker-2": [_lat(0.9, 2.6), _lat(1.0, 3.0), _lat(1.1, 2.8)],
    },
    "rss_kib": {"linker-1": {"10": 30 * 1024}, "linker-2": {"11": 20 * 1024, "12": 60 * 1024}},
    "propagation": {
        "flips": 50,
        "workers": 2,
        "connections": 16,
        "p50_ms": 20.0,
        "p99_ms": 45.0,
        "max_ms": 50.0,
        "failed_requests": 0,
    },
}


def test_summarize_medians_ratios_and_targets() -> None:
    s = summarize(RESULTS)
    tiny = s["throughput"]["tiny"]
    assert tiny["linker-1"]["rps"] == 5500
    assert (tiny["linker-1"]["rps_min"], tiny["linker-1"]["rps_max"]) == (5000, 6000)
    assert tiny["linker-1"]["errors"] == 2
    assert s["ratios"]["tiny"]["linker-1 / nginx"] == pytest.approx(0.1)
    assert s["ratios"]["tiny"]["linker-2 / direct"] == pytest.approx(10000 / 95000)
    assert s["latency"]["linker-1"]["p50"] == pytest.approx(1.0)
    assert s["added"]["linker-1"]["p50"] == pytest.approx(0.5)  # median 1.0 - median 0.5
    assert s["added"]["linker-1"]["p99"] == pytest.approx(2.8 - 1.1)
    targets = {t["key"]: t for t in s["targets"]}
    assert targets["per_worker_vs_nginx"]["met"] is False  # 0.1 < 0.15
    assert targets["added_p50_ms"]["met"] is True  # 0.5 <= 0.5
    assert targets["added_p99_ms"]["met"] is True  # 1.7 <= 2
    assert targets["rss_per_worker_mib"]["measured"] == 60  # the worst worker counts
    assert targets["rss_per_worker_mib"]["met"] is False
    assert targets["propagation_p99_ms"]["met"] is True


def test_a_missing_measurement_is_not_a_pass() -> None:
    results = {**RESULTS, "propagation": None, "rss_kib": {}}
    targets = {t["key"]: t for t in summarize(results)["targets"]}
    assert targets["propagation_p99_ms"]["met"] is None
    assert targets["rss_per_worker_mib"]["met"] is None


def test_render_shows_every_number_it_was_given(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "BENCHMARKS.md"
    text = render(RESULTS, summarize(RESULTS), None, out, out.parent / "results.json")
    assert "| linker-1 | 5,500 | 5,000 – 6,000 |" in text
    assert "| linker throughput per worker ÷ nginx (1 worker), tiny GETs | 0.100 | ≥ 0.15 |" in text
    assert "**not met**" in text
    assert "wrk -t1 (closed loop)" in text
    assert "| 50 | 20.0 | 45.0 | 50.0 | 0 |" in text
