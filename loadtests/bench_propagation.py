"""Benchmark: time from a dtab PUT to namerd until every linker worker routes by it.

Black-box: starts ``namerd`` (embedded Redis, io.l5d.fs) and a ``linker`` (N workers, bound by
namerd), two tiny backends (v1 and v2), then flips ``/svc/app`` between them ``--flips`` times.
It holds several keep-alive connections into the linker, which the kernel spreads over the
workers; before the first flip it checks (Linux: /proc, which worker owns which accepted
socket) that every worker holds at least one of them, opening more if needed, so "every
worker routes by it" is really measured. After each PUT it polls every connection until each
one is answered by the new backend; the flip's propagation time is when the LAST connection
switched.

    python -m loadtests.bench_propagation --flips 50 --workers 2

Prints p50/p99/max over the flips, and the number of failed requests (must be 0).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loadtests.stack import free_ports

HOST = "127.0.0.1"


def backend(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # http.server sends head and body separately; with Nagle on, the body waits for
            # the peer's delayed ACK (~40 ms) and the benchmark would measure that instead.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def command(name: str) -> list[str]:
    exe = shutil.which(name)
    return (
        [exe]
        if exe
        else [sys.executable, "-m", f"{'namerd' if name == 'namerd' else 'linker'}.main"]
    )


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _owners(workers: list[int], router_port: int) -> dict[int, int]:
    """Client port -> the worker pid holding the accepted side of that connection (Linux)."""
    inode_peer: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == router_port:
                inode_peer[fields[9]] = int(fields[2].rsplit(":", 1)[1], 16)
    owners: dict[int, int] = {}
    for pid in workers:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inode_peer:
                owners[inode_peer[target[8:-1]]] = pid
    return owners


def put_dtab(api: int, dtab: str) -> None:
    req = urllib.request.Request(
        f"http://{HOST}:{api}/api/1/dtabs/default",
        data=dtab.encode(),
        method="PUT",
        headers={"Content-Type": "application/dtab"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flips", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16, help="keep-alive connections held")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-prop-"))
    procs: list[subprocess.Popen[bytes]] = []
    v1, v2 = backend("v1"), backend("v2")
    try:
        disco = tmp / "disco"
        disco.mkdir()
        (disco / "v1").write_text(f"{HOST} {v1.server_address[1]}\n")
        (disco / "v2").write_text(f"{HOST} {v2.server_address[1]}\n")
        api, nadmin, port, ladmin = free_ports(4)
        (tmp / "namerd.yaml").write_text(
            f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
            f"interfaces:\n- kind: io.l5d.httpController\n  port: {api}\nadmin:\n  port: {nadmin}\n"
        )
        (tmp / "linker.yaml").write_text(
            f"admin:\n  port: {ladmin}\nrouters:\n- protocol: http\n  servers:\n  - port: {port}\n"
            f"  interpreter:\n    kind: io.l5d.namerd.http\n    dst: /$/inet/{HOST}/{api}\n"
        )
        log = open(tmp / "stack.log", "wb")
        procs.append(
            subprocess.Popen(
                [*command("namerd"), str(tmp / "namerd.yaml"), "--data-dir", str(tmp / "data")],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_http(f"http://{HOST}:{nadmin}/admin/ping")
        put_dtab(api, "/svc => /#/io.l5d.fs; /svc/app => /svc/v1;")
        procs.append(
            subprocess.Popen(
                [
                    *command("linker"),
                    "-c",
                    str(tmp / "linker.yaml"),
                    "--workers",
                    str(args.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_http(f"http://{HOST}:{ladmin}/admin/ping")
        conns = [
            http.client.HTTPConnection(HOST, port, timeout=10) for _ in range(args.connections)
        ]
        failures = 0

        def ask(c: http.client.HTTPConnection) -> str:
            nonlocal failures
            c.request("GET", "/", headers={"Host": "app"})
            r = c.getresponse()
            body = r.read().decode()
            if r.status != 200:
                failures += 1
            return body

        deadline = time.monotonic() + 30
        while not all(ask(c) == "v1" for c in conns):
            if time.monotonic() > deadline:
                raise SystemExit("the linker never routed to v1; see " + str(tmp / "stack.log"))
            time.sleep(0.05)
        # Every worker must hold at least one of our connections (else a worker that never
        # switches would go unmeasured). Open more until it does (bounded).
        workers = _children(procs[-1].pid)
        covered: set[int] = set()
        if Path("/proc/net/tcp").exists() and workers:
            for _ in range(20):
                ports = {c.sock.getsockname()[1]: c for c in conns if c.sock is not None}
                covered = {pid for p, pid in _owners(workers, port).items() if p in ports}
                if covered >= set(workers):
                    break
                extra = http.client.HTTPConnection(HOST, port, timeout=10)
                ask(extra)
                conns.append(extra)
            if not covered >= set(workers):
                raise SystemExit(f"could not reach every worker ({covered} of {workers})")
        deadline = time.monotonic() + 30
        while not all(ask(c) == "v1" for c in conns):
            if time.monotonic() > deadline:
                raise SystemExit("the linker never routed to v1; see " + str(tmp / "stack.log"))
            time.sleep(0.05)
        times: list[float] = []
        current = "v1"
        for _ in range(args.flips):
            target = "v2" if current == "v1" else "v1"
            pending = set(range(len(conns)))
            t0 = time.monotonic()
            put_dtab(api, f"/svc => /#/io.l5d.fs; /svc/app => /svc/{target};")
            last = t0
            while pending:
                for i in list(pending):
                    if ask(conns[i]) == target:
                        pending.discard(i)
                        last = time.monotonic()
                if time.monotonic() - t0 > 30:
                    raise SystemExit(f"flip to {target} not seen by every connection within 30 s")
            times.append((last - t0) * 1000)
            current = target
            time.sleep(0.05)
        for c in conns:
            c.close()
        print(
            json.dumps(
                {
                    "flips": args.flips,
                    "workers": args.workers,
                    "connections": len(conns),
                    "workers_covered": len(covered) if covered else None,
                    "p50_ms": round(statistics.median(times), 1),
                    "p99_ms": round(pct(times, 99), 1),
                    "max_ms": round(max(times), 1),
                    "failed_requests": failures,
                    "note": "PUT until the last held connection answered from the new backend",
                },
                indent=2,
            )
        )
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
        v1.shutdown()
        v2.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
