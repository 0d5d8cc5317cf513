"""shared.inet_cache: the /$/inet cache's rules, with explicit time and no DNS.

Examples pin each rule; a Hypothesis state machine then drives random asks, clock steps,
polls and resolution outcomes and checks the invariants the drivers rely on after every step.
"""

from __future__ import annotations

import logging
import socket

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from shared import ADDR_PENDING, Addr, AddrBound, Address, AddrFailed
from shared.inet_cache import (
    InetCache,
    InetDue,
    InetError,
    InetKey,
    addr_from_getaddrinfo,
    inet_error,
    inet_outcome,
    inet_timeout,
)

REFRESH_S = 5.0
IDLE_S = 60.0


def _cache() -> InetCache:
    return InetCache(refresh_interval_s=REFRESH_S, idle_ttl_s=IDLE_S, resolve_timeout_s=10.0)


def _infos(*ips: str) -> list[tuple[object, ...]]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in ips]


def _bound(*ips: str, port: int = 80) -> AddrBound:
    return AddrBound(frozenset(Address(ip, port) for ip in ips))


GONE = InetError("host 'a' not found: x", transient=False)
AGAIN = InetError("cannot resolve host 'a': y", transient=True)


# -- conversions --------------------------------------------------------------------------------


def test_getaddrinfo_tuples_become_a_bound_addr_on_the_asked_port() -> None:
    infos = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 80)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", 80, 0, 2)),
    ]
    assert addr_from_getaddrinfo("a", 8080, infos) == _bound("10.0.0.1", "fe80::1", port=8080)
    assert addr_from_getaddrinfo("a", 80, []) == AddrFailed("host 'a' has no addresses")


