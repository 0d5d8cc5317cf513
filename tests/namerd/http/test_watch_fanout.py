"""One computation per distinct watch, fanned out to every stream of it; work counted, not timed.

The real namerd app (``create_app``, its startup, a real redis-server) in process. httpx's ASGI
transport buffers whole responses, so streams are driven through the ASGI interface directly
(:class:`Stream`): the test plays the server, and can stall a client's writes the way a full
TCP window does. Work is counted by calls to the worker's ``Interpreter.bind`` (a counting
wrapper that calls through) and by the ``watches/renders`` metric.

Unless a test says otherwise, no namer is configured and the dtabs bind to ``~``/``!``/``$``
(no addresses), so nothing but the test's own writes notifies: no DNS answer, no namer poll, no
address-mirror publication.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path as FsPath
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from namerd.app import NamerdASGI
from namerd.config import load_config
from namerd.runtime import Runtime, SharedWatch
from shared import Dtab, NameTree, Path
from shared.budget import STORED_DTAB_BUDGET, WorkBudget

from ..naming.namers import eventually
from .conftest import started

pytestmark = pytest.mark.redis

#: Upper bound for one wait; it only limits how long a broken test hangs.
WAIT_S = 10.0
TEXT = {"Content-Type": "application/dtab"}

NEG = '{"type":"neg"}\n'
FAIL = '{"type":"fail"}\n'
EMPTY = '{"type":"empty"}\n'


class Stream:
    """One ``watch=1`` request driven through ASGI, as uvicorn would: lines as they are sent.

    ``stall()`` makes the next body write block until ``resume()``: a client that stopped
    reading (its TCP window is full).
    """

    def __init__(self, app: NamerdASGI, url_path: str, /, **params: str) -> None:
        query = urlencode({**params, "watch": "1"}).encode()
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": url_path,
            "raw_path": url_path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"namerd")],
            "server": ("namerd", 80),
            "client": ("127.0.0.1", 1234),
        }
        self.status: int | None = None
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.ended = asyncio.Event()
        self._request_sent = False
        self._gone = asyncio.Event()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._task = asyncio.create_task(app(self.scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                await self._flowing.wait()
                for line in body.decode().splitlines(keepends=True):
                    if line != "\n":  # heartbeats
                        self.lines.put_nowait(line)
            if not message.get("more_body", False):
                self.ended.set()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def next(self) -> str:
        return await asyncio.wait_for(self.lines.get(), WAIT_S)

    async def close(self) -> None:
        """The client goes away; wait until the server has finished with the request."""
        self._gone.set()
        self.resume()
        await asyncio.wait_for(self._task, WAIT_S)


class Namerd:
    """A started namerd app, an API client for writes, and a count of ``bind`` calls."""

    def __init__(self, app: NamerdASGI, api: httpx.AsyncClient) -> None:
        self.app = app
        self.api = api
        assert app.runtime is not None
        self.rt: Runtime = app.runtime
        self.binds = 0
        interp = self.rt.interpreter
        real_bind = interp.bind

        def counted_bind(
            dtab: Dtab, path: Path, budget: WorkBudget = STORED_DTAB_BUDGET
        ) -> NameTree[Any]:
            self.binds += 1
            return real_bind(dtab, path, budget)

        interp.bind = counted_bind  # type: ignore[method-assign]

    def watch(self, url_path: str, /, **params: str) -> Stream:
        return Stream(self.app, url_path, **params)

    async def put(self, ns: str, dtab: str) -> None:
        r = await self.api.put(f"/api/1/dtabs/{ns}", content=dtab, headers=TEXT)
        assert r.status_code == 204, r.text

    @property
    def renders(self) -> float:
        return self.rt.metrics.counters.get("watches/renders", 0)

    def watch_of(self, *key: str) -> SharedWatch:
        """The shared watch whose key is ``key`` (e.g. ``"addr", "/#/io.l5d.fs/users"``)."""
        [watch] = [w for w in self.rt.watches if w.key[1] == key]  # type: ignore[index]
        return watch

    async def numsub(self, ns: str) -> int:
        channel = f"{self.rt.store.key_prefix}chan:dtab:{ns}"
        [(_, count)] = await self.rt.redis.pubsub_numsub(channel)
        return int(count)


Started = Callable[..., contextlib.AbstractAsyncContextManager["Namerd"]]


@pytest.fixture
def namerd(redis_url: str, tmp_path: FsPath) -> Started:
    """``async with namerd(config_yaml="") as nd:`` a started namerd and its helpers."""

    @contextlib.asynccontextmanager
    async def running(config_yaml: str = "") -> AsyncIterator[Namerd]:
        path = tmp_path / "namerd.yaml"
        path.write_text(config_yaml, encoding="utf-8")
        config = load_config(str(path) if config_yaml else None)
        async with started(config, redis_url) as (app, api):
            yield Namerd(app, api)

    return running


async def _first_lines(streams: list[Stream], expected: str) -> None:
    for stream in streams:
        assert await stream.next() == expected
        assert stream.status == 200


async def _close(streams: list[Stream]) -> None:
    await asyncio.gather(*(s.close() for s in streams))


def test_forty_identical_bind_watches_cost_one_bind_per_change(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            streams = [nd.watch("/api/1/bind/a", path="/svc/x") for _ in range(40)]
            await _first_lines(streams, NEG)
            assert nd.binds == 1  # one initial bind for all 40
            await nd.put("a", "/svc=>!")
            await _first_lines(streams, FAIL)  # every stream gets the same bytes
            assert nd.binds == 2
            assert nd.renders == 2
            assert nd.rt.metrics.gauges["watches/distinct"] == 1
            assert nd.rt.metrics.gauges["watches/open"] == 40
            await _close(streams)

    asyncio.run(scenario())


def test_forty_watches_of_four_distinct_keys_cost_four_binds_per_change(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            # Path and local dtab are both part of the key; a spelling of the same dtab is not.
            keys = [
                {"path": "/svc/x"},
                {"path": "/svc/y"},
                {"path": "/svc/x", "dtab": "/other=>/svc"},
                {"path": "/svc/x", "dtab": "/svc/x=>$"},
            ]
            # The second half spells the same local dtabs differently: still the same keys.
            spellings = [{}, {}, {"dtab": "/other => /svc"}, {"dtab": " /svc/x=>$ "}]
            streams = [
                nd.watch(
                    "/api/1/bind/a", **{**keys[i % 4], **(spellings[i % 4] if i >= 20 else {})}
                )
                for i in range(40)
            ]
            by_key = [[s for i, s in enumerate(streams) if i % 4 == k] for k in range(4)]
            for k in range(3):
                await _first_lines(by_key[k], NEG)
            await _first_lines(by_key[3], EMPTY)  # the local dtab has priority
            assert nd.binds == 4
            await nd.put("a", "/svc=>!")
            for k in range(3):
                await _first_lines(by_key[k], FAIL)
            assert nd.binds == 8
            assert nd.rt.metrics.gauges["watches/distinct"] == 4
            await _close(streams)

    asyncio.run(scenario())


def test_a_write_to_one_namespace_renders_no_watch_of_another(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            await nd.put("b", "/svc=>~")
            in_a = [nd.watch("/api/1/bind/a", path=f"/svc/{i}") for i in range(20)]
            in_a += [nd.watch("/api/1/resolve/a", path="/svc/0")]
            in_a += [nd.watch("/api/1/dtabs/a")]
            in_b = nd.watch("/api/1/bind/b", path="/svc/0")
            await _first_lines(in_a[:20], NEG)
            await _first_lines([in_b], NEG)
            assert json.loads(await in_a[20].next()) == {"type": "neg"}
            assert json.loads(await in_a[21].next()) == [{"prefix": "/svc", "dst": "~"}]
            binds, renders = nd.binds, nd.renders
            await nd.put("b", "/svc=>!")
            assert await in_b.next() == FAIL
            assert nd.binds == binds + 1  # b's watch only
            assert nd.renders == renders + 1
            await nd.put("a", "/svc=>$")
            await _first_lines(in_a[:20], EMPTY)
            assert json.loads(await in_a[21].next()) == [{"prefix": "/svc", "dst": "$"}]
            assert nd.renders == renders + 1 + 22  # each watch of a once (resolve's reads neg)
            for stream in [*in_a, in_b]:
                assert stream.lines.empty()  # nothing else was sent
            await _close([*in_a, in_b])

    asyncio.run(scenario())


def test_a_stalled_reader_delays_nobody_and_gets_the_newest_value(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            streams = [nd.watch("/api/1/bind/a", path="/svc/x") for _ in range(3)]
            stalled, others = streams[0], streams[1:]
            await _first_lines(streams, NEG)
            stalled.stall()  # from now on its writes block, as with a full TCP window
            await nd.put("a", "/svc=>!")
            await _first_lines(others, FAIL)
            await nd.put("a", "/svc=>$")
            await _first_lines(others, EMPTY)
            await nd.put("a", "/svc=>/x")
            await _first_lines(others, NEG)
            assert nd.binds == 4  # one per change: the stalled stream costs no work either
            assert stalled.lines.empty()
            stalled.resume()
            # The write it was blocked in (the first change), then straight to the newest.
            assert await stalled.next() == FAIL
            assert await stalled.next() == NEG
            assert nd.binds == 4
            await _close(streams)

    asyncio.run(scenario())


def test_a_watch_is_freed_when_its_last_stream_leaves(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            streams = [nd.watch("/api/1/bind/a", path="/svc/x") for _ in range(5)]
            await _first_lines(streams, NEG)
            assert len(nd.rt.watches) == 1
            assert await nd.numsub("a") == 1
            await _close(streams[:4])
            assert len(nd.rt.watches) == 1  # one stream left: the watch stays
            await nd.put("a", "/svc=>!")
            assert await streams[4].next() == FAIL
            await _close(streams[4:])
            assert len(nd.rt.watches) == 0
            assert nd.rt.metrics.gauges["watches/distinct"] == 0
            assert nd.rt.metrics.gauges["watches/open"] == 0
            assert nd.rt.dtabs.current("a") is None  # the namespace cache let it go
            assert await nd.numsub("a") == 0
            # A new stream starts a new watch, with the current value.
            again = nd.watch("/api/1/bind/a", path="/svc/x")
            assert await again.next() == FAIL
            await _close([again])

    asyncio.run(scenario())


def test_shutdown_ends_shared_streams_and_refuses_new_ones(namerd: Started) -> None:
    async def scenario() -> None:
        async with namerd() as nd:
            await nd.put("a", "/svc=>~")
            streams = [nd.watch("/api/1/bind/a", path="/svc/x") for _ in range(3)]
            await _first_lines(streams, NEG)
            nd.rt.shutdown.set()
            for stream in streams:
                await asyncio.wait_for(stream.ended.wait(), WAIT_S)
            late = nd.watch("/api/1/bind/a", path="/svc/x")
            await asyncio.wait_for(late.ended.wait(), WAIT_S)
            assert late.status == 503
            await _close([*streams, late])
            assert len(nd.rt.watches) == 0

    asyncio.run(scenario())


def test_addr_watches_hear_their_own_namer_and_id_only(namerd: Started, tmp_path: FsPath) -> None:
    users_dir, other_dir = tmp_path / "fs", tmp_path / "other"
    users_dir.mkdir()
    other_dir.mkdir()
    (users_dir / "users").write_text("127.0.0.1 7001\n")
    (other_dir / "x").write_text("127.0.0.1 7101\n")
    config = (
        f"namers:\n- kind: io.l5d.fs\n  rootDir: {users_dir}\n  pollIntervalSecs: 0.05\n"
        f"- kind: io.l5d.fs\n  prefix: /#/other\n  rootDir: {other_dir}\n"
        "  pollIntervalSecs: 0.05\n"
    )

    def port(line: str) -> int:
        [addr] = json.loads(line)["addrs"]
        return int(addr["port"])

    async def scenario() -> None:
        async with namerd(config) as nd:
            await nd.put("a", "/svc=>~")
            # Streams of two namespaces: an addr answer does not depend on one.
            users = [nd.watch(f"/api/1/addr/{ns}", path="/#/io.l5d.fs/users") for ns in "ab" * 5]
            others = [nd.watch("/api/1/addr/a", path="/#/other/x") for _ in range(10)]
            dtab = nd.watch("/api/1/dtabs/a")
            for stream in users:
                assert port(await stream.next()) == 7001
            for stream in others:
                assert port(await stream.next()) == 7101
            await dtab.next()
            users_watch = nd.watch_of("addr", "/#/io.l5d.fs/users")
            other_watch = nd.watch_of("addr", "/#/other/x")
            # Each first render publishes its answer to the address mirror, whose change of
            # that id renders that watch once more; then all is quiet.
            await eventually(lambda: users_watch.renders == other_watch.renders == 2, "echoes")
            (other_dir / "x").write_text("127.0.0.1 7102\n")
            for stream in others:
                assert port(await stream.next()) == 7102
            await eventually(lambda: other_watch.renders == 4, "the change and its echo")
            assert users_watch.renders == 2  # another namer's change, another id's mirror entry
            await nd.put("a", "/svc=>!")
            assert json.loads(await dtab.next()) == [{"prefix": "/svc", "dst": "!"}]
            assert (users_watch.renders, other_watch.renders) == (2, 4)  # a dtab is not theirs
            await _close([*users, *others, dtab])

    asyncio.run(scenario())
