"""docs/dtabs.md, Delegation: the delegation explanation tree and its JSON.

Also namerd's ``/yeezy`` examples (docs/namerd-api.md, Delegate). Trees are produced with
``shared.delegate`` and rendered with ``shared.wire.delegate_tree_to_json``.
"""

from __future__ import annotations

import pytest

from shared import (
    NEG,
    AddrBound,
    Address,
    Alt,
    AltNode,
    Bound,
    DelegateNode,
    Delegator,
    Dentry,
    Done,
    Dtab,
    Leaf,
    MaxDepthExceeded,
    NeedLookup,
    NegNode,
    Path,
    Union,
    UnionNode,
    Weighted,
    delegate,
    simplify_delegate_tree,
)
from shared.wire import delegate_tree_to_json, encode


def P(text: str) -> Path:
    return Path.read(text)


def D(prefix: str, dst: str) -> dict[str, str]:
    """A dentry as JSON."""
    return {"prefix": prefix, "dst": dst}


def leaf_json(path: str, dentry: dict[str, str] | None, bound_id: str, residual: str = "/") -> dict:
    out: dict = {"type": "leaf", "path": path}
    if dentry is not None:
        out["dentry"] = dentry
    out["bound"] = {"id": bound_id, "path": residual}
    return out


def strip_addr(j: object) -> object:
    """Drop inline addrs (address resolution is I/O, not part of the algorithm)."""
    if isinstance(j, dict):
        return {k: strip_addr(v) for k, v in j.items() if k != "addr"}
    if isinstance(j, list):
        return [strip_addr(x) for x in j]
    return j


def explain(dtab: str | Dtab, path: str, **kw: object) -> dict:
    d = Dtab.read(dtab) if isinstance(dtab, str) else dtab
    tree = delegate(d, P(path), **kw)  # type: ignore[arg-type]
    return strip_addr(delegate_tree_to_json(tree))  # type: ignore[return-value]


def type_first(j: object) -> None:
    if isinstance(j, dict):
        if "type" in j:
            assert next(iter(j)) == "type", j
        for v in j.values():
            type_first(v)
    elif isinstance(j, list):
        for x in j:
            type_first(x)


def raising_namer(req: NeedLookup) -> object:
    raise RuntimeError(f"error naming {req.full.show()}")


# ---------------------------------------------------------------------------------------------
# The DelegateApiHandlerTest example
# ---------------------------------------------------------------------------------------------

HANDLER_DTAB = (
    "/beh=>/#/error;/bah/humbug=>/$/inet/127.1/8080;/foo=>/bah | /beh | /$/fail;"
    "/foo=>/bar;/boo=>/foo;/meh=>/heh;/neg=>~"
)
FOO_ALT = D("/foo", "/bah | /beh | /$/fail")
HANDLER_EXPECTED = {
    "type": "delegate",
    "path": "/boo/humbug",
    "delegate": {
        "type": "alt",
        "path": "/foo/humbug",
        "dentry": D("/boo", "/foo"),
        "alt": [
            {"type": "neg", "path": "/bar/humbug", "dentry": D("/foo", "/bar")},
            {
                "type": "delegate",
                "path": "/bah/humbug",
                "dentry": FOO_ALT,
                "delegate": {
                    "type": "leaf",
                    "path": "/$/inet/127.1/8080",
                    "dentry": D("/bah/humbug", "/$/inet/127.1/8080"),
                    "bound": {
                        "addr": {
                            "type": "bound",
                            "addrs": [{"ip": "127.0.0.1", "port": 8080, "meta": {}}],
                            "meta": {},
                        },
                        "id": "/$/inet/127.1/8080",
                        "path": "/",
                    },
                },
            },
            {
                "type": "delegate",
                "path": "/beh/humbug",
                "dentry": FOO_ALT,
                "delegate": {
                    "type": "exception",
                    "path": "/#/error/humbug",
                    "dentry": D("/beh", "/#/error"),
                    "message": "error naming /#/error/humbug",
                },
            },
            {"type": "fail", "path": "/$/fail/humbug", "dentry": FOO_ALT},
        ],
    },
}


def _handler_addr(b: Bound) -> AddrBound | None:
    if b.id == P("/$/inet/127.1/8080"):
        return AddrBound(frozenset({Address("127.0.0.1", 8080)}))
    return None


def test_delegate_api_handler_example() -> None:
    dtab = Dtab.read(HANDLER_DTAB)
    tree = delegate(dtab, P("/boo/humbug"), lookup=raising_namer, namers=[P("/#/error")])  # type: ignore[arg-type]
    j = delegate_tree_to_json(tree, _handler_addr)
    assert j == HANDLER_EXPECTED
    assert "dentry" not in j  # the root's Dentry.nop is left out
    type_first(j)


