"""The linker's configuration: Linkerd 1.x's YAML shape, its defaults, every limit in one place.

    admin:   {ip: 127.0.0.1, port: 9990}
    namers:  [{kind: io.l5d.fs, rootDir: disco}]          # local namers (default interpreter)
    workers: 2                                             # ours; `--workers` overrides
    routers:
    - protocol: http
      label: outgoing
      servers: [{ip: 127.0.0.1, port: 4140, clearContext: false, maxCallDepth: 1000}]
      identifier: {kind: io.l5d.header.token, header: Host}   # or a list of identifiers
      dstPrefix: /svc
      dtab: /svc => /#/io.l5d.fs;
      interpreter: {kind: io.l5d.namerd.http, dst: /$/inet/127.0.0.1/4180, namespace: default}
      bindingTimeoutMs: 10000
      maxInitialLineKB: 4
      maxHeadersKB: 8
      maxErrResponseKB: 5120
      client:  {connectTimeoutMs: 3000, requestAttemptTimeoutMs: 10000,
                hostConnectionPool: {maxIdle: 100, idleTimeMs: 60000}}
      service: {totalTimeoutMs: 30000}

Defaults (Linkerd's where Linkerd has one):

=============================  ===========  =================================================
key                            default      meaning
=============================  ===========  =================================================
admin                          127.0.0.1:9990  one admin server for the whole process tree
routers[].servers[]            127.0.0.1:4140  where the router listens
servers[].clearContext         false        strip inbound l5d-ctx-*/l5d-dtab (untrusted edges)
servers[].maxCallDepth         1000         Via entries allowed before a loop is declared (400)
dstPrefix                      /svc         prefix of every identified name
identifier                     header.token on Host
interpreter                    default      local dtab + local namers; or io.l5d.namerd.http
bindingTimeoutMs               10000        waiting for a first binding -> 502
maxInitialLineKB / maxHeadersKB 4 / 8       over -> 414 / 431
maxErrResponseKB               5120         cap on error bodies (and l5d-err)
client.connectTimeoutMs        3000         connecting to a service -> 502
client.requestAttemptTimeoutMs 10000        response headers from a service -> 503
client.hostConnectionPool      maxIdle 100, idleTimeMs 60000
service.totalTimeoutMs         30000        whole request, until response headers -> 503
=============================  ===========  =================================================

Linkerd has no request timeout by default; we do (Linkerd users' most common surprise was a
hung request holding a connection forever). Set a key to 0 to turn that timeout off.

Values may use ``${VAR}`` and ``${VAR:-default}`` from the environment (``$$`` is a literal
``$``), so one file serves every host: ``port: ${LINKER_PORT:-4140}`` (``shared.configtree``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path as FsPath
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
from linker.config.prefix import parse_static
from shared import Dtab, DtabParseError, Path, configtree

__all__ = [
    "AdminConfig",
    "ConfigError",
    "LinkerConfig",
    "RouterConfig",
    "ServerConfig",
    "load_config",
    "parse_config",
]

Section = partial(configtree.Section, error=ConfigError)

# Linkerd keys that are valid there but not implemented here: named so the error is precise.
_NOT_YET = {
    "telemetry": "telemetry plugins (metrics are on the admin port)",
    "usage": "usage reporting",
    "tls": "TLS",
    "announce": "announcers",
    "addForwardedHeader": "the Forwarded header",
    "socketOptions": "socket options",
}


def _reject_not_yet(sec: Any) -> None:
    for key, what in _NOT_YET.items():
        if sec.has(key):
            raise sec.error(key, f"{what} is a Linkerd feature this linker does not implement yet")


def _server(raw: Any, where: str) -> ServerConfig:
    sec = Section(raw, where)
    _reject_not_yet(sec)
    out = ServerConfig(
        ip=sec.ip("ip", "127.0.0.1"),
        port=sec.port("port", DEFAULT_ROUTER_PORT),
        clear_context=sec.get("clearContext", False, bool),
        max_call_depth=sec.positive_int("maxCallDepth", 1000),
        max_concurrent_requests=sec.get("maxConcurrentRequests", None, int),
    )
    sec.done(also_allowed=["timestampHeader"])
    return out


# Keys an io.l5d.static `configs` entry may set (per bound client / per logical service).
# Connection-level keys (timeouts, hostConnectionPool) stay at the section's top level: one
# pool per router serves every client.
_STATIC_CLIENT_KEYS = frozenset({"loadBalancer", "failureAccrual"})
_STATIC_SERVICE_KEYS = frozenset({"totalTimeoutMs", "retries", "responseClassifier"})


def _router(raw: Any, index: int, namers: tuple[dict[str, Any], ...]) -> RouterConfig:
    where = f"routers[{index}]"
    sec = Section(raw, where)
    _reject_not_yet(sec)
    protocol = sec.get("protocol", None, str)
    if protocol != "http":
        raise sec.error("protocol", f"only 'http' routers are supported, got {protocol!r}")
    label = sec.get("label", protocol, str)
    servers_raw = sec.get("servers", None, list)
    servers = tuple(
        _server(s, f"{where}.servers[{i}]") for i, s in enumerate(servers_raw or [None])
    )
    prefix_text = sec.get("dstPrefix", "/svc", str)
    try:
        dst_prefix = Path.read(prefix_text)
    except DtabParseError as err:
        raise sec.error("dstPrefix", f"invalid path: {err}") from None
    dtab_text = sec.get("dtab", "", str)
    try:
        dtab = Dtab.read(dtab_text)
    except DtabParseError as err:
        raise sec.error("dtab", f"invalid dtab:\n{err.render()}") from None
    identifier = sec.get("identifier", None, (dict, list))
    interpreter = sec.get("interpreter", None, dict)
    client_raw = sec.get("client", None, dict)
    service_raw = sec.get("service", None, dict)
    client = Section(client_raw, f"{where}.client")
    service = Section(service_raw, f"{where}.service")
    pool = Section(
        client.get("hostConnectionPool", None, dict), f"{where}.client.hostConnectionPool"
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
        connect_timeout_ms=client.millis("connectTimeoutMs", 3_000),
        request_attempt_timeout_ms=client.millis("requestAttemptTimeoutMs", 10_000),
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
    try:
        if client_configs is not None:
            cfg = replace(
                cfg,
                client_static=parse_static(client_configs, f"{where}.client", _STATIC_CLIENT_KEYS),
            )
        if service_configs is not None:
            cfg = replace(
                cfg,
                service_static=parse_static(
                    service_configs, f"{where}.service", _STATIC_SERVICE_KEYS
                ),
            )
    except ValueError as err:
        raise ConfigError(f"{sec.key_pos('client')}: {err}") from None
    if cfg.pool_max_size is not None and cfg.pool_max_size < 1:
        raise pool.error("maxSize", f"must be at least 1, got {cfg.pool_max_size}")
    if cfg.pool_max_waiters is not None and cfg.pool_max_waiters < 0:
        raise pool.error("maxWaiters", f"must be >= 0, got {cfg.pool_max_waiters}")
    if cfg.pool_min_size < 0:
        raise pool.error("minSize", f"must be >= 0, got {cfg.pool_min_size}")
    client.get("loadBalancer", None, dict)
    client.get("failureAccrual", None, dict)
    service.get("retries", None, dict)
    service.get("responseClassifier", None, dict)
    pool.done()
    client.done()
    service.done()
    _check_client_policy(cfg, sec)
    sec.get("streamingEnabled", True, bool)  # always streaming; accepted for compatibility
    sec.done()
    _check_identifier_and_interpreter(cfg, sec, namers)
    return cfg


def _check_client_policy(cfg: RouterConfig, sec: Any) -> None:
    """Build the balancer, accrual and retry policy once so bad keys fail at load time."""
    import random

    from linker.policy.accrual import build_accrual_factory
    from linker.policy.balancer import build_balancer
    from linker.policy.retries import build_retry_policy

    rng = random.Random(0)
    client_sets = [cfg.client_params(), *(s.params for s in cfg.client_static)]
    service_sets = [cfg.service_params(), *(s.params for s in cfg.service_static)]
    try:
        for params in client_sets:
            factory = build_accrual_factory(params.get("failureAccrual"), rng)
            build_balancer(params.get("loadBalancer"), rng=rng, accrual_factory=factory)
    except ValueError as err:
        raise sec.error("client", str(err)) from None
    try:
        for params in service_sets:
            build_retry_policy(params, rng, where="service")
    except ValueError as err:
        raise sec.error("service", str(err)) from None


def _check_identifier_and_interpreter(
    cfg: RouterConfig, sec: Any, namers: tuple[dict[str, Any], ...]
) -> None:
    """Build both once at load time so a bad kind or key fails here, with its position."""
    from linker.routing.identifiers import build_identifier

    try:
        build_identifier(cfg.identifier, cfg.dst_prefix)
    except (ValueError, TypeError) as err:
        raise sec.error("identifier", str(err)) from None
    interp = cfg.interpreter or {}
    kind = interp.get("kind", "default")
    if kind not in ("default", "io.l5d.namerd.http"):
        raise sec.error(
            "interpreter", f"unknown interpreter kind {kind!r} (default, io.l5d.namerd.http)"
        )


def parse_config(raw: Any, source: str = "<config>", *, workers: int | None = None) -> LinkerConfig:
    """Build a :class:`LinkerConfig` from parsed YAML; ConfigError names the key and position."""
    top = Section(raw, "the top level")
    _reject_not_yet(top)
    admin_sec = Section(top.get("admin"), "admin")
    admin = AdminConfig(admin_sec.ip("ip", "127.0.0.1"), admin_sec.port("port", DEFAULT_ADMIN_PORT))
    admin_sec.done()
    namers_raw = top.get("namers", None, list) or []
    namers: list[dict[str, Any]] = []
    for i, n in enumerate(namers_raw):
        nsec = Section(n, f"namers[{i}]")
        if nsec.get("kind", None, str) != "io.l5d.fs":
            raise nsec.error("kind", "only io.l5d.fs is available as a local namer")
        nsec.get("rootDir", None, str)
        nsec.get("prefix", None, str)
        nsec.done(also_allowed=["pollIntervalSecs"])
        namers.append(plain(n))
    routers_raw = top.get("routers", None, list)
    if not routers_raw:
        raise ConfigError(f"{top.pos}: 'routers' must list at least one router")
    namer_tuple = tuple(namers)
    routers = tuple(_router(r, i, namer_tuple) for i, r in enumerate(routers_raw))
    file_workers = top.get("workers", None, int)
    top.done()
    labels = [r.label for r in routers]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{source}: router labels must be unique, got {labels}")
    ports = [(s.ip, s.port) for r in routers for s in r.servers] + [(admin.ip, admin.port)]
    taken = [p for p in ports if p[1] != 0]
    if len(set(taken)) != len(taken):
        raise ConfigError(f"{source}: two listeners (routers or admin) use the same ip:port")
    n = (
        workers
        if workers is not None
        else file_workers
        if file_workers is not None
        else (os.cpu_count() or 1)
    )
    if n < 1:
        raise ConfigError(f"{source}: workers must be at least 1, got {n}")
    return LinkerConfig(routers, admin, namer_tuple, n, source, plain(raw))


def load_config(
    path: str | None, *, workers: int | None = None, env: Mapping[str, str] | None = None
) -> LinkerConfig:
    """Read and check a config file (``-`` = stdin).

    ``${VAR}`` and ``${VAR:-default}`` in values are taken from ``env`` (default
    ``os.environ``), so one file serves every host (see ``shared.configtree``).
    """
    if path is None:
        raise ConfigError("a config file is required: linker -c linker.yaml")
    if path == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            text = FsPath(path).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        name = path
    environ = os.environ if env is None else env
    raw = configtree.load_located_yaml(text, name, yaml, error=ConfigError, env=environ)
    return parse_config(raw, name, workers=workers)
