"""A tiny HTTP backend for the load tests: one process, one or more named listeners.

    python -m loadtests.backend alpha-1=8101 alpha-2=8102 beta-v1=8111

Every listener answers any method with ``200``, an ``X-Served-By: <name>`` header and a short
body naming itself and how many bytes it received, so a load test can tell which replica (or
which version) served each request. Request bodies are read in full (Content-Length or chunked)
so keep-alive connections stay usable. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["main", "serve"]

#: The header that names the backend; the locustfile reads it (``LOADTEST_SERVED_BY_HEADER``).
SERVED_BY = "X-Served-By"


def _handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # http.server sends the head and the body in two writes; with Nagle on, the body
            # waits for the peer's delayed ACK (~40 ms) and every latency figure would show it.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _read_body(self) -> int:
            length = self.headers.get("Content-Length")
            if length:
                remaining = int(length)
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                return int(length) - remaining
            received = 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    received += len(self.rfile.read(size))
                    self.rfile.readline()
            return received

        def _answer(self, with_body: bool = True) -> None:
            received = self._read_body()
            body = f"{name} {self.command} {self.path} received {received} bytes\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header(SERVED_BY, name)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def do_HEAD(self) -> None:
            self._answer(with_body=False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # thousands of requests a second: no access log

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when the linker opens a burst of connections, and a
    # dropped SYN costs a 1 s retransmit, which would look like proxy latency.
    request_queue_size = 256


def serve(name: str, host: str, port: int) -> ThreadingHTTPServer:
    """Create (not start) one named listener on ``host:port``."""
    return _Server((host, port), _handler(name))


def main(argv: list[str] | None = None) -> int:
    """Serve every ``NAME=PORT`` given until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.backend", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("listeners", nargs="+", metavar="NAME=PORT")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    servers: list[ThreadingHTTPServer] = []
    for spec in args.listeners:
        name, _, port = spec.partition("=")
        if not name or not port.isdigit():
            parser.error(f"expected NAME=PORT, got {spec!r}")
        try:
            servers.append(serve(name, args.host, int(port)))
        except OSError as err:
            print(f"backend {name}: cannot listen on {args.host}:{port}: {err}", file=sys.stderr)
            return 1
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        for s in servers
    ]
    for t in threads:
        t.start()
    while not done.wait(0.5):  # a timed wait so the signal handler always gets to run
        pass
    for s in servers:
        s.shutdown()
        s.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
