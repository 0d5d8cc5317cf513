"""Identifiers: how the linker gives an HTTP request a logical name such as ``/svc/users``.

The name is what the dtab routes. These are Linkerd 1.x's HTTP identifiers, with the same
config shapes and semantics; ``dst_prefix`` is the router's ``dstPrefix`` (``/svc`` by
default).

========================  ===================================================================
``io.l5d.header.token``   ``header`` (``Host``). Name = ``dst_prefix`` + the header value as
                          ONE label, exactly as sent (no lowercasing; ``web:8080`` stays one
                          label). The default when no identifier is configured.
``io.l5d.methodAndHost``  ``httpUriInDst`` (false). HTTP/1.1: ``/1.1/<METHOD>/<host>[/uri...]``
                          with the host lowercased; HTTP/1.0: ``/1.0/<METHOD>[/uri...]``.
``io.l5d.path``           ``segments`` (1), ``consume`` (false). Name = the first N path
                          segments; with ``consume`` they are removed from the forwarded target.
``io.l5d.header``         ``header`` (``l5d-name``). The value is a PATH (``/users/v2``) put
                          after ``dst_prefix``.
``io.l5d.static``         ``path`` (required). Every request gets ``dst_prefix`` + ``path``.
========================  ===================================================================

A list of identifiers is tried in order and the first that produces a name wins; if none
does the request is not identified (the router answers 400).

Rules we chose where Linkerd is vague or throws:

* Identifying never raises. Whatever cannot become a label or a path (an empty or missing
  header, an empty path segment as in ``/a//b``, an ``io.l5d.header`` value that does not
  parse, or that is just ``/``) means "not identified" (``None``).
* Labels are bytes, so any byte is fine in a label; odd ones only make ``show()`` escape it.
  Path segments are used raw (not percent-decoded), as Finagle's ``Request.path`` is.
* The host of a request is, in order: the authority of an absolute-form target
  (``GET http://users/x HTTP/1.1``, RFC 9112 §3.2.2 says it overrides ``Host``), the
  ``authority`` the server passes in, the ``Host`` header.
* A trailing ``/`` is not an empty segment (``/users/`` has one segment ``users``), and
  ``consume`` keeps it and the query string (``/users/list/?a=1`` -> ``/list/?a=1``), where
  Linkerd's string splitting drops both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from shared import DtabParseError, Path

__all__ = [
    "DEFAULT_IDENTIFIER_KIND",
    "KINDS",
    "HeaderIdentifier",
    "HeaderTokenIdentifier",
    "Identified",
    "Identifier",
    "IdentifierChain",
    "IdentifierConfigError",
    "MethodAndHostIdentifier",
    "PathIdentifier",
    "StaticIdentifier",
    "build_identifier",
    "split_target",
]

Headers = Sequence[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Identified:
    """A request's logical name.

    Attributes:
        path: the full destination path, ``dst_prefix`` included (e.g. ``/svc/users``).
        target: the request target to forward instead of the original one (``io.l5d.path``
            with ``consume: true``); None means "forward it unchanged".
    """

    path: Path
    target: str | None = None


class Identifier(Protocol):
    """Names a request, or returns None when it cannot (never raises)."""

    def identify(
        self,
        method: str,
        target: str,
        authority: str | None,
        headers: Headers,
        http_version: str,
    ) -> Identified | None:
        """Name the request.

        Args:
            method: the request method, e.g. ``GET``.
            target: the request target as received (origin-form ``/a?b``, absolute-form
                ``http://h/a``, ``*`` or authority-form).
            authority: the request's host as the server determined it (absolute-form
                authority, else ``Host``), or None to let the identifier find it.
            headers: the request headers (names in any case; h11 lowercases them).
            http_version: ``1.1`` or ``1.0`` (an ``HTTP/`` prefix is tolerated).
        """
        ...


class IdentifierConfigError(ValueError):
    """An ``identifier`` config block is wrong; the message names the kind and key."""


# -- request helpers ----------------------------------------------------------------------------

_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def split_target(target: str) -> tuple[str, str | None, str, str]:
    """Split a request target into ``(origin, authority, path, query)``.

    ``origin`` is ``scheme://authority`` for an absolute-form target and ``""`` otherwise;
    ``authority`` is the absolute-form authority without userinfo (None for other forms);
    ``path`` is the path ("" for ``*`` and authority-form); ``query`` includes its ``?`` (or
    is ``""``). ``origin + path + query`` gives the target back, minus any fragment.
    """
    target = target.split("#", 1)[0]
    origin = ""
    authority: str | None = None
    rest = target
    m = _SCHEME.match(target)
    if m is not None:
        after = target[m.end() :]
        end = len(after)
        for sep in "/?":
            i = after.find(sep)
            if i >= 0:
                end = min(end, i)
        authority = after[:end].rpartition("@")[2]
        origin = target[: m.end() + end]
        rest = after[end:]
    elif not target.startswith("/"):
        return "", None, "", ""  # '*' (OPTIONS *) or authority-form (CONNECT host:port)
    path, q, query = rest.partition("?")
    return origin, authority, path, q + query


def _bytes(text: str) -> bytes:
    """Text from the server (normally ASCII) back to bytes, whatever it holds.

    ``surrogateescape`` restores bytes a server decoded with it; ``surrogatepass`` keeps any
    other lone surrogate, so this never raises.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (case-insensitive), as Finagle's ``headerMap.get``."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _host(target_authority: str | None, authority: str | None, headers: Headers) -> bytes | None:
    """The request's host as bytes, by the precedence in the module docstring."""
    if target_authority:
        return _bytes(target_authority)
    if authority:
        return _bytes(authority)
    return _header(headers, b"host")


