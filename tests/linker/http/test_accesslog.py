"""The access log writer: the line format, escaping, and when buffered lines reach the file."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from linker.http.accesslog import AccessLog, format_line

# 2026-12-03 20:07:01 UTC
NOW = 1796328421.0


def test_line_is_linkerds_with_the_month_named() -> None:
    line = format_line(
        "10.0.0.7",
        b"GET",
        b"/a?b=c",
        b"1.1",
        [(b"host", b"x"), (b"referer", b"http://r/"), (b"user-agent", b"curl/8")],
        404,
        12,
        NOW,
    )
    assert line == (
        '10.0.0.7 - - [03/Dec/2026:20:07:01 +0000] "GET /a?b=c HTTP/1.1" 404 12 '
        '"http://r/" "curl/8"\n'
    )


def test_quotes_backslashes_and_control_bytes_are_escaped() -> None:
    line = format_line(
        "", b"GET", b"/\x7f", b"1.0", [(b"user-agent", b'a"b\\c\xff\t')], 200, 0, NOW
    )
    assert line.endswith('"GET /\\x7f HTTP/1.0" 200 0 "-" "a\\"b\\\\c\\xff\\x09"\n')
    assert line.startswith("- - - [")  # no client address: "-"


def test_a_full_buffer_is_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), buffer_bytes=200, clock=lambda: NOW)
    log.record("1.2.3.4", b"GET", b"/one", b"1.1", [], 200, 1)
    assert path.read_text() == ""  # buffered
    log.record("1.2.3.4", b"GET", b"/two" + b"x" * 150, b"1.1", [], 200, 1)
    assert path.read_text().count("\n") == 2
    log.record("1.2.3.4", b"GET", b"/three", b"1.1", [], 200, 1)
    log.close()
    assert path.read_text().count("\n") == 3


async def test_lines_are_flushed_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), flush_interval_ms=500, clock=lambda: NOW)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        log.record("1.2.3.4", b"GET", b"/", b"1.1", [], 200, 1)
        await trio.sleep(0.4)
        assert path.read_text() == ""
        await trio.sleep(0.2)
        assert path.read_text().count("\n") == 1
        log.record("1.2.3.4", b"GET", b"/", b"1.1", [], 200, 1)
        nursery.cancel_scope.cancel()
    assert path.read_text().count("\n") == 2  # flushed on the way out
    log.close()
