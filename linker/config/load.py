"""The linker's configuration: Linkerd 1.x's YAML shape, its defaults, every limit in one place.

    admin:   {ip: 127.0.0.1, port: 9990, allowedHosts: []}
    namers:  [{kind: io.l5d.fs, rootDir: disco}]          # local namers (default interpreter)
    workers: 2                                             # ours; `--workers` overrides
    routers:
    - protocol: http
      label: outgoing
      servers: [{ip: 127.0.0.1, port: 4140, clearContext: false, maxCallDepth: 1000,
                 requestBodyIdleTimeoutMs: 30000}]
      identifier: {kind: io.l5d.header.token, header: Host}   # or a list of identifiers
      dstPrefix: /svc
      dtab: /svc => /#/io.l5d.fs;
      interpreter: {kind: io.l5d.namerd.http, dst: /$/inet/127.0.0.1/4180, namespace: default}
      bindingTimeoutMs: 10000
      maxInitialLineKB: 4
      maxHeadersKB: 8
      maxErrResponseKB: 5120
      client:  {connectTimeoutMs: 3000, requestAttemptTimeoutMs: 10000,
                responseBodyIdleTimeoutMs: 30000,
                hostConnectionPool: {maxIdle: 100, idleTimeMs: 60000}}
      service: {totalTimeoutMs: 30000}

Defaults (Linkerd's where Linkerd has one):

=============================  ===========  =================================================
key                            default      meaning
=============================  ===========  =================================================
admin                          127.0.0.1:9990  one admin server for the whole process tree
admin.allowedHosts             []           Host names admin actions (POST /admin/shutdown)
                                            may name besides localhost and IP literals; ``*``:
                                            any. Others get 421 (DNS-rebinding guard,
                                            ``shared.webguard``); reads are not checked
namers[].rootDir               (required)   io.l5d.fs: a readable directory, one file per service
namers[].pollIntervalSecs      1            how often that directory is checked
routers[].servers[]            127.0.0.1:4140  where the router listens
servers[].clearContext         false        strip every inbound l5d-* header (untrusted edges)
servers[].maxCallDepth         1000         Via entries allowed before a loop is declared (400)
servers[].requestBodyIdleTimeoutMs  30000   a client's request body may stall this long
                                            between two reads (also while it is streamed
                                            to a service) -> 408, or the connection is
                                            cut if the response has started
dstPrefix                      /svc         prefix of every identified name
identifier                     header.token on Host
interpreter                    default      local dtab + local namers; or io.l5d.namerd.http
interpreter.storedDtabBudget   100000 work  default interpreter: most work one bind may do,
  / requestDtabBudget          / 4000       with the router's dtab / with request dtab entries
                                            (-> 400); every key in ``linker.naming.default``
streamingEnabled               true         bodies always stream; ``false`` is rejected
bindingTimeoutMs               10000        waiting for a first binding -> 502
maxInitialLineKB / maxHeadersKB 4 / 8       over -> 414 / 431
maxErrResponseKB               5120         cap on error response bodies (``l5d-err`` has its
                                            own fixed cap, ``MAX_L5D_ERR_BYTES`` = 4 KiB,
                                            in ``linker.errors``)
client.connectTimeoutMs        3000         connecting to a service -> 502
client.requestAttemptTimeoutMs 10000        response headers from a service -> 503
client.responseBodyIdleTimeoutMs  30000     once a service's response headers are here, its
                                            body may go this long with no byte moving either
                                            way; then the client's connection is closed (its
                                            status is already sent) and the service's is
                                            discarded
client.hostConnectionPool      maxIdle 100, idleTimeMs 60000, minSize 0, maxSize and
                                            maxWaiters unbounded (minSize <= maxSize)
service.totalTimeoutMs         30000        whole request, until response headers -> 503
httpAccessLog                  (none)       a file every worker appends one line per request
                                            to (``linker.http.accesslog``: format, rotation);
                                            its directory must exist and be writable
httpAccessLogFlushIntervalMs   200          (ours) longest a line waits in memory (> 0)
httpAccessLogBufferKB          64           (ours) buffered lines are written at once when
                                            they reach this size (> 0)
httpAccessLogRollPolicy /      never / true / Linkerd's rotation keys: only these defaults are
  Append / RotateCount         -1           accepted; rotate with logrotate + SIGHUP instead
=============================  ===========  =================================================

Linkerd has no request timeout by default; we do (Linkerd users' most common surprise was a
hung request holding a connection forever). ``requestAttemptTimeoutMs: 0`` and
``totalTimeoutMs: 0`` turn those timeouts off, as ``0`` does for the two body idle timeouts
(for event streams that may stay silent longer); ``connectTimeoutMs`` must be > 0 (a connect
that waits forever is never what an operator wants, so 0 is refused rather than reinterpreted).

The two body idle timeouts are ours: Linkerd 1.x had none (a Finagle stream that stalled
after its headers held both connections forever), so they are named in its style, next to
the keys they extend: ``client.responseBodyIdleTimeoutMs`` follows
``client.requestAttemptTimeoutMs`` past the response headers, and
``servers[].requestBodyIdleTimeoutMs`` is the server's, since it bounds the client.

Values may use ``${VAR}`` and ``${VAR:-default}`` from the environment (``$$`` is a literal
``$``), so one file serves every host: ``port: ${LINKER_PORT:-4140}`` (``shared.configtree``).

What loading checks
-------------------
Loading builds every object a worker builds from the config, with the same functions the
worker calls (:func:`router_interpreter`, :func:`router_identifier`, :func:`pool_limits`,
:func:`server_limits`, and the balancer, failure accrual and retry builders for the router-wide
keys and for every ``io.l5d.static`` prefix), and lists every ``rootDir``; it only binds no
socket and starts no task. So ``linker --validate`` and a start accept exactly the same
configs, and a config that loads cannot fail at a worker's boot. Every error is one line
``file:line:column: key: what is wrong`` (with what to do where that is not obvious).

Linkerd keys this linker does not implement are rejected by name ("not supported by this
linker; remove it") rather than accepted and ignored: ``telemetry``, ``usage``, ``tls``,
``announce``/``announcers``, ``addForwardedHeader``, ``socketOptions``, ``tracePropagator``,
``bindingCache``, ``maxRequestKB``, ``maxResponseKB``, ``maxChunkKB``, ``compressionLevel``,
``servers[].maxConcurrentRequests``, ``servers[].timestampHeader``,
``interpreter.transformers``, ``client.requeueBudget``, ``client.clientSession``,
``streamingEnabled: false``, and any value but Linkerd's default of the access log's rotation
keys (``httpAccessLogRollPolicy: never``, ``httpAccessLogAppend: true``,
``httpAccessLogRotateCount: -1``). ``interpreter.experimental`` is accepted: it only
acknowledges an experimental Linkerd feature, and nothing here needs acknowledging.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import yaml

from linker.config.model import (
    DEFAULT_ADMIN_PORT,
    DEFAULT_ROUTER_PORT,
    AdminConfig,
    ConfigError,
    LinkerConfig,
    RouterConfig,
    ServerConfig,
    plain,
)
from linker.config.prefix import StaticConfig, parse_static
from linker.http.accesslog import open_problem
from linker.http.server import ServerLimits
from linker.http.upstream import PoolLimits
from linker.naming.contract import Interpreter, InterpreterConfigError
from linker.naming.interpreter import build_interpreter
from linker.naming.transport import parse_dst
from linker.policy.accrual import build_accrual_factory
from linker.policy.balancer import build_balancer
from linker.policy.retries import build_retry_policy
from linker.routing.identifiers import Identifier, build_identifier
from shared import Dtab, DtabParseError, Path, configtree
from shared.configtree import locate
from shared.webguard import read_allowed_hosts

__all__ = [
    "AdminConfig",
    "ConfigError",
    "LinkerConfig",
    "RouterConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
    "pool_limits",
    "router_identifier",
    "router_interpreter",
    "server_limits",
]

Section = partial(configtree.Section, error=ConfigError)

# -- the objects a worker builds from a router's config (the loader builds them too) ------------


def router_interpreter(
    router: RouterConfig,
    namers: Sequence[Mapping[str, Any]],
    *,
    last_known_dir: str | None = None,
) -> Interpreter:
    """The router's interpreter, built as every worker builds it.

    ``last_known_dir``: where the workers share namerd's last-known answers (None: not shared).
    """
    return build_interpreter(
        router.interpreter,
        router.dtab,
        namers,
        bind_timeout_s=router.binding_timeout_ms / 1000,
        last_known_dir=last_known_dir,
        last_known_name=router.label,
    )


def router_identifier(router: RouterConfig) -> Identifier:
    """The router's identifier (one, or a chain of them tried in order)."""
    return build_identifier(router.identifier, router.dst_prefix)


