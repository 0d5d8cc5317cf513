"""``io.l5d.namerd.http``: the interpreter that lets namerd bind.

Each distinct (path, local dtab) is one bind watch and each bound id one addr watch, shared by
every request of the worker (the watch registry, ``watches.py``). The local dtab (the router's
``dtab`` plus the request's ``l5d-ctx-dtab``/``l5d-dtab`` overrides) is sent as namerd's
``dtab`` parameter, so namerd binds ``stored ++ local`` (docs/dtabs.md). The last-known state
is served while namerd is away, and shared with the other workers (``last_known.py``).

It keeps the contract of ``contract.Interpreter``: a name's first answer waits at most
``bind_timeout_s``; a known one is answered from memory (:meth:`NamerdHttpInterpreter.resolve_now`
on the router's hot path, from the answer kept on the bind watch while no watch changed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any, Final

import trio

from linker.naming.contract import (
    DEFAULT_BIND_TIMEOUT_S,
    BindFailure,
    BindTimeout,
    Destination,
    full_dtab,
    wait_started,
)
from linker.naming.last_known import (
    DEFAULT_LAST_KNOWN_INTERVAL_S,
    load_last_known,
    share_last_known,
)
from linker.naming.local_namers import DEFAULT_IDLE_TTL_S
from linker.naming.transport import DEFAULT_NAMESPACE, BindError, BindValue
from linker.naming.watches import (
    DEFAULT_FIRST_RETRY_S,
    DEFAULT_RETRY_BASE_S,
    DEFAULT_RETRY_MAX_S,
    DEFAULT_STREAM_IDLE_TIMEOUT_S,
    NamerdClient,
    Watch,
)
from shared import Addr, AddrPending, Bound, Dtab, NameTree, Neg, Path, leaves

__all__ = ["NamerdHttpInterpreter", "tree_ids"]


class NamerdHttpInterpreter:
    """``io.l5d.namerd.http``: bind through namerd's streaming HTTP API.

    Args:
        dst: namerd addresses, tried in order.
        namespace: the namerd namespace. Default ``default``.
        base_dtab: the router's dtab (see ``contract``'s dtab convention).
        retry_base_s / retry_max_s: reconnect backoff (Linkerd ``retry``); 0.5 s / 5 s
            (Linkerd: 5 s / 600 s; see ``watches``).
        first_retry_s: the first, quick retry after a failure. Default 0.2 s.
        idle_ttl_s: close watches unused this long. Default 600 s.
        bind_timeout_s: longest wait for a name's first complete answer. Default 10 s.
        stream_idle_timeout_s: re-open a silent stream after this long. Default 60 s.
        last_known_dir: where the workers of one linker share their last-known answers
            (``<name>.<pid>.json``); None turns sharing off. A worker that starts while namerd
            is unreachable routes on them instead of failing every name it never bound.
        last_known_name: this router's prefix for those files (its label).
        last_known_interval_s: how often the state is written, if it changed. Default 1 s.
        client_options: further :class:`~linker.naming.watches.NamerdClient` keywords
            (``connect_timeout_s``, ``request_timeout_s``, ``max_watches``, ``rand``).
    """

    kind: Final = "io.l5d.namerd.http"

    def __init__(
        self,
        dst: Sequence[tuple[str, int]],
        namespace: str = DEFAULT_NAMESPACE,
        *,
        base_dtab: Dtab | None = None,
        retry_base_s: float = DEFAULT_RETRY_BASE_S,
        retry_max_s: float = DEFAULT_RETRY_MAX_S,
        first_retry_s: float = DEFAULT_FIRST_RETRY_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        bind_timeout_s: float = DEFAULT_BIND_TIMEOUT_S,
        stream_idle_timeout_s: float = DEFAULT_STREAM_IDLE_TIMEOUT_S,
        last_known_dir: str | None = None,
        last_known_name: str = "router",
        last_known_interval_s: float = DEFAULT_LAST_KNOWN_INTERVAL_S,
        **client_options: Any,
    ) -> None:
        if not bind_timeout_s > 0:
            raise ValueError(f"bind_timeout_s must be > 0, got {bind_timeout_s!r}")
        self.base_dtab = base_dtab or Dtab.empty()
        self.bind_timeout_s = bind_timeout_s
        self.client = NamerdClient(
            dst,
            namespace,
            retry_base_s=retry_base_s,
            retry_max_s=retry_max_s,
            first_retry_s=first_retry_s,
            idle_ttl_s=idle_ttl_s,
            stream_idle_timeout_s=stream_idle_timeout_s,
            **client_options,
        )
        self._started = trio.Event()
        self._last_dtab: tuple[Dtab, str] | None = None
        self.last_known_dir = last_known_dir
        self.last_known_name = last_known_name
        self.last_known_interval_s = last_known_interval_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the namerd watches until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.last_known_dir is not None:
                load_last_known(self.client, FsPath(self.last_known_dir), self.last_known_name)
            await nursery.start(self.client.run)
            if self.last_known_dir is not None:
                nursery.start_soon(
                    share_last_known,
                    self.client,
                    FsPath(self.last_known_dir),
                    self.last_known_name,
                    self.last_known_interval_s,
                )
            self._started.set()
            task_status.started()

    def resolve_now(self, path: Path, local_dtab: Dtab) -> Destination | None:
        """The destination if it is known and current, without waiting; else None.

        The router's hot path: a name that was resolved before and has not changed since
        needs no task switch and no cancel scope.
        """
        if not self._started.is_set() or not self.client.running:
            return None
        watch = self.client.bind_watch(path, self._dtab_text(local_dtab))
        return self._known(watch, self.client.changes.generation)

    @staticmethod
    def _known(watch: Watch, generation: int) -> Destination | None:
        """The answer kept on ``watch`` if no watch changed since (``generation``)."""
        known = watch.resolved
        if known is None or known[0] != generation:
            return None
        now = watch.last_used
        for addr_watch in known[2]:
            addr_watch.last_used = now  # still in use: keep them from idling out
        return known[1]  # type: ignore[no-any-return]

    async def resolve(self, path: Path, local_dtab: Dtab) -> Destination:
        """See :meth:`Interpreter.resolve`; the first answer for a name takes a round trip."""
        deadline = trio.current_time() + self.bind_timeout_s
        if not self._started.is_set():  # the hot path skips a checkpoint and a cancel scope
            await wait_started(self._started, deadline, f"binding {path.show()}")
        if not self.client.running:
            raise BindFailure(f"binding {path.show()}: the namerd interpreter has stopped")
        dtab_text = self._dtab_text(local_dtab)
        changes = self.client.changes
        while True:
            generation = changes.generation
            watch = self.client.bind_watch(path, dtab_text)
            known = self._known(watch, generation)
            if known is not None:
                return known
            result = self._current(watch)
            if isinstance(result, Destination):
                watch.resolved = (
                    generation,
                    result,
                    tuple(self.client.addr_watch(id) for id in result.addrs),
                )
                return result
            if trio.current_time() >= deadline:
                raise BindTimeout(self._timeout_message(path, watch, result))
            with trio.move_on_at(deadline):
                await changes.wait_changed(generation)

    async def why_neg(self, path: Path, local_dtab: Dtab) -> str | None:
        """Why ``path`` bound to ``neg``, when it is namerd's to say: its namespace does not
        exist (see :meth:`NamerdClient.why_neg`). None otherwise, or when it did not bind neg."""
        watch = self.client.bind_watch(path, self._dtab_text(local_dtab))
        value = watch.value
        if not isinstance(value, BindValue) or not isinstance(value.tree, Neg):
            return None
        return await self.client.why_neg(watch)

    def _dtab_text(self, local_dtab: Dtab) -> str:
        """The ``dtab`` parameter for ``local_dtab``.

        Requests without overrides all pass the router's very same Dtab object, so the last
        answer is remembered by identity: no re-printing of the dtab on the hot path.
        """
        last = self._last_dtab
        if last is not None and last[0] is local_dtab:
            return last[1]
        text = full_dtab(self.base_dtab, local_dtab).show()
        self._last_dtab = (local_dtab, text)
        return text

    def _current(self, watch: Watch) -> Destination | Watch:
        """The destination if complete, else the watch still awaited (bind or addr).

        Raises:
            BindFailure: namerd reported a binding failure (the current state).
        """
        value = watch.value
        if value is None:
            return watch
        if isinstance(value, BindError):
            raise BindFailure(
                f"namerd could not bind {watch.path.show()} in namespace "
                f"'{self.client.namespace}': {value.message}"
            )
        assert isinstance(value, BindValue)
        addrs: dict[Path, Addr] = {}
        for id in tree_ids(value.tree):
            addr_watch = self.client.addr_watch(id)
            addr = addr_watch.value
            if addr is None or isinstance(addr, AddrPending):
                return addr_watch
            assert not isinstance(addr, BindValue | BindError)
            addrs[id] = addr
        return Destination(value.tree, addrs)

    def _timeout_message(self, path: Path, bind: Watch, waiting: Watch) -> str:
        what = (
            "its bound tree"
            if waiting is bind
            else f"the addresses of {waiting.path.show()} (bound from it)"
        )
        dsts = ", ".join(f"{h}:{p}" for h, p in self.client.dst)
        status = waiting.status
        detail = f"watch {status}"
        if waiting.last_error:
            detail += f", last error: {waiting.last_error}"
        if waiting.reconnects:
            detail += f", {waiting.reconnects} reconnects"
        return (
            f"binding {path.show()} timed out after {self.bind_timeout_s * 1000:g} ms "
            f"(bindingTimeoutMs) waiting for {what} from namerd at {dsts} "
            f"(namespace '{self.client.namespace}'; {detail})"
        )

    def state(self) -> dict[str, Any]:
        """The namerd client's state (watches, connections, reconnects), plus the kind."""
        return {"kind": self.kind, **self.client.state()}


def tree_ids(tree: NameTree[Bound]) -> list[Path]:
    """The bound ids in ``tree``, in order, without repeats."""
    seen: dict[Path, None] = {}
    for b in leaves(tree):
        seen.setdefault(b.id, None)
    return list(seen)
