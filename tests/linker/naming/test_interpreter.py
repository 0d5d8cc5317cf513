"""Interpreters without namerd: the default interpreter (fs + /$/inet), config, pure helpers.

The namerd.http interpreter against a real namerd is in
``tests/integration/test_linker_namerd_client.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path as FsPath
from typing import Any

import pytest
import trio
import trio.testing

from linker.naming.contract import BindFailure, BindTimeout, Destination, InterpreterConfigError
from linker.naming.default import DefaultInterpreter
from linker.naming.interpreter import build_interpreter
from linker.naming.local_namers import Changes, NamerConfigError
from linker.naming.namerd import NamerdHttpInterpreter
from linker.naming.transport import (
    BindError,
    BindValue,
    decode_addr_line,
    decode_bind_line,
    parse_dst,
)
from linker.naming.watches import DEFAULT_FIRST_RETRY_S, DEFAULT_RETRY_BASE_S, DEFAULT_RETRY_MAX_S
from shared import (
    ADDR_NEG,
    AddrBound,
    Address,
    AddrFailed,
    Bound,
    Dtab,
    Leaf,
    Path,
    leaves,
    show_tree,
)
from shared.backoff import backoff_s
from tests.trio_wait import eventually

SVC_USERS = Path.read("/svc/users")
NO_DTAB = Dtab.empty()


@contextlib.asynccontextmanager
async def running(interp: Any) -> AsyncIterator[Any]:
    async with trio.open_nursery() as nursery:
        await nursery.start(interp.run)
        yield interp
        nursery.cancel_scope.cancel()


def endpoints(dest: Destination, id: str) -> set[tuple[str, int]]:
    addr = dest.addrs[Path.read(id)]
    assert isinstance(addr, AddrBound), addr
    return {(a.ip, a.port) for a in addr.addrs}


# -- backoff (shared.backoff with the namerd interpreter's defaults) ----------------------------

_backoff = partial(
    backoff_s,
    first_s=DEFAULT_FIRST_RETRY_S,
    base_s=DEFAULT_RETRY_BASE_S,
    max_s=DEFAULT_RETRY_MAX_S,
)


def test_backoff_schedule_first_quick_then_exponential_to_the_cap() -> None:
    delays = [_backoff(n, first_s=0.2, base_s=5, max_s=600, jitter=1.0) for n in range(0, 12)]
    assert delays == [0.0, 0.2, 5, 10, 20, 40, 80, 160, 320, 600, 600, 600]


def test_backoff_jitter_stays_in_the_upper_half() -> None:
    for n in (1, 2, 5, 40):
        top = _backoff(n, first_s=0.2, base_s=5, max_s=600, jitter=1.0)
        low = _backoff(n, first_s=0.2, base_s=5, max_s=600, jitter=0.0)
        mid = _backoff(n, first_s=0.2, base_s=5, max_s=600, jitter=0.5)
        assert low == top / 2
        assert low < mid < top
    # Out-of-range jitter is clamped rather than trusted.
    assert _backoff(2, base_s=5, jitter=7.0) == 5.0
    assert _backoff(2, base_s=5, jitter=-1.0) == 2.5


def test_backoff_never_overflows_and_respects_a_small_max() -> None:
    assert _backoff(10_000, base_s=5, max_s=600, jitter=1) == 600
    assert _backoff(1, first_s=2, base_s=0.5, max_s=1, jitter=1) == 1
    # Our defaults: 0.5 s base, 5 s max (Linkerd's 5 s / 600 s kept routes stale for minutes).
    assert _backoff(2, jitter=1) == 0.5
    assert _backoff(100, jitter=1) == 5.0


# -- namerd client pure helpers ------------------------------------------------------------------


def test_parse_dst() -> None:
    assert parse_dst("/$/inet/127.0.0.1/4180") == [("127.0.0.1", 4180)]
    assert parse_dst("/$/inet/a/1 | /$/inet/b/2") == [("a", 1), ("b", 2)]
    assert parse_dst(["/$/inet/a/1", "/$/inet/a/1", "/$/fixedinet/c/3"]) == [("a", 1), ("c", 3)]


@pytest.mark.parametrize(
    "bad", ["/#/io.l5d.fs/namerd", "/$/inet/host", "/$/inet/h/0", "/$/inet/h/x", "nope", [], ""]
)
def test_parse_dst_rejects(bad: Any) -> None:
    with pytest.raises(ValueError, match="dst"):
        parse_dst(bad)


def test_decode_bind_lines() -> None:
    line = (
        b'{"type":"leaf","bound":{"addr":{"type":"bound","addrs":[{"ip":"127.0.0.1","port":1,'
        b'"meta":{}}],"meta":{}},"id":"/#/io.l5d.fs/foo","path":"/x"}}'
    )
    value = decode_bind_line(line)
    assert isinstance(value, BindValue)
    assert value.tree == Leaf(Bound(Path.read("/#/io.l5d.fs/foo")))
    assert next(leaves(value.tree)).residual == Path.read("/x")
    assert value.inline_addrs == {
        Path.read("/#/io.l5d.fs/foo"): AddrBound(frozenset({Address("127.0.0.1", 1)}))
    }
    assert decode_bind_line(
        b'{"type":"exception","path":"/svc/a","message":"Max recursion level: 100 reached"}'
    ) == BindError("Max recursion level: 100 reached")
    # Linkerd's namerd writes a plain-text error line, then closes the stream.
    assert decode_bind_line(b"error\n") == BindError("namerd: error")
    bad = decode_bind_line(b'{"type":"leaf"}')
    assert isinstance(bad, BindError)
    assert "cannot read" in bad.message
    assert isinstance(decode_bind_line(b"\xff\xfe"), BindError)


def test_decode_addr_lines() -> None:
    assert decode_addr_line(b'{"type":"neg"}') is ADDR_NEG
    assert decode_addr_line(b'{"type":"failed","cause":"boom"}') == AddrFailed("boom")
    assert decode_addr_line(b'{"type":"bound","addrs":[],"meta":{}}') == AddrBound()
    assert decode_addr_line(b"oops") == AddrFailed("namerd: oops")
    assert isinstance(decode_addr_line(b'{"type":"what"}'), AddrFailed)


# -- build_interpreter ---------------------------------------------------------------------------


def test_build_default_and_namerd() -> None:
    assert isinstance(build_interpreter(None, NO_DTAB, []), DefaultInterpreter)
    assert isinstance(build_interpreter({"kind": "default"}, NO_DTAB, []), DefaultInterpreter)
    interp = build_interpreter(
        {
            "kind": "io.l5d.namerd.http",
            "dst": "/$/inet/127.0.0.1/4180",
            "namespace": "prod",
            "experimental": True,
            "retry": {"baseSeconds": 1, "maxSeconds": 30},
        },
        Dtab.read("/a=>/b"),
        [{"kind": "io.l5d.fs", "rootDir": "/nonexistent"}],  # namers are the default's only
        bind_timeout_s=2.5,
        idle_ttl_s=60,
    )
    assert isinstance(interp, NamerdHttpInterpreter)
    assert interp.client.dst == [("127.0.0.1", 4180)]
    assert interp.client.namespace == "prod"
    assert (interp.client.retry_base_s, interp.client.retry_max_s) == (1.0, 30.0)
    assert interp.client.idle_ttl_s == 60
    assert interp.bind_timeout_s == 2.5
    assert interp.base_dtab == Dtab.read("/a=>/b")
    defaults = build_interpreter({"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1"}, NO_DTAB, [])
    assert isinstance(defaults, NamerdHttpInterpreter)
    assert (defaults.client.retry_base_s, defaults.client.retry_max_s) == (0.5, 5.0)
    assert defaults.client.namespace == "default"


@pytest.mark.parametrize(
    ("config", "namers", "mentions"),
    [
        ({"kind": "io.l5d.mesh"}, [], "io.l5d.mesh"),
        ({"kind": "default", "transformers": []}, [], "transformers"),
        ({"kind": "io.l5d.namerd.http"}, [], "dst is required"),
        ({"kind": "io.l5d.namerd.http", "dst": "/#/namerd"}, [], "/\\$/inet"),
        ({"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1", "tls": {}}, [], "TLS"),
        ({"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1", "nmespace": "x"}, [], "nmespace"),
        ({"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1", "namespace": ""}, [], "namespace"),
        (
            {"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1", "retry": {"baseSeconds": 0}},
            [],
            "baseSeconds",
        ),
        (
            {
                "kind": "io.l5d.namerd.http",
                "dst": "/$/inet/h/1",
                "retry": {"baseSeconds": 10, "maxSeconds": 5},
            },
            [],
            "maxSeconds",
        ),
        (
            {"kind": "io.l5d.namerd.http", "dst": "/$/inet/h/1", "retry": {"base": 1}},
            [],
            "retry.base",
        ),
        (None, [{"kind": "io.l5d.consul"}], "io.l5d.consul"),
        (None, [{"kind": "io.l5d.fs"}], "rootDir"),
        (None, [{"kind": "io.l5d.fs", "rootDir": "/x", "root": 1}], "root"),
        (None, [{"kind": "io.l5d.fs", "rootDir": "/x", "pollIntervalSecs": 0}], "pollInterval"),
        (
            None,
            [{"kind": "io.l5d.fs", "rootDir": "/x"}, {"kind": "io.l5d.fs", "rootDir": "/y"}],
            "prefix",
        ),
    ],
)
def test_build_rejects(config: Any, namers: list[dict[str, Any]], mentions: str) -> None:
    with pytest.raises(InterpreterConfigError, match=mentions):
        build_interpreter(config, NO_DTAB, namers)


# -- default interpreter: io.l5d.fs and numeric /$/inet -------------------------------------------


@pytest.fixture
def disco(tmp_path: FsPath) -> FsPath:
    d = tmp_path / "disco"
    d.mkdir()
    (d / "users").write_text("# the users service\n127.0.0.1 8081\n127.0.0.1 8082 * 0.5\n")
    return d


def default(disco: FsPath, dtab: str = "/svc => /#/io.l5d.fs", **kw: Any) -> DefaultInterpreter:
    namers = [{"kind": "io.l5d.fs", "rootDir": str(disco), "pollIntervalSecs": 0.05}]
    return DefaultInterpreter(Dtab.read(dtab), namers, **kw)


async def test_default_binds_fs_services(disco: FsPath) -> None:
    async with running(default(disco)) as interp:
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        assert dest.tree == Leaf(Bound(Path.read("/#/io.l5d.fs/users")))
        addr = dest.addrs[Path.read("/#/io.l5d.fs/users")]
        assert addr == AddrBound(
            frozenset(
                {
                    Address("127.0.0.1", 8081),
                    Address("127.0.0.1", 8082, {"endpoint_addr_weight": 0.5}),
                }
            )
        )
        assert {a.port: a.meta for a in addr.addrs}[8082] == {"endpoint_addr_weight": 0.5}
        # Nothing changed: the very same cached answer.
        assert await interp.resolve(SVC_USERS, NO_DTAB) is dest
        missing = await interp.resolve(Path.read("/svc/nobody"), NO_DTAB)
        assert show_tree(missing.tree) == "~"
        assert missing.addrs == {}


async def test_default_resolve_now_is_the_cached_current_answer(disco: FsPath) -> None:
    async with running(default(disco)) as interp:
        assert interp.resolve_now(SVC_USERS, NO_DTAB) is None  # not bound yet
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        assert interp.resolve_now(SVC_USERS, NO_DTAB) is dest
        # A change in the namer makes the cached answer stale: no fast answer until rebound.
        (disco / "users").write_text("127.0.0.1 9999\n")

        async def moved() -> bool:
            fresh = await interp.resolve(SVC_USERS, NO_DTAB)
            return endpoints(fresh, "/#/io.l5d.fs/users") == {("127.0.0.1", 9999)}

        await eventually(moved, "the rewritten file")
        fast = interp.resolve_now(SVC_USERS, NO_DTAB)
        assert fast is not None
        assert endpoints(fast, "/#/io.l5d.fs/users") == {("127.0.0.1", 9999)}


async def test_default_namer_prefix(disco: FsPath) -> None:
    namers = [{"kind": "io.l5d.fs", "rootDir": str(disco), "prefix": "/disco"}]
    interp = DefaultInterpreter(Dtab.read("/svc => /#/disco"), namers)
    async with running(interp):
        dest = await interp.resolve(SVC_USERS, NO_DTAB)
        assert list(dest.addrs) == [Path.read("/#/disco/users")]


async def test_default_binds_numeric_inet_and_unions(disco: FsPath) -> None:
    dtab = (
        "/svc => /#/io.l5d.fs;"
        "/svc/web => 3*/$/inet/127.0.0.1/9000 & 1*/$/inet/::1/9001/rest;"
        "/svc/local => /$/inet/7000"
    )
    async with running(default(disco, dtab)) as interp:
        # Numeric addresses need no DNS: answered on the first call, no waiting.
        with trio.fail_after(0.5):
            dest = await interp.resolve(Path.read("/svc/web"), NO_DTAB)
        assert endpoints(dest, "/$/inet/127.0.0.1/9000") == {("127.0.0.1", 9000)}
        assert endpoints(dest, "/$/inet/::1/9001") == {("::1", 9001)}
        weights = {b.id.show(): (b.weight, b.residual.show()) for b in leaves(dest.tree)}
        assert weights == {"/$/inet/127.0.0.1/9000": (3.0, "/"), "/$/inet/::1/9001": (1.0, "/rest")}
        local = await interp.resolve(Path.read("/svc/local"), NO_DTAB)
        assert endpoints(local, "/$/inet/7000") == {("127.0.0.1", 7000)}


async def test_default_picks_up_fs_changes(disco: FsPath) -> None:
    async with running(default(disco)) as interp:
        assert endpoints(await interp.resolve(SVC_USERS, NO_DTAB), "/#/io.l5d.fs/users") == {
            ("127.0.0.1", 8081),
            ("127.0.0.1", 8082),
        }
        # A same-size rewrite right away is still seen (the racy-mtime rule).
        (disco / "users").write_text("# the users service\n127.0.0.1 9081\n127.0.0.1 9082 * 0.5\n")

        async def moved() -> bool:
            dest = await interp.resolve(SVC_USERS, NO_DTAB)
            return endpoints(dest, "/#/io.l5d.fs/users") == {
                ("127.0.0.1", 9081),
                ("127.0.0.1", 9082),
            }

        await eventually(moved, "the rewritten file")
        # A new service appears; an atomic rename-into-place is seen too.
        (disco / ".pay.tmp").write_text("127.0.0.1 7001\n")
        os.replace(disco / ".pay.tmp", disco / "pay")

        async def paid() -> bool:
            return (
                Path.read("/#/io.l5d.fs/pay")
                in (await interp.resolve(Path.read("/svc/pay"), NO_DTAB)).addrs
            )

        await eventually(paid, "the new service")
        # A removed service is gone: the name no longer binds.
        (disco / "pay").unlink()

        async def gone() -> bool:
            return show_tree((await interp.resolve(Path.read("/svc/pay"), NO_DTAB)).tree) == "~"

        await eventually(gone, "the removed service")


async def test_default_bad_file_is_that_services_failure(disco: FsPath) -> None:
    (disco / "broken").write_text("127.0.0.1 8080\n127.0.0.1 notaport\n")
    (disco / "has space").write_text("127.0.0.1 1\n")  # not a label: ignored
    (disco / ".hidden").write_text("127.0.0.1 1\n")
    async with running(default(disco)) as interp:
        dest = await interp.resolve(Path.read("/svc/broken"), NO_DTAB)
        addr = dest.addrs[Path.read("/#/io.l5d.fs/broken")]
        assert isinstance(addr, AddrFailed)
        assert "broken:2" in addr.cause
        assert "notaport" in addr.cause
        assert (await interp.resolve(SVC_USERS, NO_DTAB)).addrs  # the rest still works
        services = interp.state()["namers"][0]["services"]
        assert sorted(services) == ["broken", "users"]


async def test_default_local_dtab_and_base_not_doubled(disco: FsPath) -> None:
    base = "/svc => /#/io.l5d.fs"
    async with running(default(disco, base)) as interp:
        override = Dtab.read("/svc/users => /$/inet/127.0.0.1/7777")
        full = Dtab.read(base) + override
        dest = await interp.resolve(SVC_USERS, full)
        assert list(dest.addrs) == [Path.read("/$/inet/127.0.0.1/7777")]
        # Passing just the override is the same binding (one cache entry).
        assert await interp.resolve(SVC_USERS, override) is dest
        assert [b["dtab"] for b in interp.state()["bindings"]] == [full.show()]


async def test_default_binding_failures(disco: FsPath) -> None:
    async with running(default(disco, "/svc => /svc/again; /svc/x => /$/nope")) as interp:
        with pytest.raises(BindFailure, match="Max recursion level"):
            await interp.resolve(SVC_USERS, NO_DTAB)
        with pytest.raises(BindFailure, match="Unknown namer: nope"):
            await interp.resolve(Path.read("/svc/x"), Dtab.read("/svc/x => /$/nope"))
        fail = await interp.resolve(SVC_USERS, Dtab.read("/svc/users => !"))
        assert show_tree(fail.tree) == "!"


async def test_default_missing_root_dir_fails_at_start(tmp_path: FsPath) -> None:
    interp = default(tmp_path / "missing")
    with pytest.raises(NamerConfigError, match=r"rootDir .*missing.* cannot be listed"):
        await interp.run()


# -- DNS names and timing (virtual clock) -------------------------------------------------------


class FakeDns:
    """A getaddrinfo stand-in: answers from a dict, can hang or fail, counts calls."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | BaseException | None] = {}
        self.calls: list[str] = []
        self.delay_s = 0.0

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        self.calls.append(host)
        await trio.sleep(self.delay_s)
        answer = self.answers.get(host)
        if answer is None:
            await trio.sleep_forever()
        if isinstance(answer, BaseException):
            raise answer
        assert isinstance(answer, list)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answer]


