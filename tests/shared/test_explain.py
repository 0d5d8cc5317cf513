"""shared.explain: the one route explainer, and answering its lookups by namer prefix."""

from __future__ import annotations

import re

import pytest

from shared import (
    AddrBound,
    Address,
    Bound,
    DelegationError,
    Dtab,
    Leaf,
    NameTree,
    NeedLookup,
    Path,
    read_name_tree,
)
from shared.binding import lookup_by_prefix
from shared.explain import explain
from shared.names import Name
from shared.wire import delegate_tree_from_json

FS = Path.read("/#/io.l5d.fs")


def users_only(path: Path) -> NameTree[Name]:
    if path.take(1) == Path("users"):
        return Leaf(Bound(FS + path.take(1), path.drop(1)))
    return read_name_tree("~")


def addr_of(bound: Bound) -> AddrBound | None:
    return (
        AddrBound(frozenset({Address("10.0.0.1", 80)})) if bound.id == FS + Path("users") else None
    )


def test_explain_is_namerds_json_with_the_callers_namers_and_addresses() -> None:
    dtab = Dtab.read("/svc=>/#/io.l5d.fs | /$/inet/127.0.0.1/1;/svc/x=>/#/nope")
    lookup = lookup_by_prefix({FS: users_only})
    tree = explain(dtab, Path.read("/svc/users/rest"), lookup, addr_of, namers=[FS])
    assert (tree["type"], tree["path"]) == ("alt", "/svc/users/rest")
    leaf = tree["alt"][0]
    assert leaf["bound"] == {
        "addr": {
            "type": "bound",
            "addrs": [{"ip": "10.0.0.1", "port": 80, "meta": {}}],
            "meta": {},
        },
        "id": "/#/io.l5d.fs/users",
        "path": "/rest",
    }
    assert "addr" not in tree["alt"][1]["bound"]  # addr_of said None
    # It decodes as namerd's delegate tree.
    assert delegate_tree_from_json(tree)[1] == {
        FS + Path("users"): addr_of(Bound(FS + Path("users")))
    }


def test_a_namer_nobody_mounted_is_a_namer_failure() -> None:
    lookup = lookup_by_prefix({})
    with pytest.raises(
        DelegationError, match=re.escape("no namer configured for /#/io.l5d.fs/users")
    ):
        lookup(NeedLookup(FS, Path("users")))
    tree = explain(
        Dtab.read("/svc=>/#/io.l5d.fs"), Path.read("/svc/users"), lookup, addr_of, namers=[FS]
    )
    assert tree["delegate"]["type"] == "exception"


def test_a_loop_outside_any_alternative_raises() -> None:
    with pytest.raises(DelegationError, match="Max recursion"):
        explain(Dtab.read("/a=>/a"), Path.read("/a"), lookup_by_prefix({}), addr_of, max_depth=5)
