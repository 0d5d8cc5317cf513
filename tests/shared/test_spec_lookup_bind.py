"""docs/dtabs.md: lookup, binding, the system namer, namers, algebra, composition.

Prefix matching and one lookup step; binding (global namer only on exact Neg, lazy Alt,
unions, weights, depth); ``/$/...`` system paths; configured namers through the sans-I/O
stepper (``Binder`` / ``NeedLookup`` / ``Done``); simplify / eval; ``+`` and strip_prefix;
``simplified`` / ``equiv``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared
from shared import (
    EMPTY,
    FAIL,
    NEG,
    Alt,
    Binder,
    Bound,
    DelegationError,
    Dentry,
    Done,
    Dtab,
    Leaf,
    MaxDepthExceeded,
    NeedLookup,
    Path,
    Prefix,
    Union,
    UnknownNamer,
    Weighted,
    bind,
    eval_tree,
    leaves,
    show_tree,
    simplify,
    system_lookup,
)

read_tree = shared.read_name_tree


def P(text: str) -> Path:
    return Path.read(text)


def L(text: str) -> Leaf[Path]:
    return Leaf(Path.read(text))


def B(text: str, residual: str = "/") -> Leaf[Bound]:
    return Leaf(Bound(Path.read(text), Path.read(residual)))


def W(w: float, t: object) -> Weighted[Path]:
    return Weighted(w, t)  # type: ignore[arg-type]


def bind_text(dtab: str, path: str, **kw: object) -> object:
    return bind(Dtab.read(dtab), P(path), **kw)  # type: ignore[arg-type]


def only_bound(tree: object) -> Bound:
    assert isinstance(tree, Leaf), tree
    assert isinstance(tree.value, Bound), tree
    return tree.value


def weights_by_id(tree: object) -> dict[str, float | None]:
    return {b.id.show(): b.weight for b in leaves(tree)}  # type: ignore[arg-type]


def chain(n: int, target: str = "/$/inet/1") -> Dtab:
    """n dtab rewrites: /p0 -> /p1 -> ... -> /p{n-1} -> target."""
    entries = [f"/p{i}=>/p{i + 1}" for i in range(n - 1)] + [f"/p{n - 1}=>{target}"]
    return Dtab.read(";".join(entries))


# =============================================================================================
# docs/dtabs.md, Lookup: prefix matching and one lookup step
# =============================================================================================


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/s", "/s#/x", False),
        ("/s#", "/s#/x", True),
        ("/foo", "/foobar", False),
        ("/foo", "/foo/bar", True),
        ("/foo", "/foo", True),
        ("/foo/bar", "/foo", False),
        ("/", "/", True),
        ("/", "/anything/at/all", True),
        ("/*", "/", False),
        ("/*", "/x", True),
        ("/*", "/x/y", True),
        ("/a/*/c", "/a/b/c/e", True),
        ("/a/*/c", "/a/b/d", False),
        ("/a/*/c", "/a/b", False),
        ("/a\\x2fb", "/a/b", False),
        ("/\\x61", "/a", True),
        ("/\\x2a", "/x", False),
    ],
)
def test_prefix_matching_is_per_element(prefix: str, path: str, matches: bool) -> None:
    assert Prefix.read(prefix).matches(P(path)) is matches
    expected = NEG if not matches else Dentry.read(f"{prefix}=>/dst").rewrite(P(path))
    assert Dtab.read(f"{prefix}=>/dst").lookup(P(path)) == expected


def test_labels_are_bytes() -> None:
    d = Dtab.read("/a\\x2fb=>/x")
    assert d.lookup(Path(b"a/b")) == L("/x")
    assert d.lookup(P("/a/b")) is NEG


def test_rewrite_drops_matched_labels_including_wildcards() -> None:
    assert Dtab.read("/a/*/c => /d").lookup(P("/a/b/c/e/f")) == L("/d/e/f")
    assert Dtab.read("/a/* => /b").lookup(P("/a/x/y")) == L("/b/y")
    assert Dtab.read("/* => /b").lookup(P("/x")) == L("/b")
    assert Dtab.read("/ => /b").lookup(P("/x/y")) == L("/b/x/y")
    assert Dtab.read("/ => /b").lookup(P("/")) == L("/b")


def test_rewrite_appends_suffix_to_every_leaf_keeping_shape() -> None:
    d = Dtab.read("/a => 2*/b & ~ | ! | $ | /c | (/d | /e)")
    assert d.lookup(P("/a/x/y")) == read_tree("2*/b/x/y & ~ | ! | $ | /c/x/y | (/d/x/y | /e/x/y)")
    assert d.lookup(P("/a/x/y")) == Alt.of(
        Union((W(2.0, L("/b/x/y")), W(1.0, NEG))),
        FAIL,
        EMPTY,
        L("/c/x/y"),
        Alt.of(L("/d/x/y"), L("/e/x/y")),
    )


small_label = st.sampled_from([b"a", b"b", b"c"])
prefix_elem = st.one_of(small_label, st.just("*"))


def _ref_matches(elems: list[object], labels: list[bytes]) -> bool:
    return len(elems) <= len(labels) and all(
        e == "*" or e == lab for e, lab in zip(elems, labels, strict=False)
    )


@given(
    st.lists(st.lists(prefix_elem, max_size=3), min_size=0, max_size=5),
    st.lists(small_label, max_size=4),
)
@settings(max_examples=300, deadline=None, database=None)
def test_lookup_property_all_matches_last_first(
    prefixes: list[list[object]], labels: list[bytes]
) -> None:
    dtab = Dtab(
        [Dentry(Prefix.of(*elems), Leaf(Path(f"d{i}"))) for i, elems in enumerate(prefixes)]
    )
    path = Path(*labels)
    expected = [
        Leaf(Path(f"d{i}", *labels[len(elems) :]))
        for i, elems in reversed(list(enumerate(prefixes)))
        if _ref_matches(elems, labels)
    ]
    for dentry, elems in zip(dtab, prefixes, strict=True):
        assert dentry.prefix.matches(path) is _ref_matches(elems, labels)
    got = dtab.lookup(path)
    if not expected:
        assert got is NEG
    elif len(expected) == 1:
        assert got == expected[0]
    else:
        assert got == Alt(tuple(expected))


def test_lookup_no_match_is_neg() -> None:
    assert Dtab.read("/a=>/b").lookup(P("/c")) is NEG
    assert Dtab.empty().lookup(P("/c")) is NEG


def test_lookup_uses_all_matches_last_first() -> None:
    d = Dtab.read("/foo=>/bar;/foo=>/baz")
    assert d.lookup(P("/foo/x")) == Alt.of(L("/baz/x"), L("/bar/x"))
    d3 = Dtab.read("/=>/r;/foo=>/f;/x=>/nope;/foo/x=>/fx")
    assert d3.lookup(P("/foo/x/y")) == Alt.of(L("/fx/y"), L("/f/x/y"), L("/r/foo/x/y"))


def test_lookup_is_not_simplified() -> None:
    assert Dtab.read("/a=>/b | ~").lookup(P("/a")) == Alt.of(L("/b"), NEG)
    assert Dtab.read("/a=>~").lookup(P("/a/b")) is NEG  # single ~ is exactly Neg
    assert Dtab.read("/a=>~;/a=>~").lookup(P("/a")) == Alt.of(NEG, NEG)  # not Neg
    assert Dtab.read("/a=>~;/a=>~").lookup(P("/a")) is not NEG
    assert Dtab.read("/a=>!").lookup(P("/a/b")) is FAIL


# =============================================================================================
# docs/dtabs.md, Binding
# =============================================================================================


def test_global_namer_is_asked_only_on_exact_neg() -> None:
    assert bind_text("", "/$/inet/1") == B("/$/inet/1")
    # A single "/$ => ~" gives exactly Neg, so the global namer still answers.
    assert bind_text("/$ => ~", "/$/inet/1") == B("/$/inet/1")
    # Two give Alt(~,~): used as is, the global namer is not consulted.
    assert bind_text("/$ => ~;/$ => ~", "/$/inet/1") is NEG
    assert bind_text("/$ => ~ | ~", "/$/inet/1") is NEG


def test_dtab_shadows_system_paths() -> None:
    assert bind_text("/$/fail => /$/inet/1", "/$/fail") == B("/$/inet/1")
    assert bind_text("/$/fail => /$/inet/1", "/$/fail/x") == B("/$/inet/1", "/x")
    assert bind_text("", "/$/fail") is FAIL
    assert bind_text("/a => !", "/a") is FAIL  # '!' cannot be shadowed


def test_neg_fail_empty_bind_to_themselves() -> None:
    assert bind_text("/a=>~", "/a") is NEG
    assert bind_text("/a=>!", "/a") is FAIL
    assert bind_text("/a=>$", "/a") is EMPTY
    assert bind_text("", "/nothing/here") is NEG


def test_rewrites_are_followed() -> None:
    t = bind_text("/svc=>/srv;/srv=>/$/inet/127.0.0.1/8080", "/svc/users/x")
    b = only_bound(t)
    assert b.id == P("/$/inet/127.0.0.1/8080")
    assert b.residual == P("/users/x")


def test_later_entries_win_and_earlier_are_fallback() -> None:
    assert bind_text("/s=>/$/inet/1;/s=>/$/inet/2", "/s") == B("/$/inet/2")
    assert bind_text("/s=>/$/inet/1;/s=>~", "/s") == B("/$/inet/1")
    assert bind_text("/s=>/$/inet/1;/s=>/nowhere", "/s") == B("/$/inet/1")


# ---- Alt --------------------------------------------------------------------------------------


def test_alt_first_non_neg_wins() -> None:
    assert bind_text("/a => ~ | /b | /$/inet/1", "/a") == B("/$/inet/1")
    assert bind_text("/a => /$/inet/2 | /$/inet/1", "/a") == B("/$/inet/2")
    assert bind_text("/a => ~ | ~", "/a") is NEG


def test_alt_fail_stops_the_search() -> None:
    assert bind_text("/a => ! | /$/inet/1", "/a") is FAIL
    assert bind_text("/a => /b | /$/inet/1; /b => !", "/a") is FAIL
    assert bind_text("/a => /$/fail | /$/inet/1", "/a") is FAIL
    assert bind_text("/a => ~ | /$/fail/x | /$/inet/1", "/a") is FAIL


def test_alt_empty_stops_the_search() -> None:
    assert bind_text("/a => $ | /$/inet/1", "/a") is EMPTY
    assert bind_text("/a => /b | /$/inet/1; /b => /$/nil", "/a") is EMPTY


def test_alt_union_result_stops_the_search() -> None:
    t = bind_text("/a => (/$/inet/1 & /$/inet/2) | /$/inet/3", "/a")
    assert show_tree(t) == "/$/inet/1 & /$/inet/2"  # type: ignore[arg-type]


def test_alt_error_in_child_propagates() -> None:
    with pytest.raises(UnknownNamer):
        bind_text("/a => /$/bogus | /$/inet/1", "/a")
    with pytest.raises(MaxDepthExceeded):
        bind_text("/a => /loop | /$/inet/1; /loop => /loop", "/a")


def test_alt_children_are_bound_lazily() -> None:
    b = Binder(Dtab.read("/svc => /#/n/a | /#/n/b"), P("/svc"), namers=[P("/#/n")])
    ev = b.next_event()
    assert ev == NeedLookup(P("/#/n"), P("/a"))
    b.send(B("/#/n/a"))
    done = b.next_event()
    assert isinstance(done, Done)
    assert done.value == B("/#/n/a")


def test_alt_falls_back_on_neg_only() -> None:
    b = Binder(Dtab.read("/svc => /#/n/a | /#/n/b"), P("/svc"), namers=[P("/#/n")])
    assert b.next_event() == NeedLookup(P("/#/n"), P("/a"))
    b.send(NEG)
    assert b.next_event() == NeedLookup(P("/#/n"), P("/b"))
    b.send(B("/#/n/b"))
    assert b.next_event() == Done(B("/#/n/b"))

    b2 = Binder(Dtab.read("/svc => /#/n/a | /#/n/b"), P("/svc"), namers=[P("/#/n")])
    b2.send(FAIL)
    assert b2.next_event() == Done(FAIL)

    b3 = Binder(Dtab.read("/svc => /#/n/a | /#/n/b"), P("/svc"), namers=[P("/#/n")])
    b3.send(EMPTY)
    assert b3.next_event() == Done(EMPTY)


def test_alt_namer_failure_propagates() -> None:
    b = Binder(Dtab.read("/svc => /#/n/a | /$/inet/1"), P("/svc"), namers=[P("/#/n")])
    b.fail("boom")
    with pytest.raises(DelegationError, match="boom"):
        b.next_event()


def test_code_built_alt_and_union_from_a_namer() -> None:
    def run(answer: object) -> object:
        b = Binder(Dtab.empty(), P("/#/n/x"), namers=[P("/#/n")])
        b.send(answer)  # type: ignore[arg-type]
        ev = b.next_event()
        assert isinstance(ev, Done)
        return ev.value

    assert run(Alt(())) is NEG
    assert run(Union(())) is NEG
    assert run(Alt.of(B("/#/n/x"))) == B("/#/n/x")
    one = run(Union((Weighted(3.0, B("/#/n/x")),)))
    assert one == B("/#/n/x")
    assert only_bound(one).weight == 3.0  # a 1-child union binds its child with its weight


# ---- Union ------------------------------------------------------------------------------------


def test_union_binds_all_branches() -> None:
    t = bind_text("/a => /$/inet/1 & 2*/$/inet/2", "/a")
    assert t == Union((Weighted(1.0, B("/$/inet/1")), Weighted(2.0, B("/$/inet/2"))))


def test_union_drops_neg_and_fail_and_unwraps_lone_survivor() -> None:
    assert bind_text("/a => /$/inet/1 & ~", "/a") == B("/$/inet/1")
    assert bind_text("/a => /$/inet/1 & !", "/a") == B("/$/inet/1")
    assert bind_text("/a => /$/inet/1 & /$/fail & /nowhere", "/a") == B("/$/inet/1")


def test_union_of_only_neg_and_fail_is_neg() -> None:
    assert bind_text("/a => ! & ~", "/a") is NEG
    assert bind_text("/a => ! & !", "/a") is NEG
    assert bind_text("/a => /$/fail & /nowhere", "/a") is NEG


def test_union_keeps_empty_branches() -> None:
    t = bind_text("/a => $ & /$/inet/1", "/a")
    assert t == Union((Weighted(1.0, EMPTY), Weighted(1.0, B("/$/inet/1"))))
    t2 = bind_text("/a => $ & /$/nil", "/a")
    assert t2 == Union((Weighted(1.0, EMPTY), Weighted(1.0, EMPTY)))


def test_union_drops_failed_branches_if_one_succeeds() -> None:
    assert bind_text("/a => /$/bogus & /$/inet/1", "/a") == B("/$/inet/1")
    assert bind_text("/a => /loop & 2*/$/inet/1; /loop=>/loop", "/a") == B("/$/inet/1")
    b = Binder(Dtab.read("/svc => /#/n/a & /#/n/b"), P("/svc"), namers=[P("/#/n")])
    assert b.next_event() == NeedLookup(P("/#/n"), P("/a"))
    b.fail("first is down")
    assert b.next_event() == NeedLookup(P("/#/n"), P("/b"))
    b.send(B("/#/n/b"))
    assert b.next_event() == Done(B("/#/n/b"))


def test_union_error_dropped_even_if_the_survivor_is_neg() -> None:
    assert bind_text("/a => /$/bogus & ~", "/a") is NEG
    assert bind_text("/a => /$/bogus & /$/nil", "/a") is EMPTY


def test_union_all_failed_propagates_the_first_error() -> None:
    with pytest.raises(UnknownNamer, match="bogus1"):
        bind_text("/a => /$/bogus1 & /$/bogus2", "/a")
    b = Binder(Dtab.read("/svc => /#/n/a & /#/n/b"), P("/svc"), namers=[P("/#/n")])
    b.fail("first error")
    b.fail("second error")
    with pytest.raises(DelegationError, match="first error"):
        b.next_event()


# ---- weights ----------------------------------------------------------------------------------


def test_leaf_outside_any_union_has_no_weight() -> None:
    assert only_bound(bind_text("/a=>/$/inet/1", "/a")).weight is None
    assert only_bound(bind_text("/a=>/$/inet/1 | /b", "/a")).weight is None


def test_weight_of_lone_survivor_is_kept() -> None:
    assert only_bound(bind_text("/a => 2*/$/inet/1 & ~", "/a")).weight == 2.0
    assert only_bound(bind_text("/a => /$/inet/1 & ~", "/a")).weight == 1.0


def test_weights_pass_through_indirections_and_alts() -> None:
    t = bind_text("/a => 2*/b & /c; /b => /d | /e; /d => ~; /e => /$/inet/1; /c => /$/inet/2", "/a")
    assert weights_by_id(t) == {"/$/inet/1": 2.0, "/$/inet/2": 1.0}


def test_weights_full_example() -> None:
    dtab = Dtab.read(
        "/foo => 3*/baz & 2*/booz & /#/testnamer;/baz => 3*/$/inet/8080 & 2*/$/inet/9090"
    )

    def testnamer(req: NeedLookup) -> object:
        assert req.namer == P("/#/testnamer")
        return L("/$/inet/7070")

    t = bind(dtab, P("/foo"), lookup=testnamer, namers=[P("/#/testnamer")])  # type: ignore[arg-type]
    assert weights_by_id(t) == {"/$/inet/8080": 3.0, "/$/inet/9090": 2.0, "/$/inet/7070": 1.0}
    assert show_tree(t) == "3.00*(3.00*/$/inet/8080 & 2.00*/$/inet/9090) & /$/inet/7070"  # type: ignore[arg-type]


# ---- depth ------------------------------------------------------------------------------------


def test_default_max_depth_is_100() -> None:
    assert shared.DEFAULT_MAX_DEPTH == 100


def test_max_depth_2_vs_3() -> None:
    d = Dtab.read("/a=>/b;/b=>/$/inet/1")
    with pytest.raises(MaxDepthExceeded):
        bind(d, P("/a"), max_depth=2)
    assert bind(d, P("/a"), max_depth=3) == B("/$/inet/1")


def test_99_rewrites_succeed_100_fail_with_default() -> None:
    assert bind(chain(99), P("/p0")) == B("/$/inet/1")
    with pytest.raises(MaxDepthExceeded, match="Max recursion level: 100"):
        bind(chain(100), P("/p0"))


def test_depth_check_comes_before_the_node() -> None:
    d = Dtab.read("/a=>/b;/b=>~")
    assert bind(d, P("/a"), max_depth=2) is NEG
    with pytest.raises(MaxDepthExceeded):
        bind(d, P("/a"), max_depth=1)


def test_alt_and_union_children_do_not_add_depth() -> None:
    d = Dtab.read("/a => /b | /c; /b => ~; /c => /$/inet/1")
    assert bind(d, P("/a"), max_depth=3) == B("/$/inet/1")
    with pytest.raises(MaxDepthExceeded):
        bind(d, P("/a"), max_depth=2)
    u = Dtab.read("/a => /b & /c; /b => /$/inet/2; /c => /$/inet/1")
    assert show_tree(bind(u, P("/a"), max_depth=3)) == "/$/inet/2 & /$/inet/1"
    with pytest.raises(MaxDepthExceeded):
        bind(u, P("/a"), max_depth=2)


def test_namer_lookups_count_as_depth() -> None:
    def namer(req: NeedLookup) -> object:
        return L("/$/inet/1")

    with pytest.raises(MaxDepthExceeded):
        bind(Dtab.empty(), P("/#/n/x"), lookup=namer, namers=[P("/#/n")], max_depth=1)  # type: ignore[arg-type]
    t = bind(Dtab.empty(), P("/#/n/x"), lookup=namer, namers=[P("/#/n")], max_depth=2)  # type: ignore[arg-type]
    assert t == B("/$/inet/1")


@pytest.mark.parametrize(
    ("dtab", "path"),
    [
        ("/foo/bar=>/bar/foo;/bar/foo=>/foo/bar", "/foo/bar"),
        ("/s=>/s/prefix", "/s"),
        ("/a=>/a", "/a"),
    ],
)
def test_loops_are_found_by_the_depth_limit(dtab: str, path: str) -> None:
    with pytest.raises(MaxDepthExceeded, match="Max recursion level"):
        bind_text(dtab, path)
    assert issubclass(MaxDepthExceeded, DelegationError)


# =============================================================================================
# docs/dtabs.md, System paths: /$/...
# =============================================================================================


@pytest.mark.parametrize(
    ("path", "bound_id", "residual"),
    [
        ("/$/inet/127.0.0.1/8080", "/$/inet/127.0.0.1/8080", "/"),
        ("/$/inet/127.0.0.1/8080/foo/bar", "/$/inet/127.0.0.1/8080", "/foo/bar"),
        ("/$/inet/localhost/1", "/$/inet/localhost/1", "/"),
        ("/$/fixedinet/example.com/443/x", "/$/fixedinet/example.com/443", "/x"),
        ("/$/inet/8080", "/$/inet/8080", "/"),
        ("/$/fixedinet/8080", "/$/fixedinet/8080", "/"),
        ("/$/inet/1234/foobar", "/$/inet/1234", "/foobar"),
        ("/$/inet/8080/9090", "/$/inet/8080/9090", "/"),
        ("/$/inet/8080/9090/x", "/$/inet/8080/9090", "/x"),
        ("/$/inet/127.1/8080", "/$/inet/127.1/8080", "/"),
        ("/$/inet/h/\\x2b80", "/$/inet/h/\\x2b80", "/"),  # "+80" is a Java int
    ],
)
def test_inet_forms(path: str, bound_id: str, residual: str) -> None:
    for t in (system_lookup(P(path)), bind(Dtab.empty(), P(path))):
        b = only_bound(t)
        assert b.id == P(bound_id)
        assert b.residual == P(residual)


def test_inet_port_must_fit_a_java_int() -> None:
    with pytest.raises(UnknownNamer, match="inet"):
        system_lookup(P("/$/inet/host/2147483648"))
    with pytest.raises(UnknownNamer, match="inet"):
        system_lookup(P("/$/inet/99999999999"))


def test_inet_port_parses_as_java_int_with_unicode_digits() -> None:
    # The port is whatever "parses as a Java int". Finagle decodes the label as UTF-8 and
    # calls String.toInt = Integer.parseInt, which uses Character.digit and so accepts any
    # Unicode decimal digit: "\u0668\u0660" (Arabic-Indic 8, 0) is the int 80.
    port = "\u0668\u0660".encode()
    path = Path(b"$", b"inet", b"host", port, b"rest")
    b = only_bound(system_lookup(path))
    assert b.id == Path(b"$", b"inet", b"host", port)
    assert b.residual == P("/rest")


def test_bound_name_shows_as_its_id() -> None:
    t = bind(Dtab.empty(), P("/$/inet/1234/foobar"))
    assert show_tree(t) == "/$/inet/1234"  # type: ignore[arg-type]
    assert only_bound(t).residual.show() == "/foobar"


def test_bound_names_are_equal_iff_ids_are() -> None:
    assert Bound(P("/$/inet/1"), P("/x")) == Bound(P("/$/inet/1"), P("/y"))
    assert Bound(P("/$/inet/1")) != Bound(P("/$/inet/2"))


@pytest.mark.parametrize("path", ["/$/fail", "/$/fail/x", "/$/fail/x/y/z"])
def test_fail_paths(path: str) -> None:
    assert system_lookup(P(path)) is FAIL
    assert bind(Dtab.empty(), P(path)) is FAIL


@pytest.mark.parametrize("path", ["/$/nil", "/$/nil/x", "/$/nil/x/y"])
def test_nil_paths(path: str) -> None:
    assert system_lookup(P(path)) is EMPTY
    assert bind(Dtab.empty(), P(path)) is EMPTY


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/$/com.example.NoSuchNamer/x", "com.example.NoSuchNamer"),
        ("/$/bogus", "bogus"),
        ("/$/inet", "inet"),
        ("/$/inet/host", "inet"),
        ("/$/inet/host/notaport", "inet"),
        ("/$/inet/host/99999999999", "inet"),
        ("/$/fixedinet/host", "fixedinet"),
    ],
)
def test_unknown_kinds_and_malformed_inet(path: str, kind: str) -> None:
    with pytest.raises(UnknownNamer) as info:
        system_lookup(P(path))
    assert kind in str(info.value)
    with pytest.raises(UnknownNamer):
        bind(Dtab.empty(), P(path))


@pytest.mark.parametrize("path", ["/$", "/", "/foo", "/x/$/inet/1", "/#/io.l5d.fs/x", "/inet/1"])
def test_everything_else_is_neg(path: str) -> None:
    assert system_lookup(P(path)) is NEG
    assert bind(Dtab.empty(), P(path)) is NEG


# =============================================================================================
# docs/dtabs.md, Binding: configured namers (stepper protocol), order, fallback
# =============================================================================================


def test_stepper_protocol_basics() -> None:
    b = Binder(Dtab.read("/svc => /#/io.l5d.fs"), P("/svc/users"), namers=[P("/#/io.l5d.fs")])
    ev = b.next_event()
    assert isinstance(ev, NeedLookup)
    assert ev.namer == P("/#/io.l5d.fs")
    assert ev.path == P("/users")
    assert b.next_event() == ev  # asking again without answering returns the same request
    b.send(B("/#/io.l5d.fs/users"))
    done = b.next_event()
    assert isinstance(done, Done)
    assert done.value == B("/#/io.l5d.fs/users")


def test_namer_answer_may_be_a_path_tree_that_is_bound_further() -> None:
    b = Binder(Dtab.read("/x => /$/inet/9"), P("/#/n/a"), namers=[P("/#/n")])
    b.send(read_tree("/x | /y"))
    assert b.next_event() == Done(B("/$/inet/9"))


def test_namer_fail_raises() -> None:
    b = Binder(Dtab.empty(), P("/#/n/a"), namers=[P("/#/n")])
    b.fail("why")
    with pytest.raises(DelegationError, match="why"):
        b.next_event()


def test_bind_lookup_function_errors_propagate() -> None:
    def broken(req: NeedLookup) -> object:
        raise RuntimeError("namer exploded")

    with pytest.raises(DelegationError, match="namer exploded"):
        bind(Dtab.empty(), P("/#/n/a"), lookup=broken, namers=[P("/#/n")])  # type: ignore[arg-type]


def test_namers_are_asked_only_when_dtab_gives_exactly_neg() -> None:
    # dtab entry shadows the namer
    b = Binder(Dtab.read("/#/n => /$/inet/1"), P("/#/n/x"), namers=[P("/#/n")])
    assert b.next_event() == Done(B("/$/inet/1", "/x"))
    # Alt(~,~) is not Neg: namer not asked
    b2 = Binder(Dtab.read("/#/n => ~; /#/n => ~"), P("/#/n/x"), namers=[P("/#/n")])
    assert b2.next_event() == Done(NEG)
    # a single ~ is Neg: namer asked
    b3 = Binder(Dtab.read("/#/n => ~"), P("/#/n/x"), namers=[P("/#/n")])
    assert b3.next_event() == NeedLookup(P("/#/n"), P("/x"))


def test_non_matching_namers_are_not_asked() -> None:
    b = Binder(Dtab.empty(), P("/#/other/x"), namers=[P("/#/n")])
    assert b.next_event() == Done(NEG)


def test_namers_in_configuration_order_with_fallback_on_neg() -> None:
    namers = [P("/#/x"), P("/#/q"), P("/#/x/y")]
    b = Binder(Dtab.empty(), P("/#/x/y/z"), namers=namers)
    assert b.next_event() == NeedLookup(P("/#/x"), P("/y/z"))
    b.send(NEG)
    assert b.next_event() == NeedLookup(P("/#/x/y"), P("/z"))
    b.send(B("/#/x/y/z"))
    assert b.next_event() == Done(B("/#/x/y/z"))

    b2 = Binder(Dtab.empty(), P("/#/x/y/z"), namers=namers)
    b2.send(B("/#/x/y"))  # first namer answers: the second is never asked
    assert b2.next_event() == Done(B("/#/x/y"))


def test_non_neg_negative_answer_does_not_fall_back_to_next_namer() -> None:
    # Only an exact Neg moves on; Alt() is returned as is (and binds to Neg).
    b = Binder(Dtab.empty(), P("/#/x/y/z"), namers=[P("/#/x"), P("/#/x/y")])
    b.send(Alt(()))
    assert b.next_event() == Done(NEG)


def test_global_namer_comes_last() -> None:
    b = Binder(Dtab.empty(), P("/$/inet/1"), namers=[P("/$/inet")])
    assert b.next_event() == NeedLookup(P("/$/inet"), P("/1"))
    b.send(NEG)
    assert b.next_event() == Done(B("/$/inet/1"))

    b2 = Binder(Dtab.empty(), P("/#/x/a"), namers=[P("/#/x")])
    b2.send(NEG)
    assert b2.next_event() == Done(NEG)


def test_base_plus_local_overrides_win() -> None:
    base = Dtab.read("/svc=>/$/inet/1")
    local = Dtab.read("/svc=>/$/inet/2")
    assert bind(base + local, P("/svc")) == B("/$/inet/2")
    assert bind(base + Dtab.read("/svc=>~"), P("/svc")) == B("/$/inet/1")


# =============================================================================================
# docs/dtabs.md, Tree algebra: simplify and eval
# =============================================================================================


@pytest.mark.parametrize(
    ("tree", "simplified"),
    [
        (Alt(()), NEG),
        (Alt.of(L("/a")), L("/a")),
        (Alt.of(Alt.of(L("/a"), NEG)), L("/a")),
        (Alt.of(NEG, L("/a"), NEG, L("/b")), Alt.of(L("/a"), L("/b"))),
        (Alt.of(NEG, NEG), NEG),
        (Alt.of(NEG, FAIL, L("/a")), FAIL),
        (Alt.of(L("/a"), FAIL, L("/b")), Alt.of(L("/a"), FAIL)),
        (Alt.of(L("/a"), Alt.of(NEG, FAIL), L("/b")), Alt.of(L("/a"), FAIL)),
        (Alt.of(EMPTY, L("/a")), Alt.of(EMPTY, L("/a"))),
        (Alt.of(Alt.of(L("/a"), L("/b")), L("/c")), Alt.of(Alt.of(L("/a"), L("/b")), L("/c"))),
        (Alt.of(L("/a"), Alt.of(L("/b"), NEG)), Alt.of(L("/a"), L("/b"))),
        (Union(()), NEG),
        (Union((W(3.0, L("/a")),)), L("/a")),
        (Union((W(2.0, L("/a")), W(3.0, NEG))), L("/a")),
        (
            Union((W(2.0, L("/a")), W(3.0, FAIL), W(4.0, L("/b")))),
            Union((W(2.0, L("/a")), W(4.0, L("/b")))),
        ),
        (Union.of(FAIL, FAIL), NEG),
        (Union.of(NEG, FAIL), NEG),
        (Union.of(EMPTY, NEG), EMPTY),
        (Union.of(EMPTY, L("/a")), Union.of(EMPTY, L("/a"))),
        (
            Union((W(2.0, Union.of(L("/a"), NEG)), W(1.0, L("/b")))),
            Union((W(2.0, L("/a")), W(1.0, L("/b")))),
        ),
        (L("/a"), L("/a")),
        (NEG, NEG),
        (FAIL, FAIL),
        (EMPTY, EMPTY),
    ],
)
def test_simplify_rules(tree: object, simplified: object) -> None:
    assert simplify(tree) == simplified  # type: ignore[arg-type]


def test_simplified_does_not_flatten_parsed_nested_alts() -> None:
    t = read_tree("(/a | /b) | /c")
    assert simplify(t) == t


A, Bv, C = P("/a"), P("/b"), P("/c")


@pytest.mark.parametrize(
    ("tree", "value"),
    [
        (NEG, None),
        (FAIL, None),
        (EMPTY, frozenset()),
        (Leaf(A), frozenset({A})),
        (Alt(()), None),
        (Union(()), None),
        (Alt.of(NEG, Leaf(A)), frozenset({A})),
        (Alt.of(Leaf(A), Leaf(Bv)), frozenset({A})),
        (Alt.of(FAIL, Leaf(A)), None),
        (Alt.of(NEG, FAIL, Leaf(A)), None),
        (Alt.of(EMPTY, Leaf(A)), frozenset()),
        (Alt.of(NEG, NEG), None),
        (Union.of(Leaf(A), Leaf(Bv)), frozenset({A, Bv})),
        (Union.of(FAIL, Leaf(A)), frozenset({A})),
        (Union.of(NEG, Leaf(A), FAIL, Leaf(C)), frozenset({A, C})),
        (Union.of(FAIL, FAIL), None),
        (Union.of(FAIL, NEG), None),
        (Union.of(EMPTY, NEG), frozenset()),
        (Union((W(0.0, Leaf(A)), W(9.0, Leaf(Bv)))), frozenset({A, Bv})),
        (Alt.of(Union.of(FAIL, NEG), Leaf(A)), frozenset({A})),
    ],
)
def test_eval_rules(tree: object, value: object) -> None:
    assert eval_tree(tree) == value  # type: ignore[arg-type]


leaf_values = st.sampled_from([P("/a"), P("/b"), P("/c"), P("/d")])
any_simple = st.one_of(leaf_values.map(Leaf), st.just(NEG), st.just(FAIL), st.just(EMPTY))
any_weight = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.25])


def _grow_any(children: st.SearchStrategy) -> st.SearchStrategy:
    alts = st.lists(children, min_size=0, max_size=4).map(lambda ts: Alt(tuple(ts)))
    unions = st.lists(st.tuples(any_weight, children), min_size=0, max_size=4).map(
        lambda ws: Union(tuple(Weighted(w, t) for w, t in ws))
    )
    return alts | unions


any_tree = st.recursive(any_simple, _grow_any, max_leaves=14)


@given(any_tree)
@settings(max_examples=400, deadline=None, database=None)
def test_eval_is_preserved_by_simplify(tree: object) -> None:
    assert eval_tree(tree) == eval_tree(simplify(tree))  # type: ignore[arg-type]


@given(any_tree)
@settings(max_examples=400, deadline=None, database=None)
def test_simplify_is_a_fixpoint(tree: object) -> None:
    s = simplify(tree)  # type: ignore[arg-type]
    assert simplify(s) == s


@given(any_tree)
@settings(max_examples=200, deadline=None, database=None)
def test_simplify_leaves_no_neg_inside_and_no_small_nodes(tree: object) -> None:
    s = simplify(tree)  # type: ignore[arg-type]

    def check(t: object, top: bool) -> None:
        if isinstance(t, Alt):
            assert len(t.trees) >= 2
            assert all(c is not NEG for c in t.trees)
            assert all(c is not FAIL for c in t.trees[:-1])  # nothing after a '!'
            for c in t.trees:
                check(c, False)
        elif isinstance(t, Union):
            assert len(t.weighted) >= 2
            assert all(w.tree is not NEG and w.tree is not FAIL for w in t.weighted)
            for w in t.weighted:
                check(w.tree, False)
        elif t is NEG:
            assert top

    check(s, True)


# =============================================================================================
# docs/dtabs.md, Tree algebra (Dtab.simplified / equiv) and Composition
# =============================================================================================


def test_dtab_simplified_removes_neg_destinations() -> None:
    d = Dtab.read("/a=>~ | ~;/b=>/c | ~;/d=>! & ~;/e=>!;/f=>$ & ~;/g=>~")
    assert d.simplified() == Dtab.read("/b=>/c;/e=>!;/f=>$")


def test_dtab_equality_is_structural_and_equiv_uses_simplified() -> None:
    d1 = Dtab.read("/a=>/b | ~;/c=>(/d)")
    d2 = Dtab.read("/a=>/b;/c=>/d")
    assert d1 != d2
    assert d1.equiv(d2)
    assert Dtab.read("/a=>/b").equiv(Dtab.read("/a=>/b & ~"))
    assert not Dtab.read("/a=>/b").equiv(Dtab.read("/a=>/b;/a=>/b"))  # different length
    assert not Dtab.read("/a=>/b").equiv(Dtab.read("/x=>/b"))  # different prefix
    assert not Dtab.read("/a=>/b | /c").equiv(Dtab.read("/a=>/c | /b"))
    assert not Dtab.read("/a=>~").equiv(Dtab.empty())  # same length is required
    assert Dtab.read("/a=>/b") == Dtab.read("/a => /b ;")


def test_concatenation_appends_so_right_wins() -> None:
    d1 = Dtab.read("/a=>/b;/c=>/d")
    d2 = Dtab.read("/a=>/x")
    both = d1 + d2
    assert both == Dtab.read("/a=>/b;/c=>/d;/a=>/x")
    assert both.lookup(P("/a")) == Alt.of(L("/x"), L("/b"))
    assert (d1 + Dtab.empty()) == d1
    assert (d1 + Dtab.empty()) is d1  # "d ++ empty returns d"
    assert (Dtab.empty() + d1) == d1
    assert d1 + Dentry.read("/e=>/f") == Dtab.read("/a=>/b;/c=>/d;/e=>/f")


def test_linkerd_override_order_example() -> None:
    local, ctx, user = Dtab.read("/a=>/b"), Dtab.read("/a=>/c"), Dtab.read("/a=>/d")
    assert (local + (ctx + user)).show() == "/a=>/b;/a=>/c;/a=>/d"


def test_commas_do_not_separate_dtabs_in_dtab_read() -> None:
    # Finagle's Dtab-Local splits on ',' before reading; Linkerd's l5d-dtab does not, and
    # Dtab.read itself never does.
    with pytest.raises(shared.DtabParseError) as info:
        Dtab.read("/a=>/b,/c=>/d")
    assert info.value.offset == 6
    parts = [Dtab.read(x) for x in "/a=>/b,/c=>/d".split(",")]
    assert parts[0] + parts[1] == Dtab.read("/a=>/b;/c=>/d")


def test_strip_prefix() -> None:
    d = Dtab.read("/a=>/b;/c=>/d;/e=>/f")
    assert d.strip_prefix(Dtab.read("/a=>/b")) == Dtab.read("/c=>/d;/e=>/f")
    assert d.strip_prefix(Dtab.read("/a=>/b;/c=>/d")) == Dtab.read("/e=>/f")
    assert d.strip_prefix(d) == Dtab.empty()
    assert d.strip_prefix(Dtab.read("/c=>/d")) == d  # not at the front
    assert d.strip_prefix(Dtab.read("/a=>/b;/e=>/f")) == d  # not the first dentries
    assert d.strip_prefix(Dtab.read("/a=>/x")) == d
    assert d.strip_prefix(Dtab.empty()) == d
    assert Dtab.read("/a=>/b").strip_prefix(Dtab.read("/a=>/b;/c=>/d")) == Dtab.read("/a=>/b")
