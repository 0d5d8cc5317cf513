"""Errors that name the cause: the router's 502s for unreachable and dead endpoints say which
addresses were tried and why each failed, the first request to a closed port included, and no
error a client sees carries a Python repr.

Real sockets on 127.0.0.1 (a port nothing listens on, small HTTP servers), the real default
interpreter and upstream pool, as in ``test_router``.
"""

from __future__ import annotations

import re
from pathlib import Path as FsPath

import pytest

from linker.http.messages import Response

from .test_router import (
    LOCAL,
    NO_RETRIES,
    SERVICE,
    Upstream,
    fs_namer,
    l5d_err,
    refused_port,
    routing,
    upstream,
)

# Dead for the whole test once marked: no probe muddles the listing.
ONE_STRIKE = {
    "loadBalancer": {"kind": "roundRobin"},
    "failureAccrual": {"failures": 1, "backoff": {"kind": "constant", "ms": 600_000}},
}

# What a Python repr leaks into a message: a tuple of strings, an object's default repr.
REPRS = re.compile(r"\(\s*'[^']*',|object at 0x|<[A-Za-z_.]+[ >]")


async def test_the_first_request_to_a_closed_port_names_the_address_and_the_refusal() -> None:
    port = refused_port()
    # The default policies: retries allowed, 5 failures mark an endpoint dead.
    async with routing(f"/svc/web => /$/inet/{LOCAL}/{port};") as rt:
        resp, body = await rt.get()
    err = l5d_err(resp)
    assert resp.status == 502
    assert err.startswith(f"connection refused by {LOCAL}:{port} (tried 1 of 1 endpoints"), err
    assert SERVICE in err
    assert "marked dead" not in err
    assert body.decode().strip() == err


async def test_all_dead_lists_each_endpoint_with_its_last_error(tmp_path: FsPath) -> None:
    async with upstream(500) as failing:
        gone = Upstream(refused_port())
        namers = [fs_namer(tmp_path, "web", gone, failing)]
        async with routing(
            "/svc => /#/io.l5d.fs;", client=ONE_STRIKE, service=NO_RETRIES, namers=namers
        ) as rt:
            first = [(await rt.get())[0].status for _ in range(2)]
            resp, _ = await rt.get()
    assert sorted(first) == [500, 502]
    assert resp.status == 502
    err = l5d_err(resp)
    assert err.startswith(
        "all 2 endpoints of /#/io.l5d.fs/web (for /svc/web) are marked dead by failure accrual: "
    ), err
    assert f"{LOCAL}:{gone.port} (connection refused, 0 s ago)" in err
    assert f"{LOCAL}:{failing.port} (500 Internal Server Error from a classifier, 0 s ago)" in err


async def test_a_retried_request_names_every_endpoint_it_tried(tmp_path: FsPath) -> None:
    gone = [Upstream(refused_port()) for _ in range(2)]
    namers = [fs_namer(tmp_path, "web", *gone)]
    async with routing("/svc => /#/io.l5d.fs;", client=ONE_STRIKE, namers=namers) as rt:
        resp, _ = await rt.get()
    err = l5d_err(resp)
    assert resp.status == 502
    assert "tried 2 of 2 endpoints of /#/io.l5d.fs/web" in err, err
    for up in gone:
        assert f"{LOCAL}:{up.port}" in err
    assert "marked dead" not in err.split(";")[0]


async def test_an_endpoint_marked_dead_is_logged_once_not_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="linker.policy.accrual")
    port = refused_port()
    async with routing(f"/svc/web => /$/inet/{LOCAL}/{port};") as rt:
        for _ in range(5):
            assert (await rt.get())[0].status == 502
    lines = [r.getMessage() for r in caplog.records if r.name == "linker.policy.accrual"]
    assert lines == [
        f"endpoint {LOCAL}:{port}: alive -> dead for 5.0 s by failure accrual "
        "(last error: connection refused)"
    ]


async def test_no_error_response_carries_a_python_repr(tmp_path: FsPath) -> None:
    seen: list[tuple[str, Response]] = []
    port = refused_port()
    async with routing(f"/svc/web => /$/inet/{LOCAL}/{port};") as rt:
        seen.append(("closed port", (await rt.get())[0]))
        seen.append(("dead", (await rt.get())[0]))
        seen.append(("no name", (await rt.get(host=None))[0]))
        seen.append(("neg", (await rt.get(host="other"))[0]))
        seen.append(("bad dtab", (await rt.get(headers=[(b"l5d-dtab", b"/a => (")]))[0]))
    async with upstream(500) as failing:
        namers = [fs_namer(tmp_path, "web", failing)]
        async with routing(
            "/svc => /#/io.l5d.fs;", client=ONE_STRIKE, service=NO_RETRIES, namers=namers
        ) as rt:
            await rt.get()
            seen.append(("dead by a classifier", (await rt.get())[0]))
    for what, resp in seen:
        err = l5d_err(resp)
        assert resp.status >= 400, what
        assert not REPRS.search(err), f"{what}: {err}"
