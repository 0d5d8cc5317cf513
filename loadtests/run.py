"""Run a locust scenario through the linker and report what happened.

    python -m loadtests.run steady                 # starts its own loopback stack
    python -m loadtests.run flip --duration-s 60
    python -m loadtests.run backend-failure
    python -m loadtests.run namerd-outage
    python -m loadtests.run steady --target http://linker:4140 --services users,books

Scenarios (all of them send the same steady mixed GET/POST traffic; three add an action):

* ``steady``: only the traffic.
* ``flip``: at ``--action-at-s`` a dentry is appended to the namespace's dtab over namerd's HTTP
  API (GET with its ETag, PUT with ``If-Match``) moving one service from v1 to v2; reports when
  each version was seen relative to the PUT, and failures around it.
* ``backend-failure``: at ``--action-at-s`` one replica of a service is SIGKILLed (or
  ``--fail-cmd`` runs), and ``--down-s`` later it is restarted (or ``--restore-cmd`` runs);
  reports failures, and from the linker's admin metrics when failure accrual ejected it.
* ``namerd-outage``: at ``--action-at-s`` namerd is stopped (or ``--fail-cmd``), ``--down-s``
  later started again (or ``--restore-cmd``); the linker must keep routing on last-known state.

How it works: locust runs as a **subprocess** (``locust -f loadtests/locustfile.py --headless``)
because it monkey-patches its process with gevent, which must not leak into this one (it runs
the stack's processes and blocking HTTP calls). The locustfile writes one CSV row per request
and the moment the test started; this process times the actions from that moment, samples the
linker's metrics and namerd's health in two threads, and once locust has exited joins
everything by wall-clock time. Every process it starts runs in a group of its own and is
stopped on exit, on Ctrl-C, on SIGTERM and on failure.

Outputs, in ``--out`` (default ``loadtest-results/<scenario>-<time>``): ``summary.json``,
``requests.csv`` (one row per request), ``timeline.csv`` (per second), ``events.csv`` (actions
and observations), ``linker_metrics.csv`` (sampled), locust's own ``locust_*.csv`` and
``locust.log``, and the local stack's logs in ``stack-logs/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import analysis
from .stack import (
    FLIP_DENTRY,
    FLIP_SERVICE,
    LINKER_POLICY,
    LINKER_POLICY_SUMMARY,
    SERVICES,
    VICTIM,
    LocalStack,
    StackError,
    spawn,
    stop_group,
)

__all__ = ["SCENARIOS", "main"]

SCENARIOS = ("steady", "flip", "backend-failure", "namerd-outage")
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: Only these linker metrics are sampled (the rest is per-endpoint detail the findings ignore).
_SAMPLED = re.compile(
    r"rt/[^/]+/(client/.+/(loadbalancer/(size|available|removals|revivals)|retries|requests)"
    r"|interpreter/namerd/(watches/connected|reconnects))"
)


class RunError(RuntimeError):
    """The run could not be carried out (bad arguments for this target, locust died, ...)."""


# -- arguments -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python -m loadtests.run", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("scenario", choices=SCENARIOS)
    g = p.add_argument_group("traffic")
    g.add_argument("--target", help="linker router URL; omit to start a local loopback stack")
    g.add_argument("--duration-s", type=int, default=30, help="locust run time (30)")
    g.add_argument("--users", type=int, default=20, help="locust users (20)")
    g.add_argument("--spawn-rate", type=float, help="users started per second (all at once)")
    g.add_argument("--rps-per-user", type=float, default=10.0, help="0 = as fast as it can (10)")
    g.add_argument(
        "--services",
        help="Host headers to spread traffic over (alpha,beta,gamma on the local stack, "
        "else the locustfile's default hello,world)",
    )
    g.add_argument("--post-ratio", type=float, default=0.25, help="share of POSTs (0.25)")
    g.add_argument("--post-bytes", type=int, default=1024, help="POST body size (1024)")
    g.add_argument(
        "--served-by-header", default="X-Served-By", help="names the backend (X-Served-By)"
    )
    g.add_argument(
        "--request-timeout-s",
        type=float,
        default=35.0,
        help="client timeout, above the linker's totalTimeoutMs so that its own error is "
        "recorded (35)",
    )
    g.add_argument("--out", help="result directory (loadtest-results/<scenario>-<time>)")
    a = p.add_argument_group("actions")
    a.add_argument("--action-at-s", type=float, help="when the action happens (1/3 of the run)")
    a.add_argument(
        "--down-s", type=float, help="how long a failure lasts until the restore (1/3 of the run)"
    )
    a.add_argument(
        "--service", help="the service the flip or the failure is about (local: beta, alpha)"
    )
    a.add_argument(
        "--namerd", help="namerd's HTTP API (flip; namerd-outage: to see when it is back)"
    )
    a.add_argument("--namespace", default="default", help="namerd namespace (default)")
    a.add_argument("--flip-dentry", help="dentry the flip appends to the dtab")
    a.add_argument("--v1", help="served-by prefix of the old version (flip)")
    a.add_argument("--v2", help="served-by prefix of the new version (flip)")
    a.add_argument(
        "--keep-flip", action="store_true", help="leave the flipped dtab in place at the end"
    )
    a.add_argument("--victim", help="served-by prefix of the replica that fails (reporting)")
    a.add_argument("--fail-cmd", help="shell command that starts the failure (with --target)")
    a.add_argument("--restore-cmd", help="shell command that ends it (with --target)")
    a.add_argument("--no-restore", action="store_true", help="leave the failure in place")
    a.add_argument(
        "--namerd-stop-signal",
        choices=("TERM", "KILL"),
        default="TERM",
        help="local stack: graceful stop (TERM, default) or crash (KILL) of namerd",
    )
    a.add_argument("--linker-admin", help="linker admin URL, to sample its metrics")
    t = p.add_argument_group("timeouts and sampling")
    t.add_argument(
        "--start-timeout-s", type=float, default=60.0, help="stack and locust start (60)"
    )
    t.add_argument("--stop-timeout-s", type=float, default=20.0, help="each process's stop (20)")
    t.add_argument(
        "--cmd-timeout-s", type=float, default=60.0, help="--fail-cmd, --restore-cmd (60)"
    )
    t.add_argument("--http-timeout-s", type=float, default=5.0, help="namerd and admin calls (5)")
    t.add_argument(
        "--warm-timeout-s",
        type=float,
        default=10.0,
        help="namerd-outage: wait up to this long for every linker worker to hold its watches (10)",
    )
    t.add_argument(
        "--exit-timeout-s", type=float, default=30.0, help="locust's exit after its run (30)"
    )
    t.add_argument(
        "--sample-interval-s", type=float, default=0.25, help="linker metrics sampling (0.25)"
    )
    t.add_argument("--workers", type=int, default=2, help="local stack: linker workers (2)")
    args = p.parse_args(argv)
    try:
        _check(args)
    except RunError as err:
        p.error(str(err))
    return args


def _check(args: argparse.Namespace) -> None:
    """Fill in defaults that depend on the target and reject impossible combinations."""
    local = args.target is None
    if args.duration_s < 3:
        raise RunError("--duration-s must be at least 3")
    if args.users < 1:
        raise RunError("--users must be at least 1")
    args.spawn_rate = args.spawn_rate or float(args.users)
    if args.action_at_s is None:
        args.action_at_s = args.duration_s / 3
    if args.down_s is None:
        args.down_s = args.duration_s / 3
    if not 0 < args.action_at_s < args.duration_s:
        raise RunError("--action-at-s must fall inside the run")
    if local:
        for opt in ("fail_cmd", "restore_cmd", "namerd", "linker_admin"):
            if getattr(args, opt):
                raise RunError(f"--{opt.replace('_', '-')} needs --target (an external stack)")
        args.services = args.services or ",".join(SERVICES)
        if args.scenario == "flip":
            args.service = args.service or FLIP_SERVICE
            args.flip_dentry = args.flip_dentry or FLIP_DENTRY
            args.v1 = args.v1 or f"{FLIP_SERVICE}-v1"
            args.v2 = args.v2 or f"{FLIP_SERVICE}-v2"
        if args.scenario == "backend-failure":
            args.service = args.service or "alpha"
            args.victim = args.victim or VICTIM
            if args.service != "alpha" or args.victim != VICTIM:
                raise RunError(f"the local stack can only kill {VICTIM} (of alpha)")
    else:
        args.services = args.services or "hello,world"
        if args.scenario == "flip":
            missing = [
                o for o in ("namerd", "flip_dentry", "service", "v1", "v2") if not getattr(args, o)
            ]
            if missing:
                raise RunError(
                    "flip against --target needs "
                    + ", ".join(f"--{m.replace('_', '-')}" for m in missing)
                )
        if args.scenario in ("backend-failure", "namerd-outage") and not args.fail_cmd:
            raise RunError(f"{args.scenario} against --target needs --fail-cmd (and --restore-cmd)")
        if args.scenario == "backend-failure" and not args.service:
            raise RunError("backend-failure against --target needs --service")
        if args.no_restore:
            args.restore_cmd = None
    restoring = args.scenario in ("backend-failure", "namerd-outage") and (
        (local and not args.no_restore) or bool(args.restore_cmd)
    )
    args.restoring = restoring
    if restoring and args.action_at_s + args.down_s >= args.duration_s:
        raise RunError("--action-at-s + --down-s must end before the run does")
    args.service_list = [s.strip() for s in args.services.split(",") if s.strip()]


# -- small helpers ---------------------------------------------------------------------------------


class Events:
    """Actions and observations with their wall-clock time; printed as they happen."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, str]] = []
        self.t0: float | None = None
        self._lock = threading.Lock()

    def add(self, event: str, detail: str = "", at: float | None = None) -> float:
        """Record ``event`` at ``at`` (default now); returns that time."""
        at = time.time() if at is None else at
        with self._lock:
            self.rows.append((at, event, detail))
        rel = f"+{at - self.t0:6.2f} s" if self.t0 is not None else "  setup  "
        print(f"[{rel}] {event}{': ' + detail if detail else ''}", file=sys.stderr, flush=True)
        return at

    def relative(self) -> list[dict[str, Any]]:
        """The events as rows relative to the test start."""
        t0 = self.t0 or 0.0
        with self._lock:
            rows = sorted(self.rows)
        return [
            {"time_s": round(at - t0, 3), "wall_time": round(at, 3), "event": e, "detail": d}
            for at, e, d in rows
        ]


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval_s`` and keeps (time, value); errors become None."""

    def __init__(self, name: str, fn: Callable[[], Any], interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.fn = fn
        self.interval_s = interval_s
        self.samples: list[tuple[float, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        """Sample until :meth:`stop`."""
        while not self._halt.is_set():
            at = time.time()
            try:
                value = self.fn()
            except Exception:  # an unreachable target is a sample too
                value = None
            self.samples.append((at, value))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        """Stop sampling and wait for the thread (bounded)."""
        self._halt.set()
        if self.is_alive():
            self.join(5)


def _http(
    method: str,
    url: str,
    timeout_s: float,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def _run_cmd(cmd: str, timeout_s: float) -> tuple[int | None, float, str]:
    """Run a user's shell command; (exit code or None on timeout, seconds, output tail)."""
    started = time.monotonic()
    try:
        r = subprocess.run(
            cmd,
            shell=True,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
        rc: int | None = r.returncode
        output = (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired as err:
        rc = None
        output = f"timed out after {timeout_s} s: {err}"
    return rc, time.monotonic() - started, output[-300:].replace("\n", " | ")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- the run ---------------------------------------------------------------------------------------


class Run:
    """One scenario run: locust, the samplers, the actions, then the analysis."""

    def __init__(self, args: argparse.Namespace, out: Path, local: LocalStack | None) -> None:
        self.args = args
        self.out = out
        self.local = local
        self.target = local.target if local else args.target.rstrip("/")
        self.namerd = local.namerd_url if local else (args.namerd or "").rstrip("/") or None
        self.admin = local.linker_admin if local else (args.linker_admin or "").rstrip("/") or None
        self.token = None if local else os.environ.get("NAMERD_TOKEN")
        self.events = Events()
        self.locust: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0
        self.findings: dict[str, Any] = {}
        self.marks: dict[str, float | None] = {}
        self.flip_restore: tuple[str, str] | None = None
        self.restore_pending = False

    # -- locust ---------------------------------------------------------------------------------
    def start_locust(self) -> None:
        """Start locust and wait until its test has started (that moment is t0)."""
        a = self.args
        started_file = self.out / ".started"
        started_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "LOADTEST_SERVICES": ",".join(a.service_list),
            "LOADTEST_POST_RATIO": str(a.post_ratio),
            "LOADTEST_POST_BYTES": str(a.post_bytes),
            "LOADTEST_RPS_PER_USER": str(a.rps_per_user),
            "LOADTEST_REQUEST_TIMEOUT_S": str(a.request_timeout_s),
            "LOADTEST_SERVED_BY_HEADER": a.served_by_header,
            "LOADTEST_REQUESTS_CSV": str(self.out / "requests.csv"),
            "LOADTEST_STARTED_FILE": str(started_file),
            "LOADTEST_TOTALS_JSON": str(self.out / "locust_totals.json"),
        }
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "-u",
            str(a.users),
            "-r",
            str(a.spawn_rate),
            "-t",
            f"{a.duration_s}s",
            "--host",
            self.target,
            "--csv",
            str(self.out / "locust"),
            "--exit-code-on-error",
            "0",  # failures are findings; a non-zero exit then means locust itself broke
        ]
        self.locust = spawn(cmd, self.out / "locust.log", env)
        deadline = time.monotonic() + self.args.start_timeout_s
        while not started_file.exists():
            if self.locust.poll() is not None or time.monotonic() > deadline:
                raise RunError(f"locust did not start; see {self.out / 'locust.log'}")
            time.sleep(0.02)
        self.t0 = float(started_file.read_text())
        started_file.unlink(missing_ok=True)
        self.events.t0 = self.t0
        self.events.add(
            "locust_started",
            f"{a.users} users x {a.rps_per_user:g} rps over {','.join(a.service_list)} -> "
            f"{self.target}",
            at=self.t0,
        )

    def stop_locust(self) -> None:
        """Stop locust's process group (no-op once it has exited)."""
        if self.locust is not None:
            stop_group(self.locust, self.args.stop_timeout_s)

    def sleep_until(self, at: float, while_locust: bool = True) -> None:
        """Sleep until wall time ``at``; with ``while_locust``, fail if locust exits first."""
        while (left := at - time.time()) > 0:
            if while_locust and self.locust is not None and self.locust.poll() is not None:
                raise RunError(f"locust exited early; see {self.out / 'locust.log'}")
            time.sleep(min(left, 0.05))

    def wait_locust(self) -> None:
        """Wait for locust to end its run by itself (bounded by ``--exit-timeout-s``)."""
        assert self.locust is not None
        timeout_s = (
            max(0.0, self.t0 + self.args.duration_s - time.time()) + self.args.exit_timeout_s
        )
        try:
            rc = self.locust.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise RunError(
                f"locust did not exit {self.args.exit_timeout_s} s after its run time"
            ) from None
        self.events.add("locust_finished", f"exit code {rc}")
        if rc != 0:
            raise RunError(f"locust exited with {rc}; see {self.out / 'locust.log'}")

    # -- the scenario actions -------------------------------------------------------------------
    def act(self) -> None:
        """Carry out the scenario's action(s) at their times (returns when they are done)."""
        a = self.args
        if a.scenario == "steady":
            return
        self.sleep_until(self.t0 + a.action_at_s)
        if a.scenario == "flip":
            self._flip()
            return
        if a.scenario == "namerd-outage":
            self._wait_warm()
        fail_at = time.time()
        # Pending from before the action: an action interrupted halfway is undone too.
        self.restore_pending = a.restoring
        self.events.add("failure_start", self._fail(), at=fail_at)
        self.marks["fail_at"] = fail_at
        if not a.restoring:
            return
        # The restore happens even if locust is gone meanwhile (a slow --fail-cmd outlasted the
        # run): a late restore is better than leaving someone's stack broken.
        self.sleep_until(fail_at + a.down_s, while_locust=False)
        self.restore()

    def restore(self) -> None:
        """End the failure (once); also called on the way out after an error or Ctrl-C."""
        if not self.restore_pending:
            return
        self.restore_pending = False
        if self.locust is not None and self.locust.poll() is not None:
            self.events.add("late_restore", "the run ended before the failure was restored")
        # The failure ends when the restore starts: a restarted replica may serve before the
        # restore action returns (it polls for readiness), so phases split here.
        self.marks["restore_start"] = self.events.add("restore_start")
        self.marks["restored_at"] = self.events.add("restored", self._restore())

    def undo_on_exit(self) -> None:
        """Cleanup for external stacks: end a pending failure, put a flipped dtab back."""
        if self.local is not None:
            return  # the local stack is torn down anyway
        if self.restore_pending:
            print(
                "restoring before exit (Ctrl-C is ignored until --restore-cmd returns, at most "
                f"{self.args.cmd_timeout_s:g} s)",
                file=sys.stderr,
                flush=True,
            )
            self.restore()
        self.restore_flip()

    def _namerd_headers(self, extra: dict[str, str]) -> dict[str, str]:
        return {**extra, **({"Authorization": f"Bearer {self.token}"} if self.token else {})}

    def _flip(self) -> None:
        a = self.args
        url = f"{self.namerd}/api/1/dtabs/{a.namespace}"
        status, headers, body = _http(
            "GET",
            url,
            a.http_timeout_s,
            headers=self._namerd_headers({"Accept": "application/dtab"}),
        )
        if status not in (200, 404):
            self.events.add("flip_failed", f"GET {url} answered {status}")
            return
        old = body.decode() if status == 200 else ""
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        new = old.strip()
        new = f"{new}{'' if not new or new.endswith(';') else ';'}\n{a.flip_dentry};"
        put_headers = {"Content-Type": "application/dtab"}
        if etag:
            put_headers["If-Match"] = etag  # never overwrite a change someone else just made
        put_at = time.time()
        status, _, body = _http(
            "PUT", url, a.http_timeout_s, new.encode(), self._namerd_headers(put_headers)
        )
        put_ms = (time.time() - put_at) * 1000
        self.events.add(
            "dtab_put", f"{a.flip_dentry!r} -> HTTP {status} in {put_ms:.1f} ms", at=put_at
        )
        self.findings["put"] = {
            "dentry": a.flip_dentry,
            "status": status,
            "put_ms": round(put_ms, 1),
            "at_s": round(put_at - self.t0, 3),
        }
        if status == 204:
            self.marks["put_at"] = put_at
            self.flip_restore = (old, new) if old else None
        else:
            self.findings["put"]["error"] = body.decode(errors="replace")[:300]

    def restore_flip(self) -> None:
        """External stacks: put the dtab back as it was, unless someone changed it meanwhile."""
        if self.local or self.args.keep_flip or not self.flip_restore:
            return
        old, _ = self.flip_restore
        self.flip_restore = None
        url = f"{self.namerd}/api/1/dtabs/{self.args.namespace}"
        t = self.args.http_timeout_s
        status, headers, _ = _http("HEAD", url, t, headers=self._namerd_headers({}))
        etag = {k.lower(): v for k, v in headers.items()}.get("etag")
        put_headers = {"Content-Type": "application/dtab", **({"If-Match": etag} if etag else {})}
        status, _, _ = _http("PUT", url, t, old.encode(), self._namerd_headers(put_headers))
        self.events.add("dtab_restored", f"HTTP {status}")

    def _wait_warm(self) -> None:
        """Before an outage: every worker must have resolved every service (last-known state is
        per worker; a worker that never routed a name has nothing to fall back on)."""
        if not self.admin:
            return
        want = 2 * len(self.args.service_list) * self.args.workers if self.local else None
        deadline = time.time() + self.args.warm_timeout_s
        connected = 0.0
        while True:
            with contextlib.suppress(Exception):
                connected = analysis.metric_sum(self._metrics(), analysis.WATCHES_CONNECTED)
            if want is None or connected >= want or time.time() > deadline:
                break
            self.sleep_until(time.time() + 0.1)
        note = f"{connected:g} linker watches connected" + (f" (want {want})" if want else "")
        self.events.add("watches_before_outage", note)
        self.findings["watches_before_outage"] = connected
        if want is not None and connected < want:
            self.findings["warm_timeout"] = True

    def _fail(self) -> str:
        a = self.args
        if self.local is None:
            rc, took, output = _run_cmd(a.fail_cmd, a.cmd_timeout_s)
            self.findings["fail_cmd"] = {
                "cmd": a.fail_cmd,
                "exit_code": rc,
                "seconds": round(took, 3),
            }
            return f"{a.fail_cmd!r} exited {rc} after {took:.2f} s {output}"
        if a.scenario == "backend-failure":
            pid = self.local.procs[VICTIM].popen.pid
            self.local.kill_backend(VICTIM)
            return f"SIGKILL {VICTIM} (pid {pid})"
        sig = signal.SIGKILL if a.namerd_stop_signal == "KILL" else signal.SIGTERM
        took = self.local.stop_namerd(sig)
        self.findings["namerd_exit_ms"] = round(took * 1000, 1)
        return f"namerd stopped with SIG{a.namerd_stop_signal}, exited after {took * 1000:.0f} ms"

    def _restore(self) -> str:
        a = self.args
        if self.local is None:
            rc, took, output = _run_cmd(a.restore_cmd, a.cmd_timeout_s)
            self.findings["restore_cmd"] = {
                "cmd": a.restore_cmd,
                "exit_code": rc,
                "seconds": round(took, 3),
            }
            detail = f"{a.restore_cmd!r} exited {rc} after {took:.2f} s {output}"
            if a.scenario == "namerd-outage" and self.namerd:
                detail += self._wait_namerd_up()
            return detail
        if a.scenario == "backend-failure":
            self.local.start_backends([VICTIM], VICTIM)
            return f"{VICTIM} restarted on port {self.local.ports[VICTIM]}"
        self.local.start_namerd()
        return "namerd started again (same ports and data) and answers"

    def _wait_namerd_up(self) -> str:
        deadline = time.time() + self.args.start_timeout_s
        while time.time() < deadline:
            with contextlib.suppress(Exception):
                if _http("GET", f"{self.namerd}/api/1/dtabs", 1.0)[0] == 200:
                    return "; namerd answers"
            time.sleep(0.1)
        return f"; namerd not answering after {self.args.start_timeout_s} s"

    def _metrics(self) -> dict[str, float]:
        _, _, body = _http("GET", f"{self.admin}/admin/metrics.json", self.args.http_timeout_s)
        return {
            k: float(v)
            for k, v in json.loads(body).items()
            if isinstance(v, int | float) and _SAMPLED.fullmatch(k)
        }

    def _namerd_answers(self) -> bool:
        return _http("GET", f"{self.namerd}/api/1/dtabs", 1.0)[0] == 200

    # -- everything -----------------------------------------------------------------------------
    def execute(self, stack: contextlib.ExitStack) -> dict[str, Any]:
        """Run the scenario and return its summary (also written to ``summary.json``)."""
        a = self.args
        metrics = Sampler("linker-metrics", self._metrics, a.sample_interval_s)
        probe = Sampler("namerd-probe", self._namerd_answers, 0.1)
        if self.admin:
            metrics.start()
            stack.callback(metrics.stop)
        if self.namerd and a.scenario == "namerd-outage":
            probe.start()
            stack.callback(probe.stop)
        stack.callback(self.undo_on_exit)
        stack.callback(self.stop_locust)  # (callbacks run last-in first-out: locust stops first)
        self.start_locust()
        self.act()
        self.wait_locust()
        metrics.stop()
        probe.stop()
        if a.scenario == "flip":
            self.restore_flip()
        return self.analyse(
            [(t, v) for t, v in metrics.samples if v is not None],
            [(t, bool(v)) for t, v in probe.samples],
        )

    def analyse(
        self, samples: list[analysis.Sample], probes: list[tuple[float, bool]]
    ) -> dict[str, Any]:
        """Findings, CSVs and ``summary.json`` from the recorded requests and samples."""
        a = self.args
        reqs = analysis.read_requests([self.out / "requests.csv"])
        run_end = self.t0 + a.duration_s
        findings = dict(self.findings)
        extras: dict[str, Callable[[float, float], object]] = {}
        put_at = self.marks.get("put_at")
        fail_at = self.marks.get("fail_at")
        if a.scenario == "flip" and put_at:
            findings.update(
                analysis.flip_findings(
                    reqs,
                    service=a.service,
                    v1=a.v1,
                    v2=a.v2,
                    put_at=put_at,
                    run_end=run_end,
                )
            )
        elif a.scenario == "flip":
            findings["error"] = "the dtab was not changed (see put)"
        if a.scenario == "backend-failure" and fail_at:
            findings.update(
                analysis.backend_failure_findings(
                    reqs,
                    samples,
                    service=a.service,
                    victim=a.victim,
                    fail_at=fail_at,
                    restore_at=self.marks.get("restore_start"),
                    run_end=run_end,
                )
            )
            avail = analysis.client_pattern(a.service, "loadbalancer/available")
            extras["lb_available"] = _last_in(samples, lambda m: analysis.metric_sum(m, avail))
        if a.scenario == "namerd-outage" and fail_at:
            up_at = self.marks.get("restored_at")
            if probes:
                down_seen = next((t for t, ok in probes if t >= fail_at and not ok), None)
                findings["namerd_unreachable_ms"] = (
                    None if down_seen is None else round((down_seen - fail_at) * 1000, 1)
                )
                if up_at is not None:
                    restart = self.marks.get("restore_start") or up_at
                    up_seen = next((t for t, ok in probes if t >= restart and ok), None)
                    up_at = up_seen or up_at
            findings["namerd_back_ms"] = (
                None if up_at is None else round((up_at - fail_at) * 1000, 1)
            )
            findings.update(
                analysis.namerd_outage_findings(
                    reqs, samples, down_at=fail_at, namerd_up_at=up_at, run_end=run_end
                )
            )
            extras["namerd_up"] = _last_in(probes, lambda ok: int(ok))
            extras["watches_connected"] = _last_in(
                samples, lambda m: analysis.metric_sum(m, analysis.WATCHES_CONNECTED)
            )
        rows, columns = analysis.timeline(
            reqs, self.t0, max(run_end, reqs[-1].end if reqs else run_end), extras
        )
        analysis.write_csv(self.out / "timeline.csv", rows, columns)
        events = self.events.relative()
        analysis.write_csv(
            self.out / "events.csv", events, ["time_s", "wall_time", "event", "detail"]
        )
        if samples:
            keys = sorted({k for _, m in samples for k in m})
            analysis.write_csv(
                self.out / "linker_metrics.csv",
                [{"time_s": round(t - self.t0, 3), **m} for t, m in samples],
                ["time_s", *keys],
            )
        summary = {
            "scenario": a.scenario,
            "target": self.target,
            "stack": self.local.describe() if self.local else "external",
            "linker_policy": LINKER_POLICY if self.local else None,
            "linker_policy_summary": LINKER_POLICY_SUMMARY if self.local else None,
            "settings": {
                "duration_s": a.duration_s,
                "users": a.users,
                "rps_per_user": a.rps_per_user,
                "services": a.service_list,
                "post_ratio": a.post_ratio,
                "post_bytes": a.post_bytes,
                "action_at_s": a.action_at_s if a.scenario != "steady" else None,
                "down_s": a.down_s if a.restoring else None,
            },
            "start_time": self.t0,
            "traffic": analysis.overall(reqs),
            "by_service": analysis.by_service(reqs),
            "errors": analysis.top_errors(reqs),
            "locust": _locust_totals(self.out / "locust_totals.json"),
            "findings": findings,
            "events": events,
            "out": str(self.out),
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def _last_in(
    samples: list[tuple[float, Any]], fn: Callable[[Any], object]
) -> Callable[[float, float], object]:
    """A timeline column: ``fn`` of the last sample inside each second (empty if none)."""

    def column(a: float, b: float) -> object:
        inside = [v for t, v in samples if a <= t < b]
        return fn(inside[-1]) if inside else ""

    return column


def _locust_totals(path: Path) -> dict[str, Any] | None:
    """Locust's own final totals, as a cross-check of ours (its percentiles are rounded)."""
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return None


# -- the human summary -----------------------------------------------------------------------------


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:g}{unit}"
    return f"{v}{unit}"


