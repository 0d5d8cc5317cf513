"""The HTTP access log (Linkerd's ``routers[].httpAccessLog``): one line per request.

Each line is what Linkerd 1.x writes, the NCSA combined format::

    127.0.0.1 - - [03/Dec/2026:20:07:01 +0000] "GET /users?id=7 HTTP/1.1" 200 1234 "-" "curl/8.5.0"

client address, identd and user (always ``-``), the time the response was sent (UTC), the
request line as received, the status, the response body bytes actually sent, then the
``Referer`` and ``User-Agent`` headers (``-`` when absent). Two differences from Linkerd, on
purpose: the month is the abbreviated name (``Dec``), as every common-log parser expects
(Linkerd printed its number), and the byte count is what was sent (Linkerd printed the
``Content-Length`` header, ``-`` for a chunked body). ``"`` and ``\\`` and non-printable bytes in
the request line and headers are escaped (``\\"``, ``\\\\``, ``\\xNN``), so a line always parses.
Only requests the server read a head for are logged: a connection that sent garbage gets its
400 without a line.

Several workers append to the same file, so every worker opens it with ``O_APPEND`` and writes
only whole lines, each batch in one ``write()``: the kernel appends each write atomically at the
end of a regular file, so lines from different workers never interleave. Lines are gathered in
memory and written when ``flush_interval_ms`` has passed (by :meth:`AccessLog.run`), when the
buffer reaches ``buffer_bytes`` (at once, so memory stays bounded; a write to the page cache is
short), and on exit (:meth:`AccessLog.close`): the event loop is never held by the disk for more
than one bounded write. A write that fails (disk full, file removed from a read-only mount)
drops that batch and logs one warning per kind of failure, not one per request.

Rotation: the linker reopens the file whenever its workers restart, which a SIGHUP (config
reload) does; so ``logrotate`` can rename the file and send SIGHUP in ``postrotate`` (no
``copytruncate`` needed). Linkerd's own rotation keys are not implemented (see
``linker.config.load``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

import trio

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "DEFAULT_FLUSH_INTERVAL_MS",
    "AccessLog",
    "Recorder",
    "format_line",
    "open_problem",
]

log = logging.getLogger("linker.accesslog")

#: What the server calls once per response sent (``AccessLog.record``): client address, the
#: request's method, target, HTTP version and headers, the status, the body bytes sent.
Recorder = Callable[[str, bytes, bytes, bytes, Iterable[tuple[bytes, bytes]], int, int], None]

#: Longest time a line waits in memory before it is written (``httpAccessLogFlushIntervalMs``).
DEFAULT_FLUSH_INTERVAL_MS = 200
#: Buffered lines are written at once when they reach this size (``httpAccessLogBufferKB``).
DEFAULT_BUFFER_BYTES = 64 * 1024

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Bytes written as-is: printable ASCII except the quote and the backslash (escaped).
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


def _escape(value: bytes) -> str:
    if all(b in _PLAIN for b in value):
        return value.decode("ascii")
    out = []
    for b in value:
        if b in _PLAIN:
            out.append(chr(b))
        elif b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def _clf_time(now: float) -> str:
    t = time.gmtime(now)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def format_line(
    client: str,
    method: bytes,
    target: bytes,
    http_version: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    status: int,
    body_bytes: int,
    now: float,
) -> str:
    """One access log line, with its newline (``headers``: lower-case names, as h11 gives)."""
    referer = agent = b"-"
    for name, value in headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            agent = value
    return (
        f"{client or '-'} - - [{_clf_time(now)}] "
        f'"{_escape(method)} {_escape(target)} HTTP/{_escape(http_version)}" '
        f'{status} {body_bytes} "{_escape(referer)}" "{_escape(agent)}"\n'
    )


def open_problem(path: str) -> str | None:
    """Why this process cannot append to ``path`` (created if missing), or None if it can."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        return "is a directory"
    if os.path.exists(full):
        return None if os.access(full, os.W_OK) else "cannot be written (permission denied)"
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        return f"cannot be created: directory {parent} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created in {parent} (permission denied)"
    return None


class AccessLog:
    """One worker's writer of one access log file (see the module docstring)."""

    def __init__(
        self,
        path: str,
        *,
        flush_interval_ms: int = DEFAULT_FLUSH_INTERVAL_MS,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._flush_interval_s = flush_interval_ms / 1000
        self._buffer_bytes = buffer_bytes
        self._clock = clock
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._lines: list[bytes] = []
        self._pending = 0
        self._failed: set[str] = set()  # kinds of write failure already logged

    def record(
        self,
        client: str,
        method: bytes,
        target: bytes,
        http_version: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        status: int,
        body_bytes: int,
    ) -> None:
        """Buffer the line of one request (written by the next flush)."""
        line = format_line(
            client, method, target, http_version, headers, status, body_bytes, self._clock()
        ).encode("utf-8")
        self._lines.append(line)
        self._pending += len(line)
        if self._pending >= self._buffer_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every buffered line, in one ``write()`` (O_APPEND: whole lines, atomically)."""
        if not self._lines or self._fd < 0:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._pending = 0
        try:
            written = os.write(self._fd, data)
            # Short only when the disk fills mid-write; the rest is dropped (see below).
            if written < len(data):
                raise OSError(28, "short write (disk full?)")
        except OSError as err:
            kind = err.strerror or type(err).__name__
            if kind not in self._failed:
                self._failed.add(kind)
                log.warning("access log %s: write failed (%s); lines dropped", self.path, kind)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush every ``flush_interval_ms`` until cancelled (then flush once more)."""
        task_status.started()
        try:
            while True:
                await trio.sleep(self._flush_interval_s)
                self.flush()
        finally:
            self.flush()

    def close(self) -> None:
        """Write what is buffered and close the file."""
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
