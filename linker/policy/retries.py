"""Retries: Finagle's retry budget, Linkerd's backoffs, and the per-service retry decision.

Linkerd configures retries per service::

    service:
      retries:
        budget:  {minRetriesPerSec: 10, percentCanRetry: 0.2, ttlSecs: 10}
        backoff: {kind: jittered, minMs: 10, maxMs: 10000}   # or {kind: constant, ms: 0}
      responseClassifier: {kind: io.l5d.http.retryableRead5XX}

===========================  ==============  ==================================================
key                          default         meaning
===========================  ==============  ==================================================
budget.minRetriesPerSec      10              retries allowed per second even with no traffic
budget.percentCanRetry       0.2             retries earned per request (0-1000)
budget.ttlSecs               10              how long a deposit or a retry counts (1-60 s)
backoff                      constant, 0 ms  Linkerd's default: retry at once
backoff (jittered)           minMs, maxMs    decorrelated jitter, both required, 0 < min <= max
responseClassifier.kind      nonRetryable5XX see ``classify.py``
===========================  ==============  ==================================================

Theory of operation:

* Every original request *deposits* into its service's :class:`RetryBudget`; every retry must
  *withdraw*.  A withdrawal that would overdraw the budget is refused, and the caller returns
  the failure it has instead of retrying.  This is what stops a retry storm: when a service
  fails every request, retries add at most ``percentCanRetry`` of the traffic (20% by default)
  plus a small floor, instead of multiplying it.
* :class:`Backoff` says how long to wait before each retry.
* :class:`RetryPolicy` puts classifier, budget and backoff together in one decision,
  :meth:`RetryPolicy.should_retry`, which the router calls after each failed attempt.

Pure and sans-I/O: time comes in as ``now_s`` (any monotonic clock in seconds, e.g.
``trio.current_time()``), randomness from an injected ``random.Random``.  Nothing here sleeps.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from linker.policy.classify import Classifier, ResponseClass, build_classifier

__all__ = [
    "DEFAULT_BACKOFF",
    "Backoff",
    "RetryBudget",
    "RetryPolicy",
    "build_retry_policy",
]

# Finagle's RetryBudget accepts a ttl of 1 to 60 seconds and percentCanRetry up to 1000.
MIN_TTL_S = 1.0
MAX_TTL_S = 60.0
MAX_PERCENT_CAN_RETRY = 1000.0

# The budget's clock ticks every 10 ms: deposits and withdrawals in one tick share one entry, so
# the memory of a budget is bounded by ttl / resolution (1000 entries at the default ttl) however
# busy its service is, while windows are still exact on that clock (see RetryBudget).
DEFAULT_RESOLUTION_S = 0.01


class RetryBudget:
    """Finagle's ``RetryBudget``: a token bucket refilled by requests, whose tokens expire.

    Args:
        ttl_s: how long a deposit (and a withdrawal) counts, in seconds (default 10.0, Linkerd's
            ``ttlSecs``; Finagle allows 1 to 60).
        min_retries_per_s: retries allowed per second even without deposits (default 10.0,
            ``minRetriesPerSec``): the reserve that lets a quiet or just-started client retry.
        percent_can_retry: retries earned per deposited request (default 0.2, i.e. 20%;
            ``percentCanRetry``, 0 to 1000).
        resolution_s: the tick of the budget's clock, in seconds (default 0.01).

    **The guarantee.**  Let ``p = percent_can_retry``, ``R = min_retries_per_s * ttl_s``, and
    measure time in ticks, ``tick(t) = floor(t / resolution_s)``, with ``T = ttl_s /
    resolution_s`` (rounded) ticks per ttl.  Write ``W(a, b]`` for the withdrawals granted and
    ``D(a, b]`` for the deposits made in ticks ``a < tick <= b``.  Then, exactly (the arithmetic
    is in integers, the float parameters taken at their exact binary values):

    1. whenever a withdrawal is granted at tick ``n``: ``W(n-T, n] <= p * D(n-T, n] + R``;
    2. hence for *every* tick ``n``: ``W(n-T, n] <= p * D(n-2T, n] + R`` — the retries in any
       ttl-long window are at most ``p`` times the requests of that window and the one before
       it, plus ``R``;
    3. in particular, for a run that lasts less than one ttl (``T`` ticks): total retries
       ``<= p * requests + min_retries_per_s * ttl_s``.

    So with every request failing and every failure retried as much as the budget allows,
    retries stay at most ``p`` of the traffic plus the floor ``R``: no storm.  The bound is also
    reached: a burst of ``N`` requests earns ``floor(p * N + R)`` retries at once.

    A clock that steps backwards is treated as standing still.
    """

    __slots__ = (
        "_cost",
        "_deposit",
        "_deposits",
        "_entries",
        "_last_tick",
        "_reserve",
        "_window_ticks",
        "_withdrawals",
        "min_retries_per_s",
        "percent_can_retry",
        "resolution_s",
        "ttl_s",
    )

    def __init__(
        self,
        *,
        ttl_s: float = 10.0,
        min_retries_per_s: float = 10.0,
        percent_can_retry: float = 0.2,
        resolution_s: float = DEFAULT_RESOLUTION_S,
    ) -> None:
        if not (math.isfinite(ttl_s) and MIN_TTL_S <= ttl_s <= MAX_TTL_S):
            raise ValueError(f"ttl_s must be {MIN_TTL_S:g} to {MAX_TTL_S:g} seconds, got {ttl_s}")
        if not (math.isfinite(min_retries_per_s) and min_retries_per_s >= 0):
            raise ValueError(f"min_retries_per_s must be >= 0, got {min_retries_per_s}")
        if not (
            math.isfinite(percent_can_retry) and 0 <= percent_can_retry <= MAX_PERCENT_CAN_RETRY
        ):
            raise ValueError(
                f"percent_can_retry must be 0 to {MAX_PERCENT_CAN_RETRY:g}, got {percent_can_retry}"
            )
        if not (math.isfinite(resolution_s) and 0 < resolution_s <= ttl_s):
            raise ValueError(f"resolution_s must be > 0 and <= ttl_s, got {resolution_s}")
        self.ttl_s = ttl_s
        self.min_retries_per_s = min_retries_per_s
        self.percent_can_retry = percent_can_retry
        self.resolution_s = resolution_s
        # Integer units, so the guarantee is exact rather than "up to rounding": one retry costs
        # `_cost`, one request earns `_deposit` = p * _cost, the reserve is R * _cost.  Fraction
        # of a float is its exact binary value, so the scale is the common denominator.
        p = Fraction(percent_can_retry)
        reserve = Fraction(min_retries_per_s) * Fraction(ttl_s)
        scale = math.lcm(p.denominator, reserve.denominator)
        self._cost = scale
        self._deposit = int(p * scale)
        self._reserve = int(reserve * scale)
        self._window_ticks = max(1, round(ttl_s / resolution_s))
        # [tick, deposits, withdrawals], oldest first; totals over the window kept alongside so
        # each call costs O(expired entries), not O(window).
        self._entries: deque[list[int]] = deque()
        self._deposits = 0
        self._withdrawals = 0
        self._last_tick: int | None = None

    def __repr__(self) -> str:
        return (
            f"<RetryBudget ttl_s={self.ttl_s:g} min_retries_per_s={self.min_retries_per_s:g} "
            f"percent_can_retry={self.percent_can_retry:g} | window: {self._deposits} deposits, "
            f"{self._withdrawals} withdrawals>"
        )

    def tick(self, now_s: float) -> int:
        """The budget clock's tick for ``now_s`` (what the guarantee's windows are made of)."""
        if not math.isfinite(now_s):
            raise ValueError(f"now_s must be a finite number of seconds, got {now_s}")
        return math.floor(now_s / self.resolution_s)

    def _advance(self, now_s: float) -> list[int]:
        """Expire what fell out of the window ending at ``now_s``; return the current entry."""
        n = self.tick(now_s)
        if self._last_tick is not None and n < self._last_tick:
            n = self._last_tick  # a clock stepping back stands still; windows never reopen
        self._last_tick = n
        entries = self._entries
        oldest_live = n - self._window_ticks + 1
        while entries and entries[0][0] < oldest_live:
            _, deposits, withdrawals = entries.popleft()
            self._deposits -= deposits
            self._withdrawals -= withdrawals
        if not entries or entries[-1][0] != n:
            entries.append([n, 0, 0])
        return entries[-1]

    def _units(self) -> int:
        return self._reserve + self._deposits * self._deposit - self._withdrawals * self._cost

    def deposit(self, now_s: float) -> None:
        """Record one original request (never a retry) at ``now_s`` seconds."""
        self._advance(now_s)[1] += 1
        self._deposits += 1

    def try_withdraw(self, now_s: float) -> bool:
        """Take one retry at ``now_s`` seconds; False (and nothing taken) if that would overdraw."""
        entry = self._advance(now_s)
        if self._units() < self._cost:
            return False
        entry[2] += 1
        self._withdrawals += 1
        return True

    def balance(self, now_s: float) -> float:
        """How many retries :meth:`try_withdraw` would grant at ``now_s``, fractions included.

        Negative while retries granted earlier outlive the deposits that paid for them.
        """
        self._advance(now_s)
        return self._units() / self._cost


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before each retry of one request.

    ``constant``: always ``min_s``.  ``jittered``: decorrelated jitter (Finagle's
    ``Backoff.decorrelatedJittered``, AWS's "decorrelated jitter"): the first delay is ``min_s``,
    each next one is uniform in ``[min_s, 3 * previous)``, capped at ``max_s``.  Delays so spread
    out across requests (no synchronised waves) and grow by up to 3x per retry.

    Build with :meth:`constant` or :meth:`jittered`.
    """

    kind: Literal["constant", "jittered"]
    min_s: float
    max_s: float

    def __post_init__(self) -> None:
        if self.kind not in ("constant", "jittered"):
            raise ValueError(f"unknown backoff kind {self.kind!r} (constant, jittered)")
        if not (math.isfinite(self.min_s) and math.isfinite(self.max_s)):
            raise ValueError(f"backoff delays must be finite, got {self.min_s}, {self.max_s}")
        if self.kind == "constant":
            if self.min_s < 0 or self.max_s != self.min_s:
                raise ValueError(f"a constant backoff needs one delay >= 0, got {self.min_s}")
        # decorrelated jitter multiplies the previous delay: from 0 it would stay 0 forever.
        elif not 0 < self.min_s <= self.max_s:
            raise ValueError(
                f"a jittered backoff needs 0 < min <= max, got min {self.min_s}, max {self.max_s}"
            )

    @classmethod
    def constant(cls, delay_s: float = 0.0) -> Backoff:
        """Always wait ``delay_s`` seconds (default 0.0, Linkerd's default backoff)."""
        return cls("constant", delay_s, delay_s)

    @classmethod
    def jittered(cls, min_s: float, max_s: float) -> Backoff:
        """Decorrelated jitter between ``min_s`` and ``max_s`` seconds (0 < min_s <= max_s)."""
        return cls("jittered", min_s, max_s)

    def next_delay_s(self, prev_delay_s: float | None, rng: random.Random) -> float:
        """The delay before the next retry, in seconds, given the one before it.

        Args:
            prev_delay_s: the delay this request waited before its previous retry, or None
                before its first retry.
            rng: the source of jitter (injected so tests and simulations are repeatable).
        """
        if self.kind == "constant" or prev_delay_s is None:
            return self.min_s
        upper = max(self.min_s, 3.0 * prev_delay_s)
        return min(self.max_s, max(self.min_s, rng.uniform(self.min_s, upper)))


