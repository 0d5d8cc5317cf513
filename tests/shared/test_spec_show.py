"""docs/dtabs.md, Printing: printing (show) and its canonical forms.

Path / Prefix / NameTree / Dentry / Dtab show, whole-label escaping, the three show levels,
Java ``%.2f`` (HALF_UP) weights, single-child transparency and the read/show round trip.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared
from shared import (
    EMPTY,
    FAIL,
    NEG,
    Alt,
    Dentry,
    Dtab,
    Leaf,
    Path,
    Prefix,
    Union,
    Weighted,
    show_tree,
)

read_tree = shared.read_name_tree
LABEL_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-"


def L(text: str) -> Leaf[Path]:
    return Leaf(Path.read(text))


def W(w: float, t: object) -> Weighted[Path]:
    return Weighted(w, t)  # type: ignore[arg-type]


def java_2f(w: float) -> str:
    """The spec's recipe for Java's String.format("%.2f")."""
    return str(Decimal(repr(w)).quantize(Decimal("0.01"), ROUND_HALF_UP))


# ---------------------------------------------------------------------------------------------
# Path.show
# ---------------------------------------------------------------------------------------------


def test_empty_path_shows_as_slash() -> None:
    assert Path().show() == "/"


def test_plain_labels_join_with_slash() -> None:
    assert Path("a", "b").show() == "/a/b"
    assert Path(LABEL_CHARS).show() == "/" + LABEL_CHARS
    assert Path("#", "io.l5d.k8s").show() == "/#/io.l5d.k8s"


def test_label_with_a_non_label_byte_is_escaped_entirely() -> None:
    assert Path("b/c").show() == "/\\x62\\x2f\\x63"
    assert Path("a", "b/c").show() == "/a/\\x62\\x2f\\x63"
    assert Path(b"a b").show() == "/\\x61\\x20\\x62"
    assert Path(b"*").show() == "/\\x2a"
    assert Path("café").show() == "/\\x63\\x61\\x66\\xc3\\xa9"
    assert Path(b"\x00").show() == "/\\x00"


def test_escapes_are_lower_case_hex() -> None:
    assert Path(b"\xab\xcd").show() == "/\\xab\\xcd"
    assert Path.read("/\\xAB").show() == "/\\xab"


def test_escape_of_showable_byte_is_normalised_away() -> None:
    assert Path.read("/\\x61bc").show() == "/abc"
    assert Path.read("/\\x23/\\x24").show() == "/#/$"


labels_st = st.lists(st.binary(min_size=1, max_size=6), max_size=4)


@given(labels_st)
@settings(max_examples=200, deadline=None, database=None)
def test_path_show_is_canonical_and_round_trips(labels: list[bytes]) -> None:
    p = Path(*labels)
    text = p.show()
    assert Path.read(text) == p
    assert Path.read(text).show() == text
    # each label is either raw (all label bytes) or every byte escaped
    parts = text.split("/")[1:] if labels else []
    assert len(parts) == len(labels)
    for lab, part in zip(labels, parts, strict=True):
        if all(chr(b) in LABEL_CHARS for b in lab):
            assert part == lab.decode("ascii")
        else:
            assert part == "".join(f"\\x{b:02x}" for b in lab)


# ---------------------------------------------------------------------------------------------
# Prefix.show
# ---------------------------------------------------------------------------------------------


def test_prefix_show() -> None:
    assert Prefix.read("/").show() == "/"
    assert Prefix.read("/a/*/b").show() == "/a/*/b"
    assert Prefix.read("/*").show() == "/*"
    assert Prefix.read("/\\x61/*").show() == "/a/*"
    # a literal '*' label is not a wildcard and is escaped like any non-label byte
    assert Prefix.read("/\\x2a").show() == "/\\x2a"
    assert Prefix.read("/a\\x2f").show() == "/\\x61\\x2f"
    assert Prefix.read(Prefix.read("/\\x2a/*").show()) == Prefix.read("/\\x2a/*")


# ---------------------------------------------------------------------------------------------
# NameTree.show: the three levels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # the spec's examples
        ("/a | (/b | /c)", "/a | (/b | /c)"),
        ("(/a | /b) & /c", "(/a | /b) & /c"),
        ("(/a & /b) | /c", "/a & /b | /c"),
        ("(/a & /b) & /c", "(/a & /b) & /c"),
        ("2 * (/a & /b) & /c", "2.00*(/a & /b) & /c"),
        # more of the same rules
        ("(/a | /b) | /c", "(/a | /b) | /c"),
        ("/a|/b", "/a | /b"),
        ("/a&/b", "/a & /b"),
        ("/a | /b & /c", "/a | /b & /c"),
        ("/a & (/b | /c)", "/a & (/b | /c)"),
        ("0.5*(/a | /b) & /c", "0.50*(/a | /b) & /c"),
        ("0.5 * /a & /b", "0.50*/a & /b"),
        ("1*/a & 1.0*/b", "/a & /b"),
        ("~ | ! | $", "~ | ! | $"),
        ("2*~ & $", "2.00*~ & $"),
        ("((/a))", "/a"),
        ("3 * /a", "/a"),
        ("/", "/"),
        ("/\\x61/b", "/a/b"),
    ],
)
def test_tree_show(text: str, shown: str) -> None:
    assert show_tree(read_tree(text)) == shown


def test_alt_at_union_level_and_simple_level_gets_parentheses() -> None:
    t = Alt.of(L("/a"), Union.of(Alt.of(L("/b"), L("/c")), L("/d")))
    assert show_tree(t) == "/a | (/b | /c) & /d"
    t2 = Union.of(Union.of(L("/a"), L("/b")), Alt.of(L("/c"), L("/d")))
    assert show_tree(t2) == "(/a & /b) & (/c | /d)"


def test_no_spaces_around_weight_star() -> None:
    t = Union((W(0.5, L("/a")), W(2.0, L("/b"))))
    assert show_tree(t) == "0.50*/a & 2.00*/b"


# ---------------------------------------------------------------------------------------------
# Weight formatting: Java %.2f, HALF_UP on the shortest decimal form
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "shown"),
    [
        (0.125, "0.13"),
        (2.675, "2.68"),
        (1.005, "1.01"),
        (1.001, "1.00"),
        (0.5, "0.50"),
        (0.0, "0.00"),
        (2.0, "2.00"),
        (10.0, "10.00"),
        (0.015, "0.02"),
        (0.004, "0.00"),
        (0.995, "1.00"),
        (1234.5, "1234.50"),
    ],
)
def test_weight_is_java_percent_2f(w: float, shown: str) -> None:
    t = Union((W(w, L("/a")), W(1.0, L("/b"))))
    assert show_tree(t) == f"{shown}*/a & /b"
    assert shared.format_weight(w) == shown


def test_python_percent_2f_would_differ() -> None:
    # Sanity check of the examples: these are the cases where Python rounds differently.
    assert [f"{w:.2f}" for w in (0.125, 2.675, 1.005)] == ["0.12", "2.67", "1.00"]
    shown = [show_tree(Union((W(w, L("/a")), W(1.0, L("/b"))))) for w in (0.125, 2.675, 1.005)]
    assert shown == ["0.13*/a & /b", "2.68*/a & /b", "1.01*/a & /b"]


def test_weight_one_is_not_printed_but_one_point_zero_zero_one_is() -> None:
    assert show_tree(Union((W(1.0, L("/a")), W(1.0, L("/b"))))) == "/a & /b"
    assert show_tree(Union((W(1.001, L("/a")), W(1.0, L("/b"))))) == "1.00*/a & /b"
    # so show->read loses precision beyond 2 decimals
    back = read_tree("1.00*/a & /b")
    assert back == Union((W(1.0, L("/a")), W(1.0, L("/b"))))


@given(st.floats(min_value=0.0, max_value=1e9, allow_nan=False, allow_infinity=False))
@settings(max_examples=300, deadline=None, database=None)
def test_weight_formatting_property(w: float) -> None:
    t = Union((W(w, L("/a")), W(1.0, L("/b"))))
    expected = "/a & /b" if w == 1.0 else f"{java_2f(w)}*/a & /b"
    assert show_tree(t) == expected


# ---------------------------------------------------------------------------------------------
# Single-child transparency and zero-child nodes (built in code)
# ---------------------------------------------------------------------------------------------


def test_single_child_nodes_are_transparent_at_every_level() -> None:
    assert show_tree(Alt.of(L("/a"))) == "/a"
    assert show_tree(Union((W(2.0, L("/a")),))) == "/a"  # weight of 1-child union not printed
    assert show_tree(Alt.of(Alt.of(L("/a"), L("/b")))) == "/a | /b"
    assert show_tree(Union((W(3.0, Union.of(L("/a"), L("/b"))),))) == "/a & /b"
    # union level
    assert show_tree(Alt.of(Union((W(3.0, Union.of(L("/a"), L("/b"))),)), L("/c"))) == (
        "/a & /b | /c"
    )
    assert show_tree(Alt.of(Alt.of(Alt.of(L("/a"), L("/b"))), L("/c"))) == "(/a | /b) | /c"
    # simple level
    assert show_tree(Union.of(Alt.of(Alt.of(L("/a"), L("/b"))), L("/c"))) == "(/a | /b) & /c"
    assert show_tree(Union((W(2.0, Alt.of(L("/a"))), W(1.0, L("/b"))))) == "2.00*/a & /b"
    assert show_tree(Union.of(Union((W(5.0, L("/a")),)), L("/b"))) == "/a & /b"
    assert show_tree(Alt.of(NEG)) == "~"
    assert show_tree(Union((W(2.0, FAIL),))) == "!"
    assert show_tree(Alt.of(Union((W(2.0, EMPTY),)), L("/b"))) == "$ | /b"


def test_zero_child_nodes() -> None:
    assert show_tree(Alt(())) == ""
    assert show_tree(Union(())) == ""
    assert show_tree(Alt.of(L("/a"), Alt(()))) == "/a | ()"
    assert show_tree(Union.of(L("/a"), Union(()))) == "/a & ()"
    assert show_tree(Union.of(L("/a"), Alt(()))) == "/a & ()"


# ---------------------------------------------------------------------------------------------
# Dentry.show / Dtab.show
# ---------------------------------------------------------------------------------------------


def test_dentry_show() -> None:
    assert Dentry.read("/foo => /bar | /baz & 2*/qux").show() == "/foo=>/bar | /baz & 2.00*/qux"
    assert Dentry.read("/a/*  =>  ~").show() == "/a/*=>~"
    assert Dentry.read("/ => /a").show() == "/=>/a"
    assert Dentry.read("/\\x2a => /\\x2a").show() == "/\\x2a=>/\\x2a"


def test_dtab_show() -> None:
    assert Dtab.read("/a => /b; /c => /d").show() == "/a=>/b;/c=>/d"
    assert Dtab.read("/a=>/b;").show() == "/a=>/b"
    assert Dtab.read("/a => /b | /c;\n/d => 0.25*/e & /f ;").show() == (
        "/a=>/b | /c;/d=>0.25*/e & /f"
    )
    assert Dtab.empty().show() == ""
    assert Dtab.read("").show() == ""
    assert Dtab.read("# nothing").show() == ""


# ---------------------------------------------------------------------------------------------
# Round trip: read(show(x)) == x for parser-producible trees with <= 2-decimal weights
# ---------------------------------------------------------------------------------------------

paths_st = st.lists(st.binary(min_size=1, max_size=4), max_size=3).map(lambda ls: Path(*ls))
simple_st = st.one_of(paths_st.map(Leaf), st.just(NEG), st.just(FAIL), st.just(EMPTY))
weights_st = st.one_of(st.just(1.0), st.integers(0, 100_000).map(lambda n: n / 100))


def _grow(children: st.SearchStrategy) -> st.SearchStrategy:
    alts = st.lists(children, min_size=2, max_size=4).map(lambda ts: Alt(tuple(ts)))
    unions = st.lists(st.tuples(weights_st, children), min_size=2, max_size=4).map(
        lambda ws: Union(tuple(Weighted(w, t) for w, t in ws))
    )
    return alts | unions


parsable_trees = st.recursive(simple_st, _grow, max_leaves=12)
prefix_st = st.lists(st.one_of(st.just("*"), st.binary(min_size=1, max_size=4)), max_size=3).map(
    lambda es: Prefix.of(*es)
)


@given(parsable_trees)
@settings(max_examples=300, deadline=None, database=None)
def test_tree_read_show_round_trip(tree: object) -> None:
    text = show_tree(tree)  # type: ignore[arg-type]
    assert read_tree(text) == tree
    assert show_tree(read_tree(text)) == text


@given(st.lists(st.tuples(prefix_st, parsable_trees), max_size=4))
@settings(max_examples=150, deadline=None, database=None)
def test_dtab_read_show_round_trip(entries: list[tuple[Prefix, object]]) -> None:
    d = Dtab([Dentry(p, t) for p, t in entries])  # type: ignore[arg-type]
    assert Dtab.read(d.show()) == d
    for dentry in d:
        assert Dentry.read(dentry.show()) == dentry
        assert Prefix.read(dentry.prefix.show()) == dentry.prefix
