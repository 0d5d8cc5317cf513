"""namerd as an operator runs it: replicas on one Redis, restarts, outages, auth, admin, SIGTERM."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from namerd.storage.embedded_redis import EmbeddedRedis

from .namerd_proc import running_namerd, start_namerd
from .test_namerd_watch import Lines, wait_until, watch

pytestmark = pytest.mark.redis

TEXT = {"Content-Type": "application/dtab"}


def ns() -> str:
    return "o" + uuid.uuid4().hex[:10]


def external(redis: EmbeddedRedis) -> str:
    return f"storage:\n  kind: io.l5d.redis\n  url: {redis.url}\n"


@pytest.fixture
def shared_redis(tmp_path: Path):  # type: ignore[no-untyped-def]
    redis = EmbeddedRedis(tmp_path / "r")
    redis.start()
    yield redis
    redis.stop()


def test_two_replicas_share_state_and_watches(tmp_path: Path, shared_redis: EmbeddedRedis) -> None:
    cfg = external(shared_redis)
    with (
        running_namerd(tmp_path / "a", extra_config=cfg) as a,
        running_namerd(tmp_path / "b", extra_config=cfg) as b,
    ):
        name = ns()
        httpx.post(f"{a.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
        with watch(f"{b.api}/api/1/dtabs/{name}") as lines:
            assert json.loads(lines.next()) == [{"prefix": "/a", "dst": "/b"}]
            httpx.put(f"{a.api}/api/1/dtabs/{name}", content="/a=>/c", headers=TEXT)
            assert json.loads(lines.next()) == [{"prefix": "/a", "dst": "/c"}]
        assert httpx.head(f"{b.api}/api/1/dtabs/{name}").headers["etag"] == "AAAAAAAAAAI="


def test_concurrent_cas_writers_never_lose_an_update(
    tmp_path: Path, shared_redis: EmbeddedRedis
) -> None:
    cfg = external(shared_redis)
    with (
        running_namerd(tmp_path / "a", extra_config=cfg) as a,
        running_namerd(tmp_path / "b", extra_config=cfg) as b,
    ):
        name = ns()
        httpx.post(f"{a.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
        v1 = httpx.head(f"{a.api}/api/1/dtabs/{name}").headers["etag"]

        def write(i: int) -> int:
            base = (a, b)[i % 2].api
            return httpx.put(
                f"{base}/api/1/dtabs/{name}",
                content=f"/a=>/w{i}",
                headers={**TEXT, "If-Match": v1},
                timeout=10,
            ).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(write, range(32)))
        assert sorted(codes) == [204] + [412] * 31
        winner = codes.index(204)
        got = httpx.get(f"{b.api}/api/1/dtabs/{name}", headers={"Accept": "text/plain"})
        assert got.text == f"/a=>/w{winner}\n"


def test_embedded_restart_keeps_dtabs_and_versions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    name = ns()
    with running_namerd(tmp_path / "one", data_dir=data) as nd:
        httpx.post(f"{nd.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
        httpx.put(f"{nd.api}/api/1/dtabs/{name}", content="/a=>/c", headers=TEXT)
    with running_namerd(tmp_path / "two", data_dir=data) as nd:
        r = httpx.get(f"{nd.api}/api/1/dtabs/{name}", headers={"Accept": "text/plain"})
        assert r.text == "/a=>/c\n"
        assert r.headers["etag"] == "AAAAAAAAAAI="


def test_redis_outage_reads_last_known_writes_503_then_recovers(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "r")
    redis.start()
    try:
        with running_namerd(tmp_path / "n", extra_config=external(redis), workers=1) as nd:
            name = ns()
            url = f"{nd.api}/api/1/dtabs/{name}"
            httpx.post(url, content="/a=>/b", headers=TEXT)
            assert httpx.get(url).status_code == 200  # this worker now knows the value
            redis.stop()
            r = httpx.get(url, timeout=10)
            assert (r.status_code, r.json()) == (200, [{"prefix": "/a", "dst": "/b"}])
            w = httpx.put(url, content="/a=>/c", headers=TEXT, timeout=10)
            assert w.status_code == 503
            assert "Storage is unavailable" in w.text
            assert "retry" in w.text
            redis.start()
            wait_until(
                lambda: (
                    httpx.put(url, content="/a=>/c", headers=TEXT, timeout=10).status_code == 204
                ),
                "writes to work again",
            )
            assert httpx.get(url, headers={"Accept": "text/plain"}).text == "/a=>/c\n"
    finally:
        redis.stop()


def test_write_token(tmp_path: Path) -> None:
    with running_namerd(tmp_path, env={"NAMERD_TOKEN": "s3cret"}) as nd:
        url = f"{nd.api}/api/1/dtabs/{ns()}"
        r = httpx.post(url, content="/a=>/b", headers=TEXT)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in r.text
        bad = httpx.post(url, content="/a=>/b", headers={**TEXT, "Authorization": "Bearer nope"})
        assert bad.status_code == 401
        ok = httpx.post(url, content="/a=>/b", headers={**TEXT, "Authorization": "Bearer s3cret"})
        assert ok.status_code == 204
        assert httpx.get(url).status_code == 200  # reads stay open
        assert httpx.delete(url).status_code == 401


def test_admin_ping_metrics_and_namespaces_page(tmp_path: Path) -> None:
    with running_namerd(tmp_path) as nd:
        name = ns()
        httpx.post(f"{nd.api}/api/1/dtabs/{name}", content="/svc=>/#/io.l5d.fs", headers=TEXT)
        for _ in range(20):  # new connections each time: spread over both workers
            r = httpx.get(f"{nd.api}/api/1/bind/{name}", params={"path": "/$/inet/127.0.0.1/1"})
            assert r.status_code == 200
        assert httpx.get(f"{nd.admin}/admin/ping").text == "pong"

        def total_200() -> float:
            m = httpx.get(f"{nd.admin}/admin/metrics.json").json()
            return m["counters"].get("requests/endpoint/bind/status/200", 0)

        # Every worker's requests are counted, whichever worker answers the admin request.
        wait_until(lambda: total_200() == 20, "all 20 requests to be counted")
        m = httpx.get(f"{nd.admin}/admin/metrics.json").json()
        assert m["workers"] == 2
        assert m["gauges"][f"store/namespace/{name}/version"] == 1
        assert m["gauges"]["store/redis_up"] == 1
        # Another worker may answer with a snapshot of this one up to 1 s old: wait for it too.
        wait_until(
            lambda: (
                'namerd_requests{endpoint="bind",status="200"} 20'
                in httpx.get(f"{nd.admin}/admin/metrics/prometheus").text
            ),
            "the Prometheus view to agree",
        )
        page = httpx.get(f"{nd.admin}/admin")  # the plain table (/ is the console)
        assert page.headers["content-type"].startswith("text/html")
        assert name in page.text
        assert "/svc =&gt; /#/io.l5d.fs;" in page.text
        # The API port does not serve admin pages, and vice versa.
        assert httpx.get(f"{nd.api}/admin/ping").status_code == 404
        assert httpx.get(f"{nd.admin}/api/1/dtabs").status_code == 404


def test_sigterm_ends_watch_streams_cleanly_and_exits_0(tmp_path: Path) -> None:
    nd = start_namerd(tmp_path)
    name = ns()
    httpx.post(f"{nd.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
    with (
        httpx.Client(timeout=30) as client,
        client.stream("GET", f"{nd.api}/api/1/dtabs/{name}", params={"watch": "1"}) as r,
    ):
        lines = Lines(r)
        lines.next()
        started = time.monotonic()
        nd.proc.send_signal(signal.SIGTERM)
        # The stream ends with its terminating chunk (EOFError from our reader), not a reset
        # (which httpx would raise as a RemoteProtocolError/ReadError).
        with pytest.raises(EOFError):
            _drain(lines)
    assert nd.proc.wait(30) == 0
    # Not a timing assertion: the stream ended well before the 5 s grace period was used up,
    # which a stream cut off by the grace timeout could not.
    assert time.monotonic() - started < 5.0, nd.log()


def _drain(lines: Lines) -> None:
    while True:
        lines.next()


def test_config_errors_name_the_key_and_position(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("admin:\n  port: 9991\nstorge: {}\n")
    r = subprocess.run(
        [sys.executable, "-m", "namerd.main", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert f"{cfg}:3:1: unknown key 'storge'" in r.stderr
    assert r.stderr.count("\n") == 1  # one clear line, no traceback


def test_resolved_address_sets_are_kept_in_redis_for_all_replicas(
    tmp_path: Path, shared_redis: EmbeddedRedis
) -> None:
    import redis as redis_lib

    disco = tmp_path / "disco"
    disco.mkdir()
    (disco / "users").write_text("127.0.0.1 8081\n")
    cfg = external(shared_redis) + f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
    with running_namerd(tmp_path / "a", extra_config=cfg) as a:
        r = httpx.get(f"{a.api}/api/1/addr/x", params={"path": "/#/io.l5d.fs/users"})
        assert r.json()["addrs"][0]["port"] == 8081
        client = redis_lib.Redis(unix_socket_path=str(shared_redis.url).removeprefix("unix://"))
        wait_until(lambda: client.hget("namerd:addrs", "/#/io.l5d.fs/users") is not None, "mirror")
        stored = json.loads(client.hget("namerd:addrs", "/#/io.l5d.fs/users"))  # type: ignore[arg-type]
        assert stored == r.json()
        client.close()


def test_registry_endpoints_register_heartbeat_deregister_and_expire(tmp_path: Path) -> None:
    # The endpoints are loopback ones, refused unless the address policy lists loopback.
    cfg = (
        "namers:\n- kind: io.l5d.registry\n  sweepIntervalSecs: 0.1\n"
        "  allowNetworks: [127.0.0.0/8]\n"
    )
    with running_namerd(tmp_path, extra_config=cfg, env={"NAMERD_TOKEN": "t0k"}) as nd:
        auth = {"Authorization": "Bearer t0k"}
        reg = f"{nd.api}/api/1/registry"
        body = {"host": "127.0.0.1", "port": 9101, "ttlSeconds": 30, "meta": {"zone": "a"}}
        assert httpx.post(f"{reg}/users", json=body).status_code == 401
        assert httpx.post(f"{reg}/users", json=body, headers=auth).status_code == 204
        short = {"host": "127.0.0.1", "port": 9102, "ttlSeconds": 0.5}
        assert httpx.post(f"{reg}/users", json=short, headers=auth).status_code == 204
        assert httpx.get(reg).json() == ["users"]
        got = httpx.get(f"{reg}/users").json()
        assert sorted(a["port"] for a in got["addrs"]) == [9101, 9102]
        # Bound through a dtab like any namer.
        httpx.post(
            f"{nd.api}/api/1/dtabs/default",
            content="/svc=>/#/io.l5d.registry",
            headers={**TEXT, **auth},
        )
        b = httpx.get(f"{nd.api}/api/1/bind/default", params={"path": "/svc/users"}).json()
        assert b["bound"]["id"] == "/#/io.l5d.registry/users"
        # The short-TTL endpoint expires by itself; the other one is kept by heartbeats.
        for _ in range(3):
            r = httpx.put(f"{reg}/users/127.0.0.1/9101", params={"ttlSeconds": 30}, headers=auth)
            assert r.status_code == 204
        wait_until(
            lambda: [a["port"] for a in httpx.get(f"{reg}/users").json()["addrs"]] == [9101],
            "the 0.5 s endpoint to expire",
        )
        missing = httpx.put(f"{reg}/users/127.0.0.1/9999", headers=auth)
        assert missing.status_code == 404
        bad = httpx.post(f"{reg}/users", json={"host": "x", "port": 0}, headers=auth)
        assert (bad.status_code, bad.json()["error"]) == (400, "port must be an integer 1-65535.")
        gone = httpx.delete(f"{reg}/users/127.0.0.1/9101", headers=auth)
        assert gone.status_code == 204
        assert httpx.get(f"{reg}/users").json()["addrs"] == []


def test_redis_metrics_on_the_admin_page(tmp_path: Path) -> None:
    with running_namerd(tmp_path) as nd:
        wait_until(
            lambda: (
                "redis/ping" in httpx.get(f"{nd.admin}/admin/metrics.json").json()["histograms"]
            ),
            "a Redis latency sample",
        )
        prom = httpx.get(f"{nd.admin}/admin/metrics/prometheus").text
        assert "namerd_redis_ping_bucket" in prom
        up = [line for line in prom.splitlines() if line.startswith("namerd_redis_up ")]
        assert up
        assert float(up[0].split()[1]) >= 1  # summed over the workers that have probed
