"""A worker's heartbeat and readiness flag, shared with the master through one unlinked file.

Theory of operation (after gunicorn's ``WorkerTmp``):

* The master creates a ``Heartbeat`` *before* it forks a worker. The file is unlinked at once, so
  nothing is left on disk whatever happens to either process; both keep the same open file
  description, inherited through ``fork()``.
* The worker calls :meth:`Heartbeat.beat` from a task of its event loop, so a beat proves that the
  loop is still turning, not merely that the process exists. A beat stamps the file's mtime with
  the *monotonic* clock (``os.utime`` on the fd): wall-clock jumps (NTP, a suspended laptop) can
  neither kill a healthy worker nor hide a hung one. ``CLOCK_MONOTONIC`` is system-wide, so the
  master's clock reads the same scale.
* The master reads the age with one ``fstat`` per worker per check: no pipes to drain, no
  messages to parse, and a stopped (``SIGSTOP``) or wedged worker simply stops updating the file.
* Readiness is the file's size: 0 while the worker boots, 1 once it called
  :meth:`Heartbeat.mark_ready`. The same ``fstat`` answers both questions.

Nothing here needs trio: the worker calls these from its loop, the master from its sync loop.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

__all__ = ["Heartbeat"]


class Heartbeat:
    """One worker's heartbeat file.

    Args:
        dir: where to create the (immediately unlinked) file; ``None`` means the system temp
            directory. A tmpfs such as ``/dev/shm`` avoids disk metadata writes on busy hosts.
        clock: the clock stamped into the file and compared against; ``time.monotonic`` in
            production, injectable so tests can assert exact ages.

    Raises:
        OSError: if the file cannot be created in ``dir``.
    """

    __slots__ = ("_clock", "_fd")

    def __init__(self, dir: str | None = None, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        fd, name = tempfile.mkstemp(prefix="l5d-heartbeat-", dir=dir)
        try:
            os.unlink(name)
        except OSError:
            os.close(fd)
            raise
        self._fd: int = fd
        # A fresh file carries the wall-clock creation time; stamp it on our clock's scale at
        # once so the first age the master reads is meaningful.
        self.beat()

    def fileno(self) -> int:
        """The file descriptor (-1 once closed)."""
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def beat(self) -> None:
        """Record "alive now". Cheap: one ``futimens`` syscall, no I/O on the data."""
        now = self._clock()
        os.utime(self._fd, (now, now))

    def mark_ready(self) -> None:
        """Record "booted and serving"; the master waits for this before it counts the worker."""
        # ftruncate stamps the wall clock into mtime; beat afterwards to put it back on our scale.
        os.ftruncate(self._fd, 1)
        self.beat()

    def is_ready(self) -> bool:
        """Whether :meth:`mark_ready` was called (in this process or the other one)."""
        return os.fstat(self._fd).st_size > 0

    def last_beat_age_s(self) -> float:
        """Seconds since the last :meth:`beat` (or :meth:`mark_ready`), on ``clock``'s scale."""
        return self._clock() - os.fstat(self._fd).st_mtime

    def close(self) -> None:
        """Close this process's descriptor. Idempotent; the other process's copy is unaffected."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __repr__(self) -> str:
        if self.closed:
            return "<Heartbeat closed>"
        st = os.fstat(self._fd)
        state = "ready" if st.st_size > 0 else "booting"
        return f"<Heartbeat fd={self._fd} {state} age={self._clock() - st.st_mtime:.3f}s>"
