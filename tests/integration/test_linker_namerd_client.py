"""The linker's io.l5d.namerd.http interpreter against a real namerd process.

Binding and addresses over watch streams, dtab changes, one shared watch per name, idle
closing, namerd going away (last-known state) and coming back on the same ports (changes made
meanwhile picked up), and a fresh linker with namerd down (bounded wait, clear error).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path as FsPath
from typing import Any, TypeVar

import httpx
import pytest
import trio

from linker.config.model import LinkerConfig, RouterConfig, ServerConfig
from linker.naming.contract import BindFailure, BindTimeout, Destination
from linker.naming.explain import make_delegate
from linker.naming.interpreter import build_interpreter
from linker.naming.namerd import NamerdHttpInterpreter
from shared import AddrBound, Address, Bound, Dtab, Leaf, Path, show_tree
from tests import trio_wait

from .conftest import FS_CONFIG
from .namerd_proc import START_TIMEOUT_S, Namerd, free_port, start_namerd, write_config

pytestmark = pytest.mark.redis

TEXT = {"Content-Type": "application/dtab"}
#: Upper bound for anything we wait for to happen; only limits a broken test.
WAIT_S = 10.0
T = TypeVar("T")


def ns() -> str:
    return "l" + uuid.uuid4().hex[:10]


async def sync(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking test plumbing (httpx, process control) without stalling the watches."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def put_dtab(nd: Namerd, namespace: str, dtab: str) -> None:
    r = httpx.put(f"{nd.api}/api/1/dtabs/{namespace}", content=dtab, headers=TEXT, timeout=5)
    assert r.status_code == 204, r.text


def open_watches(nd: Namerd) -> float:
    """namerd's own count of open watch streams, summed over its workers."""
    metrics = httpx.get(f"{nd.admin}/admin/metrics.json", timeout=5).json()
    return float(metrics["gauges"].get("watches/open", 0.0))


