"""Header helpers: lookups and edits, hop-by-hop stripping (RFC 7230 §6.1), Via and its depth."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linker.http import hop

HEADERS: hop.Headers = [
    (b"host", b"svc"),
    (b"x-a", b"1"),
    (b"x-b", b"2"),
    (b"x-a", b"3"),
]


def test_get_and_get_all() -> None:
    assert hop.get(HEADERS, b"x-a") == b"1"
    assert hop.get(HEADERS, "X-A") == b"1"  # names are case-insensitive, str or bytes
    assert hop.get(HEADERS, b"missing") is None
    assert hop.get_all(HEADERS, "x-a") == [b"1", b"3"]
    assert hop.get_all(HEADERS, b"missing") == []


def test_set_replaces_in_place_and_appends_when_missing() -> None:
    assert hop.set(HEADERS, "X-A", b"9") == [(b"host", b"svc"), (b"x-a", b"9"), (b"x-b", b"2")]
    assert hop.set(HEADERS, b"x-new", b"n")[-1] == (b"x-new", b"n")
    assert HEADERS[1] == (b"x-a", b"1")  # never mutated


def test_strip_hop_by_hop_fixed_list() -> None:
    headers = [
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-authenticate", b"Basic"),
        (b"proxy-authorization", b"Basic abc"),
        (b"proxy-connection", b"keep-alive"),
        (b"te", b"trailers"),
        (b"trailer", b"x-checksum"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"content-length", b"3"),
        (b"authorization", b"Bearer t"),
    ]
    assert hop.strip_hop_by_hop(headers) == [
        (b"content-length", b"3"),
        (b"authorization", b"Bearer t"),
    ]


def test_strip_hop_by_hop_removes_fields_named_in_connection() -> None:
    headers = [
        (b"connection", b"close, X-Private"),
        (b"connection", b" x-other ,"),
        (b"x-private", b"secret"),
        (b"x-other", b"o"),
        (b"x-public", b"p"),
        (b"host", b"h"),
    ]
    assert hop.strip_hop_by_hop(headers) == [(b"x-public", b"p"), (b"host", b"h")]


def test_strip_keeps_order_and_duplicates() -> None:
    headers = [
        (b"x", b"1"),
        (b"te", b"trailers"),
        (b"x", b"2"),
        (b"set-cookie", b"a"),
        (b"x", b"3"),
    ]
    assert hop.strip_hop_by_hop(headers) == [
        (b"x", b"1"),
        (b"x", b"2"),
        (b"set-cookie", b"a"),
        (b"x", b"3"),
    ]


def test_add_via_like_linkerd() -> None:
    assert hop.add_via([(b"host", b"h")], "1.1") == [(b"host", b"h"), (b"via", b"1.1 linkerd")]
    assert hop.add_via([], "1.0") == [(b"via", b"1.0 linkerd")]
    # Existing values are joined into one field at the first one's position.
    headers = [(b"via", b"1.1 edge"), (b"x", b"1"), (b"via", b"1.0 fred, 1.1 p.example (Apache)")]
    assert hop.add_via(headers, "1.1") == [
        (b"via", b"1.1 edge, 1.0 fred, 1.1 p.example (Apache), 1.1 linkerd"),
        (b"x", b"1"),
    ]


@pytest.mark.parametrize(
    ("values", "depth"),
    [
        ([], 0),
        ([b"1.1 linkerd"], 1),
        ([b"1.1 a, 1.1 b"], 2),
        ([b"1.1 a", b"1.1 b, 1.0 c"], 3),
        ([b"1.1 a (comment, with comma), 1.1 b"], 2),
        ([b" , 1.1 a ,, "], 1),  # empty list elements don't count (RFC 9110 §5.6.1)
        ([b""], 0),
    ],
)
def test_via_depth(values: list[bytes], depth: int) -> None:
    assert hop.via_depth([(b"via", v) for v in values]) == depth


@given(st.integers(min_value=0, max_value=30))
def test_each_add_via_adds_one_to_the_depth(hops: int) -> None:
    headers: hop.Headers = [(b"host", b"h")]
    for _ in range(hops):
        headers = hop.add_via(headers, "1.1")
    assert hop.via_depth(headers) == hops
    assert len(hop.get_all(headers, b"via")) == (1 if hops else 0)


_NAMES = st.sampled_from([b"host", b"via", b"x-a", b"l5d-dst-service", b"l5d-reqid"])
_FIELDS = st.lists(st.tuples(_NAMES, st.binary(min_size=1, max_size=4)), max_size=8)


@given(_FIELDS, st.dictionaries(_NAMES, st.binary(min_size=1, max_size=4), max_size=4))
def test_set_many_is_set_applied_in_order(headers: hop.Headers, fields: dict[bytes, bytes]) -> None:
    expected = headers
    for name, value in fields.items():
        expected = hop.set(expected, name, value)
    assert hop.set_many(headers, fields) == expected


@given(_FIELDS, st.sampled_from(["1.0", "1.1"]))
def test_via_value_is_what_add_via_sets(headers: hop.Headers, version: str) -> None:
    assert hop.get(hop.add_via(headers, version), "via") == hop.via_value(headers, version)
