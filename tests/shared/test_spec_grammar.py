"""docs/dtabs.md, Syntax: concrete syntax and lexical rules of the dtab language.

Every test is derived from the text of the specification, not from the implementation.
Errors must be ``shared.DtabParseError``; where the position is determined by the grammar we
also check ``.offset`` (the index of the character the parser stopped at) and, where the spec
names the token, ``.expected`` / ``.found``.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared
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
)

read_tree = shared.read_name_tree

#: Label characters are exactly 0-9 A-Z a-z _ : . # $ % -.
LABEL_CHARS = string.digits + string.ascii_uppercase + string.ascii_lowercase + "_:.#$%-"

#: Java ``Character.isWhitespace``: space, TAB, LF, VT, FF, CR, U+001C-U+001F and the
#: Unicode space/line/paragraph separators except the no-break ones.
JAVA_WS = [
    " ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1d", "\x1e", "\x1f",
    "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
    "\u2008", "\u2009", "\u200a", "\u2028", "\u2029", "\u205f", "\u3000",
]  # fmt: skip

#: NOT whitespace: the no-break spaces, U+0085 (which Python's isspace accepts), and
#: format characters.
NOT_WS = ["\u00a0", "\u2007", "\u202f", "\u0085", "\u200b", "\ufeff"]


def P(*labels: str | bytes) -> Path:
    return Path(*labels)


def L(text: str) -> Leaf[Path]:
    return Leaf(Path.read(text))


def W(w: float, t: object) -> Weighted[Path]:
    return Weighted(w, t)  # type: ignore[arg-type]


def parse_error(fn, text, offset=None, expected=None, found=None) -> DtabParseError:  # type: ignore[no-untyped-def]
    with pytest.raises(DtabParseError) as info:
        fn(text)
    err = info.value
    if offset is not None:
        assert err.offset == offset, (text, err.offset, err.expected)
    if expected is not None:
        assert err.expected == expected, (text, err.expected)
    if found is not None:
        assert err.found == found, (text, err.found)
    return err


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", list(LABEL_CHARS))
def test_every_label_char_is_accepted_raw(c: str) -> None:
    assert Path.read("/" + c) == P(c)
    assert Path.read(f"/x{c}y/{c}") == P(f"x{c}y", c)
    assert Prefix.read(f"/x{c}") == Prefix.of(f"x{c}")
    assert read_tree(f"/x{c}") == Leaf(P(f"x{c}"))


def test_all_label_chars_in_one_label() -> None:
    assert Path.read("/" + LABEL_CHARS) == P(LABEL_CHARS)


NON_LABEL_ASCII = [
    c for c in string.printable if c not in LABEL_CHARS and c not in "/\\" and not c.isspace()
]


@pytest.mark.parametrize("c", NON_LABEL_ASCII)
def test_other_ascii_chars_are_not_label_chars(c: str) -> None:
    # The path /a ends before c, so c is trailing garbage at offset 2.
    parse_error(Path.read, f"/a{c}b", offset=2, expected="end of input")
    if c not in "|&;":  # operators: the path still ends there, but the error comes later
        parse_error(read_tree, f"/a{c}b", offset=2)
        parse_error(Dtab.read, f"/x=>/a{c}b", offset=6)


def test_star_is_not_a_label_char_in_paths() -> None:
    parse_error(Path.read, "/*", offset=1)
    parse_error(Path.read, "/a/*", offset=3, expected="label char")
    parse_error(read_tree, "/a/*", offset=3)
    parse_error(Dtab.read, "/a=>/*", offset=5)


# ---------------------------------------------------------------------------------------------
# \xHH escapes
# ---------------------------------------------------------------------------------------------


def test_hex_escape_gives_one_raw_byte() -> None:
    assert Path.read("/\\x41") == P(b"A")
    assert Path.read("/\\x00\\xff") == P(b"\x00\xff")
    assert Path.read("/a\\x2fb") == P(b"a/b")  # one label, not two
    assert Path.read("/a\\x2fb") != Path.read("/a/b")
    assert Path.read("/\\x61bc") == P("abc")


def test_hex_digits_either_case() -> None:
    assert Path.read("/\\xAb") == Path.read("/\\xaB") == Path.read("/\\xab") == P(b"\xab")
    assert Path.read("/\\xFF") == P(b"\xff")


@given(st.lists(st.binary(min_size=1, max_size=6), max_size=4), st.booleans())
@settings(max_examples=150, deadline=None, database=None)
def test_hex_escape_any_byte(labels: list[bytes], upper: bool) -> None:
    fmt = "\\x{:02X}" if upper else "\\x{:02x}"
    text = "".join("/" + "".join(fmt.format(b) for b in lab) for lab in labels) or "/"
    assert Path.read(text) == Path(*labels)


def test_escape_x_must_be_lower_case() -> None:
    parse_error(Path.read, "/\\X41", offset=2, expected="'x'")
    parse_error(Path.read, "/a\\", offset=3, expected="'x'", found="end of input")


def test_escape_needs_exactly_two_hex_digits() -> None:
    parse_error(Path.read, "/\\x", offset=3, expected="hex char", found="end of input")
    parse_error(Path.read, "/\\x4", offset=4, expected="hex char", found="end of input")
    parse_error(Path.read, "/\\x4g", offset=4, expected="hex char", found="'g'")
    parse_error(Path.read, "/\\xg4", offset=3, expected="hex char")
    # Three hex digits: the escape takes two, the third is an ordinary label char.
    assert Path.read("/\\x414") == P(b"A4")


def test_escapes_work_in_prefixes_and_trees() -> None:
    assert Prefix.read("/\\x61") == Prefix.of("a")
    assert read_tree("/\\x62\\x2f\\x63") == Leaf(P(b"b/c"))


# ---------------------------------------------------------------------------------------------
# Non-ASCII
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["/é", "/café", "/a/ü", "/٢", "/ｆ"])
def test_non_ascii_characters_are_not_allowed_raw(text: str) -> None:
    bad = next(i for i, c in enumerate(text) if ord(c) > 127)
    parse_error(Path.read, text, offset=bad)
    parse_error(read_tree, text, offset=bad)


def test_non_ascii_must_be_escaped_as_utf8_bytes() -> None:
    assert Path.read("/caf\\xc3\\xa9") == P("café") == P(b"caf\xc3\xa9")


def test_non_ascii_in_prefix_is_an_error() -> None:
    parse_error(Dtab.read, "/é=>/a", offset=1)
    parse_error(Prefix.read, "/aé", offset=2)


# ---------------------------------------------------------------------------------------------
# '*' in prefixes
# ---------------------------------------------------------------------------------------------


def test_star_is_a_whole_prefix_element() -> None:
    assert Prefix.read("/*").elems == (ANY,)
    assert Prefix.read("/a/*/b").elems == (b"a", ANY, b"b")
    assert Prefix.read("/*/*").elems == (ANY, ANY)
    d = Dentry.read("/svc/*/users => /x")
    assert d.prefix.elems == (b"svc", ANY, b"users")


@pytest.mark.parametrize(
    ("text", "offset"),
    [("/fo*", 3), ("/*bar", 2), ("/**", 2), ("/a*/b", 2), ("/a/b*", 4)],
)
def test_star_inside_a_label_is_an_error(text: str, offset: int) -> None:
    parse_error(Prefix.read, text, offset=offset)
    parse_error(Dtab.read, text + "=>/x", offset=offset)
    parse_error(Dentry.read, text + "=>/x", offset=offset)


def test_escaped_star_in_prefix_is_a_literal_label() -> None:
    p = Prefix.read("/\\x2a")
    assert p.elems == (b"*",)
    assert p.elems[0] is not ANY
    assert p.matches(P(b"*"))
    assert not p.matches(P("x"))
    assert Prefix.read("/*").matches(P("x"))
    # and in a dtab
    d = Dtab.read("/\\x2a=>/b")
    assert d.lookup(P("x")) is NEG
    assert d.lookup(P(b"*")) == L("/b")


# ---------------------------------------------------------------------------------------------
# Empty labels, "/" alone
# ---------------------------------------------------------------------------------------------


def test_slash_alone_is_the_empty_path() -> None:
    assert Path.read("/") == Path()
    assert len(Path.read("/")) == 0
    assert Prefix.read("/").elems == ()
    assert read_tree("/") == Leaf(Path())
    assert Dentry.read("/=>/").prefix == Prefix(())


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [("//", 1, "end of input"), ("/a//b", 3, "label char"), ("/a/", 3, "label char")],
)
def test_no_empty_labels(text: str, offset: int, expected: str) -> None:
    parse_error(Path.read, text, offset=offset, expected=expected)
    parse_error(read_tree, text, offset=offset)
    parse_error(Prefix.read, text, offset=offset)
    parse_error(Dtab.read, "/x=>" + text, offset=offset + 4)
    parse_error(Dtab.read, text + "=>/x", offset=offset)


def test_labels_are_never_empty_in_code_either() -> None:
    with pytest.raises((ValueError, shared.SharedError)):
        Path(b"")
    with pytest.raises((ValueError, shared.SharedError)):
        Path("a", "")


def test_finagle_error_examples() -> None:
    # '/' expected but 'i' found at '[i]nvalid-param'
    parse_error(Path.read, "invalid-param", offset=0, expected="'/'", found="'i'")
    parse_error(Dtab.read, "invalid-param", offset=0, expected="'/'", found="'i'")
    # label char expected but end of input found at '/foo/bar/[]'
    parse_error(Path.read, "/foo/bar/", offset=9, expected="label char", found="end of input")


def test_empty_text_is_not_a_path() -> None:
    parse_error(Path.read, "", offset=0, expected="'/'", found="end of input")
    parse_error(read_tree, "", offset=0, expected="simple", found="end of input")


# ---------------------------------------------------------------------------------------------
# Whitespace (Java Character.isWhitespace)
# ---------------------------------------------------------------------------------------------

CANONICAL = "/a=>/b|2*/c&(/d);/e=>/f"


@pytest.mark.parametrize("w", JAVA_WS, ids=[f"U+{ord(c):04X}" for c in JAVA_WS])
def test_java_whitespace_is_skipped_where_allowed(w: str) -> None:
    text = f"{w}/a{w}=>{w}/b{w}|{w}2{w}*{w}/c{w}&{w}({w}/d{w}){w};{w}/e=>/f{w}"
    assert Dtab.read(text) == Dtab.read(CANONICAL)
    assert Path.read(f"{w}/a/b{w}") == P("a", "b")
    assert Prefix.read(f"{w}/a/*{w}") == Prefix.of("a", "*")
    assert Dentry.read(f"{w}/a{w}=>{w}/b{w}") == Dentry.read("/a=>/b")


@pytest.mark.parametrize("c", NOT_WS, ids=[f"U+{ord(c):04X}" for c in NOT_WS])
def test_non_java_whitespace_is_rejected(c: str) -> None:
    parse_error(Dtab.read, f"{c}/a=>/b", offset=0, expected="'/'")
    parse_error(Dtab.read, f"/a=>{c}/b", offset=4, expected="simple")
    parse_error(Dtab.read, f"/a{c}=>/b", offset=2)
    parse_error(Path.read, f"/a{c}", offset=2, expected="end of input")
    parse_error(Path.read, f"{c}/a", offset=0, expected="'/'")
    parse_error(read_tree, f"/a |{c}/b", offset=4, expected="simple")


def test_only_dtab_whitespace_or_comments_is_the_empty_dtab() -> None:
    for text in ["", " ", "\n\t \r\n", "\u2003", "# just a comment", "# a\n# b\n", "  # x"]:
        assert Dtab.read(text) == Dtab.empty(), repr(text)
        assert len(Dtab.read(text)) == 0


def test_no_whitespace_between_eq_and_gt() -> None:
    parse_error(Dtab.read, "/a = > /b", offset=4, expected="'>'")
    parse_error(Dentry.read, "/a =\n> /b", offset=4, expected="'>'")
    parse_error(Dtab.read, "/a =#c\n> /b", offset=4, expected="'>'")
    assert Dtab.read("/a  =>  /b") == Dtab.read("/a=>/b")


def test_no_whitespace_inside_a_path() -> None:
    parse_error(Path.read, "/foo/ bar", offset=5, expected="label char")
    # "/ foo" is the path "/" followed by garbage.
    parse_error(Path.read, "/ foo", offset=2, expected="end of input")
    parse_error(read_tree, "/ foo", offset=2, expected="end of input")
    parse_error(Dtab.read, "/a=>/ foo", offset=6, expected="end of input")
    parse_error(read_tree, "/foo /bar", offset=5, expected="end of input")
    parse_error(Dtab.read, "/a /b=>/c", offset=3, expected="'='")


# ---------------------------------------------------------------------------------------------
# Comments
# ---------------------------------------------------------------------------------------------


def test_hash_is_a_label_char_inside_paths() -> None:
    assert Path.read("/#/io.l5d.k8s") == P("#", "io.l5d.k8s")
    assert Path.read("/s#/x") == P("s#", "x")
    assert Path.read("/foo#bar") == P("foo#bar")
    assert Dentry.read("/a#c=>/b#d").prefix == Prefix.of("a#c")
    assert Dentry.read("/a#c=>/b#d").dst == L("/b#d")
    assert Dentry.read("/#/io.l5d.k8s=>/x").prefix == Prefix.of("#", "io.l5d.k8s")


def test_hash_after_whitespace_starts_a_comment() -> None:
    assert Path.read("/foo #bar") == P("foo")
    assert Path.read("/foo # c") == P("foo")
    assert Prefix.read("/a/* # c") == Prefix.of("a", "*")
    assert read_tree("/a | /b # | /c") == Alt.of(L("/a"), L("/b"))
    assert Dentry.read("/a=>/b # c") == Dentry.read("/a=>/b")


def test_arrow_then_hash_leaves_no_destination() -> None:
    text = "/foo => #/bar"
    parse_error(Dentry.read, text, offset=len(text), expected="simple", found="end of input")
    parse_error(Dtab.read, text, offset=len(text), expected="simple", found="end of input")


def test_comment_at_start_of_dtab_swallows_the_line() -> None:
    assert Dtab.read("#/a=>/b") == Dtab.empty()
    assert Dtab.read("#/a=>/b\n/c=>/d") == Dtab.read("/c=>/d")


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("/a=>#c\n/b", "/a=>/b"),
        ("/a=>/b|#c\n/c", "/a=>/b|/c"),
        ("/a=>/b&#c\n/c", "/a=>/b&/c"),
        ("/a=>(#c\n/b)", "/a=>/b"),
        ("/a=>(/b)#c", "/a=>/b"),
        ("/a=>~#c", "/a=>~"),
        ("/a=>!#c\n|$", "/a=>!|$"),
        ("/a=>/b;#c\n/c=>/d", "/a=>/b;/c=>/d"),
        ("/a#c=>/b", "/a#c=>/b"),
        ("/a #c\n=>/b", "/a=>/b"),
        ("/a=>2#c\n*/b & /c", "/a=>2*/b&/c"),
        ("/a=>2*#c\n/b & /c", "/a=>2*/b&/c"),
        ("# header\n/a=>/b; # trailing\n", "/a=>/b"),
        ("/a=>/b # no newline at end", "/a=>/b"),
    ],
)
def test_comments_wherever_whitespace_is_skipped(text: str, plain: str) -> None:
    assert Dtab.read(text) == Dtab.read(plain)


def test_comment_runs_to_newline_and_a_bare_cr_does_not_end_it() -> None:
    assert Dtab.read("/a=>/b; # c\r/c=>/d") == Dtab.read("/a=>/b")
    assert Dtab.read("/a=>/b; # c\r\n/c=>/d") == Dtab.read("/a=>/b;/c=>/d")
    assert Dtab.read("/a=>/b; # c\n/c=>/d") == Dtab.read("/a=>/b;/c=>/d")


# ---------------------------------------------------------------------------------------------
# ';' separators and newlines
# ---------------------------------------------------------------------------------------------


def test_one_trailing_semicolon_is_allowed() -> None:
    assert Dtab.read("/a=>/b;") == Dtab.read("/a=>/b")
    assert Dtab.read("/a=>/b ; ") == Dtab.read("/a=>/b")
    assert Dtab.read("/a=>/b;/c=>/d;\n# end\n") == Dtab.read("/a=>/b;/c=>/d")
    assert Dtab.read("/a=>/b\n;/c=>/d") == Dtab.read("/a=>/b;/c=>/d")


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        (";", 0),
        (";;", 0),
        (";/a=>/b", 0),
        (" ; /a=>/b", 1),
        ("/a=>/b;;", 7),
        ("/a=>/b;;/c=>/d", 7),
        ("/a=>/b; ;", 8),
        ("/a=>/b;/c=>/d;;", 14),
    ],
)
def test_semicolon_errors(text: str, offset: int) -> None:
    parse_error(Dtab.read, text, offset=offset, expected="'/'")


def test_newlines_are_not_separators() -> None:
    parse_error(Dtab.read, "/a=>/b\n/c=>/d", offset=7, expected="end of input")
    # The Linkerd docs (routing.md) example does not parse.
    text = "/env => /#/io.l5d.serversets/discovery\n/svc => /env/prod"
    parse_error(Dtab.read, text, offset=text.index("/svc"), expected="end of input")


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "w"),
    [
        (".5*/a & /b", 0.5),
        ("5.*/a & /b", 5.0),
        ("00.50*/a & /b", 0.5),
        ("0*/a & /b", 0.0),
        ("2 * /a & /b", 2.0),
        ("2\t*\n/a & /b", 2.0),
        ("123.25*/a&/b", 123.25),
        ("99999999999999999999*/a & /b", 1e20),
    ],
)
def test_weights_ok(text: str, w: float) -> None:
    t = read_tree(text)
    assert t == Union((W(w, L("/a")), W(1.0, L("/b"))))


def test_default_weight_is_one() -> None:
    t = read_tree("/a & /b")
    assert isinstance(t, Union)
    assert [x.weight for x in t.weighted] == [1.0, 1.0]
    assert shared.DEFAULT_WEIGHT == 1.0


def test_weight_with_several_dots_is_an_error() -> None:
    parse_error(read_tree, "1.2.3*/a & /b", offset=3)
    parse_error(read_tree, "1..2*/a & /b", offset=2)


def test_lone_dot_is_not_a_weight() -> None:
    parse_error(read_tree, ".*/a & /b")
    parse_error(read_tree, ". * /a")


def test_exponent_is_not_a_weight() -> None:
    parse_error(read_tree, "1e3*/a & /b", offset=1, expected="'*'", found="'e'")


@pytest.mark.parametrize("text", ["-1*/a & /b", "+1*/a & /b", "-1 * /a"])
def test_signed_weights_are_errors(text: str) -> None:
    parse_error(read_tree, text, offset=0, expected="simple")


@pytest.mark.parametrize(
    "text",
    ["٢*/a & /b", "1٢*/a & /b", "/b & ٢*/a", "٢*/a", "５*/a & /b", "१.५*/a & /b"],
)
def test_non_ascii_digits_in_weights_are_errors(text: str) -> None:
    parse_error(read_tree, text)


def test_weight_needs_star_and_operand() -> None:
    parse_error(read_tree, "2 /a & /b", offset=2, expected="'*'")
    parse_error(read_tree, "2*", offset=2, expected="simple", found="end of input")


def test_weight_of_lone_operand_is_dropped() -> None:
    assert read_tree("3 * /a") == L("/a")
    assert read_tree("(3*/a)") == L("/a")
    assert read_tree("0.5 * ~") is NEG
    assert read_tree("3*/a | /b") == Alt.of(L("/a"), L("/b"))
    assert read_tree("3*(/a & /b)") == Union((W(1.0, L("/a")), W(1.0, L("/b"))))
    assert Dentry.read("/x=>3*/a").dst == L("/a")
    # ...but kept inside a union
    assert read_tree("3*/a & /b") == Union((W(3.0, L("/a")), W(1.0, L("/b"))))


def test_weight_binds_to_one_simple() -> None:
    assert read_tree("2*/a & /b | /c") == Alt.of(Union((W(2.0, L("/a")), W(1.0, L("/b")))), L("/c"))
    assert read_tree("2*(/a | /b) & /c") == Union(
        (W(2.0, Alt.of(L("/a"), L("/b"))), W(1.0, L("/c")))
    )


# ---------------------------------------------------------------------------------------------
# Precedence and parentheses
# ---------------------------------------------------------------------------------------------


def test_special_simples() -> None:
    assert read_tree("~") is NEG
    assert read_tree("!") is FAIL
    assert read_tree("$") is EMPTY
    assert read_tree("/$") == Leaf(P("$"))
    assert read_tree("~ | ! | $") == Alt.of(NEG, FAIL, EMPTY)
    parse_error(read_tree, "$/a", offset=1, expected="end of input")


def test_alt_is_lowest_and_n_ary() -> None:
    assert read_tree("/a | /b | /c") == Alt.of(L("/a"), L("/b"), L("/c"))
    assert read_tree("/a|/b") == Alt.of(L("/a"), L("/b"))


def test_union_is_n_ary() -> None:
    assert read_tree("/a & /b & /c") == Union.of(L("/a"), L("/b"), L("/c"))


def test_union_binds_tighter_than_alt() -> None:
    assert read_tree("/a | /b & /c") == Alt.of(L("/a"), Union.of(L("/b"), L("/c")))
    assert read_tree("/a & /b | /c") == Alt.of(Union.of(L("/a"), L("/b")), L("/c"))


def test_parentheses_create_real_nested_nodes() -> None:
    assert read_tree("(/a | /b) | /c") == Alt.of(Alt.of(L("/a"), L("/b")), L("/c"))
    assert read_tree("/a | (/b | /c)") == Alt.of(L("/a"), Alt.of(L("/b"), L("/c")))
    assert read_tree("(/a & /b) & /c") == Union.of(Union.of(L("/a"), L("/b")), L("/c"))
    assert read_tree("/a & (/b | /c)") == Union.of(L("/a"), Alt.of(L("/b"), L("/c")))


def test_redundant_parentheses_disappear() -> None:
    assert read_tree("((/a))") == L("/a")
    assert read_tree("(((/a | /b)))") == Alt.of(L("/a"), L("/b"))
    assert read_tree("( ~ )") is NEG


def test_empty_parentheses_are_an_error() -> None:
    parse_error(read_tree, "()", offset=1, expected="simple")
    parse_error(read_tree, "( )", offset=2, expected="simple")
    parse_error(Dtab.read, "/a=>()", offset=5, expected="simple")


def test_unbalanced_parentheses() -> None:
    parse_error(read_tree, "(/a", offset=3, expected="')'", found="end of input")
    parse_error(read_tree, "/a)", offset=2, expected="end of input")


@pytest.mark.parametrize(
    ("text", "offset"),
    [("| /a", 0), ("/a |", 4), ("/a | | /b", 5), ("/a &", 4), ("& /a", 0), ("/a & | /b", 5)],
)
def test_missing_operands(text: str, offset: int) -> None:
    parse_error(read_tree, text, offset=offset, expected="simple")


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def test_entry_points_reject_trailing_garbage() -> None:
    parse_error(Path.read, "/a /b", offset=3, expected="end of input")
    parse_error(Prefix.read, "/a b", offset=3, expected="end of input")
    parse_error(read_tree, "/a /b", offset=3, expected="end of input")
    parse_error(Dentry.read, "/a=>/b;", offset=6, expected="end of input", found="';'")
    parse_error(Dentry.read, "/a=>/b;/c=>/d", offset=6, expected="end of input")
    parse_error(Dtab.read, "/a=>/b x", offset=7, expected="end of input")
    parse_error(Dtab.read, "/a=>/b)", offset=6, expected="end of input")


def test_entry_points_accept_trailing_whitespace_and_comments() -> None:
    assert Path.read("/a \n# c") == P("a")
    assert Prefix.read("/a\t") == Prefix.of("a")
    assert read_tree("/a | /b  # c\n  ") == Alt.of(L("/a"), L("/b"))
    assert Dentry.read("/a=>/b\n# c") == Dentry(Prefix.of("a"), L("/b"))
    assert Dtab.read("/a=>/b\n# c") == Dtab([Dentry(Prefix.of("a"), L("/b"))])


def test_entry_points_skip_leading_whitespace_and_comments() -> None:
    assert Path.read("  # c\n/a") == P("a")
    assert read_tree("\n/a") == L("/a")
    assert Dentry.read(" # c\n /a=>/b") == Dentry.read("/a=>/b")


def test_dentry_and_dtab_structure() -> None:
    d = Dtab.read("/svc => /#/io.l5d.fs ; /svc/users => 0.4*/a & 0.6*/b | ~")
    assert len(d) == 2
    assert d[0] == Dentry(Prefix.of("svc"), L("/#/io.l5d.fs"))
    assert d[1].prefix == Prefix.of("svc", "users")
    assert d[1].dst == Alt.of(Union((W(0.4, L("/a")), W(0.6, L("/b")))), NEG)


def test_error_type_is_a_value_error_like_illegal_argument() -> None:
    with pytest.raises(DtabParseError) as info:
        Dtab.read("nope")
    assert isinstance(info.value, shared.SharedError)
