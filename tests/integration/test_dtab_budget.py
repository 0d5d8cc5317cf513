"""Work budgets against a real namerd (gunicorn workers, embedded Redis, the wire).

A bind watch whose ``dtab=`` blows the request budget gets the error as a value in the
stream (as every lookup error on a stream), and the worker goes on answering other requests.
"""

from __future__ import annotations

import json

import httpx
import pytest

from shared import REQUEST_DTAB_BUDGET

from .namerd_proc import Namerd
from .test_namerd_watch import TEXT, ns, watch

pytestmark = pytest.mark.redis


def exponential(levels: int) -> str:
    text = ";".join(f"/n{i}=>/n{i + 1}&/n{i + 1}" for i in range(levels))
    return text + f";/n{levels}=>/$/inet/127.0.0.1/1"


def test_an_over_budget_bind_watch_gets_an_exception_value(namerd: Namerd) -> None:
    name = ns()
    httpx.post(f"{namerd.api}/api/1/dtabs/{name}", content="/svc=>/#/io.l5d.fs", headers=TEXT)
    limit = f"{REQUEST_DTAB_BUDGET.name}.maxNodes"
    url = f"{namerd.api}/api/1/bind/{name}"
    with watch(url, path="/n0", dtab=exponential(40)) as lines:
        value = json.loads(lines.next())
        assert value["type"] == "exception"
        assert value["path"] == "/n0"
        assert f"(limit {limit})" in value["message"]
        # The same namerd answers the next request (on the wire, as a 400 JSON error).
        r = httpx.get(url, params={"path": "/n0", "dtab": exponential(40)})
        assert r.status_code == 400
        assert r.json()["limit"] == limit
        r = httpx.get(url, params={"path": "/svc/users"})
        assert r.status_code == 200
        assert r.json()["type"] == "leaf"
