"""Turn the harness's raw results into medians, ratios, target checks, a plot and BENCHMARKS.md.

``summarize`` is pure (unit-tested); ``plot`` needs matplotlib (the ``load`` extra); ``render``
writes Markdown whose every number comes from the results of the run it is given.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .stats import median_or_nan, ratio

__all__ = ["console_summary", "plot", "render", "summarize"]

#: The issue's targets: (key, description, bound, "min"/"max").
TARGETS = (
    (
        "per_worker_vs_nginx",
        "linker throughput per worker ÷ nginx (1 worker), tiny GETs",
        0.15,
        "min",
    ),
    ("added_p50_ms", "added latency p50 at the fixed rate (linker-1 − direct)", 0.5, "max"),
    ("added_p99_ms", "added latency p99 at the fixed rate (linker-1 − direct)", 2.0, "max"),
    ("rss_per_worker_mib", "peak RSS per linker worker under load", 50.0, "max"),
    ("propagation_p99_ms", "dtab propagation p99 (PUT → every worker routes by it)", 100.0, "max"),
)

_NAN = float("nan")


def _runs_stat(runs: list[dict[str, Any]], key: str) -> float:
    values = []
    for r in runs:
        v = r["latency_ms"].get(key) if key.startswith("p") else r.get(key)
        if v is not None:
            values.append(float(v))
    return median_or_nan(values)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repeats, ratios between systems, and the target checks."""
    out: dict[str, Any] = {"throughput": {}, "ratios": {}, "latency": {}, "added": {}, "rss": {}}
    workers = int(results["settings"]["workers"])
    linker_n = f"linker-{workers}"
    for workload, by_system in results["throughput"].items():
        table: dict[str, Any] = {}
        for name, runs in by_system.items():
            rps = [float(r["rps"]) for r in runs]
            table[name] = {
                "rps": median_or_nan(rps),
                "rps_min": min(rps) if rps else _NAN,
                "rps_max": max(rps) if rps else _NAN,
                "p50_ms": _runs_stat(runs, "p50"),
                "p99_ms": _runs_stat(runs, "p99"),
                "errors": sum(int(r.get("errors", 0)) for r in runs),
                "repeats": len(runs),
            }
        out["throughput"][workload] = table

        def rate(name: str, table: dict[str, Any] = table) -> float:
            return float(table[name]["rps"]) if name in table else _NAN

        out["ratios"][workload] = {
            "linker-1 / direct": ratio(rate("linker-1"), rate("direct")),
            "linker-1 / nginx": ratio(rate("linker-1"), rate("nginx")),
            "linker-1 / trio-h11-floor": ratio(rate("linker-1"), rate("trio-h11-floor")),
            "trio-h11-floor / nginx": ratio(rate("trio-h11-floor"), rate("nginx")),
            f"{linker_n} / direct": ratio(rate(linker_n), rate("direct")),
            f"{linker_n} / nginx": ratio(rate(linker_n), rate("nginx")),
        }
    for name, runs in results["latency"].items():
        out["latency"][name] = {
            k: _runs_stat(runs, k) for k in ("p50", "p75", "p90", "p99", "p99_9")
        } | {"errors": sum(int(r.get("errors", 0)) for r in runs)}
    direct = out["latency"].get("direct")
    if direct:
        for name, lat in out["latency"].items():
            if name != "direct":
                out["added"][name] = {k: lat[k] - direct[k] for k in ("p50", "p90", "p99")}
    for name, peaks in results.get("rss_kib", {}).items():
        values = [int(v) for v in peaks.values() if int(v) > 0]
        out["rss"][name] = {
            "max_mib": max(values) / 1024 if values else _NAN,
            "workers": len(values),
        }
    prop = results.get("propagation") or {}
    measured = {
        "per_worker_vs_nginx": out["ratios"].get("tiny", {}).get("linker-1 / nginx", _NAN),
        "added_p50_ms": out["added"].get("linker-1", {}).get("p50", _NAN),
        "added_p99_ms": out["added"].get("linker-1", {}).get("p99", _NAN),
        "rss_per_worker_mib": max(
            (r["max_mib"] for r in out["rss"].values() if not math.isnan(r["max_mib"])),
            default=_NAN,
        ),
        "propagation_p99_ms": float(prop.get("p99_ms", _NAN)),
    }
    out["targets"] = [
        {
            "key": key,
            "what": what,
            "bound": bound,
            "kind": kind,
            "measured": measured[key],
            "met": (
                None
                if math.isnan(measured[key])
                else (measured[key] >= bound if kind == "min" else measured[key] <= bound)
            ),
        }
        for key, what, bound, kind in TARGETS
    ]
    return out


