"""Character classes of the dtab language (finagle ``Path.showableChars`` and Java whitespace)."""

from __future__ import annotations

import unicodedata

#: Characters that may appear raw in a label. Everything else must be written ``\\xHH``.
LABEL_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_:.#$%-")
LABEL_BYTES = frozenset(c.encode("ascii")[0] for c in LABEL_CHARS)
HEX_CHARS = frozenset("0123456789abcdefABCDEF")

_JAVA_WS_CONTROL = frozenset("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f")
_NO_BREAK = frozenset("\u00a0\u2007\u202f")
_SEPARATORS = frozenset({"Zs", "Zl", "Zp"})


def is_java_whitespace(c: str) -> bool:
    """Java's ``Character.isWhitespace`` for one character.

    Python's ``str.isspace`` is not the same: it accepts U+00A0 and U+0085, which Java (and so
    Finagle's parser) rejects. Using it would accept dtabs namerd would refuse.
    """
    if c in _JAVA_WS_CONTROL:
        return True
    if c in _NO_BREAK:
        return False
    return unicodedata.category(c) in _SEPARATORS


def is_unicode_digit(c: str) -> bool:
    """Java's ``Character.isDigit``: any Unicode decimal digit (category Nd)."""
    return unicodedata.category(c) == "Nd"
