"""Locust traffic through a linker: steady mixed GET/POST over several services by Host header.

Standalone (the compose deployment does this, master/workers with ``LOCUST_HOST`` set)::

    LOCUST_HOST=http://127.0.0.1:4140 locust -f loadtests/locustfile.py
    locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 30s --host http://127.0.0.1:4140

``python -m loadtests.run`` runs this same file as a subprocess for every scenario and does the
mid-run actions (dtab flip, backend kill, namerd outage) from its own process.

Configuration, all by environment variable (so a compose file can set them):

==============================  ===========  ================================================
variable                        default      meaning
==============================  ===========  ================================================
LOADTEST_SERVICES               hello,world  Host headers to spread requests over (the
                                             quick start's two demo services)
LOADTEST_POST_RATIO             0.25         share of requests that are POSTs (rest GETs)
LOADTEST_POST_BYTES             1024         POST body size
LOADTEST_PATH                   /            request path
LOADTEST_RPS_PER_USER           10           each user's request rate; 0 = as fast as it can
LOADTEST_REQUEST_TIMEOUT_S      35           connect and read timeout of one request (above
                                             the linker's 30 s totalTimeoutMs, so that the
                                             linker's own error is what gets recorded)
LOADTEST_SERVED_BY_HEADER       X-Served-By  response header naming the backend (recorded)
LOADTEST_REQUESTS_CSV           (unset)      write one row per request here; ``{pid}`` in the
                                             path is replaced (one file per locust worker)
LOADTEST_STARTED_FILE           (unset)      on test start, write the wall-clock time here
LOADTEST_TOTALS_JSON            (unset)      at exit, write locust's final totals here (its
                                             ``--csv`` files are rewritten once a second and
                                             can miss the last second)
==============================  ===========  ================================================

A request fails when it gets no response or a non-2xx status; the failure message carries the
linker's ``l5d-err`` reason (URL-decoded) when there is one, so locust's failures CSV says *why*.

No imports beyond locust and the stdlib: locust monkey-patches the process with gevent, and
this file must also load on a bare locust image.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

SERVICES = [
    s.strip() for s in os.environ.get("LOADTEST_SERVICES", "hello,world").split(",") if s.strip()
]
POST_RATIO = float(os.environ.get("LOADTEST_POST_RATIO", "0.25"))
POST_BYTES = int(os.environ.get("LOADTEST_POST_BYTES", "1024"))
PATH = os.environ.get("LOADTEST_PATH", "/")
RPS_PER_USER = float(os.environ.get("LOADTEST_RPS_PER_USER", "10"))
REQUEST_TIMEOUT_S = float(os.environ.get("LOADTEST_REQUEST_TIMEOUT_S", "35"))
SERVED_BY_HEADER = os.environ.get("LOADTEST_SERVED_BY_HEADER", "X-Served-By")
REQUESTS_CSV = os.environ.get("LOADTEST_REQUESTS_CSV", "")
STARTED_FILE = os.environ.get("LOADTEST_STARTED_FILE", "")
TOTALS_JSON = os.environ.get("LOADTEST_TOTALS_JSON", "")

#: Columns of the per-request CSV (``LOADTEST_REQUESTS_CSV``); times are wall-clock seconds.
REQUEST_COLUMNS = (
    "start_time",
    "latency_ms",
    "method",
    "service",
    "status",
    "served_by",
    "ok",
    "error",
)

_BODY = "x" * POST_BYTES  # ASCII: the same bytes on the wire as b"x" * POST_BYTES
_log: _RequestLog | None = None


class _RequestLog:
    """One CSV row per request, buffered (gevent: a write is a quick syscall, never a wait)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "w", newline="", buffering=1 << 16)
        self._csv = csv.writer(self._file)
        self._csv.writerow(REQUEST_COLUMNS)

    def row(self, *values: Any) -> None:
        """Append one request."""
        self._csv.writerow(values)

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()


