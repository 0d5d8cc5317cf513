"""Interpreters: how the linker turns a logical name (``/svc/users``) into a bound destination.

A :class:`Destination` is the bound tree (``shared.NameTree[Bound]``: leaves, weighted unions,
``~``/``!``/``$``) and the addresses of every bound id in it; the router picks an endpoint
from it. Two interpreters, chosen by the router's ``interpreter`` config as in Linkerd
(docs/linkerd-compat.md, Interpreters):

``io.l5d.namerd.http`` (:class:`NamerdHttpInterpreter`)
    namerd binds. Each distinct (path, local dtab) is one bind watch and each bound id one addr
    watch, shared by every request of the worker (see ``namerd_client.py``). The local dtab
    (the router's ``dtab`` plus the request's ``l5d-ctx-dtab``/``l5d-dtab`` overrides) is sent
    as namerd's ``dtab`` parameter, so namerd binds ``stored ++ local`` (docs/dtabs.md).
    The last-known state is served while namerd is away.

``default`` (:class:`DefaultInterpreter`)
    The linker binds itself with ``shared.Binder`` (the same stepper namerd runs), its own
    ``io.l5d.fs`` namers and ``/$/inet`` (``local_namers.py``). Results are cached per
    (path, dtab) and recomputed only after a namer reported a change.

Both follow one contract for :meth:`Interpreter.resolve`: the first call for a name waits for
a complete answer (tree and every id's addresses) at most ``bind_timeout_s`` (default 10 s,
Linkerd's ``bindingTimeoutMs``), then raises :class:`BindTimeout` saying what it was waiting
for; once known, a name is answered from memory without waiting. A binding that fails (a dtab
loop, an unknown namer, namerd's ``exception``) raises :class:`BindFailure` with the reason.
The router maps both to a 502 with ``l5d-err``.

Dtab convention: ``resolve`` takes the *full local dtab* (router dtab ++ overrides, what
Linkerd calls ``Dtab.local`` plus the router's base). An interpreter built with
``base_dtab`` (the router's dtab) recognises a local dtab that already starts with it and does
not apply it twice, so a caller may pass either the full local dtab or just the overrides.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Final, Protocol

import trio

from linker.naming.local_namers import (
    DEFAULT_IDLE_TTL_S,
    DEFAULT_INET_REFRESH_INTERVAL_S,
    Changes,
    FsNamer,
    InetResolver,
    NamerConfigError,
    fs_namer_from_config,
)
from linker.naming.namerd_client import (
    DEFAULT_FIRST_RETRY_S,
    DEFAULT_NAMESPACE,
    DEFAULT_RETRY_BASE_S,
    DEFAULT_RETRY_MAX_S,
    DEFAULT_STREAM_IDLE_TIMEOUT_S,
    BindError,
    BindValue,
    NamerdClient,
    Watch,
    parse_dst,
    tree_ids,
)
from shared import (
    ADDR_NEG,
    Addr,
    AddrPending,
    Bound,
    DelegationError,
    Dtab,
    NameTree,
    Path,
    bind,
    leaves,
    show_tree,
)
from shared.binding import lookup_by_prefix

__all__ = [
    "DEFAULT_BIND_TIMEOUT_S",
    "DEFAULT_MAX_CACHED",
    "BindFailure",
    "BindTimeout",
    "DefaultInterpreter",
    "Destination",
    "Interpreter",
    "InterpreterConfigError",
    "InterpreterError",
    "NamerdHttpInterpreter",
    "build_interpreter",
]

log = logging.getLogger("linker.interpreter")

#: Longest wait for a name's first complete answer (Linkerd's ``bindingTimeoutMs``: 10000).
DEFAULT_BIND_TIMEOUT_S: Final = 10.0
#: How often a namerd interpreter writes its last-known state for other workers (if changed).
DEFAULT_LAST_KNOWN_INTERVAL_S: Final = 1.0
#: Last-known files read at start (the newest); older ones are deleted.
MAX_LAST_KNOWN_FILES: Final = 16
#: Most (path, dtab) results the default interpreter caches (Linkerd's binding cache size).
DEFAULT_MAX_CACHED: Final = 1000


class InterpreterError(Exception):
    """Resolving a name failed; ``str()`` is a message fit for ``l5d-err``."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BindTimeout(InterpreterError):
    """No complete answer for a name within ``bind_timeout_s`` (e.g. namerd unreachable)."""


