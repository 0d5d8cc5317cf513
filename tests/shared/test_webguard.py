"""shared.webguard: the one rule deciding whether a browser may have sent a write."""

from __future__ import annotations

import pytest

from shared.webguard import check_write, parse_allowed_hosts, split_authority


def _status(
    method: str = "POST",
    host: str | None = "localhost:4180",
    origin: str | None = None,
    site: str | None = None,
    ctype: str | None = "application/json",
    allowed: tuple[str, ...] = (),
    simple: bool = True,
) -> int:
    refusal = check_write(
        method, host, origin, site, ctype, allowed_hosts=allowed, refuse_simple_bodies=simple
    )
    return 0 if refusal is None else refusal.status


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        # Clients that are not browsers: only Host matters.
        ({}, 0),
        ({"host": "127.0.0.1:4180"}, 0),
        ({"host": "[::1]:4180"}, 0),
        ({"host": "10.1.2.3"}, 0),  # an IP literal cannot be a rebinding name
        ({"host": "LOCALHOST.:80"}, 0),
        ({"host": None}, 0),  # HTTP/1.0 without Host: not a browser
        ({"host": "evil.example:4180"}, 421),
        ({"host": "namerd:4180"}, 421),
        ({"host": "namerd:4180", "allowed": ("namerd",)}, 0),
        ({"host": "NAMERD", "allowed": ("namerd.",)}, 0),
        ({"host": "evil.example", "allowed": ("*",)}, 0),
        ({"host": "01.02.03.04"}, 421),  # not an IP literal: a name
        ({"host": "a b"}, 421),
        ({"host": "::1"}, 421),  # IPv6 needs brackets in Host
        ({"host": "localhost:99999"}, 421),
        ({"host": "user@localhost"}, 421),
        # Reads are never judged.
        ({"method": "GET", "host": "evil.example", "site": "cross-site"}, 0),
        ({"method": "HEAD", "origin": "null"}, 0),
        # Browsers.
        ({"site": "cross-site"}, 403),
        ({"site": "same-site"}, 403),  # another port of localhost is the same site
        ({"site": "same-origin"}, 0),
        ({"site": "none"}, 0),
        ({"origin": "http://localhost:4180"}, 0),
        ({"origin": "http://localhost:8000"}, 403),
        ({"origin": "https://evil.example"}, 403),
        ({"origin": "null"}, 403),
        ({"origin": "http://localhost", "host": "localhost:80"}, 0),  # default port
        (
            {
                "origin": "https://namerd.example",
                "host": "namerd.example",
                "allowed": ("namerd.example",),
            },
            0,
        ),
        ({"origin": "http://[::1]:4180", "host": "[::1]:4180"}, 0),
        ({"origin": "chrome-extension://abc"}, 403),
        ({"origin": "http://localhost:4180", "host": None}, 403),
        # Content types a page can send without a preflight.
        ({"ctype": "text/plain"}, 415),
        ({"ctype": "Text/Plain; charset=utf-8"}, 415),
        ({"ctype": "application/x-www-form-urlencoded"}, 415),
        ({"ctype": "multipart/form-data; boundary=x"}, 415),
        ({"ctype": "text/plain", "simple": False}, 0),
        ({"method": "DELETE", "ctype": "text/plain"}, 0),  # no body to judge
        ({"ctype": "application/dtab"}, 0),
        ({"ctype": None}, 0),  # endpoints that take a body check their own types
    ],
)
def test_check_write(kwargs: dict[str, object], status: int) -> None:
    assert _status(**kwargs) == status  # type: ignore[arg-type]


def test_refusals_say_what_to_change() -> None:
    refusal = check_write(
        "POST", "namerd:4180", None, None, None, allowed_hosts_key="admin.allowedHosts"
    )
    assert refusal is not None
    assert refusal.code == "host-not-allowed"
    assert "admin.allowedHosts" in refusal.reason


def test_split_authority() -> None:
    assert split_authority("Example.COM:8080") == ("example.com", 8080)
    assert split_authority("[::1]") == ("::1", None)
    assert split_authority("[::1]x") is None
    assert split_authority("") is None
    assert split_authority("é") is None


def test_parse_allowed_hosts() -> None:
    assert parse_allowed_hosts(["Namerd", "*", "a.example."]) == ("namerd", "*", "a.example")
    with pytest.raises(ValueError, match="without a port"):
        parse_allowed_hosts(["namerd:4180"])
    with pytest.raises(ValueError, match="list"):
        parse_allowed_hosts("namerd")
    with pytest.raises(ValueError, match="entry 0"):
        parse_allowed_hosts([4180])
