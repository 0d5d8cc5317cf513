"""Recursive-descent parser for paths, prefixes, name trees, dentries and dtabs.

It follows Finagle's ``NameTreeParsers`` token for token so that what namerd accepts we accept,
and what it rejects we reject at the same offset with the same "X expected but Y found" words.
Differences, all deliberate:

* offsets count code points, not UTF-16 units;
* ``bytes`` input is accepted: it is decoded as UTF-8 and any undecodable byte becomes a
  character no rule accepts, so it is reported (with its offset) like any other bad character;
* parentheses may nest at most :data:`MAX_NESTING` deep, so hostile input cannot exhaust the
  Python stack (the JVM would throw StackOverflowError somewhere deeper).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._chars import HEX_CHARS, LABEL_CHARS, is_java_whitespace, is_unicode_digit
from .errors import DtabParseError
from .nametree import DEFAULT_WEIGHT, EMPTY, FAIL, NEG, Alt, Leaf, NameTree, Union, Weighted
from .path import Path

if TYPE_CHECKING:
    from .dtab import Dentry, Dtab, Prefix

#: Deepest parenthesis nesting accepted in one name tree.
MAX_NESTING = 100

_ASCII_DIGITS = frozenset("0123456789")


def _as_text(text: str | bytes) -> str:
    if isinstance(text, bytes | bytearray | memoryview):
        return bytes(text).decode("utf-8", errors="surrogateescape")
    if not isinstance(text, str):
        raise TypeError(f"expected str or bytes, got {type(text).__name__}")
    return text


class _Parser:
    __slots__ = ("depth", "idx", "n", "s")

    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.idx = 0
        self.depth = 0

    # -- primitives ---------------------------------------------------------------------------
    def fail(self, expected: str, at: int | None = None) -> DtabParseError:
        return DtabParseError(self.s, self.idx if at is None else at, expected)

    def peek(self) -> str:
        return self.s[self.idx] if self.idx < self.n else ""

    def at_end(self) -> bool:
        return self.idx >= self.n

    def maybe_eat(self, c: str) -> bool:
        if self.idx < self.n and self.s[self.idx] == c:
            self.idx += 1
            return True
        return False

    def eat(self, c: str) -> None:
        if not self.maybe_eat(c):
            raise self.fail(f"'{c}'")

    def skip_ws(self) -> None:
        """Skip Java whitespace and ``#`` comments (a comment runs to and including ``\\n``)."""
        s, n, i = self.s, self.n, self.idx
        while i < n:
            c = s[i]
            if c == "#":
                j = s.find("\n", i)
                i = n if j < 0 else j + 1
            elif is_java_whitespace(c):
                i += 1
            else:
                break
        self.idx = i

    def ensure_end(self) -> None:
        self.skip_ws()
        if not self.at_end():
            raise self.fail("end of input")

    # -- labels and paths ---------------------------------------------------------------------
    def starts_label(self) -> bool:
        c = self.peek()
        return c in LABEL_CHARS or c == "\\"

    def hex_char(self) -> int:
        c = self.peek()
        if not c or c not in HEX_CHARS:
            raise self.fail("hex char")
        self.idx += 1
        return int(c, 16)

    def label(self) -> bytes:
        out = bytearray()
        while True:
            c = self.peek()
            if c and c in LABEL_CHARS:
                out.append(ord(c))
                self.idx += 1
            elif c == "\\":
                self.idx += 1
                self.eat("x")
                hi = self.hex_char()
                out.append(hi << 4 | self.hex_char())
            else:
                raise self.fail("label char")
            if not self.starts_label():
                return bytes(out)

    def path(self) -> Path:
        self.skip_ws()
        self.eat("/")
        if not self.starts_label():
            return Path()
        labels = [self.label()]
        while self.maybe_eat("/"):
            labels.append(self.label())
        return Path.from_labels(labels)

    def prefix(self) -> Prefix:
        from .dtab import ANY, Prefix

        self.skip_ws()
        self.eat("/")
        if not (self.starts_label() or self.peek() == "*"):
            return Prefix(())
        elems: list[bytes | object] = []
        while True:
            elems.append(ANY if self.maybe_eat("*") else self.label())
            if not self.maybe_eat("/"):
                return Prefix(tuple(elems))  # type: ignore[arg-type]

    # -- name trees ---------------------------------------------------------------------------
    def tree(self) -> NameTree[Path]:
        trees = [self.tree1()]
        while True:
            self.skip_ws()
            if not self.maybe_eat("|"):
                break
            trees.append(self.tree1())
        return trees[0] if len(trees) == 1 else Alt(tuple(trees))

    def tree1(self) -> NameTree[Path]:
        branches = [self.weighted()]
        while True:
            self.skip_ws()
            if not self.maybe_eat("&"):
                break
            branches.append(self.weighted())
        # A weight on an operand that is not part of a union is parsed and dropped (Finagle).
        return branches[0].tree if len(branches) == 1 else Union(tuple(branches))

    def weighted(self) -> Weighted[Path]:
        self.skip_ws()
        c = self.peek()
        if not c or not (c == "." or is_unicode_digit(c)):
            return Weighted(DEFAULT_WEIGHT, self.simple())
        w = self.number()
        self.skip_ws()
        self.eat("*")
        return Weighted(w, self.simple())

    def number(self) -> float:
        start = self.idx
        seen_dot = False
        while True:
            c = self.peek()
            if c == ".":
                if seen_dot:
                    raise self.fail("number char")
                seen_dot = True
            elif not c or not is_unicode_digit(c):
                break
            self.idx += 1
        text = self.s[start : self.idx]
        if text == ".":
            raise self.fail("weight", at=start)
        for i, ch in enumerate(text):
            # Java's isDigit accepts any Unicode digit but parseDouble only ASCII ones.
            if ch != "." and ch not in _ASCII_DIGITS:
                raise self.fail("weight", at=start + i)
        return float(text)

    def simple(self) -> NameTree[Path]:
        self.skip_ws()
        c = self.peek()
        if c == "(":
            if self.depth >= MAX_NESTING:
                raise self.fail(f"at most {MAX_NESTING} nested '(' and so not another")
            self.idx += 1
            self.depth += 1
            t = self.tree()
            self.skip_ws()
            self.eat(")")
            self.depth -= 1
            return t
        if c == "/":
            return Leaf(self.path())
        if c == "!":
            self.idx += 1
            return FAIL
        if c == "~":
            self.idx += 1
            return NEG
        if c == "$":
            self.idx += 1
            return EMPTY
        raise self.fail("simple")

    # -- dentries and dtabs -------------------------------------------------------------------
    def dentry(self) -> Dentry:
        from .dtab import Dentry

        prefix = self.prefix()
        self.skip_ws()
        self.eat("=")
        self.eat(">")
        return Dentry(prefix, self.tree())

    def dtab(self) -> Dtab:
        from .dtab import Dtab

        dentries = []
        self.skip_ws()
        if not self.at_end():
            while True:
                dentries.append(self.dentry())
                self.skip_ws()
                if not self.maybe_eat(";"):
                    break
                self.skip_ws()
                if self.at_end():
                    break  # one trailing ';' is allowed
        return Dtab(tuple(dentries))


def parse_path(text: str | bytes) -> Path:
    """Parse a whole path such as ``/svc/users`` (trailing whitespace/comments allowed)."""
    p = _Parser(_as_text(text))
    out = p.path()
    p.ensure_end()
    return out


def parse_prefix(text: str | bytes) -> Prefix:
    """Parse a dentry prefix, which may hold ``*`` elements (``/svc/*/users``)."""
    p = _Parser(_as_text(text))
    out = p.prefix()
    p.ensure_end()
    return out


def parse_tree(text: str | bytes) -> NameTree[Path]:
    """Parse a name tree such as ``/a | 0.4*/b & 0.6*/c``."""
    p = _Parser(_as_text(text))
    out = p.tree()
    p.ensure_end()
    return out


def parse_dentry(text: str | bytes) -> Dentry:
    """Parse one dentry ``prefix => tree`` (no trailing ``;``)."""
    p = _Parser(_as_text(text))
    out = p.dentry()
    p.ensure_end()
    return out


def parse_dtab(text: str | bytes) -> Dtab:
    """Parse a dtab: dentries separated by ``;``, whitespace and ``#`` comments anywhere between."""
    p = _Parser(_as_text(text))
    out = p.dtab()
    p.ensure_end()
    return out
