"""The framework floor: the least a trio + h11 forwarder can do per request, for comparison.

One upstream connection per client connection, no routing, no timeouts, no pool, no metrics,
no header rewriting, no error handling beyond closing: what any proxy built on trio and h11
pays before doing anything useful. The report shows the linker against it, so the cost of the
framework and the cost of the linker's features can be told apart.

    python -m loadtests.bench.floor --port 8081 --upstream 127.0.0.1:8080

Not a product: it does not stream large bodies with backpressure, and it forwards whatever
the client sends to one fixed upstream.
"""

from __future__ import annotations

import argparse
from functools import partial

import h11
import trio

__all__ = ["main"]


async def _forward(upstream: tuple[str, int], client: trio.SocketStream) -> None:
    try:
        async with client, await trio.open_tcp_stream(*upstream) as up:
            down_h11 = h11.Connection(h11.SERVER)
            up_h11 = h11.Connection(h11.CLIENT)
            while True:
                event = down_h11.next_event()
                if event is h11.NEED_DATA:
                    data = await client.receive_some(65536)
                    if not data:
                        return
                    down_h11.receive_data(data)
                    continue
                if type(event) is h11.Request:
                    head = h11.Request(
                        method=event.method, target=event.target, headers=event.headers
                    )
                    out = up_h11.send(head) or b""
                    while type(body := down_h11.next_event()) is h11.Data:
                        out += up_h11.send(body) or b""
                    if body is h11.NEED_DATA:
                        return  # bodies split over reads are out of scope here
                    out += up_h11.send(h11.EndOfMessage()) or b""
                    await up.send_all(out)
                    await client.send_all(await _response(up, up_h11, down_h11))
                    down_h11.start_next_cycle()
                    up_h11.start_next_cycle()
                    continue
                return  # ConnectionClosed or anything unexpected
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, OSError):
        return


async def _response(up: trio.SocketStream, up_h11: h11.Connection, down: h11.Connection) -> bytes:
    out = b""
    while True:
        event = up_h11.next_event()
        if event is h11.NEED_DATA:
            up_h11.receive_data(await up.receive_some(65536))
            continue
        if type(event) is h11.Response:
            headers = [(n, v) for n, v in event.headers]
            out += down.send(h11.Response(status_code=event.status_code, headers=headers)) or b""
        elif type(event) is h11.Data:
            out += down.send(h11.Data(data=event.data)) or b""
        elif type(event) is h11.EndOfMessage:
            return out + (down.send(h11.EndOfMessage()) or b"")
        else:
            raise h11.RemoteProtocolError(f"unexpected {event!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="host:port")
    args = ap.parse_args()
    host, _, port = args.upstream.rpartition(":")
    handler = partial(_forward, (host, int(port)))
    try:
        trio.run(partial(trio.serve_tcp, handler, args.port, host=args.host))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