def pool_limits(router: RouterConfig) -> PoolLimits:
    """The limits of a worker's upstream connection pool for this router."""
    attempt_s = router.request_attempt_timeout_ms / 1000 or None
    return PoolLimits(
        response_body_idle_timeout_s=router.response_body_idle_timeout_ms / 1000 or None,
        max_idle_per_host=router.pool_max_idle,
        idle_timeout_s=router.pool_idle_time_ms / 1000,
        connect_timeout_s=router.connect_timeout_ms / 1000,
        response_header_timeout_s=attempt_s,
        max_per_host=router.pool_max_size,
        max_waiters_per_host=router.pool_max_waiters,
        min_idle_per_host=router.pool_min_size,
    )


def server_limits(router: RouterConfig, server: ServerConfig) -> ServerLimits:
    """The limits of one of the router's servers (request head sizes, request body timeout)."""
    return ServerLimits(
        max_initial_line_bytes=router.max_initial_line_kb * 1024,
        max_headers_bytes=router.max_headers_kb * 1024,
        body_read_timeout_s=server.request_body_idle_timeout_ms / 1000 or math.inf,
    )


# -- Linkerd keys this linker does not implement ----------------------------------------------
# Accepting one and ignoring it would make a config say what the linker does not do, so each is
# rejected by name, saying what it is. Keys valid in every section that has them in Linkerd:
_UNSUPPORTED = {
    "telemetry": "telemetry plugins; metrics are on the admin port",
    "usage": "usage reporting",
    "tls": "TLS",
    "announce": "announcers",
    "addForwardedHeader": "the Forwarded header",
    "socketOptions": "socket options",
}
_UNSUPPORTED_ROUTER = {
    "announcers": "announcers",
    "tracePropagator": "trace propagators",
    "bindingCache": "binding cache sizes",
    "maxRequestKB": "buffered (non-streaming) requests",
    "maxResponseKB": "buffered (non-streaming) responses",
    "maxChunkKB": "a chunk size limit",
    "compressionLevel": "response compression",
}
_UNSUPPORTED_SERVER = {
    "maxConcurrentRequests": "a limit on concurrent requests per server",
    "timestampHeader": "the request timestamp header",
}
_UNSUPPORTED_INTERPRETER = {
    "transformers": "interpreter transformers",
    "tls": "TLS to namerd",
}
_UNSUPPORTED_CLIENT = {
    "tls": "TLS to services",
    "requeueBudget": "a requeue budget; connection failures are retried within the retry budget",
    "clientSession": "client session lifetimes; see hostConnectionPool.idleTimeMs",
}


