"""The commands' habits, as a user meets them: real subprocesses, real sockets, real files.

``--version`` on linker, namerd and namerctl; ``--log-level`` reaching the workers (and a bad
level refused in one line); bare ``namerctl`` a usage error; the access log written by two
linker workers under parallel requests, every line whole and matching what the client got.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from .linker_proc import backend, running_linker
from .namerd_proc import running_namerd

COMMANDS = {"linker": "linker.main", "namerd": "namerd.main", "namerctl": "namerd.ctl"}
RUN_TIMEOUT_S = 60.0


def run(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def service_a(tmp: Path) -> Iterator[str]:
    """A backend named ``a`` in an fs namer's directory; yields the linker's ``namers:`` YAML."""
    with backend("a") as a:
        disco = tmp / "disco"
        disco.mkdir()
        (disco / "a").write_text(f"127.0.0.1 {a.port}\n")
        yield f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"


@pytest.mark.parametrize("prog", sorted(COMMANDS))
def test_version_prints_the_installed_distribution_version(prog: str) -> None:
    result = run(COMMANDS[prog], "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{prog} {importlib.metadata.version('l5py')}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("prog", ["linker", "namerd"])
def test_a_bad_log_level_is_one_usage_line(prog: str) -> None:
    result = run(COMMANDS[prog], "--log-level", "chatty", "--validate")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: argument --log-level: expected one of debug, info")
    assert "'chatty'" in lines[0]


def test_bare_namerctl_is_a_usage_error() -> None:
    result = run("namerd.ctl")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: namerctl")
    assert "a command is required" in result.stderr


def test_debug_level_reaches_the_linker_workers(tmp_path: Path) -> None:
    with service_a(tmp_path) as top:
        router = "  dtab: /svc => /#/io.l5d.fs;\n"
        with running_linker(
            tmp_path, router, workers=2, top=top, args=("--log-level", "DEBUG")
        ) as lk:
            pids = set(lk.worker_pids())
            log = lk.log()
    # Each worker logs at debug once it serves; the master's pid is not among them.
    served = {int(m) for m in re.findall(r"DEBUG worker \d+ \(pid (\d+)\) serving", log)}
    assert served == pids, log


@pytest.mark.redis
def test_debug_level_reaches_the_namerd_workers(tmp_path: Path) -> None:
    with running_namerd(tmp_path, workers=2, args=("--log-level", "debug")) as nd:
        log = nd.log()
    assert len(re.findall(r"namerd DEBUG worker pid \d+ serving", log)) == 2, log


# -- the access log ---------------------------------------------------------------------------

#: Linkerd's line: host - - [dd/Mon/yyyy:HH:MM:SS +0000] "METHOD TARGET HTTP/V" status bytes
#: "referer" "user-agent" (see linker.http.accesslog).
LINE = re.compile(
    r"^(?P<host>\S+) - - \[(?P<time>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/(?P<version>1\.[01])" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>(?:[^"\\]|\\.)*)" '
    r'"(?P<agent>(?:[^"\\]|\\.)*)"$'
)
REQUESTS = 400
PARALLEL = 16


def _append_offset(pid: int, path: Path) -> int | None:
    """Where process ``pid``'s descriptor of ``path`` stands (None: not open). With O_APPEND
    the offset moves to the end of the file at each write, so > 0 means it wrote."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        if os.path.realpath(fd) == str(path):
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
            return int(re.search(r"^pos:\s*(\d+)", info, re.M).group(1))  # type: ignore[union-attr]
    return None


def test_access_log_lines_from_two_workers_are_whole_and_match(tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    with service_a(tmp_path) as top:
        # A 1 KiB buffer: the workers write many batches while the requests run.
        router = (
            "  dtab: /svc => /#/io.l5d.fs;\n"
            "  httpAccessLog: access.log\n"
            "  httpAccessLogBufferKB: 1\n"
            "  httpAccessLogFlushIntervalMs: 20\n"
        )
        with running_linker(tmp_path, router, workers=2, top=top) as lk:
            pids = lk.worker_pids()
            assert len(pids) == 2
            for pid in pids:
                assert _append_offset(pid, access) == 0, f"worker {pid} has not opened {access}"

            def one(i: int) -> tuple[str, str, int, int]:
                host = "a" if i % 10 else "nosuch"  # every tenth has no service: an error
                path = f"/item/{i}?q=" + "x" * (i % 50)
                # A new connection each time, so both workers' accept loops take some.
                with httpx.Client(timeout=30) as client:
                    r = client.post(
                        lk.url + path,
                        content=b"y" * i,
                        headers={"Host": host, "User-Agent": f'agent "{i}"', "Connection": "close"},
                    )
                return ("POST", path, r.status_code, len(r.content))

            with ThreadPoolExecutor(PARALLEL) as pool:
                sent = sorted(pool.map(one, range(REQUESTS)))
            assert {s[2] for s in sent} >= {200}, sent[:5]
            deadline = time.monotonic() + 30
            while access.read_text().count("\n") < REQUESTS:
                assert time.monotonic() < deadline, "the workers did not flush their lines"
                time.sleep(0.02)
            # Both workers wrote some of the lines (each one's append offset moved).
            assert all(_append_offset(pid, access) for pid in pids)
        # Stopped: every worker flushed on its way out.
    text = access.read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == REQUESTS
    got = []
    for line in lines:
        m = LINE.match(line)
        assert m is not None, f"malformed access log line: {line!r}"
        assert m["host"] == "127.0.0.1"
        assert m["referer"] == "-"
        i = int(m["target"].split("/")[2].split("?")[0])
        assert m["agent"] == f'agent \\"{i}\\"'
        got.append((m["method"], m["target"], int(m["status"]), int(m["bytes"])))
    assert sorted(got) == sent
    assert {status for _, _, status, _ in got} > {200}  # the errors are logged too


def test_access_log_is_reopened_by_the_workers_a_sighup_starts(tmp_path: Path) -> None:
    """logrotate without copytruncate: rename the file, SIGHUP, the new workers write anew."""
    access = tmp_path / "access.log"
    with service_a(tmp_path) as top:
        router = "  dtab: /svc => /#/io.l5d.fs;\n  httpAccessLog: access.log\n"
        with running_linker(tmp_path, router, workers=1, top=top) as lk:
            assert httpx.get(lk.url + "/before", headers={"Host": "a"}).status_code == 200
            old_pids = set(lk.worker_pids())
            access.rename(tmp_path / "access.log.1")
            lk.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            # Until the old generation has drained and exited, both generations accept (the
            # reload loses no request), and an old worker still writes to the renamed file.
            while set(lk.worker_pids()) & old_pids or not access.exists():
                assert time.monotonic() < deadline, lk.log()
                time.sleep(0.05)
            lk.wait_ready()
            assert httpx.get(lk.url + "/after", headers={"Host": "a"}).status_code == 200
    assert '"GET /before HTTP/1.1" 200' in (tmp_path / "access.log.1").read_text()
    assert '"GET /after HTTP/1.1" 200' in access.read_text()
