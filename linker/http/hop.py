"""Pure helpers over :data:`Headers` lists: lookups, edits, hop-by-hop stripping and ``Via``.

Every function returns a new list and never mutates its argument, so a handler can keep the
client's headers intact while it builds the upstream request.  Names may be given as ``str`` or
``bytes`` in any case; the lists themselves hold lower-case ``bytes`` names (the h11 convention,
which the server guarantees for requests and the upstream pool for responses).
"""

from __future__ import annotations

from linker.http.messages import Headers

__all__ = [
    "HOP_BY_HOP",
    "Headers",
    "add_via",
    "get",
    "get_all",
    "set",
    "set_many",
    "strip_hop_by_hop",
    "via_depth",
    "via_value",
]

# RFC 7230 §6.1 (and RFC 9110 §7.6.1): fields that describe one connection, not the message.
# Linkerd's StripHopByHopHeadersFilter removes the same list.  ``keep-alive`` and
# ``proxy-connection`` are not in Linkerd's list but are hop-by-hop in practice (RFC 2068
# §19.7.1 and old browsers), and forwarding them confuses the next hop.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_VIA = b"via"


def _name(name: str | bytes) -> bytes:
    return (name.encode("latin-1") if isinstance(name, str) else name).lower()


def get(headers: Headers, name: str | bytes) -> bytes | None:
    """The value of the first field called ``name``, or ``None`` if there is none."""
    key = _name(name)
    for k, v in headers:
        if k == key:
            return v
    return None


def get_all(headers: Headers, name: str | bytes) -> list[bytes]:
    """The values of every field called ``name``, in order (not split on commas)."""
    key = _name(name)
    return [v for k, v in headers if k == key]


def set(headers: Headers, name: str | bytes, value: bytes) -> Headers:
    """``headers`` with exactly one ``name`` field, holding ``value``.

    The field keeps the position of the first existing ``name`` field (others are dropped),
    or is appended if there was none.
    """
    key = _name(name)
    out: Headers = []
    placed = False
    for k, v in headers:
        if k == key:
            if not placed:
                out.append((key, value))
                placed = True
        else:
            out.append((k, v))
    if not placed:
        out.append((key, value))
    return out


def _comma_tokens(values: list[bytes]) -> list[bytes]:
    return [t.strip().lower() for v in values for t in v.split(b",") if t.strip()]


def set_many(headers: Headers, fields: dict[bytes, bytes]) -> Headers:
    """Like :func:`set` for each of ``fields`` (lower-case names) in order, in one pass."""
    out: Headers = []
    placed: list[bytes] = []
    for k, v in headers:
        value = fields.get(k)
        if value is None:
            out.append((k, v))
        elif k not in placed:
            out.append((k, value))
            placed.append(k)
    for k, value in fields.items():
        if k not in placed:
            out.append((k, value))
    return out


def via_value(headers: Headers, http_version: str) -> bytes:
    """The single ``Via`` value :func:`add_via` sets."""
    ours = b"1.0 linkerd" if http_version == "1.0" else b"1.1 linkerd"
    existing = [v.strip() for v in get_all(headers, _VIA) if v.strip()]
    return b", ".join([*existing, ours]) if existing else ours


def strip_hop_by_hop(headers: Headers, also: frozenset[bytes] = frozenset()) -> Headers:
    """``headers`` without hop-by-hop fields: those of :data:`HOP_BY_HOP` and any field that a
    ``Connection`` header names (RFC 7230 §6.1: ``Connection: close, x-foo`` makes ``x-foo``
    hop-by-hop).  Used on requests and responses alike, as Linkerd does; so Upgrade (e.g.
    WebSocket) does not pass through the linker.  ``also``: more (lower-case) names to drop
    in the same pass.
    """
    named = {
        *_comma_tokens(get_all(headers, b"connection")),
        *_comma_tokens(get_all(headers, b"proxy-connection")),
    }
    drop = HOP_BY_HOP | also if also else HOP_BY_HOP
    if not named:  # the usual case: one set lookup per field
        return [(k, v) for k, v in headers if k not in drop]
    return [(k, v) for k, v in headers if k not in drop and k not in named]


def add_via(headers: Headers, http_version: str) -> Headers:
    """``headers`` with ``<version> linkerd`` appended to ``Via`` (RFC 9110 §7.6.3), as Linkerd.

    Like Linkerd's ViaHeaderAppenderFilter, the result has a single ``Via`` field: the existing
    values joined with ``", "``, then ``1.1 linkerd`` (``1.0 linkerd`` for an HTTP/1.0 message).
    It takes the position of the first existing ``Via`` field, or goes last.
    """
    return set(headers, _VIA, via_value(headers, http_version))


def via_depth(headers: Headers) -> int:
    """How many proxies the message has passed: the number of entries in all ``Via`` fields.

    This is what ``maxCallDepth`` limits.  Commas inside a comment (``1.1 a (x, y)``) do not
    separate entries.
    """
    count = 0
    for value in get_all(headers, _VIA):
        depth = 0
        entry = False
        for byte in value:
            if byte == 0x28:  # "("
                depth += 1
            elif byte == 0x29 and depth:  # ")"
                depth -= 1
            elif byte == 0x2C and depth == 0:  # ","
                count += entry
                entry = False
                continue
            if byte not in b" \t":
                entry = True
        count += entry
    return count
