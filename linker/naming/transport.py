"""Talking to namerd's streaming HTTP API: addresses, connections, requests, stream values.

* **namerd addresses.** The interpreter's ``dst`` (:func:`parse_dst`) is a list of
  (host, port) tried in order on every (re)connect (:func:`connect`), each bounded by
  ``connect_timeout_s`` (default 3 s).
* **Requests.** One ``GET`` per watch (:func:`watch_request`): ``/api/1/bind/<ns>?path=<p>&
  dtab=<local dtab>&watch=1`` or ``/api/1/addr/<ns>?path=<id>&watch=1``, over HTTP/1.1 (h11).
* **Stream format.** A chunked body of JSON values, one per line; a blank line is a heartbeat
  (our namerd sends one every ``watchHeartbeatMs``); ``{"type":"exception",...}`` on a bind
  stream means "binding failed" and becomes a :class:`BindError`, kept by the watch as a
  failure state until a good tree replaces it, so a dtab that loops is reported (502 naming
  the loop) rather than silently ignored. A line that is not JSON (Linkerd's namerd writes its
  error as plain text and closes the stream) is a failure with that text: :class:`BindError`
  on a bind stream, ``AddrFailed`` on an addr stream (:func:`decode_bind_line`,
  :func:`decode_addr_line` never raise).

Reading the streams, reconnecting and sharing them is the watch registry's (``watches.py``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import h11
import trio

from shared import (
    Addr,
    AddrFailed,
    Bound,
    DtabParseError,
    NameTree,
    Path,
    SharedError,
    leaves,
    read_name_tree,
)
from shared.wire import addr_from_json, bound_tree_from_json

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_NAMESPACE",
    "BindError",
    "BindValue",
    "NamerdError",
    "connect",
    "decode_addr_line",
    "decode_bind_line",
    "missing_namespace",
    "parse_dst",
    "watch_request",
]

DEFAULT_NAMESPACE: Final = "default"
#: The longest wait for a TCP connection to one namerd address.
DEFAULT_CONNECT_TIMEOUT_S: Final = 3.0
_USER_AGENT: Final = "l5py-linker (io.l5d.namerd.http)"


class NamerdError(Exception):
    """Talking to namerd failed (connect, protocol, status, timeout); the message says how.

    ``status`` is namerd's HTTP status when it answered with something other than 200.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def parse_dst(dst: str | Sequence[str]) -> list[tuple[str, int]]:
    """namerd's addresses from the interpreter's ``dst``, in the order to try them.

    ``dst`` is a Finagle path ``/$/inet/<host>/<port>``, a name tree of such paths
    (``/$/inet/a/4180 | /$/inet/b/4180``: leaves in order), or a list of them.

    Raises:
        ValueError: anything that is not ``/$/inet/<host>/<port>`` (other namers would need
            the linker's own namers to find namerd, which we do not do).
    """
    texts = [dst] if isinstance(dst, str) else list(dst)
    if not texts:
        raise ValueError("dst must name at least one namerd, e.g. /$/inet/127.0.0.1/4180")
    out: list[tuple[str, int]] = []
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(f"dst must be a path such as /$/inet/namerd/4180, got {text!r}")
        try:
            tree = read_name_tree(text)
        except DtabParseError as err:
            raise ValueError(f"dst {text!r} is not a path: {err}") from err
        for path in leaves(tree):
            labels = path.labels
            ok = len(labels) == 4 and labels[0] == b"$" and labels[1] in (b"inet", b"fixedinet")
            port = labels[3].decode("ascii", "replace") if ok else ""
            if not ok or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ValueError(
                    f"dst {path.show()} must be /$/inet/<host>/<port>, e.g. /$/inet/127.0.0.1/4180"
                )
            host = labels[2].decode("utf-8", "replace")
            if (host, int(port)) not in out:
                out.append((host, int(port)))
    if not out:
        raise ValueError(f"dst {dst!r} names no namerd address")
    return out


@dataclass(frozen=True)
class BindValue:
    """A bind tree from namerd, and the addrs namerd showed inline per bound id."""

    tree: NameTree[Bound]
    inline_addrs: Mapping[Path, Addr]


@dataclass(frozen=True)
class BindError:
    """namerd said binding fails (or sent something we cannot read); ``message`` says why."""

    message: str


def _json(line: bytes) -> Any:
    return json.loads(line.decode("utf-8"))


def decode_bind_line(line: bytes) -> BindValue | BindError:
    """One bind-stream value. Never raises: what cannot be read becomes a :class:`BindError`."""
    try:
        value = _json(line)
    except (UnicodeDecodeError, ValueError):
        text = line.decode("utf-8", "replace").strip()
        return BindError(f"namerd: {text}" if text else "namerd sent an empty error")
    if isinstance(value, dict) and value.get("type") == "exception":
        message = value.get("message")
        return BindError(str(message) if message else "namerd reported a binding failure")
    try:
        tree, addrs = bound_tree_from_json(value)
    except (SharedError, RecursionError) as err:
        return BindError(f"namerd sent a bind tree we cannot read: {err}")
    return BindValue(tree, addrs)


def decode_addr_line(line: bytes) -> Addr:
    """One addr-stream value. Never raises: what cannot be read becomes ``AddrFailed``."""
    try:
        value = _json(line)
    except (UnicodeDecodeError, ValueError):
        text = line.decode("utf-8", "replace").strip()
        return AddrFailed(f"namerd: {text}" if text else "namerd sent an empty error")
    try:
        return addr_from_json(value)
    except SharedError as err:
        return AddrFailed(f"namerd sent an addr we cannot read: {err}")


def _connect_error(err: OSError) -> str:
    """The useful part of a connect error: trio wraps the per-address ones in a group."""
    causes = getattr(err.__cause__, "exceptions", None) or (err,)
    # trio's per-address errors read "Error connecting to (...): Connection refused"; the
    # address is already in our message, so keep the reason only.
    reasons = {
        os.strerror(c.errno) if c.errno else (c.strerror or str(c))
        for c in causes
        if isinstance(c, OSError)
    }
    return ", ".join(sorted(reasons)) or str(err)


async def connect(
    dst: Sequence[tuple[str, int]], connect_timeout_s: float
) -> tuple[trio.SocketStream, tuple[str, int]]:
    """A TCP connection to the first namerd address of ``dst`` that accepts one, and that address.

    Raises:
        NamerdError: none did within ``connect_timeout_s`` each; the message lists why.
    """
    errors: list[str] = []
    for host, port in dst:
        try:
            with trio.fail_after(connect_timeout_s):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            errors.append(f"{host}:{port}: connect timed out after {connect_timeout_s}s")
            continue
        except OSError as err:
            errors.append(f"{host}:{port}: {_connect_error(err)}")
            continue
        # Keepalive lets the kernel notice a peer that vanished without a FIN.
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return stream, (host, port)
    raise NamerdError("cannot connect to namerd: " + "; ".join(errors))


def missing_namespace(namespace: str, host: str, port: int) -> str:
    """What a client is told when namerd at ``host``:``port`` has no dtab ``namespace``
    (namerd binds every name in a missing namespace to ``neg``, as in an empty dtab)."""
    return f"namespace '{namespace}' does not exist in namerd at {host}:{port}"


def watch_request(target: str, host: str, port: int, *, close: bool) -> h11.Request:
    """The ``GET`` of ``target`` from namerd at ``host``:``port``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [("Host", authority), ("Accept", "application/json"), ("User-Agent", _USER_AGENT)]
    if close:
        headers.append(("Connection", "close"))
    return h11.Request(method="GET", target=target, headers=headers)
