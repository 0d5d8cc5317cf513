"""``io.l5d.fs``: the file format and the directory scan, as every fs reader sees them.

The linker's namer, namerd's namer and the linker admin's explainer all read ``rootDir`` through
``shared.fsformat``; their own tests cover only their watching loops and DNS.
"""

from __future__ import annotations

import os
import string
import time
from collections.abc import Callable
from pathlib import Path as FsPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import (
    ADDR_NEG,
    ADDR_PENDING,
    NEG,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    Bound,
    Leaf,
    Path,
)
from shared.addr import WEIGHT_META_KEY
from shared.fsformat import (
    RACY_WINDOW_NS,
    FsDirectory,
    FsEndpoint,
    FsFileError,
    parse_endpoints,
    read_service_file,
    scan_service_dir,
)

PREFIX = Path.read("/#/io.l5d.fs")


def later_ns() -> int:
    """A scan "now" far after every file's mtime, so no file is racy unless a test says so."""
    return time.time_ns() + 10 * RACY_WINDOW_NS


# -- the file format ---------------------------------------------------------------------------


def test_parse_endpoints_format() -> None:
    text = (
        "# a comment\n"
        "\n"
        "10.0.0.1 8080\n"
        "   10.0.0.2\t8081 * 0.5   \n"
        "  # indented comment\n"
        "::1 9000 * 0\n"
        "backend.internal 80\n"
        "users-1.internal 9000 * 2.5\n"
    )
    assert parse_endpoints(text, "f") == [
        FsEndpoint(3, "10.0.0.1", 8080),
        FsEndpoint(4, "10.0.0.2", 8081, 0.5),
        FsEndpoint(6, "::1", 9000, 0.0),
        FsEndpoint(7, "backend.internal", 80),
        FsEndpoint(8, "users-1.internal", 9000, 2.5),
    ]
    assert FsEndpoint(1, "10.0.0.2", 1, 0.5).meta == {WEIGHT_META_KEY: 0.5}
    assert FsEndpoint(1, "10.0.0.2", 1).meta == {}
    assert [e.ip for e in parse_endpoints("::1 81\nh 1\n", "f")] == ["::1", None]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("10.0.0.1", "expected 'host port' or 'host port * weight'"),
        ("10.0.0.1 80 90", "expected 'host port'"),
        ("10.0.0.1 80 x 1", "expected 'host port'"),
        ("10.0.0.1 http", "port 'http' must be a number 0-65535"),
        ("10.0.0.1 65536", "port '65536'"),
        ("10.0.0.1 99999", "port '99999' must be a number 0-65535"),
        ("10.0.0.1 ٨٠", "port '٨٠' must be a number 0-65535"),
        ("10.0.0.1 -1", "port '-1'"),
        ("10.0.0.1 80 * heavy", "weight 'heavy' is not a number"),
        ("10.0.0.1 80 * -1", "weight '-1' must be a finite number >= 0"),
        ("10.0.0.1 80 * nan", "finite number >= 0"),
        ("10.0.0.1 80 * inf", "finite number >= 0"),
        ("h@st 80", "neither an IP address nor a host name"),
        ("bad/host 1", "host 'bad/host' is neither"),
    ],
)
def test_bad_line_names_the_file_and_line(line: str, problem: str) -> None:
    with pytest.raises(FsFileError) as info:
        parse_endpoints(f"# header\n10.0.0.9 1\n{line}\n10.0.0.8 1\n", "/srv/disco/users")
    message = str(info.value)
    assert message.startswith("/srv/disco/users:3: ")
    assert problem in message


def test_duplicates_are_rejected() -> None:
    with pytest.raises(FsFileError, match=r"f:3: duplicate endpoint ::1 80 \(first on line 1\)"):
        parse_endpoints("0::1 80\n10.0.0.1 80\n::1 80 * 2\n", "f")
    with pytest.raises(FsFileError, match=r"f:2: duplicate endpoint A 1 \(first on line 1\)"):
        parse_endpoints("a 1\nA 1\n", "f")


hosts = st.sampled_from(["10.0.0.1", "::1", "users.internal", "a-b_c", "2001:db8::7"])
weight_texts = st.sampled_from(["", " * 0", " * 0.5", " * 2", " * 1e3", " * 1.25"])


