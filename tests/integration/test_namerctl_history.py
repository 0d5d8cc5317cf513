"""namerctl's guarded writes, history, rollback and dry run, against a real namerd (issue 12).

One namerd with ONE worker, so that a watch stream and the dry run that must see it land in the
same process (which streams are open is known per worker; see ``namerd.http.history``).
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import test_namerctl
from .namerd_proc import Namerd, running_namerd
from .test_namerctl import V1, V2, V3, Run, ns, write

# The fixtures of namerctl's own tests: namerctl in-process (ctl), no NAMERCTL_* or config file
# from the caller (isolated, autouse).
ctl = test_namerctl.ctl
isolated = test_namerctl.isolated

pytestmark = pytest.mark.redis

TOKEN = "s3cret"
#: Upper bound of a wait for namerd to notice a closed stream; only bounds a broken test.
WAIT_S = 10.0


@pytest.fixture(scope="module")
def nd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namerd]:
    disco = tmp_path_factory.mktemp("hist-disco")
    (disco / "users").write_text("127.0.0.1 8081\n")
    (disco / "users-v2").write_text("127.0.0.1 9000\n")
    config = f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
    with running_namerd(
        tmp_path_factory.mktemp("hist-namerd"), extra_config=config, workers=1
    ) as n:
        yield n


@pytest.fixture
def run(ctl: Run, nd: Namerd) -> Run:
    return lambda *argv: ctl("--base-url", nd.api, *argv)


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def version_of(nd: Namerd, name: str) -> str | None:
    resp = httpx.head(f"{nd.api}/api/1/dtabs/{name}")
    return resp.headers.get("etag") if resp.status_code == 200 else None


# -- guards ---------------------------------------------------------------------------------------


EMPTY_REFUSED = (
    "namerctl: {src} has no dentries: an empty dtab routes nothing, so every request for this "
    "namespace would fail; nothing was sent. Pass --allow-empty if that is what you want"
)


def test_an_empty_dtab_is_refused_unless_allowed(
    run: Run, nd: Namerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = ns()
    assert run("dtab", "create", name, write(tmp_path / "d", "/svc => /#/io.l5d.fs")).code == 0
    for text in ("", "  \n# only a comment\n", "[]"):
        stdin(monkeypatch, text)
        got = run("dtab", "update", name, "-")
        assert (got.code, got.out) == (1, "")
        assert got.one_error_line == EMPTY_REFUSED.format(src="stdin"), text
    stdin(monkeypatch, "")
    new = ns()
    assert run("dtab", "create", new, "-").one_error_line == EMPTY_REFUSED.format(src="stdin")
    assert version_of(nd, name) == V1  # nothing was written...
    assert version_of(nd, new) is None  # ...or created

    stdin(monkeypatch, "")
    allowed = run("dtab", "update", name, "-", "--allow-empty")
    assert (allowed.code, allowed.out) == (0, f"- /svc => /#/io.l5d.fs\nUpdated {name}\n")
    stdin(monkeypatch, "")
    assert run("dtab", "create", new, "-", "--allow-empty").out == f"Created {new}\n"


def test_the_issue_command_as_a_process(nd: Namerd, tmp_path: Path) -> None:
    """``namerctl dtab update default - < /dev/null`` printed "Updated default" and exited 0."""
    name = ns()
    httpx.post(f"{nd.api}/api/1/dtabs/{name}", content="/svc=>/#/io.l5d.fs",
               headers={"Content-Type": "application/dtab"})  # fmt: skip
    with open("/dev/null", "rb") as devnull:
        done = subprocess.run(
            [sys.executable, "-m", "namerd.ctl", "--base-url", nd.api, "dtab", "update", name, "-"],
            stdin=devnull,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == EMPTY_REFUSED.format(src="stdin") + "\n"
    assert version_of(nd, name) == V1


def test_update_of_a_missing_namespace_is_refused_unless_create(
    run: Run, nd: Namerd, tmp_path: Path
) -> None:
    existing = ns()
    assert run("dtab", "create", existing, write(tmp_path / "a", "/a => /b")).code == 0
    typo = ns()
    text = write(tmp_path / "d", "/svc => /#/io.l5d.fs/users")
    refused = run("dtab", "update", typo, text)
    line = refused.one_error_line
    assert refused.code == 1
    assert line.startswith(f"namerctl: namespace '{typo}' does not exist; namespaces: ")
    assert existing in line
    assert line.endswith(
        f"; nothing was sent. Create it with: namerctl dtab create {typo} FILE (or pass --create)"
    )
    assert version_of(nd, typo) is None

    created = run("dtab", "update", typo, text, "--create")
    assert (created.code, created.out) == (0, f"+ /svc => /#/io.l5d.fs/users\nCreated {typo}\n")
    assert version_of(nd, typo) == V1


def test_update_prints_the_change_and_fails_on_a_concurrent_write(
    run: Run, nd: Namerd, tmp_path: Path
) -> None:
    name = ns()
    run("dtab", "create", name, write(tmp_path / "a", "/a => /b;\n/svc => /#/io.l5d.fs"))
    got = run("dtab", "update", name, write(tmp_path / "b", "/a=>/c;/svc=>/#/io.l5d.fs;/x=>/y"))
    assert (got.code, got.out) == (0, f"- /a => /b\n+ /a => /c\n+ /x => /y\nUpdated {name}\n")
    # An explicit stale version: refused, and the message says where it came from.
    stale = run("dtab", "update", name, write(tmp_path / "c", "/a=>/d"), "--version", V1)
    assert "version mismatch" in stale.one_error_line
    assert "(sent version AAAAAAAAAAE= from --version)" in stale.err
    assert version_of(nd, name) == V2


# -- history and rollback -------------------------------------------------------------------------


def test_history_and_rollback(run: Run, nd: Namerd, tmp_path: Path) -> None:
    name = ns()
    run("dtab", "create", name, write(tmp_path / "1", "/svc => /#/io.l5d.fs/users"))
    run("dtab", "update", name, write(tmp_path / "2", "/svc => /#/io.l5d.fs/users-v2"))
    run("dtab", "update", name, write(tmp_path / "3", "/svc => /#/io.l5d.fs/users-v2;/x=>/y"))

    history = run("dtab", "history", name)
    assert history.code == 0
    lines = history.out.splitlines()
    assert lines[0].split() == ["VERSION", "WHEN", "(UTC)", "OP", "WHO", "CLIENT", "DENTRIES"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
        ("3", "update", "-", "127.0.0.1", "2"),
        ("2", "update", "-", "127.0.0.1", "1"),
        ("1", "create", "-", "127.0.0.1", "1"),
    ]
    as_json = json.loads(run("dtab", "log", name, "--json", "--limit", "2").out)
    assert [(e["version"], e["etag"]) for e in as_json] == [(3, V3), (2, V2)]
    with_diff = run("dtab", "history", name, "--diff").out.splitlines()
    assert with_diff[1].startswith("3 ")
    assert with_diff[2:3] == ["    + /x => /y"]
    assert with_diff[4:6] == [
        "    - /svc => /#/io.l5d.fs/users",
        "    + /svc => /#/io.l5d.fs/users-v2",
    ]
    assert with_diff[7:] == ["    + /svc => /#/io.l5d.fs/users"]

    back = run("dtab", "rollback", name, "1")
    assert (back.code, back.err) == (0, "")
    assert back.out == (
        "- /svc => /#/io.l5d.fs/users-v2\n- /x => /y\n+ /svc => /#/io.l5d.fs/users\n"
        f"Rolled back {name} to the dtab of version 1\n"
    )
    assert run("dtab", "get", name, "--pretty=false").out == "/svc=>/#/io.l5d.fs/users;\n"
    newest = json.loads(run("dtab", "history", name, "--json", "--limit", "1").out)[0]
    assert (newest["version"], newest["op"]) == (4, "update")  # rollback = an If-Match write

    # Rolling back to what is already there writes nothing; an ETag works as the VERSION.
    same = run("dtab", "rollback", name, V1)
    assert same.out == f"{name} already has the dtab of version 1; nothing was written\n"
    assert version_of(nd, name) == "AAAAAAAAAAQ="

    unknown = run("dtab", "rollback", name, "99")
    assert unknown.one_error_line == (
        f"namerctl: version 99 of {name} is not in its history (it keeps versions 1 to 4); "
        f"see: namerctl dtab history {name}"
    )
    bad = run("dtab", "rollback", name, "yesterday")
    assert bad.code == 2
    assert "invalid VERSION 'yesterday'" in bad.one_error_line


def test_rollback_conflict_writes_nothing(run: Run, nd: Namerd, tmp_path: Path) -> None:
    name = ns()
    run("dtab", "create", name, write(tmp_path / "1", "/a => /one"))
    run("dtab", "update", name, write(tmp_path / "2", "/a => /two"))
    # Someone else writes after the operator read version 2: the rollback must not win.
    httpx.put(f"{nd.api}/api/1/dtabs/{name}", content="/a=>/three",
              headers={"Content-Type": "application/dtab"})  # fmt: skip
    conflict = run("dtab", "rollback", name, "1", "--version", V2)
    assert conflict.code == 1
    assert conflict.one_error_line == (
        f"namerctl: conflict: {name} is no longer at version {V2} (someone changed it since it "
        f"was read); nothing was written. See namerctl dtab history {name}, then run the "
        "rollback again"
    )
    assert run("dtab", "get", name, "--pretty=false").out == "/a=>/three;\n"
    assert version_of(nd, name) == V3


def test_rollback_of_a_deleted_namespace_needs_create(run: Run, nd: Namerd, tmp_path: Path) -> None:
    name = ns()
    run("dtab", "create", name, write(tmp_path / "1", "/a => /one"))
    run("dtab", "delete", name)
    ops = [e["op"] for e in json.loads(run("dtab", "history", name, "--json").out)]
    assert ops == ["delete", "create"]
    refused = run("dtab", "rollback", name, "1")
    assert refused.one_error_line.startswith(f"namerctl: namespace '{name}' does not exist; ")
    assert refused.err.rstrip().endswith("Pass --create to re-create it at version 1")
    again = run("dtab", "rollback", name, "1", "--create")
    assert again.out == f"+ /a => /one\nCreated {name} with the dtab of version 1\n"
    assert version_of(nd, name) == V2  # versions are never reused

    never = ns()
    gone = run("dtab", "history", never)
    assert gone.one_error_line.startswith(f"namerctl: namespace '{never}' does not exist; ")
    assert gone.err.rstrip().endswith(" and it has no history")


@pytest.fixture(scope="module")
def nd_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namerd]:
    config = "storage:\n  historySize: 3\n"
    with running_namerd(
        tmp_path_factory.mktemp("hist-token"), extra_config=config, workers=1,
        env={"NAMERD_TOKEN": TOKEN},
    ) as n:  # fmt: skip
        yield n


def test_history_is_bounded_and_names_the_token(ctl: Run, nd_token: Namerd, tmp_path: Path) -> None:
    base = ("--base-url", nd_token.api, "--token", TOKEN)
    name = ns()
    assert ctl(*base, "dtab", "create", name, write(tmp_path / "0", "/a=>/v0")).code == 0
    for i in range(1, 6):
        assert ctl(*base, "dtab", "update", name, write(tmp_path / f"{i}", f"/a=>/v{i}")).code == 0
    entries = json.loads(ctl("--base-url", nd_token.api, "dtab", "history", name, "--json").out)
    assert [(e["version"], e["who"], e["dtab"]) for e in entries] == [
        (6, "token", "/a=>/v5"),
        (5, "token", "/a=>/v4"),
        (4, "token", "/a=>/v3"),
    ]
    # Rolled-off versions cannot be rolled back to, and the message says what is kept.
    gone = ctl(*base, "dtab", "rollback", name, "2")
    assert "it keeps versions 4 to 6" in gone.one_error_line


# -- dry run --------------------------------------------------------------------------------------


class Watcher:
    """A linker-like ``watch=1`` bind stream on a raw socket, open until closed."""

    def __init__(self, nd: Namerd, namespace: str, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", nd.api_port), timeout=WAIT_S)
        self.sock.sendall(
            f"GET /api/1/bind/{namespace}?path={path}&watch=1 HTTP/1.1\r\n"
            "Host: namerd\r\n\r\n".encode()
        )
        first = self.sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first

    def close(self) -> None:
        self.sock.close()


def test_diff_shows_names_in_use_and_paths(run: Run, nd: Namerd, tmp_path: Path) -> None:
    name = ns()
    run("dtab", "create", name, write(tmp_path / "1", "/svc => /#/io.l5d.fs"))
    proposed = write(tmp_path / "2", "/svc => /#/io.l5d.fs;\n/svc/users => /#/io.l5d.fs/users-v2")
    watcher = Watcher(nd, name, "/svc/users")
    try:
        got = run("dtab", "diff", name, proposed, "--path", "/svc/other")
        assert (got.code, got.err) == (0, "")
        assert got.out == (
            "dtab:\n"
            "+ /svc/users => /#/io.l5d.fs/users-v2\n"
            "names: 2 compared, 1 changed\n"
            "/svc/other  (unchanged)\n"
            "  now:\n"
            "    ~  (neg: the name does not resolve)\n"
            "/svc/users  (changed, in use)\n"
            "  before:\n"
            "    /#/io.l5d.fs/users  [127.0.0.1:8081]\n"
            "  after:\n"
            "    /#/io.l5d.fs/users-v2  [127.0.0.1:9000]\n"
        )
        raw = json.loads(run("dtab", "dry-run", name, proposed, "--json").out)
        assert [(n["path"], n["watched"], n["changed"]) for n in raw["names"]] == [
            ("/svc/users", True, True)
        ]
    finally:
        watcher.close()
    # The stream is gone: the worker stops counting the name (it notices the disconnect).
    deadline = time.monotonic() + WAIT_S
    while ", in use)" in run("dtab", "diff", name, proposed).out:
        assert time.monotonic() < deadline, "the closed stream is still counted"
        time.sleep(0.05)
    assert version_of(nd, name) == V1  # a dry run writes nothing

    nothing = run("dtab", "diff", name, proposed)
    assert nothing.out.splitlines()[-1] == (
        f"names: none in use in {name} on the namerd worker that answered; pass --path "
        "/svc/NAME to compare names"
    )
    missing = run("dtab", "diff", ns(), proposed)
    assert missing.out.splitlines()[0].endswith(" does not exist yet: compared with an empty dtab")
    bad = run("dtab", "diff", name, write(tmp_path / "3", "/svc => "))
    assert bad.code == 1
    assert "invalid dtab: simple expected but end of input found (line 1, column 9" in bad.err
    bad_path = run("dtab", "diff", name, proposed, "--path", "svc")
    assert bad_path.code == 2
    assert "invalid --path 'svc'" in bad_path.one_error_line


# -- lookups on a missing namespace ---------------------------------------------------------------


def test_lookups_name_a_missing_namespace(run: Run, tmp_path: Path) -> None:
    existing = ns()
    run("dtab", "create", existing, write(tmp_path / "1", "/svc => /#/io.l5d.fs"))
    for command in ("delegate", "bind", "resolve"):
        got = run(command, "reallymissing", "/svc/users")
        assert (got.code, got.out) == (1, ""), command
        line = got.one_error_line
        assert line.startswith("namerctl: namespace 'reallymissing' does not exist; namespaces: ")
        assert existing in line
    assert run("bind", existing, "/svc/users").code == 0
