"""namerd's writes against browsers (Host, Origin, Sec-Fetch-Site) and the registry's
address policy, on the real app with a real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from namerd.naming.namers.base import NamerConfigError

from .conftest import Serve

pytestmark = pytest.mark.redis

DTAB = {"Content-Type": "application/dtab"}
JSON = {"Content-Type": "application/json"}
REGISTRY = "namers:\n- kind: io.l5d.registry\n"


def test_writes_answer_only_to_allowed_hosts_and_reads_to_any(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            for host in ("localhost:4180", "127.0.0.1:4180", "[::1]:4180", "10.9.8.7:4180"):
                r = await api.put(
                    "/api/1/dtabs/a", content="/a=>/b", headers={**DTAB, "Host": host}
                )
                assert r.status_code == 204, (host, r.text)
            r = await api.put(
                "/api/1/dtabs/a", content="/a=>/c", headers={**DTAB, "Host": "namerd:4180"}
            )
            assert r.status_code == 421
            assert "interfaces[].allowedHosts" in r.text
            r = await api.delete("/api/1/dtabs/a", headers={"Host": "evil.example"})
            assert r.status_code == 421
            # Reads are served whatever the Host: linkers and Linkerd read namerd by the names
            # their network gives it. POST /api/1/delegate is a read too.
            r = await api.get("/api/1/dtabs/a", headers={"Host": "evil.example"})
            assert (r.status_code, r.json()) == (200, [{"prefix": "/a", "dst": "/b"}])
            r = await api.post(
                "/api/1/delegate",
                json={"namespace": "a", "path": "/a", "dtab": ""},
                headers={"Host": "evil.example", "Sec-Fetch-Site": "cross-site"},
            )
            assert r.status_code == 200, r.text

    asyncio.run(scenario())


def test_allowed_hosts_config(serve: Serve) -> None:
    config = "interfaces:\n- kind: io.l5d.httpController\n  allowedHosts: [namerd]\n"

    async def scenario() -> None:
        async with serve(config) as api:
            r = await api.put(
                "/api/1/dtabs/a", content="/a=>/b", headers={**DTAB, "Host": "namerd:4180"}
            )
            assert r.status_code == 204, r.text
            r = await api.put("/api/1/dtabs/a", content="/a=>/b", headers={**DTAB, "Host": "x"})
            assert r.status_code == 421
        async with serve(config.replace("[namerd]", "['*']")) as api:
            r = await api.put("/api/1/dtabs/a", content="/a=>/b", headers={**DTAB, "Host": "x"})
            assert r.status_code == 204, r.text

    asyncio.run(scenario())


def test_a_web_page_cannot_write(serve: Serve) -> None:
    """The probe's page: a cross-origin text/plain POST, and the same from an old browser."""

    async def scenario() -> None:
        async with serve("") as api:
            page = {"Origin": "https://evil.example", "Content-Type": "text/plain"}
            r = await api.post(
                "/api/1/dtabs/pwned", content="/svc=>/$/inet/6.6.6.6/80", headers=page
            )
            assert r.status_code == 403
            assert "another origin" in r.text
            fetch = {"Sec-Fetch-Site": "cross-site", **DTAB}
            r = await api.post("/api/1/dtabs/pwned", content="/svc=>/x", headers=fetch)
            assert r.status_code == 403
            old_browser = {"Content-Type": "text/plain"}  # no Origin, no Sec-Fetch-*
            r = await api.post("/api/1/dtabs/pwned", content="/svc=>/x", headers=old_browser)
            assert r.status_code == 415
            assert (await api.get("/api/1/dtabs")).json() == []
            # A page namerd itself serves may write (same origin).
            same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin", **DTAB}
            r = await api.post("/api/1/dtabs/ok", content="/svc=>/x", headers=same)
            assert r.status_code == 204, r.text

    asyncio.run(scenario())


def test_registry_address_policy_defaults(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve(REGISTRY) as api:
            refused = {
                "169.254.169.254": "link-local",
                "fe80::1": "link-local",
                "127.0.0.1": "loopback",
                "::1": "loopback",
                "::ffff:127.0.0.1": "loopback",
                "0.0.0.0": "unspecified",
                "0.1.2.3": "unspecified",
                "::": "unspecified",
                "224.0.0.1": "multicast",
            }
            for host, reason in refused.items():
                r = await api.post("/api/1/registry/web", json={"host": host, "port": 80})
                assert r.status_code == 403, host
                body = r.json()
                assert body["reason"] == reason, host
                key = "namers[io.l5d.registry at /#/io.l5d.registry].allowNetworks"
                assert body["configKey"] == key
                assert "allowNetworks" in body["error"]
            for host in ("10.0.0.1", "192.168.1.2", "172.17.0.3", "8.8.8.8", "2001:db8::1"):
                r = await api.post("/api/1/registry/web", json={"host": host, "port": 80})
                assert r.status_code == 204, (host, r.text)

    asyncio.run(scenario())


def test_registry_address_policy_configured(serve: Serve) -> None:
    config = (
        REGISTRY + "  allowNetworks: [127.0.0.0/8, 10.0.0.0/8]\n  denyNetworks: [10.9.0.0/16]\n"
    )

    async def scenario() -> None:
        async with serve(config) as api:
            for host in ("127.0.0.1", "10.0.0.1", "::ffff:10.0.0.2"):
                r = await api.post("/api/1/registry/web", json={"host": host, "port": 6379})
                assert r.status_code == 204, (host, r.text)
            for host, reason, key in (
                ("192.168.0.1", "not-allowed", "allowNetworks"),
                ("::1", "not-allowed", "allowNetworks"),
                ("10.9.1.1", "denied", "denyNetworks"),
            ):
                r = await api.post("/api/1/registry/web", json={"host": host, "port": 80})
                assert r.status_code == 403, host
                assert r.json()["reason"] == reason
                assert r.json()["configKey"].endswith(key)
            r = await api.get("/api/1/registry/web")
            assert sorted(a["ip"] for a in r.json()["addrs"]) == [
                "10.0.0.1",
                "127.0.0.1",
                "::ffff:a00:2",
            ]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "options",
    ["allowNetworks: 10.0.0.0/8", "allowNetworks: [10.0.0.1/8]", "denyNetworks: [nope]"],
)
def test_registry_address_policy_config_errors(serve: Serve, options: str) -> None:
    async def scenario() -> None:
        with pytest.raises(NamerConfigError, match=r"Networks(: .* is not a network| must be)"):
            async with serve(f"{REGISTRY}  {options}\n"):
                pass

    asyncio.run(scenario())