def test_delegate_api_handler_example_through_dtab_show() -> None:
    # Linkerd's test sends dtab.show through the URL; the result is the same.
    dtab = Dtab.read(Dtab.read(HANDLER_DTAB).show())
    tree = delegate(dtab, P("/boo/humbug"), lookup=raising_namer, namers=[P("/#/error")])  # type: ignore[arg-type]
    assert delegate_tree_to_json(tree, _handler_addr) == HANDLER_EXPECTED


# ---------------------------------------------------------------------------------------------
# namerd's delegate examples (docs/namerd-api.md, Delegate): /yeezy
# ---------------------------------------------------------------------------------------------


def test_yeezy_example() -> None:
    tree = delegate(Dtab.read("/yeezy=>/yeezus"), P("/yeezy"))
    j = delegate_tree_to_json(tree)
    assert j == {
        "type": "delegate",
        "path": "/yeezy",
        "delegate": {"type": "neg", "path": "/yeezus", "dentry": D("/yeezy", "/yeezus")},
    }
    assert encode(j) == (
        '{"type":"delegate","path":"/yeezy","delegate":{"type":"neg","path":"/yeezus",'
        '"dentry":{"prefix":"/yeezy","dst":"/yeezus"}}}'
    )


def test_yeezy_example_with_extra_dtab() -> None:
    stored, extra = Dtab.read("/yeezy=>/yeezus"), Dtab.read("/yeezy=>/bar")
    j = delegate_tree_to_json(delegate(stored + extra, P("/yeezy")))
    assert j == {
        "type": "alt",
        "path": "/yeezy",
        "alt": [
            {"type": "neg", "path": "/bar", "dentry": D("/yeezy", "/bar")},
            {"type": "neg", "path": "/yeezus", "dentry": D("/yeezy", "/yeezus")},
        ],
    }
    type_first(j)


# ---------------------------------------------------------------------------------------------
# ~, !, $ nodes
# ---------------------------------------------------------------------------------------------


def test_explicit_neg_shows_with_path_tilde() -> None:
    assert explain("/a=>~", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "neg", "path": "~", "dentry": D("/a", "~")},
    }


def test_no_match_neg_shows_its_path() -> None:
    assert explain("", "/nothing") == {"type": "neg", "path": "/nothing"}
    assert explain("/a=>/b", "/a/c") == {
        "type": "delegate",
        "path": "/a/c",
        "delegate": {"type": "neg", "path": "/b/c", "dentry": D("/a", "/b")},
    }


def test_explicit_neg_in_an_alt() -> None:
    assert explain("/a=>~ | /$/inet/1", "/a") == {
        "type": "alt",
        "path": "/a",
        "alt": [
            {"type": "neg", "path": "~", "dentry": D("/a", "~ | /$/inet/1")},
            leaf_json("/$/inet/1", D("/a", "~ | /$/inet/1"), "/$/inet/1"),
        ],
    }


def test_fail_bang_shows_as_bang() -> None:
    assert explain("/a=>!", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "fail", "path": "!", "dentry": D("/a", "!")},
    }


def test_fail_system_path_shows_its_path() -> None:
    assert explain("/a=>/$/fail", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "fail", "path": "/$/fail", "dentry": D("/a", "/$/fail")},
    }
    assert explain("/a=>/$/fail", "/a/x") == {
        "type": "delegate",
        "path": "/a/x",
        "delegate": {"type": "fail", "path": "/$/fail/x", "dentry": D("/a", "/$/fail")},
    }


def test_empty_nodes() -> None:
    assert explain("/a=>$", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "empty", "path": "/a", "dentry": D("/a", "$")},
    }
    assert explain("/a=>/$/nil", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {"type": "empty", "path": "/$/nil", "dentry": D("/a", "/$/nil")},
    }


# ---------------------------------------------------------------------------------------------
# Every Alt / Union branch is explained
# ---------------------------------------------------------------------------------------------


def test_all_alt_branches_are_explained() -> None:
    d = D("/a", "/$/inet/1 | /$/inet/2")
    assert explain("/a=>/$/inet/1 | /$/inet/2", "/a") == {
        "type": "alt",
        "path": "/a",
        "alt": [leaf_json("/$/inet/1", d, "/$/inet/1"), leaf_json("/$/inet/2", d, "/$/inet/2")],
    }


def test_branches_after_fail_are_still_explained() -> None:
    d = D("/a", "! | /$/inet/1")
    assert explain("/a=>! | /$/inet/1", "/a") == {
        "type": "alt",
        "path": "/a",
        "alt": [{"type": "fail", "path": "!", "dentry": d}, leaf_json("/$/inet/1", d, "/$/inet/1")],
    }