def format_summary(s: dict[str, Any]) -> str:
    """The printed report of a run (the same data as ``summary.json``)."""
    tr, st, f = s["traffic"], s["settings"], s["findings"]
    lines = [
        f"== {s['scenario']} -> {s['target']}",
        f"stack      {s['stack']}",
        *([f"policy     {s['linker_policy_summary']}"] if s.get("linker_policy_summary") else []),
        f"traffic    {st['duration_s']} s, {st['users']} users x {st['rps_per_user']:g} rps, "
        f"{int(st['post_ratio'] * 100)}% POST of {st['post_bytes']} B: {tr['requests']} requests, "
        f"{tr['rps']:g} rps, {tr['failures']} failures ({tr['failure_rate'] * 100:.3f}%)",
        f"latency    p50 {_fmt(tr['p50_ms'], ' ms')}  p95 {_fmt(tr['p95_ms'], ' ms')}  "
        f"p99 {_fmt(tr['p99_ms'], ' ms')}  max {_fmt(tr['max_ms'], ' ms')}",
        "services   "
        + "  ".join(
            f"{svc} {v['requests']} ({v['failures']} failed, p99 {_fmt(v['p99_ms'], ' ms')})"
            for svc, v in s["by_service"].items()
        ),
    ]
    if s["errors"]:
        lines.append("errors     " + "; ".join(f"{n} x {e}" for e, n in s["errors"].items()))
    if s.get("locust"):
        lc = s["locust"]
        lines.append(
            f"locust     {lc['requests']} requests, {lc['failures']} failures, {lc['rps']:g} rps, "
            f"p50/p95/p99 {lc['p50_ms']:g}/{lc['p95_ms']:g}/{lc['p99_ms']:g} ms (its own count)"
        )
    lines += _format_findings(s["scenario"], f, s)
    lines.append(
        f"files      {s['out']}/ summary.json timeline.csv events.csv requests.csv "
        "locust_stats.csv locust_stats_history.csv locust_failures.csv"
        + (" linker_metrics.csv" if Path(s["out"], "linker_metrics.csv").exists() else "")
    )
    return "\n".join(lines)


