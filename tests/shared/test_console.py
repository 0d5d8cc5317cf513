"""shared.console: the one copy of the consoles' files, read as package data."""

from __future__ import annotations

import pytest

from shared.console import CONTENT_TYPES, asset, page


def test_every_listed_file_is_there_with_its_type() -> None:
    for name, content_type in CONTENT_TYPES.items():
        found = asset(name)
        assert found is not None
        body, ctype = found
        assert body
        assert ctype == content_type


def test_unlisted_names_are_not_served() -> None:
    for name in ("__init__.py", "../dtab.py", "console", ""):
        assert asset(name) is None


def test_page_fills_in_escaped_values() -> None:
    body = page("delegator.html", side='linker"><script>', api="/x").decode()
    assert 'data-side="linker&quot;&gt;&lt;script&gt;"' in body
    assert "{{" not in body
    with pytest.raises(KeyError):
        page("console.js", side="x", api="")
    with pytest.raises(KeyError, match="needs values for api"):
        page("namerd.html", side="namerd")


def test_pages_fetch_nothing_from_the_network() -> None:
    # Offline by design: every URL a page loads is same-origin.
    for name in CONTENT_TYPES:
        text = asset(name)[0].decode()  # type: ignore[index]
        assert "http://" not in text
        assert "https://" not in text
