"""Whether a browser may have sent a write: one rule for namerd's API and the linker's admin.

Both servers take writes without credentials by default (namerd without ``auth.token``, the
linker's ``POST /admin/shutdown`` always), so any web page a developer opens could send them:

* **cross-origin requests.** A page on ``https://evil.example`` can POST to
  ``http://127.0.0.1:4180`` without a CORS preflight when the body is a "simple" type
  (``text/plain``, a form); the browser hides the answer, but the write is done;
* **DNS rebinding.** ``evil.example`` re-resolves to 127.0.0.1 after the page loaded, so the
  page's requests are *same-origin* to the browser and carry ``Host: evil.example``.

:func:`check_write` decides from the request's method and headers alone (pure, stdlib only, so
both sides share it) and returns a :class:`Refusal` or None. Only *unsafe* methods (POST, PUT,
DELETE, PATCH) are judged; a server calls it for its writes and admin actions, and not for
reads, even those namerd also serves on POST (bind, delegate: a browser cannot read the
answer of a cross-origin request, and linkers and Linkerd read namerd under whatever name the
network gives it). The checks, in order:

1. **Host** (DNS rebinding) -> **421 Misdirected Request**: the Host must be ``localhost``, an
   IP literal, or a name in the server's ``allowedHosts`` (``*`` allows any); the port is not
   compared. An IP literal is always fine: a rebinding page carries its own *name* as Host,
   never an address. A request without Host (HTTP/1.0) is not from a browser and passes.
2. **Sec-Fetch-Site** -> **403**: ``cross-site`` and ``same-site`` are refused; ``same-site``
   too, because every port of ``localhost`` is the same site: a local dev server's page is
   same-site to namerd. ``same-origin``, ``none`` (typed by the user) and no header pass.
3. **Origin** -> **403**: when present it must name the request's own Host (host and port,
   the port defaulting from the Origin's scheme); ``null`` (sandboxed frames, ``file:``) is
   refused. Browsers send Origin on every cross-origin POST, also those without Sec-Fetch-Site.
4. **Content-Type** -> **415**, only if the caller asks (``refuse_simple_bodies``): a write
   body of a CORS-simple type (``text/plain``, ``application/x-www-form-urlencoded``,
   ``multipart/form-data``) is the only kind a page can send cross-origin without a preflight,
   so an API whose writes take ``application/json`` or ``application/dtab`` refuses them,
   which also covers browsers too old to send Origin.

Non-browser clients (curl, namerctl, Linkerd) send neither Origin nor Sec-Fetch-Site, so only
the Host rule can affect them: a client that reaches a server by a DNS name needs that name in
``allowedHosts``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from .configtree import Section

__all__ = [
    "ANY_HOST",
    "SIMPLE_CONTENT_TYPES",
    "UNSAFE_METHODS",
    "Refusal",
    "check_write",
    "host_allowed",
    "parse_allowed_hosts",
    "read_allowed_hosts",
    "split_authority",
]

#: Methods that change something; the only ones :func:`check_write` judges.
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "DELETE", "PATCH"})
#: The Content-Types a page may send cross-origin without a CORS preflight (Fetch standard).
SIMPLE_CONTENT_TYPES: Final = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
#: An ``allowedHosts`` entry that allows every Host.
ANY_HOST: Final = "*"
#: Names every server answers to besides IP literals and its ``allowedHosts``.
LOOPBACK_NAMES: Final = frozenset({"localhost"})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a write was refused: the HTTP status, a stable code, and a sentence for people."""

    status: int
    code: str
    reason: str


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` for IPv6) -> (lower-case host, port); None if malformed.

    The host loses a trailing dot (``localhost.`` is ``localhost``) and IPv6 brackets.
    """
    text = authority.strip()
    if not text or not text.isascii() or any(c.isspace() or c in "/?#@\\" for c in text):
        return None
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        return None  # an IPv6 literal without brackets is not a valid Host
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    host = host.lower().removesuffix(".")
    return (host, port) if host else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """True if ``host`` (from :func:`split_authority`) is one the server answers to."""
    allowed = {h.lower().removesuffix(".") for h in allowed_hosts}
    return ANY_HOST in allowed or host in LOOPBACK_NAMES or host in allowed or _is_ip(host)


def parse_allowed_hosts(value: object) -> tuple[str, ...]:
    """An ``allowedHosts`` config value: a list of host names (no ports) or ``*``.

    Raises:
        ValueError: naming the entry that is not a host name.
    """
    if not isinstance(value, list):
        raise ValueError("must be a list of host names, e.g. [namerd, namerd.example.com]")
    hosts: list[str] = []
    for i, item in enumerate(value):
        if item == ANY_HOST:
            hosts.append(ANY_HOST)
            continue
        parsed = split_authority(item) if isinstance(item, str) else None
        if parsed is None or parsed[1] is not None:
            raise ValueError(
                f"entry {i} ({item!r}) must be a host name without a port (any port is "
                "allowed), or * for any host"
            )
        hosts.append(parsed[0])
    return tuple(hosts)


def check_write(
    method: str,
    host: str | None,
    origin: str | None,
    sec_fetch_site: str | None,
    content_type: str | None,
    *,
    allowed_hosts: Iterable[str] = (),
    refuse_simple_bodies: bool = False,
    allowed_hosts_key: str = "allowedHosts",
) -> Refusal | None:
    """None if the request may be a write; else why not (see the module docstring).

    ``allowed_hosts_key`` names the config key in the 421 message, so the refusal says what
    to change.
    """
    if method.upper() not in UNSAFE_METHODS:
        return None
    own: tuple[str, int | None] | None = None
    if host is not None:
        own = split_authority(host)
        if own is None or not host_allowed(own[0], allowed_hosts):
            return Refusal(
                421,
                "host-not-allowed",
                f"this server does not answer to Host {host!r} for writes (a DNS-rebinding "
                f"guard); add the name to {allowed_hosts_key}, or use an IP address or localhost",
            )
    site = (sec_fetch_site or "").strip().lower()
    if site in ("cross-site", "same-site"):
        return Refusal(
            403,
            "cross-site",
            f"a write from another site's page (Sec-Fetch-Site: {site}) is refused; send it "
            "from a client that is not a browser, or from a page of this server",
        )
    if origin is not None:
        reason = _origin_problem(origin.strip(), own)
        if reason:
            return Refusal(403, "cross-origin", reason)
    if refuse_simple_bodies and method.upper() in _BODY_METHODS:
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media in SIMPLE_CONTENT_TYPES:
            return Refusal(
                415,
                "simple-content-type",
                f"Content-Type {media} is refused for writes (any web page can send it "
                "cross-origin); use application/json, or application/dtab for dtab text",
            )
    return None


def _origin_problem(origin: str, own: tuple[str, int | None] | None) -> str:
    """ "" if ``origin`` is the request's own Host, else why not."""
    if origin.lower() == "null":
        return "a write from an opaque origin (Origin: null) is refused"
    parts = urlsplit(origin)
    scheme = parts.scheme.lower()
    authority = split_authority(parts.netloc) if scheme in _DEFAULT_PORTS else None
    if authority is None or parts.path not in ("", "/"):
        return f"Origin {origin!r} is not a web origin; writes from pages are refused"
    if own is None:
        return f"a write from a page (Origin {origin!r}) without a Host header is refused"
    default = _DEFAULT_PORTS[scheme]
    if (authority[0], authority[1] or default) != (own[0], own[1] or default):
        return (
            f"a write from another origin ({origin}) is refused; only pages served by this "
            "server may write"
        )
    return ""


def read_allowed_hosts(sec: Section, key: str = "allowedHosts") -> tuple[str, ...]:
    """``sec[key]`` read with :func:`parse_allowed_hosts`; errors point at the key (both config
    loaders: namerd's interfaces, the linker's admin)."""
    try:
        return parse_allowed_hosts(sec.get(key, [], list))
    except ValueError as err:
        raise sec.error(key, str(err)) from None
