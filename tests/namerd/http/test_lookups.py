"""bind, addr, resolve, delegate and bound-names in-process, on a stored dtab and io.l5d.fs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from namerd.runtime import parse_stored
from namerd.storage.store import VersionedDtab

from .conftest import Serve

pytestmark = pytest.mark.redis

DTAB_TEXT = {"Content-Type": "application/dtab"}

USERS = [
    {"ip": "127.0.0.1", "port": 8080, "meta": {}},
    {"ip": "127.0.0.2", "port": 8080, "meta": {"endpoint_addr_weight": 0.5}},
]


@pytest.fixture
def fs_config(tmp_path: Path) -> str:
    """A config with io.l5d.fs on a directory of two services."""
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "users").write_text("127.0.0.1 8080\n127.0.0.2 8080 * 0.5\n")
    (disco / "admins").write_text("127.0.0.9 9090\n")
    return f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"


async def store_dtab(api: httpx.AsyncClient, ns: str, dtab: str) -> None:
    r = await api.put(f"/api/1/dtabs/{ns}", content=dtab, headers=DTAB_TEXT)
    assert r.status_code == 204, r.text


def test_bind_resolve_and_addr_on_a_stored_dtab(serve: Serve, fs_config: str) -> None:
    async def scenario() -> None:
        async with serve(fs_config) as api:
            await store_dtab(api, "default", "/svc => /#/io.l5d.fs")

            r = await api.get("/api/1/bind/default", params={"path": "/svc/users/v1"})
            assert r.status_code == 200
            assert r.json() == {
                "type": "leaf",
                "bound": {
                    "addr": {"type": "bound", "addrs": USERS, "meta": {}},
                    "id": "/#/io.l5d.fs/users",
                    "path": "/v1",
                },
            }

            # The request's dtab has priority over the stored one, as l5d-dtab does.
            r = await api.get(
                "/api/1/bind/default",
                params={"path": "/svc/users", "dtab": "/svc/users => /#/io.l5d.fs/admins"},
            )
            assert r.json()["bound"]["id"] == "/#/io.l5d.fs/admins"

            r = await api.get("/api/1/bind/default", params={"path": "/svc/nobody"})
            assert r.json() == {"type": "neg"}

            r = await api.get("/api/1/resolve/default", params={"path": "/svc/users"})
            assert r.json() == {"type": "bound", "addrs": USERS, "meta": {}}

            r = await api.get("/api/1/addr/default", params={"path": "/#/io.l5d.fs/admins"})
            assert r.json()["addrs"] == [{"ip": "127.0.0.9", "port": 9090, "meta": {}}]

            # namerd does not check the method of lookups.
            r = await api.post("/api/1/bind/default", params={"path": "/svc/users"})
            assert r.json()["bound"]["id"] == "/#/io.l5d.fs/users"

            r = await api.get("/api/1/bound-names")
            assert r.json() == ["/#/io.l5d.fs/admins", "/#/io.l5d.fs/users"]

    asyncio.run(scenario())


def test_lookup_parameters_that_do_not_parse_are_400(serve: Serve, fs_config: str) -> None:
    async def scenario() -> None:
        async with serve(fs_config) as api:
            r = await api.get("/api/1/bind/default")
            assert (r.status_code, r.text) == (400, "Missing required query parameter: path\n")

            r = await api.get("/api/1/bind/default", params={"path": "/svc/users", "dtab": "/a=>"})
            assert r.status_code == 400
            lines = r.text.rstrip("\n").split("\n")
            assert lines[0] == "Invalid dtab: simple expected but end of input found at '/a=>[]'"
            assert lines[1].endswith("(line 1, column 5, offset 4)")
            assert lines[3].index("^") == lines[2].index("/a=>") + 4

            r = await api.get("/api/1/resolve/default", params={"path": "svc"})
            assert r.status_code == 400
            assert r.text.startswith("Invalid path: svc / '/' expected but 's' found")

    asyncio.run(scenario())


def test_delegate_explains_a_stored_dtab(serve: Serve, fs_config: str) -> None:
    async def scenario() -> None:
        async with serve(fs_config) as api:
            await store_dtab(api, "default", "/svc => /#/io.l5d.fs")

            r = await api.get("/api/1/delegate/default", params={"path": "/svc/admins"})
            assert r.status_code == 200
            assert not r.text.endswith("\n")  # as namerd
            tree = r.json()
            assert (tree["type"], tree["path"]) == ("delegate", "/svc/admins")
            leaf = tree["delegate"]
            assert leaf["type"] == "leaf"
            assert leaf["dentry"] == {"prefix": "/svc", "dst": "/#/io.l5d.fs"}
            assert leaf["bound"]["id"] == "/#/io.l5d.fs/admins"
            assert leaf["bound"]["addr"]["addrs"] == [{"ip": "127.0.0.9", "port": 9090, "meta": {}}]

            # Without a namespace, only the dtab sent is used; POST takes it as JSON.
            body = {"path": "/svc/admins", "dtab": "/svc => /#/io.l5d.fs"}
            r = await api.post("/api/1/delegate", json=body)
            assert r.status_code == 200
            assert r.json() == tree
            r = await api.post("/api/1/delegate", content=json.dumps(body))
            assert r.status_code == 415
            r = await api.post("/api/1/delegate", json={"path": "/svc"})
            assert r.status_code == 400
            assert r.text.startswith("Malformed delegation request")

    asyncio.run(scenario())


def test_parsed_dtabs_are_memoised_by_version_and_text() -> None:
    # One process may hold stores of several Redis servers, each with its own version 1.
    first = parse_stored("memo", VersionedDtab("/a=>/b", 1))
    second = parse_stored("memo", VersionedDtab("/a=>/c", 1))
    assert first is not None
    assert second is not None
    assert (first.dtab.show(), second.dtab.show()) == ("/a=>/b", "/a=>/c")
    assert parse_stored("memo", VersionedDtab("/a=>/c", 1)) is second
