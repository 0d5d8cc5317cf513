"""linker.process.heartbeat: the unlinked file a worker stamps and its master fstat()s.

Ages are checked against an injected clock, so they are exact; nothing depends on how fast
the machine is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from linker.process.heartbeat import Heartbeat


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_new_heartbeat_is_fresh_and_booting(tmp_path: Path, clock: FakeClock) -> None:
    hb = Heartbeat(str(tmp_path), clock=clock)
    assert hb.last_beat_age_s() == 0.0
    assert not hb.is_ready()
    hb.close()


def test_age_grows_until_the_next_beat(tmp_path: Path, clock: FakeClock) -> None:
    hb = Heartbeat(str(tmp_path), clock=clock)
    clock.now += 3.5
    assert hb.last_beat_age_s() == 3.5
    hb.beat()
    assert hb.last_beat_age_s() == 0.0
    clock.now += 0.25
    assert hb.last_beat_age_s() == 0.25
    hb.close()


def test_mark_ready_is_a_beat_too(tmp_path: Path, clock: FakeClock) -> None:
    hb = Heartbeat(str(tmp_path), clock=clock)
    clock.now += 7
    hb.mark_ready()
    # ftruncate stamps the wall clock; mark_ready must put the monotonic scale back.
    assert hb.last_beat_age_s() == 0.0
    assert hb.is_ready()
    hb.mark_ready()  # idempotent
    assert hb.is_ready()
    hb.close()


def test_nothing_is_left_on_disk(tmp_path: Path) -> None:
    hb = Heartbeat(str(tmp_path))
    hb.beat()
    assert list(tmp_path.iterdir()) == []
    hb.close()


def test_close_is_idempotent(tmp_path: Path) -> None:
    hb = Heartbeat(str(tmp_path))
    fd = hb.fileno()
    hb.close()
    hb.close()
    assert hb.closed
    assert hb.fileno() == -1
    assert repr(hb) == "<Heartbeat closed>"
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_repr_shows_state(tmp_path: Path, clock: FakeClock) -> None:
    hb = Heartbeat(str(tmp_path), clock=clock)
    clock.now += 1.5
    assert repr(hb) == f"<Heartbeat fd={hb.fileno()} booting age=1.500s>"
    hb.mark_ready()
    assert repr(hb) == f"<Heartbeat fd={hb.fileno()} ready age=0.000s>"
    hb.close()


def test_default_clock_is_monotonic(tmp_path: Path) -> None:
    hb = Heartbeat(str(tmp_path))
    age = hb.last_beat_age_s()
    # Stamped on the monotonic scale: a wall-clock mtime would give an age of about -1.7e9 s.
    assert age >= 0.0
    hb.close()


def test_a_forked_child_beats_for_its_parent(tmp_path: Path, clock: FakeClock) -> None:
    """The master creates the heartbeat, fork() shares it, the worker stamps, the master sees."""
    hb = Heartbeat(str(tmp_path), clock=clock)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            child = FakeClock(1000.0 + 42.0)
            hb._clock = child  # the worker's clock reads the same (system-wide) scale
            hb.mark_ready()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    clock.now = 1000.0 + 45.0
    assert hb.is_ready()
    assert hb.last_beat_age_s() == 3.0
    hb.close()


def test_closing_one_copy_leaves_the_other(tmp_path: Path, clock: FakeClock) -> None:
    hb = Heartbeat(str(tmp_path), clock=clock)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        hb.close()  # what a worker does with its siblings' heartbeats
        os._exit(0)
    os.waitpid(pid, 0)
    clock.now += 1
    assert hb.last_beat_age_s() == 1.0
    hb.close()


def test_unwritable_dir_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Heartbeat(str(tmp_path / "missing"))
