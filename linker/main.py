"""``linker``: the data plane. A synchronous pre-fork master supervising N trio workers.

    linker [CONFIG | -c CONFIG] [--workers N] [--validate] [--log-level LEVEL] [--version]

The master (``linker.process.master``) binds every router's listeners and the admin port, forks the
workers and supervises them; each worker (:func:`worker_main`) runs one trio loop serving all
routers on the inherited sockets, with its own namerd watches and upstream connection pool.

Logging is configured once, in the master, before it forks: the workers inherit the root logger's
handler and ``--log-level``, and so do the workers a SIGHUP reload respawns.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from linker.config.load import (
    ConfigError,
    LinkerConfig,
    RouterConfig,
    load_config,
    pool_limits,
    router_identifier,
    router_interpreter,
    server_limits,
)
from linker.http.accesslog import AccessLog
from linker.http.server import serve_listeners
from linker.http.upstream import UpstreamPool
from linker.naming.explain import make_delegate
from linker.process.admin import AdminServer
from linker.process.master import ListenError, Master, MasterSettings
from linker.process.worker import WorkerContext
from linker.routing.policies import RouterPolicies
from linker.routing.router import Router
from shared.cli import OneLineParser, add_cli_habits
from shared.configtree import error_line, listen_hint

__all__ = ["main", "worker_main"]

log = logging.getLogger("linker")


async def worker_main(ctx: WorkerContext, shutdown: trio.Event) -> None:
    """Serve every router of ``ctx.config`` on the inherited listeners until ``shutdown``."""
    config: LinkerConfig = ctx.config
    listeners = ctx.trio_listeners()
    pools: list[UpstreamPool] = []
    access_logs: list[AccessLog] = []
    async with trio.open_nursery() as background:
        async with trio.open_nursery() as serving:
            for router_cfg in config.routers:
                interpreter = router_interpreter(
                    router_cfg,
                    config.namers,
                    # Shared by this linker's workers and their successors (the master's
                    # directory outlives workers, SIGHUP generations and crashes).
                    last_known_dir=(
                        os.path.join(ctx.metrics_dir, "last-known") if ctx.metrics_dir else None
                    ),
                )
                await background.start(interpreter.run)
                _interpreter_gauges(ctx, router_cfg.label, interpreter)
                # One of each per router, shared by all of its servers: what a failure, a
                # retry or a connection teaches through one server holds for the others.
                identifier = router_identifier(router_cfg)
                pool = UpstreamPool(
                    pool_limits(router_cfg), on_event=_events(ctx, router_cfg.label, "client")
                )
                pools.append(pool)
                policies = RouterPolicies(router_cfg, ctx.metrics.router(router_cfg.label))
                access_log = _open_access_log(router_cfg)
                if access_log is not None:
                    access_logs.append(access_log)
                    await background.start(access_log.run)
                socks = listeners.get(router_cfg.label, [])
                for server_cfg, listener in zip(router_cfg.servers, socks, strict=True):
                    router = Router(router_cfg, server_cfg, identifier, interpreter, pool, policies)
                    await serving.start(
                        partial(
                            serve_listeners,
                            [listener],
                            router.handle,
                            server_limits(router_cfg, server_cfg),
                            shutdown=shutdown,
                            on_event=_events(ctx, router_cfg.label),
                            on_response=access_log.record if access_log else None,
                        )
                    )
            ctx.ready()
            # Shows (with --log-level debug) that the master's level reached the workers.
            log.debug(
                "worker %d (pid %d) serving %d routers",
                ctx.worker_id,
                os.getpid(),
                len(config.routers),
            )
        # Every server has drained (shutdown was set and in-flight requests finished).
        background.cancel_scope.cancel()
    for pool in pools:
        await pool.aclose()
    for access_log in access_logs:
        access_log.close()


def _open_access_log(router: RouterConfig) -> AccessLog | None:
    """This worker's writer of the router's ``httpAccessLog`` (opened anew by every worker, so
    a SIGHUP's new workers reopen a file logrotate renamed)."""
    if router.http_access_log is None:
        return None
    return AccessLog(
        router.http_access_log,
        flush_interval_ms=router.http_access_log_flush_interval_ms,
        buffer_bytes=router.http_access_log_buffer_kb * 1024,
    )


def _interpreter_gauges(ctx: WorkerContext, label: str, interpreter: Any) -> None:
    """namerd watch state as gauges (sampled at each snapshot): connected/retrying watches."""
    scope = ctx.metrics.router(label)

    def watch_count(key: str) -> Callable[[], float]:
        return lambda: float(interpreter.state().get("watches", {}).get(key, 0))

    for key in ("bind", "addr", "connected", "retrying", "connecting"):
        scope.gauge(f"interpreter/namerd/watches/{key}", watch_count(key))
    scope.gauge(
        "interpreter/namerd/reconnects",
        lambda: float(interpreter.state().get("reconnects", 0)),
    )


def _events(ctx: WorkerContext, label: str, side: str = "server") -> Any:
    """Count the server's (or the upstream pool's, side ``client``) events as
    ``rt/<label>/<side>/<event>``."""
    prefix = f"rt/{label}/{side}"

    def on_event(name: str) -> None:
        ctx.metrics.incr(f"{prefix}/{name}")

    return on_event


def _fail(message: str, source: str | None) -> int:
    """Print ``message`` as one line, located (``file:line:col: ...``) or ``linker: ...``."""
    print(error_line("linker", message, source), file=sys.stderr)
    return 2


def _listen_error(config: LinkerConfig, err: ListenError) -> str:
    """``err`` located at the port's position in the config file, with what to do."""
    if err.label is None:
        pos, what = config.admin.listen_pos, "admin.port"
    else:
        index = next(i for i, r in enumerate(config.routers) if r.label == err.label)
        pos = config.routers[index].servers[err.index].listen_pos
        what = f"routers[{index}].servers[{err.index}].port"
    problem = f"cannot listen on {err.host}:{err.port}: {err.strerror}; {listen_hint(err)}"
    # A port left at its default has no position: the message names the key to set instead.
    return f"{pos}: {what}: {problem}" if pos else f"{what} (default {err.port}): {problem}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linker`` command.

    Exit codes: 0 after a requested stop (or a valid config with ``--validate``); 2 when the
    config is wrong or the linker cannot start (one line on stderr: ``file:line:col: ...`` at
    the key at fault, or ``linker: ...``); otherwise the master's (``linker.process.master``).
    """
    parser = OneLineParser(prog="linker", description="The linker data plane.")
    parser.add_argument("config", nargs="?", help="config file (YAML; - for stdin)")
    parser.add_argument("-c", "--config", dest="config_opt", help="config file (same as CONFIG)")
    parser.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    parser.add_argument("--validate", action="store_true", help="check the config and exit")
    add_cli_habits(parser)
    args = parser.parse_args(argv)
    path = args.config_opt or args.config
    try:
        # Builds every object a worker builds (see linker.config.load), without binding.
        config = load_config(path, workers=args.workers)
    except ConfigError as err:
        return _fail(str(err), "<stdin>" if path == "-" else path)
    if args.validate:
        print(f"linker: {config.source}: configuration is valid")
        return 0
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s linker %(process)d %(levelname)s %(message)s"
    )

    try:
        metrics_dir = tempfile.mkdtemp(prefix="linker-metrics-")
    except OSError as err:
        return _fail(
            f"cannot create a metrics directory in {tempfile.gettempdir()}: {err.strerror}; "
            "set TMPDIR to a writable directory",
            None,
        )
    master: Master | None = None
    listen_failures: list[str] = []

    def current_config() -> dict[str, Any]:
        return (master.config if master is not None else config).to_json()

    def reload() -> LinkerConfig:
        return load_config(path, workers=args.workers)

    def delegate(path_text: str, extra_text: str, label: str | None) -> tuple[int, str]:
        # Explain with the config the workers route by: after a SIGHUP reload, the new one.
        live = master.config if master is not None else config
        return make_delegate(live)(path_text, extra_text, label)

    admin = AdminServer(
        config.admin.ip,
        config.admin.port,
        metrics_dir=metrics_dir,
        config_json=current_config,
        delegate=delegate,
        on_shutdown=lambda: master.request_shutdown() if master is not None else None,
        master_stats=lambda: master.stats() if master is not None else {},
        allowed_hosts=config.admin.allowed_hosts,
    )
    bind = {r.label: [(s.ip, s.port) for s in r.servers] for r in config.routers}
    master = Master(
        MasterSettings(workers=config.workers),
        bind,
        worker_main,
        config,
        admin=admin,
        reload=reload,
        on_listen_error=lambda err: listen_failures.append(_listen_error(config, err)),
    )
    try:
        code = master.run()
    finally:
        # The master removes only directories it created; this one is ours.
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if listen_failures:
        return _fail(listen_failures[0], config.source)
    return code


if __name__ == "__main__":
    sys.exit(main())
