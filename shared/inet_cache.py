"""The cache of ``/$/inet`` and ``/$/fixedinet`` answers, as a sans-I/O state machine.

Binding ``/$/inet/<host>/<port>`` is pure (:func:`shared.names.system_lookup`); turning a host
name into addresses is DNS, which the linker (trio) and namerd (asyncio) each do their own way.
Everything else about the cache is one set of rules, kept here in the style of h11: no clock,
no I/O, no tasks. Every method that depends on time takes ``now_s`` (any monotonic clock, in
seconds), and each call returns what the driver must do.

Theory of operation
-------------------
* **Ask.** ``ask(host, port, fixed, now_s)`` answers at once: a numeric host (``127.0.0.1``,
  ``::1``) is bound without DNS and never cached; a port outside 0-65535 is ``AddrFailed``;
  a host name is looked up under ``(host.lower(), port, fixed)`` (DNS names are
  case-insensitive). The first ask creates an entry that answers ``pending`` and is due for
  resolution at once (``InetAsk.new`` tells the driver to poll now). Every ask marks the
  entry used.
* **Poll.** ``poll(now_s)`` returns the keys to resolve now (they are marked in flight, so a
  key is never handed out twice), the keys evicted, and when to poll next. The driver resolves
  each key with getaddrinfo under its own timeout and hands the outcome to ``resolved()``
  (:func:`inet_outcome` of the tuples or the exception), and logs what ``resolved`` says
  (``InetResolved.logs``: the cache decides, the driver's logger writes). It must poll again
  when a resolution ends, when
  ``ask`` says ``new``, or at ``next_poll_s``, whichever is first.
* **Refresh.** An ``inet`` entry is due again ``refresh_interval_s`` after each resolution
  ends. A ``fixedinet`` entry is resolved until it has one good answer and never again
  (Finagle's meaning of "fixed"); a failure is retried every interval.
* **Idle eviction.** An entry nobody asked about for ``idle_ttl_s`` is dropped (each distinct
  name would otherwise cost a refresh forever: random names from scanners made namerd leak
  watches, Linkerd issue #1766). An entry with a resolution in flight is not evicted until
  it ends (bounded by the driver's timeout), so an outcome always belongs to a live entry. The
  driver notifies on eviction, so a binding that still cares asks again and re-creates it.
* **Failures.** A name that does not exist (``EAI_NONAME``/``EAI_NODATA``), cannot be a host
  name, or has no addresses is ``AddrFailed`` saying why, even if it resolved before: the
  name is gone (``AddrFailed`` rather than ``neg`` so the answer says *why*). A transient
  failure (``EAI_AGAIN``, another OS error, a timeout) keeps the last good answer, because
  dropping every endpoint on a DNS hiccup is worse than routing to addresses that were right
  one interval ago; with no good answer yet, it is ``AddrFailed`` too, and refresh retries.
  ``resolved()`` says what to log, once per episode rather than on every refresh.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .addr import ADDR_PENDING, Addr, AddrBound, Address, AddrFailed
from .fsformat import parse_ip

__all__ = [
    "InetAsk",
    "InetCache",
    "InetDue",
    "InetEntry",
    "InetError",
    "InetKey",
    "InetResolved",
    "addr_from_getaddrinfo",
    "inet_error",
    "inet_outcome",
    "inet_timeout",
]

#: ``(host lower-cased, port, fixed)``: one cache entry.
InetKey: TypeAlias = tuple[str, int, bool]

# getaddrinfo errors that mean "this name does not exist", as opposed to "DNS is unwell".
# EAI_NODATA is missing from the socket module on some platforms (e.g. macOS).
_NAME_GONE_ERRNOS: Final = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None)) if code is not None
)


@dataclass(frozen=True, slots=True)
class InetError:
    """A resolution that gave no addresses: ``cause`` says why; ``transient`` if DNS is unwell
    (keep the last good answer) rather than the name being gone."""

    cause: str
    transient: bool
    traceback: str | None = None  # set when the "error" is a bug, to be logged in full


def addr_from_getaddrinfo(host: str, port: int, infos: Iterable[tuple[Any, ...]]) -> Addr:
    """``socket.getaddrinfo``-shaped tuples as an Addr for ``port``.

    The IPv6 zone (``fe80::1%eth0``) is dropped, as :class:`Address` holds a plain IP; no
    tuples at all is ``AddrFailed`` (the name exists but has nothing to route to).
    """
    ips = {str(info[4][0]).split("%", 1)[0] for info in infos}
    if not ips:
        return AddrFailed(f"host {host!r} has no addresses")
    return AddrBound(frozenset(Address(ip, port) for ip in ips))


def inet_error(host: str, exc: BaseException) -> InetError:
    """What a getaddrinfo exception means: the name is gone, or DNS is unwell.

    ``socket.gaierror`` with ``EAI_NONAME``/``EAI_NODATA`` and ``UnicodeError``/``ValueError``
    (the idna codec refusing e.g. an empty label, before any DNS) are permanent; every other
    error (``EAI_AGAIN``, an ``OSError``) is transient, and so is any other exception (a bug,
    e.g. in an injected getaddrinfo): retried every interval, with its traceback to log, so it
    neither leaves the name pending forever nor spins (forgetting the entry would let a
    waiting binding re-create it and crash again at once).
    """
    if isinstance(exc, socket.gaierror):
        detail = f"{exc.strerror} (getaddrinfo error {exc.errno})"
        if exc.errno in _NAME_GONE_ERRNOS:
            return InetError(f"host {host!r} not found: {detail}", transient=False)
        return InetError(f"cannot resolve host {host!r}: {detail}", transient=True)
    if isinstance(exc, UnicodeError | ValueError):
        return InetError(f"invalid host name {host!r}: {exc}", transient=False)
    if isinstance(exc, OSError):
        return InetError(f"cannot resolve host {host!r}: {exc}", transient=True)
    trace = "".join(traceback.format_exception(exc))
    return InetError(f"resolving host {host!r} failed: {exc!r}", transient=True, traceback=trace)


def inet_timeout(host: str, timeout_s: float) -> InetError:
    """A getaddrinfo that did not answer within ``timeout_s``: transient."""
    return InetError(f"resolving host {host!r} timed out after {timeout_s} s", transient=True)


def inet_outcome(
    host: str, port: int, got: Iterable[tuple[Any, ...]] | BaseException, timeout_s: float
) -> Addr | InetError:
    """What a driver's getaddrinfo call gave, for :meth:`InetCache.resolved`.

    ``got`` is the tuples, or the exception raised; the driver turns its runtime's timeout
    into ``TimeoutError`` (asyncio's already is), which means ``timeout_s`` ran out.
    """
    if isinstance(got, TimeoutError):
        return inet_timeout(host, timeout_s)
    if isinstance(got, BaseException):
        return inet_error(host, got)
    return addr_from_getaddrinfo(host, port, got)


@dataclass(slots=True)
class InetEntry:
    """One cached host:port. Read-only for drivers (``host`` is as first asked)."""

    host: str
    port: int
    fixed: bool
    last_asked_s: float
    addr: Addr = ADDR_PENDING
    resolutions: int = 0  # how many resolutions ended (answers, errors and timeouts)
    last_error: str | None = None
    in_flight: bool = False
    # When the next resolution is due; None once a fixedinet entry has a good answer.
    due_s: float | None = field(default=None, repr=False)
    # Serving the last good answer after a transient error (to log once per episode).
    stale: bool = field(default=False, repr=False)


@dataclass(frozen=True, slots=True)
class InetAsk:
    """The answer to ``ask``; ``new``: an entry was created, so the driver must poll now."""

    addr: Addr
    new: bool = False


@dataclass(frozen=True, slots=True)
class InetDue:
    """What ``poll`` found: keys to resolve now, keys evicted, and when to poll next."""

    resolve: tuple[InetKey, ...]
    evicted: tuple[InetKey, ...]
    next_poll_s: float | None  # None: nothing scheduled (wait for an ask or a resolution)


@dataclass(frozen=True, slots=True)
class InetResolved:
    """What ``resolved`` did: whether the answer changed, and what to log (if anything)."""

    changed: bool
    warning: str | None = None  # a failure starting (logged once per episode)
    recovered: str | None = None  # a name that had failed or was stale resolves again
    error: str | None = None  # a bug, with its traceback (logged every time)

    @property
    def logs(self) -> tuple[tuple[int, str], ...]:
        """``(logging level, message)`` pairs for the driver's logger."""
        return tuple(
            (level, message)
            for level, message in (
                (logging.ERROR, self.error),
                (logging.WARNING, self.warning),
                (logging.INFO, self.recovered),
            )
            if message is not None
        )


class InetCache:
    """The ``/$/inet`` cache's rules; see the module docstring.

    Args:
        refresh_interval_s: how long after a resolution an ``inet`` entry is resolved again.
        idle_ttl_s: drop entries nobody asked about for this long.
        resolve_timeout_s: the driver's limit on one getaddrinfo (kept here so both drivers
            check it the same way and say it in :func:`inet_timeout`).

    Raises:
        ValueError: an interval that is not > 0 (NaN included).
    """

    def __init__(
        self, *, refresh_interval_s: float, idle_ttl_s: float, resolve_timeout_s: float
    ) -> None:
        for name, value in (
            ("refresh_interval_s", refresh_interval_s),
            ("idle_ttl_s", idle_ttl_s),
            ("resolve_timeout_s", resolve_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.refresh_interval_s = refresh_interval_s
        self.idle_ttl_s = idle_ttl_s
        self.resolve_timeout_s = resolve_timeout_s
        self._entries: dict[InetKey, InetEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[InetEntry]:
        """Every cached entry, oldest first."""
        return iter(list(self._entries.values()))

    def get(self, host: str, port: int, fixed: bool) -> InetEntry | None:
        """The entry for ``host:port`` (any case), or None."""
        return self._entries.get((host.lower(), port, fixed))

    def ask(self, host: str, port: int, fixed: bool, now_s: float) -> InetAsk:
        """``host:port`` as an Addr: at once for an IP, else from the cache (``pending`` first).

        Asking marks the entry used, which keeps it (and its refresh) alive.
        """
        if not 0 <= port <= 65535:
            return InetAsk(AddrFailed(f"port {port} out of range 0-65535"))
        if (ip := parse_ip(host)) is not None:
            return InetAsk(AddrBound(frozenset({Address(ip, port)})))
        key = (host.lower(), port, fixed)
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = InetEntry(host, port, fixed, last_asked_s=now_s, due_s=now_s)
            return InetAsk(ADDR_PENDING, new=True)
        entry.last_asked_s = max(entry.last_asked_s, now_s)
        return InetAsk(entry.addr)

    def poll(self, now_s: float) -> InetDue:
        """Evict idle entries, hand out the due ones (now in flight), say when to poll next."""
        resolve: list[InetKey] = []
        evicted: list[InetKey] = []
        next_poll_s: float | None = None
        for key, entry in list(self._entries.items()):
            if entry.in_flight:
                continue  # its end makes the driver poll again
            idle_at_s = entry.last_asked_s + self.idle_ttl_s
            if now_s >= idle_at_s:
                del self._entries[key]
                evicted.append(key)
                continue
            wake_s = idle_at_s
            if entry.due_s is not None:
                if now_s >= entry.due_s:
                    entry.in_flight = True
                    resolve.append(key)
                    continue
                wake_s = min(wake_s, entry.due_s)
            next_poll_s = wake_s if next_poll_s is None else min(next_poll_s, wake_s)
        return InetDue(tuple(resolve), tuple(evicted), next_poll_s)

    def resolved(self, key: InetKey, now_s: float, outcome: Addr | InetError) -> InetResolved:
        """Record how a resolution handed out by ``poll`` ended.

        ``outcome`` is :func:`addr_from_getaddrinfo`'s Addr or an :class:`InetError`. A key
        that is not in flight (dropped meanwhile) is ignored.
        """
        entry = self._entries.get(key)
        if entry is None or not entry.in_flight:
            return InetResolved(changed=False)
        entry.in_flight = False
        entry.resolutions += 1
        old = entry.addr
        warning: str | None = None
        recovered: str | None = None
        error: str | None = None
        if isinstance(outcome, InetError):
            if outcome.traceback is not None:
                error = f"{outcome.cause}\n{outcome.traceback}"
            entry.last_error = outcome.cause
            if outcome.transient and isinstance(old, AddrBound):
                # Keep serving the last good answer; warn once per episode.
                if not entry.stale:
                    warning = f"{outcome.cause}; keeping the last good addresses"
                entry.stale = True
            else:
                entry.addr = AddrFailed(outcome.cause)
                entry.stale = False
                if entry.addr != old:
                    warning = outcome.cause
        else:
            if isinstance(outcome, AddrFailed):
                entry.last_error = outcome.cause
                if outcome != old:
                    warning = outcome.cause
            else:
                entry.last_error = None
                if isinstance(old, AddrFailed) or entry.stale:
                    recovered = f"{entry.host} resolves again"
            entry.addr = outcome
            entry.stale = False
        fixed_done = entry.fixed and isinstance(entry.addr, AddrBound)
        entry.due_s = None if fixed_done else now_s + self.refresh_interval_s
        return InetResolved(entry.addr != old, warning, recovered, error)

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
