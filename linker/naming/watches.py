"""The namerd watch registry: every namerd watch stream of one worker, shared and kept alive.

What :class:`NamerdClient` does (docs/linkerd-compat.md, Interpreters; and where we differ,
why); the wire side (addresses, requests, the stream format) is ``transport.py``'s:

* **Watches.** One bind watch per distinct (path, local dtab) and one addr watch per bound id
  seen in any bind tree. Each is ONE long-lived HTTP/1.1 connection shared by every request of
  the worker: the first caller creates the watch, later ones read its current value from
  memory.
* **Seeding.** namerd puts each leaf's addr inline in the bind tree. Linkerd ignores it and
  waits for its own addr watch; we use it as the addr watch's first value when that watch has
  none yet, so a cold name costs one round trip instead of two. The addr watch's own values
  replace it as they arrive, and they can be older: namerd's workers (and replicas) each see
  a namer change on their own, so a new ``io.l5d.fs`` service can be bound by the worker
  serving the bind stream and still ``neg`` on the one serving the addr stream, until that
  one's next poll (bound, neg, bound). Only the end state is promised.
* **Last-known state.** A value stays until namerd sends another one: a closed stream, a
  refused connection or a namerd restart keeps it (Linkerd's behaviour; no expiry).
  Reconnected streams start with namerd's *current* value, so changes made while we were away
  are picked up on reconnect. Other workers' last-known answers (``last_known.py``) are used
  only by a watch that has no value and cannot reach namerd.
* **Reconnects, forever.** A stream that had connected and then ended (namerd restart, EOF,
  reset) is re-opened after ``first_retry_s`` (default 0.2 s, jittered): Linkerd re-sends at
  once, we wait a moment so a namerd that accepts and closes cannot make us spin. Failures to
  get a 200 back-off exponentially with jitter (``shared.backoff``): ``first_retry_s``,
  then ``retry_base_s``, doubling up to ``retry_max_s`` (Linkerd's ``retry`` block; our
  defaults are 0.5 s and 5 s where Linkerd's are 5 s and 600 s, so a namerd that returns is
  used again within seconds, not minutes). The quick first retry covers the common blip (one
  namerd replica restarting); the jittered exponential part still spreads a fleet's retries.
  And when one watch gets through again, the others waiting out a backoff retry at once
  (within ``rejoin_jitter_s``): namerd is back, so every name is current again in about the
  time of the first successful retry, not of the longest backoff (up to ``retry_max_s``).
* **Dead connections.** A stream that brings nothing, not even a heartbeat, for
  ``stream_idle_timeout_s`` (default 60 s, four of our namerd's default 15 s heartbeats) is
  considered dead (a NAT or a half-open TCP connection) and re-opened. Against Linkerd's namerd,
  which never heartbeats, that only costs a cheap reconnect per idle minute.
* **Idle watches.** A watch nobody asked about for ``idle_ttl_s`` (default 600 s, Linkerd's
  ``bindingCache.idleTtlSecs``) is closed, and at most ``max_watches`` (default 1000, Linkerd's
  binding cache size) of each kind are kept, least recently used first out, so random
  per-request dtabs cannot open connections without bound.

Everything runs in the nursery of :meth:`NamerdClient.run`; callers (request tasks of the same
trio run) only read memory and wait on :attr:`NamerdClient.changes`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import quote, urlencode

import h11
import trio

from linker.naming.local_namers import DEFAULT_IDLE_TTL_S, Changes
from linker.naming.transport import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_NAMESPACE,
    BindError,
    BindValue,
    NamerdError,
    connect,
    decode_addr_line,
    decode_bind_line,
    missing_namespace,
    watch_request,
)
from shared import (
    ADDR_PENDING,
    Addr,
    AddrBound,
    AddrFailed,
    AddrPending,
    Path,
    leaves,
    show_tree,
)
from shared.backoff import backoff_s

__all__ = [
    "DEFAULT_FIRST_RETRY_S",
    "DEFAULT_MAX_WATCHES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "DEFAULT_RETRY_BASE_S",
    "DEFAULT_RETRY_MAX_S",
    "DEFAULT_STREAM_IDLE_TIMEOUT_S",
    "NamerdClient",
    "Watch",
]

log = logging.getLogger("linker.namerd")

#: ``retry.baseSeconds``: the second retry waits this long (then it doubles). Linkerd: 5 s.
DEFAULT_RETRY_BASE_S: Final = 0.5
#: ``retry.maxSeconds``: the longest wait between two connection attempts. Linkerd: 600 s,
#: which left linkers on stale routes for up to ten minutes after namerd came back; a
#: reconnect is one cheap request, and jitter spreads a fleet's retries out.
DEFAULT_RETRY_MAX_S: Final = 5.0
#: The first retry after a failure or a lost stream (ours; see the module docstring).
DEFAULT_FIRST_RETRY_S: Final = 0.2
#: When a watch reaches namerd again, the others in backoff retry within this (spread).
DEFAULT_REJOIN_JITTER_S: Final = 0.2
# A watch nobody used for DEFAULT_IDLE_TTL_S is closed: the same idle rule as the resolver
# cache (Linkerd's ``bindingCache.idleTtlSecs``), so the one constant lives in local_namers.
#: A stream silent (no value, no heartbeat) for this long is re-opened.
DEFAULT_STREAM_IDLE_TIMEOUT_S: Final = 60.0
#: The longest wait for the body of namerd's refusal of a watch (it is kept as the error).
DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
#: Most watches of each kind (bind, addr) kept open (Linkerd's binding cache size).
DEFAULT_MAX_WATCHES: Final = 1000

#: A single streamed value larger than this is refused (protects the worker's memory).
MAX_LINE_BYTES: Final = 4 * 1024 * 1024
_RECEIVE_BYTES: Final = 64 * 1024


WatchStatus = Literal["connecting", "connected", "retrying", "closed"]


@dataclass(eq=False)
class Watch:
    """One watch stream and its last-known value.

    ``value`` is None until the first value arrives; for a bind watch it is a
    :class:`BindValue` or :class:`BindError`, for an addr watch an ``Addr``. The rest is for
    admin pages and metrics. Times ending in ``_at`` are wall-clock (``time.time()``);
    ``last_used`` is on the trio clock.
    """

    kind: Literal["bind", "addr"]
    path: Path
    dtab: str | None
    target: str
    last_used: float
    value: BindValue | BindError | Addr | None = None
    status: WatchStatus = "connecting"
    dst: tuple[str, int] | None = None
    reconnects: int = 0
    last_update_at: float | None = None
    last_data_at: float | None = None
    last_error: str | None = None
    retry_in_s: float | None = None
    raw: bytes | None = field(default=None, repr=False)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope, repr=False)
    # The interpreter's last answer for a bind watch: (changes.generation, destination, the
    # addr watches it used). Valid while no watch changed, so the hot path skips the tree walk.
    resolved: tuple[int, Any, tuple[Watch, ...]] | None = field(default=None, repr=False)
    # The value came from another worker's last-known state (see NamerdClient.import_last_known)
    # because namerd could not be reached; False again once namerd itself answers.
    last_known: bool = False
    # For a bind watch whose value is neg: the value the namespace was last checked for, and
    # what that found (NamerdClient.why_neg); a new value from namerd means a new check.
    neg_checked: Any = field(default=None, repr=False)
    neg_reason: str | None = field(default=None, repr=False)

    def is_connected(self) -> bool:
        """True while namerd's 200 answer is streaming to us."""
        return self.status == "connected"

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary."""
        out: dict[str, Any] = {"path": self.path.show()}
        if self.dtab is not None:
            out["dtab"] = self.dtab
        out.update(
            status=self.status,
            dst=None if self.dst is None else f"{self.dst[0]}:{self.dst[1]}",
            has_value=self.value is not None,
            value=_summary(self.value),
            reconnects=self.reconnects,
            last_update_at=self.last_update_at,
            last_data_at=self.last_data_at,
            last_error=self.last_error,
            retry_in_s=self.retry_in_s,
            last_known=self.last_known,
        )
        return out


def _summary(value: BindValue | BindError | Addr | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, BindValue):
        return show_tree(value.tree)
    if isinstance(value, BindError):
        return f"error: {value.message}"
    if isinstance(value, AddrBound):
        return " ".join(f"{a.ip}:{a.port}" for a in value.sorted_addrs()) or "(no endpoints)"
    if isinstance(value, AddrFailed):
        return f"failed: {value.cause}"
    return repr(value)


class NamerdClient:
    """Shared namerd watches for one worker; see the module docstring.

    Args:
        dst: namerd addresses, tried in order.
        namespace: the namerd namespace (dtab) to bind in. Default ``default``.
        retry_base_s / retry_max_s: the exponential backoff (Linkerd's ``retry``); defaults
            0.5 s and 5 s (Linkerd's: 5 s and 600 s). ``first_retry_s``: the first, quick
            retry; default 0.2 s.
        idle_ttl_s: close watches unused this long. Default 600 s.
        connect_timeout_s: per namerd address. Default 3 s.
        stream_idle_timeout_s: re-open a stream silent this long. Default 60 s.
        request_timeout_s: reading the body of a refused watch request. Default 5 s.
        max_watches: most watches of each kind. Default 1000.
        rejoin_jitter_s: when one watch reaches namerd again, the others waiting out a backoff
            retry at a random moment within this. Default 0.2 s.
        rand: the jitter source (``random.random``); injectable for tests.
    """

    def __init__(
        self,
        dst: Sequence[tuple[str, int]],
        namespace: str = DEFAULT_NAMESPACE,
        *,
        retry_base_s: float = DEFAULT_RETRY_BASE_S,
        retry_max_s: float = DEFAULT_RETRY_MAX_S,
        first_retry_s: float = DEFAULT_FIRST_RETRY_S,
        idle_ttl_s: float = DEFAULT_IDLE_TTL_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        stream_idle_timeout_s: float = DEFAULT_STREAM_IDLE_TIMEOUT_S,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        max_watches: int = DEFAULT_MAX_WATCHES,
        rejoin_jitter_s: float = DEFAULT_REJOIN_JITTER_S,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not dst:
            raise ValueError("dst must hold at least one namerd address")
        if not namespace:
            raise ValueError("namespace must not be empty")
        if not 0 < retry_base_s <= retry_max_s:
            raise ValueError(
                f"retry needs 0 < baseSeconds <= maxSeconds, got {retry_base_s}, {retry_max_s}"
            )
        for name, value in (
            ("first_retry_s", first_retry_s),
            ("idle_ttl_s", idle_ttl_s),
            ("connect_timeout_s", connect_timeout_s),
            ("stream_idle_timeout_s", stream_idle_timeout_s),
            ("request_timeout_s", request_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if rejoin_jitter_s < 0:
            raise ValueError(f"rejoin_jitter_s must be >= 0, got {rejoin_jitter_s!r}")
        if max_watches < 1:
            raise ValueError(f"max_watches must be >= 1, got {max_watches!r}")
        self.dst = list(dst)
        self.namespace = namespace
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.first_retry_s = first_retry_s
        self.idle_ttl_s = idle_ttl_s
        self.connect_timeout_s = connect_timeout_s
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self.max_watches = max_watches
        self.rejoin_jitter_s = rejoin_jitter_s
        self._rand = rand
        # Set (and replaced) each time a stream gets namerd's 200: wakes watches in backoff.
        self._reached = trio.Event()
        #: Notified whenever any watch's value changes.
        self.changes = Changes()
        self._neg_lock = trio.Lock()
        self._binds: dict[tuple[Path, str], Watch] = {}
        self._addrs: dict[Path, Watch] = {}
        self._nursery: trio.Nursery | None = None
        self._ns_quoted = quote(namespace, safe="")
        self.closed_idle = 0
        self.closed_evicted = 0
        # (kind, path text, dtab text or None) -> namerd's raw answer, from other workers'
        # last-known state: used only for a watch that has no value and can't reach namerd.
        self._last_known: dict[tuple[str, str, str | None], bytes] = {}
        self.used_last_known = 0

    # -- watches --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while :meth:`run` is running (watches can be opened)."""
        return self._nursery is not None

    def bind_watch(self, path: Path, dtab: str) -> Watch:
        """The bind watch for (``path``, ``dtab`` as text), opened if needed; marks it used.

        Raises:
            RuntimeError: :meth:`run` is not running.
        """
        key = (path, dtab)
        now = trio.current_time()
        watch = self._binds.get(key)
        if watch is not None:
            watch.last_used = now
            return watch
        query = urlencode({"path": path.show(), "dtab": dtab, "watch": "1"}, quote_via=quote)
        watch = Watch("bind", path, dtab, f"/api/1/bind/{self._ns_quoted}?{query}", now)
        self._open(self._binds, key, watch)
        return watch

    def addr_watch(self, id: Path, seed: Addr | None = None) -> Watch:
        """The addr watch for bound ``id``, opened if needed; marks it used.

        ``seed`` (the addr namerd showed inline in a bind tree) becomes the value of a watch
        that has none yet.

        Raises:
            RuntimeError: :meth:`run` is not running.
        """
        now = trio.current_time()
        watch = self._addrs.get(id)
        if watch is None:
            query = urlencode({"path": id.show(), "watch": "1"}, quote_via=quote)
            watch = Watch("addr", id, None, f"/api/1/addr/{self._ns_quoted}?{query}", now)
            self._open(self._addrs, id, watch)
        else:
            watch.last_used = now
        if watch.value is None and seed is not None and not isinstance(seed, AddrPending):
            watch.value = seed
            watch.last_update_at = time.time()
            self.changes.notify()
        return watch

    def _open(self, table: dict[Any, Watch], key: Any, watch: Watch) -> None:
        if self._nursery is None:
            raise RuntimeError("the namerd client is not running (call run() in a nursery)")
        while len(table) >= self.max_watches:
            oldest = min(table, key=lambda k: table[k].last_used)
            self._close(table, oldest)
            self.closed_evicted += 1
        table[key] = watch
        self._nursery.start_soon(self._watch_loop, watch)

    def _close(self, table: dict[Any, Watch], key: Any) -> None:
        watch = table.pop(key)
        watch.status = "closed"
        watch.scope.cancel()

    def reap_idle(self) -> int:
        """Close every watch unused for ``idle_ttl_s``; returns how many were closed."""
        cutoff = trio.current_time() - self.idle_ttl_s
        closed = 0
        for table in (self._binds, self._addrs):
            for key in [k for k, w in table.items() if w.last_used < cutoff]:
                self._close(table, key)
                closed += 1
        self.closed_idle += closed
        return closed

    # -- the loops ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the watch loops and the idle reaper until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                # Check a few times per TTL so a watch lives at most ~1.25 TTL unused.
                interval_s = max(0.05, min(self.idle_ttl_s / 4, 30.0))
                while True:
                    await trio.sleep(interval_s)
                    self.reap_idle()
            finally:
                self._nursery = None
                for table in (self._binds, self._addrs):
                    for key in list(table):
                        self._close(table, key)

    async def _watch_loop(self, watch: Watch) -> None:
        """Keep ``watch`` streaming, reconnecting forever, until its scope is cancelled."""
        with watch.scope:
            attempt = 0
            while True:
                unreachable = True  # the last failure was namerd not answering at all
                watch.status = "connecting"
                watch.retry_in_s = None
                connected = False
                try:
                    connected = await self._stream(watch)
                    error = "namerd ended the stream"
                except NamerdError as err:
                    error = str(err)
                    connected = watch.is_connected()
                    unreachable = err.status is None
                except Exception as err:  # a bug must not kill every watch of the worker
                    log.exception("namerd watch %s %s crashed", watch.kind, watch.path)
                    error = f"unexpected error: {type(err).__name__}: {err}"
                    connected = False
                watch.last_error = error
                if not connected and watch.value is None:
                    self._use_last_known(watch)
                attempt = 1 if connected else attempt + 1
                if connected:
                    # A stream that worked and ended (namerd restarting, an idle NAT) is routine.
                    log.info(
                        "namerd stream %s %s ended (%s); re-opening", watch.kind, watch.path, error
                    )
                else:
                    # The first failures of a streak are worth a warning; the rest would flood logs.
                    level = logging.WARNING if attempt <= 2 else logging.DEBUG
                    log.log(
                        level, "namerd request failed: %s %s: %s", watch.kind, watch.path, error
                    )
                delay_s = backoff_s(
                    attempt,
                    first_s=self.first_retry_s,
                    base_s=self.retry_base_s,
                    max_s=self.retry_max_s,
                    jitter=self._rand(),
                )
                watch.status = "retrying"
                watch.retry_in_s = delay_s
                reached = self._reached
                with trio.move_on_after(delay_s):
                    if not unreachable:
                        # namerd answered, with an error for this watch: another watch getting
                        # through says nothing about this one, so wait out the backoff.
                        await trio.sleep_forever()
                    await reached.wait()  # another watch got through: namerd is back
                    await trio.sleep(self._rand() * self.rejoin_jitter_s)
                watch.reconnects += 1

    async def _stream(self, watch: Watch) -> bool:
        """Stream ``watch`` until namerd ends it; True if a 200 response was received.

        Raises:
            NamerdError: connecting failed, namerd did not answer 200, the stream broke or
                went silent for ``stream_idle_timeout_s``.
        """
        stream, dst = await connect(self.dst, self.connect_timeout_s)
        watch.dst = dst
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            try:
                await stream.send_all(
                    conn.send(watch_request(watch.target, *dst, close=False))
                    + (conn.send(h11.EndOfMessage()) or b"")
                )
                buf = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        with trio.move_on_after(self.stream_idle_timeout_s) as timer:
                            data = await stream.receive_some(_RECEIVE_BYTES)
                        if timer.cancelled_caught:
                            raise NamerdError(
                                f"nothing from namerd for {self.stream_idle_timeout_s}s "
                                "(not even a heartbeat)"
                            )
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Response):
                        if event.status_code != 200:
                            body = await self._read_body(conn, stream, 4096)
                            self._http_error(watch, event.status_code, body)
                            raise NamerdError(
                                f"namerd answered {event.status_code}: "
                                f"{body.decode('utf-8', 'replace').strip()[:500]}",
                                status=event.status_code,
                            )
                        watch.status = "connected"
                        watch.last_data_at = time.time()
                        self._reached.set()  # wake the watches in backoff (_watch_loop)
                        self._reached = trio.Event()
                    elif isinstance(event, h11.Data):
                        watch.last_data_at = time.time()
                        buf += event.data
                        while (i := buf.find(b"\n")) >= 0:
                            line = bytes(buf[:i])
                            del buf[: i + 1]
                            self._on_line(watch, line)
                        if len(buf) > MAX_LINE_BYTES:
                            raise NamerdError(f"a value longer than {MAX_LINE_BYTES} bytes")
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        if buf.strip():
                            self._on_line(watch, bytes(buf))
                        return watch.status == "connected"
            except h11.ProtocolError as err:
                raise NamerdError(f"broken HTTP from namerd: {err}") from err
            except (trio.BrokenResourceError, OSError) as err:
                raise NamerdError(f"connection to namerd lost: {err}") from err

    async def why_neg(self, watch: Watch) -> str | None:
        """Why ``watch`` (a bind watch whose tree is neg) bound to nothing, if namerd can say:
        :func:`~linker.naming.transport.missing_namespace` when the namespace does not exist.

        namerd answers a bind in a missing namespace as in an empty one (``neg``), so the
        namespace is looked up (``GET /api/1/dtabs/<ns>``: 404 when missing), once per value
        namerd sent for the watch: a failing route costs one extra request to namerd per
        change of its binding, not one per request. None when the namespace exists, or when
        namerd could not be asked (``connect_timeout_s``, then ``request_timeout_s``).
        """
        async with self._neg_lock:  # concurrent failing requests share one lookup
            value = watch.value
            if watch.neg_checked is not None and watch.neg_checked is value:
                return watch.neg_reason
            reason = None
            try:
                stream, dst = await connect(self.dst, self.connect_timeout_s)
                async with stream:
                    status = await self._status_of(stream, dst, f"/api/1/dtabs/{self._ns_quoted}")
                if status == 404:
                    reason = missing_namespace(self.namespace, *dst)
            except NamerdError:
                pass
            watch.neg_checked, watch.neg_reason = value, reason
            return reason

    async def _status_of(
        self, stream: trio.SocketStream, dst: tuple[str, int], target: str
    ) -> int | None:
        """The status of namerd's answer to one ``GET`` (None: none within
        ``request_timeout_s``)."""
        conn = h11.Connection(h11.CLIENT)
        try:
            await stream.send_all(
                conn.send(watch_request(target, *dst, close=True))
                + (conn.send(h11.EndOfMessage()) or b"")
            )
            with trio.move_on_after(self.request_timeout_s):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(_RECEIVE_BYTES))
                    elif isinstance(event, h11.Response):
                        return int(event.status_code)
                    elif isinstance(event, h11.ConnectionClosed):
                        return None
        except (h11.ProtocolError, trio.BrokenResourceError, OSError):
            return None
        return None

    async def _read_body(
        self, conn: h11.Connection, stream: trio.SocketStream, limit: int
    ) -> bytes:
        """The rest of a response body, at most ``limit`` bytes, bounded in time."""
        body = bytearray()
        with trio.move_on_after(self.request_timeout_s):
            while len(body) < limit:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(_RECEIVE_BYTES))
                elif isinstance(event, h11.Data):
                    body += event.data
                else:
                    break
        return bytes(body[:limit])

    def _http_error(self, watch: Watch, status: int, body: bytes) -> None:
        """A non-200 answer. A 4xx with no value yet becomes the value: namerd refused the
        request itself, and a caller waiting for a first value should hear why at once."""
        if status >= 500 or watch.value is not None:
            return
        text = body.decode("utf-8", "replace").strip()[:500]
        message = f"namerd answered {status} for {watch.kind} {watch.path.show()}: {text}"
        watch.value = BindError(message) if watch.kind == "bind" else AddrFailed(message)
        watch.last_update_at = time.time()
        self.changes.notify()

    def _on_line(self, watch: Watch, line: bytes, *, last_known: bool = False) -> None:
        line = line.strip()
        if not line:
            return  # heartbeat
        watch.last_known = last_known
        if line == watch.raw:
            return  # a repeat (namerd suppresses them, but a reconnect resends the current one)
        if watch.kind == "bind":
            value: BindValue | BindError | Addr = decode_bind_line(line)
            if isinstance(value, BindValue):
                for leaf in leaves(value.tree):
                    addr = self.addr_watch(leaf.id, value.inline_addrs.get(leaf.id))
                    if last_known and addr.raw is None and addr.value is not None:
                        addr.last_known = True  # seeded from a borrowed answer: say so
        else:
            value = decode_addr_line(line)
            if value is ADDR_PENDING or isinstance(value, AddrPending):
                return  # namerd never sends it; if one does, keep waiting for a real value
        watch.raw = line
        watch.value = value
        watch.last_update_at = time.time()
        self.changes.notify()

    # -- last-known state shared between workers ------------------------------------------------
    def export_last_known(self) -> dict[str, Any]:
        """Every watch's last answer from namerd, as JSON-able data for
        :meth:`import_last_known` in another worker (or a successor of this one)."""
        watches = [
            {
                "kind": w.kind,
                "path": w.path.show(),
                "dtab": w.dtab,
                "raw": w.raw.decode("utf-8", "replace"),
            }
            for table in (self._binds, self._addrs)
            for w in table.values()
            if w.raw is not None
        ]
        return {"namespace": self.namespace, "watches": watches}

    def import_last_known(self, state: Mapping[str, Any]) -> int:
        """Remember another worker's last-known answers (a later import wins per name).

        They are used only by a watch that has no value yet and whose connection to namerd
        failed: a worker started (or restarted, or replaced by SIGHUP) while namerd is down
        routes the names its siblings knew instead of failing them after bindingTimeoutMs.
        As soon as namerd answers, its answer replaces them. State for another namespace is
        ignored. Returns how many answers were taken.
        """
        if state.get("namespace") != self.namespace:
            return 0
        taken = 0
        for item in state.get("watches", ()):
            try:
                kind, path, dtab = str(item["kind"]), str(item["path"]), item.get("dtab")
                raw = str(item["raw"]).encode("utf-8")
            except (KeyError, TypeError):
                continue  # a damaged entry costs only itself
            if kind in ("bind", "addr") and raw:
                self._last_known[(kind, path, None if dtab is None else str(dtab))] = raw
                taken += 1
        return taken

    def _use_last_known(self, watch: Watch) -> None:
        raw = self._last_known.get((watch.kind, watch.path.show(), watch.dtab))
        if raw is None:
            return
        try:
            self._on_line(watch, raw, last_known=True)
        except Exception as err:  # a bad entry must not stop the watch from retrying namerd
            log.warning("ignoring last-known %s %s: %s", watch.kind, watch.path.show(), err)
            return
        self.used_last_known += 1
        log.warning(
            "namerd unreachable: %s %s routes on the last-known state of another worker until "
            "namerd answers",
            watch.kind,
            watch.path.show(),
        )

    # -- state ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Watch counts and per-watch details, for metrics and admin pages."""
        binds, addrs = list(self._binds.values()), list(self._addrs.values())
        every = binds + addrs
        return {
            "namespace": self.namespace,
            "dst": [f"{h}:{p}" for h, p in self.dst],
            "running": self.running,
            "watches": {
                "bind": len(binds),
                "addr": len(addrs),
                "connected": sum(w.status == "connected" for w in every),
                "retrying": sum(w.status == "retrying" for w in every),
                "connecting": sum(w.status == "connecting" for w in every),
                "last_known": sum(w.last_known for w in every),
            },
            "used_last_known": self.used_last_known,
            "reconnects": sum(w.reconnects for w in every),
            "closed_idle": self.closed_idle,
            "closed_evicted": self.closed_evicted,
            "last_update_at": max(
                (w.last_update_at for w in every if w.last_update_at is not None), default=None
            ),
            "bind": [w.describe() for w in binds],
            "addr": [w.describe() for w in addrs],
        }