def _reject_unsupported(sec: Any, *tables: Mapping[str, str]) -> None:
    for table in tables:
        for key, what in table.items():
            if sec.has(key):
                raise sec.error(key, f"not supported by this linker ({what}); remove it")


def _server(raw: Any, where: str, router_pos: Any) -> ServerConfig:
    sec = Section(raw, where, router_pos)
    _reject_unsupported(sec, _UNSUPPORTED, _UNSUPPORTED_SERVER)
    out = ServerConfig(
        ip=sec.ip("ip", "127.0.0.1"),
        port=sec.port("port", DEFAULT_ROUTER_PORT),
        clear_context=sec.get("clearContext", False, bool),
        max_call_depth=sec.positive_int("maxCallDepth", 1000),
        request_body_idle_timeout_ms=sec.millis("requestBodyIdleTimeoutMs", 30_000),
        listen_pos=str(sec.key_pos("port")) if sec.has("port") else "",
    )
    sec.done()
    return out


# Keys an io.l5d.static `configs` entry may set (per bound client / per logical service).
# Connection-level keys (timeouts, hostConnectionPool) stay at the section's top level: one
# pool per router serves every client.
_STATIC_CLIENT_KEYS = frozenset({"loadBalancer", "failureAccrual"})
_STATIC_SERVICE_KEYS = frozenset({"totalTimeoutMs", "retries", "responseClassifier"})