class BindFailure(InterpreterError):
    """Binding failed: a dtab loop, an unknown namer, namerd's binding exception..."""


class InterpreterConfigError(ValueError):
    """The ``interpreter`` (or ``namers``) config is wrong; the message names the key."""


@dataclass(frozen=True)
class Destination:
    """A bound name: the tree and the addresses of every bound id in it.

    ``addrs`` holds one entry per distinct ``Bound.id`` of ``tree``'s leaves; none is
    ``pending`` (an interpreter waits for those, or times out).
    """

    tree: NameTree[Bound]
    addrs: dict[Path, Addr] = field(default_factory=dict)


class Interpreter(Protocol):
    """What the router needs from an interpreter.

    Optionally also ``resolve_now(path, local_dtab) -> Destination | None``: the current
    answer if it is already known, without waiting (the router's hot path; None sends it to
    :meth:`resolve`).
    """

    async def resolve(self, path: Path, local_dtab: Dtab) -> Destination:
        """The current destination of ``path`` bound with ``local_dtab``.

        Raises:
            BindTimeout: no complete answer within the bind timeout.
            BindFailure: binding failed; the message says why.
        """
        ...

    def state(self) -> dict[str, Any]:
        """A JSON-able view of the interpreter's state, for metrics and admin."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run background work (watches, namer refresh) until cancelled; report started."""
        ...


