"""Client policy end to end: balancers, failure accrual, retries and timeouts against real
backends that misbehave on purpose. Shares and rates are asserted with wide margins; latency
is never asserted."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from .linker_proc import Backend, Linker, backend, running_linker

REQUESTS = int(os.environ.get("L5_POLICY_REQUESTS", "600"))


@contextlib.contextmanager
def fleet(*specs: dict[str, object]) -> Iterator[list[Backend]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(backend(f"b{i}", **spec)) for i, spec in enumerate(specs)]  # type: ignore[arg-type]


def router_for(tmp: Path, backends: list[Backend], client: str = "", service: str = "") -> str:
    disco = tmp / "disco"
    disco.mkdir(parents=True, exist_ok=True)
    (disco / "app").write_text("".join(f"127.0.0.1 {b.port}\n" for b in backends))
    return (
        "  dtab: /svc => /#/io.l5d.fs;\n"
        f"  client:\n    connectTimeoutMs: 1000\n{client}"
        f"  service:\n    totalTimeoutMs: 2000\n{service}"
    ), f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"


def start(tmp: Path, backends: list[Backend], client: str = "", service: str = ""):  # type: ignore[no-untyped-def]
    router, namers = router_for(tmp, backends, client, service)
    cm = running_linker(tmp, router, workers=1, top=namers)
    return cm


def hammer(lk: Linker, n: int, threads: int = 4) -> tuple[Counter[int], Counter[str]]:
    codes: Counter[int] = Counter()
    served: Counter[str] = Counter()
    lock = threading.Lock()
    per = n // threads

    def run() -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(per):
                try:
                    r = client.get(lk.url, headers={"Host": "app"})
                    who = r.headers.get("x-backend") or r.headers.get("x-served-by", "-")
                    code = r.status_code
                except httpx.HTTPError:
                    code, who = 0, "-"
                with lock:
                    codes[code] += 1
                    served[who] += 1

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return codes, served


RETRY_READS = "    responseClassifier:\n      kind: io.l5d.http.retryableRead5XX\n"
FAST_ACCRUAL = (
    "    failureAccrual:\n      kind: io.l5d.consecutiveFailures\n      failures: 3\n"
    "      backoff:\n        kind: constant\n        ms: 300\n"
)


def _broken_backend_case(tmp_path: Path, n: int) -> None:
    with fleet({}, {}, {}, {"status": 500}) as backends:
        no_accrual = "    failureAccrual:\n      kind: none\n"
        with start(tmp_path / "plain", backends, client=no_accrual) as lk:
            plain, _ = hammer(lk, n)
        with start(tmp_path / "policy", backends, client=FAST_ACCRUAL, service=RETRY_READS) as lk:
            guarded, _ = hammer(lk, n)
    plain_ok = plain[200] / sum(plain.values())
    guarded_ok = guarded[200] / sum(guarded.values())
    print(
        f"\n{n} GETs, 1 of 4 backends answering 500: success rate without policy "
        f"{plain_ok:.4f}, with retryableRead5XX + failure accrual {guarded_ok:.4f}"
    )
    assert plain_ok < 0.9  # the broken instance is visible without the policy
    assert guarded_ok >= 0.999


def test_one_broken_backend_retries_and_accrual_hide_it(tmp_path: Path) -> None:
    _broken_backend_case(tmp_path, REQUESTS)


@pytest.mark.slow
def test_one_broken_backend_over_10000_requests(tmp_path: Path) -> None:
    _broken_backend_case(tmp_path, 10_000)


#: The slow-backend test's load: 16 closed-loop clients; 3 backends answer in 20 ms, one in 500 ms.
#: p2c and ewma see slowness only as requests in flight (from pick to response headers), so the
#: test needs many in flight and a latency contrast that survives busy cores. This process runs
#: clients and backends and needs a few ms of CPU per request; on shared cores that time lands
#: outside the balancer's window (fewer requests in flight) and inside it (added to fast and slow
#: alike: less contrast). The old load, 8 clients at 4/40 ms, kept under 2 in flight and put p2c's
#: slow share at 0.13 to 0.20 depending on how busy the cores were, across the 0.15 bound. A model
#: of this loop (p2c; d ms added to every answer; client turnaround exponential, mean Z ms) gives
#: 0.033 +- 0.002 at d = 0, Z = 20 and 0.118 +- 0.004 at d = 150, Z = 200, 7 standard deviations
#: below 0.15 (none of 10^4 modelled runs reached it). Measured while other tests ran: about 7 in
#: flight at each pick; with both cores also kept busy, p2c 0.04 to 0.06 and ewma 0.01 to 0.06. A
#: balancer that ignores load (random choice, 400 draws) gives 0.25 +- 0.022, below 0.15 with
#: probability 4e-7.
SLOW_TEST_CLIENTS = 16
SLOW_TEST_FAST_S = 0.02
SLOW_TEST_SLOW_S = 0.5


@pytest.mark.parametrize("kind", ["p2c", "ewma"])
def test_a_slow_backend_gets_less_traffic_than_round_robin(tmp_path: Path, kind: str) -> None:
    fast: dict[str, object] = {"delay_s": SLOW_TEST_FAST_S}
    with fleet(fast, fast, fast, {"delay_s": SLOW_TEST_SLOW_S}) as backends:
        slow = backends[3].name
        with start(
            tmp_path / "rr", backends, client="    loadBalancer:\n      kind: roundRobin\n"
        ) as lk:
            _, rr = hammer(lk, 400, threads=SLOW_TEST_CLIENTS)
        with start(
            tmp_path / kind, backends, client=f"    loadBalancer:\n      kind: {kind}\n"
        ) as lk:
            _, smart = hammer(lk, 400, threads=SLOW_TEST_CLIENTS)
    rr_share = rr[slow] / sum(rr.values())
    smart_share = smart[slow] / sum(smart.values())
    print(f"\nslow backend share: roundRobin {rr_share:.3f}, {kind} {smart_share:.3f}")
    assert rr_share > 0.15
    assert smart_share < rr_share * 0.6


def test_no_retry_storm_when_everything_fails(tmp_path: Path) -> None:
    with fleet({"status": 500}, {"status": 500}) as backends:
        with start(
            tmp_path,
            backends,
            client="    failureAccrual:\n      kind: none\n",
            service=RETRY_READS,
        ) as lk:
            codes, _ = hammer(lk, REQUESTS)
            hits = sum(b.hits.total() for b in backends)
    retries = hits - REQUESTS
    bound = 0.2 * REQUESTS + 10 * 10  # percentCanRetry x requests + minRetriesPerSec x ttlSecs
    print(f"\n{REQUESTS} requests, {retries} retries, budget bound {bound:.0f}")
    assert codes[500] == REQUESTS
    assert retries <= bound


def test_total_timeout_bounds_a_hanging_backend(tmp_path: Path) -> None:
    with fleet({"delay_s": 30}) as backends:
        with start(tmp_path, backends) as lk:
            r = httpx.get(lk.url, headers={"Host": "app"}, timeout=10)
    assert r.status_code == 503
    assert "totalTimeoutMs=2000" in unquote(r.headers["l5d-err"])


def _demo(name: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "linker.demo", "--name", name, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while True:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"demo {name} did not start on {port}")
        time.sleep(0.05)


def test_a_killed_backend_is_ejected_probed_and_brought_back(tmp_path: Path) -> None:
    from .namerd_proc import free_ports

    (port,) = free_ports(1)
    with backend("steady") as steady:
        flaky = _demo("flaky", port)
        try:
            disco_backends = [steady, _Port(port)]
            with start(tmp_path, disco_backends, client=FAST_ACCRUAL, service=RETRY_READS) as lk:  # type: ignore[arg-type]
                _, served = hammer(lk, 100)
                assert served["flaky"] > 0
                flaky.send_signal(signal.SIGKILL)  # really dead: its sockets go with it
                flaky.wait(10)
                codes, served = hammer(lk, 200)
                assert codes[200] == 200  # refused connections are retried on the other one
                metrics = lk.metrics()
                assert metrics["rt/outgoing/client/#/io.l5d.fs/app/loadbalancer/removals"] >= 1
                flaky = _demo("flaky", port)  # restarted on the same port
                back = 0
                for _ in range(50):
                    _, served = hammer(lk, 40)
                    back += served["flaky"]
                    if back:
                        break
                    time.sleep(0.1)
                assert back > 0  # probed and brought back, without a linker restart
        finally:
            flaky.kill()
            flaky.wait(10)


class _Port:
    """Stands for a backend process in the fs file (only its port is needed there)."""

    def __init__(self, port: int) -> None:
        self.port = port


def test_l5d_ctx_deadline_is_honoured_and_propagated(tmp_path: Path) -> None:
    from linker.routing.deadline import format_deadline, parse_deadline

    from .namerd_proc import free_ports

    (port,) = free_ports(1)
    demo = _demo("echo", port)
    try:
        with start(tmp_path, [_Port(port)]) as lk:  # type: ignore[list-item]
            sent = format_deadline(time.time(), 5.0)
            r = httpx.get(lk.url, headers={"Host": "app", "l5d-ctx-deadline": sent.decode()})
            assert r.status_code == 200
            line = next(x for x in r.text.splitlines() if x.lower().startswith("l5d-ctx-deadline"))
            remaining = parse_deadline(line.split(":", 1)[1].strip().encode(), time.time())
            assert remaining is not None
            assert 0 < remaining <= 5.0  # the next hop sees what is left, not more
            expired = format_deadline(time.time() - 10, 1.0)
            r = httpx.get(lk.url, headers={"Host": "app", "l5d-ctx-deadline": expired.decode()})
            assert r.status_code == 503
            assert "l5d-ctx-deadline" in unquote(r.headers["l5d-err"])
    finally:
        demo.kill()
        demo.wait(10)


def test_balancer_state_is_in_the_metrics(tmp_path: Path) -> None:
    with fleet({}, {}) as backends:
        with start(tmp_path, backends) as lk:
            hammer(lk, 40)
            prefix = "rt/outgoing/client/#/io.l5d.fs/app/loadbalancer/"
            m = lk.metrics()
            for _ in range(50):
                if m.get(prefix + "size") == 2:
                    break
                time.sleep(0.1)
                m = lk.metrics()
            assert m[prefix + "size"] == 2
            assert m[prefix + "available"] == 2
            per_endpoint = [k for k in m if k.startswith(prefix + "endpoint/")]
            assert any(k.endswith("/outstanding") for k in per_endpoint), per_endpoint


def test_a_router_with_two_servers_has_one_set_of_client_policy(tmp_path: Path) -> None:
    """Both servers of a router feed one balancer: failures seen through the first server
    mark the endpoint dead for the second, and the gauges show that one state."""
    from .namerd_proc import free_ports

    (second_port,) = free_ports(1)
    with fleet({"status": 500}) as backends:
        accrual = (
            "    failureAccrual:\n      kind: io.l5d.consecutiveFailures\n      failures: 3\n"
            "      backoff:\n        kind: constant\n        ms: 600000\n"
        )
        router, namers = router_for(tmp_path, backends, client=accrual)
        # The second server goes after the first in the router's `servers:` list.
        with running_linker(
            tmp_path, f"  - port: {second_port}\n{router}", workers=1, top=namers
        ) as lk:
            first = [httpx.get(lk.url, headers={"Host": "app"}) for _ in range(3)]
            second = httpx.get(f"http://127.0.0.1:{second_port}", headers={"Host": "app"})
            prefix = "rt/outgoing/client/#/io.l5d.fs/app/loadbalancer/"
            for _ in range(50):  # gauges are sampled at each snapshot
                m = lk.metrics()
                if m.get(prefix + "available") == 0:
                    break
                time.sleep(0.1)
    assert [r.status_code for r in first] == [500] * 3
    assert second.status_code == 502
    assert "marked dead by failure accrual" in unquote(second.headers["l5d-err"])
    assert backends[0].hits.total() == 3  # the second server never sent it a request
    assert (m[prefix + "size"], m[prefix + "available"]) == (1, 0)
