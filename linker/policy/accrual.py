"""Failure accrual: per-endpoint circuit breaking at the request level (Linkerd ``failureAccrual``).

Each endpoint of a balancer owns one :class:`Accrual`.  The router reports every response
outcome through the balancer (``record(ok, now_s)``); a *policy* decides from those outcomes when
the endpoint is marked dead, and a *backoff* decides for how long.  When the backoff has
elapsed the endpoint may take exactly **one** probe request: if the probe succeeds the endpoint
is revived and the backoff starts again from its first step; if it fails the endpoint is dead
again, for a longer backoff.

Everything here is a pure state machine (the h11 rule): no clock, no I/O, no global random.  Time
is passed in as ``now_s`` (seconds on any monotonic scale, e.g. ``trio.current_time()``) and
jitter comes from an injected :class:`random.Random`, so tests replay exactly.

States::

    alive --(policy says dead)--> dead --(backoff elapsed)--> probing
      ^                                                          | probe picked (on_pick)
      |                                                          v
      +------------(probe ok)------------ probing, probe in flight
                    dead <--(probe failed: next, longer backoff)-+

Each accrual remembers the endpoint's last failure (its cause, in a few words, and when), so
that an error naming the endpoints marked dead can say why each one is, and logs every state
change on the ``linker.policy.accrual`` logger, one line each: alive→dead (warning, with the
cause), dead→probing and probing→alive (info), probing→dead (warning, the probe's cause).
Logging only the changes is what keeps the log bounded under load: a dead endpoint takes no
requests, so it cannot fill the log however many requests arrive, and a flapping endpoint
logs at most three lines per dead period of the backoff (5 s at least by default, growing to
5 min while it keeps failing).  No second limit is added on top of that one.

Config (Linkerd's shape, under ``client.failureAccrual``)::

    failureAccrual:
      kind: io.l5d.consecutiveFailures     # default
      failures: 5
      backoff: {kind: jittered, minMs: 5000, maxMs: 300000}   # default; or {kind: constant, ms: N}
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from shared.configtree import ConfigError

__all__ = [
    "DEFAULT_BACKOFF_MAX_MS",
    "DEFAULT_BACKOFF_MIN_MS",
    "DEFAULT_CONSECUTIVE_FAILURES",
    "DEFAULT_SUCCESS_RATE",
    "DEFAULT_SUCCESS_RATE_REQUESTS",
    "DEFAULT_SUCCESS_RATE_WINDOW_S",
    "SUCCESS_RATE_WINDOWED_MIN_REQUESTS",
    "UNCLASSIFIED_FAILURE",
    "Accrual",
    "AccrualState",
    "Backoff",
    "ConsecutiveFailures",
    "ConstantBackoff",
    "JitteredBackoff",
    "NeverDead",
    "Policy",
    "SuccessRate",
    "SuccessRateWindowed",
    "build_accrual_factory",
    "build_backoff",
    "build_policy",
]

#: ``io.l5d.consecutiveFailures`` ``failures``: this many failures in a row mark an endpoint dead.
DEFAULT_CONSECUTIVE_FAILURES: Final = 5
#: ``io.l5d.successRate`` / ``io.l5d.successRateWindowed`` ``successRate``: the lowest healthy rate.
DEFAULT_SUCCESS_RATE: Final = 0.8
#: ``io.l5d.successRate`` ``requests``: how many recent responses the rate is computed over.
DEFAULT_SUCCESS_RATE_REQUESTS: Final = 20
#: ``io.l5d.successRateWindowed`` ``window`` (seconds, as in Linkerd): the rate's time window.
DEFAULT_SUCCESS_RATE_WINDOW_S: Final = 30.0
#: A windowed success rate computed from fewer responses than this is noise, not evidence
#: (Finagle's ``minRequestThreshold``; Linkerd's config does not expose it).
SUCCESS_RATE_WINDOWED_MIN_REQUESTS: Final = 5
#: ``backoff: {kind: jittered}`` ``minMs``: the first dead period, 5 seconds.
DEFAULT_BACKOFF_MIN_MS: Final = 5_000
#: ``backoff: {kind: jittered}`` ``maxMs``: the longest dead period, 5 minutes.
DEFAULT_BACKOFF_MAX_MS: Final = 300_000

#: The cause recorded for a failure reported without one.
UNCLASSIFIED_FAILURE: Final = "a failure"

log = logging.getLogger("linker.policy.accrual")

_KIND_CONSECUTIVE: Final = "io.l5d.consecutiveFailures"
_KIND_SUCCESS_RATE: Final = "io.l5d.successRate"
_KIND_SUCCESS_RATE_WINDOWED: Final = "io.l5d.successRateWindowed"
_KIND_NONE: Final = "none"


class AccrualState(enum.Enum):
    """Where an endpoint is in its accrual cycle; the value is what metrics and ``state()`` show."""

    ALIVE = "alive"
    DEAD = "dead"
    PROBING = "probing"


# --- policies: "should this endpoint be marked dead now?" ------------------------------------


class Policy(Protocol):
    """Decides, from response outcomes, when an endpoint should be marked dead."""

    def record(self, ok: bool, now_s: float) -> bool:
        """Take one outcome; return True if the endpoint should be marked dead now."""
        ...

    def reset(self) -> None:
        """Forget all history (on death and on revival, so old failures don't count twice)."""
        ...


class ConsecutiveFailures:
    """``io.l5d.consecutiveFailures``: dead after ``failures`` failures in a row."""

    def __init__(self, failures: int = DEFAULT_CONSECUTIVE_FAILURES) -> None:
        self.failures = failures
        self._run = 0

    def record(self, ok: bool, now_s: float) -> bool:
        self._run = 0 if ok else self._run + 1
        return self._run >= self.failures

    def reset(self) -> None:
        self._run = 0

    def __repr__(self) -> str:
        return f"<ConsecutiveFailures {self._run}/{self.failures}>"


class SuccessRate:
    """``io.l5d.successRate``: dead when the success rate of the last ``requests`` responses is
    below ``success_rate``.

    Finagle smooths with an exponential moving average over ``requests``; an exact sliding
    window of the last ``requests`` outcomes is used here instead because its verdict can be
    stated (and tested) exactly: no verdict until ``requests`` responses have been seen.
    """

    def __init__(
        self,
        success_rate: float = DEFAULT_SUCCESS_RATE,
        requests: int = DEFAULT_SUCCESS_RATE_REQUESTS,
    ) -> None:
        self.success_rate = success_rate
        self.requests = requests
        self._outcomes: deque[bool] = deque(maxlen=requests)
        self._successes = 0

    def record(self, ok: bool, now_s: float) -> bool:
        if len(self._outcomes) == self.requests and self._outcomes[0]:
            self._successes -= 1  # the oldest outcome is about to fall out of the window
        self._outcomes.append(ok)
        self._successes += ok
        if len(self._outcomes) < self.requests:
            return False
        return self._successes / self.requests < self.success_rate

    def reset(self) -> None:
        self._outcomes.clear()
        self._successes = 0

    def __repr__(self) -> str:
        return f"<SuccessRate {self._successes}/{len(self._outcomes)} need {self.success_rate}>"


class SuccessRateWindowed:
    """``io.l5d.successRateWindowed``: dead when the success rate of the responses seen in the
    last ``window_s`` seconds is below ``success_rate`` (judged only once the window holds at
    least ``min_requests`` responses)."""

    def __init__(
        self,
        success_rate: float = DEFAULT_SUCCESS_RATE,
        window_s: float = DEFAULT_SUCCESS_RATE_WINDOW_S,
        min_requests: int = SUCCESS_RATE_WINDOWED_MIN_REQUESTS,
    ) -> None:
        self.success_rate = success_rate
        self.window_s = window_s
        self.min_requests = min_requests
        # (time, ok); pruned on every record so memory is bounded by the request rate × window.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._successes = 0

    def record(self, ok: bool, now_s: float) -> bool:
        self._outcomes.append((now_s, ok))
        self._successes += ok
        horizon_s = now_s - self.window_s
        while self._outcomes and self._outcomes[0][0] <= horizon_s:
            _, old_ok = self._outcomes.popleft()
            self._successes -= old_ok
        if len(self._outcomes) < self.min_requests:
            return False
        return self._successes / len(self._outcomes) < self.success_rate

    def reset(self) -> None:
        self._outcomes.clear()
        self._successes = 0

    def __repr__(self) -> str:
        return (
            f"<SuccessRateWindowed {self._successes}/{len(self._outcomes)} "
            f"in {self.window_s}s need {self.success_rate}>"
        )


class NeverDead:
    """``kind: none``: failure accrual off; an endpoint is never marked dead."""

    def record(self, ok: bool, now_s: float) -> bool:
        return False

    def reset(self) -> None:
        pass

    def __repr__(self) -> str:
        return "<NeverDead>"


# --- backoffs: "for how long is it dead?" -----------------------------------------------------


class Backoff(Protocol):
    """Pure backoff schedule (redis-py style): the dead period for the n-th death in a row."""

    def delay_s(self, attempt: int) -> float:
        """Seconds to stay dead after the ``attempt``-th consecutive death (0 = first)."""
        ...


class ConstantBackoff:
    """``backoff: {kind: constant, ms: N}``: every dead period is ``delay_s`` seconds."""

    def __init__(self, delay_s: float) -> None:
        self._delay_s = delay_s

    def delay_s(self, attempt: int) -> float:
        return self._delay_s

    def __repr__(self) -> str:
        return f"<ConstantBackoff {self._delay_s}s>"


class JitteredBackoff:
    """``backoff: {kind: jittered, minMs, maxMs}``: exponential with jitter, within [min, max].

    The ``attempt``-th delay is drawn uniformly from ``[min·2^(attempt-1), min·2^attempt]``
    (the first is exactly ``min``), each bound capped at ``max``.  Consecutive bands touch, so
    a failed probe never waits *less* than the one before (Finagle's decorrelated jitter can),
    while the jitter still keeps a fleet of linkers from probing a recovering endpoint in
    lockstep.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng

    def bounds_s(self, attempt: int) -> tuple[float, float]:
        """The band ``delay_s(attempt)`` is drawn from (exposed so tests can assert it)."""
        # Past 64 doublings any min exceeds any sane max (and 2.0**huge overflows).
        exp = min(attempt, 64)
        high_s = min(self.max_s, self.min_s * 2.0**exp)
        low_s = min(self.max_s, self.min_s * 2.0 ** (exp - 1)) if exp > 0 else high_s
        return low_s, high_s

    def delay_s(self, attempt: int) -> float:
        low_s, high_s = self.bounds_s(attempt)
        return self._rng.uniform(low_s, high_s)

    def __repr__(self) -> str:
        return f"<JitteredBackoff {self.min_s}s..{self.max_s}s>"


# --- the state machine ------------------------------------------------------------------------


class Accrual:
    """One endpoint's failure accrual: a policy, a backoff, and the alive/dead/probing cycle.

    The balancer calls :meth:`available` before choosing an endpoint, :meth:`on_pick` when it
    has chosen it (so a probe is let through only once), and :meth:`record` with the outcome.
    Every request picked must be recorded exactly once, or a probe stays in flight forever.
    """

    def __init__(self, policy: Policy, backoff: Backoff, name: str = "endpoint") -> None:
        self.policy = policy
        self.backoff = backoff
        #: How log lines name the endpoint (``host:port``; the balancer sets it).
        self.name = name
        #: The cause of the last failure recorded (None: none yet) and when (``now_s``).
        self.last_error: str | None = None
        self.last_error_at_s = 0.0
        self._state = AccrualState.ALIVE
        self._dead_until_s = 0.0
        self._deaths_in_a_row = 0  # which backoff step the next death uses
        self._probe_in_flight = False
        #: How many times this endpoint was marked dead (including failed probes).
        self.removals = 0
        #: How many times a successful probe brought it back.
        self.revivals = 0

    def state(self) -> str:
        """``"alive"``, ``"dead"`` or ``"probing"``, as of the last call that was given a time."""
        return self._state.value

    @property
    def dead_until_s(self) -> float:
        """When the current dead period ends (meaningless while alive)."""
        return self._dead_until_s

    def available(self, now_s: float) -> bool:
        """May a request be sent to this endpoint now?

        True while alive; false while dead; once the backoff has elapsed, true until the one
        probe request is picked, then false again until its outcome is recorded.
        """
        if self._state is AccrualState.DEAD and now_s >= self._dead_until_s:
            self._state = AccrualState.PROBING
            self._probe_in_flight = False
            log.info("endpoint %s: dead -> probing (its backoff has elapsed)", self.name)
        if self._state is AccrualState.ALIVE:
            return True
        return self._state is AccrualState.PROBING and not self._probe_in_flight

    def on_pick(self, now_s: float) -> None:
        """The balancer chose this endpoint; if it is due a probe, this request is the probe."""
        if self.available(now_s) and self._state is AccrualState.PROBING:
            self._probe_in_flight = True

    def record(self, ok: bool, now_s: float, cause: str | None = None) -> None:
        """Take one response outcome (``ok`` as judged by the response classifier); ``cause``
        says in a few words why a failure failed (``connection refused``)."""
        if not ok:
            self.last_error = cause or UNCLASSIFIED_FAILURE
            self.last_error_at_s = now_s
        if self._state is AccrualState.ALIVE:
            if self.policy.record(ok, now_s):
                self._mark_dead(now_s)
            return
        # Outcomes of requests sent before the endpoint died say nothing new; only the probe's
        # outcome counts.  (A straggler finishing while the probe is in flight is taken as the
        # probe's outcome: without per-request tokens the two can't be told apart, and either
        # is fresh evidence about the endpoint.)
        if self._state is AccrualState.PROBING and self._probe_in_flight:
            if ok:
                self._state = AccrualState.ALIVE
                self._probe_in_flight = False
                self._deaths_in_a_row = 0
                self.policy.reset()
                self.revivals += 1
                log.info("endpoint %s: probing -> alive (the probe succeeded)", self.name)
            else:
                self._mark_dead(now_s)

    def _mark_dead(self, now_s: float) -> None:
        was = self._state.value
        self._state = AccrualState.DEAD
        self._probe_in_flight = False
        self._dead_until_s = now_s + self.backoff.delay_s(self._deaths_in_a_row)
        self._deaths_in_a_row += 1
        self.policy.reset()
        self.removals += 1
        log.warning(
            "endpoint %s: %s -> dead for %.1f s by failure accrual (last error: %s)",
            self.name,
            was,
            self._dead_until_s - now_s,
            self.last_error or UNCLASSIFIED_FAILURE,
        )

    def __repr__(self) -> str:
        extra = ""
        if self._state is not AccrualState.ALIVE:
            extra = f" until={self._dead_until_s:.3f}s probe_in_flight={self._probe_in_flight}"
        return (
            f"<Accrual {self._state.value}{extra} removals={self.removals} "
            f"revivals={self.revivals} {self.policy!r}>"
        )


# --- config -----------------------------------------------------------------------------------

_POLICY_KEYS: Final[Mapping[str, frozenset[str]]] = {
    _KIND_CONSECUTIVE: frozenset({"failures"}),
    _KIND_SUCCESS_RATE: frozenset({"successRate", "requests"}),
    _KIND_SUCCESS_RATE_WINDOWED: frozenset({"successRate", "window"}),
    _KIND_NONE: frozenset(),
}
_BACKOFF_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "jittered": frozenset({"minMs", "maxMs"}),
    "constant": frozenset({"ms"}),
}


def _check_keys(section: str, cfg: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in cfg if k not in allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ConfigError(f"{section}: unknown key {unknown[0]!r} (known keys: {known})")


def _kind(section: str, cfg: Mapping[str, Any], kinds: Mapping[str, Any], default: str) -> str:
    kind = cfg.get("kind", default)
    if kind not in kinds:
        known = ", ".join(kinds)
        raise ConfigError(f"{section}.kind: unknown kind {kind!r} (known kinds: {known})")
    return str(kind)


def _number(section: str, key: str, value: Any, *, integer: bool = False) -> float:
    # bool is an int in Python, but `failures: true` is a config mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{section}.{key}: must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ConfigError(f"{section}.{key}: must be an integer, got {value!r}")
    if value <= 0:
        raise ConfigError(f"{section}.{key}: must be > 0, got {value!r}")
    return float(value)


def _rate(section: str, value: Any) -> float:
    rate = _number(section, "successRate", value)
    if rate > 1:
        raise ConfigError(f"{section}.successRate: must be in (0, 1], got {value!r}")
    return rate


def _as_mapping(section: str, cfg: Any) -> Mapping[str, Any]:
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{section}: must be a mapping, got {cfg!r}")
    return cfg


def build_backoff(config: Mapping[str, Any] | None, rng: random.Random) -> Backoff:
    """Build the ``failureAccrual.backoff`` schedule (default jittered 5 s – 300 s).

    Raises:
        ConfigError (a ValueError): an unknown kind or key, or a bad value; the message names it.
    """
    section = "failureAccrual.backoff"
    cfg = _as_mapping(section, config)
    kind = _kind(section, cfg, _BACKOFF_KEYS, "jittered")
    _check_keys(section, cfg, _BACKOFF_KEYS[kind] | {"kind"})
    if kind == "constant":
        if "ms" not in cfg:
            raise ConfigError(f"{section}.ms: required for kind 'constant'")
        return ConstantBackoff(_number(section, "ms", cfg["ms"]) / 1000)
    min_ms = _number(section, "minMs", cfg.get("minMs", DEFAULT_BACKOFF_MIN_MS))
    max_ms = _number(section, "maxMs", cfg.get("maxMs", DEFAULT_BACKOFF_MAX_MS))
    if max_ms < min_ms:
        raise ConfigError(f"{section}.maxMs: must be >= minMs ({min_ms:g}), got {max_ms:g}")
    return JitteredBackoff(min_ms / 1000, max_ms / 1000, rng)


def build_policy(config: Mapping[str, Any] | None) -> Callable[[], Policy]:
    """Validate the policy part of ``failureAccrual`` and return a factory of fresh policies.

    Raises:
        ConfigError (a ValueError): an unknown kind or key, or a bad value; the message names it.
    """
    section = "failureAccrual"
    cfg = _as_mapping(section, config)
    kind = _kind(section, cfg, _POLICY_KEYS, _KIND_CONSECUTIVE)
    _check_keys(section, cfg, _POLICY_KEYS[kind] | {"kind", "backoff"})
    if kind == _KIND_CONSECUTIVE:
        failures = int(
            _number(
                section, "failures", cfg.get("failures", DEFAULT_CONSECUTIVE_FAILURES), integer=True
            )
        )
        return lambda: ConsecutiveFailures(failures)
    if kind == _KIND_SUCCESS_RATE:
        rate = _rate(section, cfg.get("successRate", DEFAULT_SUCCESS_RATE))
        requests = cfg.get("requests", DEFAULT_SUCCESS_RATE_REQUESTS)
        n = int(_number(section, "requests", requests, integer=True))
        return lambda: SuccessRate(rate, n)
    if kind == _KIND_SUCCESS_RATE_WINDOWED:
        rate = _rate(section, cfg.get("successRate", DEFAULT_SUCCESS_RATE))
        window_s = _number(section, "window", cfg.get("window", DEFAULT_SUCCESS_RATE_WINDOW_S))
        return lambda: SuccessRateWindowed(rate, window_s)
    return NeverDead


def build_accrual_factory(
    config: Mapping[str, Any] | None, rng: random.Random
) -> Callable[[], Accrual]:
    """Validate a Linkerd ``failureAccrual`` section; return a factory of per-endpoint accruals.

    ``None`` means Linkerd's default: 5 consecutive failures, jittered backoff 5 s – 300 s.
    All accruals share ``rng`` (only the jitter draws from it).

    Raises:
        ConfigError (a ValueError): an unknown kind or key, or a bad value; the message names it.
    """
    cfg = _as_mapping("failureAccrual", config)
    make_policy = build_policy(cfg)
    backoff = build_backoff(cfg.get("backoff"), rng)  # stateless apart from rng: safe to share
    return lambda: Accrual(make_policy(), backoff)
