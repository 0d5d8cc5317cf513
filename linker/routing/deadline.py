"""Request deadlines: the ``l5d-ctx-deadline`` context header, and the timeout it implies.

Wire form (Linkerd 1.x ``Headers.Ctx.Deadline``, carrying Finagle's ``Deadline`` context)::

    l5d-ctx-deadline: <timestamp nanos> <deadline nanos>

Two decimal integers separated by a space: when the deadline was set and when it expires, both
in wall-clock nanoseconds since the Unix epoch.  Linkerd reads every ``l5d-ctx-deadline`` header
of a request, skips the ones that do not parse, and keeps the strictest (earliest) deadline;
:func:`parse_deadline_headers` does the same.  Only the deadline matters for the time left; the
timestamp is written for Finagle compatibility and ignored on read.

Because the header carries absolute wall-clock times, the time left is only as good as the
clocks of the two hosts agree.  That is why Linkerd calls the deadline advisory; here it is
combined with the service's own total timeout by :func:`effective_timeout_s`, which a skewed
clock can shorten but never lengthen beyond that timeout.

Parsing is strict and never raises: a value that is not exactly two unsigned decimal integers
of at most 19 digits (Finagle's nanos are a signed 64-bit long) is "no deadline" (None).

Pure: times are passed in (``now_wall_s``, e.g. ``time.time()``); no I/O, no trio, no h11.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "DEADLINE_HEADER",
    "effective_timeout_s",
    "format_deadline",
    "parse_deadline",
    "parse_deadline_headers",
]

DEADLINE_HEADER = b"l5d-ctx-deadline"

_NS_PER_S = 1_000_000_000
_MAX_NS = 2**63 - 1  # a JVM long: the largest value a Finagle peer can write or read
_MAX_DIGITS = 19
_DIGITS = frozenset(b"0123456789")


def _nanos(field: bytes | bytearray) -> int | None:
    # int() alone would accept "+5", "-5", "1_000" and non-ASCII digits; the wire form has none.
    if not 0 < len(field) <= _MAX_DIGITS or not _DIGITS.issuperset(field):
        return None
    value = int(field)
    return value if value <= _MAX_NS else None


def parse_deadline(value: bytes | bytearray, now_wall_s: float) -> float | None:
    """The seconds left before the deadline in one ``l5d-ctx-deadline`` value.

    Args:
        value: the header value, e.g. ``b"1700000000000000000 1700000000250000000"``.
            Leading and trailing whitespace is ignored.
        now_wall_s: the current wall-clock time, in seconds since the Unix epoch.

    Returns:
        The seconds left, zero or negative when the deadline has passed (the caller should then
        fail fast), or None when the value is malformed.  Never raises.
    """
    if not isinstance(value, bytes | bytearray) or not math.isfinite(now_wall_s):
        return None
    fields = bytes(value).strip().split(b" ")
    if len(fields) != 2:
        return None
    timestamp_ns, deadline_ns = _nanos(fields[0]), _nanos(fields[1])
    if timestamp_ns is None or deadline_ns is None:
        return None
    # Subtract in integer nanoseconds, so the only rounding is that of now_wall_s itself
    # (a float epoch time is good to ~0.2 us today): far below any timeout that matters.
    return (deadline_ns - round(now_wall_s * _NS_PER_S)) / _NS_PER_S


def parse_deadline_headers(
    headers: Iterable[tuple[bytes, bytes]], now_wall_s: float
) -> float | None:
    """The strictest deadline among a request's ``l5d-ctx-deadline`` headers, in seconds left.

    Malformed values are skipped, as Linkerd does; None when no value parses.  Header names are
    matched case-insensitively.
    """
    best: float | None = None
    for name, value in headers:
        if name.lower() != DEADLINE_HEADER:
            continue
        left = parse_deadline(value, now_wall_s)
        if left is not None and (best is None or left < best):
            best = left
    return best


def format_deadline(now_wall_s: float, remaining_s: float) -> bytes:
    """The ``l5d-ctx-deadline`` value for a deadline ``remaining_s`` seconds from now.

    Args:
        now_wall_s: the current wall-clock time, in seconds since the Unix epoch (the
            timestamp written).
        remaining_s: seconds left; a negative value is written as an already-expired deadline
            (``deadline == timestamp``) rather than a deadline before its own timestamp.

    Raises:
        ValueError: a time is not finite, or falls outside what a 64-bit nanosecond count holds.
    """
    if not (math.isfinite(now_wall_s) and math.isfinite(remaining_s)):
        raise ValueError(f"deadline times must be finite, got {now_wall_s}, {remaining_s}")
    timestamp_ns = round(now_wall_s * _NS_PER_S)
    deadline_ns = timestamp_ns + round(max(0.0, remaining_s) * _NS_PER_S)
    if not 0 <= timestamp_ns <= deadline_ns <= _MAX_NS:
        raise ValueError(f"deadline out of range: now {now_wall_s} s, {remaining_s} s left")
    return b"%d %d" % (timestamp_ns, deadline_ns)


def effective_timeout_s(
    total_timeout_s: float | None, incoming_remaining_s: float | None
) -> float | None:
    """The time the router may spend on a request: the stricter of its two limits.

    Args:
        total_timeout_s: the service's ``totalTimeoutMs`` in seconds, or None when it is off
            (config's 0 means off and must be passed as None here).
        incoming_remaining_s: the seconds left on the request's incoming deadline
            (:func:`parse_deadline_headers`), or None when it carried none.

    Returns:
        None when neither limit applies; otherwise the smaller, never below 0.0.  A result of
        0.0 means the deadline has already passed: fail fast with 503, without calling the
        service.

    Raises:
        ValueError: ``total_timeout_s`` is negative or NaN (a configuration bug, not a request's).
    """
    if total_timeout_s is not None and not total_timeout_s >= 0:
        raise ValueError(f"total_timeout_s must be >= 0 seconds or None, got {total_timeout_s}")
    if incoming_remaining_s is not None and math.isnan(incoming_remaining_s):
        incoming_remaining_s = None  # not a deadline anyone can meet or miss: ignore it
    limits = [t for t in (total_timeout_s, incoming_remaining_s) if t is not None]
    if not limits:
        return None
    return max(0.0, min(limits))