@given(
    st.lists(
        st.tuples(hosts, st.integers(0, 65535), weight_texts, st.sampled_from(["", "  ", "\t"])),
        max_size=8,
        unique_by=lambda t: (t[0], t[1]),
    ),
    st.lists(st.sampled_from(["", "# note", "   ", "  # x 1 * y"]), max_size=3),
)
def test_every_well_formed_file_parses_line_for_line(
    lines: list[tuple[str, int, str, str]], noise: list[str]
) -> None:
    text = "\n".join(noise + [f"{pad}{h} {p}{w}{pad}" for h, p, w, pad in lines]) + "\n"
    got = parse_endpoints(text, "f")
    assert [(e.host, e.port) for e in got] == [(h, p) for h, p, _, _ in lines]
    assert [e.line for e in got] == list(range(len(noise) + 1, len(noise) + len(lines) + 1))
    for e, (_, _, w, _) in zip(got, lines, strict=True):
        assert e.weight == (float(w.split("*")[1]) if w else None)


@given(st.text(alphabet=string.printable + "٨é\x00", max_size=80))
def test_any_text_parses_or_fails_with_file_and_line(text: str) -> None:
    problem: FsFileError | None = None
    endpoints: list[FsEndpoint] = []
    try:
        endpoints = parse_endpoints(text, "f")
    except FsFileError as err:
        problem = err
    if problem is not None:
        source, line, _ = str(problem).split(":", 2)
        assert source == "f"
        assert 1 <= int(line) <= max(1, len(text.splitlines()))
    for e in endpoints:
        assert 0 <= e.port <= 65535
        assert e.weight is None or e.weight >= 0


# -- one file ----------------------------------------------------------------------------------


def test_read_service_file(tmp_path: FsPath) -> None:
    ips = tmp_path / "ips"
    ips.write_text("10.0.0.1 80\n10.0.0.2 80 * 0.5\n")
    assert read_service_file(str(ips)).fixed == AddrBound(
        frozenset({Address("10.0.0.1", 80), Address("10.0.0.2", 80, {WEIGHT_META_KEY: 0.5})})
    )
    names = tmp_path / "names"
    names.write_text("10.0.0.1 80\nusers.internal 80\n")
    assert read_service_file(str(names)).fixed is None  # needs DNS first
    bad = tmp_path / "bad"
    bad.write_bytes(b"\xef\xbb\xbf10.0.0.1 80\n\xff 80\n")  # a BOM is fine, \xff is not
    assert read_service_file(str(bad)).fixed == AddrFailed(f"{bad}:2: not UTF-8 text")
    missing = read_service_file(str(tmp_path / "missing")).fixed
    assert isinstance(missing, AddrFailed)
    assert "cannot read" in missing.cause
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    assert read_service_file(str(empty)).fixed == AddrBound()


# -- the directory -----------------------------------------------------------------------------


def test_scan_rules_for_names_hidden_files_and_dirs(tmp_path: FsPath) -> None:
    (tmp_path / "ok").write_text("10.0.0.1 80\n")
    (tmp_path / "has space").write_text("10.0.0.1 80\n")
    (tmp_path / "users~").write_text("10.0.0.1 80\n")
    (tmp_path / ".users.swp").write_text("garbage\n")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subdir" / "inner").write_text("10.0.0.1 80\n")
    (tmp_path / "linked").symlink_to(tmp_path / "ok")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    scan = scan_service_dir(tmp_path, now_ns=later_ns())
    assert sorted(scan.files) == ["linked", "ok"]
    assert scan.bad_names == {"has space", "users~"}
    assert set(scan.services) == {b"linked", b"ok"}


def test_scan_rereads_only_changed_files(tmp_path: FsPath) -> None:
    (tmp_path / "a").write_text("10.0.0.1 80\n")
    (tmp_path / "b").write_text("10.0.0.2 80\n")
    first = scan_service_dir(tmp_path, now_ns=later_ns())
    assert not any(f.racy for f in first.files.values())
    (tmp_path / "b").write_text("10.0.0.33 80\n")  # new size: a new signature
    second = scan_service_dir(tmp_path, first, now_ns=later_ns())
    assert second.files["a"] is first.files["a"]  # not read again
    assert second.files["b"].service.fixed == AddrBound(frozenset({Address("10.0.0.33", 80)}))
    # A touch (new mtime, same content) is read again but keeps the service object.
    os.utime(tmp_path / "a", ns=(time.time_ns() - 5 * RACY_WINDOW_NS,) * 2)
    third = scan_service_dir(tmp_path, second, now_ns=later_ns())
    assert third.files["a"] is not second.files["a"]
    assert third.files["a"].service is second.files["a"].service


