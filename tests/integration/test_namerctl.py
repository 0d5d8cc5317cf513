"""namerctl against a real namerd: every command and alias, outputs, versions, errors, auth."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from namerd.ctl import main

from .namerd_proc import Namerd, free_port, running_namerd

pytestmark = pytest.mark.redis

TOKEN = "s3cret"
BODY_LIMIT = 512
V1, V2, V3 = "AAAAAAAAAAE=", "AAAAAAAAAAI=", "AAAAAAAAAAM="

ROUTES = """\
/svc => /#/io.l5d.fs ;
/svc/users => 0.9*/#/io.l5d.fs/users & 0.1*/#/io.l5d.fs/users-v2 ;
/svc/pay => /svc/nope | /svc/users ;
/svc/bad => ! ;
/svc/neg => ~ ;
/svc/empty => $ ;
/svc/res => /#/io.l5d.fs/users/extra/bits ;
/svc/loop => /svc/loop2 ;
/svc/loop2 => /svc/loop ;
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def one_error_line(self) -> str:
        """The error line; asserts it is exactly one ``namerctl: ...`` line, no traceback."""
        assert self.code != 0, self
        assert self.err.startswith("namerctl: "), self.err
        assert self.err.count("\n") == 1, self.err
        assert "Traceback" not in self.err
        return self.err.rstrip("\n")


Run = Callable[..., Result]


def ns() -> str:
    return "c" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def nd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namerd]:
    """One namerd with an io.l5d.fs namer (users, users-v2), shared by the module."""
    disco = tmp_path_factory.mktemp("ctl-disco")
    (disco / "users").write_text("127.0.0.1 8081\n127.0.0.1 8082 * 0.5\n")
    (disco / "users-v2").write_text("127.0.0.1 9000\n")
    config = f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
    with running_namerd(tmp_path_factory.mktemp("ctl-namerd"), extra_config=config) as n:
        yield n


@pytest.fixture(scope="module")
def routes(nd: Namerd) -> str:
    """A namespace holding ROUTES (alt, union, neg, fail, empty, residual, a loop)."""
    name = ns()
    resp = httpx.post(
        f"{nd.api}/api/1/dtabs/{name}",
        content=ROUTES,
        headers={"Content-Type": "application/dtab"},
    )
    assert resp.status_code == 204, resp.text
    return name


