"""Long-running linker checks, run in their own CI step (``pytest -m slow``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .linker_proc import backend, running_linker

pytestmark = [pytest.mark.slow, pytest.mark.redis]

GIB = 1 << 30


def rss_kib(pids: list[int]) -> int:
    out = subprocess.run(
        ["ps", "-o", "rss=", "-p", ",".join(map(str, pids))], capture_output=True, text=True
    )
    return sum(int(x) for x in out.stdout.split())


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def test_a_1_gib_upload_streams_through_with_flat_worker_memory(tmp_path: Path) -> None:
    with backend("sink") as sink:
        router = (
            f"  dtab: /svc => /$/inet/127.0.0.1/{sink.port};\n"
            "  identifier:\n    kind: io.l5d.static\n    path: /svc\n"
            "  service:\n    totalTimeoutMs: 0\n"
        )
        with running_linker(tmp_path, router, workers=1) as lk:
            pids = lk.worker_pids()
            base = rss_kib(pids)
            peak = base
            chunk = b"z" * (1 << 20)
            with socket.create_connection(("127.0.0.1", lk.port)) as s:
                s.sendall(
                    b"POST /upload HTTP/1.1\r\nHost: sink\r\n"
                    + f"Content-Length: {GIB}\r\n\r\n".encode()
                )
                for i in range(GIB // len(chunk)):
                    s.sendall(chunk)
                    if i % 64 == 0:
                        peak = max(peak, rss_kib(pids))
                s.settimeout(60)
                answer = b""
                while not _complete(answer):
                    more = s.recv(4096)
                    if not more:
                        break
                    answer += more
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            assert f"sink {GIB}".encode() in answer
            assert sink.bytes_received == GIB
            growth_mib = (peak - base) / 1024
            print(f"\n1 GiB upload: worker RSS {base / 1024:.0f} MiB -> peak {peak / 1024:.0f} MiB")
            # Flat: a body held in memory would add ~1024 MiB; streaming adds buffers only.
            assert growth_mib < 64, growth_mib


def test_namerd_down_for_30_s_under_traffic() -> None:
    env = {**os.environ, "L5_NAMERD_OUTAGE_S": "30"}
    started = time.monotonic()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_linker_e2e.py::test_namerd_outage_keeps_routing_and_catches_up",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert time.monotonic() - started >= 30  # the outage really lasted 30 s
