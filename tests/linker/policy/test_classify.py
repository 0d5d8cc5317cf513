"""Linkerd's HTTP response classifiers: every kind x method x status x header, and errors."""

from __future__ import annotations

import pytest

from linker.policy.classify import (
    DEFAULT_CLASSIFIER_KIND,
    KINDS,
    Classifier,
    ResponseClass,
    build_classifier,
    classify,
    classify_error,
)

S = ResponseClass.SUCCESS
R = ResponseClass.FAILURE_RETRYABLE
N = ResponseClass.FAILURE_NON_RETRYABLE

NON_RETRYABLE = "io.l5d.http.nonRetryable5XX"
READ = "io.l5d.http.retryableRead5XX"
IDEMPOTENT = "io.l5d.http.retryableIdempotent5XX"
ALL = "io.l5d.http.retryableAll5XX"
ALL_SUCCESSFUL = "io.l5d.http.allSuccessful"

METHODS = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH", "CONNECT"]

# kind -> the methods whose 5XX (and written errors) are retryable.
RETRYABLE_BY_KIND = {
    NON_RETRYABLE: set(),
    READ: {"GET", "HEAD", "OPTIONS", "TRACE"},
    IDEMPOTENT: {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"},
    ALL: {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE", "POST", "PATCH"},
}

RETRYABLE_HEADER = [(b"l5d-retryable", b"true")]


def test_kinds_are_linkerds_and_the_default_is_non_retryable() -> None:
    assert set(KINDS) == {*RETRYABLE_BY_KIND, ALL_SUCCESSFUL}
    assert DEFAULT_CLASSIFIER_KIND == NON_RETRYABLE
    assert Classifier().kind == NON_RETRYABLE


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", [100, 200, 204, 301, 304, 400, 404, 429, 499, 600])
def test_non_5xx_is_success_for_every_kind_and_method(kind: str, method: str, status: int) -> None:
    assert classify(kind, method, status, None) is S
    # l5d-retryable on a response that did not fail does not make it a failure
    assert classify(kind, method, status, RETRYABLE_HEADER) is S


@pytest.mark.parametrize("kind", sorted(RETRYABLE_BY_KIND))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_5xx_is_retryable_only_for_the_kinds_methods(kind: str, method: str, status: int) -> None:
    expected = R if method in RETRYABLE_BY_KIND[kind] else N
    assert classify(kind, method, status, None) is expected
    assert classify(kind, method, status, []) is expected
    assert classify(kind, method, status, [(b"l5d-retryable", b"false")]) is expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", [500, 503])
def test_all_successful_never_fails_a_response(method: str, status: int) -> None:
    assert classify(ALL_SUCCESSFUL, method, status, None) is S


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "header",
    [
        (b"l5d-retryable", b"true"),
        (b"L5d-Retryable", b"TRUE"),
        (b"l5d-retryable", b" true "),
    ],
)
def test_l5d_retryable_header_makes_a_5xx_retryable_for_every_kind_and_method(
    kind: str, method: str, header: tuple[bytes, bytes]
) -> None:
    headers = [(b"content-type", b"text/plain"), header]
    assert classify(kind, method, 502, headers) is R


@pytest.mark.parametrize("value", [b"false", b"yes", b"1", b"", b"truee"])
def test_other_l5d_retryable_values_are_ignored(value: bytes) -> None:
    assert classify(NON_RETRYABLE, "GET", 502, [(b"l5d-retryable", value)]) is N


def test_methods_are_case_sensitive_and_may_be_bytes() -> None:
    assert classify(READ, "get", 500) is N
    assert classify(READ, b"GET", 500) is R
    assert classify(READ, b"POST", 500) is N
    assert classify_error(READ, b"GET", written=True) is R


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("method", METHODS)
def test_an_error_before_write_is_always_retryable(kind: str, method: str) -> None:
    assert classify_error(kind, method, written=False) is R


@pytest.mark.parametrize("kind", sorted(RETRYABLE_BY_KIND))
@pytest.mark.parametrize("method", METHODS)
def test_an_error_after_write_is_retryable_only_for_the_kinds_methods(
    kind: str, method: str
) -> None:
    expected = R if method in RETRYABLE_BY_KIND[kind] else N
    assert classify_error(kind, method, written=True) is expected


@pytest.mark.parametrize("method", METHODS)
def test_all_successful_fails_a_written_error_without_retrying(method: str) -> None:
    assert classify_error(ALL_SUCCESSFUL, method, written=True) is N


def test_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match=r"'io\.l5d\.http\.bogus'.*known: io\.l5d"):
        classify("io.l5d.http.bogus", "GET", 500)
    with pytest.raises(ValueError, match="bogus"):
        classify_error("bogus", "GET", written=False)


# --- build_classifier -------------------------------------------------------------------------


def test_build_classifier_defaults_and_kinds() -> None:
    assert build_classifier(None).kind == NON_RETRYABLE
    assert build_classifier({}).kind == NON_RETRYABLE
    c = build_classifier({"kind": READ})
    assert c.kind == READ
    assert c("GET", 503) is R
    assert c("POST", 503, None) is N
    assert c.classify_error("POST", written=False) is R
    assert c.classify_error("PUT", written=True) is N


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "io.l5d.http.retryableWrite5XX"}, "'io.l5d.http.retryableWrite5XX'"),
        ({"kind": 5}, "kind must be a string"),
        ({"kind": READ, "retries": 3}, "unknown key.*'retries'.*known keys: kind"),
        ("io.l5d.http.retryableRead5XX", "must be a mapping"),
    ],
)
def test_build_classifier_rejects_bad_config(config: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_classifier(config)  # type: ignore[arg-type]


def test_classifier_validates_at_construction() -> None:
    with pytest.raises(ValueError, match="nope"):
        Classifier("nope")
