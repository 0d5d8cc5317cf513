"""Fixtures for tests that run real processes (namerd, linker, backends) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .namerd_proc import Namerd, running_namerd

FS_CONFIG = """namers:
- kind: io.l5d.fs
  rootDir: {disco}
limits:
  watchHeartbeatMs: 300
  maxBodyBytes: 4096
  lookupTimeoutMs: 2000
"""


@pytest.fixture(scope="module")
def disco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An io.l5d.fs directory with one service, ``users``."""
    d = tmp_path_factory.mktemp("disco")
    (d / "users").write_text("127.0.0.1 8081\n127.0.0.1 8082 * 0.5\n")
    return d


@pytest.fixture(scope="module")
def namerd(tmp_path_factory: pytest.TempPathFactory, disco: Path) -> Iterator[Namerd]:
    """One namerd (2 workers, embedded Redis, the fs namer) shared by a test module."""
    tmp = tmp_path_factory.mktemp("namerd")
    with running_namerd(tmp, extra_config=FS_CONFIG.format(disco=disco)) as nd:
        yield nd
