"""namerd's work budgets (``limits.*DtabBudget``) through the real app and a real redis-server.

A request's ``dtab=`` gets the request budget, the stored dtab alone the stored one; over
budget is a 400 JSON error naming the limit, never a stall and never a 502. A delegate
explanation of a wide union grows linearly with the union.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared import REQUEST_DTAB_BUDGET

from .conftest import Serve

pytestmark = pytest.mark.redis

DTAB_TEXT = {"Content-Type": "application/dtab"}


def exponential(levels: int) -> str:
    text = ";".join(f"/n{i}=>/n{i + 1}&/n{i + 1}" for i in range(levels))
    return text + f";/n{levels}=>/$/inet/127.0.0.1/1"


def assert_over_budget(r: httpx.Response, limit: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == 400
    assert body["limit"] == limit
    assert f"(limit {limit})" in body["error"]


def test_an_exponential_request_dtab_is_a_400_naming_the_request_limit(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("") as api:
            r = await api.put("/api/1/dtabs/default", content="/x=>/y", headers=DTAB_TEXT)
            assert r.status_code == 204
            dtab = exponential(30)  # 2**30 leaves from under 600 bytes
            assert len(dtab) < 600
            limit = f"{REQUEST_DTAB_BUDGET.name}.maxNodes"
            params = {"path": "/n0", "dtab": dtab}
            assert_over_budget(await api.get("/api/1/bind/default", params=params), limit)
            assert_over_budget(await api.get("/api/1/delegate/default", params=params), limit)
            assert_over_budget(await api.get("/api/1/delegate", params=params), limit)
            r = await api.post("/api/1/delegate", json={"path": "/n0", "dtab": dtab})
            assert_over_budget(r, limit)
            # resolve reports lookup failures as a failed address, as before.
            r = await api.get("/api/1/resolve/default", params=params)
            assert r.status_code == 200
            assert r.json()["type"] == "failed"
            assert limit in r.json()["cause"]
            # The same dtab without the explosion binds.
            r = await api.get("/api/1/bind/default", params={"path": "/n29", "dtab": dtab})
            assert r.status_code == 200, r.text

    asyncio.run(scenario())


def test_a_stored_dtab_gets_the_configured_stored_budget(serve: Serve) -> None:
    config = "limits:\n  storedDtabBudget:\n    maxNodes: 3000\n"

    async def scenario() -> None:
        async with serve(config) as api:
            r = await api.put("/api/1/dtabs/default", content=exponential(20), headers=DTAB_TEXT)
            assert r.status_code == 204
            r = await api.get("/api/1/bind/default", params={"path": "/n0"})
            assert_over_budget(r, "storedDtabBudget.maxNodes")
            r = await api.get("/api/1/delegate/default", params={"path": "/n0"})
            assert_over_budget(r, "storedDtabBudget.maxNodes")
            # A loop is still the 502 it was: only the budget is the client's 400.
            r = await api.get("/api/1/bind/default", params={"path": "/n0", "dtab": "/n0=>/n0/x"})
            assert r.status_code == 502, r.text

    asyncio.run(scenario())


def test_a_bad_budget_in_the_config_names_the_key(serve: Serve) -> None:
    async def scenario() -> None:
        async with serve("limits:\n  requestDtabBudget: {maxNodes: 0}\n"):
            pass

    with pytest.raises(Exception, match=r"limits\.requestDtabBudget\.maxNodes"):
        asyncio.run(scenario())


def test_a_delegate_explanation_grows_linearly_with_the_union(serve: Serve) -> None:
    async def size(api: httpx.AsyncClient, ns: str, branches: int) -> int:
        dtab = "/svc=>" + " & ".join(f"/x/branch{i}" for i in range(branches))
        r = await api.put(f"/api/1/dtabs/{ns}", content=dtab, headers=DTAB_TEXT)
        assert r.status_code == 204, r.text
        r = await api.get(f"/api/1/delegate/{ns}", params={"path": "/svc"})
        assert r.status_code == 200, r.text
        assert len(r.json()["union"]) == branches
        return len(r.content)

    async def scenario() -> None:
        async with serve("") as api:
            small, double = await size(api, "two", 2000), await size(api, "four", 4000)
            # Each branch used to repeat the whole 2,000-branch dentry: 42 MB, 4x per doubling.
            assert small < 200_000
            assert 1.8 < double / small < 2.3

    asyncio.run(scenario())