DEFAULT_BACKOFF = Backoff.constant(0.0)


@dataclass(slots=True)
class RetryPolicy:
    """One service's retry decision: classifier + budget + backoff, with its counters.

    One instance per service, shared by all its concurrent requests (Linkerd PR #1185: each
    service has its own budget).  Per request, the router calls :meth:`record_request` once,
    then :meth:`should_retry` after each failed attempt.

    Attributes:
        retries_total: retries granted (Linkerd's ``retries/total``).
        budget_exhausted: retryable failures not retried because the budget was empty
            (``retries/budget_exhausted``).
        not_replayable: retryable failures not retried because the request body was streamed.
        deadline_exceeded: retryable failures not retried because the backoff would outlast
            the time left.
    """

    budget: RetryBudget = field(default_factory=RetryBudget)
    backoff: Backoff = DEFAULT_BACKOFF
    classifier: Classifier = field(default_factory=Classifier)
    rng: random.Random = field(default_factory=random.Random)
    retries_total: int = 0
    budget_exhausted: int = 0
    not_replayable: int = 0
    deadline_exceeded: int = 0

    def record_request(self, now_s: float) -> None:
        """Count one original request (not a retry) into the budget, at ``now_s`` seconds."""
        self.budget.deposit(now_s)

    def should_retry(
        self,
        cls: ResponseClass,
        attempt: int,
        body_replayable: bool,
        now_s: float,
        *,
        prev_delay_s: float | None = None,
        remaining_s: float | None = None,
    ) -> tuple[bool, float]:
        """Decide whether to retry after attempt number ``attempt`` ended as ``cls``.

        Args:
            cls: how the attempt was classified.
            attempt: how many attempts this request has made so far (1 after the first).
            body_replayable: False when the request body was streamed and is gone (chunked
                or over the buffering limit): such a request is never retried.
            now_s: the current time, in seconds, on the budget's clock.
            prev_delay_s: the delay this returned before the previous retry of this request
                (None before the first retry); jittered backoff grows from it.  Ignored when
                ``attempt`` is 1; when None on a later attempt, the minimum delay stands in.
            remaining_s: the time left for the whole request (total timeout or deadline), in
                seconds, or None.  A retry whose backoff alone would use it up is not made:
                it could only end in a timeout, and it would waste a token (Linkerd #2369).

        Returns:
            ``(True, delay_s)``: wait ``delay_s`` seconds, then retry (a token was taken).
            ``(False, 0.0)``: return this attempt's outcome to the client.

        Raises:
            ValueError: ``attempt`` < 1.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts attempts made so far and starts at 1, got {attempt}")
        if cls is not ResponseClass.FAILURE_RETRYABLE:
            return False, 0.0
        if not body_replayable:
            self.not_replayable += 1
            return False, 0.0
        # The first retry waits the backoff's first delay whatever prev_delay_s says; a later
        # retry whose caller kept no previous delay jitters from the minimum.
        if attempt == 1:
            prev_delay_s = None
        elif prev_delay_s is None:
            prev_delay_s = self.backoff.min_s
        delay_s = self.backoff.next_delay_s(prev_delay_s, self.rng)
        if remaining_s is not None and delay_s >= remaining_s:
            self.deadline_exceeded += 1
            return False, 0.0
        if not self.budget.try_withdraw(now_s):
            self.budget_exhausted += 1
            return False, 0.0
        self.retries_total += 1
        return True, delay_s

    def stats(self) -> dict[str, int]:
        """The counters under their metric names (relative to the service's scope)."""
        return {
            "retries/total": self.retries_total,
            "retries/budget_exhausted": self.budget_exhausted,
            "retries/not_replayable": self.not_replayable,
            "retries/deadline_exceeded": self.deadline_exceeded,
        }


# --- config -----------------------------------------------------------------------------------

# Keys of the `service` section that other parts of the linker read (the config loader, the
# router's totalTimeoutMs): accepted here so the whole section can be handed over, and left
# alone.
_SERVICE_KEYS_OWNED_ELSEWHERE = frozenset({"kind", "prefix", "totalTimeoutMs"})


def _section(value: Any, where: str, known: frozenset[str]) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in known)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ValueError(
            f"unknown key(s) {names} in {where} (known keys: {', '.join(sorted(known))})"
        )
    return value