def dns_interp(dns: FakeDns, dtab: str, **kw: Any) -> DefaultInterpreter:
    kw.setdefault("bind_timeout_s", 10.0)
    kw.setdefault("inet_refresh_interval_s", 5.0)
    return DefaultInterpreter(Dtab.read(dtab), [], getaddrinfo=dns, **kw)


async def test_dns_name_is_resolved_then_refreshed(autojump_clock: trio.testing.MockClock) -> None:
    dns = FakeDns()
    dns.answers["users.internal"] = ["10.0.0.1"]
    path = Path.read("/svc/users")
    async with running(dns_interp(dns, "/svc => /$/inet/users.internal/80")) as interp:
        dest = await interp.resolve(path, NO_DTAB)
        assert endpoints(dest, "/$/inet/users.internal/80") == {("10.0.0.1", 80)}
        dns.answers["users.internal"] = ["10.0.0.2", "10.0.0.3"]
        await trio.sleep(5.5)  # one refresh interval
        dest = await interp.resolve(path, NO_DTAB)
        assert endpoints(dest, "/$/inet/users.internal/80") == {("10.0.0.2", 80), ("10.0.0.3", 80)}
        # A transient DNS failure keeps the last good answer.
        dns.answers["users.internal"] = socket.gaierror(socket.EAI_AGAIN, "try again")
        await trio.sleep(5.5)
        dest = await interp.resolve(path, NO_DTAB)
        assert endpoints(dest, "/$/inet/users.internal/80") == {("10.0.0.2", 80), ("10.0.0.3", 80)}
        # A name that no longer exists fails, saying so.
        dns.answers["users.internal"] = socket.gaierror(socket.EAI_NONAME, "Name unknown")
        await trio.sleep(5.5)
        dest = await interp.resolve(path, NO_DTAB)
        addr = dest.addrs[Path.read("/$/inet/users.internal/80")]
        assert isinstance(addr, AddrFailed)
        assert "not found" in addr.cause


