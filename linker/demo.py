"""A tiny demo HTTP service for the quick start and tests: says who it is and what it received.

    python -m linker.demo --name hello --port 8081

Answers every request with ``Hello from <name> (127.0.0.1:<port>)`` plus the path and the
``l5d-*`` headers the linker added, so routing decisions are visible with plain curl.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["main", "serve"]


def _handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Head and body go out in two sends; without this the body waits ~40 ms for the
            # peer's delayed ACK (Nagle), which would look like linker latency.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _answer(self, with_body: bool) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = self.rfile.read(length) if length else b""
            address = self.server.server_address
            host, port = (address[0], address[1]) if isinstance(address, tuple) else (address, 0)
            lines = [f"Hello from {name} ({host}:{port})", f"path: {self.path}"]
            lines += [f"{k}: {v}" for k, v in self.headers.items() if k.lower().startswith("l5d-")]
            if received:
                lines.append(f"received {len(received)} bytes")
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Served-By", name)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the quick start prints its own guide

    return Handler


class _Server(ThreadingHTTPServer):
    # The stdlib's listen backlog is 5: a linker opening a burst of connections (32 clients
    # at once) had requests waiting ~1 s for a SYN retransmit. Found by the locust scenarios.
    request_queue_size = 256


def serve(name: str, host: str, port: int) -> ThreadingHTTPServer:
    """Create (not start) the demo server."""
    server = _Server((host, port), _handler(name))
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    """Run one demo service until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="linker-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        server = serve(args.name, args.host, args.port)
    except OSError as err:
        print(
            f"demo {args.name}: cannot listen on {args.host}:{args.port}: {err.strerror}",
            file=sys.stderr,
        )
        return 1
    # shutdown() waits for serve_forever() to return, so it must run on another thread.
    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