def _number(sec: Mapping[str, Any], key: str, where: str, default: float | None) -> float:
    value = sec.get(key, default)
    if value is None:
        raise ValueError(f"{where}.{key} is required")
    # YAML `yes` is a bool, and bool is an int in Python: refuse it explicitly.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


def _budget(raw: Any, where: str) -> RetryBudget:
    sec = _section(raw, where, frozenset({"minRetriesPerSec", "percentCanRetry", "ttlSecs"}))
    ttl_s = _number(sec, "ttlSecs", where, 10)
    min_per_s = _number(sec, "minRetriesPerSec", where, 10)
    percent = _number(sec, "percentCanRetry", where, 0.2)
    if not MIN_TTL_S <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"{where}.ttlSecs must be {MIN_TTL_S:g} to {MAX_TTL_S:g}, got {ttl_s:g}")
    if min_per_s < 0:
        raise ValueError(f"{where}.minRetriesPerSec must be >= 0, got {min_per_s:g}")
    if not 0 <= percent <= MAX_PERCENT_CAN_RETRY:
        raise ValueError(
            f"{where}.percentCanRetry must be 0 to {MAX_PERCENT_CAN_RETRY:g}, got {percent:g}"
        )
    return RetryBudget(ttl_s=ttl_s, min_retries_per_s=min_per_s, percent_can_retry=percent)