def _router(raw: Any, index: int, namers: tuple[dict[str, Any], ...]) -> RouterConfig:
    where = f"routers[{index}]"
    sec = Section(raw, where)
    _reject_unsupported(sec, _UNSUPPORTED, _UNSUPPORTED_ROUTER)
    protocol = sec.get("protocol", None, str)
    if protocol != "http":
        raise sec.error("protocol", f"only 'http' routers are supported, got {protocol!r}")
    label = sec.get("label", protocol, str)
    servers_raw = sec.get("servers", None, list)
    if servers_raw is not None and not servers_raw:
        raise sec.error("servers", "must list at least one server (or be left out: 4140)")
    servers = tuple(
        _server(s, f"{where}.servers[{i}]", sec.pos) for i, s in enumerate(servers_raw or [None])
    )
    prefix_text = sec.get("dstPrefix", "/svc", str)
    try:
        dst_prefix = Path.read(prefix_text)
    except DtabParseError as err:
        raise sec.error_at(
            sec.text_pos("dstPrefix", err.offset),
            "dstPrefix",
            f"not a path: {err.expected} expected but {err.found} found (e.g. /svc)",
        ) from None
    dtab_text = sec.get("dtab", "", str)
    try:
        dtab = Dtab.read(dtab_text)
    except DtabParseError as err:
        raise sec.error_at(
            sec.text_pos("dtab", err.offset),
            "dtab",
            f"invalid dtab: {err.expected} expected but {err.found} found "
            "(each dentry is `/prefix => destination ;`)",
        ) from None
    identifier = sec.get("identifier", None, (dict, list))
    interpreter = sec.get("interpreter", None, dict)
    client_raw = sec.get("client", None, dict)
    service_raw = sec.get("service", None, dict)
    client = Section(client_raw, f"{where}.client", sec.key_pos("client"))
    service = Section(service_raw, f"{where}.service", sec.key_pos("service"))
    _reject_unsupported(client, _UNSUPPORTED_CLIENT)
    pool = Section(
        client.get("hostConnectionPool", None, dict),
        f"{where}.client.hostConnectionPool",
        client.key_pos("hostConnectionPool"),
    )
    cfg = RouterConfig(
        label=label,
        servers=servers,
        dst_prefix=dst_prefix,
        dtab=dtab,
        identifier=plain(identifier) if identifier is not None else None,
        interpreter=plain(interpreter) if interpreter is not None else None,
        binding_timeout_ms=sec.positive_int("bindingTimeoutMs", 10_000),
        max_initial_line_kb=sec.positive_int("maxInitialLineKB", 4),
        max_headers_kb=sec.positive_int("maxHeadersKB", 8),
        max_err_response_kb=sec.positive_int("maxErrResponseKB", 5120),
        connect_timeout_ms=client.millis("connectTimeoutMs", 3_000, zero_turns_off=False),
        request_attempt_timeout_ms=client.millis("requestAttemptTimeoutMs", 10_000),
        response_body_idle_timeout_ms=client.millis("responseBodyIdleTimeoutMs", 30_000),
        total_timeout_ms=service.millis("totalTimeoutMs", 30_000),
        pool_max_idle=pool.positive_int("maxIdle", 100),
        pool_max_size=pool.get("maxSize", None, int),
        pool_max_waiters=pool.get("maxWaiters", None, int),
        pool_min_size=pool.get("minSize", 0, int),
        pool_idle_time_ms=pool.positive_int("idleTimeMs", 60_000),
        client=plain(client_raw or {}),
        service=plain(service_raw or {}),
    )
    client_kind = client.get("kind", "io.l5d.global", str)
    service_kind = service.get("kind", "io.l5d.global", str)
    client_configs = client.get("configs", None, list)
    service_configs = service.get("configs", None, list)
    for sec_, kind, configs in (
        (client, client_kind, client_configs),
        (service, service_kind, service_configs),
    ):
        if kind not in ("io.l5d.global", "io.l5d.static"):
            raise sec_.error("kind", f"expected io.l5d.global or io.l5d.static, got {kind!r}")
        if (kind == "io.l5d.static") != (configs is not None):
            raise sec_.error("configs", "io.l5d.static needs `configs`; io.l5d.global takes none")
    cfg = replace(
        cfg,
        client_static=_static(client, client_raw, client_configs, _STATIC_CLIENT_KEYS),
        service_static=_static(service, service_raw, service_configs, _STATIC_SERVICE_KEYS),
    )
    if cfg.pool_max_size is not None and cfg.pool_max_size < 1:
        raise pool.error("maxSize", f"must be at least 1, got {cfg.pool_max_size}")
    if cfg.pool_max_waiters is not None and cfg.pool_max_waiters < 0:
        raise pool.error("maxWaiters", f"must be >= 0, got {cfg.pool_max_waiters}")
    if cfg.pool_min_size < 0:
        raise pool.error("minSize", f"must be >= 0, got {cfg.pool_min_size}")
    if cfg.pool_max_size is not None and cfg.pool_min_size > cfg.pool_max_size:
        raise pool.error("minSize", f"{cfg.pool_min_size} is more than maxSize {cfg.pool_max_size}")
    client.get("loadBalancer", None, dict)
    client.get("failureAccrual", None, dict)
    service.get("retries", None, dict)
    service.get("responseClassifier", None, dict)
    pool.done()
    client.done()
    service.done()
    cfg = _access_log(cfg, sec)
    if sec.get("streamingEnabled", True, bool) is False:
        raise sec.error(
            "streamingEnabled",
            "false is not supported by this linker (bodies always stream); remove it",
        )
    sec.done()
    _build_client_policy(cfg, client, service, client_configs, service_configs)
    _build_identifier(cfg, sec, identifier)
    _build_interpreter(cfg, sec, interpreter, namers)
    pool_limits(cfg)
    for server in cfg.servers:
        server_limits(cfg, server)
    return cfg


