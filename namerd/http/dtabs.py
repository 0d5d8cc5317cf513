"""``/api/1/dtabs``: list, read, create, replace, compare-and-set and delete dtabs; watch them.

Status codes, bodies and headers follow namerd:

* ``/api/1/dtabs`` (any method, as namerd) is the sorted JSON list of namespaces; ``watch=1``
  streams it;
* ``GET /api/1/dtabs/{ns}`` is the dtab as JSON (``[{"prefix":..,"dst":..}]``) or as dtab text
  (``Accept: application/dtab`` or ``text/plain``; the first known type of the Accept header
  wins, parameters and q-values ignored), with its version as ``ETag``; 404 if absent.
  ``watch=1`` streams it (nothing while the namespace does not exist);
* ``POST`` creates (409 if it exists), ``PUT`` replaces or creates, ``PUT`` with ``If-Match``
  is a compare-and-set (412 on another version, 404 if absent), ``DELETE`` deletes (404 if
  absent); each answers 204. The body is JSON or dtab text, by Content-Type
  (``application/json`` or ``application/dtab``; anything else, ``text/plain`` included, or
  none is 415: a web page can send ``text/plain`` cross-origin, see ``shared.webguard``); a
  dtab that does not parse is 400 with a caret diagram; the store keeps the canonical text
  (``Dtab.show``). Writes pass ``Resource.authorize`` first (Host, origin, token).

Every write is recorded in the namespace's history (``namerd.storage.store``, "History"), with
who made it (:func:`author_of`) and bounded by ``storage.historySize``; ``history.py`` serves it.

The ETag is namerd's: base64 of the 8-byte big-endian version (``AAAAAAAAAAE=`` is v1).
If-Match is decoded leniently, as twitter-util's decoder does; one that is not an 8-byte
version never matches (412, as namerd answers ``If-Match: yolo``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import falcon
import falcon.asgi

from namerd.http.problems import HTTPProblem, unparsable
from namerd.http.resource import (
    DTAB,
    JSON,
    TEXT,
    Resource,
    json_body,
    json_line,
    media_type,
    namespace_of,
    truthy,
)
from namerd.runtime import DTAB_LIST_TOPIC, ParsedDtab, Runtime, dtab_topic, parse_stored
from namerd.storage.store import Author
from shared import Dtab, DtabParseError
from shared.wire import WireFormatError, dtab_from_json, dtab_to_json

__all__ = [
    "DtabItem",
    "DtabList",
    "author_of",
    "etag",
    "negotiate",
    "parse_if_match",
    "read_dtab_body",
]

#: The identity history records for a write that passed the bearer-token check. There is one
#: token, so this is all that is known; never the token itself, nor a hash of it (history is
#: readable without the token).
TOKEN_IDENTITY = "token"


def etag(version: int) -> str:
    """namerd's ETag: base64 of the 8-byte big-endian version (``AAAAAAAAAAE=`` is v1)."""
    return base64.b64encode(version.to_bytes(8, "big", signed=True)).decode("ascii")


def parse_if_match(value: str) -> int | None:
    """Decode If-Match leniently (quotes and stray characters ignored, as twitter-util's MIME
    decoder does); None if it is not an 8-byte version, which then simply never matches."""
    cleaned = "".join(c for c in value if c.isalnum() or c in "+/=")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 8:
        return None
    return int.from_bytes(raw, "big", signed=True)


def author_of(rt: Runtime, req: falcon.asgi.Request) -> Author:
    """Who is writing, for history: ``token`` when a token is configured (the write passed
    ``authorize``), else unknown; and the client's address as the server saw it."""
    return Author(TOKEN_IDENTITY if rt.config.auth_token else None, req.remote_addr or None)


def recorded(rt: Runtime, req: falcon.asgi.Request) -> dict[str, Any]:
    """The store's history arguments for a write made by ``req``."""
    return {"author": author_of(rt, req), "history_size": rt.config.storage.history_size}


def negotiate(accept: str | None) -> str:
    """namerd's Accept rule: parameters (and q-values) ignored, first known type wins."""
    for part in (accept or "").split(","):
        media = media_type(part)
        if media in (JSON, DTAB, TEXT):
            return media
    return JSON