@events.init.add_listener
def _open_log(environment: Any, **_: Any) -> None:
    global _log
    # A master sends no requests; only the process that does writes the file.
    if REQUESTS_CSV and not isinstance(environment.runner, MasterRunner):
        _log = _RequestLog(REQUESTS_CSV.replace("{pid}", str(os.getpid())))


@events.test_start.add_listener
def _mark_start(environment: Any, **_: Any) -> None:
    # The orchestrator times its mid-run actions from this moment, not from locust's launch
    # (importing gevent and spawning users takes a second or two on a busy machine).
    if STARTED_FILE:
        tmp = STARTED_FILE + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{time.time():.6f}\n")
        os.replace(tmp, STARTED_FILE)


@events.quitting.add_listener
def _close_log(environment: Any, **_: Any) -> None:
    global _log
    if _log is not None:
        _log.close()
        _log = None
    if TOTALS_JSON and environment.runner and not isinstance(environment.runner, WorkerRunner):
        total = environment.runner.stats.total
        totals = {
            "requests": total.num_requests,
            "failures": total.num_failures,
            "rps": round(total.total_rps, 1),
            **{
                f"p{int(q * 100)}_ms": total.get_response_time_percentile(q)
                for q in (0.5, 0.95, 0.99)
            },
        }
        with open(TOTALS_JSON, "w") as f:
            json.dump(totals, f)


def jittered_pacing(rps: float) -> Callable[[Any], float]:
    """A wait_time giving each user ``rps`` task starts a second on average, each interval
    drawn from [0.5, 1.5] x 1/rps.

    Locust's ``constant_throughput`` keeps every user's phase, so users whose first requests
    finish together (all of them wait for the same new connection or cold route) stay in
    lockstep for the whole run and the "steady" traffic arrives in bursts of ``users``
    requests. The jitter decorrelates them within a few intervals. A user that fell more than
    one interval behind (slow responses) restarts its schedule instead of bursting to catch up.
    """
    interval_s = 1 / rps

    def wait(user: Any) -> float:
        now = time.monotonic()
        due = getattr(user, "_loadtest_due", now) + random.uniform(0.5, 1.5) * interval_s
        if due < now - interval_s:
            due = now
        user._loadtest_due = due
        return max(0.0, due - now)

    return wait


class MixedTrafficUser(FastHttpUser):
    """Steady mixed traffic: each request picks a service (Host) and GET or POST at random."""

    wait_time = jittered_pacing(RPS_PER_USER) if RPS_PER_USER > 0 else constant(0)
    network_timeout = REQUEST_TIMEOUT_S
    connection_timeout = REQUEST_TIMEOUT_S

    @task
    def mixed(self) -> None:
        """One GET or POST to one of ``LOADTEST_SERVICES``."""
        service = random.choice(SERVICES)
        post = random.random() < POST_RATIO
        method = "POST" if post else "GET"
        started = time.time()
        t0 = time.perf_counter()
        with self.client.request(
            method,
            PATH,
            headers={"Host": service},
            data=_BODY if post else None,
            name=f"{method} {service}",
            catch_response=True,
        ) as resp:
            latency_ms = (time.perf_counter() - t0) * 1000
            status = int(resp.status_code or 0)
            headers = resp.headers or {}
            served_by = headers.get(SERVED_BY_HEADER) or ""
            ok = 200 <= status < 300
            error = ""
            if not ok:
                reason = unquote(headers.get("l5d-err") or "")  # Linkerd URL-encodes it
                error = (
                    f"HTTP {status}: {reason}"[:300]
                    if status
                    else f"no response: {resp.error!r}"[:300]
                )
                resp.failure(error)
            else:
                resp.success()
        if _log is not None:
            _log.row(
                f"{started:.6f}",
                f"{latency_ms:.3f}",
                method,
                service,
                status,
                served_by,
                int(ok),
                error,
            )