async def eventually(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``check`` until it holds; namerd subprocesses answer in tens of ms, so poll slower."""
    return await trio_wait.eventually(check, what, timeout_s, interval_s=0.05)


async def watches_become(nd: Namerd, n: float) -> None:
    async def check() -> bool:
        return await sync(open_watches, nd) == n

    await eventually(check, f"namerd's watches/open gauge to be {n}")


@contextlib.asynccontextmanager
async def running(interp: Any) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        await nursery.start(interp.run)
        yield interp
        nursery.cancel_scope.cancel()


def interpreter(nd: Namerd, namespace: str, **kw: Any) -> NamerdHttpInterpreter:
    kw.setdefault("bind_timeout_s", 5.0)
    kw.setdefault("retry_base_s", 0.2)
    kw.setdefault("retry_max_s", 0.5)
    return NamerdHttpInterpreter([("127.0.0.1", nd.api_port)], namespace, **kw)


def ids(dest: Destination) -> list[str]:
    return sorted(p.show() for p in dest.addrs)


def endpoints(dest: Destination, id: str) -> set[tuple[str, int]]:
    addr = dest.addrs[Path.read(id)]
    assert isinstance(addr, AddrBound), addr
    return {(a.ip, a.port) for a in addr.addrs}


SVC_USERS = Path.read("/svc/users")
NO_DTAB = Dtab.empty()


# -- binding ------------------------------------------------------------------------------------


async def test_resolve_gives_tree_and_addresses(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space)) as interp:
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        assert dest.tree == Leaf(Bound(Path.read("/#/io.l5d.fs/users")))
        addr = dest.addrs[Path.read("/#/io.l5d.fs/users")]
        assert isinstance(addr, AddrBound)
        assert addr.addrs == {
            Address("127.0.0.1", 8081),
            Address("127.0.0.1", 8082, {"endpoint_addr_weight": 0.5}),
        }
        assert {a.port: a.meta for a in addr.addrs}[8082] == {"endpoint_addr_weight": 0.5}
        # Later calls are answered from memory, at once.
        with trio.fail_after(0.05):
            assert await interp.resolve(SVC_USERS, NO_DTAB) == dest
        # The addr was seeded from the bind tree; its own stream connects in the background.
        await eventually(lambda: interp.state()["watches"]["connected"] == 2, "both streams")
        state = interp.state()
        assert state["kind"] == "io.l5d.namerd.http"
        assert state["watches"] == {
            "bind": 1,
            "addr": 1,
            "connected": 2,
            "retrying": 0,
            "connecting": 0,
            "last_known": 0,
        }
        assert state["bind"][0]["path"] == "/svc/users"
        assert state["bind"][0]["last_update_at"] is not None


async def test_weighted_union_and_residual(namerd: Namerd) -> None:
    space = ns()
    await sync(
        put_dtab,
        namerd,
        space,
        "/svc => /#/io.l5d.fs; /svc/web => 3*/$/inet/127.0.0.1/7001 & 1*/svc/users/extra",
    )
    async with running(interpreter(namerd, space)) as interp:
        dest = await interp.resolve(Path.read("/svc/web"), NO_DTAB)
        assert ids(dest) == ["/#/io.l5d.fs/users", "/$/inet/127.0.0.1/7001"]
        assert endpoints(dest, "/$/inet/127.0.0.1/7001") == {("127.0.0.1", 7001)}
        bounds = {b.id.show(): b for b in _leaves(dest)}
        assert bounds["/#/io.l5d.fs/users"].residual == Path.read("/extra")
        assert bounds["/#/io.l5d.fs/users"].weight == 1.0
        assert bounds["/$/inet/127.0.0.1/7001"].weight == 3.0


def _leaves(dest: Destination) -> list[Bound]:
    from shared import leaves

    return list(leaves(dest.tree))


async def test_dtab_change_reaches_resolve(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space)) as interp:
        assert ids(await interp.resolve(SVC_USERS, NO_DTAB)) == ["/#/io.l5d.fs/users"]
        started = trio.current_time()
        await sync(put_dtab, namerd, space, "/svc/users => /$/inet/127.0.0.1/9999")

        async def moved() -> bool:
            return ids(await interp.resolve(SVC_USERS, NO_DTAB)) == ["/$/inet/127.0.0.1/9999"]

        await eventually(moved, "the new dtab to reach resolve()", timeout_s=5)
        assert trio.current_time() - started < 3.0


async def test_address_change_reaches_resolve(namerd: Namerd, disco: FsPath) -> None:
    space = ns()
    service = "svc" + uuid.uuid4().hex[:6]
    (disco / service).write_text("127.0.0.1 9001\n")
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space)) as interp:
        path = Path("svc", service)
        id = Path.read(f"/#/io.l5d.fs/{service}")

        def shows(*ports: int) -> Callable[[], Any]:
            # Only the end state is promised. Each namerd worker's fs namer polls on its own
            # 1 s clock, so the worker serving the addr stream can see the new file up to a poll
            # later than the one serving the bind stream: the addr watch, seeded bound from the
            # bind tree, then gets that worker's neg, and only after its next poll the
            # addresses again (bound -> neg -> bound; "Seeding" in watches.py). An
            # in-place rewrite can also be read half done (bound, no endpoints).
            want = {("127.0.0.1", p) for p in ports}

            async def check() -> bool:
                dest = await interp.resolve(path, NO_DTAB)
                addr = dest.addrs.get(id)
                return isinstance(addr, AddrBound) and endpoints(dest, id.show()) == want

            return check

        await eventually(shows(9001), "namerd to see the new service")
        (disco / service).write_text("127.0.0.1 9001\n127.0.0.1 9002\n")
        await eventually(shows(9001, 9002), "the new endpoint to reach resolve()")


async def test_local_dtab_is_sent_once(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    router_dtab = Dtab.read("/svc/pay => /$/inet/127.0.0.1/7100")
    interp = interpreter(namerd, space, base_dtab=router_dtab)
    async with running(interp):
        # The router's dtab applies, namerd's stored dtab is the base.
        dest = await interp.resolve(Path.read("/svc/pay"), router_dtab)
        assert ids(dest) == ["/$/inet/127.0.0.1/7100"]
        # A per-request override wins over both; the router dtab is not sent twice.
        override = Dtab.read("/svc/users => /$/inet/127.0.0.1/7777")
        dest = await interp.resolve(SVC_USERS, router_dtab + override)
        assert ids(dest) == ["/$/inet/127.0.0.1/7777"]
        sent = {w["dtab"] for w in interp.state()["bind"]}
        assert sent == {router_dtab.show(), (router_dtab + override).show()}
        # Only the override passed: the same watch (the router dtab is prepended).
        await interp.resolve(SVC_USERS, override)
        assert interp.state()["watches"]["bind"] == 2


async def test_binding_exception_is_a_failure_until_fixed(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /svc/loop")
    async with running(interpreter(namerd, space)) as interp:
        with pytest.raises(BindFailure, match="Max recursion level"):
            await interp.resolve(SVC_USERS, NO_DTAB)
        await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")

        async def fixed() -> bool:
            try:
                await interp.resolve(SVC_USERS, NO_DTAB)
            except BindFailure:
                return False
            return True

        await eventually(fixed, "the fixed dtab to be used")


async def test_namerd_refusing_the_request_fails_at_once(namerd: Namerd) -> None:
    async with running(interpreter(namerd, "bad namespace!")) as interp:
        with trio.fail_after(3), pytest.raises(BindFailure, match="namerd answered 400"):
            await interp.resolve(SVC_USERS, NO_DTAB)


async def test_neg_name(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space)) as interp:
        dest = await interp.resolve(Path.read("/svc/nosuchservice"), NO_DTAB)
        assert show_tree(dest.tree) == "~"
        assert dest.addrs == {}


async def test_admin_explains_through_namerd(namerd: Namerd) -> None:
    """/delegator.json of a namerd-bound router is namerd's explanation; every dst form."""
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    refused = free_port()  # nobody listens: the explainer must move on to the next address
    config = LinkerConfig(
        (
            RouterConfig(
                "out",
                (ServerConfig(port=0),),
                dtab=Dtab.read("/svc/users => /$/inet/127.0.0.1/1"),
                interpreter={
                    "kind": "io.l5d.namerd.http",
                    "dst": f"/$/inet/127.0.0.1/{refused} | /$/inet/127.0.0.1/{namerd.api_port}",
                    "namespace": space,
                },
            ),
        ),
        workers=1,
    )
    status, body = await sync(make_delegate(config), "/svc/users", "", None)
    assert status == 200, body
    tree = json.loads(body)
    assert tree["type"] == "alt"
    assert tree["path"] == "/svc/users"
    assert len(tree["alt"]) == 2
    assert tree["alt"][1]["bound"]["addr"]["type"] == "bound"  # namerd's inline addresses


# -- sharing and idle closing --------------------------------------------------------------------


async def test_one_watch_per_name_shared_by_concurrent_requests(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    await watches_become(namerd, 0)
    async with running(interpreter(namerd, space)) as interp:
        results: list[Destination] = []

        async def one() -> None:
            results.append(await interp.resolve(SVC_USERS, NO_DTAB))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        assert len(results) == 50
        assert all(r == results[0] for r in results)
        # One bind stream and one addr stream for all 50 requests.
        await watches_become(namerd, 2)
        # A second name bound to the same id shares its addr watch: one more bind only.
        other = Dtab.read("/svc/people => /svc/users")
        await interp.resolve(Path.read("/svc/people"), other)
        await watches_become(namerd, 3)
        assert interp.state()["watches"]["bind"] == 2
        assert interp.state()["watches"]["addr"] == 1
    # Leaving closes the connections, and namerd sees them go.
    await watches_become(namerd, 0)


async def test_idle_watches_are_closed(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    await watches_become(namerd, 0)
    async with running(interpreter(namerd, space, idle_ttl_s=0.5)) as interp:
        await interp.resolve(SVC_USERS, NO_DTAB)
        assert interp.state()["watches"]["bind"] == 1
        # Used within the TTL: kept open.
        for _ in range(4):
            await trio.sleep(0.2)
            await interp.resolve(SVC_USERS, NO_DTAB)
        assert interp.state()["watches"]["bind"] == 1
        # Unused: closed on namerd's side too.
        await eventually(lambda: interp.state()["watches"]["bind"] == 0, "the idle watch to close")
        assert interp.state()["watches"]["addr"] == 0
        assert interp.state()["closed_idle"] == 2
        await watches_become(namerd, 0)
        # Asking again just opens it again.
        assert ids(await interp.resolve(SVC_USERS, NO_DTAB)) == ["/#/io.l5d.fs/users"]


async def test_heartbeats_keep_a_quiet_stream_open(namerd: Namerd) -> None:
    # The conftest namerd heartbeats every 300 ms; a 1 s silence limit is never reached.
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space, stream_idle_timeout_s=1.0)) as interp:
        await interp.resolve(SVC_USERS, NO_DTAB)
        await trio.sleep(1.6)
        assert interp.state()["reconnects"] == 0
        assert interp.state()["watches"]["connected"] == 2


async def test_a_silent_stream_is_reopened(namerd: Namerd) -> None:
    # Heartbeats every 300 ms against a 0.1 s silence limit: the streams keep being re-opened
    # (as a half-open connection would be), and requests never notice.
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    interp = interpreter(namerd, space, stream_idle_timeout_s=0.1, first_retry_s=0.05)
    async with running(interp):
        first = await interp.resolve(SVC_USERS, NO_DTAB)
        await eventually(lambda: interp.state()["reconnects"] >= 4, "streams to be re-opened")
        with trio.fail_after(0.05):
            assert await interp.resolve(SVC_USERS, NO_DTAB) == first
        errors = {w["last_error"] for w in interp.state()["bind"]}
        assert any("not even a heartbeat" in (e or "") for e in errors)


async def test_watch_count_is_bounded(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space, max_watches=2)) as interp:
        for i in range(4):
            override = Dtab.read(f"/svc/users => /$/inet/127.0.0.1/{7000 + i}")
            await interp.resolve(SVC_USERS, override)
        watches = interp.state()["watches"]
        assert (watches["bind"], watches["addr"]) == (2, 2)
        assert interp.state()["closed_evicted"] == 4
        # The least recently used went first: the last two overrides are still watched.
        kept = sorted(w["dtab"] for w in interp.state()["bind"])
        assert kept == [f"/svc/users=>/$/inet/127.0.0.1/{p}" for p in (7002, 7003)]


