"""The benchmark's fallback backend when nginx is not installed: canned answers, asyncio.

``GET /64k`` answers 65,536 bytes, anything else ``ok\\n``; keep-alive, pipelining-safe.

    python -m loadtests.bench.fastbackend --port 8080
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

__all__ = ["main"]

_SMALL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
_BIG = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 65536\r\n\r\n"
    + os.urandom(65536)
)


class _Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        out = []
        # Requests carry no body (GETs); each ends with an empty line.
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            line = self.buf[: self.buf.find(b"\r\n")]
            self.buf = self.buf[end + 4 :]
            out.append(_BIG if b" /64k " in line else _SMALL)
        if out:
            self.transport.write(b"".join(out))


async def _serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        asyncio.run(_serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
