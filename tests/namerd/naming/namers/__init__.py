"""Tests of namerd's namers, with real directories, real DNS of loopback names and real Redis.

Helpers shared by the test modules live here; fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from namerd.naming.namers import Notifier
from namerd.storage.embedded_redis import EmbeddedRedis

# Upper bound of every wait in these tests. It only limits how long a broken test hangs; a
# passing test never waits for it.
WAIT_S = 10.0

# How often bounded polls re-check their condition.
POLL_S = 0.01


async def eventually(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(POLL_S)


async def changed(notifier: Notifier, since: int, timeout_s: float = WAIT_S) -> int:
    """Wait (bounded) for the notifier to move past ``since``; return the new generation."""
    return await asyncio.wait_for(notifier.wait_changed(since), timeout=timeout_s)


def short_tmp_dir() -> Path:
    """A fresh directory under /tmp: unix socket paths must stay under ~100 bytes."""
    return Path(tempfile.mkdtemp(prefix="l5n-", dir="/tmp"))


def redis_client(server: EmbeddedRedis, *, decode_responses: bool = False) -> aioredis.Redis:
    """A client for ``server`` that fails fast (no retries), so outages show at once.

    namerd shares the dtab store's client, which decodes responses; tests try both kinds.
    """
    return aioredis.Redis.from_url(
        server.url,
        socket_timeout=WAIT_S / 2,
        socket_connect_timeout=WAIT_S / 2,
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode_responses,
    )


def _copy_aof(src: Path, dst: Path) -> None:
    # Redis 6 writes one appendonly.aof; Redis 7 an appendonlydir/ with a manifest.
    for item in src.iterdir():
        if item.name.startswith("appendonly"):
            target = dst / item.name
            if item.is_dir():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)


async def restart_with_changes(
    server: EmbeddedRedis, change: Callable[[EmbeddedRedis], Awaitable[None]]
) -> None:
    """Stop ``server``, change its data while it is down, and start it again.

    The change is made on a copy of the data served by a second, private server, and the
    changed append-only file is copied back. Nobody subscribed to ``server`` can receive a
    message about the change, so a client sees it only by re-reading after the restart: this
    is how the tests prove a re-sync, without racing the client's reconnect.
    """
    await asyncio.to_thread(server.stop)
    scratch = short_tmp_dir()
    try:
        _copy_aof(server.data_dir, scratch)
        other = EmbeddedRedis(scratch, start_timeout_s=WAIT_S, stop_timeout_s=WAIT_S)
        await asyncio.to_thread(other.start)
        try:
            await change(other)
        finally:
            await asyncio.to_thread(other.stop)
        _copy_aof(scratch, server.data_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    await asyncio.to_thread(server.start)


def write_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically (write a temp file, rename), as config tools do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
