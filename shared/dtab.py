"""Dentries and dtabs: ``prefix => tree`` rules, their text form, and the one-step lookup.

Lookup is Finagle's: EVERY dentry whose prefix matches is used, the last one first, combined as
``Alt(last, ..., first)``. "Later entries win, earlier ones are the fallback" is nothing more
than Alt's skip-``~`` rule. The result is not simplified, so a single matching ``=> ~`` yields
exactly ``NEG`` (which lets the namers be asked) while two yield ``Alt(~, ~)`` (which does not).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, overload

from .nametree import NEG, Alt, NameTree, map_tree, show_tree, simplify
from .path import Path, show_label

__all__ = ["ANY", "Dentry", "Dtab", "Prefix"]


class _AnyElem:
    """The ``*`` prefix element: matches exactly one label, which is then consumed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY: Final = _AnyElem()

PrefixElem = bytes | _AnyElem


@dataclass(frozen=True, slots=True)
class Prefix:
    """A dentry prefix: labels and ``*`` wildcards. ``Prefix(())`` (``/``) matches every path."""

    elems: tuple[PrefixElem, ...]

    @staticmethod
    def read(text: str | bytes) -> Prefix:
        """Parse ``/svc/*/users``. Raises DtabParseError."""
        from ._parser import parse_prefix

        return parse_prefix(text)

    @staticmethod
    def of(*elems: str | bytes | _AnyElem) -> Prefix:
        """Build from labels; the *string* ``"*"`` means the wildcard (``b"*"`` is a literal)."""
        out: list[PrefixElem] = []
        for e in elems:
            if e == "*" or isinstance(e, _AnyElem):
                out.append(ANY)
            elif isinstance(e, str):
                out.append(e.encode("utf-8"))
            else:
                out.append(bytes(e))
        return Prefix(tuple(out))

    def __len__(self) -> int:
        return len(self.elems)

    def matches(self, path: Path) -> bool:
        """Element-wise match: each element is ``*`` or equal to the path's label there."""
        if len(self.elems) > len(path):
            return False
        return all(e is ANY or e == lab for e, lab in zip(self.elems, path.labels, strict=False))

    def show(self) -> str:
        """Canonical text; a literal label ``*`` prints as ``\\x2a``, the wildcard as ``*``."""
        if not self.elems:
            return "/"
        return "".join(
            "/" + ("*" if isinstance(e, _AnyElem) else show_label(e)) for e in self.elems
        )

    def __str__(self) -> str:
        return self.show()


@dataclass(frozen=True, slots=True)
class Dentry:
    """One delegation rule ``prefix => dst``."""

    prefix: Prefix
    dst: NameTree[Path]

    @staticmethod
    def read(text: str | bytes) -> Dentry:
        """Parse ``/svc => /#/io.l5d.fs``. Raises DtabParseError."""
        from ._parser import parse_dentry

        return parse_dentry(text)

    def show(self) -> str:
        """``prefix=>dst`` with no spaces around ``=>`` (the wire form)."""
        return f"{self.prefix.show()}=>{show_tree(self.dst)}"

    def rewrite(self, path: Path) -> NameTree[Path]:
        """The destination with the unmatched rest of ``path`` appended to every leaf.

        The labels matched by the prefix, wildcards included, are consumed.
        """
        suffix = path.drop(len(self.prefix))
        if suffix.is_empty:
            return self.dst
        return map_tree(lambda p: p + suffix, self.dst)

    def __str__(self) -> str:
        return self.show()


