"""``/delegator.json`` for the admin server: explain how a path is routed.

Runs in the (synchronous, trio-free) master, which has no interpreter of its own. Every answer
is namerd's delegate JSON, made by ``shared.explain``:

* A router bound by namerd (``io.l5d.namerd.http``) is explained by namerd's own delegate API
  (``/api/1/delegate/<namespace>``), with the router's dtab and the request's ``dtab``
  appended: exactly what the workers send when binding. namerd's addresses are the
  interpreter's ``dst``, read by ``transport.parse_dst`` (every form the interpreter
  accepts: ``/$/inet/h/p``, alternatives ``a | b``, lists), tried in order until one answers;
  each gets :data:`NAMERD_DELEGATE_TIMEOUT_S`.
* A router with a local dtab is explained here by ``shared.explain`` through the configured
  ``io.l5d.fs`` namers, whose directories are read as the workers' namers read them
  (``shared.fsformat``). A bound leaf shows its addresses when they need no DNS (IP
  literals); the master does no DNS, so the addresses of a host name are left out.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Final

from linker.config.model import LinkerConfig, RouterConfig
from linker.naming.local_namers import NamerConfigError, fs_namer_settings
from linker.naming.transport import DEFAULT_NAMESPACE, missing_namespace, parse_dst
from shared import (
    ADDR_PENDING,
    Addr,
    AddrBound,
    Address,
    AddrNeg,
    AddrPending,
    Bound,
    DelegationError,
    Dtab,
    DtabParseError,
    NameTree,
    Path,
)
from shared.binding import lookup_by_prefix
from shared.explain import explain
from shared.fsformat import FsDirectory, parse_ip
from shared.names import Name, inet_addr
from shared.wire import encode

__all__ = ["MAX_NAMERD_ANSWER_BYTES", "NAMERD_DELEGATE_TIMEOUT_S", "make_delegate"]

#: How long the admin server waits for namerd's delegate API, per namerd address.
NAMERD_DELEGATE_TIMEOUT_S: Final = 5.0
#: The largest explanation accepted from namerd (protects the master's memory).
MAX_NAMERD_ANSWER_BYTES: Final = 4 * 1024 * 1024

#: ``delegate(path, dtab, router) -> (status, body)``, as the admin server calls it.
Delegate = Callable[[str, str, str | None], tuple[int, str]]


def make_delegate(config: LinkerConfig) -> Delegate:
    """The ``delegate(path, dtab, router)`` callable the admin server calls."""
    routers = {r.label: r for r in config.routers}

    def run(path_text: str, extra_text: str, label: str | None) -> tuple[int, str]:
        router: RouterConfig | None = routers.get(label) if label else config.routers[0]
        if router is None:
            return 404, f"no router labelled {label!r} (routers: {', '.join(routers)})\n"
        try:
            path = Path.read(path_text)
        except DtabParseError as err:
            return 400, f"Invalid path: {err}\n{err.render()}\n"
        try:
            extra = Dtab.read(extra_text) if extra_text else Dtab.empty()
        except DtabParseError as err:
            return 400, f"Invalid dtab: {err}\n{err.render()}\n"
        dtab = router.dtab + extra
        interp = router.interpreter or {}
        if interp.get("kind") == "io.l5d.namerd.http":
            return _ask_namerd(interp, path, dtab)
        return _explain_here(config.namers, path, dtab)

    return run


def _ask_namerd(interp: Mapping[str, Any], path: Path, dtab: Dtab) -> tuple[int, str]:
    dst = interp.get("dst")
    try:
        if dst is None:
            raise ValueError("dst is required, e.g. /$/inet/127.0.0.1/4180")
        dsts = parse_dst(dst)
    except ValueError as err:
        return 500, f"interpreter io.l5d.namerd.http: {err}\n"
    namespace = str(interp.get("namespace", DEFAULT_NAMESPACE))
    query = urllib.parse.urlencode({"path": path.show(), "dtab": dtab.show()})
    target = f"/api/1/delegate/{urllib.parse.quote(namespace, safe='')}?{query}"
    failures: list[str] = []
    for host, port in dsts:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with urllib.request.urlopen(
                f"http://{authority}{target}", timeout=NAMERD_DELEGATE_TIMEOUT_S
            ) as answer:
                body = answer.read(MAX_NAMERD_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as err:  # namerd answered: that is the answer
            text = err.read(MAX_NAMERD_ANSWER_BYTES).decode(errors="replace")
            return 502, f"namerd answered {err.code}: {text}"
        except OSError as err:
            failures.append(f"{authority}: {getattr(err, 'reason', None) or err}")
            continue
        if len(body) > MAX_NAMERD_ANSWER_BYTES:
            return 502, f"namerd's explanation exceeds {MAX_NAMERD_ANSWER_BYTES} bytes\n"
        if _namespace_missing(authority, namespace):
            # namerd explains a missing namespace as an empty dtab; say what is wrong instead.
            return 404, missing_namespace(namespace, host, port) + "\n"
        return 200, body.decode(errors="replace")
    return 502, f"cannot reach namerd to explain {path.show()}: {'; '.join(failures)}\n"


def _namespace_missing(authority: str, namespace: str) -> bool:
    """True when namerd at ``authority`` answers 404 for the namespace's dtab."""
    url = f"http://{authority}/api/1/dtabs/{urllib.parse.quote(namespace, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=NAMERD_DELEGATE_TIMEOUT_S):
            return False
    except urllib.error.HTTPError as err:
        return err.code == 404
    except OSError:
        return False