# -- namerd away -------------------------------------------------------------------------------


def restart_on_same_ports(nd: Namerd, tmp: FsPath, extra_config: str) -> Namerd:
    """Start namerd again on ``nd``'s ports and data directory (its dtabs persist there)."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp / "restarted.yaml", nd.api_port, nd.admin_port, extra_config)
    log_path = tmp / "restarted.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "namerd.main", str(cfg)),
                *("--workers", "2", "--data-dir", str(nd.data_dir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
        )
    again = Namerd(proc, nd.api_port, nd.admin_port, nd.data_dir, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"namerd exited with {proc.returncode}:\n{again.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(again.api + "/api/1/dtabs", timeout=1).status_code == 200:
                return again
        if time.monotonic() > deadline:
            stop_all(again)
            raise RuntimeError(f"namerd did not come back:\n{again.log()}")
        time.sleep(0.05)


def stop_all(nd: Namerd) -> None:
    """Stop namerd and anything left in its process group (its embedded Redis)."""
    nd.stop()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(nd.proc.pid, signal.SIGKILL)


def change_dtab_offline(nd: Namerd, tmp: FsPath, extra_config: str, space: str, dtab: str) -> None:
    """Change a stored dtab while ``nd``'s ports are closed: via a namerd on other ports."""
    other = start_namerd(tmp, extra_config=extra_config, data_dir=nd.data_dir, name="offline")
    try:
        put_dtab(other, space, dtab)
    finally:
        stop_all(other)


