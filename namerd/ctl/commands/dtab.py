"""``namerctl dtab list|get|create|update|delete``: namerd's dtabs, as Linkerd's namerctl has them.

Where we differ from namerctl, on purpose:

* ``dtab update --version`` wins over a ``version`` field in a JSON file (namerctl#21: a file
  saved by ``dtab get --json`` carries its old version, so the second update failed with 412
  and the flag could not rescue it). Without the flag, the file's version is used, as before.
* Writes succeed only on namerd's 204 (or 201); a 200, or a 404 to a create, cannot come from
  namerd's API (e.g. the admin port answered) and is an error, not a false "Created"
  (namerctl#28).
"""

from __future__ import annotations

import argparse

import httpx

from namerd.ctl.client import JSON, Client, ns_path
from namerd.ctl.commands import out
from namerd.ctl.errors import CtlError
from namerd.ctl.inputs import read_dtab_input
from namerd.ctl.render import pretty_dtab
from shared.wire import encode

__all__ = [
    "cmd_dtab_create",
    "cmd_dtab_delete",
    "cmd_dtab_get",
    "cmd_dtab_list",
    "cmd_dtab_update",
]


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
    resp = client.request("GET", ns_path("dtabs", name), headers={"Accept": JSON})
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


def _write_ok(client: Client, resp: httpx.Response, name: str | None, extra: str = "") -> None:
    if resp.status_code in (201, 204):
        return
    if resp.status_code == 200:
        raise CtlError(
            f"unexpected response: {resp.status_code} {resp.reason_phrase} (namerd answers 204) "
            "— is --base-url namerd's HTTP API, not its admin port?"
        )
    client.fail(resp, name, extra)


def cmd_dtab_create(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
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
    version, origin = None, ""
    if args.version is not None:  # namerctl#21: the flag wins over the file's version
        version, origin = args.version, "--version"
    elif data.version is not None:
        version, origin = data.version, f"the version field of {data.source}"
    headers = {"Content-Type": data.content_type}
    if version:
        headers["If-Match"] = version
    resp = client.request("PUT", ns_path("dtabs", args.name), headers=headers, content=data.content)
    extra = f" (sent version {version} from {origin})" if version else ""
    _write_ok(client, resp, args.name, extra)
    out(f"Updated {args.name}")
    return 0


def cmd_dtab_delete(client: Client, args: argparse.Namespace) -> int:
    resp = client.request("DELETE", ns_path("dtabs", args.name))
    _write_ok(client, resp, args.name)
    out(f"Deleted {args.name}")
    return 0
