"""The benchmark's Python load generators against its Python backend, over real sockets."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.bench.loadgen import Target, run_closed_loop, run_fixed_rate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtests.bench.fastbackend", "--port", str(port)], cwd=REPO
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_closed_loop_counts_answers(backend: int) -> None:
    target = Target("127.0.0.1", backend, "/", "bench")
    result = run_closed_loop(target, connections=4, duration_s=1.0, processes=1)
    assert result.errors == 0
    assert result.requests > 100
    assert result.rps == pytest.approx(result.requests / result.seconds)
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"]
    assert "wrk not installed" in result.tool


def test_closed_loop_reads_large_answers(backend: int) -> None:
    result = run_closed_loop(
        Target("127.0.0.1", backend, "/64k", "bench"), connections=2, duration_s=0.5, processes=2
    )
    assert result.errors == 0
    assert result.requests > 10


def test_fixed_rate_sends_at_the_rate(backend: int) -> None:
    result = run_fixed_rate(
        Target("127.0.0.1", backend, "/", "bench"), rate_rps=200, duration_s=1.0, connections=4
    )
    assert result.errors == 0
    assert result.requests == 200  # every scheduled request, no more, no fewer
    assert not math.isnan(result.latency_ms["p99"])
    assert "overloaded" not in result.tool


def test_fixed_rate_counts_a_dead_target_as_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with pytest.raises(
        ConnectionRefusedError
    ):  # nothing listens: connecting fails loudly, not silently
        run_fixed_rate(Target("127.0.0.1", port, "/", "x"), rate_rps=10, duration_s=0.2)
