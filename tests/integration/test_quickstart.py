"""The README's first command (``python -m linker.quickstart``), started and stopped for real.

It uses the README's fixed ports, so it is in the ``slow`` step (run on its own), not the
default suite, where another test could hold one of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

#: Upper bounds that only limit how long a broken test hangs.
START_WAIT_S = 90.0
STOP_WAIT_S = 30.0
#: How many Ctrl-C the impatient user sends, and how far apart.
SIGINTS = 200
SIGINT_GAP_S = 0.0005


def _running_under(path: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(path)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def test_repeated_ctrl_c_stops_everything_without_a_traceback(tmp_path: Path) -> None:
    work = tmp_path / "qs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "linker.quickstart", "--dir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + START_WAIT_S
    while not any("Ctrl-C stops everything" in line for line in lines):
        line = proc.stdout.readline()
        if not line:
            out = "".join(lines)
            if "ports are in use" in out:
                pytest.skip(f"the quickstart's fixed ports are busy here: {out.strip()}")
            pytest.fail(f"quickstart exited before it was up:\n{out}")
        lines.append(line)
        assert time.monotonic() < deadline, "".join(lines)
    assert _running_under(work), "the stack's processes should run under its directory"

    # An impatient user keeps pressing Ctrl-C: some land while the first is being handled
    # (in the "stopping" message, between killing process groups), none may escape as a
    # traceback or leave a child running.
    for _ in range(SIGINTS):
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(SIGINT_GAP_S)
    rest, _ = proc.communicate(timeout=STOP_WAIT_S)
    assert "Traceback" not in rest, rest
    assert "quickstart: stopping" in rest
    # 0, or killed by a Ctrl-C that arrived after the stop was done, as the interpreter exits.
    assert proc.returncode in (0, -signal.SIGINT), rest
    assert _running_under(work) == []
