"""namerctl's commands: ``dtab ...`` (``dtab``) and ``delegate``/``bind``/``resolve`` (``lookup``).

A command is ``cmd_*(client, args) -> exit status``: it talks to namerd through the Client,
prints its result on stdout with :func:`out`, and raises CtlError for anything that failed.
"""

from __future__ import annotations

import sys

__all__ = ["out"]


def out(line: str = "") -> None:
    """Print one line of a command's result on stdout."""
    print(line, file=sys.stdout)