async def test_fixedinet_is_resolved_once(autojump_clock: trio.testing.MockClock) -> None:
    dns = FakeDns()
    dns.answers["db"] = ["10.1.1.1"]
    async with running(dns_interp(dns, "/svc => /$/fixedinet/db/5432")) as interp:
        dest = await interp.resolve(Path.read("/svc/db"), NO_DTAB)
        assert endpoints(dest, "/$/fixedinet/db/5432") == {("10.1.1.1", 5432)}
        dns.answers["db"] = ["10.9.9.9"]
        for _ in range(4):
            await trio.sleep(5.5)
            await interp.resolve(Path.read("/svc/db"), NO_DTAB)
        assert dns.calls == ["db"]


async def test_invalid_or_crashing_dns_fails_the_name_not_the_resolver(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dns = FakeDns()
    dns.answers["a..b"] = UnicodeError("label empty or too long")  # what idna raises
    dns.answers["boom"] = RuntimeError("a bug in getaddrinfo")
    dns.answers["ok"] = ["10.0.0.1"]
    dtab = "/svc/bad => /$/inet/a..b/80; /svc/boom => /$/inet/boom/80; /svc/ok => /$/inet/ok/80"
    async with running(dns_interp(dns, dtab, bind_timeout_s=2.0)) as interp:
        dest = await interp.resolve(Path.read("/svc/bad"), NO_DTAB)
        addr = dest.addrs[Path.read("/$/inet/a..b/80")]
        assert addr == AddrFailed("invalid host name 'a..b': label empty or too long")
        # A crash fails that name, is retried every interval, and leaves the others alone.
        dest = await interp.resolve(Path.read("/svc/boom"), NO_DTAB)
        addr = dest.addrs[Path.read("/$/inet/boom/80")]
        assert addr == AddrFailed(
            "resolving host 'boom' failed: RuntimeError('a bug in getaddrinfo')"
        )
        await trio.sleep(5.5)
        assert dns.calls.count("boom") == 2
        dest = await interp.resolve(Path.read("/svc/ok"), NO_DTAB)
        assert endpoints(dest, "/$/inet/ok/80") == {("10.0.0.1", 80)}


async def test_dns_that_never_answers_times_out(autojump_clock: trio.testing.MockClock) -> None:
    dns = FakeDns()  # no answers: hangs (the resolve timeout is 10 s, the bind timeout 2 s)
    interp = dns_interp(dns, "/svc => /$/inet/slow.internal/80", bind_timeout_s=2.0)
    async with running(interp):
        started = trio.current_time()
        with pytest.raises(BindTimeout, match=re.escape("/$/inet/slow.internal/80")) as caught:
            await interp.resolve(Path.read("/svc/x"), NO_DTAB)
        assert trio.current_time() - started == pytest.approx(2.0)
        assert "DNS" in str(caught.value)


async def test_idle_dns_names_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    dns = FakeDns()
    dns.answers["a"] = ["10.0.0.1"]
    interp = dns_interp(dns, "/svc => /$/inet/a/1", idle_ttl_s=60.0)
    async with running(interp):
        await interp.resolve(Path.read("/svc/a"), NO_DTAB)
        assert len(interp.state()["inet"]["entries"]) == 1
        await trio.sleep(120)
        assert interp.state()["inet"]["entries"] == []
        assert interp.state()["cached"] == 0
        # Asked again: resolved afresh.
        await interp.resolve(Path.read("/svc/a"), NO_DTAB)
        assert dns.calls.count("a") >= 2


async def test_dns_names_in_use_are_kept(autojump_clock: trio.testing.MockClock) -> None:
    # The answer is cached, yet the DNS entry behind it must not look idle while it is used.
    dns = FakeDns()
    dns.answers["a"] = ["10.0.0.1"]
    dns.delay_s = 0.5
    interp = dns_interp(dns, "/svc => /$/inet/a/1", idle_ttl_s=60.0)
    async with running(interp):
        await interp.resolve(Path.read("/svc/a"), NO_DTAB)
        for _ in range(60):
            await trio.sleep(3)
            with trio.fail_after(0.001):  # never waits for DNS again
                await interp.resolve(Path.read("/svc/a"), NO_DTAB)
        assert len(interp.state()["inet"]["entries"]) == 1


async def test_resolve_before_run_times_out(autojump_clock: trio.testing.MockClock) -> None:
    interp = dns_interp(FakeDns(), "/svc => /$/inet/127.0.0.1/1", bind_timeout_s=1.0)
    with pytest.raises(BindTimeout, match="not running"):
        await interp.resolve(SVC_USERS, NO_DTAB)
    namerd = NamerdHttpInterpreter([("127.0.0.1", 1)], bind_timeout_s=1.0)
    with pytest.raises(BindTimeout, match="not running"):
        await namerd.resolve(SVC_USERS, NO_DTAB)


async def test_changes_wakes_waiters(autojump_clock: trio.testing.MockClock) -> None:
    changes = Changes()
    woke: list[float] = []

    async def waiter() -> None:
        await changes.wait_changed(changes.generation)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(waiter)
        await trio.sleep(7)
        changes.notify()
    assert woke == [7.0, 7.0, 7.0]
    # Already changed since the given generation: returns at once.
    with trio.fail_after(0.001):
        await changes.wait_changed(changes.generation - 1)