class Dtab:
    """An ordered, immutable sequence of dentries. Later dentries take priority."""

    __slots__ = ("_hash", "_shown", "dentries")

    dentries: tuple[Dentry, ...]
    # Memoised: a proxy hashes and shows the same dtabs on every request (cache keys, headers).
    _hash: int | None
    _shown: str | None

    def __init__(self, dentries: Iterable[Dentry] = ()) -> None:
        object.__setattr__(self, "dentries", tuple(dentries))
        object.__setattr__(self, "_hash", None)
        object.__setattr__(self, "_shown", None)

    @staticmethod
    def read(text: str | bytes) -> Dtab:
        """Parse a dtab (``/a=>/b;/c=>/d``; whitespace, newlines and ``#`` comments allowed).

        Raises:
            DtabParseError: carrying the text, the offset and the expected token;
                ``err.render()`` gives a caret diagram for people.
        """
        from ._parser import parse_dtab

        return parse_dtab(text)

    @staticmethod
    def empty() -> Dtab:
        """The dtab with no dentries."""
        return _EMPTY_DTAB

    def show(self) -> str:
        """Dentries joined by ``;``, no spaces, no trailing ``;``; the empty dtab is ``""``."""
        shown = self._shown
        if shown is None:
            shown = ";".join(d.show() for d in self.dentries)
            object.__setattr__(self, "_shown", shown)
        return shown

    def pretty(self) -> str:
        """One dentry per line, with spaces around ``=>`` and a trailing ``;`` (for people)."""
        return "".join(f"{d.prefix.show()} => {show_tree(d.dst)};\n" for d in self.dentries)

    def lookup(self, path: Path) -> NameTree[Path]:
        """One delegation step for ``path``.

        Returns ``NEG`` when nothing matches, the rewritten destination when one dentry matches,
        and ``Alt(rewrite(last), ..., rewrite(first))`` when several do. Not simplified.
        """
        matched = [d.rewrite(path) for d in reversed(self.dentries) if d.prefix.matches(path)]
        if not matched:
            return NEG
        return matched[0] if len(matched) == 1 else Alt(tuple(matched))

    def matching(self, path: Path) -> list[Dentry]:
        """The dentries that match ``path``, last first (the order lookup uses them in)."""
        return [d for d in reversed(self.dentries) if d.prefix.matches(path)]

    def simplified(self) -> Dtab:
        """Every destination simplified; dentries whose destination becomes ``~`` removed."""
        out = []
        for d in self.dentries:
            s = simplify(d.dst)
            if s is not NEG:
                out.append(Dentry(d.prefix, s))
        return Dtab(out)

    def equiv(self, other: Dtab) -> bool:
        """Same length, equal prefixes, and equal *simplified* destinations, pairwise."""
        return len(self) == len(other) and all(
            a.prefix == b.prefix and simplify(a.dst) == simplify(b.dst)
            for a, b in zip(self.dentries, other.dentries, strict=True)
        )

    def strip_prefix(self, prefix: Dtab) -> Dtab:
        """Remove ``prefix`` from the front if its dentries are exactly our first ones."""
        n = len(prefix)
        if n and self.dentries[:n] == prefix.dentries:
            return Dtab(self.dentries[n:])
        return self

    # -- sequence / value behaviour -----------------------------------------------------------
    def __add__(self, other: Dtab | Dentry) -> Dtab:
        """``base + override``: the override's dentries come after, so they win (Finagle ``++``)."""
        if isinstance(other, Dentry):
            return Dtab((*self.dentries, other))
        if not isinstance(other, Dtab):
            return NotImplemented
        if not other.dentries:
            return self
        if not self.dentries:
            return other
        return Dtab(self.dentries + other.dentries)

    def __len__(self) -> int:
        return len(self.dentries)

    def __iter__(self) -> Iterator[Dentry]:
        return iter(self.dentries)

    @overload
    def __getitem__(self, i: int) -> Dentry: ...
    @overload
    def __getitem__(self, i: slice) -> Dtab: ...
    def __getitem__(self, i: int | slice) -> Dentry | Dtab:
        if isinstance(i, slice):
            return Dtab(self.dentries[i])
        return self.dentries[i]

    def __bool__(self) -> bool:
        return bool(self.dentries)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Dtab is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dtab) and other.dentries == self.dentries

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash(self.dentries)
            object.__setattr__(self, "_hash", h)
        return h

    def __repr__(self) -> str:
        return f"Dtab({self.show()!r})"

    def __str__(self) -> str:
        return self.show()


_EMPTY_DTAB = Dtab()
