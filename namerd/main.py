"""``namerd``: start the name service (gunicorn master, uvicorn workers, embedded Redis default).

    namerd [CONFIG | -c CONFIG] [--workers N] [--data-dir DIR] [--validate]
           [--log-level LEVEL] [--version]

Start-up, in order, each step failing with one line on stderr and exit code 2 (``file:line:col:
key: what is wrong; what to do`` where the config has a position for it, else ``namerd: ...``),
never a traceback:

1. read and check the config (``namerd.config``);
2. build what every worker builds from it (:func:`build`): the Redis client from the URL or the
   sentinels (nothing connects), every namer with its options, each ``io.l5d.fs`` ``rootDir``
   listed, and for the embedded store its redis-server binary and data directory. ``--validate``
   stops here;
3. bind the API and admin ports ourselves (:func:`listen`) and hand the sockets to gunicorn as
   ``fd://N``, so a port in use is our one-line error rather than gunicorn's retries and log;
4. start the embedded redis-server (if storage is embedded) and supervise it;
5. run gunicorn, which forks the workers; each builds its own Redis connections and namers.

Logging: ``--log-level`` (else ``$NAMERD_LOG_LEVEL``, else info) sets the root logger, configured
here before gunicorn forks, so the workers' ``namerd.*`` loggers inherit it, and gunicorn's own
``loglevel`` (its error log, which uvicorn's logger shares in the workers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
from typing import Any

from gunicorn.app.base import BaseApplication

from namerd.config import ConfigError, NamerdConfig, load_config
from namerd.errors import NamerdError
from namerd.naming.namers import FsNamer, NamerConfigError, Notifier, build_namer
from namerd.storage.embedded_redis import EmbeddedRedis, find_redis_server
from namerd.storage.store import RedisDtabStore
from shared import configtree
from shared.cli import OneLineParser, add_cli_habits
from shared.configtree import error_line, listen_hint

__all__ = ["build", "listen", "main"]

log = logging.getLogger("namerd")

#: How often the master checks that the embedded redis-server is alive.
REDIS_SUPERVISE_INTERVAL_S = 1.0
#: listen() backlog of the API and admin sockets (gunicorn's default ``backlog``).
LISTEN_BACKLOG = 2048


class _Gunicorn(BaseApplication):
    def __init__(
        self,
        config: NamerdConfig,
        fds: list[int],
        redis_url: str,
        run_dir: str,
        on_exit: Any,
        log_level: int = logging.INFO,
    ) -> None:
        self.namerd_config = config
        self.log_level = log_level
        self.fds = fds
        self.redis_url = redis_url
        self.run_dir = run_dir
        self._on_exit = on_exit
        super().__init__()

    def load_config(self) -> None:
        c = self.namerd_config
        settings = {
            # Sockets bound by main(): gunicorn takes them over (and closes them).
            "bind": [f"fd://{fd}" for fd in self.fds],
            "workers": c.workers,
            "worker_class": "namerd.worker.NamerdWorker",
            "graceful_timeout": max(1, -(-c.admin.shutdown_grace_ms // 1000)),
            "timeout": 30,
            "keepalive": 5,
            "proc_name": "namerd",
            "errorlog": "-",
            "loglevel": logging.getLevelName(self.log_level).lower(),
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


# -- positions ---------------------------------------------------------------------------------


def _pos(config: NamerdConfig, *path: str | int) -> str:
    """The position of the deepest key of ``path`` the config file has ("" if not even the
    first): ``_pos(config, "namers", 0, "rootDir")``."""
    node, found = config.raw, ""
    for step in path:
        if isinstance(step, int):
            items: list[Any] = getattr(node, "item_pos", [])
            if not isinstance(node, list) or step >= len(node):
                break
            found = str(items[step]) if step < len(items) else found
        else:
            if not isinstance(node, dict) or step not in node:
                break
            found = str(node.key_pos.get(step, found)) if hasattr(node, "key_pos") else found
        node = node[step]
    return found


def _at(pos: str, message: str) -> ConfigError:
    """A ConfigError located at ``pos`` (or unlocated when there is none)."""
    return ConfigError(f"{pos}: {message}" if pos else message)


# -- build: what every worker builds, without connecting ----------------------------------------


def _data_dir_problem(path: str) -> str | None:
    """Why the embedded Redis cannot keep its files in ``path`` (created if missing), or None."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"cannot be created: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        missing = probe != os.path.abspath(path)
        return f"cannot be {'created in' if missing else 'written to'} {probe} (permission denied)"
    return None


def _storage_problem(config: NamerdConfig) -> ConfigError | None:
    storage = config.storage
    if not storage.embedded:
        return None
    kind_pos = _pos(config, "storage", "kind")
    try:
        find_redis_server()
    except NamerdError as err:
        return _at(kind_pos, f"storage.kind: {storage.kind}: {err}")
    problem = _data_dir_problem(storage.data_dir)
    if problem is not None:
        what = "storage.dataDir" if storage.data_dir_pos else "the data directory (--data-dir)"
        return _at(
            storage.data_dir_pos,
            f"{what} {storage.data_dir!r} {problem}; choose a directory this user may write",
        )
    return None