# Linkerd's access log rotation keys and the one value of each that is what this linker does.
_ACCESS_LOG_ROTATION: tuple[tuple[str, type, Any], ...] = (
    ("httpAccessLogRollPolicy", str, "never"),
    ("httpAccessLogAppend", bool, True),
    ("httpAccessLogRotateCount", int, -1),
)


def _access_log(cfg: RouterConfig, sec: Any) -> RouterConfig:
    """The ``httpAccessLog*`` keys: the file checked writable, rotation refused but for the
    defaults (rotation is logrotate's job: the workers reopen the file on SIGHUP)."""
    path = sec.get("httpAccessLog", None, str)
    for key, kind, default in _ACCESS_LOG_ROTATION:
        value = sec.get(key, default, kind)
        if value != default:
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise sec.error(
                key,
                f"{shown} is not supported by this linker (log rotation); remove it or use "
                f"{str(default).lower()}, and rotate with logrotate: rename the file, then "
                "SIGHUP the linker",
            )
    flush_ms = sec.positive_int("httpAccessLogFlushIntervalMs", 200)
    buffer_kb = sec.positive_int("httpAccessLogBufferKB", 64)
    if path is None:
        return cfg
    if not path:
        raise sec.error("httpAccessLog", "must be a file path (or be left out: no access log)")
    problem = open_problem(path)
    if problem is not None:
        raise sec.error(
            "httpAccessLog",
            f"{path!r} {problem}; choose a file in a directory this user may write (a relative "
            "path is taken from the directory the linker runs in)",
        )
    return replace(
        cfg,
        http_access_log=path,
        http_access_log_flush_interval_ms=flush_ms,
        http_access_log_buffer_kb=buffer_kb,
    )


def _static(
    sec: Any, raw: Any, configs: list[Any] | None, keys: frozenset[str]
) -> tuple[StaticConfig, ...]:
    """An ``io.l5d.static`` section's ``configs`` (none for ``io.l5d.global``)."""
    if configs is None:
        return ()
    try:
        return parse_static(configs, sec.where, keys)
    except ValueError as err:
        raise ConfigError(f"{locate(raw, str(err)) or sec.key_pos('configs')}: {err}") from None


