"""``io.l5d.fs``: the service-file format and the directory scan, shared by both namers.

The linker's trio namer, namerd's asyncio namer and the linker admin's route explainer all see
a ``rootDir`` through this module, so a service resolves the same everywhere. Each side keeps
its own watching loop (a timer and a worker thread) and DNS; this module does no waiting.

File format (Linkerd's)
-----------------------
One file per service, named by the file name (``rootDir/users`` is ``<prefix>/users``); one
endpoint per line::

    # comment
    10.0.0.1 8080
    10.0.0.2 8080 * 0.5          # weight, under Address.meta["endpoint_addr_weight"]
    users-1.internal 8080        # a host name, resolved by the namer

Blank lines and ``#`` comments are ignored. The weight follows ``shared.addr``'s one rule
(finite, ``>= 0``). The same endpoint twice is an error. A file that does not parse (or is not
UTF-8, or cannot be read) makes *that service's* addr ``AddrFailed``, naming file and line; the
service still binds, so the operator sees the error instead of a silent fallback.

Directory rules
---------------
* A file whose name is not a path label (``0-9 A-Z a-z _ : . # $ % -``; e.g. ``a b``) cannot be
  named by a path: it is skipped and reported in :attr:`FsScan.bad_names`, so the caller can
  warn once per appearance.
* Hidden files (a leading ``.``) are skipped silently, although ``.`` is a label character:
  editors and atomic writers (write ``.users.tmp``, rename it to ``users``) use them as scratch
  files, and a service must not flicker into existence because of one.
* Sub-directories are skipped. Symlinks are followed, so a Kubernetes ConfigMap volume (files
  are symlinks through ``..data``) works.

Re-reading
----------
:func:`scan_service_dir` stats every file and re-reads one only when its signature (inode,
size, mtime, ctime) changed: an atomic rename changes the inode, a write the size or mtime. One
hole remains: a same-size rewrite inside the file system's mtime granularity (2 s on FAT).
As git does for its index ("racily clean" entries), a file whose mtime is within
:data:`RACY_WINDOW_NS` of the scan is read again on every scan until it is older. The caller
passes the scan's start time (``now_ns``), which keeps this module free of clocks. A file whose
parsed content did not change keeps its :class:`FsService` object, so callers can tell "touched"
from "changed" by comparing services.
"""

from __future__ import annotations

import codecs
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .addr import (
    ADDR_NEG,
    ADDR_PENDING,
    WEIGHT_META_KEY,
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrPending,
    parse_weight,
)
from .names import Bound, Name
from .nametree import NEG, Leaf, NameTree
from .path import Path, show_label

__all__ = [
    "BAD_NAME_REASON",
    "RACY_WINDOW_NS",
    "FsDirectory",
    "FsEndpoint",
    "FsFileError",
    "FsFileState",
    "FsScan",
    "FsService",
    "parse_endpoints",
    "parse_ip",
    "read_service_file",
    "scan_service_dir",
]

#: The coarsest file mtime granularity we expect (FAT: 2 s); see "Re-reading".
RACY_WINDOW_NS: Final = 2_000_000_000

#: Why a file is skipped when its name is not a path label (for the callers' warning).
BAD_NAME_REASON: Final = "a file name must be a path label (only 0-9 A-Z a-z _ : . # $ % -)"

#: ``resolve(host, port)``: the addresses of a host name (a namer's DNS, answered from memory).
Resolve = Callable[[str, int], Addr]


class FsFileError(ValueError):
    """A service file does not parse; ``str()`` is ``<file>:<line>: <problem>``."""


def parse_ip(host: str) -> str | None:
    """The canonical text of ``host`` if it is an IPv4/IPv6 literal (``::1``), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class FsEndpoint:
    """One endpoint line: ``host port [* weight]``. ``ip`` is set when ``host`` is an IP."""

    line: int
    host: str
    port: int
    weight: float | None = None

    @property
    def ip(self) -> str | None:
        """The canonical IP text if ``host`` is an IP literal, else None (a name to resolve)."""
        return parse_ip(self.host)

    @property
    def meta(self) -> dict[str, Any]:
        """The Address meta: the weight under Linkerd's key, when the line gives one."""
        return {} if self.weight is None else {WEIGHT_META_KEY: self.weight}


