"""``/api/1/registry`` in-process: register, list, heartbeat, deregister, and bad requests."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Serve

pytestmark = pytest.mark.redis

REGISTRY = "namers:\n- kind: io.l5d.registry\n"
JSON = {"Content-Type": "application/json"}


def test_register_list_and_deregister(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve(REGISTRY) as api:
            r = await api.get("/api/1/registry")
            assert (r.status_code, r.text) == (200, "[]\n")

            r = await api.post(
                "/api/1/registry/users",
                json={"host": "10.0.0.1", "port": 8080, "ttlSeconds": 60, "meta": {"az": "a"}},
            )
            assert r.status_code == 204, r.text
            r = await api.post("/api/1/registry/users", json={"host": "10.0.0.2", "port": 8080})
            assert r.status_code == 204, r.text
            await api.post("/api/1/registry/admins", json={"host": "10.0.0.9", "port": 9090})

            # A write is visible to the next read of the same worker (read-your-writes).
            r = await api.get("/api/1/registry")
            assert r.json() == ["admins", "users"]
            r = await api.get("/api/1/registry/users")
            addr = r.json()
            assert addr["type"] == "bound"
            assert [(a["ip"], a["port"]) for a in addr["addrs"]] == [
                ("10.0.0.1", 8080),
                ("10.0.0.2", 8080),
            ]
            assert addr["addrs"][0]["meta"]["az"] == "a"

            r = await api.put("/api/1/registry/users/10.0.0.1/8080", params={"ttlSeconds": "5"})
            assert r.status_code == 204
            r = await api.delete("/api/1/registry/users/10.0.0.2/8080")
            assert r.status_code == 204
            r = await api.get("/api/1/registry/users")
            assert [a["ip"] for a in r.json()["addrs"]] == ["10.0.0.1"]

            # The registry's services are bound names for every dtab.
            r = await api.get("/api/1/bound-names")
            assert r.json() == ["/#/io.l5d.registry/admins", "/#/io.l5d.registry/users"]

    asyncio.run(scenario())


def test_bad_registrations_are_400(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve(REGISTRY) as api:
            cases = [
                ([1, 2], "Expected a JSON object"),
                ({"host": "", "port": 8080}, "host must be a non-empty string"),
                ({"host": "h", "port": 0}, "port must be an integer 1-65535"),
                ({"host": "h", "port": True}, "port must be an integer 1-65535"),
                ({"host": "h", "port": 1, "ttlSeconds": 86401}, "ttlSeconds must be a number"),
                ({"host": "h", "port": 1, "meta": []}, "meta must be a JSON object"),
            ]
            for body, message in cases:
                r = await api.post("/api/1/registry/users", json=body)
                assert r.status_code == 400, body
                assert r.json()["error"].startswith(message), (body, r.text)
            r = await api.post("/api/1/registry/users", content=b"{", headers=JSON)
            assert r.status_code == 400
            assert r.json()["error"].startswith("The body is not valid JSON")
            r = await api.delete("/api/1/registry/users/h/http")
            assert r.status_code == 400
            assert r.json() == {
                "error": "port must be an integer 1-65535, got 'http'.",
                "status": 400,
            }
            r = await api.get("/api/1/registry")
            assert r.json() == []  # nothing was registered

    asyncio.run(scenario())


def test_no_registry_namer_is_404(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            r = await api.get("/api/1/registry")
            assert r.status_code == 404
            assert r.json()["error"] == "No io.l5d.registry namer is configured in this namerd."

    asyncio.run(scenario())
