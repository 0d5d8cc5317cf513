"""The linker's dashboard (``/`` on its admin port) shows what ``/admin/metrics.json`` says."""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from .conftest import Stack, page_errors, screenshot, wait_for

pytestmark = pytest.mark.browser

N = 7


def _cell(driver: Any, kind: str, name: str, cls: str) -> str:
    row = driver.find_element(
        By.CSS_SELECTOR, f"[data-router=outgoing] tr[data-kind={kind}][data-name='{name}']"
    )
    return str(row.find_element(By.CSS_SELECTOR, f"td.{cls}").text)


def _pct(ok: float, total: float) -> str:
    """The page's percentage format."""
    v = ok / total
    return f"{100 * v:.0f}%" if v == 1 else f"{100 * v:.2f}%"


def test_the_numbers_are_the_metrics_after_known_traffic(driver: Any, stack: Stack) -> None:
    lk = stack.linker
    # /svc/dash is used by this test only: N requests (to b), and one unroutable name (502).
    for _ in range(N):
        assert stack.get("dash").headers["x-backend"] == "b"
    assert stack.get("nosuch").status_code == 502
    svc = "rt/outgoing/service/svc/dash/requests"
    metrics = wait_for(
        lambda: (
            (m := lk.metrics()).get(svc) == N
            and sum(
                v
                for k, v in m.items()
                if k.startswith("rt/outgoing/server/") and k.endswith("/status/5XX")
            )
            >= 1
            and m
        ),
        "the workers' snapshots",
    )
    driver.get(lk.admin + "/")
    wait_for(lambda: _cell(driver, "service", "/svc/dash", "requests") == str(N), "N requests")

    servers = {k: v for k, v in metrics.items() if k.startswith("rt/outgoing/server/1")}
    total = sum(v for k, v in servers.items() if k.endswith("/requests"))
    bad = sum(v for k, v in servers.items() if k.endswith("/status/5XX"))
    responses = sum(v for k, v in servers.items() if "/status/" in k)
    shown_total = driver.find_element(By.CSS_SELECTOR, "[data-router=outgoing] .router-total")
    assert shown_total.text == str(int(total))
    (server,) = {k.split("/")[3] + ":" + k.split("/")[4] for k in servers}
    assert _cell(driver, "server", server, "requests") == str(int(total))
    assert _cell(driver, "server", server, "success") == _pct(responses - bad, responses)
    assert bad >= 1
    assert _cell(driver, "server", server, "success") != "100%"
    assert _cell(driver, "service", "/svc/dash", "success") == "100%"
    p50 = metrics["rt/outgoing/service/svc/dash/request_latency_ms.p50"]
    assert float(_cell(driver, "service", "/svc/dash", "p50")) == pytest.approx(p50, abs=0.01)
    client = "/#/io.l5d.fs/b"
    assert _cell(driver, "client", client, "requests") == str(
        int(metrics["rt/outgoing/client/#/io.l5d.fs/b/requests"])
    )
    # b's one endpoint, with its accrual state.
    endpoint = driver.find_element(By.CSS_SELECTOR, f"li[data-endpoint='127.0.0.1:{stack.b.port}']")
    assert "live" in endpoint.text

    # The process: workers, restarts, readiness and each worker's namerd streams.
    assert driver.find_element(By.CSS_SELECTOR, ".master-workers").text == "2 ready of 2"
    assert driver.find_element(By.CSS_SELECTOR, ".master-worker-restarts").text == str(
        int(metrics["master/worker_restarts"])
    )
    ready = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#ready .badge").text, "ready")
    assert ready == "ready"
    assert httpx.get(lk.admin + "/admin/ready").status_code == 200
    wait_for(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#workers tr[data-pid]")) == 2,
        "both workers' namerd state",
    )
    # Every admin endpoint is listed.
    listed = [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#index td.mono")]
    assert {"/admin/metrics.json", "/admin/ready", "/delegator", "/admin/shutdown"} <= set(listed)
    if os.environ.get("L5PY_SCREENSHOTS") == "1":
        # Steady traffic for the picture, so that the live rates have something to show.
        polls = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-polls"))
        while int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-polls")) < polls + 4:
            stack.get("dash")
            stack.get("app")
        screenshot(driver, "dashboard.png")
    assert page_errors(driver) == []


def test_an_endpoints_last_error_is_shown(driver: Any, stack: Stack) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # closed again at once: nothing listens on that port
        port = int(s.getsockname()[1])
    dtab = f"/svc/gone => /$/inet/127.0.0.1/{port}"
    r = httpx.get(stack.linker.url, headers={"Host": "gone", "l5d-dtab": dtab}, timeout=10)
    assert r.status_code == 502
    driver.get(stack.linker.admin + "/")
    shown = wait_for(
        lambda: (
            driver.find_element(
                By.CSS_SELECTOR, f"li[data-endpoint='127.0.0.1:{port}'] .last-error"
            ).text
        ),
        "the endpoint's last error",
    )
    assert "last error: connection refused (" in shown
    assert page_errors(driver) == []