def _file_safe(name: str) -> str:
    """``name`` usable in a file name, without dots (they separate the label from the pid)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def _write_atomically(target: FsPath, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, target)


def _full_dtab(base: Dtab, local: Dtab) -> Dtab:
    """``base ++ local``, unless ``local`` already starts with ``base`` (then just ``local``)."""
    if base and local.dentries[: len(base)] == base.dentries:
        return local
    return base + local


async def _wait_started(started: trio.Event, deadline: float, what: str) -> None:
    with trio.move_on_at(deadline):
        await started.wait()
    if not started.is_set():
        raise BindTimeout(f"{what}: the interpreter is not running (its run() task never started)")


# -- io.l5d.namerd.http -------------------------------------------------------------------------


class NamerdHttpInterpreter:
    """``io.l5d.namerd.http``: bind through namerd's streaming HTTP API.

    Args:
        dst: namerd addresses, tried in order.
        namespace: the namerd namespace. Default ``default``.
        base_dtab: the router's dtab (see the module docstring's dtab convention).
        retry_base_s / retry_max_s: reconnect backoff (Linkerd ``retry``); 0.5 s / 5 s
            (Linkerd: 5 s / 600 s; see ``namerd_client``).
        first_retry_s: the first, quick retry after a failure. Default 0.2 s.
        idle_ttl_s: close watches unused this long. Default 600 s.
        bind_timeout_s: longest wait for a name's first complete answer. Default 10 s.
        stream_idle_timeout_s: re-open a silent stream after this long. Default 60 s.
        last_known_dir: where the workers of one linker share their last-known answers
            (``<name>.<pid>.json``); None turns sharing off. A worker that starts while namerd
            is unreachable routes on them instead of failing every name it never bound.
        last_known_name: this router's prefix for those files (its label).
        last_known_interval_s: how often the state is written, if it changed. Default 1 s.
        client_options: further :class:`~linker.naming.namerd_client.NamerdClient` keywords
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
                self._load_last_known(FsPath(self.last_known_dir))
            await nursery.start(self.client.run)
            if self.last_known_dir is not None:
                nursery.start_soon(self._share_last_known, FsPath(self.last_known_dir))
            self._started.set()
            task_status.started()

    def _load_last_known(self, folder: FsPath) -> None:
        """Import the newest last-known files of this router (any worker, this one's
        predecessors included), oldest first so newer answers win; delete the rest."""
        files: list[tuple[float, FsPath]] = []
        for path in folder.glob(f"{_file_safe(self.last_known_name)}.*.json"):
            try:
                files.append((path.stat().st_mtime, path))
            except OSError:
                continue
        files.sort()
        for _, stale in files[:-MAX_LAST_KNOWN_FILES]:
            stale.unlink(missing_ok=True)
        taken = 0
        for _, path in files[-MAX_LAST_KNOWN_FILES:]:
            try:
                taken += self.client.import_last_known(json.loads(path.read_text("utf-8")))
            except (OSError, ValueError, AttributeError) as err:
                log.warning("ignoring last-known state %s: %s", path, err)
        if taken:
            log.info("%d last-known namerd answers available from other workers", taken)

    async def _share_last_known(self, folder: FsPath) -> None:
        """Write this worker's last-known answers whenever they changed (atomically)."""
        target = folder / f"{_file_safe(self.last_known_name)}.{os.getpid()}.json"
        written = -1
        warned = False
        while True:
            generation = self.client.changes.generation
            if generation != written:
                # Inline, like the metrics snapshots: a few KB to the page cache costs less
                # than a thread hop.
                try:
                    _write_atomically(target, json.dumps(self.client.export_last_known()))
                    written = generation
                except OSError as err:
                    if not warned:
                        log.warning("cannot share last-known namerd state in %s: %s", folder, err)
                        warned = True
            await trio.sleep(self.last_known_interval_s)

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
            await _wait_started(self._started, deadline, f"binding {path.show()}")
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

    def _dtab_text(self, local_dtab: Dtab) -> str:
        """The ``dtab`` parameter for ``local_dtab``.

        Requests without overrides all pass the router's very same Dtab object, so the last
        answer is remembered by identity: no re-printing of the dtab on the hot path.
        """
        last = self._last_dtab
        if last is not None and last[0] is local_dtab:
            return last[1]
        text = _full_dtab(self.base_dtab, local_dtab).show()
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
                f"{self.client.namespace!r}: {value.message}"
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
            f"binding {path.show()} timed out after {self.bind_timeout_s}s waiting for {what} "
            f"from namerd at {dsts} (namespace {self.client.namespace!r}; {detail})"
        )

    def state(self) -> dict[str, Any]:
        """The namerd client's state (watches, connections, reconnects), plus the kind."""
        return {"kind": self.kind, **self.client.state()}


# -- default ------------------------------------------------------------------------------------


@dataclass
class _Cached:
    generation: int
    result: Destination | InterpreterError | None  # None: some addr still pending
    last_used: float
    pending_id: Path | None = None
    touched_at: float = 0.0  # when the DNS entries behind ``result`` were last marked used