async def test_last_known_state_while_namerd_is_down_and_changes_after(tmp_path: FsPath) -> None:
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "users").write_text("127.0.0.1 8081\n")
    config = FS_CONFIG.format(disco=disco)
    nd = await sync(start_namerd, tmp_path / "nd", extra_config=config)
    space = ns()
    try:
        await sync(put_dtab, nd, space, "/svc => /#/io.l5d.fs")
        async with running(interpreter(nd, space, bind_timeout_s=1.0)) as interp:
            before = await interp.resolve(SVC_USERS, NO_DTAB)
            assert endpoints(before, "/#/io.l5d.fs/users") == {("127.0.0.1", 8081)}

            await sync(stop_all, nd)
            await eventually(
                lambda: interp.state()["watches"]["connected"] == 0, "the streams to notice"
            )
            # namerd is gone: every request still gets the last-known destination, at once.
            for _ in range(5):
                with trio.fail_after(0.05):
                    assert await interp.resolve(SVC_USERS, NO_DTAB) == before
                await trio.sleep(0.1)
            states = {w["status"] for w in interp.state()["bind"] + interp.state()["addr"]}
            assert states <= {"retrying", "connecting"}
            assert interp.state()["reconnects"] > 0

            # Meanwhile: the service moves and the dtab changes.
            (disco / "users").write_text("127.0.0.1 8091\n")
            (disco / "payments").write_text("127.0.0.1 8092\n")
            await sync(
                change_dtab_offline,
                nd,
                tmp_path / "offline",
                config,
                space,
                "/svc => /#/io.l5d.fs; /svc/web => /#/io.l5d.fs/payments",
            )
            nd = await sync(restart_on_same_ports, nd, tmp_path / "again", config)

            async def caught_up() -> bool:
                dest = await interp.resolve(SVC_USERS, NO_DTAB)
                return endpoints(dest, "/#/io.l5d.fs/users") == {("127.0.0.1", 8091)}

            await eventually(caught_up, "the address change made while namerd was down")
            web = await interp.resolve(Path.read("/svc/web"), NO_DTAB)
            assert ids(web) == ["/#/io.l5d.fs/payments"]
            # bind users, addr users, bind web, addr payments
            await eventually(
                lambda: interp.state()["watches"]["connected"] == 4, "every stream to reconnect"
            )
    finally:
        await sync(stop_all, nd)


