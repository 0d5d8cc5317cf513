"""Browser tests of the admin consoles: real headless Chromium against a real namerd and linker.

Every test module here is marked ``browser`` (select them with ``pytest -m browser``); they
also run in the default suite, and are skipped, with the reason, when Chromium, chromedriver or
selenium is missing (``apt-get install chromium chromium-driver``). ``L5PY_SCREENSHOTS=1``
saves the screenshots that README.md shows into docs/console/.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.linker_proc import (
    Backend,
    Linker,
    backend,
    namerd_interpreter,
    running_linker,
)
from tests.integration.namerd_proc import Namerd, running_namerd

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
#: Upper bound for anything the page must show; only limits a broken test.
WAIT_S = 15.0
#: The stored dtab every test starts from.
BASE_DTAB = "/svc => /#/io.l5d.fs; /svc/app => /svc/a; /svc/dash => /svc/b;"


def _find(name: str, fallback: str) -> str | None:
    return shutil.which(name) or (fallback if os.path.exists(fallback) else None)


CHROMIUM = _find("chromium", "/usr/bin/chromium") or _find("chromium-browser", "/nonexistent")
CHROMEDRIVER = _find("chromedriver", "/usr/bin/chromedriver")


@pytest.fixture(scope="session")
def driver() -> Iterator[Any]:
    """One headless Chromium for the session (skipped, with the reason, when absent)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are needed for the console tests "
            "(apt-get install chromium chromium-driver)"
        )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI containers run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


@dataclass
class Stack:
    namerd: Namerd
    linker: Linker
    a: Backend
    b: Backend

    def get(self, host: str) -> httpx.Response:
        return httpx.get(self.linker.url, headers={"Host": host}, timeout=10)

    def put_dtab(self, text: str, **headers: str) -> httpx.Response:
        return httpx.put(
            f"{self.namerd.api}/api/1/dtabs/default",
            content=text,
            headers={"Content-Type": "application/dtab", **headers},
            timeout=10,
        )


@pytest.fixture(scope="session")
def stack(driver: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """namerd (fs namer: a, b) and a 2-worker linker bound by it, with backends a and b."""
    tmp = tmp_path_factory.mktemp("console")
    with backend("a") as a, backend("b") as b:
        disco = tmp / "disco"
        disco.mkdir()
        (disco / "a").write_text(f"127.0.0.1 {a.port}\n")
        (disco / "b").write_text(f"127.0.0.1 {b.port}\n")
        cfg = f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
        with running_namerd(tmp / "namerd", extra_config=cfg) as nd:
            st = Stack(nd, None, a, b)  # type: ignore[arg-type]
            assert st.put_dtab(BASE_DTAB).status_code == 204
            with running_linker(tmp / "linker", namerd_interpreter(nd.api_port)) as lk:
                st.linker = lk
                wait_for(lambda: st.get("app").status_code == 200, "the first routed request")
                yield st


def wait_for(cond: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``cond`` until it is truthy; its value. Fails with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = cond()
        except Exception:  # the page is mid-update (a stale element): look again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def screenshot(driver: Any, name: str) -> None:
    """Save a screenshot into docs/console/ when L5PY_SCREENSHOTS=1 (kept out of normal runs)."""
    if os.environ.get("L5PY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / name))


def page_errors(driver: Any) -> list[str]:
    """The browser console's script errors since the last call (a broken script shows up
    here; answers such as a 400 or 412 the page asked for and handles are not errors)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and e.get("source") != "network"
    ]
