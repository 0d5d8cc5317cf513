"""Hostile input to namerd's API: every client error is a 4xx with a body, never a 500.

One table of requests a probe sent (raw values where a client library would refuse them),
each answered with its expected status and an explanation. Registry errors are JSON objects
(the registry is ours); namerd's own routes keep namerd's plain-text bodies. Nothing may log a
traceback: a traceback means the input reached code that did not expect it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from .conftest import Serve

pytestmark = pytest.mark.redis

TOKEN = "s3cret"
CONFIG = f"auth:\n  token: {TOKEN}\nnamers:\n- kind: io.l5d.registry\n"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
DTAB = {"Content-Type": "application/dtab"}
REG = "/api/1/registry"


@dataclass(frozen=True)
class Hostile:
    name: str
    method: str
    url: str
    status: int
    headers: dict[str, str] | list[tuple[bytes, bytes]] = field(default_factory=dict)
    content: bytes | str | None = None


def _raw(*pairs: tuple[str, bytes]) -> list[tuple[bytes, bytes]]:
    """Headers as raw bytes (httpx would refuse to encode some of these values)."""
    return [(k.encode(), v) for k, v in pairs]


def _register(host: str, port: object = 8080, **extra: str) -> str:
    # Built by hand: json.dumps would refuse NaN, and some cases need raw JSON.
    fields = [f'"host": "{host}"', f'"port": {port}', *(f'"{k}": {v}' for k, v in extra.items())]
    return "{" + ", ".join(fields) + "}"


NESTED = "[" * 100_000 + "]" * 100_000

CASES = [
    # Dtab writes.
    Hostile("nested JSON dtab", "PUT", "/api/1/dtabs/x", 400, {**AUTH, **JSON}, NESTED),
    Hostile("nested JSON create", "POST", "/api/1/dtabs/x", 400, {**AUTH, **JSON}, NESTED),
    Hostile("nested JSON delegate", "POST", "/api/1/delegate", 400, JSON, NESTED),
    Hostile(
        "text/plain dtab write",
        "PUT",
        "/api/1/dtabs/x",
        415,
        {**AUTH, "Content-Type": "text/plain"},
        "/a=>/b",
    ),
    Hostile("no Content-Type", "PUT", "/api/1/dtabs/x", 415, AUTH, "/a=>/b"),
    Hostile(
        "form dtab write",
        "POST",
        "/api/1/dtabs/x",
        415,
        {**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        "a=b",
    ),
    Hostile("dtab not UTF-8", "PUT", "/api/1/dtabs/x", 400, {**AUTH, **DTAB}, b"/a=>/\xff"),
    # Authorization headers.
    Hostile(
        "non-ASCII token",
        "PUT",
        "/api/1/dtabs/x",
        401,
        _raw(("Authorization", "Bearer sécret".encode()), ("Content-Type", b"application/dtab")),
        "/a=>/b",
    ),
    Hostile(
        "latin-1 token",
        "PUT",
        "/api/1/dtabs/x",
        401,
        _raw(("Authorization", b"Bearer \xff\xfe"), ("Content-Type", b"application/dtab")),
        "/a=>/b",
    ),
    Hostile("bearer without token", "DELETE", "/api/1/dtabs/x", 401, {"Authorization": "Bearer"}),
    Hostile("basic auth", "DELETE", "/api/1/dtabs/x", 401, {"Authorization": "Basic czNjcmV0"}),
    Hostile("token prefix", "DELETE", "/api/1/dtabs/x", 401, {"Authorization": "Bearer s3cre"}),
    # Registry: hosts.
    Hostile("host name", "POST", f"{REG}/web", 400, {**AUTH, **JSON}, _register("evil.example")),
    Hostile("localhost", "POST", f"{REG}/web", 400, {**AUTH, **JSON}, _register("localhost")),
    Hostile(
        "CRLF in host", "POST", f"{REG}/web", 400, {**AUTH, **JSON}, _register("1.2.3.4\\r\\nx")
    ),
    Hostile("leading zeros", "POST", f"{REG}/web", 400, {**AUTH, **JSON}, _register("01.02.03.04")),
    Hostile("zone id", "POST", f"{REG}/web", 400, {**AUTH, **JSON}, _register("fe80::1%eth0")),
    Hostile("heartbeat of a name", "PUT", f"{REG}/web/evil.example/80", 400, AUTH),
    Hostile("deregister CRLF", "DELETE", f"{REG}/web/1.2.3.4%0D%0Ax/80", 400, AUTH),
    Hostile("non-ASCII digits port", "DELETE", f"{REG}/web/10.0.0.1/%D9%A1%D9%A2", 400, AUTH),
    # Registry: TTLs and meta.
    Hostile("ttl=nan", "PUT", f"{REG}/web/10.0.0.1/80?ttlSeconds=nan", 400, AUTH),
    Hostile("ttl=inf", "PUT", f"{REG}/web/10.0.0.1/80?ttlSeconds=inf", 400, AUTH),
    Hostile("ttl<0", "PUT", f"{REG}/web/10.0.0.1/80?ttlSeconds=-5", 400, AUTH),
    Hostile(
        "ttl NaN body",
        "POST",
        f"{REG}/web",
        400,
        {**AUTH, **JSON},
        _register("10.0.0.1", ttlSeconds="NaN"),
    ),
    Hostile(
        "nested meta",
        "POST",
        f"{REG}/web",
        400,
        {**AUTH, **JSON},
        _register("10.0.0.1", meta='{"a": {"b": 1}}'),
    ),
    Hostile(
        "NaN in meta",
        "POST",
        f"{REG}/web",
        400,
        {**AUTH, **JSON},
        _register("10.0.0.1", meta='{"a": NaN}'),
    ),
    Hostile(
        "deeply nested meta",
        "POST",
        f"{REG}/web",
        400,
        {**AUTH, **JSON},
        _register("10.0.0.1", meta="[" * 50_000 + "]" * 50_000),
    ),
    Hostile(
        "registration as text",
        "POST",
        f"{REG}/web",
        415,
        {**AUTH, "Content-Type": "text/plain"},
        _register("10.0.0.1"),
    ),
    # Registry: service names.
    Hostile(
        "non-ASCII service", "POST", f"{REG}/%C3%A9", 400, {**AUTH, **JSON}, _register("10.0.0.1")
    ),
    Hostile("NUL in service", "POST", f"{REG}/x%00y", 400, {**AUTH, **JSON}, _register("10.0.0.1")),
    Hostile("space in service", "PUT", f"{REG}/a%20b/10.0.0.1/80", 400, AUTH),
    Hostile("read non-ASCII service", "GET", f"{REG}/%C3%A9", 400),
    Hostile("read NUL service", "GET", f"{REG}/x%00y", 400),
    # The address policy (defaults): 403.
    Hostile(
        "metadata service",
        "POST",
        f"{REG}/web",
        403,
        {**AUTH, **JSON},
        _register("169.254.169.254", 80),
    ),
    Hostile(
        "redis next door", "POST", f"{REG}/web", 403, {**AUTH, **JSON}, _register("127.0.0.1", 6379)
    ),
    Hostile(
        "mapped loopback",
        "POST",
        f"{REG}/web",
        403,
        {**AUTH, **JSON},
        _register("::ffff:127.0.0.1", 6379),
    ),
    Hostile("unspecified", "POST", f"{REG}/web", 403, {**AUTH, **JSON}, _register("0.0.0.0")),
    Hostile("multicast", "POST", f"{REG}/web", 403, {**AUTH, **JSON}, _register("ff02::1")),
    # Browser-borne writes.
    Hostile(
        "DNS rebinding",
        "PUT",
        "/api/1/dtabs/x",
        421,
        {**AUTH, **DTAB, "Host": "evil.example"},
        "/a=>/b",
    ),
    Hostile("cross-site", "DELETE", "/api/1/dtabs/x", 403, {"Sec-Fetch-Site": "cross-site"}),
    Hostile(
        "cross-origin",
        "POST",
        f"{REG}/web",
        403,
        {**JSON, "Origin": "https://evil.example"},
        _register("10.0.0.1"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_a_4xx_with_a_body(
    serve: Serve, case: Hostile, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with serve(CONFIG) as api:
            r = await api.request(case.method, case.url, headers=case.headers, content=case.content)
            assert r.status_code == case.status, r.text
            if case.url.startswith(REG):
                assert r.headers["content-type"] == "application/json"
                body = r.json()
                assert body["status"] == case.status
                assert body["error"]
            else:
                assert r.headers["content-type"].startswith("text/plain")
                assert r.text.strip()
            if case.status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
            # Nothing was stored.
            assert (await api.get("/api/1/dtabs")).json() == []
            assert (await api.get(REG)).json() == []

    caplog.set_level(logging.WARNING)
    asyncio.run(scenario())
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
