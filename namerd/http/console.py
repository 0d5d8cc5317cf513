"""namerd's admin console: the pages and shared files of ``shared.console`` on the admin port.

* ``/`` is the console (namespaces, a dtab editor validated by the dry run as you type, the
  diff of the names in use, save with ``If-Match``, history and rollback);
* ``/delegator`` is the dtab playground (``/api/1/delegate/{ns}`` drawn as a tree);
* ``/console/<file>`` serves the shared CSS and JavaScript.

The pages call the API's routes, which the admin app mounts under :data:`CONSOLE_API`
(``build_admin_app``), so every call is same-origin: no CORS, and the writes carry what the API
requires of any client (``Content-Type: application/dtab``, the bearer token when one is
configured, ``If-Match``).
"""

from __future__ import annotations

import falcon
import falcon.asgi

from shared.console import asset, page

__all__ = ["CONSOLE_API", "ConsoleAsset", "ConsolePage"]

#: Where the admin app mounts the API's ``/api/1`` routes for the console's calls.
CONSOLE_API = "/console/api/1"


class ConsolePage:
    """One console page (``namerd.html`` or ``delegator.html``), as namerd's."""

    def __init__(self, name: str) -> None:
        self.body = page(name, side="namerd", api=CONSOLE_API)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.content_type = "text/html; charset=utf-8"
        resp.set_header("Cache-Control", "no-cache")
        resp.data = self.body


class ConsoleAsset:
    """``/console/{name}``: a shared CSS or JavaScript file; 404 for anything else."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str) -> None:
        found = asset(name)
        if found is None or name.endswith(".html"):
            raise falcon.HTTPNotFound()
        resp.data, resp.content_type = found
        resp.set_header("Cache-Control", "no-cache")
