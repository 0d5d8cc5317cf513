"""Identifiers: Linkerd's five HTTP identifiers, lists, edge cases, and "never raises"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linker.routing.identifiers import (
    HeaderTokenIdentifier,
    Identified,
    IdentifierChain,
    IdentifierConfigError,
    build_identifier,
    split_target,
)
from shared import Path

SVC = Path.read("/svc")


Config = list[dict[str, Any]] | dict[str, Any] | None


def ident(
    config: Config,
    method: str = "GET",
    target: str = "/",
    authority: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    version: str = "1.1",
) -> Identified | None:
    return build_identifier(config, SVC).identify(method, target, authority, list(headers), version)


def name(config: Config, **kw: Any) -> str | None:
    found = ident(config, **kw)
    return None if found is None else found.path.show()


# -- io.l5d.header.token ----------------------------------------------------------------------


def test_default_is_header_token_on_host() -> None:
    assert isinstance(build_identifier(None, SVC), HeaderTokenIdentifier)
    assert name(None, headers=[(b"host", b"users")]) == "/svc/users"


def test_header_token_keeps_the_value_as_one_label_unchanged() -> None:
    # No lowercasing, the port stays, dots stay: one label (Linkerd's Path.Utf8(value)).
    found = ident(None, headers=[(b"host", b"Users.Example.com:8080")])
    assert found == Identified(Path(b"svc", b"Users.Example.com:8080"))
    assert found.path.show() == "/svc/Users.Example.com:8080"


def test_header_token_odd_characters_become_an_escaped_label() -> None:
    found = ident(None, headers=[(b"host", b"a/b c")])
    assert found is not None
    assert found.path.labels == (b"svc", b"a/b c")  # one label, never split on '/'
    assert Path.read(found.path.show()) == found.path


def test_header_token_missing_or_empty_is_not_identified() -> None:
    assert ident(None) is None
    assert ident(None, headers=[(b"host", b"")]) is None
    assert ident({"kind": "io.l5d.header.token", "header": "x-svc"}, headers=[]) is None


def test_header_token_other_header_case_insensitive_first_value() -> None:
    cfg = {"kind": "io.l5d.header.token", "header": "X-Service"}
    assert name(cfg, headers=[(b"x-service", b"pay"), (b"x-service", b"other")]) == "/svc/pay"
    assert name(cfg, headers=[(b"X-SERVICE", b"pay")]) == "/svc/pay"


def test_header_token_host_from_authority_and_absolute_form() -> None:
    assert name(None, authority="web", headers=[(b"host", b"ignored")]) == "/svc/web"
    # RFC 9112 §3.2.2: an absolute-form target's authority overrides Host.
    assert name(None, target="http://api:81/x?y", headers=[(b"host", b"other")]) == "/svc/api:81"
    assert name(None, target="http://user@api/x") == "/svc/api"


# -- io.l5d.methodAndHost -----------------------------------------------------------------------


def test_method_and_host_http11_lowercases_the_host() -> None:
    cfg = {"kind": "io.l5d.methodAndHost"}
    assert name(cfg, method="POST", headers=[(b"host", b"Web.COM")]) == "/svc/1.1/POST/web.com"


def test_method_and_host_http10_has_no_host() -> None:
    cfg = {"kind": "io.l5d.methodAndHost"}
    assert name(cfg, version="1.0", headers=[(b"host", b"web")]) == "/svc/1.0/GET"
    assert name(cfg, version="HTTP/1.0") == "/svc/1.0/GET"


def test_method_and_host_with_uri() -> None:
    cfg = {"kind": "io.l5d.methodAndHost", "httpUriInDst": True}
    headers = [(b"host", b"web")]
    assert name(cfg, target="/a/b?q=1", headers=headers) == "/svc/1.1/GET/web/a/b"
    assert name(cfg, target="/a/b/", headers=headers) == "/svc/1.1/GET/web/a/b"
    assert name(cfg, target="/", headers=headers) == "/svc/1.1/GET/web"
    assert name(cfg, target="/a", version="1.0") == "/svc/1.0/GET/a"
    assert name(cfg, target="http://Api/x") == "/svc/1.1/GET/api/x"
    assert name(cfg, target="/a//b", headers=headers) is None  # an empty label cannot exist


def test_method_and_host_needs_a_host_on_http11_and_a_known_version() -> None:
    cfg = {"kind": "io.l5d.methodAndHost"}
    assert ident(cfg) is None
    assert ident(cfg, headers=[(b"host", b"")]) is None
    assert ident(cfg, version="2", headers=[(b"host", b"web")]) is None


# -- io.l5d.path --------------------------------------------------------------------------------


def test_path_first_segments() -> None:
    assert name({"kind": "io.l5d.path"}, target="/users/42?x=1") == "/svc/users"
    cfg = {"kind": "io.l5d.path", "segments": 2}
    assert name(cfg, target="/users/42/profile") == "/svc/users/42"
    assert ident(cfg, target="/users") is None
    assert ident(cfg, target="/users/") is None
    assert ident({"kind": "io.l5d.path"}, target="/") is None
    assert ident({"kind": "io.l5d.path"}, target="//x") is None
    assert ident({"kind": "io.l5d.path"}, target="*") is None


def test_path_without_consume_keeps_the_target() -> None:
    assert ident({"kind": "io.l5d.path"}, target="/users/42") == Identified(
        Path.read("/svc/users"), None
    )


@pytest.mark.parametrize(
    ("target", "segments", "forwarded"),
    [
        ("/users/42", 1, "/42"),
        ("/users", 1, "/"),
        ("/users/", 1, "/"),
        ("/users?x=1", 1, "/?x=1"),
        ("/users/list/?a=1", 1, "/list/?a=1"),
        ("/a/b/c/d", 2, "/c/d"),
        ("http://h:1/users/42?q", 1, "http://h:1/42?q"),
    ],
)
def test_path_consume_strips_the_segments(target: str, segments: int, forwarded: str) -> None:
    cfg = {"kind": "io.l5d.path", "segments": segments, "consume": True}
    found = ident(cfg, target=target)
    assert found is not None
    assert found.target == forwarded


def test_path_odd_characters_are_raw_labels() -> None:
    found = ident({"kind": "io.l5d.path"}, target="/us%20ers~!/x")
    assert found is not None
    assert found.path.labels == (b"svc", b"us%20ers~!")


# -- io.l5d.header and io.l5d.static --------------------------------------------------------


def test_header_path() -> None:
    cfg = {"kind": "io.l5d.header"}
    assert name(cfg, headers=[(b"l5d-name", b"/users/v2")]) == "/svc/users/v2"
    cfg2 = {"kind": "io.l5d.header", "header": "X-Dst"}
    assert name(cfg2, headers=[(b"x-dst", b"/a")]) == "/svc/a"


@pytest.mark.parametrize("value", [b"", b"users", b"/", b"/a//b", b"/a b", b"/\xff", b"//"])
def test_header_path_that_is_not_a_path_is_not_identified(value: bytes) -> None:
    assert ident({"kind": "io.l5d.header"}, headers=[(b"l5d-name", value)]) is None


def test_header_missing() -> None:
    assert ident({"kind": "io.l5d.header"}) is None


def test_static() -> None:
    assert name({"kind": "io.l5d.static", "path": "/users/v1"}) == "/svc/users/v1"
    assert name({"kind": "io.l5d.static", "path": "/x"}, version="1.0", target="*") == "/svc/x"


# -- lists ---------------------------------------------------------------------------------------


def test_list_first_that_identifies_wins() -> None:
    cfg = [
        {"kind": "io.l5d.header", "header": "l5d-name"},
        {"kind": "io.l5d.header.token"},
        {"kind": "io.l5d.static", "path": "/fallback"},
    ]
    assert isinstance(build_identifier(cfg, SVC), IdentifierChain)
    assert name(cfg, headers=[(b"l5d-name", b"/a"), (b"host", b"h")]) == "/svc/a"
    assert name(cfg, headers=[(b"l5d-name", b"bad"), (b"host", b"h")]) == "/svc/h"
    assert name(cfg) == "/svc/fallback"
    assert name([{"kind": "io.l5d.header"}]) is None


def test_dst_prefix_is_used() -> None:
    idf = build_identifier({"kind": "io.l5d.path"}, Path.read("/http/1.1"))
    found = idf.identify("GET", "/a", None, [], "1.1")
    assert found is not None
    assert found.path.show() == "/http/1.1/a"


# -- config errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        ({"kind": "io.l5d.nope"}, "io.l5d.nope"),
        ({}, "kind"),
        ({"kind": "io.l5d.path", "segment": 2}, "segment"),
        ({"kind": "io.l5d.path", "segments": 0}, "segments"),
        ({"kind": "io.l5d.path", "segments": True}, "segments"),
        ({"kind": "io.l5d.path", "consume": "yes"}, "consume"),
        ({"kind": "io.l5d.static"}, "path"),
        ({"kind": "io.l5d.static", "path": "users"}, "path"),
        ({"kind": "io.l5d.header.token", "header": ""}, "header"),
        ({"kind": "io.l5d.methodAndHost", "httpUriInDst": 1}, "httpUriInDst"),
        ([], "at least one"),
        (["io.l5d.path"], "object"),
    ],
)
def test_config_errors_name_the_problem(config: object, mentions: str) -> None:
    with pytest.raises(IdentifierConfigError, match=mentions):
        build_identifier(config, SVC)  # type: ignore[arg-type]
    assert issubclass(IdentifierConfigError, ValueError)


def test_split_target() -> None:
    assert split_target("/a/b?x=1#f") == ("", None, "/a/b", "?x=1")
    assert split_target("http://u@h:1?q") == ("http://u@h:1", "h:1", "", "?q")
    assert split_target("HTTPS://h/p") == ("HTTPS://h", "h", "/p", "")
    assert split_target("*") == ("", None, "", "")
    assert split_target("h:443") == ("", None, "", "")


# -- never raises ----------------------------------------------------------------------------

ALL_KINDS = [
    None,
    {"kind": "io.l5d.header.token"},
    {"kind": "io.l5d.header.token", "header": "x-a"},
    {"kind": "io.l5d.methodAndHost", "httpUriInDst": True},
    {"kind": "io.l5d.path", "segments": 2, "consume": True},
    {"kind": "io.l5d.header", "header": "x-a"},
    {"kind": "io.l5d.static", "path": "/s"},
]
IDENTIFIERS = [build_identifier(c, SVC) for c in ALL_KINDS]
HEADER_NAMES = st.sampled_from([b"host", b"Host", b"x-a", b"l5d-name", b"other"])
# Lone surrogates too: a server that decoded odd bytes leniently may hand us any str.
TEXT = st.text(st.characters() | st.sampled_from(["\ud800", "\udfff", "\udc80", "/", "?", ":"]))


@given(
    method=TEXT.filter(lambda t: len(t) <= 8),
    target=st.sampled_from(["/", "http://", ""]).flatmap(lambda p: TEXT.map(lambda t: p + t)),
    authority=st.none() | TEXT,
    headers=st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=30)), max_size=4),
    version=st.sampled_from(["1.1", "1.0", "HTTP/1.1", "2", ""]),
)
def test_identify_never_raises(
    method: str,
    target: str,
    authority: str | None,
    headers: list[tuple[bytes, bytes]],
    version: str,
) -> None:
    for idf in IDENTIFIERS:
        found = idf.identify(method, target, authority, headers, version)
        if found is not None:
            assert found.path.startswith(SVC)
            assert Path.read(found.path.show()) == found.path  # always a printable path
