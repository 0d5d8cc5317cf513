"""The benchmark harness: one command, every system in the same invocation, interleaved.

    python -m loadtests.bench                  # full run; rewrites BENCHMARKS.md and its plot
    python -m loadtests.bench --quick --out /tmp/b.md --assets /tmp/b   # a short smoke run
    python -m loadtests.bench --setup          # first apt-get install nginx-light wrk (root)

What it does (see BENCHMARKS.md for the results and the machine they came from):

1. starts a fast backend, nginx as a 1-worker reverse proxy (if nginx is installed), namerd,
   a linker with 1 worker and one with ``--workers`` (default: CPU count);
2. for each repeat, in an order rotated every repeat, runs the same closed-loop workload
   (wrk, or the Python fallback) against each system: tiny keep-alive GETs and 64 KiB
   answers; worker RSS is sampled during the linker runs;
3. measures latency at a fixed rate (``--rate-rps``, open loop) against each system, so
   "added latency" is the linker's percentile minus the direct percentile of the same run;
4. runs the dtab propagation benchmark and namerd's watch-capacity benchmark;
5. writes the raw results (JSON), the report (Markdown) and the plot (PNG).

Medians over the repeats are reported, with the min–max spread; ratios are taken between
medians of the same invocation (the machine is noisy: never compare across invocations).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import loadgen, report, systems
from .machine import describe_machine
from .stats import LoadResult

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = {"tiny": "/", "64k": "/64k"}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    ap.add_argument("--duration-s", type=float, default=5.0, help="each throughput run")
    ap.add_argument("--connections", type=int, default=32, help="closed-loop connections")
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 2, help="the N of linker-N (CPU count)"
    )
    ap.add_argument("--rate-rps", type=float, default=1000.0, help="fixed rate for latency")
    ap.add_argument("--latency-duration-s", type=float, default=10.0, help="each latency run")
    ap.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    ap.add_argument("--flips", type=int, default=50, help="propagation benchmark flips")
    ap.add_argument("--watch-streams", type=int, default=5000, help="namerd watch streams")
    ap.add_argument(
        "--no-nginx",
        action="store_true",
        help="act as if nginx were not installed (no nginx proxy; the Python backend)",
    )
    ap.add_argument(
        "--no-floor",
        action="store_true",
        help="leave out the trio + h11 framework floor (loadtests.bench.floor)",
    )
    ap.add_argument("--skip-propagation", action="store_true")
    ap.add_argument("--skip-watches", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="the report")
    ap.add_argument(
        "--assets", type=Path, default=REPO / "docs" / "benchmarks", help="plot + raw JSON"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 1 repeat of 2 s runs, 2 s latency runs, 5 flips, 200 watch streams",
    )
    ap.add_argument(
        "--from-results",
        type=Path,
        metavar="RESULTS_JSON",
        help="measure nothing: render the report and plot again from a results.json",
    )
    ap.add_argument(
        "--setup",
        action="store_true",
        help="apt-get install nginx-light and wrk first if they are missing (needs root)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.duration_s, args.latency_duration_s = 1, 2.0, 2.0
        args.flips, args.watch_streams = 5, 200
    return args


def _setup() -> None:
    missing = [p for p, exe in (("nginx-light", "nginx"), ("wrk", "wrk")) if not _which(exe)]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"--setup: cannot install {missing} (needs root and apt-get); going on without")
        return
    print(f"--setup: apt-get install {' '.join(missing)}", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def _which(exe: str) -> str | None:
    return systems.nginx_path() if exe == "nginx" else shutil.which(exe)


class _RssSampler:
    """Peak RSS of the given pids while a run goes on (sampled every ``interval_s``)."""

    def __init__(self, pids: list[int], interval_s: float = 0.2) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.peak_kib = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak_kib[pid] = max(self.peak_kib[pid], systems.rss_kib(pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._run_once()

    def _run_once(self) -> None:
        for pid in self.pids:
            self.peak_kib[pid] = max(self.peak_kib[pid], systems.rss_kib(pid))


def _load(tool: str, target: loadgen.Target, connections: int, duration_s: float) -> LoadResult:
    if tool == "wrk":
        return loadgen.run_wrk(target, connections=connections, duration_s=duration_s, timeout_s=10)
    return loadgen.run_closed_loop(target, connections=connections, duration_s=duration_s)


def _rotate(items: list[str], k: int) -> list[str]:
    k %= len(items)
    return items[k:] + items[:k]


@contextlib.contextmanager
def _stack(workdir: Path, workers: int, floor: bool) -> Iterator[dict[str, systems.Proc]]:
    procs: dict[str, systems.Proc] = {}
    try:
        procs["direct"] = systems.start_backend(workdir)
        nginx = systems.start_nginx_proxy(workdir, procs["direct"].port)
        if nginx is not None:
            procs["nginx"] = nginx
        if floor:
            procs["trio-h11-floor"] = systems.start_floor(workdir, procs["direct"].port)
        namerd = systems.start_namerd(workdir, procs["direct"].port)
        procs["_namerd"] = namerd
        procs["linker-1"] = systems.start_linker(workdir, namerd.port, 1, "linker-1")
        procs[f"linker-{workers}"] = systems.start_linker(
            workdir, namerd.port, workers, f"linker-{workers}"
        )
        yield procs
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop()


def _run_json(cmd: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a benchmark script that prints one JSON object at the end of its stdout."""
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO, check=False
    )
    start = out.stdout.rfind("\n{")
    text = out.stdout[start + 1 :] if start >= 0 else out.stdout
    try:
        value: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({out.returncode}):\n"
            f"{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
        ) from None
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.from_results is not None:
        return _write_report(json.loads(args.from_results.read_text()), args)
    if args.setup:
        _setup()
    if args.no_nginx:
        systems.NGINX_DISABLED = True
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if loadgen.wrk_path() else "python"
    if tool == "wrk" and not loadgen.wrk_path():
        print("wrk is not installed (apt-get install wrk, or --setup)", file=sys.stderr)
        return 2
    started = datetime.now(UTC)
    command = "python -m loadtests.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": describe_machine(),
        "tool": tool,
        "tool_note": (
            "wrk -t1 (closed loop)"
            if tool == "wrk"
            else "Python closed loop (wrk not installed: its ceiling is lower than wrk's)"
        ),
        "settings": {
            "repeats": args.repeats,
            "duration_s": args.duration_s,
            "connections": args.connections,
            "workers": args.workers,
            "rate_rps": args.rate_rps,
            "latency_duration_s": args.latency_duration_s,
        },
        "throughput": {},  # workload -> system -> [LoadResult dict per repeat]
        "latency": {},  # system -> [LoadResult dict per repeat]
        "rss_kib": {},  # system -> {pid: peak}
        "systems": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="l5py-bench-"))
    print(f"work directory: {workdir}; load tool: {results['tool_note']}", flush=True)
    try:
        with _stack(workdir, args.workers, not args.no_floor) as procs:
            names = [n for n in procs if not n.startswith("_")]
            for name in names:
                results["systems"][name] = {"port": procs[name].port, **procs[name].notes}
            if "nginx" not in procs:
                print("nginx is not installed: no nginx comparison (apt-get install nginx-light)")
            host = {n: ("app" if n.startswith("linker") else "bench") for n in names}

            def target(name: str, path: str) -> loadgen.Target:
                return loadgen.Target(systems.HOST, procs[name].port, path, host[name])

            for name in names:
                systems.check_answers(
                    name, procs[name].port, host[name], {"/": 3, "/64k": systems.BODY_64K}
                )
            print("warming up", flush=True)
            for name in names:
                for path in WORKLOADS.values():
                    _load(tool, target(name, path), args.connections, 1)
            for rep in range(args.repeats):
                for workload, path in WORKLOADS.items():
                    for name in _rotate(names, rep):
                        pids = procs[name].worker_pids() if name.startswith("linker") else []
                        with _RssSampler(pids) as rss:
                            res = _load(tool, target(name, path), args.connections, args.duration_s)
                        runs = results["throughput"].setdefault(workload, {}).setdefault(name, [])
                        runs.append(res.as_dict())
                        if pids:
                            peaks = results["rss_kib"].setdefault(name, {})
                            for pid, kib in rss.peak_kib.items():
                                peaks[str(pid)] = max(peaks.get(str(pid), 0), kib)
                        print(
                            f"[{rep + 1}/{args.repeats}] {workload:4} {name:9} "
                            f"{res.rps:9.0f} rps  "
                            f"p99 {res.latency_ms.get('p99', float('nan')):7.2f} ms"
                            f"  errors {res.errors}",
                            flush=True,
                        )
                for name in _rotate(names, rep):
                    res = loadgen.run_fixed_rate(
                        target(name, "/"),
                        rate_rps=args.rate_rps,
                        duration_s=args.latency_duration_s,
                    )
                    results["latency"].setdefault(name, []).append(res.as_dict())
                    print(
                        f"[{rep + 1}/{args.repeats}] {args.rate_rps:g} rps {name:9} "
                        f"p50 {res.latency_ms['p50']:.3f} ms  p99 {res.latency_ms['p99']:.3f} ms"
                        f"  errors {res.errors}",
                        flush=True,
                    )
        side_benchmarks = [
            ("propagation", args.skip_propagation, "bench_propagation",
             ["--flips", str(args.flips), "--workers", str(args.workers)], 600),
            ("watches", args.skip_watches, "bench_namerd_watches",
             ["--streams", str(args.watch_streams)], 900),
        ]  # fmt: skip
        for key, skip, module, options, timeout_s in side_benchmarks:
            if not skip:
                print(f"{module} {' '.join(options)}", flush=True)
                results[key] = _run_json(
                    [sys.executable, "-m", f"loadtests.{module}", *options], timeout_s
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["wall_s"] = round(time.time() - started.timestamp(), 1)
    return _write_report(results, args)


def _write_report(results: dict[str, Any], args: argparse.Namespace) -> int:
    args.assets.mkdir(parents=True, exist_ok=True)
    (args.assets / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = report.summarize(results)
    plot = report.plot(summary, args.assets / "benchmarks.png")
    args.out.write_text(
        report.render(results, summary, plot, args.out, args.assets / "results.json")
    )
    print(report.console_summary(summary))
    print(
        f"wrote {args.out}, {plot or '(no plot: matplotlib missing)'}, "
        f"{args.assets / 'results.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
