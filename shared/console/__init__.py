"""The admin consoles' static files, one copy for the linker's and namerd's admin servers.

The consoles are small pages with plain JavaScript: no build step, no network besides the admin
server they come from (no CDN, no web fonts), so they work on an air-gapped host. The files
live next to this module as package data and are read with :mod:`importlib.resources`, so an
installed wheel serves the same bytes as a checkout:

* ``console.css`` and ``console.js`` (a fetch/JSON helper, the delegation-tree and bound-tree
  drawing, debouncing), shared by every page;
* ``delegator.html``: the dtab playground (``/delegator`` on both admin servers);
* ``namerd.html``: namerd's console (namespaces, editor, dry-run diff, history, rollback);
* ``linker.html``: the linker's dashboard (rates, latencies, endpoints, workers, readiness).

Each admin server maps ``/console/<name>`` to :func:`asset` and its pages to :func:`page`;
what the pages call is each server's own API, same-origin.
"""

from __future__ import annotations

import html
import re
from functools import cache
from importlib import resources

__all__ = ["ASSET_PREFIX", "CONTENT_TYPES", "asset", "page"]

#: The URL prefix both admin servers serve the shared files under.
ASSET_PREFIX = "/console/"

#: Every file a client may fetch, and its Content-Type. Anything else is not served.
CONTENT_TYPES: dict[str, str] = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "delegator.html": "text/html; charset=utf-8",
    "namerd.html": "text/html; charset=utf-8",
    "linker.html": "text/html; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return resources.files(__name__).joinpath(name).read_bytes()


def asset(name: str) -> tuple[bytes, str] | None:
    """The bytes and Content-Type of the shared file ``name``; None if there is no such file."""
    content_type = CONTENT_TYPES.get(name)
    if content_type is None:
        return None
    return _read(name), content_type


def page(name: str, **values: str) -> bytes:
    """The HTML page ``name`` with each ``{{key}}`` replaced by ``values[key]`` (HTML-escaped).

    The pages are otherwise static; the values say which server serves them (``side``: linker
    or namerd) and where namerd's API is (``api``), so that one playground serves both.

    Raises:
        KeyError: no such page, or a ``{{key}}`` of the page was given no value.
    """
    found = asset(name)
    if found is None or not name.endswith(".html"):
        raise KeyError(f"no console page {name!r}")
    text = found[0].decode("utf-8")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    missing = sorted(set(re.findall(r"\{\{(\w+)\}\}", text)))
    if missing:
        raise KeyError(f"console page {name!r} needs values for {', '.join(missing)}")
    return text.encode("utf-8")