def _build_client_policy(
    cfg: RouterConfig,
    client: Any,
    service: Any,
    client_configs: list[Any] | None,
    service_configs: list[Any] | None,
) -> None:
    """Build the balancer, accrual and retry policy of the router-wide keys and of every
    ``io.l5d.static`` prefix, as a worker will for the first request of each client."""
    rng = random.Random(0)
    # (the keys, where errors point when the message names none of them, its mapping)
    client_sets: list[tuple[Mapping[str, Any], Any, Any]] = [
        (cfg.client_params(), client.pos, client.value)
    ]
    service_sets: list[tuple[Mapping[str, Any], Any, Any]] = [
        (cfg.service_params(), service.pos, service.value)
    ]
    for static, raw_list, sets in (
        (cfg.client_static, client_configs, client_sets),
        (cfg.service_static, service_configs, service_sets),
    ):
        positions: list[Any] = getattr(raw_list, "item_pos", [])
        for i, entry in enumerate(static):
            assert raw_list is not None
            at = positions[i] if i < len(positions) else client.pos
            sets.append((entry.params, at, raw_list[i]))
    for i, (params, at, raw) in enumerate(client_sets):
        where = client.where if i == 0 else f"{client.where}.configs[{i - 1}]"
        try:
            factory = build_accrual_factory(params.get("failureAccrual"), rng)
            build_balancer(params.get("loadBalancer"), rng=rng, accrual_factory=factory)
        except ValueError as err:
            raise ConfigError(f"{locate(raw, str(err)) or at}: {where}: {err}") from None
    for i, (params, at, raw) in enumerate(service_sets):
        where = service.where if i == 0 else f"{service.where}.configs[{i - 1}]"
        if i > 0:
            # The router reads a prefix's totalTimeoutMs per request: check it here.
            Section(raw, where, at).millis("totalTimeoutMs", 0)
        try:
            build_retry_policy(params, rng, where=where)
        except ValueError as err:
            raise ConfigError(f"{locate(raw, str(err)) or at}: {err}") from None


def _build_identifier(cfg: RouterConfig, sec: Any, raw: Any) -> None:
    """Build each identifier alone (so an error points at its entry), then the chain."""
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            try:
                build_identifier(plain(item), cfg.dst_prefix)
            except (ValueError, TypeError) as err:
                at = locate(item, str(err)) or getattr(raw, "item_pos", [sec.pos] * len(raw))[i]
                raise ConfigError(f"{at}: {sec.where}.identifier[{i}]: {err}") from None
    try:
        router_identifier(cfg)
    except (ValueError, TypeError) as err:
        at = locate(raw, str(err)) or sec.key_pos("identifier")
        raise ConfigError(f"{at}: {sec.where}.identifier: {err}") from None


def _build_interpreter(
    cfg: RouterConfig, sec: Any, raw: Any, namers: tuple[dict[str, Any], ...]
) -> None:
    """Build the interpreter a worker builds (no task started, nothing connected)."""
    if raw is not None:
        isec = Section(raw, f"{sec.where}.interpreter")
        _reject_unsupported(isec, _UNSUPPORTED_INTERPRETER)
        if isec.has("dst"):
            try:
                parse_dst(plain(raw["dst"]))
            except ValueError as err:
                raise isec.error("dst", str(err)) from None
    try:
        router_interpreter(cfg, namers)
    except (InterpreterConfigError, ValueError) as err:
        at = locate(raw, str(err)) or sec.key_pos("interpreter")
        raise ConfigError(f"{at}: {sec.where}.interpreter: {err}") from None


