"""The consoles' HTTP side, without a browser: what each admin server serves, and readiness."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from shared.console import CONTENT_TYPES

from .linker_proc import namerd_interpreter, running_linker
from .namerd_proc import Namerd, free_ports, running_namerd

LOCAL = "  dtab: /svc => /$/inet/127.0.0.1/1;\n"


def test_namerd_admin_serves_the_console_and_the_api(namerd: Namerd) -> None:
    for path, marker in (("/", "namerd console"), ("/delegator", "dtab playground")):
        r = httpx.get(namerd.admin + path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert marker in r.text
        assert 'data-side="namerd"' in r.text
    js = httpx.get(namerd.admin + "/console/console.js")
    assert js.headers["content-type"] == CONTENT_TYPES["console.js"]
    assert "const L5" in js.text
    # Only the shared files: the page templates and anything else are not files to fetch.
    for name in ("namerd.html", "nope.js", "..%2Fadmin.py"):
        assert httpx.get(f"{namerd.admin}/console/{name}").status_code == 404
    # The console's API on the admin port is the API: same resources, same guards; and not at
    # /api/1, where a client given the wrong port must keep getting 404s (namerctl#28).
    assert (
        httpx.get(namerd.admin + "/console/api/1/dtabs").json()
        == httpx.get(namerd.api + "/api/1/dtabs").json()
    )
    assert httpx.get(namerd.admin + "/api/1/dtabs").status_code == 404
    put = httpx.put(
        namerd.admin + "/console/api/1/dtabs/console-test",
        content="/a => /b",
        headers={"Content-Type": "application/dtab", "If-Match": "AAAAAAAAAAE="},
    )
    assert put.status_code == 404  # If-Match on a namespace that does not exist
    # The plain table stays, for a browser without JavaScript.
    assert "<table>" in httpx.get(namerd.admin + "/admin").text


def test_linker_admin_serves_the_console_and_is_ready_once_booted(tmp_path: Path) -> None:
    with running_linker(tmp_path, LOCAL, workers=1) as lk:
        page = httpx.get(lk.admin + "/")
        assert page.status_code == 200
        assert 'data-side="linker"' in page.text
        assert 'data-side="linker"' in httpx.get(lk.admin + "/delegator").text
        css = httpx.get(lk.admin + "/console/console.css")
        assert css.headers["content-type"] == CONTENT_TYPES["console.css"]
        assert httpx.get(lk.admin + "/console/linker.html").status_code == 404
        assert httpx.post(lk.admin + "/", content=b"x").status_code == 405
        ready = httpx.get(lk.admin + "/admin/ready")
        assert (ready.status_code, ready.text.splitlines()[0]) == (200, "ready")
        index = {e["path"] for e in httpx.get(lk.admin + "/admin/index.json").json()}
        assert {"/admin/ready", "/delegator.json", "/config.json"} <= index
        (worker,) = httpx.get(lk.admin + "/admin/workers.json").json()["workers"]
        assert worker["pid"] in lk.worker_pids()


def test_linker_is_not_ready_until_namerd_answers(tmp_path: Path) -> None:
    api_port, admin_port = free_ports(2)  # nothing listens there yet
    with running_linker(tmp_path / "linker", namerd_interpreter(api_port), workers=1) as lk:
        for _ in range(2):
            r = httpx.get(lk.admin + "/admin/ready", timeout=10)
            assert r.status_code == 503
            assert r.text.startswith("not ready\n")
            assert "router outgoing: namerd has not been reached" in r.text
        # Logged once, not at every probe.
        assert lk.log().count("namerd is unreachable") == 1
        with running_namerd(tmp_path / "namerd", ports=(api_port, admin_port)):
            deadline = time.monotonic() + 10
            while (r := httpx.get(lk.admin + "/admin/ready", timeout=10)).status_code != 200:
                assert time.monotonic() < deadline, r.text
                time.sleep(0.1)
            assert "router outgoing: namerd answers" in r.text
        # namerd gone again: the workers serve last-known state, so the linker stays ready.
        r = httpx.get(lk.admin + "/admin/ready", timeout=10)
        assert r.status_code == 200
        assert "namerd has answered" in r.text
