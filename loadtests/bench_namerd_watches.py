"""Benchmark: how many watch streams one namerd holds, and how fast a change reaches them all.

Black-box: starts ``namerd`` (the installed command) on free loopback ports with its embedded
Redis, opens N ``watch=1`` streams on one namespace with raw asyncio sockets (cheap enough to
hold thousands from one client process), PUTs a new dtab and records, per stream, the time
from the PUT until that stream delivered the new value. It also starts a second namerd on the
same Redis and measures replica-to-replica propagation (PUT on A -> watch on B).

Every figure is printed together with a baseline measured in the same run (one stream), since
these machines are noisy; nothing here asserts on time.

    python -m loadtests.bench_namerd_watches --streams 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from loadtests.stack import free_ports

HOST = "127.0.0.1"


def start_namerd(
    tmp: Path, name: str, storage: str, workers: int
) -> tuple[subprocess.Popen[bytes], int, int]:
    api, admin = free_ports(2)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(
        f"{storage}interfaces:\n- kind: io.l5d.httpController\n  port: {api}\n"
        f"admin:\n  port: {admin}\nlimits:\n  watchHeartbeatMs: 30000\n"
    )
    exe = shutil.which("namerd") or sys.executable
    cmd = [exe] if exe.endswith("namerd") else [exe, "-m", "namerd.main"]
    proc = subprocess.Popen(
        [*cmd, str(cfg), "--workers", str(workers), "--data-dir", str(tmp / "data")],
        stdout=open(tmp / f"{name}.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{HOST}:{admin}/admin/ping", timeout=1) as r:
                if r.read() == b"pong":
                    return proc, api, admin
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"namerd did not start; see {tmp / (name + '.log')}")


def http(method: str, url: str, body: str | None = None) -> int:
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/dtab")
    with urllib.request.urlopen(req, timeout=30) as r:
        return int(r.status)


class Stream:
    """One raw HTTP/1.1 watch stream; parses chunked lines just enough to see values."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = b""

    @classmethod
    async def open(cls, port: int, path: str) -> Stream:
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        return cls(reader, writer)

    async def next_value(self) -> bytes:
        """The next non-blank line of the body (chunk framing stripped)."""
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.strip(), 16)
            data = await self.reader.readexactly(size + 2)
            self.buf += data[:-2]
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                if line.strip():
                    return line

    def close(self) -> None:
        self.writer.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (namerd master, workers, redis)."""
    total = 0
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", str(pid), "-p", str(pid)], capture_output=True, text=True
    )
    for line in out.stdout.split():
        total += int(line)
    return total / 1024


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


async def _timed(task: asyncio.Task[bytes], t0: float, expect: bytes) -> float:
    """Milliseconds from ``t0`` until ``task`` delivered a value containing ``expect``."""
    value = await task
    assert expect in value, value
    return (time.monotonic() - t0) * 1000


async def fan_out(
    api: int, ns: str, n: int, rounds: int, batch: int, pid: int
) -> dict[str, object]:
    path = f"/api/1/dtabs/{ns}?watch=1"
    streams: list[Stream] = []
    opened = time.monotonic()
    for i in range(0, n, batch):
        streams += await asyncio.gather(*(Stream.open(api, path) for _ in range(min(batch, n - i))))
    firsts = await asyncio.gather(*(s.next_value() for s in streams))
    assert all(f == firsts[0] for f in firsts)
    open_s = time.monotonic() - opened
    results = []
    for r in range(rounds):
        waiting = [asyncio.create_task(s.next_value()) for s in streams]
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await asyncio.to_thread(
            http, "PUT", f"http://{HOST}:{api}/api/1/dtabs/{ns}", f"/svc=>/round{r}"
        )
        lat = await asyncio.wait_for(
            asyncio.gather(*(_timed(t, t0, f"round{r}".encode()) for t in waiting)), 60
        )
        results.append(lat)
    rss_open = rss_mb(pid)
    for s in streams:
        s.close()
    all_lat = [x for rnd in results for x in rnd]
    return {
        "streams": n,
        "open_s": round(open_s, 2),
        "p50_ms": round(pct(all_lat, 50), 1),
        "p99_ms": round(pct(all_lat, 99), 1),
        "all_reached_ms": [round(max(rnd), 1) for rnd in results],
        "namerd_rss_mb_with_streams_open": round(rss_open, 1),
    }


async def replica(api_a: int, api_b: int, ns: str, rounds: int) -> dict[str, float]:
    s = await Stream.open(api_b, f"/api/1/dtabs/{ns}?watch=1")
    await s.next_value()
    lat = []
    for r in range(rounds):
        t0 = time.monotonic()
        await asyncio.to_thread(
            http, "PUT", f"http://{HOST}:{api_a}/api/1/dtabs/{ns}", f"/svc=>/rep{r}"
        )
        await s.next_value()
        lat.append((time.monotonic() - t0) * 1000)
    s.close()
    return {"rounds": rounds, "p50_ms": round(pct(lat, 50), 1), "p99_ms": round(pct(lat, 99), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=500, help="connections opened at once")
    ap.add_argument("--replica-rounds", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-namerd-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, api_a, admin_a = start_namerd(tmp, "a", "", args.workers)
        procs.append(a)
        sock = tmp / "data" / "redis.sock"
        b, api_b, _ = start_namerd(
            tmp, "b", f"storage:\n  kind: io.l5d.redis\n  url: unix://{sock}\n", args.workers
        )
        procs.append(b)
        http("PUT", f"http://{HOST}:{api_a}/api/1/dtabs/bench", "/svc=>/start")
        http("PUT", f"http://{HOST}:{api_a}/api/1/dtabs/rep", "/svc=>/start")
        rss_before = rss_mb(a.pid)
        baseline = asyncio.run(fan_out(api_a, "bench", 1, args.rounds, 1, a.pid))
        many = asyncio.run(fan_out(api_a, "bench", args.streams, args.rounds, args.batch, a.pid))
        with urllib.request.urlopen(f"http://{HOST}:{admin_a}/admin/metrics.json") as r:
            metrics = json.loads(r.read())
        rep = asyncio.run(replica(api_a, api_b, "rep", args.replica_rounds))
        report = {
            "baseline_1_stream": baseline,
            "fan_out": many,
            "fan_out_p50_vs_baseline": round(
                float(str(many["p50_ms"])) / max(float(str(baseline["p50_ms"])), 0.1), 1
            ),
            "replica_put_to_watch": rep,
            "namerd_rss_mb_idle": round(rss_before, 1),
            "redis_connections_note": "all watch streams share one pub/sub connection per worker",
            "admin_workers": metrics.get("workers"),
        }
        print(json.dumps(report, indent=2))
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