def read_dtab_body(req: falcon.asgi.Request, body: bytes) -> Dtab:
    """The dtab in a request body: JSON or dtab text, by Content-Type (415 if it is neither);
    400 if it does not parse."""
    ct = media_type(req.content_type)
    if ct not in (JSON, DTAB):
        raise HTTPProblem(
            415, f'Invalid Content-Type "{req.content_type or ""}". Use {JSON} or {DTAB}.\n'
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HTTPProblem(400, f"The body is not UTF-8: {err}\n") from None
    if ct == JSON:
        value = json_body(text)
        if isinstance(value, list) and any(v is None for v in value):
            raise HTTPProblem(400, f"The dtab contains invalid dentries: {text}\n")
        try:
            return dtab_from_json(value)
        except WireFormatError as err:
            raise HTTPProblem(400, f"Invalid dtab: {err}\n") from None
    try:
        return Dtab.read(text)
    except DtabParseError as err:
        raise unparsable(err) from None


class DtabList(Resource):
    """``/api/1/dtabs``: the sorted namespace names; ``watch=1`` streams the set."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if truthy(req, "watch"):
            store = self.rt.store

            async def render() -> str | None:
                return json_line(await store.list_namespaces())

            # A store watch on the list wakes the notifier while this stream is open.
            self.stream(req, resp, render, follow=self._follow_list, topics=[DTAB_LIST_TOPIC])
            return
        resp.content_type = JSON
        resp.text = json_line(await self.rt.store.list_namespaces())

    async def _follow_list(self) -> None:
        async with self.rt.store.watch_list() as updates:
            async for _ in updates:
                self.rt.notifier.notify(*DTAB_LIST_TOPIC)

    # namerd serves the list whatever the method.
    on_head = on_get
    on_post = on_get
    on_put = on_get
    on_delete = on_get


class DtabItem(Resource):
    """``/api/1/dtabs/{ns}``: GET/HEAD/POST/PUT/DELETE one namespace's dtab."""

    def _render(self, media: str, parsed: ParsedDtab) -> str:
        if media == JSON:
            return json_line(dtab_to_json(parsed.dtab))
        return parsed.dtab.show() + "\n"

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        media = negotiate(req.get_header("Accept"))
        if truthy(req, "watch"):
            cache = self.rt.dtabs

            async def render() -> str | None:
                parsed = parse_stored(ns, cache.current(ns))
                return None if parsed is None else self._render(media, parsed)

            self.stream(
                req, resp, render, namespace=ns, content_type=media, topics=[dtab_topic(ns)]
            )
            return
        parsed = await self.rt.dtab(ns)
        if parsed is None:
            raise HTTPProblem(404)
        resp.content_type = media
        resp.set_header("ETag", etag(parsed.version))
        resp.text = self._render(media, parsed)

    async def on_head(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        namespace_of(ns)
        parsed = await self.rt.dtab(ns)
        if parsed is None:
            raise HTTPProblem(404)
        resp.set_header("ETag", etag(parsed.version))
        resp.content_type = negotiate(req.get_header("Accept"))

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        self.authorize(req)
        namespace_of(ns)
        dtab = read_dtab_body(req, await self.body(req))
        await self.rt.store.create(ns, dtab.show(), **recorded(self.rt, req))
        resp.status = falcon.HTTP_204

    async def on_put(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str) -> None:
        self.authorize(req)
        namespace_of(ns)
        dtab = read_dtab_body(req, await self.body(req))
        if_match = req.get_header("If-Match")
        if if_match is None:
            await self.rt.store.put(ns, dtab.show(), **recorded(self.rt, req))
        else:
            version = parse_if_match(if_match)
            # An undecodable If-Match can never match: 412, as namerd answers `If-Match: yolo`
            # (but a missing namespace is still 404, checked by update()).
            await self.rt.store.update(
                ns, dtab.show(), version if version is not None else -1, **recorded(self.rt, req)
            )
        resp.status = falcon.HTTP_204

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, ns: str
    ) -> None:
        self.authorize(req)
        namespace_of(ns)
        await self.rt.store.delete(ns, **recorded(self.rt, req))
        resp.status = falcon.HTTP_204
