"""The linker admin's ``/delegator.json`` explainer, on real directories and real sockets.

It explains exactly as namerd's delegate API does (the last test runs both on one directory).

Explaining through a real namerd (dst alternatives included) is in
``tests/integration/test_linker_namerd_client.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path as FsPath
from typing import Any

import pytest

from linker.config.model import LinkerConfig, RouterConfig, ServerConfig
from linker.naming.explain import make_delegate
from namerd.naming.interpreter import Interpreter
from namerd.naming.namers import FsNamer, InetResolver, Notifier
from shared import Dtab, Path
from shared.wire import delegate_tree_to_json, encode


def linker(dtab: str, namers: list[dict[str, Any]], interpreter: Any = None) -> LinkerConfig:
    routers = (
        RouterConfig("out", (ServerConfig(port=0),), dtab=Dtab.read(dtab), interpreter=interpreter),
        RouterConfig("other", (ServerConfig(port=0),), dtab=Dtab.read("/svc=>/$/inet/10.0.0.9/1")),
    )
    return LinkerConfig(routers, namers=tuple(namers), workers=1)


@pytest.fixture
def disco(tmp_path: FsPath) -> FsPath:
    d = tmp_path / "disco"
    d.mkdir()
    (d / "users").write_text("127.0.0.1 8081\n127.0.0.1 8082 * 0.5\n")
    (d / "web").write_text("10.0.0.1 80\nweb.internal 80\n")
    (d / ".users.swp").write_text("10.9.9.9 1\n")
    (d / "broken").write_text("10.0.0.1 eighty\n")
    return d


def explain(config: LinkerConfig, path: str, dtab: str = "", router: str | None = None) -> Any:
    status, body = make_delegate(config)(path, dtab, router)
    assert status == 200, body
    return json.loads(body)


def test_local_router_is_explained_with_the_fs_namers_rules(disco: FsPath) -> None:
    config = linker("/svc=>/#/io.l5d.fs", [{"kind": "io.l5d.fs", "rootDir": str(disco)}])
    users = explain(config, "/svc/users")
    assert users == {
        "type": "delegate",
        "path": "/svc/users",
        "delegate": {
            "type": "leaf",
            "path": "/#/io.l5d.fs/users",
            "dentry": {"prefix": "/svc", "dst": "/#/io.l5d.fs"},
            "bound": {
                "addr": {
                    "type": "bound",
                    "addrs": [
                        {"ip": "127.0.0.1", "port": 8081, "meta": {}},
                        {"ip": "127.0.0.1", "port": 8082, "meta": {"endpoint_addr_weight": 0.5}},
                    ],
                    "meta": {},
                },
                "id": "/#/io.l5d.fs/users",
                "path": "/",
            },
        },
    }
    # A host name needs DNS, which the master does not do: the addresses are left out.
    web = explain(config, "/svc/web")["delegate"]["bound"]
    assert web == {"id": "/#/io.l5d.fs/web", "path": "/"}
    # A file that does not parse: the service binds, and its addr says why.
    broken = explain(config, "/svc/broken")["delegate"]["bound"]["addr"]
    assert broken["type"] == "failed"
    assert "broken:1: port 'eighty'" in broken["cause"]
    # Hidden files are not services (as in the namers).
    assert explain(config, "/svc/.users.swp")["delegate"]["type"] == "neg"


def test_custom_prefix_request_dtab_and_inet_addresses(disco: FsPath) -> None:
    config = linker(
        "/svc=>/#/disco", [{"kind": "io.l5d.fs", "rootDir": str(disco), "prefix": "/disco"}]
    )
    tree = explain(config, "/svc/users", "/svc/users=>/$/inet/127.0.0.1/9 | /$/inet/example/9")
    assert tree["type"] == "alt"
    # The request's dentry first (later rules win), spliced into one alternative.
    paths = [t["path"] for t in tree["alt"]]
    assert paths == ["/$/inet/127.0.0.1/9", "/$/inet/example/9", "/#/disco/users"]
    ip, name, fs = (t["bound"] for t in tree["alt"])
    assert ip["addr"]["addrs"] == [{"ip": "127.0.0.1", "port": 9, "meta": {}}]
    assert "addr" not in name  # a host name
    assert fs["addr"]["type"] == "bound"
    assert explain(config, "/svc/a", router="other")["delegate"]["bound"]["addr"]["addrs"] == [
        {"ip": "10.0.0.9", "port": 1, "meta": {}}
    ]


def test_a_missing_root_dir_is_that_namers_failure(tmp_path: FsPath) -> None:
    config = linker(
        "/svc=>/#/io.l5d.fs | /$/inet/127.0.0.1/1",
        [{"kind": "io.l5d.fs", "rootDir": str(tmp_path / "gone")}],
    )
    tree = explain(config, "/svc/users")
    failed = tree["alt"][0]
    assert failed["type"] == "exception"
    assert "gone" in failed["message"]
    assert "cannot be listed" in failed["message"]
    assert tree["alt"][1]["bound"]["id"] == "/$/inet/127.0.0.1/1"


def test_refusals(disco: FsPath) -> None:
    delegate = make_delegate(linker("/svc=>/svc/x", []))
    status, body = delegate("/svc/users", "", None)
    assert (status, body.split(":")[0]) == (502, "Delegating /svc/users failed")
    assert "Max recursion" in body
    assert delegate("svc", "", None)[0] == 400
    assert delegate("/svc", "/a=>", None)[0] == 400
    assert delegate("/svc", "", "nope")[0] == 404


def closed_port() -> int:
    """A loopback port nobody listens on (connecting is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_namerd_router_tries_every_dst_form_and_says_which_failed() -> None:
    a, b, c = closed_port(), closed_port(), closed_port()
    dst = [f"/$/inet/127.0.0.1/{a} | /$/inet/localhost/{b}", f"/$/inet/127.0.0.1/{c}"]
    config = linker("/svc=>/#/io.l5d.fs", [], {"kind": "io.l5d.namerd.http", "dst": dst})
    status, body = make_delegate(config)("/svc/users", "", None)
    assert status == 502
    assert body.startswith("cannot reach namerd to explain /svc/users: ")
    for authority in (f"127.0.0.1:{a}", f"localhost:{b}", f"127.0.0.1:{c}"):
        assert authority in body
    bad = linker("/svc=>/a", [], {"kind": "io.l5d.namerd.http", "dst": "/#/io.l5d.fs/namerd"})
    status, body = make_delegate(bad)("/svc/users", "", None)
    assert status == 500
    assert "must be /$/inet/<host>/<port>" in body


def test_same_explanation_as_namerds_delegate_api(disco: FsPath) -> None:
    """One explainer: namerd's delegate API renders its tree the same way (namerd/http/lookups.py:
    ``encode(delegate_tree_to_json(tree, interp.addr_of))``)."""
    dtab = "/svc=>/#/io.l5d.fs;/svc/both=>0.5*/svc/users & 0.5*/$/inet/127.0.0.1/7;/svc/x=>/svc/x"
    cases = ["/svc/users", "/svc/both", "/svc/broken", "/svc/none", "/#/io.l5d.fs/users/rest"]
    mine = linker(dtab, [{"kind": "io.l5d.fs", "rootDir": str(disco)}])

    async def namerds() -> list[str]:
        notifier = Notifier()
        namer = FsNamer(Path.read("/#/io.l5d.fs"), notifier, root_dir=disco)
        inet = InetResolver(notifier)
        await namer.start()
        try:
            interp = Interpreter([namer], inet)
            out = []
            for case in cases:
                tree = interp.delegate(Dtab.read(dtab), Path.read(case))
                out.append(encode(delegate_tree_to_json(tree, interp.addr_of)))
            return out
        finally:
            await namer.close()
            await inet.close()

    theirs = asyncio.run(namerds())
    for case, expected in zip(cases, theirs, strict=True):
        assert make_delegate(mine)(case, "", None) == (200, expected)