def test_all_matching_dentries_are_explained_last_first() -> None:
    assert explain("/s=>/$/inet/1;/s=>/$/inet/2", "/s") == {
        "type": "alt",
        "path": "/s",
        "alt": [
            leaf_json("/$/inet/2", D("/s", "/$/inet/2"), "/$/inet/2"),
            leaf_json("/$/inet/1", D("/s", "/$/inet/1"), "/$/inet/1"),
        ],
    }


def test_union_branches_are_explained_with_weights() -> None:
    d = D("/a", "2.00*/$/inet/1 & /$/inet/2")
    assert explain("/a=>2*/$/inet/1 & /$/inet/2", "/a") == {
        "type": "union",
        "path": "/a",
        "union": [
            {"weight": 2.0, "tree": leaf_json("/$/inet/1", d, "/$/inet/1")},
            {"weight": 1.0, "tree": leaf_json("/$/inet/2", d, "/$/inet/2")},
        ],
    }


def test_inner_alt_with_other_path_is_not_spliced_and_delegates_collapse() -> None:
    d1, d2 = D("/a", "/b | /c"), D("/b", "/d | /e")
    assert explain("/a=>/b | /c;/b=>/d | /e", "/a") == {
        "type": "alt",
        "path": "/a",
        "alt": [
            {
                "type": "alt",
                "path": "/b",
                "dentry": d1,  # the collapsed Delegate's dentry
                "alt": [
                    {"type": "neg", "path": "/d", "dentry": d2},
                    {"type": "neg", "path": "/e", "dentry": d2},
                ],
            },
            {"type": "neg", "path": "/c", "dentry": d1},
        ],
    }


def test_delegate_with_different_path_is_kept() -> None:
    assert explain("/a=>/b;/b=>/$/inet/1", "/a") == {
        "type": "delegate",
        "path": "/a",
        "delegate": {
            "type": "delegate",
            "path": "/b",
            "dentry": D("/a", "/b"),
            "delegate": leaf_json("/$/inet/1", D("/b", "/$/inet/1"), "/$/inet/1"),
        },
    }


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_namer_error_outside_alt_is_an_exception_node() -> None:
    j = explain("/a=>/#/err/x", "/a", lookup=raising_namer, namers=[P("/#/err")])
    assert j == {
        "type": "delegate",
        "path": "/a",
        "delegate": {
            "type": "exception",
            "path": "/#/err/x",
            "dentry": D("/a", "/#/err/x"),
            "message": "error naming /#/err/x",
        },
    }


def test_unknown_system_namer_in_alt_is_an_exception_node() -> None:
    j = explain("/a=>/$/bogus | /$/inet/1", "/a")
    d = D("/a", "/$/bogus | /$/inet/1")
    assert j["type"] == "alt"
    first, second = j["alt"]
    assert first["type"] == "exception"
    assert first["path"] == "/$/bogus"
    assert first["dentry"] == d
    assert "bogus" in first["message"]
    assert second == leaf_json("/$/inet/1", d, "/$/inet/1")


def test_max_depth_inside_an_alt_becomes_an_exception_node() -> None:
    j = explain("/a=>/loop | /$/inet/1;/loop=>/loop", "/a")
    d = D("/a", "/loop | /$/inet/1")
    assert j["type"] == "alt"
    assert j["path"] == "/a"
    first, second = j["alt"]
    assert first["type"] == "exception"
    assert first["path"] == "/a"  # Exception(altPath, altDentry, error)
    assert first["dentry"] == d
    assert "Max recursion level" in first["message"]
    assert second == leaf_json("/$/inet/1", d, "/$/inet/1")


def test_max_depth_inside_a_union_becomes_an_exception_node() -> None:
    j = explain("/a=>/loop & /$/inet/1;/loop=>/loop", "/a")
    d = D("/a", "/loop & /$/inet/1")
    assert j["type"] == "union"
    first, second = j["union"]
    assert first["weight"] == 1.0
    assert first["tree"]["type"] == "exception"
    assert first["tree"]["path"] == "/a"
    assert first["tree"]["dentry"] == d
    assert second == {"weight": 1.0, "tree": leaf_json("/$/inet/1", d, "/$/inet/1")}


@pytest.mark.parametrize(
    ("dtab", "path"),
    [
        ("/s=>/s/prefix", "/s"),
        ("/foo/bar=>/bar/foo;/bar/foo=>/foo/bar", "/foo/bar"),
    ],
)
def test_max_depth_outside_any_alt_raises(dtab: str, path: str) -> None:
    with pytest.raises(MaxDepthExceeded):
        delegate(Dtab.read(dtab), P(path))


