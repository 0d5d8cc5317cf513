"""namerctl's HTTP client for namerd's API: one request, one answer, or one line of error.

Every transport failure and every unexpected status becomes a :class:`CtlError` whose message
says what to check (the base URL, the token, whether the admin port was given by mistake).
"""

from __future__ import annotations

import json
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from namerd.ctl.errors import CtlError, first_line
from namerd.ctl.settings import ENV_BASE_URL, ENV_TOKEN, Settings

__all__ = ["DTAB", "JSON", "Client", "lookup_params", "ns_path"]

JSON = "application/json"
DTAB = "application/dtab"

#: A "does not exist" error names at most this many of the namespaces that do.
MAX_NAMESPACES_LISTED = 20


class Client:
    """namerd's HTTP API, with every failure turned into a one-line :class:`CtlError`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.base_url
        headers = {"User-Agent": "namerctl (l5py)"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self.http = httpx.Client(timeout=settings.timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | httpx.QueryParams | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = self.base + path
        try:
            return self.http.request(method, url, params=params, headers=headers, content=content)
        except httpx.TimeoutException:
            raise CtlError(
                f"namerd at {self.base} did not answer within {self.settings.timeout_s:g} s "
                "(--timeout-s)"
            ) from None
        except httpx.ConnectError as err:
            raise CtlError(
                f"cannot reach namerd at {self.base}: {_exc_reason(err)} — is it running? "
                f"set --base-url or {ENV_BASE_URL}"
            ) from None
        except httpx.HTTPError as err:
            raise CtlError(
                f"talking to namerd at {self.base} failed: {_exc_reason(err)} — is --base-url "
                "namerd's HTTP API?"
            ) from None

    def fail(self, resp: httpx.Response, name: str | None = None, extra: str = "") -> NoReturn:
        """Raise the one-line error for a non-success response."""
        status = f"{resp.status_code} {resp.reason_phrase}".strip()
        body = first_line(resp.text)
        if resp.status_code == 404:
            if name is not None:
                raise CtlError(f"resource was not found by ID or name: {name}")
            raise CtlError(
                f"{resp.request.url.copy_with(query=None)} was not found (404) — is --base-url "
                "namerd's HTTP API (not its admin port)?"
            )
        if resp.status_code == 412:
            raise CtlError(
                "version mismatch: the dtab changed since you read it; get it again and retry"
                + extra
            )
        if resp.status_code == 401:
            hint = (
                "the token sent was not accepted"
                if self.settings.token
                else f"pass --token or set {ENV_TOKEN}"
            )
            raise CtlError(f"namerd refused the request ({status}): {body} — {hint}")
        if 400 <= resp.status_code < 500:
            if body:
                raise CtlError(f"namerd refused the request ({status}): {body}")
            raise CtlError(f"unexpected response: {status}")
        if body:
            raise CtlError(f"namerd failed ({status}): {body}")
        raise CtlError(f"unexpected response: {status}")

    def missing_namespace(self, name: str, hint: str = "") -> CtlError:
        """The error for a namespace that does not exist, naming those that do (at most
        ``MAX_NAMESPACES_LISTED``); ``hint`` ends the message (say, how to create it)."""
        resp = self.request("GET", "/api/1/dtabs", headers={"Accept": JSON})
        if resp.status_code != 200:
            self.fail(resp)  # not namerd's API (e.g. its admin port): say that instead
        value = self.json(resp)
        names = [str(n) for n in value] if isinstance(value, list) else []
        shown = ", ".join(names[:MAX_NAMESPACES_LISTED]) or "(none)"
        more = len(names) - MAX_NAMESPACES_LISTED
        listed = f"; namespaces: {shown}" + (f" and {more} more" if more > 0 else "")
        return CtlError(f"namespace '{name}' does not exist{listed}{hint}")

    def json(self, resp: httpx.Response) -> Any:
        try:
            return json.loads(resp.text)
        except ValueError:
            raise CtlError(
                f"unexpected response from {resp.request.url.copy_with(query=None)}: not JSON — "
                "is --base-url namerd's HTTP API (not its admin port)?"
            ) from None


def _exc_reason(err: Exception) -> str:
    reason = str(err) or type(err).__name__
    cause = err.__cause__ or err.__context__
    while not str(err) and cause is not None:
        reason = str(cause) or reason
        cause = cause.__cause__ or cause.__context__
    return " ".join(reason.split())


def ns_path(kind: str, ns: str) -> str:
    return f"/api/1/{kind}/{quote(ns, safe='')}"


def lookup_params(path: str, dtab: str | None) -> dict[str, str]:
    params = {"path": path}
    if dtab is not None:
        params["dtab"] = dtab
    return params
