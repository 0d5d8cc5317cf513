"""Command-line habits the three commands (``linker``, ``namerd``, ``namerctl``) share.

* ``--version`` prints ``<prog> <version>``: the version of the installed distribution
  (:data:`DISTRIBUTION`, ``importlib.metadata``); run from a source tree that was never installed,
  the ``version`` of the ``pyproject.toml`` next to the packages, marked ``(source)``; else
  ``unknown``. It never fails: a version is a diagnostic, not a reason to exit non-zero.
* ``--log-level LEVEL`` takes one of :data:`LOG_LEVELS`, case-insensitively; anything else is
  a usage error.
* :class:`OneLineParser` reports every usage error as one line on stderr (``prog: ...; see
  'prog --help'``) and exits 2, like every other failure of these commands.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import tomllib
from pathlib import Path
from typing import NoReturn

__all__ = [
    "DISTRIBUTION",
    "LOG_LEVELS",
    "OneLineParser",
    "add_cli_habits",
    "log_level",
    "version",
]

#: The distribution name in pyproject.toml (``[project] name``).
DISTRIBUTION = "l5py"
#: The accepted ``--log-level`` values, most verbose first.
LOG_LEVELS = ("debug", "info", "warning", "error")


def version() -> str:
    """The installed distribution's version, or the source tree's (see the module docstring)."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return "unknown"
    if project.get("name") != DISTRIBUTION or not isinstance(project.get("version"), str):
        return "unknown"
    return f"{project['version']} (source)"


def log_level(text: str) -> int:
    """argparse ``type=`` for ``--log-level``: the ``logging`` level of ``text``."""
    lowered = text.strip().lower()
    if lowered not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return int(getattr(logging, lowered.upper()))


def add_cli_habits(
    parser: argparse.ArgumentParser, *, log_levels: bool = True, default_level: str = "info"
) -> None:
    """Add ``--version`` and, unless ``log_levels`` is False, ``--log-level`` (its value: a
    ``logging`` level; ``default_level`` when not given, checked the same way)."""
    parser.add_argument("--version", action="version", version=f"{parser.prog} {version()}")
    if log_levels:
        parser.add_argument(
            "--log-level",
            type=log_level,
            default=default_level,
            metavar="LEVEL",
            help=f"log verbosity: {', '.join(LOG_LEVELS)} (default {default_level}; "
            "case-insensitive)",
        )


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(2)