class DefaultInterpreter:
    """``default``: bind locally with ``shared.Binder``, local namers and ``/$/inet``.

    Args:
        dtab: the interpreter's base dtab (the router's ``dtab``; see the dtab convention).
        namers: namer configs, Linkerd's shape: ``{kind: io.l5d.fs, rootDir, prefix}``.
        bind_timeout_s: longest wait for a name's first complete answer. Default 10 s.
        idle_ttl_s: forget cached results and DNS names unused this long. Default 600 s.
        inet_refresh_interval_s: how often ``/$/inet`` host names are re-resolved. Default 5 s.
        max_cached: most (path, dtab) results kept. Default 1000.
        max_depth: binding depth limit (Finagle ``namerMaxDepth``). Default 100.
        getaddrinfo: the DNS function for ``/$/inet`` (tests inject slow or failing ones).

    Raises:
        InterpreterConfigError: a namer config is wrong or its kind unsupported.
    """

    kind: Final = "default"

    def __init__(
        self,
        dtab: Dtab,
        namers: Sequence[Mapping[str, Any]] = (),
        *,
        bind_timeout_s: float = DEFAULT_BIND_TIMEOUT_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        inet_refresh_interval_s: float = DEFAULT_INET_REFRESH_INTERVAL_S,
        max_cached: int = DEFAULT_MAX_CACHED,
        max_depth: int = 100,
        getaddrinfo: Any = None,
    ) -> None:
        if not bind_timeout_s > 0:
            raise ValueError(f"bind_timeout_s must be > 0, got {bind_timeout_s!r}")
        self.dtab = dtab
        self.bind_timeout_s = bind_timeout_s
        self.idle_ttl_s = idle_ttl_s
        self.max_cached = max_cached
        self.max_depth = max_depth
        self.changes = Changes()
        self.resolver = InetResolver(
            self.changes,
            refresh_interval_s=inet_refresh_interval_s,
            idle_ttl_s=idle_ttl_s,
            getaddrinfo=getaddrinfo,
        )
        self.namers: list[FsNamer] = []
        for i, cfg in enumerate(namers):
            if not isinstance(cfg, Mapping):
                raise InterpreterConfigError(f"namers[{i}] must be an object, got {cfg!r}")
            kind = cfg.get("kind")
            if kind != "io.l5d.fs":
                raise InterpreterConfigError(
                    f"namers[{i}]: unsupported namer kind {kind!r} (the linker has io.l5d.fs; "
                    "use namerd for other service discovery)"
                )
            try:
                namer = fs_namer_from_config(cfg, self.changes, self.resolver)
            except NamerConfigError as err:
                raise InterpreterConfigError(f"namers[{i}]: {err}") from None
            if any(n.prefix == namer.prefix for n in self.namers):
                raise InterpreterConfigError(
                    f"namers[{i}]: prefix {namer.prefix.show()} is used by another namer"
                )
            self.namers.append(namer)
        self._prefixes = [n.prefix for n in self.namers]
        self._lookup = lookup_by_prefix({n.prefix: n.lookup for n in self.namers})
        self._cache: dict[tuple[Path, Dtab], _Cached] = {}
        # Touching is cheap but not free; a few times per TTL is plenty.
        self._touch_interval_s = min(1.0, idle_ttl_s / 4)
        self._started = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the resolver and every namer (first directory scan included), then refresh.

        Raises:
            NamerConfigError: a namer's ``rootDir`` cannot be listed at start.
        """
        # The first scans run before any nursery so a bad rootDir surfaces as a plain
        # NamerConfigError for the worker to report, not wrapped in an exception group.
        for namer in self.namers:
            await namer.start()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.resolver.run)
            for namer in self.namers:
                await nursery.start(namer.run)
            self._started.set()
            task_status.started()
            interval_s = max(0.05, min(self.idle_ttl_s / 4, 30.0))
            while True:
                await trio.sleep(interval_s)
                self._reap()

    def _reap(self) -> None:
        cutoff = trio.current_time() - self.idle_ttl_s
        for key in [k for k, c in self._cache.items() if c.last_used < cutoff]:
            del self._cache[key]

    # -- binding --------------------------------------------------------------------------------
    def _addr(self, id: Path) -> Addr:
        for namer in self.namers:
            if id.startswith(namer.prefix):
                return namer.addr(id)
        if id.labels[:1] == (b"$",):
            return self.resolver.addr(id)
        return ADDR_NEG

    def _compute(self, path: Path, dtab: Dtab) -> _Cached:
        now = trio.current_time()
        generation = self.changes.generation
        try:
            tree = bind(dtab, path, self._lookup, self._prefixes, self.max_depth)
        except DelegationError as err:
            return _Cached(generation, BindFailure(f"binding {path.show()} failed: {err}"), now)
        addrs: dict[Path, Addr] = {}
        for b in leaves(tree):
            if b.id in addrs:
                continue
            addr = self._addr(b.id)
            if isinstance(addr, AddrPending):
                return _Cached(generation, None, now, b.id)
            addrs[b.id] = addr
        return _Cached(generation, Destination(tree, addrs), now)

    def resolve_now(self, path: Path, local_dtab: Dtab) -> Destination | None:
        """The cached destination if it is current, without waiting; else None."""
        if not self._started.is_set():
            return None
        cached = self._cache.get((path, _full_dtab(self.dtab, local_dtab)))
        if (
            cached is None
            or cached.generation != self.changes.generation
            or not isinstance(cached.result, Destination)
        ):
            return None
        return self._hit(cached)

    def _hit(self, cached: _Cached) -> Destination | None:
        """``cached``'s destination (marked used, its DNS names touched), or None."""
        now = cached.last_used = trio.current_time()
        if not isinstance(cached.result, Destination):
            return None
        if now - cached.touched_at > self._touch_interval_s:
            self._touch(cached.result)
            cached.touched_at = now
        return cached.result

    async def resolve(self, path: Path, local_dtab: Dtab) -> Destination:
        """See :meth:`Interpreter.resolve`: binding is cached until a namer changes."""
        deadline = trio.current_time() + self.bind_timeout_s
        if not self._started.is_set():  # the hot path skips a checkpoint and a cancel scope
            await _wait_started(self._started, deadline, f"binding {path.show()}")
        dtab = _full_dtab(self.dtab, local_dtab)
        key = (path, dtab)
        while True:
            cached = self._cache.get(key)
            if cached is None or cached.generation != self.changes.generation:
                cached = self._compute(path, dtab)
                self._store(key, cached)
            dest = self._hit(cached)
            if dest is not None:
                return dest
            if isinstance(cached.result, InterpreterError):
                raise type(cached.result)(cached.result.message)
            if trio.current_time() >= deadline:
                pending = cached.pending_id.show() if cached.pending_id else "?"
                raise BindTimeout(
                    f"binding {path.show()} timed out after {self.bind_timeout_s}s waiting for "
                    f"the addresses of {pending} (DNS has not answered)"
                )
            with trio.move_on_at(deadline):
                await self.changes.wait_changed(cached.generation)

    def _touch(self, dest: Destination) -> None:
        """Mark the DNS names behind a cached answer as used.

        A cached answer does not ask the resolver again, so without this a name in constant
        use would look idle, be dropped after ``idle_ttl_s``, and make a request wait for DNS.
        """
        for id in dest.addrs:
            self._addr(id)

    def _store(self, key: tuple[Path, Dtab], cached: _Cached) -> None:
        if key not in self._cache and len(self._cache) >= self.max_cached:
            oldest = min(self._cache, key=lambda k: self._cache[k].last_used)
            del self._cache[oldest]
        self._cache[key] = cached

    def state(self) -> dict[str, Any]:
        """Namers, DNS entries and cached bindings, for metrics and admin."""
        return {
            "kind": self.kind,
            "dtab": self.dtab.show(),
            "running": self._started.is_set(),
            "namers": [n.state() for n in self.namers],
            "inet": self.resolver.state(),
            "cached": len(self._cache),
            "bindings": [
                {
                    "path": p.show(),
                    "dtab": d.show(),
                    "result": (
                        show_tree(c.result.tree)
                        if isinstance(c.result, Destination)
                        else (str(c.result) if c.result is not None else "pending")
                    ),
                }
                for (p, d), c in list(self._cache.items())[:100]
            ],
        }


