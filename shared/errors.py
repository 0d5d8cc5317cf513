"""The exception tree of the naming core.

Everything `shared` raises on purpose derives from :class:`SharedError`; callers translate it
once at their boundary (namerd into an HTTP 400/502, linker into ``l5d-err``).  Each class
carries ``status_hint``, the HTTP status a server should use if the error reaches a client
(the same idea as h11's ``error_status_hint``).
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "DelegationError",
    "DtabParseError",
    "MaxDepthExceeded",
    "NamerFailure",
    "SharedError",
    "UnknownNamer",
]


class SharedError(Exception):
    """Root of every error raised by the naming core."""

    status_hint: int = 400


class DtabParseError(SharedError, ValueError):
    """Text that is not a valid path, prefix, name tree, dentry or dtab.

    Attributes:
        text: the whole input that was being parsed.
        offset: index (in code points) into ``text`` where parsing stopped.
        expected: what the parser wanted at ``offset`` (e.g. ``"'/'"``, ``"label char"``).
        found: what it saw: ``"'c'"`` or ``"end of input"``.

    ``str(err)`` is Finagle's wording (``'/' expected but 'i' found at '[i]nvalid'``) because
    Linkerd users and scripts have seen that form for years; :meth:`render` adds a line/column
    and a caret under the offending character for humans.
    """

    status_hint = 400

    def __init__(self, text: str, offset: int, expected: str, found: str | None = None) -> None:
        self.text = text
        self.offset = offset
        self.expected = expected
        if found is None:
            found = "end of input" if offset >= len(text) else repr_char(text[offset])
        self.found = found
        super().__init__(self._message())

    def _message(self) -> str:
        if self.offset >= len(self.text):
            shown = f"{self.text}[]"
        else:
            o = self.offset
            shown = f"{self.text[:o]}[{self.text[o]}]{self.text[o + 1 :]}"
        return f"{self.expected} expected but {self.found} found at '{shown}'"

    @property
    def line(self) -> int:
        """1-based line number of :attr:`offset`."""
        return self.text.count("\n", 0, self.offset) + 1

    @property
    def column(self) -> int:
        """1-based column (in code points) of :attr:`offset` within its line."""
        return self.offset - (self.text.rfind("\n", 0, self.offset) + 1) + 1

    def render(self) -> str:
        """A multi-line explanation: the problem, the offending line, and a caret under it.

        Example::

            simple expected but end of input found (line 1, column 13, offset 12)
              /svc => /a |
                          ^
        """
        start = self.text.rfind("\n", 0, self.offset) + 1
        end = self.text.find("\n", self.offset)
        if end < 0:
            end = len(self.text)
        line_text = self.text[start:end]
        # Tabs keep their width in the caret line so the caret lines up in a terminal.
        pad = "".join("\t" if c == "\t" else " " for c in line_text[: self.offset - start])
        return (
            f"{self.expected} expected but {self.found} found "
            f"(line {self.line}, column {self.column}, offset {self.offset})\n"
            f"  {line_text}\n  {pad}^"
        )


def repr_char(c: str) -> str:
    """How a found character is shown in messages: quoted, or escaped if unprintable."""
    if c.isprintable():
        return f"'{c}'"
    return "'" + c.encode("unicode_escape").decode("ascii") + "'"


class DelegationError(SharedError):
    """Binding or delegating a name failed (not a parse error)."""

    status_hint = 502


class MaxDepthExceeded(DelegationError):
    """The chain of lookups for one name was longer than the configured limit.

    Almost always a loop in the dtab (``/s=>/s/x``) or two entries that point at each other.
    """

    def __init__(self, max_depth: int, path: str | None = None) -> None:
        self.max_depth = max_depth
        self.path = path
        msg = f"Max recursion level: {max_depth} reached in Namer lookup"
        if path is not None:
            msg += f" (while resolving {path}; check the dtab for a rule that loops)"
        super().__init__(msg)


class BudgetExceeded(DelegationError):
    """Binding or explaining a name needed more work than its budget allows (``shared.budget``).

    The client's fault, not the server's (a dtab whose entries expand each other, or one too
    big for its budget), hence 400. Attributes: ``limit`` (the config key, e.g.
    ``requestDtabBudget.maxNodes``), ``max`` (its value) and ``what`` (``binding /svc/x``).
    """

    status_hint = 400

    def __init__(self, limit: str, max: int, unit: str, what: str) -> None:
        self.limit = limit
        self.max = max
        self.what = what
        super().__init__(
            f"{what} needed more than {max} {unit} (limit {limit}); "
            "simplify the dtab (entries that expand into each other multiply the work) "
            "or raise the limit"
        )


class UnknownNamer(DelegationError):
    """A ``/$/<kind>/...`` system path names a namer kind nobody provides."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind
        self.path = path
        super().__init__(f"Unknown namer: {kind} for path: {path}")


class NamerFailure(DelegationError):
    """A namer reported an error while looking a path up (carries the namer's message)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)
