"""``namerctl dtab ...``: namerd's dtabs, as Linkerd's namerctl has them, made safe to change.

``list``, ``get``, ``create``, ``update`` and ``delete`` are namerctl's; ``history``,
``rollback`` and ``diff`` are ours, on our API extensions (``GET /api/1/dtabs/{ns}/history``,
``POST /api/1/dtabs/{ns}/diff``).

Where we differ from namerctl, on purpose:

* ``dtab update --version`` wins over a ``version`` field in a JSON file (namerctl#21: a file
  saved by ``dtab get --json`` carries its old version, so the second update failed with 412
  and the flag could not rescue it). Without the flag, the file's version is used, as before.
* Writes succeed only on namerd's 204 (or 201); a 200, or a 404 to a create, cannot come from
  namerd's API (e.g. the admin port answered) and is an error, not a false "Created"
  (namerctl#28).
* Guards (issue 12; the API itself keeps namerd's semantics, PUT still upserts):
  an empty dtab (no dentries: every name in the namespace would stop routing) is refused
  unless ``--allow-empty``; ``update`` of a namespace that does not exist is refused unless
  ``--create`` (a typo in the name must not create a namespace nobody routes with); and
  ``update`` without a version sends the version it has just read as If-Match, so the change
  it prints (``- old``/``+ new`` dentries) is exactly the change it made, and a concurrent
  write makes it fail (412) instead of being overwritten unseen.
"""

from __future__ import annotations

import argparse
import base64
import binascii
from collections.abc import Sequence
from typing import Any

import httpx

from namerd.ctl.client import DTAB, JSON, Client, ns_path
from namerd.ctl.commands import out
from namerd.ctl.errors import CtlError, UsageError, first_line
from namerd.ctl.inputs import read_dtab_input
from namerd.ctl.render import dtab_diff, glyphs, name_diff, pretty_dtab
from shared import Dtab, DtabParseError, Path, WireFormatError
from shared.wire import bound_tree_from_json, dtab_to_json, encode

__all__ = [
    "cmd_dtab_create",
    "cmd_dtab_delete",
    "cmd_dtab_diff",
    "cmd_dtab_get",
    "cmd_dtab_history",
    "cmd_dtab_list",
    "cmd_dtab_rollback",
    "cmd_dtab_update",
]

Dentries = list[dict[str, Any]]


def cmd_dtab_list(client: Client, args: argparse.Namespace) -> int:
    resp = client.request("GET", "/api/1/dtabs", headers={"Accept": JSON})
    if resp.status_code != 200:
        client.fail(resp)
    names = client.json(resp)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CtlError("unexpected response from namerd: /api/1/dtabs is not a list of names")
    if args.json:
        out(encode(names))
    else:
        for name in names:
            out(name)
    return 0


def _get_dtab(client: Client, name: str) -> tuple[str, list[dict[str, str]]]:
    got = _current(client, name)
    if got is None:
        raise CtlError(f"resource was not found by ID or name: {name}")
    return got


def _current(client: Client, name: str) -> tuple[str, list[dict[str, str]]] | None:
    """The dtab's version and dentries, or None if the namespace does not exist."""
    resp = client.request("GET", ns_path("dtabs", name), headers={"Accept": JSON})
    if resp.status_code == 404:  # (not namerd's API at all: missing_namespace() says so)
        return None
    if resp.status_code != 200:
        client.fail(resp, name)
    dentries = client.json(resp)
    if not isinstance(dentries, list) or not all(
        isinstance(d, dict) and isinstance(d.get("prefix"), str) and isinstance(d.get("dst"), str)
        for d in dentries
    ):
        raise CtlError(f"unexpected response from namerd: dtab {name} is not a list of dentries")
    return resp.headers.get("ETag", ""), dentries


def cmd_dtab_get(client: Client, args: argparse.Namespace) -> int:
    version, dentries = _get_dtab(client, args.name)
    if args.json:
        out(encode({"version": version, "dtab": dentries}))
    elif args.pretty:
        if version:
            out(f"# version {version}")
        for line in pretty_dtab(dentries):
            out(line)
    else:
        out("".join(f"{d['prefix']}=>{d['dst']};" for d in dentries))
    return 0


def _refuse_empty(dentries: Sequence[Any], what: str, allow_empty: bool) -> None:
    if not dentries and not allow_empty:
        raise CtlError(
            f"{what} has no dentries: an empty dtab routes nothing, so every request for this "
            "namespace would fail; nothing was sent. Pass --allow-empty if that is what you want"
        )


