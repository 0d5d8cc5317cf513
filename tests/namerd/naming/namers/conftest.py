"""Fixtures for the namer tests: a real redis-server per test, never a fake."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator

import pytest

from namerd.storage.embedded_redis import EmbeddedRedis

from . import WAIT_S, short_tmp_dir


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A running EmbeddedRedis on a private data dir under /tmp; stopped after the test.

    Tests may stop and start it again (same socket, same AOF data).
    """
    data_dir = short_tmp_dir()
    server = EmbeddedRedis(data_dir, start_timeout_s=WAIT_S, stop_timeout_s=WAIT_S)
    server.start()
    try:
        yield server
    finally:
        process = server.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test froze it
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
