"""namerctl's settings: base URL, token and timeout, from flag, environment, file or default.

First found wins: the flag (``--base-url``, ``--token``, ``--timeout-s``), the environment
(``NAMERCTL_BASE_URL``, ``NAMERCTL_TOKEN``), the config file (``--config FILE``, else the first
``.namerctl.yaml``, ``.namerctl.yml`` or ``.namerctl.json`` in the working directory or a
parent; keys ``base-url``, ``token``, ``timeout-s``), the default (``http://127.0.0.1:4180``,
no token, 10 s). A bad value is a UsageError (exit status 2) that names where it came from.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import httpx
import yaml

from namerd.ctl.errors import UsageError, os_reason

__all__ = [
    "CONFIG_KEYS",
    "CONFIG_NAMES",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT_S",
    "ENV_BASE_URL",
    "ENV_TOKEN",
    "Settings",
    "find_config",
    "load_config",
    "normalize_base_url",
    "resolve_settings",
]

DEFAULT_BASE_URL = "http://127.0.0.1:4180"
DEFAULT_TIMEOUT_S = 10.0
CONFIG_NAMES = (".namerctl.yaml", ".namerctl.yml", ".namerctl.json")
CONFIG_KEYS = ("base-url", "token", "timeout-s")
ENV_BASE_URL = "NAMERCTL_BASE_URL"
ENV_TOKEN = "NAMERCTL_TOKEN"


@dataclass(frozen=True)
class Settings:
    """What namerctl talks to, and how."""

    base_url: str
    token: str | None
    timeout_s: float


def find_config(start: FsPath) -> FsPath | None:
    """The first ``.namerctl.{yaml,yml,json}`` in ``start`` or one of its parents."""
    for directory in (start, *start.parents):
        for name in CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def load_config(path: FsPath) -> dict[str, Any]:
    """Read a namerctl config file (YAML, or JSON, which YAML also reads)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {path}: {os_reason(err)}") from None
    try:
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())
        raise UsageError(f"config file {path} is not valid {_fmt(path)}: {reason}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"config file {path} must be a mapping with a base-url key")
    unknown = sorted(str(k) for k in value if k not in CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})"
        )
    return value


def _fmt(path: FsPath) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def normalize_base_url(raw: str, source: str) -> str:
    """Check that the base URL has an http(s) scheme and a host; drop a trailing ``/``."""
    hint = "it must have a scheme and host, e.g. http://namerd:4180"
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UsageError(f"invalid base URL {raw!r} from {source}: {hint}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"invalid base URL {raw!r} from {source}: {hint}")
    if url.query or url.fragment:
        raise UsageError(f"invalid base URL {raw!r} from {source}: no query or fragment allowed")
    return str(url.copy_with(query=None, fragment=None)).rstrip("/")


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str], cwd: FsPath) -> Settings:
    """Flag, then environment, then config file, then default."""
    config_flag = getattr(args, "config", None)
    if config_flag is not None and not FsPath(config_flag).is_file():
        raise UsageError(f"config file {config_flag} does not exist (from --config)")
    config_path = FsPath(config_flag) if config_flag is not None else find_config(cwd)
    config = load_config(config_path) if config_path is not None else {}

    base: tuple[Any, str] = (DEFAULT_BASE_URL, "the default")
    if getattr(args, "base_url", None) is not None:
        base = (args.base_url, "--base-url")
    elif env.get(ENV_BASE_URL):
        base = (env[ENV_BASE_URL], ENV_BASE_URL)
    elif config.get("base-url") is not None:
        base = (config["base-url"], f"config file {config_path}")
    if not isinstance(base[0], str):
        raise UsageError(f"base-url in {base[1]} must be a string")
    base_url = normalize_base_url(base[0], base[1])

    token: Any = getattr(args, "token", None)
    if token is None:
        token = env.get(ENV_TOKEN) or config.get("token")
    if token is not None and not isinstance(token, str):
        raise UsageError(f"token in config file {config_path} must be a string")

    timeout: Any = getattr(args, "timeout_s", None)
    source = "--timeout-s"
    if timeout is None:
        timeout, source = config.get("timeout-s", DEFAULT_TIMEOUT_S), f"config file {config_path}"
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError(f"timeout-s from {source} must be a number of seconds > 0")
    return Settings(base_url, token or None, float(timeout))
