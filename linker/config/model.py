"""The linker's configuration as values: what `linker.config.load` builds, every layer reads.

Plain frozen dataclasses, no parsing: the routing layer reads a :class:`RouterConfig` without
depending on the YAML loader, which sits above every layer because it builds their objects to
validate them. Keys, defaults and their meaning are listed in :mod:`linker.config.load`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from linker.config.prefix import StaticConfig, params_for
from shared import Dtab, Path, configtree

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_ROUTER_PORT",
    "AdminConfig",
    "ConfigError",
    "LinkerConfig",
    "RouterConfig",
    "ServerConfig",
    "plain",
]

DEFAULT_ROUTER_PORT = 4140
DEFAULT_ADMIN_PORT = 9990


class ConfigError(configtree.ConfigError):
    """The linker config is missing, malformed, or has an unknown or invalid key."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """One listener of a router."""

    ip: str = "127.0.0.1"
    port: int = DEFAULT_ROUTER_PORT
    clear_context: bool = False
    max_call_depth: int = 1000
    request_body_idle_timeout_ms: int = 30_000  # 0: off
    #: Where the port was configured (``file:line:col``; "" for the default), for errors.
    listen_pos: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """One HTTP router."""

    label: str
    servers: tuple[ServerConfig, ...]
    dst_prefix: Path = field(default_factory=lambda: Path("svc"))
    dtab: Dtab = field(default_factory=Dtab.empty)
    identifier: Any = None
    interpreter: dict[str, Any] | None = None
    binding_timeout_ms: int = 10_000
    max_initial_line_kb: int = 4
    max_headers_kb: int = 8
    max_err_response_kb: int = 5120
    connect_timeout_ms: int = 3_000
    request_attempt_timeout_ms: int = 10_000
    total_timeout_ms: int = 30_000
    pool_max_idle: int = 100
    pool_max_size: int | None = None
    pool_max_waiters: int | None = None
    pool_min_size: int = 0
    pool_idle_time_ms: int = 60_000
    response_body_idle_timeout_ms: int = 30_000  # 0: off
    client: dict[str, Any] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)
    client_static: tuple[StaticConfig, ...] = ()
    service_static: tuple[StaticConfig, ...] = ()
    #: ``httpAccessLog``: the access log file every worker appends to (None: no access log).
    http_access_log: str | None = None
    http_access_log_flush_interval_ms: int = 200
    http_access_log_buffer_kb: int = 64

    def client_params(self, client_id: Path | None = None) -> dict[str, Any]:
        """The client keys that apply to ``client_id`` (io.l5d.static configs overlaid)."""
        base = {k: v for k, v in self.client.items() if k not in ("kind", "configs")}
        return params_for(client_id, base, self.client_static) if client_id else base

    def service_params(self, service: Path | None = None) -> dict[str, Any]:
        """The service keys that apply to ``service`` (io.l5d.static configs overlaid)."""
        base = {k: v for k, v in self.service.items() if k not in ("kind", "configs")}
        return params_for(service, base, self.service_static) if service else base


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin listener (served once, by the master)."""

    ip: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    #: Where the port was configured (``file:line:col``; "" for the default), for errors.
    listen_pos: str = field(default="", compare=False)
    #: Host names admin actions may name besides localhost and IP literals (shared.webguard).
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkerConfig:
    """A whole linker configuration."""

    routers: tuple[RouterConfig, ...]
    admin: AdminConfig = AdminConfig()
    namers: tuple[dict[str, Any], ...] = ()
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    source: str = "<config>"
    raw: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The config as JSON (for ``/config.json``)."""
        out: dict[str, Any] = plain(self.raw)
        return out


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