def _namers(top: Any) -> tuple[dict[str, Any], ...]:
    """The local namers, each checked and built (their directories listed) once."""
    namers: list[dict[str, Any]] = []
    for i, n in enumerate(top.get("namers", None, list) or []):
        nsec = Section(n, f"namers[{i}]")
        kind = nsec.get("kind", None, str)
        if kind != "io.l5d.fs":
            raise nsec.error(
                "kind",
                f"only io.l5d.fs is available as a local namer, got {kind!r}; other service "
                "discovery goes through namerd (interpreter io.l5d.namerd.http)",
            )
        root = nsec.get("rootDir", None, str)
        if not root:
            raise nsec.error("rootDir", "is required: the directory with one file per service")
        problem = configtree.directory_problem(root)
        if problem is not None:
            raise nsec.error(
                "rootDir",
                f"{root!r} {problem}; create it or fix the path (a relative path is taken from "
                "the directory the linker runs in)",
            )
        nsec.get("prefix", None, str)
        nsec.get("pollIntervalSecs", None, (int, float))
        nsec.done()
        namers.append(plain(n))
    out = tuple(namers)
    try:
        # The namers as a default interpreter builds them: duplicate prefixes, bad values.
        build_interpreter(None, Dtab.empty(), out)
    except (InterpreterConfigError, ValueError) as err:
        raise ConfigError(
            f"{locate(top.value, str(err)) or top.key_pos('namers')}: {err}"
        ) from None
    return out


def parse_config(raw: Any, source: str = "<config>", *, workers: int | None = None) -> LinkerConfig:
    """Build a :class:`LinkerConfig` from parsed YAML; ConfigError names the key and position.

    Every object a worker builds is built here once too (see the module docstring).
    """
    top = Section(raw, configtree.TOP_LEVEL)
    _reject_unsupported(top, _UNSUPPORTED)
    admin_sec = Section(top.get("admin"), "admin", top.key_pos("admin"))
    allowed_hosts = read_allowed_hosts(admin_sec)
    admin = AdminConfig(
        admin_sec.ip("ip", "127.0.0.1"),
        admin_sec.port("port", DEFAULT_ADMIN_PORT),
        listen_pos=str(admin_sec.key_pos("port")) if admin_sec.has("port") else "",
        allowed_hosts=allowed_hosts,
    )
    _reject_unsupported(admin_sec, _UNSUPPORTED)
    admin_sec.done()
    namers = _namers(top)
    routers_raw = top.get("routers", None, list)
    if not routers_raw:
        raise ConfigError(f"{top.key_pos('routers')}: 'routers' must list at least one router")
    routers = tuple(_router(r, i, namers) for i, r in enumerate(routers_raw))
    file_workers = top.get("workers", None, int)
    top.done()
    seen_labels: set[str] = set()
    for i, r in enumerate(routers):
        if r.label in seen_labels:
            at = Section(routers_raw[i], f"routers[{i}]").key_pos("label")
            raise ConfigError(
                f"{at}: routers[{i}].label: {r.label!r} is used by another router; give each "
                "router its own label"
            )
        seen_labels.add(r.label)
    listeners: dict[tuple[str, int], str] = {}
    for what, ip, port, pos in [
        *((f"{r.label} server", s.ip, s.port, s.listen_pos) for r in routers for s in r.servers),
        ("admin", admin.ip, admin.port, admin.listen_pos),
    ]:
        if port != 0 and (ip, port) in listeners:
            raise ConfigError(
                f"{pos or source}: {ip}:{port} is taken by the {listeners[(ip, port)]} already; "
                "give each listener (routers' servers and admin) its own port"
            )
        listeners[(ip, port)] = what
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        n = workers
    elif file_workers is not None:
        if file_workers < 1:
            raise top.error("workers", f"must be at least 1, got {file_workers}")
        n = file_workers
    else:
        n = os.cpu_count() or 1
    return LinkerConfig(routers, admin, namers, n, source, plain(raw))


def load_config(
    path: str | None, *, workers: int | None = None, env: Mapping[str, str] | None = None
) -> LinkerConfig:
    """Read and check a config file (``-`` = stdin).

    ``${VAR}`` and ``${VAR:-default}`` in values are taken from ``env`` (default
    ``os.environ``), so one file serves every host (see ``shared.configtree``).
    """
    if path is None:
        raise ConfigError("a config file is required: linker -c linker.yaml")
    text, name = configtree.read_config_text(path, error=ConfigError)
    environ = os.environ if env is None else env
    raw = configtree.load_located_yaml(text, name, yaml, error=ConfigError, env=environ)
    return parse_config(raw, name, workers=workers)
