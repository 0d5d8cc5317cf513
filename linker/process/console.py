"""The linker's admin console: the dashboard, the dtab playground, readiness, per-worker state.

Served by the master's admin server (``linker.process.admin``), which routes every path for
which :func:`serves` is true to :func:`answer` (GET and HEAD only):

=================================  ============================================================
``/``                              the dashboard (``shared.console``'s ``linker.html``): rates,
                                   success rates and latencies per router, server, service and
                                   client, computed in the page from ``/admin/metrics.json``
``/delegator``                     the dtab playground (``/delegator.json`` drawn as a tree)
``/console/<file>``                the shared CSS and JavaScript
``/admin/ready``                   200 ``ready`` or 503 with the reasons, one per line
``/admin/workers.json``            each live worker's pid and namerd watch state, and each
                                   endpoint's last error (the freshest any worker saw)
``/admin/index.json``              every admin endpoint (:data:`ENDPOINTS`)
=================================  ============================================================

Readiness
---------
The linker is ready when at least one worker has booted (every worker accepts from the same
listening sockets, so one is enough to serve) and every router bound by namerd
(``io.l5d.namerd.http``) has a way to route:

* a worker holds a connected namerd stream (its ``interpreter/namerd/watches/connected``
  gauge, from the worker snapshots), or
* some worker has namerd answers to share (a non-empty last-known file of the router,
  ``linker.naming.last_known``): a worker got them from namerd and the others route on them
  while namerd is away, or
* namerd answered this server's own probe (any HTTP answer to ``GET /api/1/dtabs/<ns>`` at the
  interpreter's ``dst``, each address given :data:`READY_PROBE_TIMEOUT_S`). A linker that has
  had no traffic has no streams yet, and would otherwise never become ready. Once namerd has
  answered, the router stays ready: the workers serve last-known state through an outage.

When the probe finds namerd unreachable, that is logged once (a warning), until it answers again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
import weakref
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, Final

from linker.naming.last_known import _file_safe
from linker.naming.transport import DEFAULT_NAMESPACE, parse_dst
from shared.console import ASSET_PREFIX, asset, page
from shared.metrics import live_snapshots

if TYPE_CHECKING:
    from linker.process.admin import AdminServer

__all__ = ["ENDPOINTS", "READY_PROBE_TIMEOUT_S", "answer", "serves"]

log = logging.getLogger("linker.admin")

#: Seconds the readiness probe waits for each namerd address.
READY_PROBE_TIMEOUT_S: Final = 1.0

_NAMERD = "io.l5d.namerd.http"
# A worker snapshot's detail of one client's endpoints (linker.routing.policies).
_ENDPOINT_DETAIL: Final = re.compile(
    r"^rt/(?P<label>[^/]+)/client/(?P<client>.+)/loadbalancer/endpoints$"
)
_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

#: (path, methods, what) of every admin endpoint, for the dashboard's index.
ENDPOINTS: Final[tuple[tuple[str, str, str], ...]] = (
    ("/", "GET", "dashboard"),
    ("/delegator", "GET", "dtab playground"),
    ("/admin/ping", "GET", "liveness: pong"),
    ("/admin/ready", "GET", "readiness: 200 ready, or 503 and why"),
    ("/admin/metrics.json", "GET", "metrics, Linkerd's flat names (?pretty=1)"),
    ("/admin/metrics/prometheus", "GET", "metrics, Prometheus text format"),
    ("/admin/workers.json", "GET", "each worker's namerd watch state; endpoints' last errors"),
    ("/admin/index.json", "GET", "this list"),
    ("/config.json", "GET", "the config the workers run"),
    ("/delegator.json", "GET, POST", "how a path routes (path, dtab, router)"),
    ("/admin/shutdown", "POST", "graceful shutdown of the linker"),
)

_PAGES: Final = {"/": "linker.html", "/delegator": "delegator.html"}
_JSON_PATHS: Final = frozenset({"/admin/ready", "/admin/workers.json", "/admin/index.json"})


def serves(path: str) -> bool:
    """Whether ``path`` is one of the console's (GET/HEAD) paths."""
    return path in _PAGES or path in _JSON_PATHS or path.startswith(ASSET_PREFIX)