def _no_dns(host: str, port: int) -> Addr:
    return ADDR_PENDING  # the master does no DNS: a host name's addresses stay unknown


def _ip_only(host: str, port: int, fixed: bool) -> Addr:
    ip = parse_ip(host)
    return _no_dns(host, port) if ip is None else AddrBound(frozenset({Address(ip, port)}))


def _explain_here(namers: tuple[dict[str, Any], ...], path: Path, dtab: Dtab) -> tuple[int, str]:
    try:
        settings = [fs_namer_settings(n) for n in namers]
    except NamerConfigError as err:
        return 500, f"{err}\n"
    views = {s.prefix: _Lazy(s.root_dir) for s in settings}

    def addr_of(bound: Bound) -> Addr | None:
        for prefix, view in views.items():
            if bound.id.startswith(prefix):
                addr = view.get().addr(prefix, bound.id, _no_dns)
                return None if isinstance(addr, AddrPending) else addr
        addr = inet_addr(bound.id, _ip_only)
        return None if isinstance(addr, AddrPending | AddrNeg) else addr

    lookup = lookup_by_prefix({prefix: partial(_lookup, prefix, v) for prefix, v in views.items()})
    try:
        tree = explain(dtab, path, lookup, addr_of, namers=list(views))
    except DelegationError as err:  # a dtab loop (502, namerd's answer), or over budget (400)
        return err.status_hint, f"Delegating {path.show()} failed: {err}\n"
    return 200, encode(tree)


def _lookup(prefix: Path, view: _Lazy, path: Path) -> NameTree[Name]:
    return view.get().lookup(prefix, path)


class _Lazy:
    """One fs namer's directory, read on first use within one explanation."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._view: FsDirectory | None = None

    def get(self) -> FsDirectory:
        """The directory's services.

        Raises:
            NamerConfigError: it cannot be listed (the explanation shows it as the namer's
                failure).
        """
        if self._view is None:
            view = FsDirectory(self.root)
            try:
                view.apply(view.scan(time.time_ns()))
            except OSError as err:
                raise NamerConfigError(
                    f"rootDir {self.root!r} cannot be listed: {err.strerror or err}"
                ) from err
            self._view = view
        return self._view
