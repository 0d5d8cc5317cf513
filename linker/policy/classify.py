"""Response classification: Linkerd 1.x's HTTP response classifiers, as pure functions.

A *response classifier* answers two questions about one finished attempt of a request: did it
fail, and if it failed, is it safe to try again?  The answer drives retries (``retries.py``),
and the router's success/failure metrics.  Linkerd configures it per service:

    service:
      responseClassifier: {kind: io.l5d.http.retryableRead5XX}

=====================================  ==========================================================
kind                                   failures, and which are retryable
=====================================  ==========================================================
io.l5d.http.nonRetryable5XX (default)  every 5XX is a failure; none is retryable
io.l5d.http.retryableRead5XX           5XX on GET, HEAD, OPTIONS, TRACE is retryable
io.l5d.http.retryableIdempotent5XX     ... and on PUT, DELETE
io.l5d.http.retryableAll5XX            ... and on POST, PATCH (every method; Linkerd PR #2045)
io.l5d.http.allSuccessful              every response is a success
=====================================  ==========================================================

Rules that hold whatever the kind (Linkerd's built-in rules):

* A 5XX response carrying ``l5d-retryable: true`` is a retryable failure, for every method and
  every kind, ``allSuccessful`` included.  Only a linker sets that header, on an error for a
  request that never reached the service (PR #1229: a downstream linker's requeues ran out), so
  trying again is safe and is what the header asks for.  On a non-5XX response the header is
  ignored: nothing failed, so there is nothing to retry.
* A request that was never written (connect refused, no connection) failed *before* the server
  saw a byte of it; trying again is always safe, so that error is a retryable failure for every
  method and every kind (Linkerd's "requeue").  See :func:`classify_error`: the caller says
  whether the request was written (the router asks the error: ``LinkerError.retryable``).
* An error after the request was (or may have been) written, such as a reset while waiting for
  the response, is a failure, retryable only for the methods the kind deems retryable.
  ``allSuccessful`` classifies responses, not missing ones: such an error is a non-retryable
  failure there.

Whether the *body* can be sent again (a chunked or already-streamed body cannot) is not the
classifier's business; :class:`linker.policy.retries.RetryPolicy` checks that.

HTTP methods are case-sensitive (RFC 9110 §9.1): ``get`` is not ``GET`` and is never retryable.

This module is pure: no I/O, no trio, no h11.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT_CLASSIFIER_KIND",
    "KINDS",
    "Classifier",
    "ResponseClass",
    "build_classifier",
    "classify",
    "classify_error",
]


class ResponseClass(Enum):
    """What one attempt's outcome means for metrics and retries."""

    SUCCESS = "success"
    FAILURE_RETRYABLE = "failure_retryable"
    FAILURE_NON_RETRYABLE = "failure_non_retryable"


DEFAULT_CLASSIFIER_KIND = "io.l5d.http.nonRetryable5XX"

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_IDEMPOTENT_METHODS = _READ_METHODS | {"PUT", "DELETE"}
_ALL_METHODS = _IDEMPOTENT_METHODS | {"POST", "PATCH"}

# kind -> the methods whose failures it deems retryable; None = nothing is ever a failure.
KINDS: Mapping[str, frozenset[str] | None] = {
    "io.l5d.http.nonRetryable5XX": frozenset(),
    "io.l5d.http.retryableRead5XX": _READ_METHODS,
    "io.l5d.http.retryableIdempotent5XX": _IDEMPOTENT_METHODS,
    "io.l5d.http.retryableAll5XX": _ALL_METHODS,
    "io.l5d.http.allSuccessful": None,
}

_RETRYABLE_HEADER = b"l5d-retryable"


def _retryable_methods(kind: str) -> frozenset[str] | None:
    try:
        return KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise ValueError(f"unknown response classifier kind {kind!r} (known: {known})") from None


