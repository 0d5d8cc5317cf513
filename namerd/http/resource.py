"""What every API resource shares: the Runtime, request parsing, writes' guards, waiting.

A resource is a Falcon ASGI class with ``on_get``/``on_put``/... responders. Each subclasses
:class:`Resource`, which gives it the worker's Runtime and:

* request parsing: the ``path`` and ``dtab`` query parameters (400 with a caret diagram when
  they do not parse), boolean flags such as ``watch=1``, the namespace from the URL;
* the guards of writes, in :meth:`Resource.authorize`: the browser rule of
  ``shared.webguard`` (421 for a Host not in ``interfaces[].allowedHosts``, 403 for a
  cross-site or cross-origin request, 415 for a CORS-simple Content-Type), then the bearer
  token (``auth.token``; 401 without it, compared in constant time as bytes; a header that is
  not ASCII is simply a wrong one); and the body size limit (``limits.maxBodyBytes``; 413
  above it, checked before and while reading);
* :meth:`Resource.settle` for non-watch lookups: recompute until no address is pending, at most
  ``limits.lookupTimeoutMs``, then 503 (namerd waits forever, issue #1349);
* :meth:`Resource.stream` for ``watch=1`` (see ``namerd.http.streaming``).

Errors are raised (``HTTPProblem`` or a NamerdError) and turned into responses by
``namerd.http.problems``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from typing import Any, TypeVar

import falcon.asgi

from namerd.http.problems import TEXT, HTTPProblem, unparsable
from namerd.http.streaming import respond_with_stream
from namerd.naming.namers.base import Topic
from namerd.runtime import Runtime, parse_stored
from namerd.storage.store import validate_namespace
from shared import Dtab, DtabParseError, Path
from shared.webguard import check_write
from shared.wire import encode

__all__ = [
    "DTAB",
    "JSON",
    "TEXT",
    "Resource",
    "json_body",
    "json_line",
    "media_type",
    "namespace_of",
    "parse_dtab_param",
    "parse_path_param",
    "truthy",
]

JSON = "application/json"
DTAB = "application/dtab"
_TRUE = {"1", "t", "true"}

V = TypeVar("V")


def truthy(req: falcon.asgi.Request, name: str) -> bool:
    """A boolean query flag, as namerd reads them: ``1``, ``t`` or ``true`` (any case)."""
    value = req.get_param(name)
    return value is not None and value.lower() in _TRUE


def media_type(value: str | None) -> str:
    """The media type of a Content-Type or Accept element, parameters dropped, lower case."""
    return (value or "").split(";", 1)[0].strip().lower()


def parse_path_param(req: falcon.asgi.Request, name: str = "path") -> Path:
    """The ``path`` query parameter as a Path; 400 if missing or malformed."""
    raw = req.get_param(name)
    if raw is None:
        raise HTTPProblem(400, f"Missing required query parameter: {name}\n")
    try:
        return Path.read(raw)
    except DtabParseError as err:
        raise unparsable(err, f"Invalid path: {raw} / {err}") from None


def parse_dtab_param(raw: str | None) -> Dtab:
    """The optional ``dtab`` parameter (empty allowed); 400 if malformed."""
    if not raw:
        return Dtab.empty()
    try:
        return Dtab.read(raw)
    except DtabParseError as err:
        raise unparsable(err, f"Invalid dtab: {err}") from None


def namespace_of(ns: str) -> str:
    """Validate a namespace from the URL (400 with the rule that failed)."""
    return validate_namespace(ns)


def json_line(value: Any) -> str:
    """A JSON body or stream line: compact JSON and a newline, as namerd writes them."""
    return encode(value) + "\n"


def json_body(data: bytes | str, what: str = "The body is not valid JSON") -> Any:
    """Parse a request body as JSON; 400 ``<what>: <reason>`` if it is not."""
    try:
        return json.loads(data)
    except ValueError as err:
        raise HTTPProblem(400, f"{what}: {err}\n") from None
    except RecursionError:
        # The parser recurses per nesting level; a body of "[[[[..." exhausts the stack.
        raise HTTPProblem(400, f"{what}: it is nested too deeply\n") from None


class Resource:
    """Base of the API resources: the Runtime, limits, auth, body reading and waiting."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.limits = runtime.config.limits
        self.allowed_hosts = runtime.config.interface.allowed_hosts
        token = runtime.config.auth_token
        self.token = token.encode("utf-8") if token else None

    # -- writes ---------------------------------------------------------------------------------
    def authorize(self, req: falcon.asgi.Request) -> None:
        """Every write's guard: the browser rule (421/403/415), then the token (401)."""
        refusal = check_write(
            req.method,
            req.get_header("Host"),
            req.get_header("Origin"),
            req.get_header("Sec-Fetch-Site"),
            req.content_type,
            allowed_hosts=self.allowed_hosts,
            refuse_simple_bodies=True,
            allowed_hosts_key="interfaces[].allowedHosts",
        )
        if refusal is not None:
            raise HTTPProblem(
                refusal.status, refusal.reason + "\n", details={"reason": refusal.code}
            )
        if not self.token:
            return
        header = req.get_header("Authorization") or ""
        scheme, _, value = header.partition(" ")
        # ASGI hands headers over as latin-1; a token is ASCII, so anything else cannot match.
        given = value.strip()
        ok = scheme.lower() == "bearer" and given.isascii()
        # Compared as bytes: compare_digest refuses non-ASCII str, and takes the same time
        # whatever the position of the first wrong byte.
        if not hmac.compare_digest(given.encode("ascii", "replace"), self.token) or not ok:
            raise HTTPProblem(
                401,
                "This namerd requires a token for writes: send 'Authorization: Bearer <token>'.\n",
                {"WWW-Authenticate": 'Bearer realm="namerd"'},
            )

    async def body(self, req: falcon.asgi.Request) -> bytes:
        """The request body; 413 if it is over ``limits.maxBodyBytes``."""
        limit = self.limits.max_body_bytes
        if req.content_length is not None and req.content_length > limit:
            raise HTTPProblem(
                413, f"Request body is {req.content_length} bytes; the limit is {limit}.\n"
            )
        data: bytes = await req.stream.read(limit + 1)
        if len(data) > limit:
            raise HTTPProblem(413, f"Request body is over the limit of {limit} bytes.\n")
        return data

    # -- reads ----------------------------------------------------------------------------------
    async def stored(self, ns: str) -> Dtab:
        """The stored dtab of ``ns``; empty if the namespace does not exist."""
        parsed = await self.rt.dtab(ns)
        return parsed.dtab if parsed is not None else Dtab.empty()

    def live(self, ns: str) -> Dtab:
        """The dtab of ``ns`` in use by a stream (``rt.dtabs``); empty while it does not exist."""
        parsed = parse_stored(ns, self.rt.dtabs.current(ns))
        return parsed.dtab if parsed is not None else Dtab.empty()

    async def settle(
        self, compute: Callable[[], Awaitable[V]], is_pending: Callable[[V], bool], what: str
    ) -> V:
        """Recompute until the value is no longer pending, at most lookupTimeoutMs, then 503."""
        deadline = time.monotonic() + self.limits.lookup_timeout_ms / 1000
        while True:
            generation = self.rt.notifier.generation
            value = await compute()
            if not is_pending(value):
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HTTPProblem(
                    503,
                    f"Timed out after {self.limits.lookup_timeout_ms} ms waiting for {what} to "
                    "resolve; its addresses are still pending. Retry, or use watch=1.\n",
                )
            try:
                await asyncio.wait_for(self.rt.notifier.wait_changed(generation), remaining)
            except TimeoutError:
                continue

    def stream(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        render: Callable[[], Awaitable[str | None]],
        namespace: str | None = None,
        content_type: str = JSON,
        follow: Callable[[], Coroutine[Any, Any, None]] | None = None,
        *,
        key: Hashable | None = None,
        topics: Iterable[Topic] | None = None,
    ) -> None:
        """Answer with a watch stream of ``render()``, one computation per distinct ``key``
        (see ``respond_with_stream``)."""
        respond_with_stream(
            self.rt,
            req,
            resp,
            render,
            key=key,
            topics=topics,
            namespace=namespace,
            content_type=content_type,
            follow=follow,
        )