def _chain(n: int) -> Dtab:
    entries = [f"/p{i}=>/p{i + 1}" for i in range(n - 1)] + [f"/p{n - 1}=>/$/inet/1"]
    return Dtab.read(";".join(entries))


def test_depth_limit_is_checked_as_in_binding() -> None:
    tree = delegate(_chain(99), P("/p0"))
    j = delegate_tree_to_json(tree)
    while j["type"] == "delegate":
        j = j["delegate"]
    assert j["type"] == "leaf"
    assert j["bound"]["id"] == "/$/inet/1"
    with pytest.raises(MaxDepthExceeded):
        delegate(_chain(100), P("/p0"))


# ---------------------------------------------------------------------------------------------
# Stepper, namers, 0/1-child nodes
# ---------------------------------------------------------------------------------------------


def test_delegator_stepper_protocol() -> None:
    st = Delegator(Dtab.read("/svc=>/#/n"), P("/svc/x"), namers=[P("/#/n")])
    ev = st.next_event()
    assert ev == NeedLookup(P("/#/n"), P("/x"))
    st.fail("namer down")
    done = st.next_event()
    assert isinstance(done, Done)
    assert strip_addr(delegate_tree_to_json(done.value)) == {
        "type": "delegate",
        "path": "/svc/x",
        "delegate": {
            "type": "exception",
            "path": "/#/n/x",
            "dentry": D("/svc", "/#/n"),
            "message": "namer down",
        },
    }


def test_namer_answer_is_explained() -> None:
    def namer(req: NeedLookup) -> object:
        return Leaf(Bound(req.full))

    j = explain("/svc=>/#/n", "/svc/x", lookup=namer, namers=[P("/#/n")])
    assert j == {
        "type": "delegate",
        "path": "/svc/x",
        "delegate": leaf_json("/#/n/x", D("/svc", "/#/n"), "/#/n/x"),
    }


def _namer_answers(answer: object) -> dict:
    return explain("", "/#/n/x", lookup=lambda req: answer, namers=[P("/#/n")])


def test_zero_child_alt_or_union_becomes_neg_with_its_path() -> None:
    assert _namer_answers(Alt(())) == {"type": "neg", "path": "/#/n/x"}
    assert _namer_answers(Union(())) == {"type": "neg", "path": "/#/n/x"}


def test_one_child_alt_becomes_a_delegate() -> None:
    # Alt(/#/n/x, nop, Leaf(/$/inet/1)) -> Delegate(/#/n/x, nop, <bound leaf /$/inet/1>);
    # simplification keeps it because the child's path differs.
    assert _namer_answers(Alt.of(Leaf(P("/$/inet/1")))) == {
        "type": "delegate",
        "path": "/#/n/x",
        "delegate": leaf_json("/$/inet/1", None, "/$/inet/1"),
    }


def test_one_child_union_of_neg_becomes_a_delegate() -> None:
    # Union(/#/n/x, nop, 2*Neg(~)) -> Delegate(/#/n/x, nop, Neg(~)); a Delegate whose child is
    # Neg is never collapsed.
    assert _namer_answers(Union((Weighted(2.0, NEG),))) == {
        "type": "delegate",
        "path": "/#/n/x",
        "delegate": {"type": "neg", "path": "~"},
    }
    assert _namer_answers(Alt.of(NEG)) == {
        "type": "delegate",
        "path": "/#/n/x",
        "delegate": {"type": "neg", "path": "~"},
    }


def test_one_child_alt_of_bound_leaf_collapses() -> None:
    # Delegate(p, nop, Leaf(p, nop, bound)) collapses: same path.
    assert _namer_answers(Alt.of(Leaf(Bound(P("/#/n/x"))))) == leaf_json("/#/n/x", None, "/#/n/x")


def test_simplify_rules_on_constructed_trees() -> None:
    p, d = P("/p"), Dentry.read("/p=>/q")
    neg_child = NegNode(Path(), d)
    # Alt with 1 child simplifies as a Delegate; a Neg child is not collapsed.
    assert simplify_delegate_tree(AltNode(p, d, (neg_child,))) == DelegateNode(p, d, neg_child)
    assert simplify_delegate_tree(AltNode(p, d, ())) == NegNode(p, d)
    assert simplify_delegate_tree(UnionNode(p, d, ())) == NegNode(p, d)
    # Alt splicing: a child Alt with the same path is spliced in, its dentry lost.
    inner = AltNode(p, Dentry.read("/x=>/y"), (NegNode(P("/i1"), d), NegNode(P("/i2"), d)))
    outer = AltNode(p, d, (NegNode(P("/o"), d), inner))
    assert simplify_delegate_tree(outer) == AltNode(
        p, d, (NegNode(P("/o"), d), NegNode(P("/i1"), d), NegNode(P("/i2"), d))
    )
