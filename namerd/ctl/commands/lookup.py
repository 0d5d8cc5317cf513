"""``namerctl delegate|bind|resolve NS PATH [--dtab DTAB] [--json]``: namerd's lookups explained.

``delegate`` and ``bind`` draw namerd's delegate tree and bound tree (``namerd.ctl.render``);
``resolve`` prints one address per line and exits 1 when the path does not resolve. ``--json``
prints namerd's own JSON instead. PATH and ``--dtab`` are checked with namerd's parser first,
for a message with line and column. A namespace that does not exist is an error that names the
ones that do (namerd itself looks up through an empty dtab and answers ``neg``, which hides a
typo in the namespace).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from namerd.ctl.client import JSON, Client, lookup_params, ns_path
from namerd.ctl.commands import out
from namerd.ctl.errors import CtlError, UsageError, first_line
from namerd.ctl.render import Glyphs, glyphs, render_bound, render_delegate, show_address
from shared import (
    Addr,
    AddrBound,
    AddrFailed,
    AddrNeg,
    Dtab,
    DtabParseError,
    Path,
    WireFormatError,
)
from shared.wire import addr_from_json, bound_tree_from_json, delegate_tree_from_json

__all__ = ["cmd_bind", "cmd_delegate", "cmd_resolve"]

T = TypeVar("T")

#: Delegation trees of looping dtabs are ~100 levels deep; decoding them recurses.
_RECURSION_LIMIT = 10000


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _lookup(client: Client, kind: str, args: argparse.Namespace) -> httpx.Response:
    # Checked here with namerd's own parser, for a message with line and column.
    try:
        Path.read(args.path)
    except DtabParseError as err:
        raise UsageError(f"invalid PATH {args.path!r}: {first_line(err.render())}") from None
    if args.dtab:
        try:
            Dtab.read(args.dtab)
        except DtabParseError as err:
            raise UsageError(f"invalid --dtab: {first_line(err.render())}") from None
    # namerd treats a missing namespace as an empty dtab; a typo would look like a routing bug.
    if client.request("HEAD", ns_path("dtabs", args.namespace)).status_code == 404:
        raise client.missing_namespace(args.namespace)
    resp = client.request(
        "GET",
        ns_path(kind, args.namespace),
        params=lookup_params(args.path, args.dtab),
        headers={"Accept": JSON},
    )
    if resp.status_code != 200:
        client.fail(resp)
    return resp


def _print_raw_json(resp: httpx.Response) -> None:
    out(resp.text.rstrip("\n"))


def _draw(
    client: Client,
    args: argparse.Namespace,
    kind: str,
    decode: Callable[[Any], tuple[T, Mapping[Path, Addr]]],
    draw: Callable[[T, Mapping[Path, Addr], Glyphs], list[str]],
    what: str,
) -> int:
    """Look up, then print namerd's JSON (``--json``) or draw the decoded tree."""
    resp = _lookup(client, kind, args)
    with _deep_recursion():
        value = client.json(resp)
        if args.json:
            _print_raw_json(resp)
            return 0
        try:
            tree, addrs = decode(value)
        except WireFormatError as err:
            raise CtlError(f"unexpected response from namerd: not a {what}: {err}") from None
        for line in draw(tree, addrs, glyphs()):
            out(line)
    return 0


def cmd_delegate(client: Client, args: argparse.Namespace) -> int:
    return _draw(
        client, args, "delegate", delegate_tree_from_json, render_delegate, "delegate tree"
    )


def cmd_bind(client: Client, args: argparse.Namespace) -> int:
    return _draw(client, args, "bind", bound_tree_from_json, render_bound, "bound tree")


def cmd_resolve(client: Client, args: argparse.Namespace) -> int:
    resp = _lookup(client, "resolve", args)
    value = client.json(resp)
    if args.json:
        _print_raw_json(resp)
        return 0
    try:
        addr = addr_from_json(value)
    except WireFormatError as err:
        raise CtlError(f"unexpected response from namerd: not an addr: {err}") from None
    where = f"{args.path} in namespace {args.namespace}"
    if isinstance(addr, AddrBound):
        addrs = addr.sorted_addrs()
        if not addrs:
            print(f"namerctl: {where} exists but has no endpoints", file=sys.stderr)
        for a in addrs:
            out(show_address(a, full_meta=True))
        return 0
    if isinstance(addr, AddrFailed):
        raise CtlError(f"resolving {where} failed: {first_line(addr.cause)}")
    if isinstance(addr, AddrNeg):
        raise CtlError(
            f"{where} does not resolve to any address (neg); "
            f"see why with: namerctl delegate {args.namespace} {args.path}"
        )
    raise CtlError(f"{where} is still pending")
