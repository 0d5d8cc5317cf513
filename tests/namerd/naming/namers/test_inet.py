"""InetResolver with real getaddrinfo on numeric IPs and loopback names only (no network).

To make a name's answer *change*, a test points it at another real loopback address through
the resolver's ``getaddrinfo`` parameter (an alias table in front of the real resolver),
instead of editing ``/etc/hosts``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from namerd.naming.namers import InetResolver, Notifier
from shared import ADDR_NEG, ADDR_PENDING, AddrBound, Address, AddrFailed, Path

from . import changed, eventually

# Small intervals keep the tests fast; waits are bounded by WAIT_S and never timed.
REFRESH_INTERVAL_S = 0.02


def _one(ip: str, port: int) -> AddrBound:
    return AddrBound(frozenset({Address(ip, port)}))


class Aliases:
    """A getaddrinfo that resolves ``aliases[host]`` (a real loopback name or IP) instead."""

    def __init__(self, **aliases: str) -> None:
        self.aliases = dict(aliases)
        self.failure: socket.gaierror | None = None

    async def __call__(self, host: str, port: int) -> list[tuple[Any, ...]]:
        if self.failure is not None:
            raise self.failure
        loop = asyncio.get_running_loop()
        target = self.aliases.get(host, host)
        return await loop.getaddrinfo(target, port, type=socket.SOCK_STREAM)


def test_numeric_hosts_need_no_dns() -> None:
    async def main() -> None:
        notifier = Notifier()
        resolver = InetResolver(notifier)
        await resolver.start()
        try:
            assert resolver.addr(Path.read("/$/inet/127.0.0.1/8080")) == _one("127.0.0.1", 8080)
            assert resolver.addr(Path.read("/$/fixedinet/10.1.2.3/80")) == _one("10.1.2.3", 80)
            assert resolver.addr(Path.read("/$/inet/::1/443")) == _one("::1", 443)
            assert resolver.addr(Path.read("/$/inet/0::1/443")) == _one("::1", 443)
            # No host: the local host, as the brief and Linkerd's local-port form say.
            assert resolver.addr(Path.read("/$/inet/4140")) == _one("127.0.0.1", 4140)
            assert resolver.cached() == {}
            assert notifier.generation == 0
        finally:
            await resolver.close()

    asyncio.run(main())


def test_non_inet_and_malformed_ids() -> None:
    async def main() -> None:
        resolver = InetResolver(Notifier())
        try:
            assert resolver.addr(Path.read("/#/io.l5d.fs/users")) is ADDR_NEG
            assert resolver.addr(Path.read("/$/nil")) is ADDR_NEG
            assert resolver.addr(Path.read("/$/inet")) is ADDR_NEG
            assert resolver.addr(Path.read("/$/inet/a/b/c/d")) is ADDR_NEG
            bad = resolver.addr(Path.read("/$/inet/localhost/http"))
            assert bad == AddrFailed("invalid port in /$/inet/localhost/http: expected 0-65535")
            assert isinstance(resolver.addr(Path.read("/$/inet/localhost/70000")), AddrFailed)
        finally:
            await resolver.close()

    asyncio.run(main())


def test_localhost_pending_then_bound_and_notified() -> None:
    async def main() -> None:
        notifier = Notifier()
        resolver = InetResolver(notifier)
        try:
            id_ = Path.read("/$/inet/localhost/8080")
            assert resolver.addr(id_) is ADDR_PENDING
            await changed(notifier, 0)
            addr = resolver.addr(id_)
            assert isinstance(addr, AddrBound)
            assert Address("127.0.0.1", 8080) in addr.addrs
            assert all(a.port == 8080 for a in addr.addrs)
            assert resolver.cached() == {"localhost:8080": addr}
        finally:
            await resolver.close()
        # After close, every entry is gone and new asks fail plainly.
        assert resolver.cached() == {}
        assert resolver.addr(Path.read("/$/inet/localhost/1")) == AddrFailed(
            "the inet resolver is closed"
        )

    asyncio.run(main())


def test_unresolvable_name_fails_with_cause() -> None:
    async def main() -> None:
        notifier = Notifier()
        resolver = InetResolver(notifier)
        try:
            # An empty DNS label: refused before any query, so no network is involved.
            id_ = Path.read("/$/inet/a..b/80")
            assert resolver.addr(id_) is ADDR_PENDING
            await changed(notifier, 0)
            failed = resolver.addr(id_)
            assert isinstance(failed, AddrFailed)
            assert failed.cause.startswith("invalid host name 'a..b': ")
        finally:
            await resolver.close()

    asyncio.run(main())


def test_refresh_notifies_on_change_and_fixedinet_never_refreshes() -> None:
    async def main() -> None:
        notifier = Notifier()
        aliases = Aliases(**{"svc.test": "127.0.0.1"})
        resolver = InetResolver(
            notifier, refresh_interval_s=REFRESH_INTERVAL_S, getaddrinfo=aliases
        )
        inet, fixed = Path.read("/$/inet/svc.test/80"), Path.read("/$/fixedinet/svc.test/80")
        try:
            assert resolver.addr(inet) is ADDR_PENDING
            assert resolver.addr(fixed) is ADDR_PENDING
            await eventually(
                lambda: resolver.addr(inet) == resolver.addr(fixed) == _one("127.0.0.1", 80),
                "both to resolve",
            )

            # Unchanged answers do not notify: let three refreshes pass.
            gen = notifier.generation
            runs = resolver.resolutions("svc.test", 80)
            await eventually(lambda: resolver.resolutions("svc.test", 80) >= runs + 3, "refreshes")
            assert notifier.generation == gen

            # The name now points elsewhere: the inet entry follows and notifies.
            aliases.aliases["svc.test"] = "127.0.0.2"
            await changed(notifier, gen)
            await eventually(lambda: resolver.addr(inet) == _one("127.0.0.2", 80), "the change")

            # Meanwhile the fixedinet entry was resolved once and kept its first answer.
            runs = resolver.resolutions("svc.test", 80)
            await eventually(lambda: resolver.resolutions("svc.test", 80) >= runs + 3, "refreshes")
            assert resolver.addr(fixed) == _one("127.0.0.1", 80)
            assert resolver.resolutions("svc.test", 80, fixed=True) == 1
        finally:
            await resolver.close()

    asyncio.run(main())


def test_transient_failure_keeps_last_good_answer_but_a_gone_name_fails() -> None:
    async def main() -> None:
        notifier = Notifier()
        aliases = Aliases()
        resolver = InetResolver(
            notifier, refresh_interval_s=REFRESH_INTERVAL_S, getaddrinfo=aliases
        )
        id_ = Path.read("/$/inet/localhost/80")
        try:
            resolver.addr(id_)
            await eventually(lambda: isinstance(resolver.addr(id_), AddrBound), "localhost")
            good = resolver.addr(id_)

            # DNS is unwell (EAI_AGAIN): keep routing to the last good addresses.
            aliases.failure = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
            runs = resolver.resolutions("localhost", 80)
            await eventually(lambda: resolver.resolutions("localhost", 80) >= runs + 2, "retries")
            assert resolver.addr(id_) == good

            # The name is gone (EAI_NONAME): that is an answer, and it replaces the old one.
            aliases.failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            await eventually(lambda: isinstance(resolver.addr(id_), AddrFailed), "the failure")
            failed = resolver.addr(id_)
            assert isinstance(failed, AddrFailed)
            assert "host 'localhost' not found: Name or service not known" in failed.cause
        finally:
            await resolver.close()

    asyncio.run(main())


def test_idle_entries_are_evicted_and_notified() -> None:
    async def main() -> None:
        notifier = Notifier()
        resolver = InetResolver(notifier, refresh_interval_s=REFRESH_INTERVAL_S, idle_ttl_s=0.1)
        id_ = Path.read("/$/fixedinet/localhost/80")
        try:
            resolver.addr(id_)
            await changed(notifier, 0)
            gen = notifier.generation
            assert resolver.cached() != {}
            # Nobody asks any more: the entry goes, and watchers are told so they can ask.
            await eventually(lambda: resolver.cached() == {}, "eviction")
            assert notifier.generation > gen
            assert resolver.addr(id_) is ADDR_PENDING  # a fresh resolution starts
        finally:
            await resolver.close()

    asyncio.run(main())
