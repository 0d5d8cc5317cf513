"""The shared parts: Notifier, build_namer's config checks, backoff, cancel_and_wait."""

from __future__ import annotations

import asyncio
from pathlib import Path as FsPath

import pytest

from namerd.aio import cancel_and_wait, reconnect_delay_s
from namerd.naming.namers import NAMER_KINDS, FsNamer, NamerConfigError, Notifier, build_namer
from namerd.naming.namers.base import INET_TOPIC, NAMES_TOPIC, namer_topic
from shared import Path

from . import WAIT_S


def test_notifier_wakes_waiters_and_never_loses_a_change() -> None:
    async def main() -> None:
        notifier = Notifier()
        assert notifier.generation == 0
        waiters = [asyncio.create_task(notifier.wait_changed(0)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        notifier.notify()
        assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT_S) == [1, 1, 1]
        # A change that happened before the wait started returns at once.
        notifier.notify()
        assert await notifier.wait_changed(1) == 2
        assert repr(notifier) == "<Notifier generation=2>"

    asyncio.run(main())


def test_notifier_topics_wake_only_their_listeners() -> None:
    async def main() -> None:
        notifier = Notifier()
        heard: list[str] = []
        stops = [
            notifier.listen([("dtab", "a")], lambda: heard.append("a")),
            notifier.listen([("dtab", "b")], lambda: heard.append("b")),
            notifier.listen([NAMES_TOPIC], lambda: heard.append("names")),
            notifier.listen([namer_topic(Path.read("/#/x"))], lambda: heard.append("x")),
            notifier.listen([()], lambda: heard.append("all")),
        ]
        notifier.notify("dtab", "a")
        assert sorted(heard) == ["a", "all"]
        heard.clear()
        # A namer's channel: its changes are its topic's, and every change moves the counter.
        channel = notifier.channel(*namer_topic(Path.read("/#/x")))
        channel.notify()
        assert sorted(heard) == ["all", "names", "x"]
        assert notifier.generation == 2
        assert repr(channel) == "<Notifier topic=names/namer//#/x generation=1>"
        heard.clear()
        notifier.channel(*INET_TOPIC).notify()
        assert sorted(heard) == ["all", "names"]
        heard.clear()
        notifier.notify("names")  # a general topic concerns every listener under it
        assert sorted(heard) == ["all", "names", "x"]
        heard.clear()
        notifier.notify()  # no topic: anything may have changed
        assert sorted(heard) == ["a", "all", "b", "names", "x"]
        heard.clear()
        for stop in stops:
            stop()
        notifier.notify()
        assert heard == []

    asyncio.run(main())


def test_a_namer_notifies_on_its_own_topic(tmp_path: FsPath) -> None:
    async def main() -> None:
        notifier = Notifier()
        namer = FsNamer(
            Path.read("/#/io.l5d.fs"), notifier, root_dir=tmp_path, poll_interval_s=0.05
        )
        woke = asyncio.Event()
        notifier.listen([namer_topic(namer.prefix)], woke.set)
        await namer.start()
        try:
            (tmp_path / "users").write_text("127.0.0.1 7001\n")
            await asyncio.wait_for(woke.wait(), WAIT_S)
        finally:
            await namer.close()

    asyncio.run(main())


def test_build_namer_fs(tmp_path: FsPath) -> None:
    notifier = Notifier()
    namer = build_namer(
        "io.l5d.fs",
        None,
        {"kind": "io.l5d.fs", "prefix": "/ignored", "rootDir": str(tmp_path)},
        notifier,
        None,
    )
    assert isinstance(namer, FsNamer)
    assert namer.prefix == Path.read("/#/io.l5d.fs")
    assert namer.root_dir == tmp_path
    assert namer.poll_interval_s == 1.0

    custom = build_namer(
        "io.l5d.fs",
        Path.read("/#/disco"),
        {"rootDir": str(tmp_path), "pollIntervalSecs": 0.25},
        notifier,
    )
    assert custom.prefix == Path.read("/#/disco")
    assert isinstance(custom, FsNamer)
    assert custom.poll_interval_s == 0.25
    assert set(NAMER_KINDS) == {"io.l5d.fs", "io.l5d.registry"}


@pytest.mark.parametrize(
    ("kind", "config", "message"),
    [
        ("io.l5d.k8s", {}, "unknown namer kind 'io.l5d.k8s'; known kinds: io.l5d.fs, "),
        ("io.l5d.fs", {"rootDir": "/x", "rootdir": "/y"}, "unknown config key 'rootdir'"),
        ("io.l5d.fs", {"rootDir": "/x", "a": 1, "b": 2}, "unknown config key 'a' (and 1 more)"),
        ("io.l5d.fs", {}, "rootDir is required"),
        ("io.l5d.fs", {"rootDir": 7}, "rootDir is required"),
        ("io.l5d.fs", {"rootDir": "/x", "pollIntervalSecs": 0}, "pollIntervalSecs must be"),
        ("io.l5d.fs", {"rootDir": "/x", "pollIntervalSecs": "1"}, "pollIntervalSecs must be"),
        ("io.l5d.fs", {"rootDir": "/x", "pollIntervalSecs": True}, "pollIntervalSecs must be"),
        ("io.l5d.registry", {}, "needs Redis"),
    ],
)
def test_build_namer_errors_name_the_problem(
    kind: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(NamerConfigError) as info:
        build_namer(kind, None, config, Notifier(), None)
    assert message in str(info.value)


def test_backoff_grows_and_is_capped() -> None:
    for failures in range(1, 40):
        delay = reconnect_delay_s(failures, 0.1, 2.0)
        ceiling = min(2.0, 0.1 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling


def test_cancel_and_wait_survives_a_swallowed_cancel() -> None:
    """A task that loses one cancellation (as Python 3.11's wait_for can) still ends."""

    async def main() -> None:
        swallowed = asyncio.Event()

        async def stubborn() -> None:
            try:
                await asyncio.sleep(WAIT_S)
            except asyncio.CancelledError:
                swallowed.set()  # carry on, as if the cancel never came
            await asyncio.sleep(WAIT_S)

        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait([task]), WAIT_S)
        assert swallowed.is_set()
        assert task.cancelled()

    asyncio.run(main())
