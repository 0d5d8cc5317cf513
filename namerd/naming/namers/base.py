"""What every namerd namer is: a synchronous, in-memory view kept fresh by asyncio tasks.

Theory of operation
-------------------
The binding algorithm (``shared.binding``) is a sans-I/O stepper: it asks a namer for a lookup
and wants the answer *now*, without awaiting. So a namer never does I/O while it is asked.
``start()`` loads the complete initial state and starts background tasks (a directory poller,
a Redis subscription, DNS re-resolution...). Those tasks update in-memory state and call
``notifier.notify()`` whenever an answer may have changed. ``lookup()``, ``addr()`` and
``enumerate()`` only read that memory.

One :class:`Notifier` is shared by every namer, the system-namer resolver and the dtab cache of
a process. A watch stream remembers the generation it last rendered, awaits
``wait_changed(generation)``, and then recomputes its answer. Most wake-ups do not change that
stream's answer. The stream then sends nothing, because it drops repeats (docs/namerd-api.md).
One counter costs a few spurious recomputations, and it cannot lose a wake-up, which
per-name subscriptions could.

Errors
------
::

    NamerdError (namerd.errors)
    └── NamerError               a namer failed on purpose
        ├── NamerConfigError     bad namer configuration: unknown kind or key, bad value,
        │                        missing rootDir (raised by build_namer() or start())
        ├── NamerUnavailable     the namer's backend (Redis) cannot be reached (503)
        └── NotRegistered        heartbeat() for an endpoint that is not registered (404)
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, ClassVar

from namerd.aio import cancel_and_wait
from namerd.errors import NamerdError
from shared import Addr, Bound, NameTree, Path

__all__ = [
    "Namer",
    "NamerConfigError",
    "NamerError",
    "NamerUnavailable",
    "NotRegistered",
    "Notifier",
    "config_interval_s",
]

log = logging.getLogger(__name__)


class NamerError(NamerdError):
    """A namer failed on purpose; the message says which namer and why."""


class NamerConfigError(NamerError):
    """The namer configuration is wrong: unknown kind or key, a bad value, a missing rootDir."""


class NamerUnavailable(NamerError):
    """The namer's backend (Redis) cannot be reached; the write may not have happened."""

    default_http_status = 503


class NotRegistered(NamerError):
    """``heartbeat()`` was called for an endpoint that is not (or no longer) registered."""

    default_http_status = 404


class Notifier:
    """A change counter shared by all namers and the dtab cache of one process.

    Use it only from the event loop thread. ``notify()`` is synchronous, so it can be called
    from callbacks and from code that must not await.
    """

    def __init__(self) -> None:
        self.generation: int = 0
        # A fresh Event per generation: setting the old one wakes exactly the waiters of that
        # generation, and nobody has to clear() it (clear() would race with late waiters).
        self._event = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Notifier generation={self.generation}>"

    def notify(self) -> None:
        """Record a change and wake every waiter."""
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_changed(self, since: int) -> int:
        """Wait until the generation differs from ``since``, then return the current one.

        Returns at once if it already differs, so a change between reading ``generation`` and
        calling this is never lost.
        """
        while self.generation == since:
            await self._event.wait()
        return self.generation


def config_interval_s(kind: str, config: Mapping[str, Any], key: str, default_s: float) -> float:
    """Read an optional positive number of seconds from a namer config block.

    Raises:
        NamerConfigError: the value is not a positive number; the message names the key.
    """
    value = config.get(key, default_s)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise NamerConfigError(
            f"namer {kind}: {key} must be a positive number of seconds, got {value!r}"
        )
    return float(value)


class Namer(abc.ABC):
    """A configured namer, mounted at ``prefix`` (default ``/#/<kind>``).

    Subclasses load their state in ``start()`` and answer ``lookup``/``addr``/``enumerate``
    from memory, without awaiting. Background tasks started with ``_spawn()`` are cancelled
    by ``close()``.

    Args:
        prefix: where the namer is mounted, e.g. ``/#/io.l5d.fs``.
        notifier: the process-wide change signal; call ``notify()`` on every change.
    """

    kind: ClassVar[str]
    #: Keys accepted in this namer's config block (besides ``kind`` and ``prefix``).
    config_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, prefix: Path, notifier: Notifier) -> None:
        self.prefix = prefix
        self.notifier = notifier
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._tasks)} tasks"
        return f"<{type(self).__name__} {self.prefix.show()} [{state}]>"

    @classmethod
    def default_prefix(cls) -> Path:
        """``/#/<kind>``, Linkerd's default mount point."""
        return Path("#", cls.kind)

    @classmethod
    @abc.abstractmethod
    def from_config(
        cls,
        prefix: Path,
        config: Mapping[str, Any],
        notifier: Notifier,
        redis_client: Any,
    ) -> Namer:
        """Build the namer from its config block (keys already checked against config_keys).

        Raises:
            NamerConfigError: a value is missing or wrong; the message names the key.
        """

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the complete initial state, then start background tasks.

        Raises:
            NamerError: the state cannot be loaded (e.g. missing directory, Redis down).
        """

    async def close(self) -> None:
        """Cancel background tasks and release resources. Calling it again does nothing."""
        self._closed = True
        tasks, self._tasks = self._tasks, set()
        await cancel_and_wait(tasks)

    @abc.abstractmethod
    def lookup(self, path: Path) -> NameTree[Path | Bound]:
        """Look up ``path`` (what follows the prefix). ``NEG`` if this namer does not know it."""

    @abc.abstractmethod
    def addr(self, id: Path) -> Addr:
        """The addresses of a bound id this namer produced. ``ADDR_NEG`` if unknown."""

    def enumerate(self) -> list[Path] | None:
        """The bound ids this namer can list (for ``/api/1/bound-names``); None if it can't."""
        return None

    def _label_under_prefix(self, id: Path) -> bytes | None:
        """The single label of ``id`` after the prefix, or None if ``id`` is not prefix + 1."""
        if len(id) == len(self.prefix) + 1 and id.startswith(self.prefix):
            return id[len(self.prefix)]
        return None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a background task that ``close()`` cancels.

        A background loop that dies silently would freeze the namer's view forever, so an
        unexpected exception is logged at ERROR.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%r: background task %s died", self, task.get_name(), exc_info=exc)
