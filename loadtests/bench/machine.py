"""What the benchmark ran on: CPU, cores, memory, kernel, and the versions that matter."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["describe_machine"]


def _first(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.M)
    return m.group(1).strip() if m else None


def _run(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout + out.stderr).strip()
    return ""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict[str, object]:
    """A JSON-able description of this machine and the software under test."""
    cpuinfo = ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
    meminfo = ""
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text()
    mem_kib = _first(r"^MemTotal:\s*(\d+)", meminfo)
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    wrk = shutil.which("wrk")
    commit = _run(
        ["git", "-C", str(Path(__file__).resolve().parents[2]), "rev-parse", "--short", "HEAD"]
    )
    dirty = _run(["git", "-C", str(Path(__file__).resolve().parents[2]), "status", "--porcelain"])
    return {
        "cpu_model": _first(r"^model name\s*:\s*(.+)$", cpuinfo) or platform.processor() or "?",
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(int(mem_kib) / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _first(r'^PRETTY_NAME="?([^"\n]+)', _read("/etc/os-release")) or platform.system(),
        "python": platform.python_version(),
        "trio": _version("trio"),
        "h11": _version("h11"),
        "nginx": _run([nginx, "-v"]).replace("nginx version: ", "") if nginx else None,
        "wrk": _first(r"^(wrk \S+)", _run([wrk, "--version"])) if wrk else None,
        "commit": (commit + ("+uncommitted" if dirty else "")) if commit else None,
        "load_average": _read("/proc/loadavg").split()[:3],
    }


def _read(path: str) -> str:
    with contextlib.suppress(OSError):
        return Path(path).read_text()
    return ""
