"""io.l5d.static client/service configs: prefix matching, later-wins layering, validation."""

from __future__ import annotations

import re

import pytest
import yaml

from linker.config.load import ConfigError, parse_config
from shared import Path
from shared.configtree import load_located_yaml

BASE = """routers:
- protocol: http
  servers: [{port: 4140}]
  dtab: /svc => /#/io.l5d.fs;
"""


def load(extra: str):  # type: ignore[no-untyped-def]
    return parse_config(load_located_yaml(BASE + extra, "linker.yaml", yaml), "linker.yaml")


def test_static_configs_layer_in_order() -> None:
    cfg = load(
        "  client:\n    kind: io.l5d.static\n    configs:\n"
        "    - prefix: /#/io.l5d.fs/{service}\n      loadBalancer: {kind: ewma}\n"
        "    - prefix: /#/io.l5d.fs/payments\n      failureAccrual: {kind: none}\n"
        "    - prefix: /#/*/payments\n      loadBalancer: {kind: roundRobin}\n"
        "  service:\n    kind: io.l5d.static\n    configs:\n"
        "    - prefix: /svc\n      totalTimeoutMs: 5000\n"
        "    - prefix: /svc/reads\n      responseClassifier: {kind: io.l5d.http.retryableRead5XX}\n"
    ).routers[0]
    users = cfg.client_params(Path.read("/#/io.l5d.fs/users"))
    assert users == {"loadBalancer": {"kind": "ewma"}}
    payments = cfg.client_params(Path.read("/#/io.l5d.fs/payments"))
    assert payments == {"loadBalancer": {"kind": "roundRobin"}, "failureAccrual": {"kind": "none"}}
    assert cfg.client_params(Path.read("/$/inet/127.0.0.1/80")) == {}
    reads = cfg.service_params(Path.read("/svc/reads/x"))
    assert reads["totalTimeoutMs"] == 5000
    assert reads["responseClassifier"] == {"kind": "io.l5d.http.retryableRead5XX"}
    assert "responseClassifier" not in cfg.service_params(Path.read("/svc/writes"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  client:\n    kind: io.l5d.static\n", "io.l5d.static needs `configs`"),
        ("  client:\n    kind: io.l5d.bogus\n", "expected io.l5d.global or io.l5d.static"),
        (
            "  client:\n    kind: io.l5d.static\n    configs:\n    - loadBalancer: {kind: p2c}\n",
            "client.configs[0].prefix is required",
        ),
        (
            "  client:\n    kind: io.l5d.static\n    configs:\n"
            "    - prefix: /#/x\n      connectTimeoutMs: 5\n",
            "unknown key 'connectTimeoutMs'",
        ),
        (
            "  client:\n    kind: io.l5d.static\n    configs:\n"
            "    - prefix: /#/x\n      loadBalancer: {kind: nope}\n",
            "nope",
        ),
        (
            "  service:\n    kind: io.l5d.static\n    configs:\n"
            "    - prefix: /svc\n      responseClassifier: {kind: nope}\n",
            "nope",
        ),
    ],
)
def test_bad_static_configs_are_named(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(extra)


def test_host_connection_pool_keys() -> None:
    pool = "{minSize: 1, maxSize: 8, maxWaiters: 100, idleTimeMs: 5000}"
    cfg = load(f"  client:\n    hostConnectionPool: {pool}\n").routers[0]
    assert (cfg.pool_min_size, cfg.pool_max_size, cfg.pool_max_waiters) == (1, 8, 100)
    with pytest.raises(ConfigError, match="maxSize: must be at least 1"):
        load("  client:\n    hostConnectionPool: {maxSize: 0}\n")
