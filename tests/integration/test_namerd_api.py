"""namerd's HTTP API against a real process: every case of docs/namerd-api.md we serve.

One namerd (gunicorn, 2 uvicorn workers, embedded redis-server, io.l5d.fs namer) serves the
module; each test uses its own namespace names so tests stay independent.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from .namerd_proc import Namerd

pytestmark = pytest.mark.redis

TEXT = {"Content-Type": "application/dtab"}


def ns() -> str:
    return "t" + uuid.uuid4().hex[:10]


def create(nd: Namerd, name: str, dtab: str) -> None:
    r = httpx.post(f"{nd.api}/api/1/dtabs/{name}", content=dtab, headers=TEXT)
    assert r.status_code == 204, r.text


# -- list / get / head --------------------------------------------------------------------------


def test_list_is_sorted_json_with_newline(namerd: Namerd) -> None:
    a, b = "zz" + ns(), "aa" + ns()
    create(namerd, a, "/a=>/b")
    create(namerd, b, "/a=>/b")
    r = httpx.get(f"{namerd.api}/api/1/dtabs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.text.endswith("]\n")
    names = json.loads(r.text)
    assert names == sorted(names)
    assert {a, b} <= set(names)
    assert httpx.get(f"{namerd.api}/api/1/dtabs/").status_code == 200


def test_get_json_text_and_etag(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/svc => /#/io.l5d.fs")
    r = httpx.get(f"{namerd.api}/api/1/dtabs/{name}")
    assert r.status_code == 200
    assert r.text == '[{"prefix":"/svc","dst":"/#/io.l5d.fs"}]\n'
    assert r.headers["etag"] == "AAAAAAAAAAE="
    assert r.headers["content-type"].startswith("application/json")
    r = httpx.get(
        f"{namerd.api}/api/1/dtabs/{name}",
        headers={"Accept": "application/dtab;q=0.9, application/json"},
    )
    assert r.headers["content-type"].startswith("application/dtab")
    assert r.text == "/svc=>/#/io.l5d.fs\n"
    r = httpx.get(f"{namerd.api}/api/1/dtabs/{name}", headers={"Accept": "text/plain"})
    assert r.text == "/svc=>/#/io.l5d.fs\n"
    r = httpx.get(f"{namerd.api}/api/1/dtabs/{name}", headers={"Accept": "image/png, text/plain"})
    assert r.headers["content-type"].startswith("text/plain")


def test_missing_namespace_is_404_with_empty_body(namerd: Namerd) -> None:
    r = httpx.get(f"{namerd.api}/api/1/dtabs/{ns()}")
    assert (r.status_code, r.text) == (404, "")
    assert httpx.head(f"{namerd.api}/api/1/dtabs/{ns()}").status_code == 404


def test_head_has_etag_and_no_body(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/a=>/b")
    r = httpx.head(f"{namerd.api}/api/1/dtabs/{name}")
    assert r.status_code == 200
    assert r.headers["etag"] == "AAAAAAAAAAE="
    assert r.content == b""


# -- create -------------------------------------------------------------------------------------


def test_create_text_json_conflict_and_canonical_storage(namerd: Namerd) -> None:
    name = ns()
    r = httpx.post(
        f"{namerd.api}/api/1/dtabs/{name}",
        content="# comment\n/svc  =>  /a | /b ;\n/x => 0.5*/y & 0.5*/z;",
        headers={"Content-Type": "application/dtab; charset=UTF-8"},
    )
    assert r.status_code == 204
    assert r.content == b""
    again = httpx.post(f"{namerd.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
    assert again.status_code == 409
    got = httpx.get(f"{namerd.api}/api/1/dtabs/{name}", headers={"Accept": "application/dtab"})
    assert got.text == "/svc=>/a | /b;/x=>0.50*/y & 0.50*/z\n"
    name2 = ns()
    r = httpx.post(
        f"{namerd.api}/api/1/dtabs/{name2}",
        content='[{"prefix":"/svc","dst":"/#/io.l5d.fs"}]',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 204
    assert httpx.get(f"{namerd.api}/api/1/dtabs/{name2}").json() == [
        {"prefix": "/svc", "dst": "/#/io.l5d.fs"}
    ]


def test_create_empty_dtab_is_allowed(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "")
    r = httpx.get(f"{namerd.api}/api/1/dtabs/{name}")
    assert r.text == "[]\n"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "expect_in_body"),
    [
        (None, "/a=>/b", 415, "Invalid Content-Type"),
        ("application/xml", "/a=>/b", 415, 'Invalid Content-Type "application/xml"'),
        ("text/plain", "/a=>/b", 415, "Content-Type text/plain is refused for writes"),
        ("application/json", "[null]", 400, "The dtab contains invalid dentries: [null]"),
        ("application/json", "{not json", 400, "not valid JSON"),
        ("application/json", '[{"prefix":"/a"}]', 400, "dst"),
        ("application/dtab", "/svc => /a |", 400, "simple expected but end of input found"),
    ],
)
def test_bad_create_is_4xx_and_stores_nothing(
    namerd: Namerd, content_type: str | None, body: str, status: int, expect_in_body: str
) -> None:
    name = ns()
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(f"{namerd.api}/api/1/dtabs/{name}", content=body, headers=headers)
    assert r.status_code == status
    assert expect_in_body in r.text
    assert httpx.get(f"{namerd.api}/api/1/dtabs/{name}").status_code == 404


def test_parse_error_shows_where(namerd: Namerd) -> None:
    r = httpx.post(f"{namerd.api}/api/1/dtabs/{ns()}", content="/svc => /a |", headers=TEXT)
    lines = r.text.splitlines()
    assert lines[0] == "simple expected but end of input found at '/svc => /a |[]'"
    assert lines[-2:] == ["  /svc => /a |", "              ^"]


def test_bad_namespace_names_are_400(namerd: Namerd) -> None:
    r = httpx.post(f"{namerd.api}/api/1/dtabs/bad:name", content="/a=>/b", headers=TEXT)
    assert r.status_code == 400
    assert "bad:name" in r.text


def test_body_over_the_limit_is_413_and_nothing_is_stored(namerd: Namerd) -> None:
    name = ns()
    big = ";".join(f"/a{i}=>/b{i}" for i in range(1000))
    r = httpx.post(f"{namerd.api}/api/1/dtabs/{name}", content=big, headers=TEXT)
    assert r.status_code == 413
    assert "4096" in r.text
    assert httpx.get(f"{namerd.api}/api/1/dtabs/{name}").status_code == 404


# -- update / delete ----------------------------------------------------------------------------


def test_put_without_if_match_upserts(namerd: Namerd) -> None:
    name = ns()
    r = httpx.put(f"{namerd.api}/api/1/dtabs/{name}", content="/a=>/b", headers=TEXT)
    assert r.status_code == 204
    assert "etag" not in r.headers
    assert httpx.get(f"{namerd.api}/api/1/dtabs/{name}").headers["etag"] == "AAAAAAAAAAE="
    httpx.put(f"{namerd.api}/api/1/dtabs/{name}", content="/a=>/c", headers=TEXT)
    assert httpx.get(f"{namerd.api}/api/1/dtabs/{name}").headers["etag"] == "AAAAAAAAAAI="


def test_put_with_if_match_is_compare_and_set(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/a=>/b")
    url = f"{namerd.api}/api/1/dtabs/{name}"
    v1 = httpx.head(url).headers["etag"]
    ok = httpx.put(url, content="/a=>/c", headers={**TEXT, "If-Match": v1})
    assert ok.status_code == 204
    stale = httpx.put(url, content="/a=>/d", headers={**TEXT, "If-Match": v1})
    assert stale.status_code == 412
    assert httpx.get(url, headers={"Accept": "text/plain"}).text == "/a=>/c\n"
    assert httpx.put(url, content="/a=>/d", headers={**TEXT, "If-Match": "yolo"}).status_code == 412
    v2 = httpx.head(url).headers["etag"]
    quoted = httpx.put(url, content="/a=>/e", headers={**TEXT, "If-Match": f'"{v2}"'})
    assert quoted.status_code == 204
    missing = httpx.put(
        f"{namerd.api}/api/1/dtabs/{ns()}", content="/a=>/b", headers={**TEXT, "If-Match": v1}
    )
    assert missing.status_code == 404


def test_put_with_bad_content_type_is_415(namerd: Namerd) -> None:
    r = httpx.put(
        f"{namerd.api}/api/1/dtabs/{ns()}", content="/a=>/b", headers={"Content-Type": "x/y"}
    )
    assert r.status_code == 415
    assert r.text.startswith('Invalid Content-Type "x/y". ')


def test_delete_then_404_and_versions_never_reused(namerd: Namerd) -> None:
    name = ns()
    url = f"{namerd.api}/api/1/dtabs/{name}"
    create(namerd, name, "/a=>/b")
    old = httpx.head(url).headers["etag"]
    assert httpx.delete(url).status_code == 204
    assert httpx.delete(url).status_code == 404
    create(namerd, name, "/a=>/c")
    assert httpx.head(url).headers["etag"] != old
    # A CAS with a version from before the delete can never succeed.
    assert httpx.put(url, content="/x=>/y", headers={**TEXT, "If-Match": old}).status_code == 412


def test_unknown_routes_are_404_with_empty_body(namerd: Namerd) -> None:
    for path in ("/api/1/dtabsexpialidocious", "/api/1/nope", "/api/2/dtabs", "/api/1/bind"):
        r = httpx.get(namerd.api + path)
        assert (r.status_code, r.text) == (404, ""), path


# -- bind / addr / resolve / delegate / bound-names -----------------------------------------------

USERS_ADDR = {
    "type": "bound",
    "addrs": [
        {"ip": "127.0.0.1", "port": 8081, "meta": {}},
        {"ip": "127.0.0.1", "port": 8082, "meta": {"endpoint_addr_weight": 0.5}},
    ],
    "meta": {},
}


def test_bind_through_the_fs_namer(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/svc=>/#/io.l5d.fs")
    r = httpx.get(f"{namerd.api}/api/1/bind/{name}", params={"path": "/svc/users/extra"})
    assert r.status_code == 200
    assert r.text.endswith("}\n")
    assert r.json() == {
        "type": "leaf",
        "bound": {"addr": USERS_ADDR, "id": "/#/io.l5d.fs/users", "path": "/extra"},
    }


def test_bind_with_extra_dtab_and_terminals(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/svc=>/#/io.l5d.fs")
    bind = f"{namerd.api}/api/1/bind/{name}"
    r = httpx.get(bind, params={"path": "/svc/users", "dtab": "/svc/users=>/$/inet/127.0.0.1/9"})
    assert r.json()["bound"]["id"] == "/$/inet/127.0.0.1/9"
    assert httpx.get(bind, params={"path": "/svc/nope"}).json() == {"type": "neg"}
    assert httpx.get(bind, params={"path": "/svc/x", "dtab": "/svc/x=>!"}).json() == {
        "type": "fail"
    }
    assert httpx.get(bind, params={"path": "/svc/x", "dtab": "/svc/x=>$"}).json() == {
        "type": "empty"
    }
    assert httpx.get(bind, params={"path": "/svc/x", "dtab": ""}).json() == {"type": "neg"}
    union = httpx.get(
        bind,
        params={"path": "/u", "dtab": "/u=>0.25*/$/inet/127.0.0.1/1 & 0.75*/$/inet/127.0.0.1/2"},
    ).json()
    assert union["type"] == "union"
    assert [b["weight"] for b in union["union"]] == [0.25, 0.75]


def test_bind_on_a_missing_namespace_acts_as_an_empty_dtab(namerd: Namerd) -> None:
    r = httpx.get(f"{namerd.api}/api/1/bind/{ns()}", params={"path": "/#/io.l5d.fs/users"})
    assert r.json()["bound"]["id"] == "/#/io.l5d.fs/users"


def test_bind_errors(namerd: Namerd) -> None:
    name = ns()
    bind = f"{namerd.api}/api/1/bind/{name}"
    r = httpx.get(bind, params={"path": "invalid"})
    assert r.status_code == 400
    assert r.text.startswith("Invalid path: invalid / '/' expected but 'i' found at '[i]nvalid'")
    r = httpx.get(bind)
    assert (r.status_code, r.text.strip()) == (400, "Missing required query parameter: path")
    r = httpx.get(bind, params={"path": "/a", "dtab": "/a=>"})
    assert r.status_code == 400
    assert r.text.startswith("Invalid dtab: simple expected")
    r = httpx.get(bind, params={"path": "/s", "dtab": "/s=>/s/x"})
    assert r.status_code == 502
    assert "Max recursion level" in r.text


def test_addr_of_concrete_ids(namerd: Namerd) -> None:
    addr = f"{namerd.api}/api/1/addr/{ns()}"
    assert httpx.get(addr, params={"path": "/#/io.l5d.fs/users"}).json() == USERS_ADDR
    assert httpx.get(addr, params={"path": "/#/io.l5d.fs/nope"}).json() == {"type": "neg"}
    assert httpx.get(addr, params={"path": "/$/inet/127.0.0.1/4"}).json() == {
        "type": "bound",
        "addrs": [{"ip": "127.0.0.1", "port": 4, "meta": {}}],
        "meta": {},
    }
    assert httpx.get(addr, params={"path": "/$/nil"}).json() == {
        "type": "bound",
        "addrs": [],
        "meta": {},
    }
    transformed = httpx.get(addr, params={"path": "/%/io.l5d.port/9/#/io.l5d.fs/users"}).json()
    assert transformed == USERS_ADDR


def test_resolve(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/svc=>/#/io.l5d.fs")
    r = httpx.get(f"{namerd.api}/api/1/resolve/{name}", params={"path": "/svc/users"})
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == USERS_ADDR
    r = httpx.get(f"{namerd.api}/api/1/resolve/{name}", params={"path": "/svc/none"})
    assert r.json() == {"type": "neg"}


def test_delegate_matches_namerd_examples(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/yeezy=>/yeezus")
    url = f"{namerd.api}/api/1/delegate/{name}"
    r = httpx.get(url, params={"path": "/yeezy"})
    assert r.status_code == 200
    assert r.text == (
        '{"type":"delegate","path":"/yeezy","delegate":{"type":"neg","path":"/yeezus",'
        '"dentry":{"prefix":"/yeezy","dst":"/yeezus"}}}'
    )
    r = httpx.get(url, params={"path": "/yeezy", "dtab": "/yeezy=>/bar"})
    body = r.json()
    assert body["type"] == "alt"
    assert [c["path"] for c in body["alt"]] == ["/bar", "/yeezus"]
    # watch is ignored on delegate, as in namerd
    assert httpx.get(url, params={"path": "/yeezy", "watch": "1"}).text.startswith('{"type"')


def test_delegate_without_namespace(namerd: Namerd) -> None:
    url = f"{namerd.api}/api/1/delegate"
    r = httpx.get(url, params={"path": "/a", "dtab": "/a=>/$/inet/127.0.0.1/5"})
    assert r.json()["delegate"]["bound"]["id"] == "/$/inet/127.0.0.1/5"
    r = httpx.post(url, json={"path": "/a", "dtab": "/a=>/b"})
    assert r.json()["path"] == "/a"
    assert httpx.post(url, content="x", headers={"Content-Type": "text/plain"}).status_code == 415
    r = httpx.post(url, json={"path": "/a"})
    assert r.status_code == 400
    assert r.text.startswith("Malformed delegation request")
    r = httpx.post(url, json={"path": "a", "dtab": ""})
    assert (r.status_code, r.text[:13]) == (400, "Invalid path:")


def test_bound_names(namerd: Namerd) -> None:
    r = httpx.get(f"{namerd.api}/api/1/bound-names")
    assert r.text == '["/#/io.l5d.fs/users"]\n'


def test_auth_is_not_required_when_no_token_is_configured(namerd: Namerd) -> None:
    create(namerd, ns(), "/a=>/b")


def test_resolve_merges_union_branches_and_sums_shared_endpoints(namerd: Namerd) -> None:
    name = ns()
    create(namerd, name, "/svc=>0.5*/#/io.l5d.fs/users & 0.5*/$/inet/127.0.0.1/8081")
    got = httpx.get(f"{namerd.api}/api/1/resolve/{name}", params={"path": "/svc"}).json()
    weights = {a["port"]: a["meta"]["endpoint_addr_weight"] for a in got["addrs"]}
    # 8081 is in both branches (0.5 * 1.0 + 0.5 * 1.0); 8082 only in the fs one (0.5 * 0.5).
    assert weights == {8081: 1.0, 8082: 0.25}
