"""``/api/1/dtabs/{ns}/history`` and ``/api/1/dtabs/{ns}/diff`` in-process, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from namerd.config import load_config

from .conftest import Serve, started
from .test_watch_fanout import Stream

#: Upper bound of a wait for another worker's report; it only bounds a broken test.
WAIT_S = 10.0


async def eventually_async(get: Callable[[], Awaitable[object]], want: object) -> None:
    """Poll ``get()`` until it returns ``want``; fail after ``WAIT_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while (got := await get()) != want:
        assert loop.time() < deadline, f"still {got!r}, want {want!r}"
        await asyncio.sleep(0.02)


pytestmark = pytest.mark.redis

DTAB_TEXT = {"Content-Type": "application/dtab"}
V1, V2, V3 = "AAAAAAAAAAE=", "AAAAAAAAAAI=", "AAAAAAAAAAM="
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_every_api_write_is_in_the_history(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            url = "/api/1/dtabs/web"
            assert (await api.post(url, content="/a=>/b", headers=DTAB_TEXT)).status_code == 204
            headers = {**DTAB_TEXT, "If-Match": V1}
            assert (await api.put(url, content="/a => /c", headers=headers)).status_code == 204
            # A failed compare-and-set is not a write, and records nothing.
            assert (await api.put(url, content="/a=>/x", headers=headers)).status_code == 412
            body = json.dumps([{"prefix": "/a", "dst": "/d"}])
            r = await api.put(url, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 204
            assert (await api.delete(url)).status_code == 204

            r = await api.get(url + "/history")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json")
            history = r.json()
            assert [(e["version"], e["etag"], e["op"], e["dtab"]) for e in history] == [
                (3, V3, "delete", None),
                (3, V3, "put", "/a=>/d"),
                (2, V2, "update", "/a=>/c"),  # canonical text, as stored
                (1, V1, "create", "/a=>/b"),
            ]
            for e in history:
                assert list(e) == ["version", "etag", "op", "at", "who", "client", "dtab"]
                assert ISO_UTC.fullmatch(e["at"])
                assert e["who"] is None  # no token configured: nobody is known
                assert e["client"] == "127.0.0.1"  # httpx's ASGI transport's client address

            r = await api.get(url + "/history", params={"limit": "1"})
            assert [e["op"] for e in r.json()] == ["delete"]
            for bad in ("0", "-1", "x"):
                r = await api.get(url + "/history", params={"limit": bad})
                assert r.status_code == 400, bad
                assert r.text.startswith("limit must be a positive integer")

            r = await api.get("/api/1/dtabs/never/history")
            assert (r.status_code, r.text) == (
                404,
                "namespace 'never' does not exist and has no history\n",
            )
            assert (await api.get("/api/1/dtabs/a:b/history")).status_code == 400

    asyncio.run(scenario())


def test_history_size_is_configurable_and_the_token_is_the_identity(serve: Serve) -> None:
    config = "storage:\n  historySize: 2\nauth:\n  token: s3cret\n"

    async def scenario() -> None:
        async with serve(config) as api:
            auth = {**DTAB_TEXT, "Authorization": "Bearer s3cret"}
            for i in range(5):
                r = await api.put("/api/1/dtabs/small", content=f"/a=>/v{i}", headers=auth)
                assert r.status_code == 204
            # Refused writes (no token) are not in the history either.
            r = await api.put("/api/1/dtabs/small", content="/a=>/evil", headers=DTAB_TEXT)
            assert r.status_code == 401
            history = (await api.get("/api/1/dtabs/small/history")).json()
            assert [(e["version"], e["who"], e["dtab"]) for e in history] == [
                (5, "token", "/a=>/v4"),
                (4, "token", "/a=>/v3"),
            ]
            assert "s3cret" not in json.dumps(history)
            # A dry run binds a client's dtab under the stored budget: the token is required.
            r = await api.post("/api/1/dtabs/small/diff", content="/a=>/b", headers=DTAB_TEXT)
            assert r.status_code == 401
            r = await api.post("/api/1/dtabs/small/diff", content="/a=>/b", headers=auth)
            assert r.status_code == 200, r.text

    asyncio.run(scenario())


def test_diff_binds_paths_before_and_after_without_writing(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            url = "/api/1/dtabs/dry"
            before_text = "/svc/a=>/$/inet/127.0.0.1/1;/svc/b=>/$/inet/127.0.0.1/2"
            await api.post(url, content=before_text, headers=DTAB_TEXT)
            proposed = "/svc/a => 0.9*/$/inet/127.0.0.1/1 & 0.1*/$/inet/127.0.0.1/3;\n" + (
                "/svc/b=>/$/inet/127.0.0.1/2"
            )
            r = await api.post(
                url + "/diff",
                params=[("path", "/svc/b"), ("path", "/svc/a"), ("path", "/svc/loop")],
                content=proposed + ";/svc/loop=>/svc/loop",
                headers=DTAB_TEXT,
            )
            assert r.status_code == 200, r.text
            value = r.json()
            assert (value["namespace"], value["version"]) == ("dry", V1)
            assert value["before"] == [
                {"prefix": "/svc/a", "dst": "/$/inet/127.0.0.1/1"},
                {"prefix": "/svc/b", "dst": "/$/inet/127.0.0.1/2"},
            ]
            assert value["after"][0] == {
                "prefix": "/svc/a",
                "dst": "0.90*/$/inet/127.0.0.1/1 & 0.10*/$/inet/127.0.0.1/3",
            }
            names = {n["path"]: n for n in value["names"]}
            assert [n["path"] for n in value["names"]] == ["/svc/a", "/svc/b", "/svc/loop"]
            a = names["/svc/a"]
            assert (a["changed"], a["watched"]) == (True, False)
            assert a["before"]["type"] == "leaf"
            assert a["before"]["bound"]["id"] == "/$/inet/127.0.0.1/1"
            assert a["after"]["type"] == "union"
            assert [w["weight"] for w in a["after"]["union"]] == [0.9, 0.1]
            assert a["after"]["union"][1]["tree"]["bound"]["addr"]["addrs"] == [
                {"ip": "127.0.0.1", "port": 3, "meta": {}}
            ]
            assert names["/svc/b"]["changed"] is False
            assert names["/svc/b"]["before"] == names["/svc/b"]["after"]
            # Before: no rule, neg. After: a loop, shown as the bind stream shows it.
            loop = names["/svc/loop"]
            assert (loop["changed"], loop["before"]) == (True, {"type": "neg"})
            assert loop["after"]["type"] == "exception"
            assert "Max recursion level" in loop["after"]["message"]

            # Nothing was written: same version, same text, no history entry.
            r = await api.get(url, headers={"Accept": "application/dtab"})
            assert (r.headers["etag"], r.text) == (V1, before_text + "\n")
            assert len((await api.get(url + "/history")).json()) == 1

    asyncio.run(scenario())


def test_diff_errors_and_a_missing_namespace(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            r = await api.post("/api/1/dtabs/nope/diff", content="/a=>/b;/c=>", headers=DTAB_TEXT)
            assert r.status_code == 400
            lines = r.text.splitlines()
            assert lines[0].startswith("simple expected but end of input found")
            assert lines[-2:] == ["  /a=>/b;/c=>", " " * 13 + "^"]  # under the end of input

            r = await api.post(
                "/api/1/dtabs/nope/diff",
                params={"path": "svc"},
                content="/a=>/b",
                headers=DTAB_TEXT,
            )
            assert r.status_code == 400
            assert r.text.startswith("Invalid path: svc / ")
            assert r.text.rstrip("\n").endswith("^")

            # A namespace that does not exist is compared as an empty dtab, and not created.
            r = await api.post(
                "/api/1/dtabs/nope/diff",
                params={"path": "/a"},
                content="/a=>/$/inet/127.0.0.1/9",
                headers=DTAB_TEXT,
            )
            value = r.json()
            assert (value["version"], value["before"]) == (None, None)
            assert value["names"][0]["before"] == {"type": "neg"}
            assert value["names"][0]["changed"] is True
            assert (await api.get("/api/1/dtabs/nope")).status_code == 404

            # No names in use and none asked for: an empty comparison, not an error.
            r = await api.post("/api/1/dtabs/nope/diff", content="/a=>/b", headers=DTAB_TEXT)
            assert (r.status_code, r.json()["names"]) == (200, [])

    asyncio.run(scenario())


def test_diff_sees_the_names_other_workers_watch(redis_url: str, tmp_path: Path) -> None:
    """Two workers (two Runtimes on one Redis): a bind watch on one is a name in use in the
    other's dry run, once the first has reported it; it stops counting when the stream ends."""
    config_file = tmp_path / "namerd.yaml"
    config_file.write_text("limits:\n  namesInUseRefreshMs: 50\n", encoding="utf-8")
    config = load_config(str(config_file))

    async def scenario() -> None:
        async with (
            started(config, redis_url) as (a, api_a),
            started(config, redis_url) as (
                _,
                api_b,
            ),
        ):
            r = await api_a.put(
                "/api/1/dtabs/fleet", content="/svc=>/$/inet/127.0.0.1/1", headers=DTAB_TEXT
            )
            assert r.status_code == 204
            stream = Stream(a, "/api/1/bind/fleet", path="/svc/watched")
            await stream.next()

            async def watched_in_b() -> set[str]:
                r = await api_b.post(
                    "/api/1/dtabs/fleet/diff", content="/svc=>/$/nil", headers=DTAB_TEXT
                )
                assert r.status_code == 200, r.text
                return {n["path"] for n in r.json()["names"] if n["watched"]}

            await eventually_async(watched_in_b, {"/svc/watched"})
            await stream.close()
            # Entries age out after three refreshes once nobody reports them.
            await eventually_async(watched_in_b, set())

    asyncio.run(scenario())