def parse_endpoints(text: str, source: str) -> list[FsEndpoint]:
    """Parse a service file.

    Args:
        text: the file content.
        source: how to name the file in errors (its path).

    Raises:
        FsFileError: on the first bad line, naming ``source`` and the 1-based line number.
    """
    endpoints: list[FsEndpoint] = []
    first_line: dict[tuple[str, int], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        endpoint = _parse_line(line, number, source)
        key = (endpoint.ip or endpoint.host.lower(), endpoint.port)
        if key in first_line:
            raise FsFileError(
                f"{source}:{number}: duplicate endpoint {endpoint.host} {endpoint.port} "
                f"(first on line {first_line[key]})"
            )
        first_line[key] = number
        endpoints.append(endpoint)
    return endpoints


def _parse_line(line: str, number: int, source: str) -> FsEndpoint:
    def bad(problem: str) -> FsFileError:
        return FsFileError(f"{source}:{number}: {problem} in {line!r}")

    fields = line.split()
    if len(fields) == 2:
        host, port_text, weight = fields[0], fields[1], None
    elif len(fields) == 4 and fields[2] == "*":
        host, port_text = fields[0], fields[1]
        try:
            number_value = float(fields[3])
        except ValueError:
            raise bad(f"weight {fields[3]!r} is not a number") from None
        try:
            weight = parse_weight(number_value)
        except ValueError as err:
            raise bad(f"weight {fields[3]!r} {err}") from None
    else:
        raise bad("expected 'host port' or 'host port * weight'")
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise bad(f"port {port_text!r} must be a number 0-65535")
    if parse_ip(host) is None and not _is_host_name(host):
        raise bad(f"host {host!r} is neither an IP address nor a host name")
    return FsEndpoint(number, host, int(port_text), weight)


def _is_host_name(host: str) -> bool:
    # Letters, digits, '-', '_' and '.', as DNS names (and /etc/hosts names) use; the
    # resolver reports anything subtler, such as an empty label.
    return host.isascii() and all(c.isalnum() or c in "-_." for c in host)


# -- one service file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FsService:
    """A read service file.

    ``fixed`` is its Addr when no DNS is needed: the addresses when every host is an IP
    literal, or ``AddrFailed`` when the file cannot be used. None means host names must be
    resolved first (see :func:`fs_addr`).
    """

    source: str
    endpoints: tuple[FsEndpoint, ...]
    fixed: Addr | None


def read_service_file(path: str) -> FsService:
    """Read and parse one file; every problem becomes that service's ``AddrFailed``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        return FsService(path, (), AddrFailed(f"{path}: cannot read: {err.strerror or err}"))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # utf-8-sig counts the offset after a byte order mark, if there is one.
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        line = data.count(b"\n", 0, bom + err.start) + 1
        return FsService(path, (), AddrFailed(f"{path}:{line}: not UTF-8 text"))
    try:
        endpoints = tuple(parse_endpoints(text, path))
    except FsFileError as err:
        return FsService(path, (), AddrFailed(str(err)))
    ips = [e.ip for e in endpoints]
    if all(ip is not None for ip in ips):
        addrs = frozenset(
            Address(ip or e.host, e.port, e.meta) for ip, e in zip(ips, endpoints, strict=True)
        )
        return FsService(path, endpoints, AddrBound(addrs))
    return FsService(path, endpoints, None)


def _resolved(service: FsService, resolve: Resolve) -> Addr:
    """The addresses of a service with host names, each name asked of ``resolve``.

    Pending while any name has no first answer. A name that fails (or is unknown) is left
    out, as Linkerd only renders resolved addresses; only if *nothing* resolves is the service
    ``AddrFailed``, naming file, line and cause. Two lines resolving to one address: the first
    line's meta wins.
    """
    found: dict[tuple[str, int], Address] = {}
    failures: list[str] = []
    pending = False
    for e in service.endpoints:
        ip = e.ip
        answer = AddrBound(frozenset({Address(ip, e.port)})) if ip else resolve(e.host, e.port)
        if isinstance(answer, AddrBound):
            for a in answer.sorted_addrs():
                found.setdefault((a.ip, a.port), Address(a.ip, a.port, e.meta))
        elif isinstance(answer, AddrPending):
            pending = True
        elif isinstance(answer, AddrFailed):
            failures.append(f"{service.source}:{e.line}: {answer.cause}")
        else:  # a resolver that says "no such name" without a cause
            failures.append(f"{service.source}:{e.line}: host {e.host!r} not found")
    if pending:
        return ADDR_PENDING
    if not found and failures:
        return AddrFailed("; ".join(failures))
    return AddrBound(frozenset(found.values()))


# -- the directory ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FsFileState:
    """What a scan knows about one file."""

    signature: tuple[int, int, int, int]  # inode, size, mtime, ctime
    racy: bool  # modified within RACY_WINDOW_NS of the scan: read it again next time
    service: FsService


@dataclass(frozen=True, slots=True)
class FsScan:
    """One scan of ``rootDir``: the services by file name, and the names skipped as bad."""

    files: Mapping[str, FsFileState]
    bad_names: frozenset[str] = frozenset()

    @property
    def services(self) -> dict[bytes, FsService]:
        """The services by path label (what a lookup's first label is compared with)."""
        return {os.fsencode(name): state.service for name, state in self.files.items()}


def scan_service_dir(
    root: str | os.PathLike[str], previous: FsScan | None = None, *, now_ns: int
) -> FsScan:
    """List ``root`` and read its service files, re-reading only what changed since ``previous``.

    Args:
        root: the directory (config ``rootDir``).
        previous: the last scan, whose unchanged files are not read again. None reads all.
        now_ns: the wall clock (``time.time_ns()``) taken just before this call; see
            "Re-reading" in the module docstring.

    Raises:
        OSError: ``root`` cannot be listed (missing, not a directory, no permission).
    """
    known = previous.files if previous is not None else {}
    files: dict[str, FsFileState] = {}
    bad: set[str] = set()
    with os.scandir(root) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue  # scratch files; see "Directory rules"
            try:
                if not entry.is_file():  # follows symlinks; skips dirs such as ..data
                    continue
                st = entry.stat()
            except OSError:
                continue  # removed while we were listing
            if show_label(os.fsencode(name)) != name:
                bad.add(name)
                continue
            signature = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            old = known.get(name)
            if old is not None and old.signature == signature and not old.racy:
                files[name] = old
                continue
            service = read_service_file(entry.path)
            if old is not None and old.service == service:
                service = old.service  # keep identity: nothing changed
            racy = st.st_mtime_ns >= now_ns - RACY_WINDOW_NS
            files[name] = FsFileState(signature, racy, service)
    return FsScan(files, frozenset(bad))


class FsDirectory:
    """A namer's view of ``rootDir``: the current services, lookup and addr over them.

    The runtime-neutral half of an ``io.l5d.fs`` namer. The namer's loop calls :meth:`scan` in
    a worker thread, then :meth:`apply` on its own thread (one scan at a time); ``lookup`` and
    ``addr`` read only memory, as the binding stepper needs.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = root
        self.last: FsScan | None = None
        self.services: dict[bytes, FsService] = {}

    def scan(self, now_ns: int) -> FsScan:
        """:func:`scan_service_dir` from the last applied scan. Raises OSError like it."""
        return scan_service_dir(self.root, self.last, now_ns=now_ns)

    def apply(self, scan: FsScan) -> tuple[bool, list[str]]:
        """Make ``scan`` current.

        Returns:
            Whether any service appeared, disappeared or changed (notify then), and the bad
            file names that were not bad in the previous scan (warn about those, once).
        """
        old_bad = self.last.bad_names if self.last is not None else frozenset()
        self.last = scan
        services = scan.services
        changed = services != self.services
        if changed:
            self.services = services
        return changed, sorted(scan.bad_names - old_bad)

    def lookup(self, prefix: Path, path: Path) -> NameTree[Name]:
        """``/<service>/rest`` -> ``Leaf(Bound(prefix/<service>, /rest))`` if the file exists."""
        if path.is_empty or path[0] not in self.services:
            return NEG
        return Leaf(Bound(prefix + path.take(1), path.drop(1)))

    def addr(self, prefix: Path, id: Path, resolve: Resolve) -> Addr:
        """The endpoints of ``prefix/<service>``: ``neg`` if no such file, else its addresses.

        ``resolve`` answers host names (only asked for files that have some).
        """
        if len(id) != len(prefix) + 1 or not id.startswith(prefix):
            return ADDR_NEG
        service = self.services.get(id[len(prefix)])
        if service is None:
            return ADDR_NEG
        if service.fixed is not None:
            return service.fixed
        return _resolved(service, resolve)
