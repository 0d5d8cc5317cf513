"""namerctl's failures: each is one line on stderr and an exit status, never a traceback."""

from __future__ import annotations

__all__ = ["CtlError", "UsageError", "first_line", "os_reason"]


class CtlError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CtlError):
    """Bad arguments or settings (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped and cut at 400 characters."""
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 400 else line[:400] + "..."
    return ""


def os_reason(err: Exception) -> str:
    """An OSError's reason without its errno and file name (those are in our message)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)