def test_errors_are_permanent_or_transient() -> None:
    gone = inet_error("a", socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert gone == InetError(
        f"host 'a' not found: Name or service not known (getaddrinfo error {socket.EAI_NONAME})",
        transient=False,
    )
    again = inet_error("a", socket.gaierror(socket.EAI_AGAIN, "Temporary failure"))
    assert again.transient
    assert again.cause.startswith("cannot resolve host 'a': Temporary")
    bad = inet_error("a..b", UnicodeError("label empty or too long"))
    assert bad == InetError("invalid host name 'a..b': label empty or too long", transient=False)
    assert inet_error("a", ConnectionResetError("reset")).transient
    assert inet_timeout("a", 2.5) == InetError(
        "resolving host 'a' timed out after 2.5 s", transient=True
    )


def test_outcome_of_a_call_and_a_bug_is_retried_and_logged_in_full() -> None:
    assert inet_outcome("a", 80, _infos("10.0.0.1"), 2.0) == _bound("10.0.0.1")
    assert inet_outcome("a", 80, TimeoutError(), 2.0) == inet_timeout("a", 2.0)
    assert inet_outcome("a", 80, UnicodeError("x"), 2.0) == inet_error("a", UnicodeError("x"))
    try:
        raise RuntimeError("a bug")
    except RuntimeError as exc:
        bug = inet_outcome("a", 80, exc, 2.0)
    assert isinstance(bug, InetError)
    assert bug.transient
    assert bug.cause == "resolving host 'a' failed: RuntimeError('a bug')"
    assert bug.traceback is not None
    assert 'raise RuntimeError("a bug")' in bug.traceback
    cache = _cache()
    cache.ask("a", 80, False, 0.0)
    cache.poll(0.0)
    result = cache.resolved(("a", 80, False), 0.0, bug)
    assert [level for level, _ in result.logs] == [logging.ERROR, logging.WARNING]
    assert cache.poll(REFRESH_S).resolve == (("a", 80, False),)  # retried, not forgotten


@pytest.mark.parametrize("name", ["refresh_interval_s", "idle_ttl_s", "resolve_timeout_s"])
@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_intervals_must_be_positive(name: str, value: float) -> None:
    kwargs = {"refresh_interval_s": 1.0, "idle_ttl_s": 1.0, "resolve_timeout_s": 1.0}
    kwargs[name] = value
    with pytest.raises(ValueError, match=f"{name} must be > 0"):
        InetCache(**kwargs)


# -- asking -------------------------------------------------------------------------------------


def test_numeric_hosts_and_bad_ports_are_answered_without_an_entry() -> None:
    cache = _cache()
    assert cache.ask("127.0.0.1", 80, False, 0.0).addr == _bound("127.0.0.1")
    assert cache.ask("0::1", 443, True, 0.0).addr == _bound("::1", port=443)
    assert cache.ask("a", 70000, False, 0.0).addr == AddrFailed("port 70000 out of range 0-65535")
    assert len(cache) == 0
    assert cache.poll(0.0).next_poll_s is None


def test_first_ask_is_pending_and_due_at_once_and_names_ignore_case() -> None:
    cache = _cache()
    first = cache.ask("Svc.Test", 80, False, 1.0)
    assert first.addr is ADDR_PENDING
    assert first.new
    again = cache.ask("svc.test", 80, False, 2.0)
    assert again.addr is ADDR_PENDING
    assert not again.new
    assert cache.ask("svc.test", 80, True, 2.0).new  # fixedinet is its own entry
    due = cache.poll(2.0)
    assert due.resolve == (("svc.test", 80, False), ("svc.test", 80, True))
    assert cache.poll(2.0).resolve == ()  # in flight: never handed out twice


def test_inet_refreshes_after_each_interval_and_notifies_only_on_change() -> None:
    cache = _cache()
    key = ("a", 80, False)
    cache.ask("a", 80, False, 0.0)
    assert cache.poll(0.0).resolve == (key,)
    first = cache.resolved(key, 1.0, addr_from_getaddrinfo("a", 80, _infos("10.0.0.1")))
    assert first.changed
    assert first.warning is None
    due = cache.poll(5.9)
    assert due.resolve == ()
    assert due.next_poll_s == 6.0
    assert cache.poll(6.0).resolve == (key,)
    same = cache.resolved(key, 6.5, addr_from_getaddrinfo("a", 80, _infos("10.0.0.1")))
    assert not same.changed
    assert cache.poll(11.5).resolve == (key,)
    moved = cache.resolved(key, 11.5, addr_from_getaddrinfo("a", 80, _infos("10.0.0.2")))
    assert moved.changed
    assert cache.ask("a", 80, False, 12.0).addr == _bound("10.0.0.2")
    entry = cache.get("A", 80, False)
    assert entry is not None
    assert entry.resolutions == 3


def test_fixedinet_retries_failures_but_keeps_its_first_good_answer() -> None:
    cache = _cache()
    key = ("db", 5432, True)
    cache.ask("db", 5432, True, 0.0)
    cache.poll(0.0)
    assert cache.resolved(key, 0.0, AGAIN).changed
    assert cache.ask("db", 5432, True, 1.0).addr == AddrFailed(AGAIN.cause)
    assert cache.poll(5.0).resolve == (key,)
    cache.resolved(key, 5.0, addr_from_getaddrinfo("db", 5432, _infos("10.1.1.1")))
    for now in (10.0, 20.0, 30.0):
        cache.ask("db", 5432, True, now)
        assert cache.poll(now).resolve == ()
    # Only idleness ends it, and then the next poll is the idle deadline.
    assert cache.poll(30.0).next_poll_s == 30.0 + IDLE_S


def test_transient_errors_keep_the_last_good_answer_and_warn_once() -> None:
    cache = _cache()
    key = ("a", 80, False)
    cache.ask("a", 80, False, 0.0)
    cache.poll(0.0)
    cache.resolved(key, 0.0, addr_from_getaddrinfo("a", 80, _infos("10.0.0.1")))
    cache.poll(5.0)
    hiccup = cache.resolved(key, 5.0, AGAIN)
    assert not hiccup.changed
    assert hiccup.warning is not None
    assert "keeping" in hiccup.warning
    cache.poll(10.0)
    assert cache.resolved(key, 10.0, AGAIN).warning is None  # same episode
    entry = cache.get("a", 80, False)
    assert entry is not None
    assert entry.addr == _bound("10.0.0.1")
    assert entry.last_error is not None
    cache.poll(15.0)
    back = cache.resolved(key, 15.0, addr_from_getaddrinfo("a", 80, _infos("10.0.0.1")))
    assert back.recovered
    assert not back.changed
    assert entry.last_error is None
    # A name that is gone replaces the good answer.
    cache.poll(20.0)
    gone = cache.resolved(key, 20.0, GONE)
    assert gone.changed
    assert gone.warning == GONE.cause
    assert entry.addr == AddrFailed(GONE.cause)


def test_idle_entries_are_evicted_at_the_ttl_but_not_while_in_flight() -> None:
    cache = _cache()
    a, b = ("a", 80, True), ("b", 80, False)  # a fixedinet "a" never refreshes once bound
    cache.ask("a", 80, True, 0.0)
    cache.ask("b", 80, False, 0.0)
    cache.poll(0.0)
    cache.resolved(a, 0.0, addr_from_getaddrinfo("a", 80, _infos("10.0.0.1")))
    cache.ask("a", 80, True, 30.0)  # keeps "a" alive until 90 s
    due = cache.poll(IDLE_S)
    assert due.evicted == ()  # "b" is still in flight
    assert cache.resolved(b, IDLE_S + 1, GONE).changed
    assert cache.poll(IDLE_S + 1).evicted == (b,)
    assert cache.poll(89.9) == InetDue((), (), 90.0)
    assert cache.poll(90.0).evicted == (a,)
    assert len(cache) == 0
    # A late outcome for a dropped key changes nothing; a new ask starts afresh.
    assert not cache.resolved(a, 91.0, GONE).changed
    assert cache.ask("a", 80, True, 91.0).new


# -- properties ---------------------------------------------------------------------------------

HOSTS = ("a", "b", "c")
OUTCOMES: tuple[Addr | InetError, ...] = (
    _bound("10.0.0.1"),
    _bound("10.0.0.2", "10.0.0.3"),
    AddrFailed("host 'x' has no addresses"),
    GONE,
    AGAIN,
)


class CacheMachine(RuleBasedStateMachine):
    """Random asks, clock steps, polls and outcomes; the driver's contract after each."""

    def __init__(self) -> None:
        super().__init__()
        self.cache = _cache()
        self.now = 0.0
        self.in_flight: set[InetKey] = set()
        self.last_asked: dict[InetKey, float] = {}
        self.ended_at: dict[InetKey, float] = {}  # when the last resolution of a key ended

    @rule(host=st.sampled_from(HOSTS), fixed=st.booleans())
    def ask(self, host: str, fixed: bool) -> None:
        key = (host, 80, fixed)
        answer = self.cache.ask(host.upper(), 80, fixed, self.now)
        assert answer.new == (key not in self.last_asked)
        if answer.new:
            assert answer.addr is ADDR_PENDING
            self.ended_at.pop(key, None)
        self.last_asked[key] = self.now

    # Steps near the interval and the TTL find off-by-a-little rules; floats find the rest.
    @rule(
        dt=st.sampled_from([0.0, 1.0, 2.5, 4.9, REFRESH_S, 30.0, IDLE_S - 0.1, IDLE_S])
        | st.floats(min_value=0.0, max_value=100.0)
    )
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule()
    def poll(self) -> None:
        due = self.cache.poll(self.now)
        for key in due.resolve:
            assert key not in self.in_flight
            if key in self.ended_at:  # a refresh, never sooner than one interval
                assert self.now >= self.ended_at[key] + REFRESH_S
                entry = self.cache.get(*key)
                assert entry is not None
                assert not (key[2] and isinstance(entry.addr, AddrBound))
            self.in_flight.add(key)
        for key in due.evicted:
            assert key not in self.in_flight
            assert self.now >= self.last_asked.pop(key) + IDLE_S
            self.ended_at.pop(key, None)
        if due.next_poll_s is not None:
            assert due.next_poll_s > self.now  # no busy loop
        for key, asked in self.last_asked.items():
            if key not in self.in_flight:
                assert self.now < asked + IDLE_S  # every idle entry was evicted

    @precondition(lambda self: bool(self.in_flight))
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def complete(self, data: st.DataObject, outcome: Addr | InetError) -> None:
        key = data.draw(st.sampled_from(sorted(self.in_flight)))
        entry = self.cache.get(*key)
        assert entry is not None
        before = entry.addr
        result = self.cache.resolved(key, self.now, outcome)
        self.in_flight.discard(key)
        self.ended_at[key] = self.now
        assert result.changed == (entry.addr != before)
        if isinstance(outcome, InetError) and outcome.transient and isinstance(before, AddrBound):
            assert entry.addr == before
        elif isinstance(outcome, InetError):
            assert entry.addr == AddrFailed(outcome.cause)
        else:
            assert entry.addr == outcome

    @invariant()
    def entries_match_the_model(self) -> None:
        assert {(e.host.lower(), e.port, e.fixed) for e in self.cache.entries()} == set(
            self.last_asked
        )
        for entry in self.cache.entries():
            key = (entry.host.lower(), entry.port, entry.fixed)
            assert entry.in_flight == (key in self.in_flight)
            # pending exactly until the first resolution ends, never bound and pending at once
            assert (entry.addr is ADDR_PENDING) == (entry.resolutions == 0)


CacheMachine.TestCase.settings = settings(max_examples=200, deadline=None, database=None)
test_cache_machine = CacheMachine.TestCase