async def _build(config: NamerdConfig) -> None:
    storage = config.storage
    try:
        if storage.sentinels:
            store = RedisDtabStore.from_sentinel(
                list(storage.sentinels), storage.service or "", key_prefix=storage.key_prefix
            )
        else:
            url = EmbeddedRedis(storage.data_dir).url if storage.embedded else storage.url or ""
            store = RedisDtabStore.from_url(url, key_prefix=storage.key_prefix)
    except (ValueError, TypeError) as err:
        key = "sentinels" if storage.sentinels else "url"
        raise _at(_pos(config, "storage", key), f"storage.{key}: {err}") from None
    try:
        for i, nc in enumerate(config.namers):
            raw = config.raw["namers"][i] if config.raw is not None else None
            try:
                namer = build_namer(nc.kind, nc.prefix, nc.options, Notifier(), store.redis)
            except (NamerConfigError, ValueError) as err:
                at = configtree.locate(raw, str(err)) or _pos(config, "namers", i)
                raise _at(str(at), f"namers[{i}]: {err}") from None
            if isinstance(namer, FsNamer):
                problem = configtree.directory_problem(namer.root_dir)
                if problem is not None:
                    raise _at(
                        _pos(config, "namers", i, "rootDir"),
                        f"namers[{i}].rootDir: {str(namer.root_dir)!r} {problem}; create it or "
                        "fix the path (a relative path is taken from the directory namerd "
                        "runs in)",
                    )
    finally:
        await store.aclose()


def build(config: NamerdConfig) -> None:
    """Build what every worker builds from ``config`` (and let it go), so that whatever the
    builders reject is a config error now rather than a worker that fails to boot.

    Raises:
        ConfigError: located at the key at fault where the config file has it.
    """
    problem = _storage_problem(config)
    if problem is not None:
        raise problem
    asyncio.run(_build(config))


# -- listen --------------------------------------------------------------------------------------


def listen(config: NamerdConfig) -> tuple[NamerdConfig, list[socket.socket]]:
    """Bind and listen on the API and admin addresses.

    Returns the config with the ports actually bound (port 0 resolved) and the two sockets.

    Raises:
        ConfigError: an address cannot be bound, located at its port in the config file.
    """
    socks: list[socket.socket] = []
    bound: list[int] = []
    listeners = [
        (
            "interfaces[0].port",
            config.interface.ip,
            config.interface.port,
            config.interface.listen_pos,
        ),
        ("admin.port", config.admin.ip, config.admin.port, config.admin.listen_pos),
    ]
    try:
        for what, ip, port, listen_pos in listeners:
            try:
                infos = socket.getaddrinfo(
                    ip, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
                )
                family, kind, proto, _, sockaddr = infos[0]
                sock = socket.socket(family, kind, proto)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(sockaddr)
                    sock.listen(LISTEN_BACKLOG)
                except OSError:
                    sock.close()
                    raise
            except OSError as err:
                # A port left at its default has no position: the message names the key.
                key = what if listen_pos else f"{what} (default {port})"
                raise _at(
                    listen_pos,
                    f"{key}: cannot listen on {_host(ip)}:{port}: {err.strerror or err}; "
                    + listen_hint(err),
                ) from None
            socks.append(sock)
            bound.append(int(sock.getsockname()[1]))
    except ConfigError:
        for s in socks:
            s.close()
        raise
    return (
        dataclasses.replace(
            config,
            interface=dataclasses.replace(config.interface, port=bound[0]),
            admin=dataclasses.replace(config.admin, port=bound[1]),
        ),
        socks,
    )


# -- main ----------------------------------------------------------------------------------------


def _fail(message: str, source: str | None) -> int:
    """Print ``message`` as one line, located (``file:line:col: ...``) or ``namerd: ...``."""
    print(error_line("namerd", message, source), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``namerd`` command (see the module docstring for exit codes)."""
    parser = OneLineParser(prog="namerd", description="The namerd name service.")
    parser.add_argument("config", nargs="?", help="config file (YAML or JSON; - for stdin)")
    parser.add_argument("-c", "--config", dest="config_opt", help="config file (same as CONFIG)")
    parser.add_argument("--workers", type=int, help="worker processes (default 2)")
    parser.add_argument("--data-dir", help="embedded Redis data directory (default ./.namerd)")
    parser.add_argument("--validate", action="store_true", help="check the config and exit")
    add_cli_habits(parser, default_level=os.environ.get("NAMERD_LOG_LEVEL") or "info")
    args = parser.parse_args(argv)
    path = args.config_opt or args.config
    source = "<stdin>" if path == "-" else path
    try:
        config = load_config(path, data_dir=args.data_dir, workers=args.workers)
        build(config)
    except ConfigError as err:
        return _fail(str(err), source)
    if args.validate:
        print(f"namerd: {config.source}: configuration is valid")
        return 0
    logging.basicConfig(level=args.log_level, format="%(asctime)s namerd %(levelname)s %(message)s")
    try:
        config, socks = listen(config)
    except ConfigError as err:
        return _fail(str(err), source)

    redis: EmbeddedRedis | None = None
    stop = threading.Event()
    try:
        run_dir = tempfile.mkdtemp(prefix="namerd-run-")
    except OSError as err:
        for s in socks:
            s.close()
        return _fail(
            f"cannot create a run directory in {tempfile.gettempdir()}: {err.strerror}; "
            "set TMPDIR to a writable directory",
            None,
        )
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
    except (NamerdError, OSError) as err:
        for s in socks:
            s.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return _fail(
            str(
                _at(
                    config.storage.data_dir_pos,
                    f"the embedded Redis in {config.storage.data_dir!r} cannot start: {reason}",
                )
            ),
            source,
        )

    def on_exit() -> None:
        stop.set()
        if redis is not None:
            redis.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

    redis_url = url if not config.storage.sentinels else None
    # gunicorn owns the descriptors from here (it closes them on exit); our objects let go.
    fds = [s.detach() for s in socks]
    try:
        _Gunicorn(config, fds, redis_url or "", run_dir, on_exit, args.log_level).run()
    except SystemExit as exit_:
        on_exit()
        return int(exit_.code or 0)
    on_exit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
