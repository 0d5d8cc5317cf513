"""The linker end to end: real namerd, real linker master + workers, real backends, loopback.

Timing figures (propagation of a dtab change, worker replacement) are printed for the record,
never asserted: these machines are noisy. What is asserted is correctness: no failed requests
where none may fail, the right backend, the right error.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from .linker_proc import Backend, Linker, backend, namerd_interpreter, running_linker
from .namerd_proc import Namerd, running_namerd, start_namerd

pytestmark = pytest.mark.redis

TEXT = {"Content-Type": "application/dtab"}
WAIT_S = 15.0


def put_dtab(nd: Namerd, dtab: str, ns: str = "default") -> None:
    r = httpx.put(f"{nd.api}/api/1/dtabs/{ns}", content=dtab, headers=TEXT)
    assert r.status_code == 204, r.text


def get(lk: Linker, host: str, path: str = "/", **kw: object) -> httpx.Response:
    headers = {"Host": host, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.get(lk.url + path, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def wait_for(cond, what: str, timeout_s: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Namerd, Linker, Backend, Backend, Path]]:
    """namerd (fs namer: a, b) + a 2-worker linker bound by namerd + backends a and b."""
    with backend("a") as a, backend("b") as b:
        disco = tmp_path / "disco"
        disco.mkdir()
        (disco / "a").write_text(f"127.0.0.1 {a.port}\n")
        (disco / "b").write_text(f"127.0.0.1 {b.port}\n")
        cfg = f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
        with running_namerd(tmp_path / "namerd", extra_config=cfg) as nd:
            put_dtab(nd, "/svc => /#/io.l5d.fs; /svc/app => /svc/a;")
            with running_linker(tmp_path / "linker", namerd_interpreter(nd.api_port)) as lk:
                wait_for(lambda: get(lk, "app").status_code == 200, "the first routed request")
                yield nd, lk, a, b, tmp_path


def test_routing_headers_and_per_request_overrides(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    r = get(lk, "app", "/hello?x=1")
    assert r.status_code == 200
    assert r.headers["x-backend"] == "a"
    assert r.headers["via"].endswith("1.1 linkerd")
    assert a.hits["/hello?x=1"] == 1
    r = get(lk, "app", headers={"l5d-dtab": "/svc/app => /svc/b"})
    assert r.headers["x-backend"] == "b"
    # ctx then user: the user's rule is last, so it wins
    r = get(lk, "app", headers={"l5d-ctx-dtab": "/svc/app=>/svc/b", "l5d-dtab": "/svc/app=>/svc/a"})
    assert r.headers["x-backend"] == "a"


def test_errors_users_can_act_on(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    before = a.hits.total() + b.hits.total()
    r = get(lk, "nosuch")
    assert r.status_code == 502
    err = unquote(r.headers["l5d-err"])
    assert "/svc/nosuch" in err
    assert "delegator.json" in err
    assert r.text.startswith("No hosts are available for /svc/nosuch")
    bad = get(lk, "app", headers={"l5d-dtab": "/svc/app => /a |"})
    assert bad.status_code == 400
    assert "l5d-dtab" in unquote(bad.headers["l5d-err"])
    with socket.create_connection(("127.0.0.1", lk.port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: nothing to identify
        assert s.recv(4096).startswith(b"HTTP/1.1 400")
    assert a.hits.total() + b.hits.total() == before


def test_bodies_and_hop_by_hop_headers(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    r = httpx.post(
        lk.url + "/upload",
        headers={"Host": "app", "Connection": "keep-alive, x-hop", "x-hop": "1"},
        content=b"x" * 100_000,
        timeout=10,
    )
    assert (r.status_code, r.text) == (200, "a 100000\n")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    r = httpx.post(lk.url + "/chunked", headers={"Host": "app"}, content=chunks(), timeout=10)
    assert (r.status_code, r.text) == (200, "a 10000\n")


def _seen(results: list[tuple[float, str, int]], t0: float, name: str):  # type: ignore[no-untyped-def]
    return lambda: any(s > t0 and be == name for s, be, _ in list(results))


@pytest.mark.parametrize("switches", [10])
def test_a_dtab_change_moves_traffic_on_every_worker_without_failures(stack, switches: int) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    stop = threading.Event()
    results: list[tuple[float, str, int]] = []
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                # A new connection each time, so requests spread over both workers.
                r = httpx.get(lk.url, headers={"Host": "app"}, timeout=10)
                outcome = (started, r.headers.get("x-backend", "?"), r.status_code)
            except httpx.HTTPError as err:
                outcome = (started, repr(err), 0)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    lags: list[float] = []
    firsts: list[float] = []
    try:
        current = "a"
        for _ in range(switches):
            time.sleep(0.3)
            nxt = "b" if current == "a" else "a"
            t0 = time.monotonic()
            put_dtab(nd, f"/svc => /#/io.l5d.fs; /svc/app => /svc/{nxt};")
            wait_for(_seen(results, t0, nxt), "the first request routed the new way")
            time.sleep(0.5)
            with lock:
                old = [s for s, be, _ in results if s > t0 and be == current]
                new = [s for s, be, _ in results if s > t0 and be == nxt]
            lags.append((max(old) - t0) * 1000 if old else 0.0)
            firsts.append((min(new) - t0) * 1000)
            current = nxt
    finally:
        stop.set()
        for t in threads:
            t.join()
    failures = [r for r in results if r[2] != 200]
    assert not failures, failures[:5]
    lags.sort()
    p50 = statistics.median(lags)
    p99 = lags[-1]
    firsts.sort()
    print(
        f"\ndtab switch over {switches} switches, {len(results)} requests: the last request "
        f"routed the old way started p50 {p50:.1f} / max {p99:.1f} ms after the PUT; the first "
        f"routed the new way started p50 {statistics.median(firsts):.1f} / max "
        f"{firsts[-1]:.1f} ms after it"
    )


def test_namerd_outage_keeps_routing_and_catches_up(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, tmp = stack
    outage_s = float(os.environ.get("L5_NAMERD_OUTAGE_S", "3"))
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        while not stop.is_set():
            try:
                codes.append(httpx.get(lk.url, headers={"Host": "app"}, timeout=10).status_code)
            except httpx.HTTPError:
                codes.append(0)
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        # Each worker routes on its own watches' last-known values here (sharing them with
        # new workers is tested below). Wait until every worker holds its bind and addr
        # watches (the load spreads new connections over both).
        wait_for(
            lambda: (
                lk.metrics().get("rt/outgoing/interpreter/namerd/watches/connected", 0)
                >= 2 * lk.workers
            ),
            "every worker to hold its namerd watches",
        )
        ports = (nd.api_port, nd.admin_port)
        nd.stop()
        # A change made while this namerd is down (through another namerd on the same data).
        with running_namerd(tmp / "other", data_dir=nd.data_dir, extra_config="") as other:
            put_dtab(other, "/svc => /#/io.l5d.fs; /svc/app => /svc/b;")
        time.sleep(outage_s)
        during = list(codes)
        cfg = (tmp / "namerd" / "namerd.yaml").read_text().split("admin:")[1]
        extra = "namers:" + cfg.split("namers:")[1] if "namers:" in cfg else ""
        back = start_namerd(
            tmp / "namerd-again", extra_config=extra, data_dir=nd.data_dir, ports=ports
        )
        try:
            wait_for(
                lambda: get(lk, "app").headers.get("x-backend") == "b", "the change made meanwhile"
            )
        finally:
            back.stop()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert during
    assert all(c == 200 for c in during), [c for c in during if c != 200][:5]


def test_workers_started_while_namerd_is_down_route_on_shared_last_known_state(stack) -> None:  # type: ignore[no-untyped-def]
    # Found by the locust scenarios: a SIGHUP (every worker replaced) or a crashed worker's
    # replacement during a namerd outage answered 502 after bindingTimeoutMs for every name,
    # since each worker's last-known state was its own. Workers now share it.
    nd, lk, a, b, tmp = stack
    assert get(lk, "app").headers.get("x-backend") == "a"
    # The worker that served it shares its state within a second (DEFAULT_LAST_KNOWN_INTERVAL_S).
    wait_for(
        lambda: lk.metrics().get("rt/outgoing/interpreter/namerd/watches/connected", 0) >= 2,
        "a worker to hold its namerd watches",
    )
    time.sleep(2.0)
    nd.stop()  # namerd is gone for the rest of the test
    old = set(lk.worker_pids())
    lk.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: not (set(lk.worker_pids()) & old) and len(lk.worker_pids()) == 2,
        "a new generation of workers",
    )
    started = time.monotonic()
    codes = []
    for _ in range(20):  # new connections: spread over both new workers
        r = httpx.get(lk.url, headers={"Host": "app", "Connection": "close"}, timeout=15)
        codes.append((r.status_code, r.headers.get("x-backend")))
    assert codes == [(200, "a")] * 20, codes[:5]
    assert time.monotonic() - started < 10  # never waited out a bindingTimeoutMs (10 s)
    victim = lk.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in lk.worker_pids() and len(lk.worker_pids()) == 2,
        "a replacement worker",
    )
    codes = []
    for _ in range(20):
        r = httpx.get(lk.url, headers={"Host": "app", "Connection": "close"}, timeout=15)
        codes.append(r.status_code)
    assert codes == [200] * 20, codes


def test_kill_9_of_a_worker_under_load_replaces_it(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    stop = threading.Event()
    codes: list[int] = []
    clients = 3

    def load() -> None:
        while not stop.is_set():
            try:
                codes.append(httpx.get(lk.url, headers={"Host": "app"}, timeout=10).status_code)
            except httpx.HTTPError:
                codes.append(0)

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        victim = lk.worker_pids()[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: (
                victim not in lk.worker_pids() and lk.metrics().get("master/workers_ready") == 2
            ),
            "a replacement worker",
        )
        replaced_ms = (time.monotonic() - killed_at) * 1000
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [c for c in codes if c != 200]
    # Only requests in flight on the killed worker may fail: at most one per client thread.
    assert len(failed) <= clients, failed
    assert lk.metrics()["master/worker_restarts"] >= 1
    print(
        f"\nworker replaced in {replaced_ms:.0f} ms; {len(failed)} of {len(codes)} requests failed"
    )


def test_sighup_under_load_loses_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    stop = threading.Event()
    codes: list[int] = []

    def load() -> None:
        with httpx.Client(timeout=10) as client:  # keep-alive connections too
            while not stop.is_set():
                try:
                    codes.append(client.get(lk.url, headers={"Host": "app"}).status_code)
                except httpx.HTTPError as err:
                    codes.append(0)
                    print("error", repr(err))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        old = set(lk.worker_pids())
        lk.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: not (set(lk.worker_pids()) & old) and len(lk.worker_pids()) == 2,
            "a new generation",
        )
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert codes
    assert all(c == 200 for c in codes), [c for c in codes if c != 200][:5]


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with backend("slow") as slow:
        router = (
            f"  dtab: /svc => /$/inet/127.0.0.1/{slow.port};\n"
            "  identifier:\n    kind: io.l5d.static\n    path: /svc\n"
        )
        with running_linker(tmp_path, router) as lk:
            with concurrent.futures.ThreadPoolExecutor(6) as pool:
                futures = [
                    pool.submit(httpx.get, lk.url + "/slow?s=1.5", timeout=20) for _ in range(6)
                ]
                wait_for(lambda: slow.hits["/slow?s=1.5"] == 6, "all slow requests in flight")
                lk.proc.send_signal(signal.SIGTERM)
                codes = [f.result().status_code for f in futures]
            assert codes == [200] * 6
            assert lk.proc.wait(30) == 0


_REFUSALS = {b"400", b"408", b"414", b"431", b"501", b"505"}


def test_malformed_requests_never_reach_a_service(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    before = a.hits.total() + b.hits.total()
    cases = [
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\xff\xfe garbage bytes\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: app\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: app\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: app\r\n\r\n",
    ]
    for raw in cases:
        with socket.create_connection(("127.0.0.1", lk.port), timeout=10) as s:
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                s.sendall(raw)
            try:
                answer = s.recv(4096)
            except ConnectionResetError:
                answer = b""
            # 4xx, 505 for the unknown version, or a plain close: never a response from a service.
            assert answer == b"" or answer[9:12] in _REFUSALS, (raw[:40], answer[:80])
    assert a.hits.total() + b.hits.total() == before


def test_admin_config_and_delegator(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    assert httpx.get(f"{lk.admin}/admin/ping").text.strip() == "pong"
    cfg = httpx.get(f"{lk.admin}/config.json").json()
    assert cfg["routers"][0]["label"] == "outgoing"
    d = httpx.get(f"{lk.admin}/delegator.json", params={"path": "/svc/app"}).json()
    assert json.dumps(d).count("/#/io.l5d.fs/a") >= 1
    for _ in range(10):
        get(lk, "app")
    wait_for(
        lambda: lk.metrics().get("rt/outgoing/service/svc/app/requests", 0) >= 10,
        "requests counted across workers",
    )
    prom = httpx.get(f"{lk.admin}/admin/metrics/prometheus").text
    assert 'service="svc/app"' in prom
    assert httpx.get(f"{lk.admin}/admin/shutdown").status_code == 405


def test_namerd_watch_state_is_in_the_metrics(stack) -> None:  # type: ignore[no-untyped-def]
    nd, lk, a, b, _ = stack
    wait_for(
        lambda: lk.metrics().get("rt/outgoing/interpreter/namerd/watches/connected", 0) >= 2,
        "connected bind and addr watches in the merged metrics",
    )


def test_clear_context_and_two_routers(tmp_path: Path) -> None:
    with backend("x") as x, backend("y") as y:
        from .namerd_proc import free_ports

        (edge_port,) = free_ports(1)
        router = (
            f"  dtab: /svc/x => /$/inet/127.0.0.1/{x.port}; /svc/y => /$/inet/127.0.0.1/{y.port};\n"
            "- protocol: http\n  label: edge\n"
            f"  servers:\n  - port: {edge_port}\n    clearContext: true\n"
            f"  dtab: /svc/x => /$/inet/127.0.0.1/{x.port}; /svc/y => /$/inet/127.0.0.1/{y.port};\n"
        )
        with running_linker(tmp_path, router) as lk:
            override = {"Host": "x", "l5d-dtab": "/svc/x => /svc/y"}
            trusted = httpx.get(lk.url, headers=override, timeout=10)
            assert trusted.headers["x-backend"] == "y"  # the override is honoured
            edge = httpx.get(f"http://127.0.0.1:{edge_port}/", headers=override, timeout=10)
            assert edge.headers["x-backend"] == "x"  # stripped on the untrusted edge
            cfg = httpx.get(f"{lk.admin}/config.json").json()
            assert [r["label"] for r in cfg["routers"]] == ["outgoing", "edge"]


def test_delegator_follows_a_reloaded_config(tmp_path: Path) -> None:
    """/delegator.json explains with the dtab the workers route by, also after a SIGHUP."""
    router = "  dtab: /svc/app => /$/inet/127.0.0.1/1111;\n"
    with running_linker(tmp_path, router, workers=1) as lk:

        def explained() -> str:
            r = httpx.get(f"{lk.admin}/delegator.json", params={"path": "/svc/app"}, timeout=5)
            return r.text

        assert "1111" in explained()
        cfg = tmp_path / "linker.yaml"
        cfg.write_text(cfg.read_text().replace("1111", "2222"))
        lk.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "2222" in json.dumps(httpx.get(f"{lk.admin}/config.json").json()), "reload"
        )
        assert "2222" in explained()
        assert "1111" not in explained()