def _backoff(raw: Any, where: str) -> Backoff:
    if raw is None:
        return DEFAULT_BACKOFF
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} must be a mapping, got {raw!r}")
    kind = raw.get("kind")
    if kind == "constant":
        sec = _section(raw, where, frozenset({"kind", "ms"}))
        ms = _number(sec, "ms", where, 0)
        if ms < 0:
            raise ValueError(f"{where}.ms must be >= 0, got {ms:g}")
        return Backoff.constant(ms / 1000.0)
    if kind == "jittered":
        sec = _section(raw, where, frozenset({"kind", "minMs", "maxMs"}))
        min_ms = _number(sec, "minMs", where, None)
        max_ms = _number(sec, "maxMs", where, None)
        if not 0 < min_ms <= max_ms:
            raise ValueError(
                f"{where} needs 0 < minMs <= maxMs, got minMs {min_ms:g}, maxMs {max_ms:g}"
            )
        return Backoff.jittered(min_ms / 1000.0, max_ms / 1000.0)
    raise ValueError(f"{where}.kind must be 'constant' or 'jittered', got {kind!r}")


def build_retry_policy(
    service_config: Mapping[str, Any] | None,
    rng: random.Random,
    *,
    where: str = "service",
) -> RetryPolicy:
    """Build a service's :class:`RetryPolicy` from its Linkerd ``service`` config section.

    Args:
        service_config: the ``service`` mapping (``retries``, ``responseClassifier``; the keys
            ``kind``, ``prefix`` and ``totalTimeoutMs`` belong to the router's config and are
            ignored here), or None for every default.
        rng: the source of backoff jitter.
        where: how error messages name the section (e.g. ``routers[0].service``).

    Raises:
        ValueError: a key is unknown (named, with the known ones), or a value is out of range.
    """
    sec = _section(
        service_config,
        where,
        frozenset({"retries", "responseClassifier"}) | _SERVICE_KEYS_OWNED_ELSEWHERE,
    )
    retries = _section(sec.get("retries"), f"{where}.retries", frozenset({"budget", "backoff"}))
    budget = _budget(retries.get("budget"), f"{where}.retries.budget")
    backoff = _backoff(retries.get("backoff"), f"{where}.retries.backoff")
    try:
        classifier = build_classifier(sec.get("responseClassifier"))
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    return RetryPolicy(budget=budget, backoff=backoff, classifier=classifier, rng=rng)
