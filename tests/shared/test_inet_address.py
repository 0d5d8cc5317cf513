"""shared.names.inet_address / inet_addr: what an inet id names, for every side's DNS."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import ADDR_NEG, ADDR_PENDING, Addr, AddrFailed, Path
from shared.names import LOCAL_HOST, inet_addr, inet_address


@pytest.mark.parametrize(
    ("id", "expected"),
    [
        ("/$/inet/10.0.0.1/80", ("10.0.0.1", 80, False)),
        ("/$/inet/users.internal/8080", ("users.internal", 8080, False)),
        ("/$/fixedinet/::1/0", ("::1", 0, True)),
        ("/$/inet/4180", (LOCAL_HOST, 4180, False)),
        ("/$/inet/h/65535", ("h", 65535, False)),
        ("/#/io.l5d.fs/users", None),
        ("/$/nil", None),
        ("/$/inet", None),
        ("/$/inet/h/80/rest", None),
        ("/$/dnssrv/h/80", None),
    ],
)
def test_inet_ids(id: str, expected: tuple[str, int, bool] | None) -> None:
    assert inet_address(Path.read(id)) == expected


@pytest.mark.parametrize(
    ("id", "why"),
    [
        ("/$/inet/h/65536", "invalid port in /$/inet/h/65536"),
        ("/$/inet/h/\\x2b80", "invalid port"),
        ("/$/inet/h/eighty", "invalid port"),
        ("/$/inet/\\xff/80", "not UTF-8"),
    ],
)
def test_malformed_inet_ids_say_why(id: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        inet_address(Path.read(id))


@given(st.lists(st.binary(min_size=1, max_size=5), max_size=5))
def test_any_path_is_an_address_nothing_or_a_value_error(labels: list[bytes]) -> None:
    for head in ((b"$", b"inet"), (b"$", b"fixedinet"), ()):
        path = Path(*head, *labels)
        problem: ValueError | None = None
        got = None
        try:
            got = inet_address(path)
        except ValueError as err:
            problem = err
        if problem is not None:
            assert path.show() in str(problem)
        elif got is not None:
            host, port, fixed = got
            assert 0 <= port <= 65535
            assert fixed == (head[1:] == (b"fixedinet",))


def test_inet_addr_asks_the_callers_dns_only_for_inet_ids() -> None:
    asked: list[tuple[str, int, bool]] = []

    def dns(host: str, port: int, fixed: bool) -> Addr:
        asked.append((host, port, fixed))
        return ADDR_PENDING

    assert inet_addr(Path.read("/$/fixedinet/h/1"), dns) is ADDR_PENDING
    assert inet_addr(Path.read("/#/io.l5d.fs/users"), dns) is ADDR_NEG
    assert inet_addr(Path.read("/$/inet/h/99999"), dns) == AddrFailed(
        "invalid port in /$/inet/h/99999: expected 0-65535"
    )
    assert asked == [("h", 1, True)]