# -- config -------------------------------------------------------------------------------------

_NAMERD_KEYS: Final = frozenset({"kind", "dst", "namespace", "experimental", "retry"})
_DEFAULT_KEYS: Final = frozenset({"kind"})


def _retry(value: Any) -> tuple[float, float]:
    if value is None:
        return DEFAULT_RETRY_BASE_S, DEFAULT_RETRY_MAX_S
    if not isinstance(value, Mapping):
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: retry must be {{baseSeconds, maxSeconds}}, "
            f"got {value!r}"
        )
    unknown = sorted(set(value) - {"baseSeconds", "maxSeconds"})
    if unknown:
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: unknown key retry.{unknown[0]} "
            "(allowed: baseSeconds, maxSeconds)"
        )
    out = []
    for key, default in (
        ("baseSeconds", DEFAULT_RETRY_BASE_S),
        ("maxSeconds", DEFAULT_RETRY_MAX_S),
    ):
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InterpreterConfigError(
                f"interpreter io.l5d.namerd.http: retry.{key} must be a number, got {v!r}"
            )
        out.append(float(v))
    base, top = out
    if not 0 < base <= top:
        raise InterpreterConfigError(
            "interpreter io.l5d.namerd.http: retry needs 0 < baseSeconds <= maxSeconds, "
            f"got baseSeconds={base:g}, maxSeconds={top:g}"
        )
    return base, top