async def test_fresh_interpreter_with_namerd_down_times_out_clearly() -> None:
    port = free_port()  # nothing listens here
    interp = NamerdHttpInterpreter(
        [("127.0.0.1", port)], "default", bind_timeout_s=0.5, retry_base_s=0.1, retry_max_s=0.2
    )
    async with running(interp):
        started = trio.current_time()
        with pytest.raises(BindTimeout) as caught:
            await interp.resolve(SVC_USERS, NO_DTAB)
        waited = trio.current_time() - started
        assert 0.5 <= waited < 1.5
        message = str(caught.value)
        assert "/svc/users" in message
        assert f"127.0.0.1:{port}" in message
        assert "cannot connect" in message
        assert "Connection refused" in message
        assert interp.state()["watches"]["retrying"] + interp.state()["watches"]["connecting"] == 1


async def test_second_namerd_address_is_tried(namerd: Namerd) -> None:
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    dead = free_port()
    interp = build_interpreter(
        {
            "kind": "io.l5d.namerd.http",
            "dst": f"/$/inet/127.0.0.1/{dead} | /$/inet/127.0.0.1/{namerd.api_port}",
            "namespace": space,
            "experimental": True,
        },
        NO_DTAB,
        [],
        bind_timeout_s=5.0,
    )
    async with running(interp):
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        assert ids(dest) == ["/#/io.l5d.fs/users"]
        assert interp.state()["bind"][0]["dst"] == f"127.0.0.1:{namerd.api_port}"


async def test_resolve_now_answers_known_names_without_waiting(namerd: Namerd) -> None:
    # The router's hot path: a name resolved before, unchanged since, needs no await.
    space = ns()
    await sync(put_dtab, namerd, space, "/svc => /#/io.l5d.fs")
    async with running(interpreter(namerd, space)) as interp:
        assert interp.resolve_now(SVC_USERS, NO_DTAB) is None  # never asked: no answer yet
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        now = interp.resolve_now(SVC_USERS, NO_DTAB)
        assert now is dest or now is None  # None only if a watch changed in between
        await eventually(lambda: interp.resolve_now(SVC_USERS, NO_DTAB) is not None, "cached")
        assert interp.resolve_now(SVC_USERS, NO_DTAB) is interp.resolve_now(SVC_USERS, NO_DTAB)
        await sync(put_dtab, namerd, space, "/svc/users => /$/inet/127.0.0.1/9999")

        async def moved() -> bool:
            return ids(await interp.resolve(SVC_USERS, NO_DTAB)) == ["/$/inet/127.0.0.1/9999"]

        await eventually(moved, "the new dtab to reach resolve()", timeout_s=5)
        # Never the stale answer once the change arrived: current, or None (then resolve()).
        fast = interp.resolve_now(SVC_USERS, NO_DTAB)
        assert fast is None or ids(fast) == ["/$/inet/127.0.0.1/9999"]


