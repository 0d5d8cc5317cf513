"""Where errors become HTTP responses: the one place the API maps exceptions to statuses.

Resources raise; they never build error responses themselves. Three kinds of error reach the
handlers installed by :func:`add_error_handlers`:

* :class:`HTTPProblem`, an API-level error with its status, plain-text body and headers
  (namerd's error bodies are plain text). A dtab or path that does not parse becomes one here,
  through :func:`unparsable`: namerd's message line, then a caret diagram of where the problem
  is (``DtabParseError.render``);
* any other :class:`~namerd.errors.NamerdError` (mostly storage errors), answered with its
  ``http_status`` hint: 400 invalid namespace, 404 missing, 409 exists, 412 version mismatch,
  503 Redis unavailable (the body then says reads serve the last-known state), 500 otherwise.
  5xx storage errors count in the ``store/errors`` metric;
* :class:`OverBudget`, a bind or delegate that needed more work than its budget
  (``shared.BudgetExceeded``, from :func:`lookup_failed`): 400 with a JSON body,
  ``{"error": "<message>", "status": 400, "limit": "requestDtabBudget.maxNodes"}``, so a
  program can tell which limit to raise (or that its dtab expands into itself);
* anything else is a bug: logged with its traceback and answered 500.

Bodies are namerd's plain text on namerd's routes (clients and Linkerd show them as they are).
The registry's routes are ours, not namerd's, and answer errors as JSON (:data:`JSON_ERROR_PATHS`):
``{"error": "<message>", "status": 403, ...details}``, where ``details`` carries facts a
program can act on, such as ``reason`` and ``configKey`` for a refused registration.

namerd answers unknown routes, and methods a route does not have, with 404 and an empty body;
so do we.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon
import falcon.asgi

from namerd.errors import NamerdError, StorageError
from shared import BudgetExceeded, DelegationError, DtabParseError

__all__ = [
    "JSON_ERROR_PATHS",
    "TEXT",
    "HTTPProblem",
    "OverBudget",
    "add_error_handlers",
    "lookup_failed",
    "unparsable",
]

log = logging.getLogger("namerd")

TEXT = "text/plain"
#: Route prefixes whose errors are JSON (ours, not namerd's: no plain-text contract to keep).
JSON_ERROR_PATHS = ("/api/1/registry",)


class HTTPProblem(NamerdError):
    """An API-level error with a plain-text body (namerd's error bodies are plain text)."""

    def __init__(
        self,
        status: int,
        message: str = "",
        headers: dict[str, str] | None = None,
        *,
        details: dict[str, str] | None = None,
    ):
        super().__init__(message, http_status=status, details=details)
        self.body = message
        self.headers = headers or {}


class OverBudget(NamerdError):
    """A lookup needed more work than its budget allows; answered 400 with a JSON body."""

    def __init__(self, err: BudgetExceeded) -> None:
        super().__init__(str(err), http_status=400)
        self.limit = err.limit


def lookup_failed(err: DelegationError, headline: str) -> NamerdError:
    """The error for a failed non-watch lookup: :class:`OverBudget` for a budget error (the
    client's dtab), else 502 ``<headline>: <reason>`` (a loop, a namer failure)."""
    if isinstance(err, BudgetExceeded):
        return OverBudget(err)
    return HTTPProblem(502, f"{headline}: {err}\n")


def _json_errors(req: falcon.asgi.Request) -> bool:
    return req.path.startswith(JSON_ERROR_PATHS)


def _send(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    status: int,
    message: str,
    details: dict[str, str] | None = None,
) -> None:
    """The error response: ``message`` as text, or as a JSON object on JSON_ERROR_PATHS."""
    resp.status = falcon.code_to_http_status(status)
    if _json_errors(req):
        resp.content_type = "application/json"
        body = {"error": message.strip(), "status": status, **(details or {})}
        resp.text = json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n"
        return
    resp.content_type = TEXT
    resp.text = message


def unparsable(err: DtabParseError, headline: str = "", *, diagram: bool = True) -> HTTPProblem:
    """400 for input that does not parse: ``headline`` (default: the parser's message), then
    the caret diagram unless ``diagram`` is false."""
    body = f"{headline or err}\n"
    if diagram:
        body += f"{err.render()}\n"
    return HTTPProblem(400, body)


async def _problem(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    status = getattr(err, "http_status", 500)
    rt = getattr(req.context, "runtime", None)
    if isinstance(err, StorageError) and status >= 500 and rt is not None:
        rt.metrics.inc("store/errors")
    details = getattr(err, "details", None)
    if isinstance(err, HTTPProblem):
        for k, v in err.headers.items():
            resp.set_header(k, v)
        _send(req, resp, status, err.body, details)
        return
    message = str(err)
    if isinstance(err, StorageError) and status == 503:
        message = (
            f"Storage is unavailable: {message}. "
            "Reads serve the last-known state; retry writes later."
        )
    _send(req, resp, status, message + "\n" if message else "", details)


async def _over_budget(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: OverBudget, params: Any
) -> None:
    resp.status = falcon.HTTP_400
    resp.content_type = "application/json"
    body = {"error": str(err), "status": 400, "limit": err.limit}
    resp.text = json.dumps(body, separators=(",", ":")) + "\n"


async def _unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    log.exception("unexpected error serving %s %s", req.method, req.path)
    message = f"Internal error: {type(err).__name__}: {err}. This is a namerd bug; see its log.\n"
    _send(req, resp, 500, message)


async def _empty_404(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, err: Exception, params: Any
) -> None:
    resp.status = falcon.HTTP_404
    resp.content_type = TEXT
    resp.text = ""


def add_error_handlers(app: falcon.asgi.App[falcon.asgi.Request, falcon.asgi.Response]) -> None:
    """Install the handlers; Falcon picks the most specific one for each exception."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(NamerdError, _problem)
    app.add_error_handler(OverBudget, _over_budget)
    app.add_error_handler(falcon.HTTPNotFound, _empty_404)
    app.add_error_handler(falcon.HTTPMethodNotAllowed, _empty_404)
