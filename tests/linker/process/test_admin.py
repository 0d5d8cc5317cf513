"""The linker's admin server against browsers: a web page must not stop the linker.

A real AdminServer on a real socket; requests are raw http.client calls, with the headers a
browser would send (Origin, Sec-Fetch-Site) or a DNS-rebinding page's Host.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from linker.config.load import ConfigError, load_config
from linker.process.admin import AdminServer

ROUTERS = "routers:\n- protocol: http\n  dtab: /svc=>/$/inet/127.0.0.1/1;\n"


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[tuple[AdminServer, list[str]]]:
    calls: list[str] = []
    server = AdminServer(
        "127.0.0.1",
        0,
        metrics_dir=str(tmp_path),
        config_json=lambda: {},
        delegate=lambda path, dtab, router: (200, {"path": path}),
        on_shutdown=lambda: calls.append("shutdown"),
        master_stats=lambda: {},
        allowed_hosts=("linker",),
    )
    server.start()
    try:
        yield server, calls
    finally:
        server.stop()


def _call(
    server: AdminServer, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"Host": "evil.example:9990"}, 421, "host-not-allowed"),
        ({"Origin": "https://evil.example"}, 403, "cross-origin"),
        ({"Origin": "http://localhost:8000"}, 403, "cross-origin"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
        ({"Sec-Fetch-Site": "same-site", "Content-Type": "text/plain"}, 403, "cross-site"),
    ],
)
def test_a_web_page_cannot_stop_the_linker(
    admin: tuple[AdminServer, list[str]], headers: dict[str, str], status: int, reason: str
) -> None:
    server, calls = admin
    got, body = _call(server, "POST", "/admin/shutdown", headers, b"x")
    assert got == status
    assert json.loads(body)["reason"] == reason
    assert calls == []


def test_shutdown_from_tools_and_same_origin_pages(admin: tuple[AdminServer, list[str]]) -> None:
    server, calls = admin
    port = server.address[1]
    for headers in (
        {},  # curl -X POST http://127.0.0.1:9990/admin/shutdown
        {"Host": f"localhost:{port}"},
        {"Host": f"linker:{port}"},  # in admin.allowedHosts
        {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"},
        {"Sec-Fetch-Site": "same-origin"},
    ):
        assert _call(server, "POST", "/admin/shutdown", headers)[0] == 200, headers
    assert calls == ["shutdown"] * 5


def test_reads_are_served_to_any_host(admin: tuple[AdminServer, list[str]]) -> None:
    server, _ = admin
    evil = {"Host": "evil.example", "Sec-Fetch-Site": "cross-site"}
    assert _call(server, "GET", "/admin/ping", evil) == (200, b"pong")
    status, body = _call(server, "POST", "/delegator.json", evil, b'{"path": "/svc/a"}')
    assert (status, json.loads(body)) == (200, {"path": "/svc/a"})


def test_admin_allowed_hosts_config(tmp_path: Path) -> None:
    path = tmp_path / "linker.yaml"
    path.write_text(f"admin:\n  allowedHosts: [Linker, '*']\n{ROUTERS}", encoding="utf-8")
    assert load_config(str(path), env={}).admin.allowed_hosts == ("linker", "*")
    path.write_text(ROUTERS, encoding="utf-8")
    assert load_config(str(path), env={}).admin.allowed_hosts == ()
    path.write_text(f"admin:\n  allowedHosts: [linker:9990]\n{ROUTERS}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"admin\.allowedHosts: entry 0 .* without a port"):
        load_config(str(path), env={})
