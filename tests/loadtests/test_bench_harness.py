"""The benchmark harness end to end (slow): one short real run writes the report and plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize(
    "fallbacks",
    [[], ["--tool", "python", "--no-nginx"]],
    ids=["as-installed", "python-fallbacks"],
)
def test_quick_run_writes_report_plot_and_raw_results(tmp_path: Path, fallbacks: list[str]) -> None:
    out, assets = tmp_path / "BENCHMARKS.md", tmp_path / "assets"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtests.bench",
            "--quick",
            "--skip-watches",
            "--out",
            str(out),
            "--assets",
            str(assets),
            *fallbacks,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((assets / "results.json").read_text())
    systems = set(results["throughput"]["tiny"])
    assert {"direct", "linker-1", "trio-h11-floor"} <= systems
    if fallbacks:
        assert "nginx" not in systems
        assert results["tool"] == "python"
    for workload in ("tiny", "64k"):
        for name, runs in results["throughput"][workload].items():
            assert runs, (workload, name)
            assert all(r["rps"] > 0 for r in runs), (workload, name)
            # Errors would mean a misconfigured system was measured; the harness checks
            # answers first, so a run with errors is a real failure.
            assert all(r["errors"] == 0 for r in runs), (workload, name, runs)
    assert results["propagation"]["failed_requests"] == 0
    text = out.read_text()
    assert "## Targets" in text
    assert "linker-1" in text
    assert results["tool_note"] in text
    if (assets / "benchmarks.png").exists():
        assert (assets / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
