"""namerd's configuration: namerd's YAML shape, our defaults, and every limit in one place.

Config file shape (namerd's; unknown keys are an error naming the key and its file:line)::

    admin:      {ip: 127.0.0.1, port: 9991, shutdownGraceMs: 10000}
    storage:    {kind: io.l5d.redis, url: redis://host:6379/0, keyPrefix: "namerd:",
                 historySize: 50}
              | {kind: io.l5d.redis, sentinels: [{host: h, port: 26379}], service: mymaster}
              | {kind: io.l5d.embeddedRedis, dataDir: ./.namerd}        # the default
    namers:     [{kind: io.l5d.fs, prefix: /io.l5d.fs, rootDir: disco}, {kind: io.l5d.registry}]
    interfaces: [{kind: io.l5d.httpController, ip: 127.0.0.1, port: 4180, allowedHosts: []}]
    auth:       {token: s3cret}           # or NAMERD_TOKEN; guards writes only; printable ASCII
    limits:     {maxBodyBytes: 1048576, lookupTimeoutMs: 10000, delegateTimeoutMs: 2000,
                 watchHeartbeatMs: 15000, namesInUseRefreshMs: 5000,
                 storedDtabBudget: {maxNodes: 100000, maxResultNodes: 20000,
                                    maxOutputBytes: 16777216},
                 requestDtabBudget: {maxNodes: 4000, maxResultNodes: 1000,
                                     maxOutputBytes: 1048576}}

Values may use ``${VAR}`` and ``${VAR:-default}`` from the environment (``$$`` is a literal
``$``): ``url: ${NAMERD_REDIS_URL:-redis://redis:6379/0}`` (``shared.configtree``).

This module checks the file's shape, types and ranges. ``namerd --validate`` and every start
then also build what each worker builds from it (``namerd.main``: the Redis client from the
URL or the sentinels, every namer with its options, each ``io.l5d.fs`` ``rootDir`` listed, the
embedded Redis binary and data directory), so a config that validates cannot fail at a
worker's boot. Errors are one line, ``file:line:column: key: what is wrong``.

Keys of namerd's (Linkerd's) shape that this namerd does not implement are rejected by name
("not supported by this namerd; remove it"), never accepted and ignored: ``telemetry``,
``usage``, and ``tls``/``socketOptions`` on ``admin`` and ``interfaces``. ``storage.experimental``
is accepted: it only acknowledges an experimental storage, and nothing here needs that.

Defaults (the one place they are documented):

=======================  ==============  ==========================================================
key                      default         meaning
=======================  ==============  ==========================================================
interfaces               httpController  namerd requires the list; we default to the HTTP API
                         127.0.0.1:4180
interfaces[].allowedHosts []              Host names a write may be addressed to, besides
                                         ``localhost`` and IP literals (any port); ``*``: any.
                                         Others get 421 (DNS-rebinding guard,
                                         ``shared.webguard``); reads are not checked
namers[].allowNetworks   (none)          io.l5d.registry: CIDRs registrations may use (only
                                         these; they lift the default refusal of loopback,
                                         link-local, unspecified and multicast addresses)
namers[].denyNetworks    (none)          io.l5d.registry: CIDRs always refused -> 403
admin.ip / admin.port    127.0.0.1:9991  admin server (ping, metrics, namespaces page)
admin.shutdownGraceMs    10000           SIGTERM: time open requests get to finish
storage                  embedded        a real redis-server started by namerd, AOF on, unix socket
storage.dataDir          ./.namerd       embedded Redis data directory (also ``--data-dir``)
storage.keyPrefix        namerd:         prefix of every Redis key and channel
storage.historySize      50              writes kept per namespace in its history (>= 1;
                                         ``GET /api/1/dtabs/{ns}/history``)
limits.maxBodyBytes      1048576         larger request bodies get 413 and nothing is stored
limits.lookupTimeoutMs   10000           non-watch bind/addr/resolve waiting for a pending value
                                         (namerd waits forever, issue #1349) -> 503
limits.delegateTimeoutMs 2000            delegate explanation -> 503 ``Request timed out.``
limits.watchHeartbeatMs  15000           a watch stream gets a ``\\n`` after this long with nothing
                                         written to it
limits.namesInUseRefreshMs 5000          each worker tells Redis which names its watches bind
                                         this often; a dry run counts a name reported within
                                         3 periods (``namerd.runtime``, "Names in use")
limits.*DtabBudget       see below       the work one bind or delegate may do (stored dtab /
                                         with a request's ``dtab=``, tighter)
workers                  2               gunicorn worker processes (``--workers``)
=======================  ==============  ==========================================================

Work budgets (``shared.budget`` says what the units count and how the defaults were measured).
A bind or delegate whose request carries a non-empty ``dtab=`` (the linker always sends its
router's dtab and overrides there) gets ``requestDtabBudget``; one with the stored dtab alone
gets ``storedDtabBudget``. Over budget: 400 naming the limit (``namerd.http.problems``), or an
``exception`` value on a watch stream.

=======================================  ========  ============================================
key                                      default   meaning
=======================================  ========  ============================================
limits.storedDtabBudget.maxNodes         100000    work units of one bind or delegate
limits.storedDtabBudget.maxResultNodes   20000     nodes of the bound tree / the explanation
limits.storedDtabBudget.maxOutputBytes   16777216  delegate JSON (estimated while explaining)
limits.requestDtabBudget.maxNodes        4000      the same three, with a request's ``dtab=``
limits.requestDtabBudget.maxResultNodes  1000
limits.requestDtabBudget.maxOutputBytes  1048576
=======================================  ========  ============================================
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from namerd.configfile import ConfigError, Pos, Section, load_yaml
from shared import (
    REQUEST_DTAB_BUDGET,
    STORED_DTAB_BUDGET,
    Dtab,
    DtabParseError,
    Path,
    WorkBudget,
    configtree,
)
from shared.budget import budget_from_config
from shared.configtree import located_dict
from shared.webguard import read_allowed_hosts

__all__ = [
    "AdminConfig",
    "ConfigError",
    "InterfaceConfig",
    "Limits",
    "NamerConfig",
    "NamerdConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
]

DEFAULT_HTTP_PORT = 4180
DEFAULT_ADMIN_PORT = 9991
DEFAULT_DATA_DIR = "./.namerd"
DEFAULT_KEY_PREFIX = "namerd:"
DEFAULT_WORKERS = 2
DEFAULT_HISTORY_SIZE = 50

EMBEDDED = "io.l5d.embeddedRedis"
REDIS = "io.l5d.redis"
HTTP_CONTROLLER = "io.l5d.httpController"
# namerd storage/interface kinds we deliberately do not implement; named so the error is clear.
_UNSUPPORTED_STORAGE = {
    "io.l5d.inMemory",
    "io.l5d.zk",
    "io.l5d.etcd",
    "io.l5d.consul",
    "io.l5d.k8s",
}
_UNSUPPORTED_IFACE = {"io.l5d.thriftNameInterpreter", "io.l5d.mesh", "io.l5d.destination"}
# Keys of namerd's shape that this namerd does not implement, with what they would do.
_UNSUPPORTED_TOP = {"telemetry": "telemetry plugins; metrics are on the admin port",
                    "usage": "usage reporting"}  # fmt: skip
_UNSUPPORTED_LISTENER = {"tls": "TLS", "socketOptions": "socket options"}


def _reject_unsupported(sec: Any, table: Mapping[str, str]) -> None:
    for key, what in table.items():
        if sec.has(key):
            raise sec.error(key, f"not supported by this namerd ({what}); remove it")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where dtabs live: an embedded redis-server (default) or a Redis URL / Sentinel set."""

    kind: str = EMBEDDED
    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    data_dir: str = DEFAULT_DATA_DIR
    #: How many writes each namespace's history keeps (``storage.historySize``).
    history_size: int = DEFAULT_HISTORY_SIZE
    #: Where ``dataDir`` was configured (``file:line:col``); "" for ``--data-dir`` or the default.
    data_dir_pos: str = field(default="", compare=False)

    @property
    def embedded(self) -> bool:
        """True when namerd must start its own redis-server."""
        return self.kind == EMBEDDED


