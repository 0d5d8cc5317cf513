"""Reconnect backoff: how long to wait after ``failures`` consecutive failures. One rule for all.

The linker's namerd watches, namerd's Redis store and namerd's mirrors all reconnect with it::

    nominal(1) = first_s
    nominal(n) = min(max_s, base_s * 2 ** (n - 2))      for n >= 2
    delay(n)   = nominal(n) * (0.5 + 0.5 * jitter)      jitter in [0, 1]

The caller passes ``jitter`` (usually ``random.random()``), which keeps this pure and testable.
Jitter picks a point in the upper half ``[d/2, d]``: a fleet reconnecting to a restarted server
spreads out, but nobody waits much less than the nominal delay. Zero or fewer failures wait 0.
"""

from __future__ import annotations

__all__ = ["backoff_s"]

# 2**64 is far beyond any max_s; capping the exponent keeps the float finite.
_MAX_EXPONENT = 64


def backoff_s(
    failures: int,
    *,
    first_s: float,
    base_s: float,
    max_s: float,
    jitter: float,
) -> float:
    """Seconds to wait before the next attempt, after ``failures`` consecutive failures.

    ``jitter`` is clamped to [0, 1]; see the module docstring for the rule.
    """
    if failures < 1:
        return 0.0
    if failures == 1:
        nominal = min(first_s, max_s)
    else:
        nominal = min(max_s, base_s * 2.0 ** min(failures - 2, _MAX_EXPONENT))
    return nominal * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))