@pytest.fixture(scope="module")
def nd_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namerd]:
    """A namerd that requires a bearer token for writes and takes small bodies only."""
    config = f"limits:\n  maxBodyBytes: {BODY_LIMIT}\n"
    with running_namerd(
        tmp_path_factory.mktemp("ctl-namerd-token"),
        extra_config=config,
        env={"NAMERD_TOKEN": TOKEN},
    ) as n:
        yield n


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NAMERCTL_* from the caller's environment, no .namerctl.* from the repository."""
    monkeypatch.delenv("NAMERCTL_BASE_URL", raising=False)
    monkeypatch.delenv("NAMERCTL_TOKEN", raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


@pytest.fixture
def ctl(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run namerctl in-process with exactly these arguments."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def run(ctl: Run, nd: Namerd) -> Run:
    """Run namerctl in-process against the module's namerd."""
    return lambda *argv: ctl("--base-url", nd.api, *argv)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- dtab list / get ------------------------------------------------------------------------------


def test_list_and_ls_in_text_and_json(run: Run) -> None:
    a, b = ns(), ns()
    for name in (a, b):
        assert run("dtab", "create", name, write_stdin_free(name)).code == 0
    listed = run("dtab", "list")
    assert (listed.code, listed.err) == (0, "")
    lines = listed.out.splitlines()
    assert {a, b} <= set(lines)
    assert lines == sorted(lines)
    as_json = run("dtab", "ls", "--json")
    assert as_json.code == 0
    assert json.loads(as_json.out) == lines
    assert as_json.out == json.dumps(lines, separators=(",", ":")) + "\n"


def write_stdin_free(name: str) -> str:
    """A dtab file in the (per-test) working directory."""
    return write(Path.cwd() / f"{name}.dtab", "/svc => /#/io.l5d.fs")


GET_TEXT = """\
# the service tree
/svc => /#/io.l5d.fs;
/svc/users => 0.9*/svc/a & 0.1*/svc/b;   # canary
/http/1.1/* => /svc;
"""

GET_PRETTY = """\
# version AAAAAAAAAAE=
/svc         => /#/io.l5d.fs ;
/svc/users   => 0.90*/svc/a & 0.10*/svc/b ;
/http/1.1/*  => /svc ;
"""

GET_COMPACT = "/svc=>/#/io.l5d.fs;/svc/users=>0.90*/svc/a & 0.10*/svc/b;/http/1.1/*=>/svc;\n"

GET_JSON = (
    '{"version":"AAAAAAAAAAE=","dtab":[{"prefix":"/svc","dst":"/#/io.l5d.fs"},'
    '{"prefix":"/svc/users","dst":"0.90*/svc/a & 0.10*/svc/b"},'
    '{"prefix":"/http/1.1/*","dst":"/svc"}]}\n'
)


def test_get_pretty_compact_and_json_output_exactly(run: Run, tmp_path: Path) -> None:
    name = ns()
    created = run("dtab", "create", name, write(tmp_path / "d.dtab", GET_TEXT))
    assert (created.code, created.out, created.err) == (0, f"Created {name}\n", "")

    for argv in (
        ("dtab", "get", name),
        ("dtab", "cat", name),
        ("dtab", "get", name, "--pretty=true"),
        ("dtab", "get", "--pretty", name),  # a bare --pretty never eats NAME
    ):
        got = run(*argv)
        assert (got.code, got.out, got.err) == (0, GET_PRETTY, ""), argv
    assert run("dtab", "get", name, "--pretty=false").out == GET_COMPACT
    assert run("dtab", "cat", name, "--json").out == GET_JSON


def test_get_empty_dtab(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    name = ns()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("dtab", "create", name, "-", "--allow-empty").code == 0
    assert run("dtab", "get", name).out == f"# version {V1}\n"
    assert run("dtab", "get", name, "--json").out == f'{{"version":"{V1}","dtab":[]}}\n'


# -- create ---------------------------------------------------------------------------------------


def test_create_from_json_files_and_stdin(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [{"prefix": "/svc", "dst": "/#/io.l5d.fs | /$/inet/127.0.0.1/1"}]

    # The {"version", "dtab"} object `get --json` prints; its version means nothing to create.
    obj = write(tmp_path / "o.json", json.dumps({"version": "stale", "dtab": expected}))
    a = ns()
    assert run("dtab", "create", a, obj).out == f"Created {a}\n"
    assert json.loads(run("dtab", "get", a, "--json").out) == {"version": V1, "dtab": expected}

    # A bare list of dentries (namerd's own JSON), with leading whitespace; the `new` alias.
    bare = write(tmp_path / "l.json", "\n  " + json.dumps(expected))
    b = ns()
    assert run("dtab", "new", b, bare).out == f"Created {b}\n"
    assert json.loads(run("dtab", "get", b, "--json").out)["dtab"] == expected

    # Text and JSON on stdin.
    c, d = ns(), ns()
    monkeypatch.setattr(sys, "stdin", io.StringIO("/svc => /#/io.l5d.fs | /$/inet/127.0.0.1/1\n"))
    assert run("dtab", "create", c, "-").out == f"Created {c}\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"dtab": expected})))
    assert run("dtab", "create", d, "-").out == f"Created {d}\n"
    for name in (c, d):
        assert json.loads(run("dtab", "get", name, "--json").out)["dtab"] == expected

    # Creating again is namerd's 409, with its message.
    again = run("dtab", "create", a, obj)
    assert again.one_error_line == (
        f"namerctl: namerd refused the request (409 Conflict): namespace '{a}' already exists"
    )


# -- update ---------------------------------------------------------------------------------------


def test_update_versions_412_and_the_namerctl_21_fix(run: Run, tmp_path: Path) -> None:
    name = ns()
    assert run("dtab", "create", name, write(tmp_path / "a.dtab", "/svc => /a")).code == 0
    saved = write(tmp_path / "saved.json", run("dtab", "get", name, "--json").out)
    assert json.loads(Path(saved).read_text())["version"] == V1

    # Without --version the file's version is the If-Match: first use works (v1 -> v2)...
    assert run("dtab", "update", name, saved).out == f"(no dentry changed)\nUpdated {name}\n"
    assert run("dtab", "get", name).out.startswith(f"# version {V2}\n")
    # ...and a second use fails, as namerctl's does: the file's version is stale now.
    stale = run("dtab", "up", name, saved)
    assert stale.one_error_line.startswith(
        "namerctl: version mismatch: the dtab changed since you read it; get it again and retry"
    )
    assert "sent version AAAAAAAAAAE= from the version field of" in stale.err

    # namerctl#21 fixed: an explicit --version wins over the file's (stale) version...
    fixed = run("dtab", "update", name, saved, "--version", V2)
    assert (fixed.code, fixed.out) == (0, f"(no dentry changed)\nUpdated {name}\n")
    assert run("dtab", "get", name).out.startswith(f"# version {V3}\n")
    # ...also when the flag is the stale one: the flag is what is sent.
    current = write(tmp_path / "current.json", run("dtab", "get", name, "--json").out)
    flag_stale = run("dtab", "update", name, current, "--version", V1)
    assert "version mismatch" in flag_stale.one_error_line
    assert "sent version AAAAAAAAAAE= from --version" in flag_stale.err

    # Text with a matching / stale --version; without one, the version just read.
    text = write(tmp_path / "b.dtab", "/svc => /b")
    changed = run("dtab", "update", name, text, "--version", V3)
    assert (changed.code, changed.out) == (0, f"- /svc => /a\n+ /svc => /b\nUpdated {name}\n")
    assert "version mismatch" in run("dtab", "update", name, text, "--version", V3).one_error_line
    assert run("dtab", "update", name, text).code == 0
    assert run("dtab", "get", name, "--pretty=false").out == "/svc=>/b;\n"

    # A missing dtab is created only with --create (namerd's PUT would upsert it).
    fresh = ns()
    created = run("dtab", "up", fresh, text, "--create")
    assert created.out == f"+ /svc => /b\nCreated {fresh}\n"
    missing = ns()
    assert run("dtab", "update", missing, text, "--version", V1).one_error_line.startswith(
        f"namerctl: namespace '{missing}' does not exist; namespaces: "
    )


def test_update_help_documents_the_version_precedence(ctl: Run) -> None:
    helped = ctl("dtab", "update", "--help")
    assert helped.code == 0
    assert "namerctl#21" in helped.out
    assert "--version ETAG" in helped.out
    assert "wins over a version in the JSON file" in " ".join(helped.out.split())


# -- delete ---------------------------------------------------------------------------------------


def test_delete_aliases_and_404(run: Run) -> None:
    names = [ns(), ns(), ns()]
    for name in names:
        assert run("dtab", "create", name, write_stdin_free(name)).code == 0
    for verb, name in zip(("delete", "del", "rm"), names, strict=True):
        deleted = run("dtab", verb, name)
        assert (deleted.code, deleted.out, deleted.err) == (0, f"Deleted {name}\n", "")
        gone = f"namerctl: resource was not found by ID or name: {name}"
        assert run("dtab", "get", name).one_error_line == gone
        assert run("dtab", verb, name).one_error_line == gone
    assert not set(names) & set(run("dtab", "list").out.split())


# -- delegate -------------------------------------------------------------------------------------


DELEGATE_PAY = """\
/svc/pay  (alt: the first branch that is not ~ wins)
├─ /svc/pay=>/svc/nope | /svc/users  →  /svc/nope
│  └─ /svc=>/#/io.l5d.fs  →  /#/io.l5d.fs/nope  (neg: nothing here, falls back)
├─ /svc/pay=>/svc/nope | /svc/users  →  /svc/users  (alt: the first branch that is not ~ wins)  ← used
│  ├─ /svc/users=>0.90*/#/io.l5d.fs/users & 0.10*/#/io.l5d.fs/users-v2  →  /svc/users  (union: split by weight)  ← used
│  │  ├─ 0.90 (90%)  /#/io.l5d.fs/users
│  │  │  └─ bound /#/io.l5d.fs/users  [127.0.0.1:8081, 127.0.0.1:8082 w=0.5]
│  │  └─ 0.10 (10%)  /#/io.l5d.fs/users-v2
│  │     └─ bound /#/io.l5d.fs/users-v2  [127.0.0.1:9000]
│  └─ /svc=>/#/io.l5d.fs  →  /#/io.l5d.fs/users
│     └─ bound /#/io.l5d.fs/users  [127.0.0.1:8081, 127.0.0.1:8082 w=0.5]
└─ /svc=>/#/io.l5d.fs  →  /#/io.l5d.fs/pay  (neg: nothing here, falls back)
"""  # noqa: E501


def test_delegate_tree_alt_union_and_leaves(run: Run, routes: str) -> None:
    got = run("delegate", routes, "/svc/pay")
    assert (got.code, got.out, got.err) == (0, DELEGATE_PAY, "")

    plain = run("delegate", routes, "/svc/zzz").out
    assert plain == (
        "/svc/zzz\n└─ /svc=>/#/io.l5d.fs  →  /#/io.l5d.fs/zzz  (neg: nothing here, falls back)\n"
    )

    residual = run("delegate", routes, "/svc/res").out.splitlines()
    assert residual[1] == (
        "├─ /svc/res=>/#/io.l5d.fs/users/extra/bits  →  /#/io.l5d.fs/users/extra/bits  ← used"
    )
    assert residual[2] == (
        "│  └─ bound /#/io.l5d.fs/users  residual /extra/bits  "
        "[127.0.0.1:8081, 127.0.0.1:8082 w=0.5]"
    )


def test_delegate_neg_fail_empty_and_exceptions(run: Run, routes: str) -> None:
    bad = run("delegate", routes, "/svc/bad").out.splitlines()
    assert bad[1] == "├─ /svc/bad=>!  →  !  (fail: the lookup stops here)  ← used"
    neg = run("delegate", routes, "/svc/neg").out.splitlines()
    assert neg[1] == "├─ /svc/neg=>~  →  ~  (neg: nothing here, falls back)"
    assert "used" not in "".join(neg)  # every branch is ~: none is used
    empty = run("delegate", routes, "/svc/empty").out.splitlines()
    assert empty[1] == "├─ /svc/empty=>$  →  /svc/empty  (empty: exists, no endpoints)  ← used"

    # A dtab loop: namerd explains ~100 levels, ending in an exception node.
    loop = run("delegate", routes, "/svc/loop")
    assert (loop.code, loop.err) == (0, "")
    errors = [line for line in loop.out.splitlines() if "✗ error:" in line]
    assert len(errors) == 1
    assert (
        "/svc/loop2  ✗ error: Max recursion level: 100 reached in Namer lookup (while resolving "
        "/svc/loop; check the dtab for a rule that loops)"
    ) in errors[0]


def test_delegate_with_extra_dtab_and_json(run: Run, routes: str) -> None:
    got = run("delegate", routes, "/svc/users", "--dtab", "/svc/users=>/$/inet/127.0.0.1/7777")
    lines = got.out.splitlines()
    assert lines[0] == "/svc/users  (alt: the first branch that is not ~ wins)"
    # The --dtab rule has priority, so it is the first branch, and the one used.
    assert lines[1] == ("├─ /svc/users=>/$/inet/127.0.0.1/7777  →  /$/inet/127.0.0.1/7777  ← used")
    assert lines[2] == "│  └─ bound /$/inet/127.0.0.1/7777  [127.0.0.1:7777]"

    raw = run("delegate", routes, "/svc/zzz", "--json")
    assert raw.code == 0
    assert json.loads(raw.out) == {
        "type": "delegate",
        "path": "/svc/zzz",
        "delegate": {
            "type": "neg",
            "path": "/#/io.l5d.fs/zzz",
            "dentry": {"prefix": "/svc", "dst": "/#/io.l5d.fs"},
        },
    }


# -- bind / resolve -------------------------------------------------------------------------------


def test_bind_human_and_json(run: Run, routes: str) -> None:
    users = run("bind", routes, "/svc/users")
    assert (users.code, users.err) == (0, "")
    assert users.out == (
        "union (split by weight)\n"
        "├─ 0.90 (90%)  /#/io.l5d.fs/users  [127.0.0.1:8081, 127.0.0.1:8082 w=0.5]\n"
        "└─ 0.10 (10%)  /#/io.l5d.fs/users-v2  [127.0.0.1:9000]\n"
    )
    assert run("bind", routes, "/svc/res").out == (
        "/#/io.l5d.fs/users  residual /extra/bits  [127.0.0.1:8081, 127.0.0.1:8082 w=0.5]\n"
    )
    assert run("bind", routes, "/svc/zzz").out == "~  (neg: the name does not resolve)\n"
    assert run("bind", routes, "/svc/bad").out == "!  (fail: the dtab says this name fails)\n"
    assert run("bind", routes, "/svc/empty").out == "$  (empty: exists, no endpoints)\n"
    extra = run("bind", routes, "/svc/zzz", "--dtab", "/svc/zzz=>/$/inet/127.0.0.1/7777")
    assert extra.out == "/$/inet/127.0.0.1/7777  [127.0.0.1:7777]\n"

    raw = json.loads(run("bind", routes, "/svc/res", "--json").out)
    assert raw["type"] == "leaf"
    assert (raw["bound"]["id"], raw["bound"]["path"]) == ("/#/io.l5d.fs/users", "/extra/bits")

    # namerd's own errors come through as one line (a dtab loop is a 502 from bind).
    loop = run("bind", routes, "/svc/loop")
    assert loop.one_error_line.startswith(
        "namerctl: namerd failed (502 Bad Gateway): Binding /svc/loop in namespace"
    )


def test_resolve_addresses_and_errors(run: Run, routes: str) -> None:
    users = run("resolve", routes, "/svc/users")
    assert (users.code, users.err) == (0, "")
    assert users.out == "127.0.0.1:8081 w=0.9\n127.0.0.1:8082 w=0.45\n127.0.0.1:9000 w=0.1\n"
    assert run("resolve", routes, "/svc/res").out == "127.0.0.1:8081\n127.0.0.1:8082 w=0.5\n"
    raw = run("resolve", routes, "/svc/res", "--json")
    assert json.loads(raw.out)["addrs"][0] == {"ip": "127.0.0.1", "port": 8081, "meta": {}}

    missing = run("resolve", routes, "/svc/zzz")
    assert missing.one_error_line == (
        f"namerctl: /svc/zzz in namespace {routes} does not resolve to any address (neg); "
        f"see why with: namerctl delegate {routes} /svc/zzz"
    )
    assert missing.out == ""


def test_lookup_arguments_are_checked_and_namerd_400_is_reported(run: Run, routes: str) -> None:
    path = run("bind", routes, "svc")
    assert path.code == 2
    assert path.one_error_line == (
        "namerctl: invalid PATH 'svc': '/' expected but 's' found (line 1, column 1, offset 0)"
    )
    dtab = run("resolve", routes, "/svc", "--dtab", "/a=>")
    assert dtab.code == 2
    assert "invalid --dtab: simple expected" in dtab.one_error_line
    bad_ns = run("delegate", "bad ns", "/svc")
    assert bad_ns.one_error_line.startswith(
        "namerctl: namerd refused the request (400 Bad Request): invalid namespace 'bad ns'"
    )


# -- auth and body limit --------------------------------------------------------------------------


def test_token_required_for_writes(
    ctl: Run, nd_token: Namerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ("--base-url", nd_token.api)
    name = ns()
    dtab = write(tmp_path / "d.dtab", "/svc => /#/io.l5d.fs")

    refused = ctl(*base, "dtab", "create", name, dtab)
    assert refused.one_error_line == (
        "namerctl: namerd refused the request (401 Unauthorized): This namerd requires a token "
        "for writes: send 'Authorization: Bearer <token>'. — pass --token or set NAMERCTL_TOKEN"
    )
    wrong = ctl(*base, "--token", "nope", "dtab", "create", name, dtab)
    assert wrong.one_error_line.endswith("— the token sent was not accepted")
    # Reads need no token.
    assert name not in ctl(*base, "dtab", "list").out.split()

    assert ctl(*base, "--token", TOKEN, "dtab", "create", name, dtab).out == f"Created {name}\n"
    # Global options work after the command too, and the token may come from the environment.
    assert ctl("dtab", "up", name, dtab, *base, "--token", TOKEN).code == 0
    monkeypatch.setenv("NAMERCTL_TOKEN", TOKEN)
    assert ctl(*base, "dtab", "update", name, dtab).out.endswith(f"\nUpdated {name}\n")
    assert ctl(*base, "dtab", "rm", name).out == f"Deleted {name}\n"

    # Too big a body: namerd's 413 and its message.
    big = write(tmp_path / "big.dtab", "".join(f"/s{i} => /d{i};\n" for i in range(100)))
    too_big = ctl(*base, "dtab", "create", ns(), big)
    assert too_big.one_error_line.startswith(
        "namerctl: namerd refused the request (413 Content Too Large): Request body is"
    ) or too_big.one_error_line.startswith(
        "namerctl: namerd refused the request (413 Request Entity Too Large): Request body is"
    )
    assert f"limit is {BODY_LIMIT}" in too_big.err


# -- reaching namerd ------------------------------------------------------------------------------


def test_connection_refused(ctl: Run) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    got = ctl("--base-url", url, "dtab", "list")
    line = got.one_error_line
    assert got.code == 1
    assert line.startswith(f"namerctl: cannot reach namerd at {url}: ")
    assert "Connection refused" in line
    assert line.endswith("— is it running? set --base-url or NAMERCTL_BASE_URL")


@pytest.mark.parametrize(
    "url", ["foo", "localhost:4180", "ftp://namerd:4180", "http://", "http:///x"]
)
def test_bad_base_url(ctl: Run, url: str) -> None:
    got = ctl("--base-url", url, "dtab", "list")
    assert got.code == 2
    assert got.one_error_line == (
        f"namerctl: invalid base URL {url!r} from --base-url: it must have a scheme and host, "
        "e.g. http://namerd:4180"
    )


def test_bad_base_url_from_environment(ctl: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAMERCTL_BASE_URL", "namerd:4180")
    got = ctl("dtab", "list")
    assert got.code == 2
    assert "invalid base URL 'namerd:4180' from NAMERCTL_BASE_URL" in got.one_error_line


def test_admin_port_is_not_mistaken_for_the_api(ctl: Run, nd: Namerd, tmp_path: Path) -> None:
    # namerctl#28: namerctl pointed at the admin port reported "Created".
    got = ctl("--base-url", nd.admin, "dtab", "create", ns(), write(tmp_path / "d", "/a=>/b"))
    assert "not its admin port" in got.one_error_line


# -- settings -------------------------------------------------------------------------------------


def test_config_file_search_and_precedence(
    ctl: Run, nd: Namerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    deep = project / "a" / "b"
    deep.mkdir(parents=True)
    (project / ".namerctl.yaml").write_text(f"base-url: {nd.api}\n")
    monkeypatch.chdir(deep)
    assert ctl("dtab", "list").code == 0  # found two directories up

    refused = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NAMERCTL_BASE_URL", refused)  # the environment beats the file
    assert f"cannot reach namerd at {refused}" in ctl("dtab", "list").one_error_line
    assert ctl("--base-url", nd.api, "dtab", "list").code == 0  # the flag beats both
    monkeypatch.delenv("NAMERCTL_BASE_URL")

    # --config FILE (JSON) instead of the search.
    as_json = write(tmp_path / "ctl.json", json.dumps({"base-url": refused, "timeout-s": 3}))
    assert f"at {refused}" in ctl("--config", as_json, "dtab", "list").one_error_line

    bad_key = write(tmp_path / "bad.yaml", "base_url: http://x\n")
    got = ctl("--config", bad_key, "dtab", "list")
    assert got.code == 2
    assert "unknown key 'base_url' (known: base-url, token, timeout-s)" in got.one_error_line
    nowhere = ctl("--config", str(tmp_path / "nope.yaml"), "dtab", "list")
    assert nowhere.code == 2
    assert "does not exist" in nowhere.one_error_line
    broken = write(tmp_path / "broken.yaml", "base-url: [\n")
    assert "is not valid YAML" in ctl("--config", broken, "dtab", "list").one_error_line


def test_bad_arguments_are_one_line(ctl: Run) -> None:
    cases = {
        ("dtab", "get"): "namerctl: dtab get: the following arguments are required: NAME "
        "(see 'namerctl dtab get --help')",
        ("dtab", "frob"): "namerctl: dtab: argument COMMAND: invalid choice: 'frob'",
        ("frob",): "namerctl: argument COMMAND: invalid choice: 'frob'",
        ("dtab", "get", "x", "--pretty=maybe"): "namerctl: dtab get: argument --pretty: "
        "expected true or false, got 'maybe'",
        ("--timeout-s", "0", "dtab", "list"): "namerctl: argument --timeout-s: expected a number",
        ("dtab", "create", "x", ""): "namerctl: empty dtab path",
    }
    for argv, start in cases.items():
        got = ctl(*argv)
        assert got.code == 2, argv
        assert got.one_error_line.startswith(start), (argv, got.err)
    # Bare namerctl: nothing to do is a usage error (usage on stderr, exit 2); --help is not.
    bare = ctl()
    assert bare.code == 2
    assert bare.out == ""
    assert bare.err.startswith("usage: namerctl")
    helped = ctl("--help")
    assert helped.code == 0
    assert "namerctl manages namerd's delegation tables" in helped.out


def test_bad_files_are_one_line(run: Run, tmp_path: Path) -> None:
    name = ns()
    cases = {
        str(tmp_path / "missing.dtab"): "cannot read {f}: No such file or directory",
        str(tmp_path): "cannot read {f}: Is a directory",
        write(tmp_path / "t.dtab", "/a => /b;\n/c => /d |\n"): "{f}: invalid dtab: simple "
        "expected but end of input found (line 3, column 1, offset 21)",
        write(tmp_path / "j.json", '{"dtab": ['): "{f}: not valid JSON: ",
        write(tmp_path / "k.json", '{"dtabs": []}'): '{f}: a JSON dtab must be {{"version"',
        write(tmp_path / "n.json", '[{"prefix": "/a"}]'): "{f}: invalid dtab: $[0].dst: "
        "expected a string",
        write(tmp_path / "v.json", '{"version": 1, "dtab": []}'): "{f}: $.version must be a string",
    }
    for path, start in cases.items():
        got = run("dtab", "create", name, path)
        assert got.code == 1, path
        assert got.one_error_line.startswith("namerctl: " + start.format(f=path)), got.err
    (tmp_path / "latin1.dtab").write_bytes(b"/caf\xe9 => /b")
    assert "is not UTF-8 text" in run("dtab", "create", name, str(tmp_path / "latin1.dtab")).err
    assert name not in run("dtab", "list").out.split()  # nothing was sent


# -- as a real process ----------------------------------------------------------------------------


def test_python_dash_m_subprocess(nd: Namerd, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NAMERCTL_")} | {
        "NAMERCTL_BASE_URL": nd.api
    }
    name = ns()

    def namerctl(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "namerd.ctl", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=30,
            check=False,
        )

    created = namerctl("dtab", "create", name, "-", stdin="/svc => /#/io.l5d.fs;\n/a/bc => /d;")
    assert (created.returncode, created.stdout, created.stderr) == (0, f"Created {name}\n", "")
    got = namerctl("dtab", "get", name)
    assert got.stdout == f"# version {V1}\n/svc   => /#/io.l5d.fs ;\n/a/bc  => /d ;\n"

    missing = namerctl("dtab", "get", ns() + "x")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr.startswith("namerctl: resource was not found by ID or name: ")
    assert missing.stderr.count("\n") == 1

    refused = namerctl("--base-url", f"http://127.0.0.1:{free_port()}", "delegate", name, "/svc")
    assert refused.returncode == 1
    assert "cannot reach namerd" in refused.stderr
    assert "Traceback" not in refused.stderr