def answer(admin: AdminServer, path: str) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` for a GET of ``path`` (one :func:`serves` accepts)."""
    if path in _PAGES:
        return 200, page(_PAGES[path], side="linker", api=""), _HTML
    if path.startswith(ASSET_PREFIX):
        name = path[len(ASSET_PREFIX) :]
        found = asset(name)
        if found is None or name.endswith(".html"):
            return 404, b"not found\n", _TEXT
        return 200, *found
    if path == "/admin/ready":
        ready, reasons = _readiness(admin).check(admin)
        body = ("ready\n" if ready else "not ready\n") + "".join(f"{r}\n" for r in reasons)
        return (200 if ready else 503), body.encode(), _TEXT
    if path == "/admin/workers.json":
        return 200, json.dumps(workers(admin)).encode(), _JSON
    rows = [{"path": p, "methods": m, "what": w} for p, m, w in ENDPOINTS]
    return 200, json.dumps(rows).encode(), _JSON


def workers(admin: AdminServer) -> dict[str, Any]:
    """Each live worker's pid and the namerd watch gauges of its routers (not summed), and
    ``endpoints``: per router, client and endpoint address, the freshest last error any worker
    saw (``{"last_error", "last_error_age_s", "pid"}``; the workers' ``loadbalancer/endpoints``
    snapshot details). Errors are text, so they are picked, not merged: the most recent wins."""
    out = []
    errors: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for snap in live_snapshots(admin.metrics_dir):
        namerd: dict[str, dict[str, float]] = {}
        for name, value in (snap.get("gauges") or {}).items():
            label, sep, stat = str(name).removeprefix("rt/").partition("/interpreter/namerd/")
            if sep and str(name).startswith("rt/"):
                namerd.setdefault(label, {})[stat] = value
        out.append({"pid": snap.get("pid"), "namerd": namerd})
        for name, eps in (snap.get("details") or {}).items():
            where = _ENDPOINT_DETAIL.match(str(name))
            if where is None or not isinstance(eps, list):
                continue
            # Named as the dashboard names clients: "/" and the id of the metric names.
            client = errors.setdefault(where["label"], {}).setdefault(f"/{where['client']}", {})
            for ep in eps:
                age = ep.get("last_error_age_s") if isinstance(ep, dict) else None
                if not isinstance(age, int | float):
                    continue
                seen = client.get(str(ep.get("address")))
                if seen is None or age < seen["last_error_age_s"]:
                    client[str(ep.get("address"))] = {
                        "last_error": ep.get("last_error"),
                        "last_error_age_s": age,
                        "pid": snap.get("pid"),
                    }
    return {"workers": sorted(out, key=lambda w: int(w["pid"] or 0)), "endpoints": errors}


def _namerd_routers(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, interpreter section) of every router bound by namerd, from the raw config."""
    found = []
    for router in config.get("routers") or []:
        interp = router.get("interpreter") or {}
        if interp.get("kind") == _NAMERD:
            found.append((str(router.get("label", router.get("protocol", "http"))), interp))
    return found


class _Readiness:
    """The sticky part of readiness (which routers' namerd has answered), per admin server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reached: set[str] = set()
        self.warned: set[str] = set()

    def check(self, admin: AdminServer) -> tuple[bool, list[str]]:
        reasons: list[str] = []
        gauges = admin.master_stats().get("gauges", {})
        booted, wanted = int(gauges.get("master/workers_ready", 0)), gauges.get("master/workers")
        if booted < 1:
            reasons.append(f"no linker worker has booted yet (0 of {wanted or '?'} ready)")
        else:
            reasons.append(f"{booted} worker(s) booted")
        snapshots = live_snapshots(admin.metrics_dir)
        ok = booted >= 1
        for label, interp in _namerd_routers(admin.config_json()):
            why = self._namerd_ok(admin, label, interp, snapshots)
            ok = ok and why[0]
            reasons.append(f"router {label}: {why[1]}")
        return ok, reasons

    def _namerd_ok(
        self, admin: AdminServer, label: str, interp: dict[str, Any], snapshots: list[Any]
    ) -> tuple[bool, str]:
        stat = f"rt/{label}/interpreter/namerd/watches/connected"
        if any((s.get("gauges") or {}).get(stat, 0) > 0 for s in snapshots):
            self._mark(label)
            return True, "a worker has a connected namerd stream"
        if _has_last_known(admin.metrics_dir, label):
            return True, "workers hold namerd answers (last-known state)"
        if label in self.reached:
            return True, "namerd has answered (workers serve last-known state while it is away)"
        problem = _probe(interp)
        if problem is None:
            self._mark(label)
            return True, "namerd answers"
        with self._lock:
            first = label not in self.warned
            self.warned.add(label)
        if first:
            log.warning("router %s: namerd is unreachable, not ready: %s", label, problem)
        return False, f"namerd has not been reached: {problem}"

    def _mark(self, label: str) -> None:
        with self._lock:
            self.reached.add(label)
            self.warned.discard(label)


_STATES: weakref.WeakKeyDictionary[AdminServer, _Readiness] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _readiness(admin: AdminServer) -> _Readiness:
    with _STATES_LOCK:
        state = _STATES.get(admin)
        if state is None:
            state = _STATES[admin] = _Readiness()
        return state


def _has_last_known(metrics_dir: str, label: str) -> bool:
    """Whether a worker wrote namerd answers for ``label`` to share (``linker.naming``)."""
    folder = FsPath(metrics_dir) / "last-known"
    for path in folder.glob(f"{_file_safe(label)}.*.json"):
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("watches"):
            return True
    return False


def _probe(interp: dict[str, Any]) -> str | None:
    """None if a namerd of ``interp``'s ``dst`` answers HTTP at all; else what went wrong."""
    try:
        dsts = parse_dst(interp.get("dst") or "")
    except ValueError as err:
        return f"dst: {err}"
    namespace = urllib.parse.quote(str(interp.get("namespace", DEFAULT_NAMESPACE)), safe="")
    failures = []
    for host, port in dsts:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = f"http://{authority}/api/1/dtabs/{namespace}"
        try:
            with urllib.request.urlopen(url, timeout=READY_PROBE_TIMEOUT_S) as resp:
                resp.read(0)
            return None
        except urllib.error.HTTPError:
            return None  # namerd answered (a 404 is a namespace not created yet)
        except (OSError, ValueError) as err:
            failures.append(f"{authority}: {getattr(err, 'reason', err)}")
    return "; ".join(failures) or "no address"