def _format_findings(scenario: str, f: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if scenario == "flip":
        put = f.get("put", {})
        out.append(
            f"flip       PUT {put.get('dentry')!r} at +{put.get('at_s')} s: HTTP "
            f"{put.get('status')} in {put.get('put_ms')} ms"
        )
        if "error" in f:
            out.append(f"           {f['error']}")
            return out
        late = (
            f"requests started after the PUT still answered by {f['v1']}: "
            f"{f['v1_started_after_put']}, the last one started "
            f"{_fmt(f['last_v1_started_ms'], ' ms')} after it"
            if f["v1_started_after_put"]
            else f"no request started after the PUT was answered by {f['v1']}"
        )
        share = f["final_v2_share"]
        out += [
            f"           first {f['v2']} answer {_fmt(f['first_v2_seen_ms'], ' ms')} after the "
            f"PUT, last {f['v1']} answer {_fmt(f['last_v1_seen_ms'], ' ms')}; {late}",
            f"           {f['v2']} answers before the PUT: {f['v2_before_put']}; failures within "
            f"[-1 s, +{f['flip_window_s'][1]:g} s] of the PUT: {f['failures_around_flip']}; "
            f"{f['service']} failures overall: {f['service_failures']}",
            f"           last {f['final_window_s']:g} s of the run: {f['final_requests']} "
            f"requests, {_fmt(None if share is None else round(share * 100, 2), '%')} "
            f"{f['v2']} -> ended on v2: {'yes' if f['ended_on_v2'] else 'NO'}",
        ]
        out += _per_second(s, [f"served:{f['v1']}", f"served:{f['v2']}"], {"PUT": put.get("at_s")})
    elif scenario == "backend-failure":
        ph = f.get("phases", {})
        out.append(
            f"failure    {f.get('victim') or 'a replica'} of {f.get('service')} failed; "
            f"replicas seen before: {', '.join(f.get('replicas_seen_before', []))}"
        )
        for name, p in ph.items():
            out.append(
                f"  {name:<14} {p['requests']} requests, {p['failures']} failed "
                f"({p['all_failures']} over all services); served by {p['served_by']}"
            )
        out.append(
            f"           failures from {_fmt(f.get('first_failure_ms'), ' ms')} to "
            f"{_fmt(f.get('last_failure_ms'), ' ms')} after the failure; "
            f"victim last answered {_fmt(f.get('victim_last_seen_ms'), ' ms')}, "
            f"back {_fmt(f.get('victim_back_after_restore_ms'), ' ms')} after the restore"
        )
        if f.get("errors"):
            out.append(
                "           errors: " + "; ".join(f"{n} x {e}" for e, n in f["errors"].items())
            )
        lk = f.get("linker")
        if lk and "ejected_first_worker_ms" in lk:
            out.append(
                f"linker     accrual ejected it in the first worker by "
                f"{_fmt(lk['ejected_first_worker_ms'], ' ms')}, in every worker by "
                f"{_fmt(lk['ejected_every_worker_ms'], ' ms')} "
                f"({_fmt(lk['retries_until_ejected'])} retries until then, "
                f"{_fmt(lk['retries_while_down'])} while down; available endpoints "
                f"{_fmt(lk['available_before'])} -> {_fmt(lk['min_available_while_down'])})"
            )
            if "revived_ms" in lk:
                out.append(
                    f"           revived {_fmt(lk['revived_ms'], ' ms')} after the restore, all "
                    f"available again by {_fmt(lk['all_available_again_ms'], ' ms')} "
                    "(metric times: upper bounds, ~1 s resolution)"
                )
        elif lk:
            out.append(f"linker     {lk.get('note')}")
        out += _per_second(
            s,
            [c for c in _served_columns(s) if f.get("service", "") in c] + ["lb_available"],
            {"fail": _event_s(s, "failure_start"), "restore": _event_s(s, "restore_start")},
        )
    elif scenario == "namerd-outage":
        out.append(
            f"outage     namerd down at +{_fmt(_event_s(s, 'failure_start'))} s "
            f"({_fmt(f.get('namerd_exit_ms'), ' ms to exit')}; unreachable after "
            f"{_fmt(f.get('namerd_unreachable_ms'), ' ms')}), answering again "
            f"{_fmt(f.get('namerd_back_ms'), ' ms')} after the stop"
        )
        if "failures_while_down" in f:
            out.append(
                f"           failures: {f['failures_before']} before, {f['failures_while_down']} "
                f"while down ({f['requests_while_down']} requests), {f['failures_after']} after"
            )
            for key in ("errors_while_down", "errors_after"):
                if f.get(key):
                    out.append(
                        f"           {key}: " + "; ".join(f"{n} x {e}" for e, n in f[key].items())
                    )
        lk = f.get("linker")
        if lk:
            out.append(
                f"linker     watches connected before: {_fmt(lk['watches_connected_before'])}, "
                f"dropped by {_fmt(lk['watches_lost_ms'], ' ms')}, all reconnected by "
                f"{_fmt(lk['watches_reconnected_ms'], ' ms')} after the stop "
                f"({_fmt(lk['watches_reconnected_after_namerd_up_ms'], ' ms')} after namerd "
                f"answered; {_fmt(lk['reconnects'])} reconnect attempts)"
            )
        out += _per_second(
            s,
            ["namerd_up", "watches_connected"],
            {"stop": _event_s(s, "failure_start"), "restart": _event_s(s, "restore_start")},
        )
    return out


def _served_columns(s: dict[str, Any]) -> list[str]:
    with contextlib.suppress(OSError):
        with open(Path(s["out"], "timeline.csv"), newline="") as f:
            return [c for c in next(csv.reader(f)) if c.startswith("served:")]
    return []


def _event_s(s: dict[str, Any], name: str) -> float | None:
    return next((e["time_s"] for e in s["events"] if e["event"] == name), None)


def _per_second(s: dict[str, Any], cols: list[str], marks: dict[str, float | None]) -> list[str]:
    """Timeline rows around each action (``marks``: label -> second), as a small table."""
    try:
        with open(Path(s["out"], "timeline.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    at = {math.floor(t): label for label, t in marks.items() if t is not None}
    cols = [c for c in cols if rows and c in rows[0]]
    names = [c.removeprefix("served:") for c in cols]
    out = ["per second  " + "  ".join(["second", "requests", "failures", *names])]
    shown = -1
    for row in rows:
        sec = int(row["second"])
        if not any(m - 2 <= sec <= m + 3 for m in at):
            continue
        if shown >= 0 and sec > shown + 1:
            out.append("            " + "...".rjust(6))
        shown = sec
        cells = [f"{sec:>6}", f"{row['requests']:>8}", f"{row['failures']:>8}"]
        cells += [f"{row[c]:>{len(n)}}" for c, n in zip(cols, names, strict=True)]
        mark = f"  <- {at[sec]}" if sec in at else ""
        out.append("            " + "  ".join(cells) + mark)
    return out


# -- main ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _local_stack(args: argparse.Namespace, out: Path) -> Iterator[LocalStack]:
    """A local stack in a temp dir; its logs are copied to ``out/stack-logs`` at the end."""
    tmp = Path(tempfile.mkdtemp(prefix="loadtests-"))
    stack = LocalStack(
        tmp,
        workers=args.workers,
        start_timeout_s=args.start_timeout_s,
        stop_timeout_s=args.stop_timeout_s,
    )
    try:
        with stack:
            yield stack
    finally:
        logs = out / "stack-logs"
        logs.mkdir(exist_ok=True)
        for log in tmp.glob("*.log"):
            with contextlib.suppress(OSError):
                shutil.copy(log, logs / log.name)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run one scenario; 0 when it ran (whatever it found), 1 when it could not run."""
    args = parse_args(argv)
    out = Path(args.out or f"loadtest-results/{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    stack = contextlib.ExitStack()
    try:
        local = None
        if args.target is None:
            print("starting the local stack ...", file=sys.stderr, flush=True)
            local = stack.enter_context(_local_stack(args, out))
        summary = Run(args, out, local).execute(stack)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr, flush=True)
        return 130
    except (RunError, StackError, OSError) as err:
        print(f"loadtests.run: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        # Cleanup must finish: a second Ctrl-C must not leave half the stack running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        stack.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
    print(format_summary(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
