"""Hypothesis properties: show/read round-trips and a parser that only ever raises its own error."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import (
    ANY,
    EMPTY,
    FAIL,
    NEG,
    Alt,
    Dentry,
    Dtab,
    DtabParseError,
    Leaf,
    Path,
    Prefix,
    Union,
    Weighted,
    eval_tree,
    read_name_tree,
    show_tree,
    simplify,
)

labels = st.binary(min_size=1, max_size=6) | st.text(
    alphabet=string.ascii_letters + string.digits + "_:.#$%-", min_size=1, max_size=6
).map(str.encode)
paths = st.lists(labels, max_size=4).map(lambda ls: Path(*ls))
prefixes = st.lists(labels | st.just(ANY), max_size=4).map(lambda es: Prefix(tuple(es)))
# Weights with at most two decimals survive show -> read exactly (Finagle's own property).
weights = st.integers(min_value=0, max_value=100_000).map(lambda n: n / 100)


def _trees(leaf: st.SearchStrategy[Leaf[Path]]) -> st.SearchStrategy[object]:
    base = leaf | st.sampled_from([NEG, FAIL, EMPTY])

    def extend(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.lists(children, min_size=2, max_size=3).map(lambda ts: Alt(tuple(ts))) | st.lists(
            st.tuples(weights, children), min_size=2, max_size=3
        ).map(lambda ws: Union(tuple(Weighted(w, t) for w, t in ws)))

    return st.recursive(base, extend, max_leaves=8)


trees = _trees(paths.map(Leaf))
dentries = st.builds(Dentry, prefixes, trees)
dtabs = st.lists(dentries, max_size=4).map(Dtab)


@given(paths)
def test_path_show_read_round_trip(p: Path) -> None:
    assert Path.read(p.show()) == p


@given(prefixes)
def test_prefix_show_read_round_trip(p: Prefix) -> None:
    assert Prefix.read(p.show()) == p


@given(trees)
def test_tree_show_read_round_trip(t: object) -> None:
    assert read_name_tree(show_tree(t)) == t  # type: ignore[arg-type]


@given(dtabs)
def test_dtab_show_read_round_trip(d: Dtab) -> None:
    assert Dtab.read(d.show()) == d
    assert Dtab.read(d.pretty()) == d


@given(trees)
def test_simplify_is_a_fixpoint_and_keeps_eval(t: object) -> None:
    s = simplify(t)  # type: ignore[arg-type]
    assert simplify(s) == s
    assert eval_tree(s) == eval_tree(t)  # type: ignore[arg-type]


# Text that is close to the grammar finds more corners than uniform noise.
grammar_text = st.text(alphabet="/ab*$#!~&|().;=>\\x0f19 \n\t\u00a0\u2028é", max_size=40)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(grammar_text | st.text(max_size=40))
def test_parser_only_raises_its_own_error_on_any_text(text: str) -> None:
    for read in (Dtab.read, Path.read, Prefix.read, Dentry.read, read_name_tree):
        try:
            parsed = read(text)
        except DtabParseError as err:
            assert 0 <= err.offset <= len(err.text)  # noqa: PT017
            err.render()
        else:
            # Whatever parses re-parses from its canonical form, reaching a fixpoint (weights
            # print with 2 decimals, so the first re-read may round once).
            once = _show(read(_show(parsed)))
            assert _show(read(once)) == once


def _show(value: object) -> str:
    show = getattr(value, "show", None)
    return show() if callable(show) else show_tree(value)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_parser_only_raises_its_own_error_on_random_bytes(data: bytes) -> None:
    for read in (Dtab.read, Path.read, Dentry.read, read_name_tree):
        try:
            read(data)
        except DtabParseError as err:
            assert 0 <= err.offset <= len(err.text)  # noqa: PT017
            err.render()


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    text = "/a=>" + "(" * 5000 + "/b" + ")" * 5000
    with pytest.raises(DtabParseError) as info:
        Dtab.read(text)
    assert "nested" in info.value.expected
