"""Paths: sequences of non-empty byte-string labels, shown as ``/a/b``.

A label is bytes, not text: ``/a\\x2fb`` is ONE label (``a/b``) and differs from ``/a/b``.
Only the characters of ``_chars.LABEL_CHARS`` are shown raw; a label holding any other byte
is shown with every byte escaped (Finagle's rule), so ``show`` is canonical.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import overload

from ._chars import LABEL_BYTES

__all__ = ["Path", "show_label"]


def show_label(label: bytes) -> str:
    """Show one label: raw if every byte is a label char, otherwise every byte as ``\\xhh``."""
    if label and all(b in LABEL_BYTES for b in label):
        return label.decode("ascii")
    return "".join(f"\\x{b:02x}" for b in label)


class Path:
    """An immutable path. ``Path()`` is the empty path ``/``.

    Labels are given as ``bytes`` (or ``str``, which is UTF-8 encoded). Empty labels are
    rejected because no text form can express them.
    """

    __slots__ = ("_hash", "_shown", "labels")

    labels: tuple[bytes, ...]
    _hash: int
    _shown: str | None  # show() memoised: the linker shows the same paths on every request

    def __init__(self, *labels: bytes | str) -> None:
        out = tuple(lab.encode("utf-8") if isinstance(lab, str) else bytes(lab) for lab in labels)
        if any(not lab for lab in out):
            raise ValueError("path labels must not be empty")
        object.__setattr__(self, "labels", out)
        object.__setattr__(self, "_hash", hash(out))
        object.__setattr__(self, "_shown", None)

    @classmethod
    def from_labels(cls, labels: Iterable[bytes]) -> Path:
        """Build a path from already-validated byte labels."""
        return cls(*labels)

    @staticmethod
    def read(text: str | bytes) -> Path:
        """Parse ``text`` (e.g. ``/svc/users``) into a Path.

        Raises:
            DtabParseError: with the offset of the first character that is not allowed.
        """
        from ._parser import parse_path

        return parse_path(text)

    def show(self) -> str:
        """The canonical text form; ``Path.read(p.show()) == p`` always holds."""
        shown = self._shown
        if shown is None:
            shown = "".join("/" + show_label(lab) for lab in self.labels) if self.labels else "/"
            object.__setattr__(self, "_shown", shown)
        return shown

    # -- sequence behaviour -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.labels)

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> Path: ...
    def __getitem__(self, i: int | slice) -> bytes | Path:
        if isinstance(i, slice):
            return Path(*self.labels[i])
        return self.labels[i]

    def __add__(self, other: Path) -> Path:
        if not isinstance(other, Path):
            return NotImplemented
        return Path(*(self.labels + other.labels))

    def startswith(self, prefix: Path) -> bool:
        """True if ``prefix``'s labels are the first labels of this path (element-wise)."""
        n = len(prefix.labels)
        return self.labels[:n] == prefix.labels

    def take(self, n: int) -> Path:
        """The first ``n`` labels."""
        return Path(*self.labels[:n])

    def drop(self, n: int) -> Path:
        """Everything after the first ``n`` labels."""
        return Path(*self.labels[n:])

    @property
    def is_empty(self) -> bool:
        """True for the empty path ``/``."""
        return not self.labels

    # -- value behaviour ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Path is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other.labels == self.labels

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: Path) -> bool:
        return self.labels < other.labels

    def __repr__(self) -> str:
        return f"Path({self.show()!r})"

    def __str__(self) -> str:
        return self.show()
