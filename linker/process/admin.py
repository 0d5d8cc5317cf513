"""The linker's admin server (Linkerd's ``admin``, default 127.0.0.1:9990), served by the master.

One server for the whole process tree, not one per worker: metrics are merged from the
workers' snapshot files, so every scrape sees every worker, and the endpoints keep answering
while workers crash, drain or reload. It is a stdlib ``ThreadingHTTPServer`` in a daemon thread
of the master, which stays synchronous and trio-free; the work per request is small (read a few
JSON files, format text).

=================================  ==========  ============================================
``/admin/ping``                    GET         ``pong`` (liveness probe)
``/admin/metrics.json``            GET         Linkerd's flat metrics (``?pretty=1`` indents)
``/admin/metrics/prometheus``      GET         the same, Prometheus text format 0.0.4
``/config.json``                   GET         the config the serving generation runs
``/delegator.json``                GET, POST   how a path routes: ``path``, ``dtab``,
                                               ``router`` (Linkerd calls it ``namespace``)
``/admin/shutdown``                POST        graceful shutdown of the whole linker
``/``, ``/delegator``, ...         GET         the console: dashboard, dtab playground,
                                               ``/admin/ready`` (``linker.process.console``)
=================================  ==========  ============================================

Any other path is 404; a known path with the wrong method is 405 with ``Allow``. Shutdown is
POST-only so that a browser prefetch, a crawler or a stray ``curl`` cannot stop the linker.

Admin actions (every POST, PUT, DELETE, PATCH except the read ``POST /delegator.json``) pass
``shared.webguard.check_write`` first, so a web page cannot stop the linker: a Host that is not
``localhost``, an IP literal or in ``admin.allowedHosts`` is 421 (DNS rebinding), a
cross-site ``Sec-Fetch-Site`` or a foreign ``Origin`` is 403; the refusal is a JSON
``{"error", "reason"}``. There is no Content-Type rule here: shutdown has no body, and every
browser that can send it cross-origin sends Origin (``curl -X POST`` keeps working). Reads are
not judged: Prometheus and health checks reach the admin by any name.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from linker.metrics import merge, to_json, to_prometheus
from linker.process import console
from shared.webguard import check_write

__all__ = ["ADMIN_PORT", "REQUEST_TIMEOUT_S", "AdminServer", "Delegate"]

log = logging.getLogger("linker.admin")

#: Linkerd's default admin port.
ADMIN_PORT = 9990
#: Seconds an admin connection may sit idle (or trickle a request) before it is closed.
REQUEST_TIMEOUT_S = 30.0
#: Largest request body accepted (a POSTed delegator query), in bytes.
MAX_BODY_BYTES = 1 << 20

#: ``delegate(path, dtab, router) -> (status, body)``; body is a JSON-able value, or a str/bytes
#: that is already the response (sent as JSON if it parses as JSON, else as text).
Delegate = Callable[[str, str, "str | None"], "tuple[int, Any]"]

_GET_ONLY = frozenset({"/admin/ping", "/admin/metrics.json", "/admin/metrics/prometheus",
                       "/config.json"})  # fmt: skip


class AdminServer:
    """The admin HTTP server. ``start()`` binds and serves in a daemon thread; ``stop()`` ends it.

    Args:
        ip: address to bind (loopback by default, as Linkerd since 1.2).
        port: port to bind; 0 picks a free one (see :attr:`address`).
        metrics_dir: the directory the workers write their snapshots to.
        config_json: returns the current config as a JSON-able dict.
        delegate: explains routing for ``/delegator.json``; None makes that endpoint 404.
        on_shutdown: called (in a server thread) on ``POST /admin/shutdown``; must not block.
        master_stats: returns ``{"counters": {...}, "gauges": {...}}`` added to the merge.
        request_timeout_s: idle/read timeout per connection (:data:`REQUEST_TIMEOUT_S`).
        allowed_hosts: Host names admin actions may name besides ``localhost`` and IP
            literals (config ``admin.allowedHosts``; ``*`` allows any).
    """

    def __init__(
        self,
        ip: str = "127.0.0.1",
        port: int = ADMIN_PORT,
        *,
        metrics_dir: str,
        config_json: Callable[[], dict[str, Any]],
        delegate: Delegate | None,
        on_shutdown: Callable[[], None],
        master_stats: Callable[[], dict[str, Any]],
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        allowed_hosts: tuple[str, ...] = (),
    ) -> None:
        self.ip = ip
        self.allowed_hosts = allowed_hosts
        self.port = port
        self.metrics_dir = metrics_dir
        self.config_json = config_json
        self.delegate = delegate
        self.on_shutdown = on_shutdown
        self.master_stats = master_stats
        self.request_timeout_s = request_timeout_s
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(ip, port)``; the configured one before :meth:`start`."""
        if self._server is None:
            return (self.ip, self.port)
        name = self._server.socket.getsockname()
        return (str(name[0]), int(name[1]))

    def start(self) -> None:
        """Bind and start serving in a daemon thread.

        Raises:
            OSError: if the address cannot be bound (the master reports it and exits 1).
        """
        if self._server is not None:
            return
        # StreamRequestHandler applies the class attribute ``timeout`` to each connection.
        handler = type("_Handler", (_Handler,), {"timeout": self.request_timeout_s})
        server = _Server((self.ip, self.port), handler, admin=self)
        self._server = server
        # A daemon thread: a stuck admin request must never keep the linker from exiting.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="admin", daemon=True
        )
        self._thread.start()
        log.info("admin server on http://%s:%d", *self.address)

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close_in_child(self) -> None:
        """In a forked worker: close the inherited listening socket, leave the master's alone.

        The serving thread does not exist in the child, so ``stop()`` would wait forever;
        closing our descriptor is all that is needed.
        """
        server, self._server = self._server, None
        self._thread = None
        if server is not None:
            server.socket.close()

    def merged_metrics(self) -> dict[str, Any]:
        """Workers' snapshots merged, plus the master's own counters and gauges."""
        merged = merge(self.metrics_dir)
        stats = self.master_stats()
        merged["counters"].update(stats.get("counters", {}))
        merged["gauges"].update(stats.get("gauges", {}))
        return merged

    def __repr__(self) -> str:
        state = "serving" if self._server is not None else "stopped"
        return "<AdminServer {}:{} {}>".format(*self.address, state)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *, admin: AdminServer
    ) -> None:
        self.admin = admin
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "l5py-admin"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # -- routing -------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        admin = self.server.admin
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        read_only = method in ("GET", "HEAD")
        if not (read_only or (method == "POST" and path == "/delegator.json")):
            refusal = check_write(
                method,
                self.headers.get("Host"),
                self.headers.get("Origin"),
                self.headers.get("Sec-Fetch-Site"),
                self.headers.get("Content-Type"),
                allowed_hosts=admin.allowed_hosts,
                allowed_hosts_key="admin.allowedHosts",
            )
            if refusal is not None:
                self.close_connection = True  # the body, if any, was not read
                body = {"error": refusal.reason, "reason": refusal.code}
                self._send_json(refusal.status, body, method)
                return
        try:
            if path == "/admin/shutdown":
                if method != "POST":
                    self._not_allowed("POST")
                    return
                self._drain_body()
                # First initiate, then answer: a 200 means the shutdown is under way. The
                # master stops this server only after its workers drained, so the answer
                # still goes out.
                admin.on_shutdown()
                self._send(HTTPStatus.OK, b"shutting down\n", "text/plain; charset=utf-8")
            elif path == "/delegator.json":
                if not read_only and method != "POST":
                    self._not_allowed("GET, HEAD, POST")
                    return
                self._delegator(admin, query if read_only else self._json_body(), method)
            elif path in _GET_ONLY:
                if not read_only:
                    self._not_allowed("GET, HEAD")
                    return
                self._drain_body()
                self._get(admin, path, query, method)
            elif console.serves(path):  # the dashboard, playground, readiness (console.py)
                if not read_only:
                    self._not_allowed("GET, HEAD")
                    return
                self._drain_body()
                self._send(*console.answer(admin, path), method)
            else:
                self._drain_body()
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
        except _BadRequest as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)}, method)
        except Exception as exc:
            log.exception("admin %s %s failed", method, path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"}, method
            )

    def _get(self, admin: AdminServer, path: str, query: dict[str, str], method: str) -> None:
        if path == "/admin/ping":
            self._send(HTTPStatus.OK, b"pong", "text/plain; charset=utf-8", method)
        elif path == "/admin/metrics.json":
            indent = 2 if query.get("pretty") in ("1", "true") else None
            body = json.dumps(to_json(admin.merged_metrics()), indent=indent)
            self._send(HTTPStatus.OK, body.encode(), "application/json", method)
        elif path == "/admin/metrics/prometheus":
            body = to_prometheus(admin.merged_metrics())
            self._send(HTTPStatus.OK, body.encode(), "text/plain; version=0.0.4", method)
        elif path == "/config.json":
            body = json.dumps(admin.config_json(), indent=2, default=str)
            self._send(HTTPStatus.OK, body.encode(), "application/json", method)

    def _delegator(self, admin: AdminServer, params: dict[str, Any], method: str) -> None:
        if admin.delegate is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "no delegator configured"}, method)
            return
        path = params.get("path")
        if not isinstance(path, str) or not path:
            raise _BadRequest("the 'path' parameter is required, e.g. path=/svc/users")
        dtab = params.get("dtab") or ""
        router = params.get("router") or params.get("namespace") or None
        if not isinstance(dtab, str) or not (router is None or isinstance(router, str)):
            raise _BadRequest("'dtab' and 'router' must be strings")
        status, body = admin.delegate(path, dtab, router)
        if isinstance(body, str):
            body = body.encode()
        if isinstance(body, bytes):
            try:
                json.loads(body)
                ctype = "application/json"
            except ValueError:
                ctype = "text/plain; charset=utf-8"
            self._send(status, body, ctype, method)
        else:
            self._send_json(status, body, method)

    # -- I/O -----------------------------------------------------------------------------------

    def _body_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        try:
            n = int(raw)
        except ValueError:
            raise _BadRequest("invalid Content-Length") from None
        if n < 0 or n > MAX_BODY_BYTES:
            self.close_connection = True
            raise _BadRequest(f"request body must be 0..{MAX_BODY_BYTES} bytes")
        return n

    def _drain_body(self) -> None:
        # Unread body bytes would be parsed as the next request on a kept-alive connection.
        n = self._body_length()
        if n:
            self.rfile.read(n)

    def _json_body(self) -> dict[str, Any]:
        n = self._body_length()
        raw = self.rfile.read(n) if n else b""
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _BadRequest("body must be a JSON object")
        return data

    def _not_allowed(self, allow: str) -> None:
        self.close_connection = True  # we did not read a body the client may have sent
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"method not allowed; use {allow}\n".encode(),
            "text/plain; charset=utf-8",
            extra={"Allow": allow},
        )

    def _send_json(self, status: int, value: Any, method: str = "GET") -> None:
        self._send(status, json.dumps(value, default=str).encode(), "application/json", method)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        method: str = "GET",
        *,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)


class _BadRequest(Exception):
    """A malformed admin request: answered 400 with the message."""