def _f(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    """Throughput (both workloads) and latency percentiles at the fixed rate, per system."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    workloads = list(summary["throughput"])
    systems = list(next(iter(summary["throughput"].values())).keys()) if workloads else []
    width = 0.8 / max(1, len(workloads))
    for i, workload in enumerate(workloads):
        table = summary["throughput"][workload]
        xs = [j + i * width for j in range(len(systems))]
        vals = [table[s]["rps"] / 1000 for s in systems]
        errs = [
            [(table[s]["rps"] - table[s]["rps_min"]) / 1000 for s in systems],
            [(table[s]["rps_max"] - table[s]["rps"]) / 1000 for s in systems],
        ]
        ax1.bar(xs, vals, width, yerr=errs, capsize=3, label=f"{workload} GET")
    ax1.set_xticks([j + width * (len(workloads) - 1) / 2 for j in range(len(systems))])
    ax1.set_xticklabels(systems)
    ax1.set_yscale("log")  # the proxies differ by an order of magnitude or more
    ax1.set_ylabel("thousand requests / s (median, min–max; log scale)")
    ax1.set_title("Closed-loop throughput")
    ax1.legend()
    lat = summary["latency"]
    names = list(lat)
    keys = ("p50", "p90", "p99")
    width2 = 0.8 / len(keys)
    for i, k in enumerate(keys):
        xs = [j + i * width2 for j in range(len(names))]
        ax2.bar(xs, [lat[n][k] for n in names], width2, label=k)
    ax2.set_xticks([j + width2 for j in range(len(names))])
    ax2.set_xticklabels(names)
    ax2.set_ylabel("ms (median of repeats)")
    ax2.set_title("Latency at a fixed rate (open loop, tiny GETs)")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def console_summary(summary: dict[str, Any]) -> str:
    lines = ["", "targets:"]
    for t in summary["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        sign = "≥" if t["kind"] == "min" else "≤"
        lines.append(
            f"  {t['what']}: {_f(t['measured'], 3)} (target {sign} {t['bound']:g}) {verdict}"
        )
    return "\n".join(lines)


def render(
    results: dict[str, Any],
    summary: dict[str, Any],
    plot_path: Path | None,
    out: Path,
    results_path: Path,
) -> str:
    """BENCHMARKS.md for one run."""
    m = results["machine"]
    s = results["settings"]
    lines: list[str] = []
    add = lines.append
    add("# Benchmarks")
    add("")
    add(
        "Generated by `python -m loadtests.bench` from one real run; do not edit by hand — run "
        "the harness again. Every ratio compares medians from the **same** invocation (the "
        "machine is shared and noisy; numbers from different runs are not comparable)."
    )
    add("")
    add("## Machine and command")
    add("")
    add(f"- run: {results['started_at']} → {results['finished_at']} ({results['wall_s']} s)")
    add(f"- command: `{results['command']}`")
    add(
        f"- CPU: {m['cpu_model']}, {m['cpus']} CPUs ({m['cpus_usable']} usable); "
        f"memory {m['memory_gib']} GiB; load average at start {' '.join(m['load_average'])}"
    )
    add(
        f"- OS: {m['os']}, kernel {m['kernel']}; Python {m['python']}, "
        f"trio {m['trio']}, h11 {m['h11']}"
    )
    add(f"- nginx: {m['nginx'] or 'not installed'}; wrk: {m['wrk'] or 'not installed'}")
    add(f"- commit: {m['commit']}")
    add(f"- load tool: **{results['tool_note']}**; {s['connections']} connections")
    add(
        f"- {s['repeats']} interleaved repeats (system order rotated each repeat) of "
        f"{s['duration_s']:g} s per system and workload; "
        f"latency runs {s['latency_duration_s']:g} s "
        f"at {s['rate_rps']:g} rps"
    )
    add("")
    add("Systems, all on 127.0.0.1 and sharing the machine's CPUs with the load generator:")
    add("")
    for name, info in results["systems"].items():
        detail = {
            "direct": f"the backend itself: {info.get('kind', '')}",
            "nginx": "nginx reverse proxy, 1 worker, keep-alive upstream (`keepalive 128`)",
            "trio-h11-floor": (
                "the framework floor: a minimal trio + h11 forwarder with no routing, "
                "timeouts, pool or metrics (`loadtests/bench/floor.py`), one process"
            ),
        }.get(
            name,
            f"linker, {info.get('workers', '?')} worker(s), namerd-bound, all routing features on",
        )
        add(f"- **{name}**: {detail}")
    add("")
    add(
        "The linker config: Host identifier, `io.l5d.namerd.http` interpreter (dtab "
        "`/svc => /#/io.l5d.fs`), p2c balancer, consecutiveFailures accrual, "
        "retryableRead5XX classifier with a retry budget, `totalTimeoutMs` (so "
        "`l5d-ctx-deadline` goes upstream), `l5d-dst-*`/`l5d-reqid`/`Via` headers, metrics."
    )
    add("")
    if plot_path is not None:
        rel = os.path.relpath(plot_path, out.parent)
        add(f"![throughput and latency per system]({rel})")
        add("")
    add("## Targets")
    add("")
    add("| target | measured | goal | |")
    add("|---|---:|---:|---|")
    for t in summary["targets"]:
        sign = "≥" if t["kind"] == "min" else "≤"
        verdict = {True: "met", False: "**not met**", None: "not measured"}[t["met"]]
        add(f"| {t['what']} | {_f(t['measured'], 3)} | {sign} {t['bound']:g} | {verdict} |")
    add("")
    add("## Throughput (closed loop)")
    add("")
    for workload, table in summary["throughput"].items():
        add(f"### {workload} GETs")
        add("")
        add("| system | rps (median) | min – max | p50 ms | p99 ms | errors |")
        add("|---|---:|---:|---:|---:|---:|")
        for name, row in table.items():
            add(
                f"| {name} | {_f(row['rps'], 0)} "
                f"| {_f(row['rps_min'], 0)} – {_f(row['rps_max'], 0)} "
                f"| {_f(row['p50_ms'])} | {_f(row['p99_ms'])} | {row['errors']} |"
            )
        add("")
        add("| ratio | value |")
        add("|---|---:|")
        for key, value in summary["ratios"][workload].items():
            add(f"| {key} | {_f(value, 3)} |")
        add("")
    add(f"## Latency at {s['rate_rps']:g} rps (open loop, tiny GETs)")
    add("")
    add(
        "Measured from each request's scheduled send time (a stall is charged to every request "
        "it delayed). *Added* is the system's percentile minus the direct percentile of the "
        "same run; the Python prober's own overhead is in both and cancels out."
    )
    add("")
    add("| system | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 | added p99 | errors |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lat in summary["latency"].items():
        added = summary["added"].get(name, {})
        add(
            f"| {name} | {_f(lat['p50'], 3)} | {_f(lat['p90'], 3)} | {_f(lat['p99'], 3)} "
            f"| {_f(lat['p99_9'], 3)} | {_f(added.get('p50', _NAN), 3)} "
            f"| {_f(added.get('p99', _NAN), 3)} | {lat['errors']} |"
        )
    add("")
    add("## Memory")
    add("")
    add("| system | workers | peak RSS per worker (MiB) |")
    add("|---|---:|---:|")
    for name, row in summary["rss"].items():
        add(f"| {name} | {row['workers']} | {_f(row['max_mib'], 1)} |")
    add("")
    add("Sampled every 0.2 s during every linker run (both workloads); Linkerd 1.x: 105–400 MB.")
    add("")
    prop = results.get("propagation")
    if prop:
        add("## dtab propagation")
        add("")
        add(
            "`python -m loadtests.bench_propagation "
            f"--flips {prop['flips']} --workers {prop['workers']}`: "
            f"time from a dtab PUT to namerd until every one of {prop['connections']} held "
            "keep-alive connections is answered by the new backend; the connections were "
            f"checked to cover {prop.get('workers_covered') or '?'} of {prop['workers']} "
            "workers (by which worker owns each accepted socket, from /proc)."
        )
        add("")
        add("| flips | p50 ms | p99 ms | max ms | failed requests |")
        add("|---:|---:|---:|---:|---:|")
        add(
            f"| {prop['flips']} | {prop['p50_ms']} | {prop['p99_ms']} | {prop['max_ms']} "
            f"| {prop['failed_requests']} |"
        )
        add("")
    watches = results.get("watches")
    if watches:
        add("## namerd watch capacity")
        add("")
        add("`python -m loadtests.bench_namerd_watches` (namerd with 2 workers, embedded Redis):")
        add("")
        add("```json")
        add(json.dumps(watches, indent=2))
        add("```")
        add("")
    add("## What the profile showed, and what changed")
    add("")
    add(PROFILE_NOTES)
    add("")
    add(f"Raw results of this run: `{os.path.relpath(results_path, out.parent)}`.")
    add("")
    return "\n".join(lines)


PROFILE_NOTES = """\
Measured during development (py-spy, and the worker's CPU time per request from /proc under
`wrk -c32` tiny GETs), not by the run above. Before the changes the worker was CPU-bound at
~450 µs of CPU per request (~2,100 rps); the floor forwarder needs ~150 µs. The time was spread
thin: trio's socket layer ~30 % (several wrapper layers per `send`/`recv`), h11 ~29 %, our code
~25 %, `contextlib` ~5 % (`trio.fail_after` generators). What changed:

- `hostConnectionPool.maxIdle` default 16 → 100: with 32 concurrent requests the pool kept
  closing and reopening upstream connections (`connect`/`close` were among the top frames);
- response head, buffered body chunks and end of message in one `send` (a body says when its
  next chunk is already buffered: `ready()`), instead of two or three;
- `linker.http.fastsocket`: trio's stream semantics (check for cancellation, try the system call,
  wait only on EAGAIN, yield after) in straight-line code instead of `SocketStream`'s layers.
  Skipping the yield after an immediate success was tried and rejected: more CPU per request
  and a p99 four times worse at saturation;
- cached per-name state on the hot path: stat handles, service/client parameters, the
  balancer's endpoint set compared by identity, memoised `Path.show()` and `Dtab` hash/text,
  the interpreter's answer kept per watch generation with a synchronous `resolve_now` (no
  cancel scope and no checkpoint when the answer is known);
- bare `CancelScope`s instead of `fail_after`/`fail_at`, the write-timeout scope only when the
  kernel did not take everything at once, `l5d-reqid` from a per-worker PRNG instead of
  `secrets` (a `getrandom` call per request), the upstream head built in one pass.

Together: ~310 µs per request (~3,100 rps per worker), about twice the floor. What is left is
h11 (~33 %: it parses and validates two requests and two responses per proxied request, and
its public API re-validates every header a proxy forwards) and system calls (~20 %, as for
any proxy); the rest is spread over routing, policy and metrics at 1–2 % each. The throughput
target (0.15 of nginx per worker) is out of reach for this design on this machine: the floor
forwarder itself reaches about 0.11. Workers add throughput (linker-2 above)."""
