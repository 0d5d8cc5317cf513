"""Checks on raw HTTP/1.1 bytes that h11 does not make, shared by the server and the upstream side.

h11 parses and frames every message; these functions only refuse what it lets through where the
reference proxies (nginx, HAProxy) are strict, without a second parser in the hot path:

* :class:`ChunkLineGuard` watches a chunked body's raw bytes as they are fed to h11 and refuses
  a chunk-size line with a bare CR (``5;ext\\rx\\r\\n``).  h11's chunk-extension pattern
  (``;.*``) accepts any byte but LF there; a CR that does not end the line is how parsers
  disagree about where a chunk starts (request smuggling), and nginx refuses it.  The guard
  follows the chunk framing only as far as it must: it reads each size line, skips the chunk's
  data by counting (one slice per receive, not per byte), and stops at the last chunk, so
  trailers and whatever follows the body (a pipelined request) are h11's alone.  It must see
  exactly the bytes h11 sees, from the first byte of the body on.
* :func:`head_size` measures a message head at the start of a buffer however it arrived, for
  limits that h11's ``max_incomplete_event_size`` only applies to *incomplete* heads.
"""

from __future__ import annotations

import re

__all__ = ["BadChunkLine", "ChunkLineGuard", "head_size"]

# A size line longer than this is h11's to refuse (its own limit applies); the guard gives up
# following the framing rather than buffer it.
_MAX_SIZE_LINE_BYTES = 4096

_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class BadChunkLine(ValueError):
    """A chunk-size line with a bare CR; the message says which line."""


class ChunkLineGuard:
    """Follows one chunked body's framing over raw bytes and refuses bare CRs in size lines.

    Call :meth:`feed` with every byte of the body, in order, before h11 receives it.
    """

    __slots__ = ("_data_left", "_done", "_line")

    def __init__(self) -> None:
        self._line = bytearray()  # the size line read so far
        self._data_left = -1  # bytes of chunk data (plus its CRLF) still to skip; -1: in a line
        self._done = False  # the last chunk was seen, or the framing is h11's to refuse

    def feed(self, data: bytes) -> None:
        """Follow ``data``.

        Raises:
            BadChunkLine: a size line contains a CR that does not end it.
        """
        pos = 0
        end = len(data)
        while pos < end and not self._done:
            if self._data_left >= 0:
                step = min(self._data_left, end - pos)
                pos += step
                self._data_left -= step
                if self._data_left == 0:
                    self._data_left = -1
                continue
            eol = data.find(b"\n", pos)
            piece = data[pos : eol if eol != -1 else end]
            self._line += piece
            if len(self._line) > _MAX_SIZE_LINE_BYTES:
                self._done = True  # h11 refuses this; nothing for us to follow
                return
            if eol == -1:
                return
            pos = eol + 1
            self._size_line(bytes(self._line))
            self._line.clear()

    def _size_line(self, line: bytes) -> None:
        if b"\r" in line[:-1]:
            # Escaped as text (\r, \x00), not as a Python bytes repr: it reaches the client.
            shown = line[:80].decode("latin-1").encode("unicode_escape").decode("ascii")
            raise BadChunkLine(f"a chunk-size line contains a bare CR: '{shown}'")
        if not line.endswith(b"\r"):
            # A bare LF ends it: h11 needs CRLF there and reads on past this LF, so stop
            # following rather than disagree with it about where the next line starts.
            self._done = True
            return
        size = _HEX.match(line)
        if size is None:
            self._done = True  # not a chunk size: h11 refuses it
            return
        n = int(size.group(), 16)
        if n == 0:
            self._done = True  # the last chunk: trailers follow, which h11 checks itself
            return
        self._data_left = n + 2  # the data and the CRLF after it (h11 checks that CRLF)


def head_size(buf: bytes) -> tuple[int, bool]:
    """(bytes of the head at the start of ``buf`` up to its blank line, whether it is complete).

    Incomplete heads measure the whole buffer: more can only make them larger.
    """
    end = _BLANK_LINE.search(buf)
    if end is None:
        return len(buf), False
    return end.start(), True
