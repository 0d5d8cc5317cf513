"""namerd's io.l5d.fs on real temporary directories: lookups, live edits, errors, DNS.

The file format and the directory rules are ``shared.fsformat``'s (tests/shared/test_fsformat.py);
these tests cover the asyncio namer around them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path as FsPath

import pytest

from namerd.naming.namers import FsNamer, NamerConfigError, Notifier
from shared import (
    ADDR_NEG,
    ADDR_PENDING,
    NEG,
    AddrBound,
    Address,
    AddrFailed,
    Bound,
    Leaf,
    Path,
)
from shared.addr import WEIGHT_META_KEY

from . import changed, eventually, write_file

# Fast polling keeps the live-edit tests quick; every wait is still bounded by WAIT_S.
POLL_INTERVAL_S = 0.02

PREFIX = Path.read("/#/io.l5d.fs")


def _id(service: str) -> Path:
    return PREFIX + Path(service)


def _namer(root: FsPath, notifier: Notifier) -> FsNamer:
    return FsNamer(PREFIX, notifier, root_dir=root, poll_interval_s=POLL_INTERVAL_S)


# -- lookups and addresses ---------------------------------------------------------------------


def test_lookup_addr_weights_and_enumerate(tmp_path: FsPath) -> None:
    (tmp_path / "users").write_text("# users\n10.0.0.1 8080\n10.0.0.2 8080 * 0.5\n")
    (tmp_path / "empty").write_text("# nothing yet\n")
    (tmp_path / "v6").write_text("::1 9000\n")

    async def main() -> None:
        namer = _namer(tmp_path, Notifier())
        await namer.start()
        try:
            assert namer.lookup(Path.read("/users/rest/of/it")) == Leaf(
                Bound(_id("users"), Path.read("/rest/of/it"))
            )
            bound = namer.lookup(Path.read("/users"))
            assert isinstance(bound, Leaf)
            assert isinstance(bound.value, Bound)
            assert bound.value.residual == Path()
            assert namer.lookup(Path.read("/nope")) is NEG
            assert namer.lookup(Path()) is NEG

            users = namer.addr(_id("users"))
            assert isinstance(users, AddrBound)
            assert users.sorted_addrs() == [
                Address("10.0.0.1", 8080),
                Address("10.0.0.2", 8080, {WEIGHT_META_KEY: 0.5}),
            ]
            # Linkerd's key, spelled out.
            assert users.sorted_addrs()[1].meta == {"endpoint_addr_weight": 0.5}
            assert namer.addr(_id("empty")) == AddrBound()
            assert namer.addr(_id("v6")) == AddrBound(frozenset({Address("::1", 9000)}))

            assert namer.addr(_id("nope")) is ADDR_NEG
            assert namer.addr(Path.read("/#/other/users")) is ADDR_NEG
            assert namer.addr(_id("users") + Path("extra")) is ADDR_NEG
            assert namer.enumerate() == [_id("empty"), _id("users"), _id("v6")]
        finally:
            await namer.close()
            await namer.close()  # idempotent

    asyncio.run(main())


def test_custom_prefix(tmp_path: FsPath) -> None:
    (tmp_path / "web").write_text("10.0.0.1 80\n")

    async def main() -> None:
        prefix = Path.read("/#/disco")
        namer = FsNamer(prefix, Notifier(), root_dir=tmp_path)
        await namer.start()
        try:
            assert namer.lookup(Path.read("/web")) == Leaf(Bound(Path.read("/#/disco/web")))
            assert isinstance(namer.addr(Path.read("/#/disco/web")), AddrBound)
            assert namer.addr(_id("web")) is ADDR_NEG
        finally:
            await namer.close()

    asyncio.run(main())


# -- watching ----------------------------------------------------------------------------------


def test_live_add_edit_remove_notifies(tmp_path: FsPath) -> None:
    async def main() -> None:
        notifier = Notifier()
        namer = _namer(tmp_path, notifier)
        await namer.start()
        try:
            assert namer.enumerate() == []

            gen = notifier.generation
            write_file(tmp_path / "users", "10.0.0.1 8080\n")
            gen = await changed(notifier, gen)
            assert namer.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))
            assert namer.addr(_id("users")) == AddrBound(frozenset({Address("10.0.0.1", 8080)}))

            # An in-place edit of the same size and inode: only the mtime (or, on a file
            # system with coarse mtimes, the racy re-read) shows it. A poll may catch the
            # file half-written, so wait for the final answer rather than one notification.
            (tmp_path / "users").write_text("10.0.0.2 8080\n")
            want = AddrBound(frozenset({Address("10.0.0.2", 8080)}))
            await eventually(lambda: namer.addr(_id("users")) == want, "the in-place edit")
            assert notifier.generation > gen
            gen = notifier.generation

            with (tmp_path / "users").open("a") as f:
                f.write("10.0.0.3 8080 * 2\n")
            weighted = Address("10.0.0.3", 8080, {WEIGHT_META_KEY: 2.0})
            await eventually(
                lambda: weighted in getattr(namer.addr(_id("users")), "addrs", ()),
                "the appended endpoint",
            )
            assert notifier.generation > gen
            gen = notifier.generation

            (tmp_path / "users").unlink()
            gen = await changed(notifier, gen)
            assert namer.lookup(Path.read("/users")) is NEG
            assert namer.addr(_id("users")) is ADDR_NEG
            assert namer.enumerate() == []
        finally:
            await namer.close()

    asyncio.run(main())


def test_touch_or_comment_edit_does_not_notify(tmp_path: FsPath) -> None:
    """Only a change of the parsed service notifies; the marker file proves polls ran."""
    (tmp_path / "users").write_text("10.0.0.1 8080\n")

    async def main() -> None:
        notifier = Notifier()
        namer = _namer(tmp_path, notifier)
        await namer.start()
        try:
            gen = notifier.generation
            write_file(tmp_path / "users", "# edited comment\n10.0.0.1 8080\n")
            os.utime(tmp_path / "users")
            # A later, real change: a poll that sees it sees the edit above too.
            write_file(tmp_path / "marker", "")
            await eventually(lambda: b"marker" in namer._dir.services, "the marker file")
            assert notifier.generation == gen + 1  # the marker only
        finally:
            await namer.close()

    asyncio.run(main())


def test_bad_line_fails_only_that_service(tmp_path: FsPath) -> None:
    (tmp_path / "good").write_text("10.0.0.1 80\n")
    (tmp_path / "users").write_text("10.0.0.1 8080\n\n10.0.0.2 eighty\n")

    async def main() -> None:
        notifier = Notifier()
        namer = _namer(tmp_path, notifier)
        await namer.start()
        try:
            failed = namer.addr(_id("users"))
            assert isinstance(failed, AddrFailed)
            assert failed.cause.startswith(f"{tmp_path / 'users'}:3: port 'eighty'")
            # The broken service still binds (the operator sees why), the others still work.
            assert namer.lookup(Path.read("/users")) == Leaf(Bound(_id("users")))
            assert namer.addr(_id("good")) == AddrBound(frozenset({Address("10.0.0.1", 80)}))

            gen = notifier.generation
            write_file(tmp_path / "users", "10.0.0.1 8080\n10.0.0.2 80\n")
            await changed(notifier, gen)
            fixed = namer.addr(_id("users"))
            assert isinstance(fixed, AddrBound)
            assert len(fixed.addrs) == 2
        finally:
            await namer.close()

    asyncio.run(main())


def test_non_utf8_file_fails_with_line(tmp_path: FsPath) -> None:
    (tmp_path / "bin").write_bytes(b"10.0.0.1 80\n\xff\xfe 80\n")

    async def main() -> None:
        namer = _namer(tmp_path, Notifier())
        await namer.start()
        try:
            assert namer.addr(_id("bin")) == AddrFailed(f"{tmp_path / 'bin'}:2: not UTF-8 text")
        finally:
            await namer.close()

    asyncio.run(main())


def test_invalid_names_hidden_files_and_dirs_are_ignored(
    tmp_path: FsPath, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ok").write_text("10.0.0.1 80\n")
    (tmp_path / "has space").write_text("10.0.0.1 80\n")
    (tmp_path / "users~").write_text("10.0.0.1 80\n")
    (tmp_path / ".users.swp").write_text("garbage\n")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subdir" / "inner").write_text("10.0.0.1 80\n")

    async def main() -> None:
        namer = _namer(tmp_path, Notifier())
        await namer.start()
        try:
            assert namer.enumerate() == [_id("ok")]
            # Let a few polls run: the warning must not repeat.
            polls = 3
            for _ in range(polls):
                await asyncio.sleep(POLL_INTERVAL_S)
        finally:
            await namer.close()

    with caplog.at_level(logging.WARNING, logger="namerd.naming.namers.fs"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("has space" in w for w in warnings) == 1
    assert sum("users~" in w for w in warnings) == 1
    assert all("path label" in w for w in warnings)
    assert len(warnings) == 2


def test_missing_root_dir_is_a_clear_error(tmp_path: FsPath) -> None:
    async def main() -> None:
        namer = _namer(tmp_path / "nope", Notifier())
        with pytest.raises(
            NamerConfigError, match=r"rootDir .*nope.* must be an existing directory"
        ):
            await namer.start()
        await namer.close()

    asyncio.run(main())


def test_root_dir_vanishing_keeps_last_known(tmp_path: FsPath) -> None:
    root = tmp_path / "disco"
    root.mkdir()
    (root / "users").write_text("10.0.0.1 80\n")

    async def main() -> None:
        notifier = Notifier()
        namer = _namer(root, notifier)
        await namer.start()
        try:
            before = namer.addr(_id("users"))
            root.rename(tmp_path / "away")
            await eventually(lambda: namer._dir_missing, "the poller to notice")
            assert namer.addr(_id("users")) == before
            assert namer.enumerate() == [_id("users")]

            (tmp_path / "away").rename(root)
            write_file(root / "more", "10.0.0.2 80\n")
            await eventually(lambda: b"more" in namer._dir.services, "the directory to come back")
            assert not namer._dir_missing
        finally:
            await namer.close()

    asyncio.run(main())


# -- host names --------------------------------------------------------------------------------


def test_host_names_are_resolved(tmp_path: FsPath) -> None:
    (tmp_path / "local").write_text("localhost 9000 * 2\n10.0.0.1 80\n")
    (tmp_path / "broken").write_text("a..b 80\n")
    (tmp_path / "mixed").write_text("a..b 80\n10.0.0.1 80\n")

    async def main() -> None:
        notifier = Notifier()
        namer = _namer(tmp_path, notifier)
        await namer.start()
        try:
            # Host names need DNS: pending first (namerd waits), then the answer.
            assert namer.addr(_id("local")) is ADDR_PENDING
            await eventually(
                lambda: isinstance(namer.addr(_id("local")), AddrBound), "localhost to resolve"
            )
            local = namer.addr(_id("local"))
            assert isinstance(local, AddrBound)
            assert Address("127.0.0.1", 9000, {WEIGHT_META_KEY: 2.0}) in local.addrs
            assert Address("10.0.0.1", 80) in local.addrs

            await eventually(lambda: namer.addr(_id("broken")) is not ADDR_PENDING, "a..b to fail")
            broken = namer.addr(_id("broken"))
            assert isinstance(broken, AddrFailed)
            assert broken.cause.startswith(f"{tmp_path / 'broken'}:1: invalid host name 'a..b'")
            # An unresolvable line is left out when other lines give addresses.
            assert namer.addr(_id("mixed")) == AddrBound(frozenset({Address("10.0.0.1", 80)}))
        finally:
            await namer.close()

    asyncio.run(main())
