"""``namerd``: start the name service (gunicorn master, uvicorn workers, embedded Redis default).

    namerd [CONFIG | -c CONFIG] [--workers N] [--data-dir DIR] [--validate]

The master process owns the embedded redis-server (if storage is embedded) and supervises it;
gunicorn forks the workers, each of which builds its own Redis connections and namers.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from namerd.config import ConfigError, NamerdConfig, load_config
from namerd.errors import NamerdError
from namerd.storage.embedded_redis import EmbeddedRedis

__all__ = ["main"]

log = logging.getLogger("namerd")

#: How often the master checks that the embedded redis-server is alive.
REDIS_SUPERVISE_INTERVAL_S = 1.0


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, config: NamerdConfig, redis_url: str, run_dir: str, on_exit: Any) -> None:
        self.namerd_config = config
        self.redis_url = redis_url
        self.run_dir = run_dir
        self._on_exit = on_exit
        super().__init__()

    def load_config(self) -> None:
        c = self.namerd_config
        settings = {
            "bind": [
                f"{_host(c.interface.ip)}:{c.interface.port}",
                f"{_host(c.admin.ip)}:{c.admin.port}",
            ],
            "workers": c.workers,
            "worker_class": "namerd.worker.NamerdWorker",
            "graceful_timeout": max(1, -(-c.admin.shutdown_grace_ms // 1000)),
            "timeout": 30,
            "keepalive": 5,
            "proc_name": "namerd",
            "errorlog": "-",
            "loglevel": os.environ.get("NAMERD_LOG_LEVEL", "info"),
            "when_ready": self._ready,
            "on_exit": lambda arbiter: self._on_exit(),
        }
        # gunicorn >= 26 opens a control socket at one fixed path per user; several namerds on a
        # host would share (and could signal through) it, and we do not use it.
        if "control_socket_disable" in self.cfg.settings:
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def _ready(self, arbiter: Any) -> None:
        c = self.namerd_config
        print(
            f"namerd ready: API http://{_host(c.interface.ip)}:{c.interface.port}/api/1/dtabs  "
            f"admin http://{_host(c.admin.ip)}:{c.admin.port}/  "
            f"({c.workers} workers, storage {self.redis_url})",
            flush=True,
        )

    def load(self) -> Any:
        from namerd.app import create_app

        return create_app(self.namerd_config, self.redis_url, self.run_dir)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _supervise(redis: EmbeddedRedis, stop: threading.Event) -> None:
    while not stop.wait(REDIS_SUPERVISE_INTERVAL_S):
        try:
            if redis.ensure_running():
                log.warning("embedded redis-server had exited; restarted it")
        except Exception as err:  # keep supervising; workers serve last-known state meanwhile
            log.error("embedded redis-server is down and could not be restarted: %s", err)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``namerd`` command."""
    parser = argparse.ArgumentParser(prog="namerd", description="The namerd name service.")
    parser.add_argument("config", nargs="?", help="config file (YAML or JSON; - for stdin)")
    parser.add_argument("-c", "--config", dest="config_opt", help="config file (same as CONFIG)")
    parser.add_argument("--workers", type=int, help="worker processes (default 2)")
    parser.add_argument("--data-dir", help="embedded Redis data directory (default ./.namerd)")
    parser.add_argument("--validate", action="store_true", help="check the config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s namerd %(levelname)s %(message)s")
    path = args.config_opt or args.config
    try:
        config = load_config(path, data_dir=args.data_dir, workers=args.workers)
    except ConfigError as err:
        print(f"namerd: {err}", file=sys.stderr)
        return 2
    if args.validate:
        print(f"namerd: {config.source}: configuration is valid")
        return 0

    redis: EmbeddedRedis | None = None
    stop = threading.Event()
    run_dir = tempfile.mkdtemp(prefix="namerd-run-")
    try:
        if config.storage.embedded:
            redis = EmbeddedRedis(config.storage.data_dir)
            redis.start()
            url = redis.url
            threading.Thread(
                target=_supervise, args=(redis, stop), daemon=True, name="redis-supervisor"
            ).start()
        else:
            url = config.storage.url or "sentinel://" + ",".join(
                f"{h}:{p}" for h, p in config.storage.sentinels
            )
    except NamerdError as err:
        print(f"namerd: {err}", file=sys.stderr)
        shutil.rmtree(run_dir, ignore_errors=True)
        return 1

    def on_exit() -> None:
        stop.set()
        if redis is not None:
            redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

    redis_url = url if not config.storage.sentinels else None
    try:
        _Gunicorn(config, redis_url or "", run_dir, on_exit).run()
    except SystemExit as exit_:
        on_exit()
        return int(exit_.code or 0)
    on_exit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