def _write_ok(client: Client, resp: httpx.Response, name: str | None, extra: str = "") -> None:
    if resp.status_code in (201, 204):
        return
    if resp.status_code == 200:
        raise CtlError(
            f"unexpected response: {resp.status_code} {resp.reason_phrase} (namerd answers 204) "
            "— is --base-url namerd's HTTP API, not its admin port?"
        )
    client.fail(resp, name, extra)


def _show_change(old: Sequence[Any], new: Sequence[Any]) -> None:
    lines = dtab_diff(old, new)
    for line in lines or ["(no dentry changed)"]:
        out(line)


def cmd_dtab_create(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
    _refuse_empty(data.dentries, data.source, args.allow_empty)
    resp = client.request(
        "POST",
        ns_path("dtabs", args.name),
        headers={"Content-Type": data.content_type},
        content=data.content,
    )
    # namerd never answers 404 to a create: that is another server (or its admin port).
    _write_ok(client, resp, None)
    out(f"Created {args.name}")
    return 0


def cmd_dtab_update(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
    _refuse_empty(data.dentries, data.source, args.allow_empty)
    current = _current(client, args.name)
    headers = {"Content-Type": data.content_type}
    if current is None:
        if not args.create:
            raise client.missing_namespace(
                args.name,
                f"; nothing was sent. Create it with: namerctl dtab create {args.name} FILE "
                "(or pass --create)",
            )
        resp = client.request("POST", ns_path("dtabs", args.name), headers=headers,
                              content=data.content)  # fmt: skip
        _write_ok(client, resp, None)
        _show_change([], data.dentries)
        out(f"Created {args.name}")
        return 0
    version, origin = current[0], "the dtab as read just before the write"
    if args.version is not None:  # namerctl#21: the flag wins over the file's version
        version, origin = args.version, "--version"
    elif data.version is not None:
        version, origin = data.version, f"the version field of {data.source}"
    if version:
        headers["If-Match"] = version
    resp = client.request("PUT", ns_path("dtabs", args.name), headers=headers, content=data.content)
    extra = f" (sent version {version} from {origin})" if version else ""
    _write_ok(client, resp, args.name, extra)
    _show_change(current[1], data.dentries)
    out(f"Updated {args.name}")
    return 0


def cmd_dtab_delete(client: Client, args: argparse.Namespace) -> int:
    resp = client.request("DELETE", ns_path("dtabs", args.name))
    _write_ok(client, resp, args.name)
    out(f"Deleted {args.name}")
    return 0


# -- history and rollback -------------------------------------------------------------------------


def etag_of(version: int) -> str:
    """namerd's ETag of a version: base64 of the 8-byte big-endian integer."""
    return base64.b64encode(version.to_bytes(8, "big", signed=True)).decode("ascii")


def parse_version(text: str) -> int:
    """A version as the user gives it: a number (``3``) or an ETag (``AAAAAAAAAAM=``)."""
    if text.isdigit():
        return int(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 8:
        raise UsageError(f"invalid VERSION {text!r}: give a number (3) or an ETag (AAAAAAAAAAM=)")
    return int.from_bytes(raw, "big", signed=True)


def _history(client: Client, name: str, limit: int | None = None) -> tuple[str, list[Any]]:
    params = {"limit": str(limit)} if limit else None
    resp = client.request(
        "GET", ns_path("dtabs", name) + "/history", params=params, headers={"Accept": JSON}
    )
    if resp.status_code == 404 and resp.text:  # namerd's own 404 has a message
        raise client.missing_namespace(name, " and it has no history")
    if resp.status_code != 200:
        client.fail(resp)
    entries = client.json(resp)
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("version"), int) for e in entries
    ):
        raise CtlError(f"unexpected response from namerd: the history of {name} is not a list")
    return resp.text, entries


def _dentries_of(text: str | None) -> Dentries:
    """A stored dtab text as namerd's JSON dentries."""
    try:
        return dtab_to_json(Dtab.read(text or ""))
    except DtabParseError as err:
        raise CtlError(f"a dtab in the history does not parse: {first_line(str(err))}") from None


def cmd_dtab_history(client: Client, args: argparse.Namespace) -> int:
    raw, entries = _history(client, args.name, args.limit)
    if args.json:
        out(raw.rstrip("\n"))
        return 0
    if not entries:
        out(f"# no writes to {args.name} recorded (it was written before history was kept)")
        return 0
    rows = [("VERSION", "WHEN (UTC)", "OP", "WHO", "CLIENT", "DENTRIES")]
    for e in entries:
        text = e.get("dtab")
        count = "-" if text is None else str(len(_dentries_of(text)))
        rows.append(
            (str(e["version"]), str(e.get("at", "")), str(e.get("op", "")),
             str(e.get("who") or "-"), str(e.get("client") or "-"), count)
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        out("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if args.diff and n > 0:
            entry = entries[n - 1]
            older = next((o for o in entries[n:] if o.get("dtab") is not None), None)
            if entry.get("dtab") is not None:
                before = _dentries_of(older.get("dtab")) if older is not None else []
                for line in dtab_diff(before, _dentries_of(entry["dtab"])):
                    out("    " + line)
    return 0


def cmd_dtab_rollback(client: Client, args: argparse.Namespace) -> int:
    target = parse_version(args.target)
    _, entries = _history(client, args.name)
    entry = next((e for e in entries if e["version"] == target and e.get("dtab") is not None), None)
    if entry is None:
        kept = sorted({e["version"] for e in entries if e.get("dtab") is not None})
        span = f"versions {kept[0]} to {kept[-1]}" if kept else "no versions"
        raise CtlError(
            f"version {target} of {args.name} is not in its history (it keeps {span}); "
            f"see: namerctl dtab history {args.name}"
        )
    text = str(entry["dtab"])
    wanted = _dentries_of(text)
    _refuse_empty(wanted, f"version {target}", args.allow_empty)
    body = text.encode("utf-8")
    current = _current(client, args.name)
    if current is None:
        if not args.create:
            raise client.missing_namespace(
                args.name, f"; nothing was sent. Pass --create to re-create it at version {target}"
            )
        resp = client.request("POST", ns_path("dtabs", args.name),
                              headers={"Content-Type": DTAB}, content=body)  # fmt: skip
        _write_ok(client, resp, None)
        _show_change([], wanted)
        out(f"Created {args.name} with the dtab of version {target}")
        return 0
    if_match = args.version or current[0]
    if args.version is None and current[1] == wanted:
        out(f"{args.name} already has the dtab of version {target}; nothing was written")
        return 0
    resp = client.request(
        "PUT",
        ns_path("dtabs", args.name),
        headers={"Content-Type": DTAB, "If-Match": if_match},
        content=body,
    )
    if resp.status_code == 412:
        raise CtlError(
            f"conflict: {args.name} is no longer at version {if_match} (someone changed it "
            f"since it was read); nothing was written. See namerctl dtab history {args.name}, "
            "then run the rollback again"
        )
    _write_ok(client, resp, args.name)
    _show_change(current[1], wanted)
    out(f"Rolled back {args.name} to the dtab of version {target}")
    return 0


# -- dry run --------------------------------------------------------------------------------------


def cmd_dtab_diff(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
    for raw in args.paths:
        try:
            Path.read(raw)
        except DtabParseError as err:
            raise UsageError(f"invalid --path {raw!r}: {first_line(err.render())}") from None
    resp = client.request(
        "POST",
        ns_path("dtabs", args.name) + "/diff",
        params=httpx.QueryParams([("path", p) for p in args.paths]),
        headers={"Content-Type": data.content_type, "Accept": JSON},
        content=data.content,
    )
    if resp.status_code != 200:
        client.fail(resp)
    value = client.json(resp)
    if args.json:
        out(resp.text.rstrip("\n"))
        return 0
    try:
        before, names = value["before"], value["names"]
        if before is None:
            out(f"# {args.name} does not exist yet: compared with an empty dtab")
        out("dtab:")
        _show_change(before or [], data.dentries)
        if not names:
            out(
                f"names: none in use in {args.name} on the namerd worker that answered; "
                "pass --path /svc/NAME to compare names"
            )
            return 0
        changed = sum(1 for n in names if n["changed"])
        out(f"names: {len(names)} compared, {changed} changed")
        g = glyphs()
        for entry in names:
            for line in name_diff(entry, bound_tree_from_json, g):
                out(line)
    except (KeyError, TypeError, WireFormatError) as err:
        raise CtlError(f"unexpected response from namerd: not a dry run: {err}") from None
    return 0
