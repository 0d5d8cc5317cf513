"""The router in-process: ``Router.handle`` with a real default interpreter (local dtab, inet and
fs namers) and a real upstream pool, against small HTTP servers on 127.0.0.1 started here.

No subprocess: union weights, alternates, the upstream head, retries and their budget, error
statuses, and a router with two servers sharing one set of client policy state.
"""

from __future__ import annotations

import random
import socket
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import unquote

import trio

from linker.config.model import RouterConfig, ServerConfig
from linker.http import hop
from linker.http.messages import EMPTY_BODY, Request, Response, bytes_body, read_body
from linker.http.upstream import PoolLimits, UpstreamPool
from linker.metrics import Metrics
from linker.naming.interpreter import build_interpreter
from linker.routing.identifiers import build_identifier
from linker.routing.policies import RouterPolicies
from linker.routing.router import Router
from shared import Dtab

from ..http.endpoints import LOCAL, endpoint

LABEL = "rt"
SERVICE = "/svc/web"


# -- upstreams ----------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A small HTTP server on 127.0.0.1: answers ``status(n)`` to its n-th request (from 0),
    with its port as the body, and keeps every request head it received."""

    port: int
    seen: list[Request] = field(default_factory=list)

    @property
    def inet(self) -> str:
        return f"/$/inet/{LOCAL}/{self.port}"


@asynccontextmanager
async def upstream(status: int | Callable[[int], int] = 200) -> AsyncIterator[Upstream]:
    up = Upstream(0)

    async def handler(req: Request) -> Response:
        n = len(up.seen)
        up.seen.append(req)
        code = status(n) if callable(status) else status
        headers = [
            (b"x-port", str(up.port).encode()),
            (b"connection", b"x-hop-resp"),
            (b"x-hop-resp", b"dropped"),
            (b"keep-alive", b"timeout=5"),
        ]
        return Response(code, headers, bytes_body(str(up.port).encode()))

    async with endpoint(handler) as up.port:
        yield up


# -- the router ---------------------------------------------------------------------------------


@dataclass
class Routed:
    """Routers (one per server) sharing one router's interpreter, pool and policies."""

    routers: list[Router]
    metrics: Metrics
    policies: RouterPolicies

    async def get(
        self,
        host: str | None = "web",
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        server: int = 0,
        http_version: str = "1.1",
    ) -> tuple[Response, bytes]:
        """Send a GET through the router of ``servers[server]``; its response and body."""
        fields = [(b"host", host.encode())] if host is not None else []
        req = Request(
            method="GET",
            target="/x?y=1",
            authority=host,
            http_version=http_version,
            headers=[*fields, *headers],
            body=EMPTY_BODY,
            client=(LOCAL, 40000),
            received_at=trio.current_time(),
        )
        resp = await self.routers[server].handle(req)
        return resp, await read_body(resp.body)

    def gauge(self, name: str) -> float:
        return self.metrics.gauges[f"rt/{LABEL}/{name}"].read()

    def counter(self, name: str) -> int:
        return self.metrics.counters[f"rt/{LABEL}/{name}"].value


@asynccontextmanager
async def routing(
    dtab: str,
    *,
    client: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    namers: Sequence[dict[str, Any]] = (),
    servers: Sequence[ServerConfig] = (ServerConfig(),),
    seed: int = 5,
) -> AsyncIterator[Routed]:
    config = RouterConfig(
        label=LABEL,
        servers=tuple(servers),
        dtab=Dtab.read(dtab),
        client=client or {},
        service=service or {},
    )
    interpreter = build_interpreter(
        None, config.dtab, namers, bind_timeout_s=config.binding_timeout_ms / 1000
    )
    metrics = Metrics()
    pool = UpstreamPool(PoolLimits(connect_timeout_s=5.0))
    policies = RouterPolicies(config, metrics.router(LABEL), rng=random.Random(seed))
    identifier = build_identifier(None, config.dst_prefix)
    routers = [Router(config, s, identifier, interpreter, pool, policies) for s in servers]
    async with trio.open_nursery() as nursery:
        await nursery.start(interpreter.run)
        try:
            yield Routed(routers, metrics, policies)
        finally:
            nursery.cancel_scope.cancel()
            await pool.aclose()


