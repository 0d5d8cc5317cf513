"""Wire codecs: byte-exact against namerd's documented output, and decode(encode(x)) == x."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import (
    ADDR_NEG,
    ADDR_PENDING,
    AddrBound,
    Address,
    AddrFailed,
    Bound,
    Dtab,
    Leaf,
    Path,
    Union,
    Weighted,
    bind,
    delegate,
    leaves,
)
from shared.wire import (
    WireFormatError,
    addr_from_json,
    addr_to_json,
    bound_tree_from_json,
    bound_tree_to_json,
    delegate_tree_from_json,
    delegate_tree_to_json,
    dentry_from_json,
    dentry_to_json,
    dtab_from_json,
    dtab_to_json,
    encode,
)

P = Path.read


def test_dentry_and_dtab_shapes() -> None:
    d = Dtab.read("/svc=>/#/io.l5d.fs;/svc/a=>0.5*/b & 0.5*/c | ~")
    assert encode(dtab_to_json(d)) == (
        '[{"prefix":"/svc","dst":"/#/io.l5d.fs"},{"prefix":"/svc/a","dst":"0.50*/b & 0.50*/c | ~"}]'
    )
    assert dtab_from_json(json.loads(encode(dtab_to_json(d)))) == d
    assert dentry_from_json(dentry_to_json(d[0])) == d[0]


def test_addr_shapes_match_namerd_byte_for_byte() -> None:
    addr = AddrBound(frozenset({Address("127.0.0.1", 1)}))
    assert encode(addr_to_json(addr)) == (
        '{"type":"bound","addrs":[{"ip":"127.0.0.1","port":1,"meta":{}}],"meta":{}}'
    )
    assert encode(addr_to_json(ADDR_NEG)) == '{"type":"neg"}'
    assert encode(addr_to_json(ADDR_PENDING)) == '{"type":"pending"}'
    assert encode(addr_to_json(AddrFailed("boom"))) == '{"type":"failed","cause":"boom"}'
    assert encode(addr_to_json(AddrBound())) == '{"type":"bound","addrs":[],"meta":{}}'


def test_addrs_are_sorted_and_meta_passes_through() -> None:
    addr = AddrBound(
        frozenset({Address("10.0.0.2", 80), Address("10.0.0.1", 81, {"nodeName": "n1"})}),
        {"authority": "users.example"},
    )
    out = json.loads(encode(addr_to_json(addr)))
    assert [(a["ip"], a["port"]) for a in out["addrs"]] == [("10.0.0.1", 81), ("10.0.0.2", 80)]
    assert out["addrs"][0]["meta"] == {"nodeName": "n1"}
    back = addr_from_json(out)
    assert back == addr
    assert isinstance(back, AddrBound)
    assert back.meta == {"authority": "users.example"}


def test_bind_leaf_matches_namerd_example() -> None:
    tree = Leaf(Bound(P("/#/io.l5d.namer/foo")))
    addrs = {P("/#/io.l5d.namer/foo"): AddrBound(frozenset({Address("127.0.0.1", 1)}))}
    text = encode(bound_tree_to_json(tree, lambda b: addrs.get(b.id)))
    assert text == (
        '{"type":"leaf","bound":{"addr":{"type":"bound","addrs":[{"ip":"127.0.0.1","port":1,'
        '"meta":{}}],"meta":{}},"id":"/#/io.l5d.namer/foo","path":"/"}}'
    )
    back, back_addrs = bound_tree_from_json(json.loads(text))
    assert back == tree
    assert back_addrs == addrs


def test_bound_tree_union_and_residual_and_weights() -> None:
    dtab = Dtab.read("/svc=>0.25*/$/inet/127.0.0.1/1 & 0.75*/$/inet/127.0.0.1/2")
    tree = bind(dtab, P("/svc/extra/segments"))
    obj = bound_tree_to_json(tree)
    assert obj["type"] == "union"
    assert [b["weight"] for b in obj["union"]] == [0.25, 0.75]
    assert obj["union"][0]["tree"]["bound"] == {
        "id": "/$/inet/127.0.0.1/1",
        "path": "/extra/segments",
    }
    back, _ = bound_tree_from_json(json.loads(encode(obj)))
    assert back == tree
    assert [b.weight for b in leaves(back)] == [0.25, 0.75]
    assert [b.residual for b in leaves(back)] == [P("/extra/segments")] * 2


@pytest.mark.parametrize(("kind", "text"), [("neg", "~"), ("fail", "!"), ("empty", "$")])
def test_bound_tree_terminals(kind: str, text: str) -> None:
    tree = bind(Dtab.read(f"/svc=>{text}"), P("/svc"))
    assert encode(bound_tree_to_json(tree)) == f'{{"type":"{kind}"}}'


def test_delegate_json_matches_namerd_yeezy_examples() -> None:
    dtab = Dtab.read("/yeezy=>/yeezus")
    tree = delegate(dtab, P("/yeezy"))
    assert encode(delegate_tree_to_json(tree)) == (
        '{"type":"delegate","path":"/yeezy","delegate":{"type":"neg","path":"/yeezus",'
        '"dentry":{"prefix":"/yeezy","dst":"/yeezus"}}}'
    )
    with_extra = delegate(dtab + Dtab.read("/yeezy=>/bar"), P("/yeezy"))
    obj = delegate_tree_to_json(with_extra)
    assert obj["type"] == "alt"
    assert obj["path"] == "/yeezy"
    assert [(c["type"], c["path"]) for c in obj["alt"]] == [("neg", "/bar"), ("neg", "/yeezus")]


def test_delegate_tree_round_trip_of_the_reference_example() -> None:
    dtab = Dtab.read(
        "/beh=>/#/error;/bah/humbug=>/$/inet/127.1/8080;/foo=>/bah | /beh | /$/fail;"
        "/foo=>/bar;/boo=>/foo;/meh=>/heh;/neg=>~"
    )

    def lookup(req: object) -> object:
        raise RuntimeError("error naming /#/error/humbug")

    tree = delegate(dtab, P("/boo/humbug"), lookup, namers=[P("/#/error")])  # type: ignore[arg-type]
    obj = json.loads(encode(delegate_tree_to_json(tree)))
    back, _ = delegate_tree_from_json(obj)
    assert delegate_tree_to_json(back) == obj


def test_neg_and_fail_paths_on_the_wire() -> None:
    tree = delegate(Dtab.read("/neg=>~;/f=>!"), P("/neg"))
    assert delegate_tree_to_json(tree)["delegate"]["path"] == "~"
    tree = delegate(Dtab.read("/neg=>~;/f=>!"), P("/f"))
    assert delegate_tree_to_json(tree)["delegate"]["path"] == "!"
    tree = delegate(Dtab.read("/f=>/$/fail"), P("/f/x"))
    assert delegate_tree_to_json(tree)["delegate"]["path"] == "/$/fail/x"


@pytest.mark.parametrize(
    ("decoder", "value", "where"),
    [
        (dtab_from_json, {"prefix": "/a"}, "$"),
        (dtab_from_json, [None], "$[0]"),
        (dtab_from_json, [{"prefix": "/a", "dst": "/b |"}], "$[0].dst"),
        (dtab_from_json, [{"prefix": "a", "dst": "/b"}], "$[0].prefix"),
        (
            addr_from_json,
            {"type": "bound", "addrs": [{"ip": "x", "port": "80"}]},
            "$.addrs[0].port",
        ),
        (
            addr_from_json,
            {"type": "bound", "addrs": [{"ip": "x", "port": 70000}]},
            "$.addrs[0].port",
        ),
        (addr_from_json, {"type": "weird"}, "$.type"),
        (
            bound_tree_from_json,
            {"type": "union", "union": [{"weight": True, "tree": {}}]},
            "$.union[0].weight",
        ),
        (
            bound_tree_from_json,
            {"type": "union", "union": [{"weight": -1, "tree": {"type": "neg"}}]},
            "$.union[0].weight",
        ),
        (
            delegate_tree_from_json,
            {"type": "union", "path": "/a", "union": [{"weight": float("inf"), "tree": {}}]},
            "$.union[0].weight",
        ),
        (bound_tree_from_json, {"type": "leaf", "bound": {"id": "not-a-path"}}, "$.bound.id"),
        (bound_tree_from_json, {"type": "alt", "alt": {}}, "$.alt"),
        (
            delegate_tree_from_json,
            {"type": "delegate", "path": "/a", "delegate": None},
            "$.delegate",
        ),
        (delegate_tree_from_json, {"type": "nope", "path": "/a"}, "$.type"),
    ],
)
def test_bad_json_names_where(decoder: object, value: object, where: str) -> None:
    with pytest.raises(WireFormatError) as info:
        decoder(value)  # type: ignore[operator]
    assert info.value.where == where, str(info.value)


addresses = st.builds(
    Address,
    st.from_regex(r"\A(?:[0-9]{1,3}\.){3}[0-9]{1,3}\Z"),
    st.integers(0, 65535),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=2),
)
addrs = (
    st.builds(AddrBound, st.frozensets(addresses, max_size=4))
    | st.just(ADDR_NEG)
    | st.builds(AddrFailed, st.text(max_size=20))
)


@given(addrs)
def test_addr_round_trip(addr: object) -> None:
    assert addr_from_json(json.loads(encode(addr_to_json(addr)))) == addr  # type: ignore[arg-type]


def test_unicode_meta_is_kept_as_utf8() -> None:
    addr = AddrBound(frozenset({Address("10.0.0.1", 80, {"zone": "zürich"})}))
    assert '"zone":"zürich"' in encode(addr_to_json(addr))


def test_union_weight_keeps_float_form() -> None:
    tree = Union(
        (Weighted(1.0, Leaf(Bound(P("/$/inet/1")))), Weighted(2.0, Leaf(Bound(P("/$/inet/2")))))
    )
    text = encode(bound_tree_to_json(tree))
    assert '"weight":1.0' in text
    assert '"weight":2.0' in text