def _segments(path: str) -> list[bytes] | None:
    """Raw path segments as labels; None if a segment is empty (``/a//b``).

    A trailing ``/`` is ignored, so ``/a/`` has the one segment ``a``.
    """
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    if parts and parts[-1] == "":
        parts.pop()
    if any(p == "" for p in parts):
        return None
    return [_bytes(p) for p in parts]


def _version(http_version: str) -> str:
    v = http_version.strip()
    return v[5:] if v.upper().startswith("HTTP/") else v


# -- identifiers --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderTokenIdentifier:
    """``io.l5d.header.token``: ``dst_prefix`` + one header's value as a single label."""

    dst_prefix: Path
    header: str = "Host"

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`. ``Host`` honours absolute-form targets and ``authority``."""
        name = self.header.lower().encode("latin-1", "replace")
        if name == b"host":
            value = _host(split_target(target)[1], authority, headers)
        else:
            value = _header(headers, name)
        if not value:
            return None
        return Identified(self.dst_prefix + Path(value))


@dataclass(frozen=True)
class MethodAndHostIdentifier:
    """``io.l5d.methodAndHost``: ``/1.1/<METHOD>/<host>`` or ``/1.0/<METHOD>``, [+ the URI]."""

    dst_prefix: Path
    http_uri_in_dst: bool = False

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`. HTTP/1.1 needs a host; other versions are not identified."""
        if not method:
            return None
        _, target_authority, path, _ = split_target(target)
        suffix: list[bytes] = []
        if self.http_uri_in_dst and path:
            segments = _segments(path)
            if segments is None:
                return None
            suffix = segments
        version = _version(http_version)
        m = _bytes(method)
        if version == "1.1":
            host = _host(target_authority, authority, headers)
            if not host:
                return None
            # bytes.lower() is ASCII-only, like Java's toLowerCase on a DNS name.
            labels = [b"1.1", m, host.lower(), *suffix]
        elif version == "1.0":
            labels = [b"1.0", m, *suffix]
        else:
            return None
        return Identified(self.dst_prefix + Path(*labels))


@dataclass(frozen=True)
class PathIdentifier:
    """``io.l5d.path``: the first ``segments`` path segments; ``consume`` strips them."""

    dst_prefix: Path
    segments: int = 1
    consume: bool = False

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`. Fewer than ``segments`` segments: not identified."""
        origin, _, path, query = split_target(target)
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        if len(parts) < self.segments or any(p == "" for p in parts[: self.segments]):
            return None
        name = [_bytes(p) for p in parts[: self.segments]]
        rewritten: str | None = None
        if self.consume:
            rest = "/".join(parts[self.segments :])
            rewritten = origin + "/" + rest + query
        return Identified(self.dst_prefix + Path(*name), rewritten)