@dataclass(frozen=True, slots=True)
class NamerConfig:
    """One configured namer: its kind, mount prefix (``/#/...``) and kind-specific options."""

    kind: str
    prefix: Path
    options: dict[str, Any] = field(default_factory=dict, hash=False)
    where: str = "<config>"


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """The HTTP control API listener."""

    ip: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    #: Where the port was configured (``file:line:col``; "" for the default), for errors.
    listen_pos: str = field(default="", compare=False)
    #: Host names writes may name besides localhost and IP literals (``shared.webguard``).
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener."""

    ip: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    shutdown_grace_ms: int = 10_000
    #: Where the port was configured (``file:line:col``; "" for the default), for errors.
    listen_pos: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Limits:
    """Limits and timeouts of the API (see the module docstring for their meaning)."""

    max_body_bytes: int = 1_048_576
    lookup_timeout_ms: int = 10_000
    delegate_timeout_ms: int = 2_000
    watch_heartbeat_ms: int = 15_000
    names_in_use_refresh_ms: int = 5_000
    stored_dtab_budget: WorkBudget = STORED_DTAB_BUDGET
    request_dtab_budget: WorkBudget = REQUEST_DTAB_BUDGET

    def dtab_budget(self, extra: Dtab) -> WorkBudget:
        """The budget of a lookup whose request added ``extra`` (``dtab=``) to the stored dtab."""
        return self.request_dtab_budget if extra else self.stored_dtab_budget


@dataclass(frozen=True, slots=True)
class NamerdConfig:
    """The whole configuration of one namerd process."""

    storage: StorageConfig = StorageConfig()
    namers: tuple[NamerConfig, ...] = ()
    interface: InterfaceConfig = InterfaceConfig()
    admin: AdminConfig = AdminConfig()
    auth_token: str | None = None
    limits: Limits = Limits()
    workers: int = DEFAULT_WORKERS
    source: str = "<defaults>"
    #: The parsed file with positions (``shared.configtree``), so that errors found later, by
    #: the builders of namers and stores, can point at the key at fault.
    raw: Any = field(default=None, compare=False, hash=False)


_DEFAULT_LIMITS = Limits()


def _storage(raw: Any, pos: Pos | str | None, data_dir_override: str | None) -> StorageConfig:
    sec = Section(raw, "storage", pos)
    if raw is None:
        return StorageConfig(data_dir=data_dir_override or DEFAULT_DATA_DIR)
    kind = sec.get("kind", EMBEDDED, str)
    sec.get("experimental", False, bool)  # namerd's flag; accepted, meaningless here
    prefix = sec.get("keyPrefix", DEFAULT_KEY_PREFIX, str)
    history_size = sec.positive_int("historySize", DEFAULT_HISTORY_SIZE)
    if kind in _UNSUPPORTED_STORAGE:
        raise sec.error("kind", f"{kind} is not supported; use {REDIS} (or omit storage)")
    if kind == EMBEDDED:
        data_dir = sec.get("dataDir", DEFAULT_DATA_DIR, str)
        sec.done()
        if not data_dir:
            raise sec.error("dataDir", "must not be empty (default ./.namerd)")
        at = str(sec.key_pos("dataDir")) if sec.has("dataDir") and not data_dir_override else ""
        return StorageConfig(
            EMBEDDED,
            key_prefix=prefix,
            data_dir=data_dir_override or data_dir,
            data_dir_pos=at,
            history_size=history_size,
        )
    if kind != REDIS:
        raise sec.error("kind", f"unknown storage kind {kind!r} (known: {REDIS}, {EMBEDDED})")
    url = sec.get("url", None, str)
    raw_sentinels = sec.get("sentinels", None, list)
    service = sec.get("service", None, str)
    sec.done()
    sentinels: list[tuple[str, int]] = []
    for i, item in enumerate(raw_sentinels or []):
        s = Section(item, f"storage.sentinels[{i}]")
        host = s.get("host", None, str)
        port = s.port("port", 26379)
        s.done()
        if not host:
            raise s.error("host", "a sentinel needs a host")
        sentinels.append((host, port))
    if url and sentinels:
        raise sec.error("url", "give either url or sentinels, not both")
    if sentinels and not service:
        raise sec.error("service", "sentinels need the master's service name")
    if not url and not sentinels:
        raise sec.error("url", f"{REDIS} needs url (redis://, rediss://, unix://) or sentinels")
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise sec.error("url", f"unsupported URL scheme in {url!r} (redis://, rediss://, unix://)")
    if url and not url.startswith("unix://"):
        # redis-py reads the database number from the path and silently uses 0 for anything
        # else: a typo would put every dtab in the wrong database.
        db = urllib.parse.urlsplit(url).path.strip("/")
        if db and not db.isdigit():
            raise sec.error(
                "url", f"the database in {url!r} must be a number, e.g. redis://host:6379/0"
            )
    return StorageConfig(REDIS, url, tuple(sentinels), service, prefix, history_size=history_size)


def _namers(raw: Any, top: configtree.Section) -> tuple[NamerConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise top.error("namers", "must be a list of namers")
    out: list[NamerConfig] = []
    for i, item in enumerate(raw):
        sec = Section(item, f"namers[{i}]")
        kind = sec.get("kind", None, str)
        if not kind:
            raise ConfigError(f"{sec.pos}: namers[{i}] needs a kind")
        text = sec.get("prefix", f"/{kind}", str)
        try:
            prefix = Path.read(text)
        except DtabParseError as err:
            raise sec.error("prefix", f"invalid path: {err}") from None
        if prefix.is_empty:
            raise sec.error("prefix", "a namer prefix must not be empty")
        # Linkerd mounts a namer configured at /foo under /#/foo.
        if prefix.labels[0] != b"#":
            prefix = Path("#") + prefix
        options = {k: v for k, v in sec.value.items() if k not in ("kind", "prefix")}
        out.append(NamerConfig(kind, prefix, options, f"{sec.pos}"))
    for a in out:
        for b in out:
            if a is not b and (a.prefix.startswith(b.prefix)):
                raise ConfigError(
                    f"{a.where}: namer prefixes overlap: {a.prefix.show()} and {b.prefix.show()}"
                )
    return tuple(out)


def _interface(raw: Any, top: configtree.Section) -> InterfaceConfig:
    if raw is None:
        return InterfaceConfig()
    if not isinstance(raw, list) or not raw:
        raise top.error("interfaces", "one or more interfaces must be specified")
    found: InterfaceConfig | None = None
    for i, item in enumerate(raw):
        sec = Section(item, f"interfaces[{i}]")
        kind = sec.get("kind", None, str)
        if kind in _UNSUPPORTED_IFACE:
            raise sec.error("kind", f"{kind} is not supported; use {HTTP_CONTROLLER}")
        if kind != HTTP_CONTROLLER:
            raise sec.error("kind", f"unknown interface kind {kind!r} (known: {HTTP_CONTROLLER})")
        _reject_unsupported(sec, _UNSUPPORTED_LISTENER)
        allowed_hosts = read_allowed_hosts(sec)
        iface = InterfaceConfig(
            sec.ip("ip", "127.0.0.1"),
            sec.port("port", DEFAULT_HTTP_PORT),
            listen_pos=str(sec.key_pos("port")) if sec.has("port") else "",
            allowed_hosts=allowed_hosts,
        )
        sec.done()
        if found is not None:
            raise sec.error("kind", f"only one {HTTP_CONTROLLER} interface is supported")
        found = iface
    assert found is not None
    return found


def parse_config(
    raw: Any,
    source: str = "<config>",
    *,
    data_dir: str | None = None,
    workers: int | None = None,
    env: Mapping[str, str] | None = None,
) -> NamerdConfig:
    """Build a :class:`NamerdConfig` from parsed YAML; command-line values override the file.

    Raises:
        ConfigError: naming the key and its position for anything unknown or invalid.
    """
    env = os.environ if env is None else env
    top = Section(raw, configtree.TOP_LEVEL)
    _reject_unsupported(top, _UNSUPPORTED_TOP)
    storage = _storage(
        top.get("storage"), top.key_pos("storage") if top.has("storage") else None, data_dir
    )
    namers = _namers(top.get("namers"), top)
    interface = _interface(top.get("interfaces"), top)
    admin_sec = Section(top.get("admin"), "admin", top.key_pos("admin"))
    _reject_unsupported(admin_sec, _UNSUPPORTED_LISTENER)
    admin = AdminConfig(
        admin_sec.ip("ip", "127.0.0.1"),
        admin_sec.port("port", DEFAULT_ADMIN_PORT),
        admin_sec.positive_int("shutdownGraceMs", 10_000),
        listen_pos=str(admin_sec.key_pos("port")) if admin_sec.has("port") else "",
    )
    admin_sec.done()
    auth_sec = Section(top.get("auth"), "auth")
    token = auth_sec.get("token", None, str) or env.get("NAMERD_TOKEN") or None
    if token is not None and not (token.isascii() and token.isprintable() and " " not in token):
        # An Authorization header carries ASCII; any other token could never be sent.
        if not auth_sec.has("token"):
            raise ConfigError("NAMERD_TOKEN must be printable ASCII without spaces")
        raise auth_sec.error("token", "must be printable ASCII without spaces")
    auth_sec.done()
    lim = Section(top.get("limits"), "limits")
    limits = Limits(
        lim.positive_int("maxBodyBytes", _DEFAULT_LIMITS.max_body_bytes),
        lim.positive_int("lookupTimeoutMs", _DEFAULT_LIMITS.lookup_timeout_ms),
        lim.positive_int("delegateTimeoutMs", _DEFAULT_LIMITS.delegate_timeout_ms),
        lim.positive_int("watchHeartbeatMs", _DEFAULT_LIMITS.watch_heartbeat_ms),
        lim.positive_int("namesInUseRefreshMs", _DEFAULT_LIMITS.names_in_use_refresh_ms),
        *(
            budget_from_config(
                lim.get(key), f"limits.{key}", default, pos=lim.key_pos(key), error=ConfigError
            )
            for key, default in (
                ("storedDtabBudget", STORED_DTAB_BUDGET),
                ("requestDtabBudget", REQUEST_DTAB_BUDGET),
            )
        ),
    )
    lim.done()
    file_workers = top.get("workers", DEFAULT_WORKERS, int)
    top.done()
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if file_workers < 1:
        raise top.error("workers", f"must be at least 1, got {file_workers}")
    n_workers = workers if workers is not None else file_workers
    if (interface.ip, interface.port) == (admin.ip, admin.port) and interface.port != 0:
        at = admin.listen_pos or interface.listen_pos or source
        raise ConfigError(
            f"{at}: the API and admin servers cannot share {admin.ip}:{admin.port}; give "
            "admin.port and interfaces[0].port different ports"
        )
    return NamerdConfig(
        storage, namers, interface, admin, token, limits, n_workers, source, raw=raw
    )


def load_config(
    path: str | None,
    *,
    data_dir: str | None = None,
    workers: int | None = None,
    env: Mapping[str, str] | None = None,
) -> NamerdConfig:
    """Read the config file at ``path`` (``-`` for stdin, None for all defaults).

    ``${VAR}`` and ``${VAR:-default}`` in values are taken from ``env`` (default
    ``os.environ``), as is ``NAMERD_TOKEN`` (see ``shared.configtree``).
    """
    environ = os.environ if env is None else env
    if path is None:
        empty = located_dict(Pos("<defaults>", 1, 1))
        return parse_config(empty, "<defaults>", data_dir=data_dir, workers=workers, env=environ)
    text, name = configtree.read_config_text(path, error=ConfigError)
    raw = load_yaml(text, name, env=environ)
    return parse_config(raw, name, data_dir=data_dir, workers=workers, env=environ)