async def test_a_worker_started_while_namerd_is_down_routes_on_its_siblings_state(
    tmp_path: FsPath,
) -> None:
    # A worker respawned (or replaced by SIGHUP) during a namerd outage has no watches of its
    # own; it takes the last-known answers its siblings shared, and namerd's once it is back.
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "users").write_text("127.0.0.1 8081\n")
    config = FS_CONFIG.format(disco=disco)
    nd = await sync(start_namerd, tmp_path / "nd", extra_config=config)
    space = ns()
    shared_dir = tmp_path / "last-known"
    try:
        await sync(put_dtab, nd, space, "/svc => /#/io.l5d.fs")
        sibling = interpreter(nd, space, last_known_dir=str(shared_dir), last_known_interval_s=0.05)
        async with running(sibling):
            before = await sibling.resolve(SVC_USERS, NO_DTAB)
            await eventually(
                lambda: (
                    sibling.client.export_last_known()["watches"]
                    and len(list(shared_dir.glob("router.*.json"))) == 1
                    and "users" in next(shared_dir.glob("router.*.json")).read_text()
                ),
                "the sibling to share its state",
            )
            await trio.sleep(0.2)  # the file holds both the bind and the addr answer
        await sync(stop_all, nd)

        fresh = interpreter(nd, space, bind_timeout_s=5.0, last_known_dir=str(shared_dir))
        async with running(fresh):
            with trio.fail_after(4):  # well within bindingTimeout: no waiting it out
                dest = await fresh.resolve(SVC_USERS, NO_DTAB)
            assert dest == before
            state = fresh.state()
            assert state["watches"]["last_known"] == 2  # bind + addr, flagged as such
            assert state["used_last_known"] >= 1
            # Names nobody knew still fail clearly, as before.
            with pytest.raises(BindTimeout):
                await fresh.resolve(Path.read("/svc/nobody-knew"), NO_DTAB)

            # namerd returns with a change: its answer replaces the borrowed one.
            (disco / "users").write_text("127.0.0.1 8091\n")
            nd = await sync(restart_on_same_ports, nd, tmp_path / "again", config)

            async def caught_up() -> bool:
                dest = await fresh.resolve(SVC_USERS, NO_DTAB)
                return endpoints(dest, "/#/io.l5d.fs/users") == {("127.0.0.1", 8091)}

            await eventually(caught_up, "namerd's answer after it came back")
            await eventually(
                lambda: fresh.state()["watches"]["last_known"] == 0, "the flags to clear"
            )
    finally:
        await sync(stop_all, nd)


async def test_last_known_state_of_another_namespace_is_not_used(tmp_path: FsPath) -> None:
    port = free_port()  # namerd is down from the start
    shared_dir = tmp_path / "last-known"
    shared_dir.mkdir()
    (shared_dir / "router.1.json").write_text(
        '{"namespace": "other", "watches": [{"kind": "bind", "path": "/svc/users", '
        '"dtab": "", "raw": "{\\"type\\": \\"leaf\\", \\"bound\\": {\\"id\\": \\"/x\\"}}"}]}'
    )
    (shared_dir / "router.2.json").write_text("not json")  # a damaged file costs only itself
    interp = NamerdHttpInterpreter(
        [("127.0.0.1", port)],
        "default",
        bind_timeout_s=0.5,
        retry_base_s=0.1,
        retry_max_s=0.2,
        last_known_dir=str(shared_dir),
    )
    async with running(interp):
        with pytest.raises(BindTimeout):
            await interp.resolve(SVC_USERS, NO_DTAB)
        assert interp.state()["used_last_known"] == 0


async def test_when_one_watch_gets_through_the_others_stop_waiting_out_their_backoff(
    tmp_path: FsPath,
) -> None:
    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "users").write_text("127.0.0.1 8081\n")
    (disco / "books").write_text("127.0.0.1 8082\n")
    config = FS_CONFIG.format(disco=disco)
    nd = await sync(start_namerd, tmp_path / "nd", extra_config=config)
    space = ns()
    try:
        await sync(put_dtab, nd, space, "/svc => /#/io.l5d.fs")
        # A backoff long enough that, without the wake-up, nothing would reconnect in time.
        interp = interpreter(nd, space, retry_base_s=60.0, retry_max_s=60.0, first_retry_s=60.0)
        async with running(interp):
            for name in ("users", "books"):
                await interp.resolve(Path("svc", name), NO_DTAB)
            await eventually(lambda: interp.state()["watches"]["connected"] == 4, "4 streams")
            await sync(stop_all, nd)
            await eventually(
                lambda: interp.state()["watches"]["retrying"] == 4, "every watch in backoff"
            )
            nd = await sync(restart_on_same_ports, nd, tmp_path / "again", config)
            # A new name opens a new watch, which connects at once; the four in a 60 s
            # backoff follow within the rejoin jitter.
            await interp.resolve(Path("svc", "users-new"), NO_DTAB)
            await eventually(
                lambda: interp.state()["watches"]["connected"] == 5,
                "the watches in backoff to rejoin",
                timeout_s=10,
            )
    finally:
        await sync(stop_all, nd)