def fs_namer(root: FsPath, name: str, *ups: Upstream) -> dict[str, Any]:
    """An io.l5d.fs namer whose ``name`` lists the ports of ``ups`` (one bound name, several
    endpoints: what retries on another endpoint need)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text("".join(f"{LOCAL} {u.port}\n" for u in ups))
    return {"kind": "io.l5d.fs", "rootDir": str(root)}


def l5d_err(resp: Response) -> str:
    value = hop.get(resp.headers, b"l5d-err")
    assert value is not None, resp.headers
    return unquote(value.decode())


# -- name trees ---------------------------------------------------------------------------------


async def test_a_weighted_union_splits_traffic_by_weight() -> None:
    async with upstream() as a, upstream() as b:
        async with routing(f"/svc/web => 3 * {a.inet} & 1 * {b.inet};") as rt:
            served: Tally[bytes] = Tally()
            for _ in range(400):
                resp, body = await rt.get()
                assert resp.status == 200
                served[body] += 1
    share_a = served[str(a.port).encode()] / 400
    # 3:1 is 0.75; the binomial standard deviation over 400 draws is about 0.022.
    assert abs(share_a - 0.75) < 0.08, served
    assert len(a.seen) + len(b.seen) == 400


async def test_a_zero_weight_endpoint_gets_no_traffic_while_another_has_some(
    tmp_path: FsPath,
) -> None:
    async with upstream() as a, upstream() as b:
        (tmp_path / "web").write_text(f"{LOCAL} {a.port} * 0\n{LOCAL} {b.port} * 1\n")
        namers = ({"kind": "io.l5d.fs", "rootDir": str(tmp_path)},)
        async with routing("/svc => /#/io.l5d.fs;", namers=namers) as rt:
            for _ in range(40):
                resp, _ = await rt.get()
                assert resp.status == 200
            # Every weight zero: all share equally rather than none being served.
            (tmp_path / "web").write_text(f"{LOCAL} {a.port} * 0\n")
            for _ in range(200):
                resp, body = await rt.get()
                if body == str(a.port).encode():
                    break
                await trio.sleep(0.05)  # the fs namer notices the rewrite on its next scan
            assert resp.status == 200
    assert len(a.seen) == 1
    assert len(b.seen) >= 40


async def test_a_union_skips_a_branch_with_no_endpoints() -> None:
    async with upstream() as b:
        async with routing(f"/svc/web => 9 * /nowhere & 1 * {b.inet};") as rt:
            for _ in range(20):
                resp, _ = await rt.get()
                assert resp.status == 200
    assert len(b.seen) == 20


async def test_alt_falls_back_when_the_first_branch_is_neg() -> None:
    async with upstream() as b:
        async with routing(f"/svc/web => /nowhere | {b.inet};") as rt:
            resp, body = await rt.get()
    assert (resp.status, body) == (200, str(b.port).encode())
    assert hop.get(b.seen[0].headers, b"l5d-dst-client") == b.inet.encode()


async def test_alt_uses_the_first_branch_that_binds() -> None:
    async with upstream() as a, upstream() as b:
        async with routing(f"/svc/web => {a.inet} | {b.inet};") as rt:
            for _ in range(10):
                assert (await rt.get())[0].status == 200
    assert (len(a.seen), len(b.seen)) == (10, 0)


# -- the upstream request and the response ------------------------------------------------------


async def test_the_upstream_head_is_rebuilt_as_linkerd_does() -> None:
    sent = [
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"proxy-connection", b"keep-alive"),
        (b"upgrade", b"websocket"),
        (b"via", b"1.1 edge"),
        (b"l5d-dtab", b"/foo => /bar"),
        (b"l5d-ctx-dtab", b"/baz => /qux"),
        (b"l5d-reqid", b"feedfacecafebeef"),
        (b"x-app", b"kept"),
    ]
    async with upstream() as up:
        # /svc => ... leaves the residual /web, which goes up as l5d-dst-residual.
        async with routing(f"/svc => {up.inet};") as rt:
            resp, _ = await rt.get(headers=sent)
            second, _ = await rt.get()
    assert resp.status == 200
    got = up.seen[0].headers
    names = [n for n, _ in got]
    for gone in (b"connection", b"x-hop", b"keep-alive", b"te", b"proxy-connection", b"upgrade"):
        assert gone not in names, gone
    assert hop.get(got, b"via") == b"1.1 edge, 1.1 linkerd"
    assert hop.get(got, b"host") == b"web"
    assert hop.get(got, b"x-app") == b"kept"
    assert hop.get(got, b"l5d-dst-service") == SERVICE.encode()
    assert hop.get(got, b"l5d-dst-client") == up.inet.encode()
    assert hop.get(got, b"l5d-dst-residual") == b"/web"
    assert hop.get(got, b"l5d-reqid") == b"feedfacecafebeef"  # an incoming trace id is kept
    # The two dtab headers become one l5d-ctx-dtab for the next hop: context, then user.
    assert hop.get_all(got, b"l5d-ctx-dtab") == [b"/baz=>/qux;/foo=>/bar"]
    assert hop.get(got, b"l5d-dtab") is None
    assert hop.get(got, b"l5d-ctx-deadline") is not None  # totalTimeoutMs travels on
    assert up.seen[0].target == "/x?y=1"
    # A request without them gets a fresh l5d-reqid and no dtab context.
    plain = up.seen[1].headers
    assert len(hop.get(plain, b"l5d-reqid") or b"") == 16
    assert hop.get(plain, b"l5d-ctx-dtab") is None
    assert hop.get(plain, b"via") == b"1.1 linkerd"
    # The response loses its hop-by-hop fields and gains Via.
    out = resp.headers
    assert hop.get(out, b"x-port") == str(up.port).encode()
    for gone in (b"connection", b"x-hop-resp", b"keep-alive"):
        assert hop.get(out, gone) is None, gone
    assert hop.get(out, b"via") == b"1.1 linkerd"
    assert second.status == 200


async def test_an_l5d_dtab_header_reroutes_the_request() -> None:
    async with upstream() as a, upstream() as b:
        async with routing(f"/svc/web => {a.inet};") as rt:
            resp, body = await rt.get(headers=[(b"l5d-dtab", f"/svc/web => {b.inet}".encode())])
    assert (resp.status, body) == (200, str(b.port).encode())
    assert (len(a.seen), len(b.seen)) == (0, 1)


async def test_clear_context_drops_incoming_l5d_headers() -> None:
    async with upstream() as a, upstream() as b:
        edge = ServerConfig(clear_context=True)
        async with routing(f"/svc/web => {a.inet};", servers=[edge]) as rt:
            resp, _ = await rt.get(
                headers=[
                    (b"l5d-dtab", f"/svc/web => {b.inet}".encode()),
                    (b"l5d-reqid", b"forged"),
                ]
            )
    assert resp.status == 200
    assert (len(a.seen), len(b.seen)) == (1, 0)
    assert hop.get(a.seen[0].headers, b"l5d-reqid") != b"forged"


# -- errors -------------------------------------------------------------------------------------


async def test_no_name_is_a_400() -> None:
    async with routing("/svc => /$/inet/127.0.0.1/1;") as rt:
        resp, body = await rt.get(host=None, http_version="1.0")
    assert resp.status == 400
    assert "Unable to identify a name for GET /x?y=1" in l5d_err(resp)
    assert body.startswith(b"Unable to identify")
    assert rt.counter(f"server/{LOCAL}/4140/failures/NoNameIdentified") == 1


async def test_no_endpoints_is_a_502_that_says_why() -> None:
    async with routing("/svc/other => /$/inet/127.0.0.1/1;") as rt:
        resp, _ = await rt.get()
    assert resp.status == 502
    err = l5d_err(resp)
    assert f"No hosts are available for {SERVICE}" in err
    assert "no dtab entry (and no namer) matched it" in err
    assert "/delegator.json?path=" in err


async def test_a_bad_l5d_dtab_header_is_a_400() -> None:
    async with routing("/svc => /$/inet/127.0.0.1/1;") as rt:
        resp, _ = await rt.get(headers=[(b"l5d-dtab", b"/svc => =>")])
    assert resp.status == 400
    assert "Invalid l5d-dtab header" in l5d_err(resp)


async def test_max_call_depth_stops_a_loop() -> None:
    shallow = ServerConfig(max_call_depth=2)
    async with routing("/svc => /$/inet/127.0.0.1/1;", servers=[shallow]) as rt:
        resp, _ = await rt.get(headers=[(b"via", b"1.1 linkerd, 1.1 linkerd")])
    assert resp.status == 400
    assert "Maximum call depth 2 exceeded" in l5d_err(resp)


def refused_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))  # closed again at once: nothing listens on that port
        return int(s.getsockname()[1])


NO_RETRIES = {"retries": {"budget": {"minRetriesPerSec": 0, "percentCanRetry": 0.0}}}


async def test_a_refused_connection_is_a_502_naming_the_address() -> None:
    port = refused_port()
    async with routing(f"/svc/web => /$/inet/{LOCAL}/{port};", service=NO_RETRIES) as rt:
        resp, _ = await rt.get()
    assert resp.status == 502
    assert f"Connection to {LOCAL}:{port} failed" in l5d_err(resp)
    assert hop.get(resp.headers, b"l5d-retryable") == b"true"


# -- retries ------------------------------------------------------------------------------------

RETRY_READS = {"responseClassifier": {"kind": "io.l5d.http.retryableRead5XX"}}
ROUND_ROBIN = {"loadBalancer": {"kind": "roundRobin"}, "failureAccrual": {"kind": "none"}}


async def test_a_retryable_503_is_retried_on_another_endpoint(tmp_path: FsPath) -> None:
    async with upstream(503) as bad, upstream(200) as good:
        namers = [fs_namer(tmp_path, "web", bad, good)]
        async with routing(
            "/svc => /#/io.l5d.fs;", client=ROUND_ROBIN, service=RETRY_READS, namers=namers
        ) as rt:
            statuses = [(await rt.get())[0].status for _ in range(4)]
            retries = rt.gauge(f"service/{SERVICE.strip('/')}/retries/total")
            client_retries = rt.counter("client/#/io.l5d.fs/web/retries")
    # Every request that landed on the 503 went on to the other endpoint.
    assert statuses == [200] * 4
    assert len(good.seen) == 4
    assert retries == client_retries == len(bad.seen) >= 1


async def test_a_refused_connection_is_retried_even_by_the_default_classifier(
    tmp_path: FsPath,
) -> None:
    async with upstream(200) as good:
        gone = Upstream(refused_port())
        namers = [fs_namer(tmp_path, "web", gone, good)]
        async with routing("/svc => /#/io.l5d.fs;", client=ROUND_ROBIN, namers=namers) as rt:
            statuses = [(await rt.get())[0].status for _ in range(4)]
            retries = rt.counter("client/#/io.l5d.fs/web/retries")
    assert statuses == [200] * 4  # nothing was sent: safe to retry whatever the method
    assert len(good.seen) == 4
    assert retries >= 1


async def test_the_budget_bounds_retries_and_then_the_503_is_returned() -> None:
    # minRetriesPerSec x ttlSecs = 1 retry, and requests earn none (percentCanRetry 0).
    budget = {"budget": {"minRetriesPerSec": 0.0625, "ttlSecs": 16, "percentCanRetry": 0.0}}
    async with upstream(503) as up:
        async with routing(
            f"/svc/web => {up.inet};",
            client={"failureAccrual": {"kind": "none"}},
            service={**RETRY_READS, "retries": budget},
        ) as rt:
            first, _ = await rt.get()
            second, _ = await rt.get()
            svc = f"service/{SERVICE.strip('/')}"
            stats = (rt.gauge(f"{svc}/retries/total"), rt.gauge(f"{svc}/retries/budget_exhausted"))
    assert (first.status, second.status) == (503, 503)
    assert len(up.seen) == 3  # the first was retried once; then the budget was empty
    assert stats == (1, 2)


# -- one router, two servers: one set of policy state -------------------------------------------

TWO_SERVERS = (ServerConfig(port=4140), ServerConfig(port=4141))


async def test_failures_through_one_server_mark_the_endpoint_dead_for_the_other() -> None:
    accrual = {
        "failureAccrual": {
            "kind": "io.l5d.consecutiveFailures",
            "failures": 2,
            "backoff": {"kind": "constant", "ms": 600_000},
        }
    }
    async with upstream(500) as up:
        async with routing(f"/svc/web => {up.inet};", client=accrual, servers=TWO_SERVERS) as rt:
            for _ in range(2):
                assert (await rt.get(server=0))[0].status == 500
            resp, _ = await rt.get(server=1)
            available = rt.gauge(f"client/$/inet/{LOCAL}/{up.port}/loadbalancer/available")
    assert resp.status == 502
    assert "marked dead by failure accrual" in l5d_err(resp)
    assert len(up.seen) == 2  # server B never reached the endpoint A saw fail
    assert available == 0


async def test_two_servers_share_one_retry_budget_and_report_one_value() -> None:
    budget = {"budget": {"minRetriesPerSec": 0.0625, "ttlSecs": 16, "percentCanRetry": 0.0}}
    # Odd-numbered hits fail: every request's first attempt gets a 503, its retry a 200.
    async with upstream(lambda n: 503 if n % 2 == 0 else 200) as up:
        async with routing(
            f"/svc/web => {up.inet};",
            client={"failureAccrual": {"kind": "none"}},
            service={**RETRY_READS, "retries": budget},
            servers=TWO_SERVERS,
        ) as rt:
            via_a, _ = await rt.get(server=0)
            via_b, _ = await rt.get(server=1)
            svc = f"service/{SERVICE.strip('/')}"
            totals = (rt.gauge(f"{svc}/retries/total"), rt.gauge(f"{svc}/retries/budget_exhausted"))
            served = (rt.counter(f"{svc}/requests"), rt.counter(f"server/{LOCAL}/4141/requests"))
    # A spent the router's one retry; B's 503 could not be retried.
    assert (via_a.status, via_b.status) == (200, 503)
    assert len(up.seen) == 3
    assert totals == (1, 1)
    assert served == (2, 1)