def test_a_recently_modified_file_is_read_again_until_it_is_old(tmp_path: FsPath) -> None:
    users = tmp_path / "users"
    users.write_text("10.0.0.1 80\n")
    mtime = users.stat().st_mtime_ns
    soon = mtime + RACY_WINDOW_NS // 2
    racy = scan_service_dir(tmp_path, now_ns=soon)
    assert racy.files["users"].racy
    # Its signature is unchanged, but a same-size rewrite inside the mtime granularity would
    # keep it so: a racy file is read again on every scan...
    again = scan_service_dir(tmp_path, racy, now_ns=soon)
    assert again.files["users"] is not racy.files["users"]
    assert again.files["users"].service is racy.files["users"].service
    # ...until it is older than the window; then the signature is trusted.
    settled = scan_service_dir(tmp_path, again, now_ns=mtime + 2 * RACY_WINDOW_NS)
    assert not settled.files["users"].racy
    later = scan_service_dir(tmp_path, settled, now_ns=later_ns())
    assert later.files["users"] is settled.files["users"]


def test_scan_of_a_missing_dir_raises(tmp_path: FsPath) -> None:
    with pytest.raises(FileNotFoundError):
        scan_service_dir(tmp_path / "nope", now_ns=later_ns())


def test_directory_view_lookup_addr_and_changes(tmp_path: FsPath) -> None:
    (tmp_path / "users").write_text("10.0.0.1 80\n")
    (tmp_path / "web").write_text("10.0.0.9 80\nweb.internal 80 * 2\nnowhere.internal 81\n")
    (tmp_path / "bad name").write_text("")
    view = FsDirectory(tmp_path)
    assert view.apply(view.scan(later_ns())) == (True, ["bad name"])
    assert view.apply(view.scan(later_ns())) == (False, [])  # nothing changed, nothing to warn

    assert view.lookup(PREFIX, Path.read("/users/x")) == Leaf(
        Bound(PREFIX + Path("users"), Path("x"))
    )
    assert view.lookup(PREFIX, Path.read("/nobody")) is NEG
    assert view.lookup(PREFIX, Path()) is NEG

    def dns(answers: dict[str, Addr]) -> Callable[[str, int], Addr]:
        return lambda host, port: answers.get(host, ADDR_NEG)

    users = PREFIX + Path("users")
    assert view.addr(PREFIX, users, dns({})) == AddrBound(frozenset({Address("10.0.0.1", 80)}))
    assert view.addr(PREFIX, PREFIX + Path("nobody"), dns({})) is ADDR_NEG
    assert view.addr(PREFIX, users + Path("deeper"), dns({})) is ADDR_NEG
    assert view.addr(Path.read("/#/other"), users, dns({})) is ADDR_NEG

    web = PREFIX + Path("web")
    # Pending while any name has no first answer.
    assert view.addr(PREFIX, web, dns({"web.internal": ADDR_PENDING})) is ADDR_PENDING
    # A failed or unknown name is left out; the line's weight goes to every address it got.
    got = view.addr(
        PREFIX,
        web,
        dns({"web.internal": AddrBound(frozenset({Address("10.0.0.9", 80)}))}),
    )
    assert got == AddrBound(frozenset({Address("10.0.0.9", 80)}))  # first line wins
    got = view.addr(
        PREFIX, web, dns({"web.internal": AddrBound(frozenset({Address("10.0.0.5", 80)}))})
    )
    assert isinstance(got, AddrBound)
    assert {a.ip: a.meta for a in got.addrs} == {
        "10.0.0.9": {},
        "10.0.0.5": {WEIGHT_META_KEY: 2.0},
    }

    (tmp_path / "web").write_text("nowhere.internal 81\nweb.internal 80\n")
    assert view.apply(view.scan(later_ns())) == (True, [])
    failed = view.addr(PREFIX, web, dns({"web.internal": AddrFailed("no such host")}))
    assert failed == AddrFailed(
        f"{tmp_path / 'web'}:1: host 'nowhere.internal' not found; "
        f"{tmp_path / 'web'}:2: no such host"
    )

    (tmp_path / "bad name").unlink()
    assert view.apply(view.scan(later_ns())) == (False, [])
    (tmp_path / "bad name").write_text("")
    assert view.apply(view.scan(later_ns())) == (False, ["bad name"])  # warned again
    (tmp_path / "users").unlink()
    assert view.apply(view.scan(later_ns())) == (True, [])
    assert view.addr(PREFIX, users, dns({})) is ADDR_NEG
