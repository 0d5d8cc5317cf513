"""Errors that name the cause, through a real linker (master + workers) and a real namerd.

* a namespace that does not exist in namerd is named in the 502 (body and ``l5d-err``) and in
  ``/delegator.json``, instead of "no dtab entry matched";
* the first request to a port nothing listens on answers 502 naming the address and
  ``connection refused`` (not "marked dead"), and the linker logs the endpoint's death once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from .conftest import FS_CONFIG
from .linker_proc import Linker, namerd_interpreter, running_linker
from .namerd_proc import Namerd, running_namerd

pytestmark = pytest.mark.redis

#: Upper bound for anything we wait for; only limits a broken test.
WAIT_S = 10.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Namerd, Linker]]:
    """namerd with only the ``default`` namespace, and a linker asking for ``prod``."""
    disco = tmp_path / "disco"
    disco.mkdir()
    with running_namerd(tmp_path / "namerd", extra_config=FS_CONFIG.format(disco=disco)) as nd:
        r = httpx.put(
            f"{nd.api}/api/1/dtabs/default",
            content="/svc => /#/io.l5d.fs;",
            headers={"Content-Type": "application/dtab"},
            timeout=5,
        )
        assert r.status_code == 204, r.text
        router = namerd_interpreter(nd.api_port).replace("namespace: default", "namespace: prod")
        with running_linker(tmp_path / "linker", router, workers=1) as lk:
            yield nd, lk


def test_a_namespace_missing_in_namerd_is_named(stack: tuple[Namerd, Linker]) -> None:
    nd, lk = stack
    want = f"namespace 'prod' does not exist in namerd at 127.0.0.1:{nd.api_port}"
    for _ in range(2):  # the second answer comes from the checked watch, not a new lookup
        r = httpx.get(lk.url + "/", headers={"Host": "users"}, timeout=10)
        assert r.status_code == 502
        assert want in unquote(r.headers["l5d-err"])
        assert want in r.text
        assert "no dtab entry" not in r.text
    r = httpx.get(f"{lk.admin}/delegator.json", params={"path": "/svc/users"}, timeout=10)
    assert r.status_code == 404
    assert want in r.text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_first_request_to_a_closed_port_names_it(tmp_path: Path) -> None:
    port = closed_port()
    router = f"  dtab: /svc/users => /$/inet/127.0.0.1/{port};\n"
    with running_linker(tmp_path, router, workers=1) as lk:
        first = httpx.get(lk.url + "/", headers={"Host": "users"}, timeout=10)
        for _ in range(3):
            httpx.get(lk.url + "/", headers={"Host": "users"}, timeout=10)
        log = lk.log()
    err = unquote(first.headers["l5d-err"])
    assert first.status_code == 502
    assert f"connection refused by 127.0.0.1:{port} (tried 1 of 1 endpoints" in err
    assert "marked dead" not in err
    change = f"endpoint 127.0.0.1:{port}: alive -> dead"
    dead = [line for line in log.splitlines() if change in line]
    assert len(dead) == 1, log
    assert "connection refused" in dead[0]


def test_the_admin_exports_each_endpoints_last_error(tmp_path: Path) -> None:
    port = closed_port()
    router = f"  dtab: /svc/users => /$/inet/127.0.0.1/{port};\n"
    with running_linker(tmp_path, router, workers=2) as lk:
        assert httpx.get(lk.url + "/", headers={"Host": "users"}, timeout=10).status_code == 502

        def last_error() -> object:
            eps = httpx.get(f"{lk.admin}/admin/workers.json", timeout=5).json()["endpoints"]
            return eps.get("outgoing", {}).get(f"/$/inet/127.0.0.1/{port}", {})

        deadline = time.monotonic() + WAIT_S
        while not (seen := last_error()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the workers write their snapshots every second
    assert isinstance(seen, dict), seen
    entry = seen[f"127.0.0.1:{port}"]
    assert entry["last_error"] == "connection refused"
    assert entry["last_error_age_s"] >= 0
    assert isinstance(entry["pid"], int)