def _method_str(method: str | bytes) -> str:
    # h11 hands methods over as bytes; config and tests use str.  Latin-1 never fails.
    return method.decode("latin-1") if isinstance(method, bytes) else method


def _has_retryable_header(headers: Iterable[tuple[bytes, bytes]] | None) -> bool:
    for name, value in headers or ():
        # h11 lower-cases names, but a caller may not have gone through h11.
        if name.lower() == _RETRYABLE_HEADER and value.strip().lower() == b"true":
            return True
    return False


def classify_error(kind: str, method: str | bytes, written: bool) -> ResponseClass:
    """Classify an attempt that produced no response at all.

    Args:
        kind: a classifier kind from :data:`KINDS`.
        method: the request method (``"GET"`` or ``b"GET"``).
        written: False when the request certainly never reached the server (connect refused,
            no connection could be had); True when it was, or may have been, sent.

    Returns:
        FAILURE_RETRYABLE when ``written`` is False (always safe), or when the kind deems
        ``method`` retryable; FAILURE_NON_RETRYABLE otherwise.

    Raises:
        ValueError: ``kind`` is unknown.
    """
    methods = _retryable_methods(kind)
    if not written:
        return ResponseClass.FAILURE_RETRYABLE
    if methods and _method_str(method) in methods:
        return ResponseClass.FAILURE_RETRYABLE
    return ResponseClass.FAILURE_NON_RETRYABLE


def classify(
    kind: str,
    method: str | bytes,
    status: int,
    response_headers: Iterable[tuple[bytes, bytes]] | None = None,
) -> ResponseClass:
    """Classify one attempt that produced a response (:func:`classify_error` for one that
    produced none).

    Args:
        kind: a classifier kind from :data:`KINDS`.
        method: the request method (``"GET"`` or ``b"GET"``).
        status: the response status.
        response_headers: the response's headers (names in any case), or None.

    Raises:
        ValueError: ``kind`` is unknown.
    """
    methods = _retryable_methods(kind)
    if not 500 <= status <= 599:
        return ResponseClass.SUCCESS
    if _has_retryable_header(response_headers):
        return ResponseClass.FAILURE_RETRYABLE
    if methods is None:  # allSuccessful
        return ResponseClass.SUCCESS
    if _method_str(method) in methods:
        return ResponseClass.FAILURE_RETRYABLE
    return ResponseClass.FAILURE_NON_RETRYABLE


@dataclass(frozen=True, slots=True)
class Classifier:
    """A validated classifier kind, callable as ``classifier(method, status, headers)``."""

    kind: str = DEFAULT_CLASSIFIER_KIND

    def __post_init__(self) -> None:
        _retryable_methods(self.kind)  # fail at config time, not on the first request

    def __call__(
        self,
        method: str | bytes,
        status: int,
        response_headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> ResponseClass:
        """See :func:`classify`."""
        return classify(self.kind, method, status, response_headers)

    def classify_error(self, method: str | bytes, written: bool) -> ResponseClass:
        """See :func:`classify_error`."""
        return classify_error(self.kind, method, written)


def build_classifier(config: Mapping[str, Any] | None) -> Classifier:
    """Build the classifier of a ``responseClassifier`` config section.

    Args:
        config: ``{kind: <kind>}``, or None for the default (``io.l5d.http.nonRetryable5XX``).

    Raises:
        ValueError: the section is not a mapping, has a key other than ``kind``, or names an
            unknown kind; the message names the offending key or kind.
    """
    if config is None:
        return Classifier()
    if not isinstance(config, Mapping):
        raise ValueError(f"responseClassifier must be a mapping, got {config!r}")
    unknown = sorted(str(k) for k in config if k != "kind")
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in responseClassifier "
            "(known keys: kind)"
        )
    kind = config.get("kind", DEFAULT_CLASSIFIER_KIND)
    if not isinstance(kind, str):
        raise ValueError(f"responseClassifier.kind must be a string, got {kind!r}")
    return Classifier(kind)
