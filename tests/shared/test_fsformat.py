"""The io.l5d.fs file format, as both namers read it."""

from __future__ import annotations

import pytest

from shared.fsformat import FsFileError, parse_endpoints


def test_endpoints_weights_comments_and_names() -> None:
    text = "# users\n10.0.0.1 8080\n\n  ::1 81 * 0.5  \nusers-1.internal 9000\n"
    eps = parse_endpoints(text, "users")
    assert [(e.line, e.host, e.port, e.ip) for e in eps] == [
        (2, "10.0.0.1", 8080, "10.0.0.1"),
        (4, "::1", 81, "::1"),
        (5, "users-1.internal", 9000, None),
    ]
    assert eps[1].meta == {"endpoint_addr_weight": 0.5}
    assert eps[0].meta == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1\n", "users:1: expected 'host port' or 'host port * weight'"),
        ("10.0.0.1 99999\n", "users:1: port '99999' must be a number 0-65535"),
        ("10.0.0.1 ٨٠\n", "users:1: port '٨٠' must be a number 0-65535"),
        ("ok 1\nbad/host 1\n", "users:2: host 'bad/host' is neither"),
        ("a 1 * x\n", "users:1: weight 'x' is not a number"),
        ("a 1 * -1\n", "users:1: weight '-1' must be a finite number >= 0"),
        ("a 1\nA 1\n", "users:2: duplicate endpoint A 1 (first on line 1)"),
    ],
)
def test_bad_lines_name_the_file_and_line(text: str, message: str) -> None:
    with pytest.raises(FsFileError) as info:
        parse_endpoints(text, "users")
    assert str(info.value).startswith(message)