@dataclass(frozen=True)
class HeaderIdentifier:
    """``io.l5d.header``: the header value is a path (``/users/v2``) after ``dst_prefix``."""

    dst_prefix: Path
    header: str = "l5d-name"

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`. A value that is not a path (or is ``/``): not identified."""
        value = _header(headers, self.header.lower().encode("latin-1", "replace"))
        if not value or not value.startswith(b"/"):
            return None
        try:
            path = Path.read(value)
        except (DtabParseError, ValueError, UnicodeDecodeError):
            return None
        if path.is_empty:
            return None
        return Identified(self.dst_prefix + path)


@dataclass(frozen=True)
class StaticIdentifier:
    """``io.l5d.static``: every request gets ``dst_prefix`` + ``path``."""

    dst_prefix: Path
    path: Path

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`. Always identifies."""
        return Identified(self.dst_prefix + self.path)


@dataclass(frozen=True)
class IdentifierChain:
    """A list of identifiers: the first one that names the request wins."""

    identifiers: tuple[Identifier, ...]

    def identify(
        self, method: str, target: str, authority: str | None, headers: Headers, http_version: str
    ) -> Identified | None:
        """See :class:`Identifier`."""
        for ident in self.identifiers:
            found = ident.identify(method, target, authority, headers, http_version)
            if found is not None:
                return found
        return None


# -- config -------------------------------------------------------------------------------------

#: The identifier used when the router config has none (Linkerd's default).
DEFAULT_IDENTIFIER_KIND: Final = "io.l5d.header.token"

#: Accepted keys per kind (besides ``kind``); anything else is a config error, as in Linkerd.
KINDS: Final[Mapping[str, frozenset[str]]] = {
    "io.l5d.header.token": frozenset({"header"}),
    "io.l5d.methodAndHost": frozenset({"httpUriInDst"}),
    "io.l5d.path": frozenset({"segments", "consume"}),
    "io.l5d.header": frozenset({"header"}),
    "io.l5d.static": frozenset({"path"}),
}


def _bool(kind: str, cfg: Mapping[str, Any], key: str, default: bool) -> bool:
    v = cfg.get(key, default)
    if not isinstance(v, bool):
        raise IdentifierConfigError(f"identifier {kind}: {key} must be true or false, got {v!r}")
    return v


def _header_name(kind: str, cfg: Mapping[str, Any], default: str) -> str:
    v = cfg.get("header", default)
    if not isinstance(v, str) or not v or not v.isascii() or any(c in v for c in " \t:\r\n"):
        raise IdentifierConfigError(f"identifier {kind}: header must be a header name, got {v!r}")
    return v


def _one(cfg: Any, dst_prefix: Path) -> Identifier:
    if not isinstance(cfg, Mapping):
        raise IdentifierConfigError(f"an identifier must be an object with a kind, got {cfg!r}")
    kind = cfg.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        raise IdentifierConfigError(f"unknown identifier kind {kind!r} (known: {known})")
    unknown = sorted(set(cfg) - KINDS[kind] - {"kind"})
    if unknown:
        raise IdentifierConfigError(
            f"identifier {kind}: unknown key {unknown[0]!r} "
            f"(allowed: {', '.join(sorted(KINDS[kind])) or 'none'})"
        )
    if kind == "io.l5d.header.token":
        return HeaderTokenIdentifier(dst_prefix, _header_name(kind, cfg, "Host"))
    if kind == "io.l5d.methodAndHost":
        return MethodAndHostIdentifier(dst_prefix, _bool(kind, cfg, "httpUriInDst", False))
    if kind == "io.l5d.path":
        segments = cfg.get("segments", 1)
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
            raise IdentifierConfigError(
                f"identifier {kind}: segments must be an integer >= 1, got {segments!r}"
            )
        return PathIdentifier(dst_prefix, segments, _bool(kind, cfg, "consume", False))
    if kind == "io.l5d.header":
        return HeaderIdentifier(dst_prefix, _header_name(kind, cfg, "l5d-name"))
    text = cfg.get("path")
    if not isinstance(text, str):
        raise IdentifierConfigError(f"identifier {kind}: path is required, e.g. /users")
    try:
        path = Path.read(text)
    except DtabParseError as err:
        raise IdentifierConfigError(
            f"identifier {kind}: path {text!r} is not a path: {err}"
        ) from err
    return StaticIdentifier(dst_prefix, path)


def build_identifier(
    configs: list[dict[str, Any]] | dict[str, Any] | None, dst_prefix: Path
) -> Identifier:
    """Build the router's identifier from its ``identifier`` config.

    Args:
        configs: None (the default ``io.l5d.header.token`` on ``Host``), one identifier
            object, or a list tried in order.
        dst_prefix: the router's ``dstPrefix``.

    Raises:
        IdentifierConfigError: an unknown kind or key, a wrongly typed value, an empty list.
    """
    if configs is None:
        return HeaderTokenIdentifier(dst_prefix)
    if isinstance(configs, list):
        if not configs:
            raise IdentifierConfigError("identifier: the list must hold at least one identifier")
        built = tuple(_one(c, dst_prefix) for c in configs)
        return built[0] if len(built) == 1 else IdentifierChain(built)
    return _one(configs, dst_prefix)
