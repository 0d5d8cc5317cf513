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
a process. A change carries a topic saying what changed: ``("dtab", <ns>)`` from the dtab
cache, ``("names", "namer", <prefix>)`` from a namer (each namer notifies through its own
``channel``), ``("names", "inet")`` from DNS, ``("names", "mirror", <id>)`` from the address
mirror. The shared watches (``namerd.runtime.SharedWatches``) listen only to the topics their answer
depends on, so a write to one namespace re-renders none of another namespace's watches; one
computation per distinct watch then serves all its streams. A watch that hears a topic
recomputes its answer, and most such answers do not change; its streams then send nothing,
because they drop repeats (docs/namerd-api.md). Topics are coarse (a namer, not a name; a
bind hears every name source, since which namers it asks is not recorded), which costs some
spurious recomputations but cannot lose a wake-up. One-off lookups waiting for a pending
address use the plain change counter (``generation``), which moves on every change.

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
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ClassVar

from namerd.aio import cancel_and_wait
from namerd.errors import NamerdError
from shared import Addr, Bound, NameTree, Path

__all__ = [
    "INET_TOPIC",
    "MIRROR_TOPIC",
    "NAMERS_TOPIC",
    "NAMES_TOPIC",
    "Namer",
    "NamerConfigError",
    "NamerError",
    "NamerUnavailable",
    "NotRegistered",
    "Notifier",
    "Topic",
    "config_interval_s",
    "mirror_topic",
    "namer_topic",
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


Topic = tuple[str, ...]
"""What a change concerns, most general first: ``("dtab", ns)``, ``("names", "namer", prefix)``.
A change of a topic concerns every longer topic it starts (``("names",)`` covers every namer)."""

#: Everything names resolve through: every namer, DNS (``/$/inet``) and the address mirror.
NAMES_TOPIC: Topic = ("names",)
#: Every configured namer (each has its own topic under it, see ``namer_topic``).
NAMERS_TOPIC: Topic = (*NAMES_TOPIC, "namer")
#: The system namer's DNS answers (``InetResolver``).
INET_TOPIC: Topic = (*NAMES_TOPIC, "inet")
#: Address sets other replicas resolved (``AddrMirror``); one id's is ``mirror_topic(id)``.
MIRROR_TOPIC: Topic = (*NAMES_TOPIC, "mirror")


def namer_topic(prefix: Path) -> Topic:
    """The topic of the namer mounted at ``prefix`` (each namer notifies through it)."""
    return (*NAMERS_TOPIC, prefix.show())


def mirror_topic(bound_id: Path) -> Topic:
    """The topic of one id's address set in the ``AddrMirror`` (which notifies it)."""
    return (*MIRROR_TOPIC, bound_id.show())


class Notifier:
    """A change counter shared by all namers and the dtab cache of one process, with topics.

    ``notify(*topic)`` records a change of ``topic`` (no topic: a change of anything). Two ways
    to hear about changes:

    * ``generation`` / ``wait_changed()``: the counter moves on *every* change; one-off lookups
      that wait for a pending address use it (a spurious wake-up only costs a recomputation);
    * ``listen(topics, callback)``: ``callback()`` runs synchronously inside ``notify()`` when
      the change concerns one of ``topics``: the changed topic starts with, or is a start of, a
      listened one (``()`` hears everything). The shared watches of ``namerd.runtime`` use it,
      so a dtab write to one namespace does not re-render the watches of another.

    ``channel(*topic)`` is a Notifier whose ``notify()`` is this one's ``notify(*topic)``:
    ``Namer`` gives each namer its own (``("names", "namer", <prefix>)``), so namers need not
    know about topics at all.

    Use it only from the event loop thread. ``notify()`` is synchronous, so it can be called
    from callbacks and from code that must not await.
    """

    def __init__(self) -> None:
        self.generation: int = 0
        # A fresh Event per generation: setting the old one wakes exactly the waiters of that
        # generation, and nobody has to clear() it (clear() would race with late waiters).
        self._event = asyncio.Event()
        self._root: Notifier = self
        self._topic: Topic = ()
        # Listened topic -> {listener id: callback}; and topic -> the listened topics under it.
        self._listeners: dict[Topic, dict[int, Callable[[], None]]] = {}
        self._under: dict[Topic, set[Topic]] = {}
        self._next_id = 0

    def __repr__(self) -> str:
        where = f" topic={'/'.join(self._topic)}" if self._topic else ""
        return f"<Notifier{where} generation={self.generation}>"

    def channel(self, *topic: str) -> Notifier:
        """A Notifier whose changes are changes of ``topic`` (under this one's own topic)."""
        child = Notifier()
        child._root = self._root
        child._topic = self._topic + topic
        return child

    def notify(self, *topic: str) -> None:
        """Record a change of ``topic`` (of anything, without one) and wake its waiters."""
        self._bump()
        if self._root is not self:
            self._root.notify(*self._topic, *topic)
            return
        if not self._listeners:
            return
        # Listeners of the topic and of every start of it (the more general topics), then of
        # every topic it starts (a change of ("names",) concerns ("names", "inet"); no topic
        # concerns all). Index lookups only, so the cost is the listeners woken, not the table.
        related = [topic[:i] for i in range(len(topic) + 1)]
        related.extend(self._under.get(topic, ()))
        hit = [cb for t in related for cb in self._listeners.get(t, {}).values()]
        for callback in hit:
            callback()

    def listen(self, topics: Iterable[Topic], callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` on every change that concerns one of ``topics``; returns the
        function that stops it. ``callback`` must be quick and must not raise."""
        root = self._root
        root._next_id += 1
        key = root._next_id
        where = {self._topic + t for t in topics}
        for t in where:
            if t not in root._listeners:
                root._listeners[t] = {}
                for i in range(len(t)):
                    root._under.setdefault(t[:i], set()).add(t)
            root._listeners[t][key] = callback

        def stop() -> None:
            for t in where:
                cbs = root._listeners.get(t)
                if cbs is None:
                    continue
                cbs.pop(key, None)
                if not cbs:
                    del root._listeners[t]
                    for i in range(len(t)):
                        under = root._under[t[:i]]
                        under.discard(t)
                        if not under:
                            del root._under[t[:i]]

        return stop

    async def wait_changed(self, since: int) -> int:
        """Wait until the generation differs from ``since``, then return the current one.

        Returns at once if it already differs, so a change between reading ``generation`` and
        calling this is never lost.
        """
        while self.generation == since:
            await self._event.wait()
        return self.generation

    def _bump(self) -> None:
        self.generation += 1
        event, self._event = self._event, asyncio.Event()
        event.set()


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
        notifier: the process-wide change signal. The namer keeps its own channel of it as
            ``self.notifier`` (topic ``("names", "namer", <prefix>)``); call
            ``self.notifier.notify()`` on every change.
    """

    kind: ClassVar[str]
    #: Keys accepted in this namer's config block (besides ``kind`` and ``prefix``).
    config_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, prefix: Path, notifier: Notifier) -> None:
        self.prefix = prefix
        # The namer's own channel: its changes wake only what listens to namers (or to it).
        self.notifier = notifier.channel(*namer_topic(prefix))
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