def build_interpreter(
    config: Mapping[str, Any] | None,
    base_dtab: Dtab,
    namers: Sequence[Mapping[str, Any]],
    *,
    bind_timeout_s: float = DEFAULT_BIND_TIMEOUT_S,
    idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
    last_known_dir: str | None = None,
    last_known_name: str = "router",
) -> Interpreter:
    """Build a router's interpreter from its ``interpreter`` config (Linkerd's shape).

    Args:
        config: None or ``{kind: default}``; or ``{kind: io.l5d.namerd.http, dst:
            /$/inet/127.0.0.1/4180, namespace: default, experimental: true, retry:
            {baseSeconds: 5, maxSeconds: 600}}``. ``experimental`` is accepted, not required.
        base_dtab: the router's ``dtab``.
        namers: the top-level ``namers`` (used by the default interpreter only, as in Linkerd).
        bind_timeout_s: the router's ``bindingTimeoutMs`` / 1000. Default 10 s.
        idle_ttl_s: forget names (watches, cached results) unused this long. Not configurable:
            Linkerd's ``bindingCache`` is refused (``linker.config.load``), so it is always
            ``DEFAULT_IDLE_TTL_S`` (600 s, ``linker.naming.local_namers``).
        last_known_dir / last_known_name: see :class:`NamerdHttpInterpreter` (namerd only).

    Raises:
        InterpreterConfigError: an unknown kind or key, a bad ``dst`` or ``retry``.
    """
    cfg: Mapping[str, Any] = config or {}
    if not isinstance(cfg, Mapping):
        raise InterpreterConfigError(f"interpreter must be an object with a kind, got {cfg!r}")
    kind = cfg.get("kind", "default")
    if kind == "default":
        unknown = sorted(set(cfg) - _DEFAULT_KEYS)
        if unknown:
            raise InterpreterConfigError(
                f"interpreter default: unknown key {unknown[0]!r} (transformers are not supported)"
            )
        return DefaultInterpreter(
            base_dtab, namers, bind_timeout_s=bind_timeout_s, idle_ttl_s=idle_ttl_s
        )
    if kind != "io.l5d.namerd.http":
        raise InterpreterConfigError(
            f"unknown interpreter kind {kind!r} (supported: default, io.l5d.namerd.http)"
        )
    unknown = sorted(set(cfg) - _NAMERD_KEYS)
    if unknown:
        hint = " (TLS to namerd is not supported)" if "tls" in unknown else ""
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: unknown key {unknown[0]!r}{hint} "
            f"(allowed: {', '.join(sorted(_NAMERD_KEYS))})"
        )
    if "dst" not in cfg:
        raise InterpreterConfigError(
            "interpreter io.l5d.namerd.http: dst is required, e.g. /$/inet/127.0.0.1/4180"
        )
    try:
        dst = parse_dst(cfg["dst"])
    except ValueError as err:
        raise InterpreterConfigError(f"interpreter io.l5d.namerd.http: {err}") from None
    namespace = cfg.get("namespace", DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise InterpreterConfigError(
            f"interpreter io.l5d.namerd.http: namespace must be a non-empty string, "
            f"got {namespace!r}"
        )
    if not isinstance(cfg.get("experimental", True), bool):
        raise InterpreterConfigError("interpreter io.l5d.namerd.http: experimental must be a bool")
    base_s, max_s = _retry(cfg.get("retry"))
    return NamerdHttpInterpreter(
        dst,
        namespace,
        base_dtab=base_dtab,
        retry_base_s=base_s,
        retry_max_s=max_s,
        idle_ttl_s=idle_ttl_s,
        bind_timeout_s=bind_timeout_s,
        last_known_dir=last_known_dir,
        last_known_name=last_known_name,
    )
