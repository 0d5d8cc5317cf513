"""``/api/1/dtabs`` in-process: CRUD, ETags and If-Match, content negotiation, errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from namerd.http.dtabs import etag, negotiate, parse_if_match
from namerd.storage.embedded_redis import EmbeddedRedis

from .conftest import Serve

pytestmark = pytest.mark.redis

DTAB_TEXT = {"Content-Type": "application/dtab"}
V1, V2 = "AAAAAAAAAAE=", "AAAAAAAAAAI="


def test_etag_is_namerds_base64_of_the_version() -> None:
    assert etag(1) == V1
    assert parse_if_match(V1) == 1
    assert parse_if_match(f'"{V2}"') == 2  # quotes are ignored, as twitter-util does
    assert parse_if_match("yolo") is None  # not 8 bytes: never matches
    assert negotiate("application/dtab;q=0.5, application/json") == "application/dtab"
    assert negotiate("image/png") == "application/json"
    assert negotiate(None) == "application/json"


def test_create_get_update_delete(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            r = await api.post("/api/1/dtabs/web", content="/svc=>/#/io.l5d.fs", headers=DTAB_TEXT)
            assert (r.status_code, r.text) == (204, "")

            r = await api.get("/api/1/dtabs/web")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["etag"] == V1
            assert r.text == '[{"prefix":"/svc","dst":"/#/io.l5d.fs"}]\n'

            r = await api.get("/api/1/dtabs/web", headers={"Accept": "application/dtab"})
            assert r.headers["content-type"].startswith("application/dtab")
            assert r.text == "/svc=>/#/io.l5d.fs\n"

            r = await api.head("/api/1/dtabs/web")
            assert (r.status_code, r.headers["etag"], r.content) == (200, V1, b"")

            # A JSON body works as well as dtab text; the store keeps the canonical text.
            body = json.dumps([{"prefix": "/svc", "dst": "/#/io.l5d.fs | /$/nil"}])
            r = await api.put(
                "/api/1/dtabs/web",
                content=body,
                headers={"Content-Type": "application/json", "If-Match": V1},
            )
            assert r.status_code == 204
            r = await api.get("/api/1/dtabs/web", headers={"Accept": "text/plain"})
            assert (r.headers["etag"], r.text) == (V2, "/svc=>/#/io.l5d.fs | /$/nil\n")

            r = await api.get("/api/1/dtabs")
            assert (r.status_code, r.text) == (200, '["web"]\n')

            r = await api.delete("/api/1/dtabs/web")
            assert r.status_code == 204
            r = await api.get("/api/1/dtabs")
            assert r.text == "[]\n"

    asyncio.run(scenario())


def test_if_match_compare_and_set(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            await api.post("/api/1/dtabs/cas", content="/a=>/b", headers=DTAB_TEXT)
            await api.put("/api/1/dtabs/cas", content="/a=>/c", headers=DTAB_TEXT)  # now v2

            # A stale version, and one that is not a version at all, both fail with 412.
            r = await api.put(
                "/api/1/dtabs/cas", content="/a=>/d", headers={**DTAB_TEXT, "If-Match": V1}
            )
            assert r.status_code == 412
            assert "namespace 'cas' is at version 2, not 1" in r.text
            r = await api.put(
                "/api/1/dtabs/cas", content="/a=>/d", headers={**DTAB_TEXT, "If-Match": "yolo"}
            )
            assert r.status_code == 412
            r = await api.get("/api/1/dtabs/cas", headers={"Accept": "application/dtab"})
            assert r.text == "/a=>/c\n"  # neither write happened

            r = await api.put(
                "/api/1/dtabs/cas", content="/a=>/d", headers={**DTAB_TEXT, "If-Match": V2}
            )
            assert r.status_code == 204

            # If-Match on a namespace that does not exist is 404, not 412.
            r = await api.put(
                "/api/1/dtabs/nope", content="/a=>/d", headers={**DTAB_TEXT, "If-Match": V1}
            )
            assert r.status_code == 404

    asyncio.run(scenario())


def test_missing_namespace_existing_namespace_and_unknown_routes(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            for method in ("GET", "HEAD"):
                r = await api.request(method, "/api/1/dtabs/absent")
                assert (r.status_code, r.text) == (404, ""), method
            r = await api.delete("/api/1/dtabs/absent")
            assert (r.status_code, r.text) == (404, "namespace 'absent' does not exist\n")

            await api.post("/api/1/dtabs/once", content="/a=>/b", headers=DTAB_TEXT)
            r = await api.post("/api/1/dtabs/once", content="/a=>/b", headers=DTAB_TEXT)
            assert r.status_code == 409
            assert "already exists" in r.text

            # namerd answers unknown routes and unknown methods with an empty 404.
            for method, url in (("GET", "/api/1/nothing"), ("PATCH", "/api/1/dtabs/once")):
                r = await api.request(method, url)
                assert (r.status_code, r.text) == (404, ""), url

            r = await api.get("/api/1/dtabs/bad:name")
            assert r.status_code == 400
            assert "invalid namespace 'bad:name'" in r.text

    asyncio.run(scenario())


def test_a_dtab_that_does_not_parse_is_400_with_where(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            r = await api.post("/api/1/dtabs/bad", content="/a => /b; /c =>", headers=DTAB_TEXT)
            assert r.status_code == 400
            message, where, text, caret = r.text.rstrip("\n").split("\n")
            assert message == "simple expected but end of input found at '/a => /b; /c =>[]'"
            assert where.endswith("(line 1, column 16, offset 15)")
            assert text.strip() == "/a => /b; /c =>"
            assert caret.index("^") == text.index("/a") + 15

            r = await api.post(
                "/api/1/dtabs/bad", content="[null]", headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 400
            assert r.text.startswith("The dtab contains invalid dentries")

            r = await api.post(
                "/api/1/dtabs/bad", content="/a=>/b", headers={"Content-Type": "image/png"}
            )
            assert r.status_code == 415
            assert r.text.startswith('Invalid Content-Type "image/png"')

            r = await api.get("/api/1/dtabs/bad")
            assert r.status_code == 404  # nothing was stored

    asyncio.run(scenario())


def test_writes_need_the_token_and_bodies_have_a_limit(serve: Serve) -> None:
    config = "auth:\n  token: s3cret\nlimits:\n  maxBodyBytes: 64\n"

    async def scenario() -> None:
        async with serve(config) as api:
            r = await api.post("/api/1/dtabs/guarded", content="/a=>/b", headers=DTAB_TEXT)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer realm="namerd"'
            wrong = {**DTAB_TEXT, "Authorization": "Bearer guess"}
            r = await api.post("/api/1/dtabs/guarded", content="/a=>/b", headers=wrong)
            assert r.status_code == 401

            auth = {**DTAB_TEXT, "Authorization": "Bearer s3cret"}
            r = await api.post("/api/1/dtabs/guarded", content="/a=>/b", headers=auth)
            assert r.status_code == 204
            r = await api.get("/api/1/dtabs/guarded")  # reads need no token
            assert r.status_code == 200

            big = "/a=>/b;" * 10  # 70 bytes
            r = await api.put("/api/1/dtabs/guarded", content=big, headers=auth)
            assert r.status_code == 413
            assert "the limit is 64" in r.text

    asyncio.run(scenario())


def test_redis_down_reads_serve_last_known_and_writes_are_503(
    serve: Serve, embedded_redis: EmbeddedRedis
) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            await api.post("/api/1/dtabs/kept", content="/a=>/b", headers=DTAB_TEXT)
            embedded_redis.stop()

            r = await api.get("/api/1/dtabs/kept", headers={"Accept": "application/dtab"})
            assert (r.status_code, r.text, r.headers["etag"]) == (200, "/a=>/b\n", V1)

            r = await api.put("/api/1/dtabs/kept", content="/a=>/c", headers=DTAB_TEXT)
            assert r.status_code == 503
            assert r.text.startswith("Storage is unavailable: Redis (unix://")
            assert r.text.rstrip().endswith("Reads serve the last-known state; retry writes later.")

            r = await api.get("/api/1/dtabs/never-read")
            assert r.status_code == 503

    asyncio.run(scenario())
