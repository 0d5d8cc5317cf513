"""``linker``: the data plane. A synchronous pre-fork master supervising N trio workers.

    linker [CONFIG | -c CONFIG] [--workers N] [--validate]

The master (``linker.master``) binds every router's listeners and the admin port, forks the
workers and supervises them; each worker (:func:`worker_main`) runs one trio loop serving all
routers on the inherited sockets, with its own namerd watches and upstream connection pool.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from linker.config.load import ConfigError, LinkerConfig, RouterConfig, load_config
from linker.http.server import ServerLimits, serve_listeners
from linker.http.upstream import PoolLimits, UpstreamPool
from linker.naming.explain import make_delegate
from linker.naming.interpreter import build_interpreter
from linker.process.admin import AdminServer
from linker.process.master import Master, MasterSettings
from linker.process.worker import WorkerContext
from linker.routing.identifiers import build_identifier
from linker.routing.policies import RouterPolicies
from linker.routing.router import Router

__all__ = ["main", "worker_main"]

log = logging.getLogger("linker")


def _pool_limits(router: RouterConfig) -> PoolLimits:
    attempt_s = router.request_attempt_timeout_ms / 1000 or None
    return PoolLimits(
        max_idle_per_host=router.pool_max_idle,
        idle_timeout_s=router.pool_idle_time_ms / 1000,
        connect_timeout_s=router.connect_timeout_ms / 1000 or 3600.0,
        response_header_timeout_s=attempt_s,
        max_per_host=router.pool_max_size,
        max_waiters_per_host=router.pool_max_waiters,
        min_idle_per_host=router.pool_min_size,
    )


def _server_limits(router: RouterConfig) -> ServerLimits:
    return ServerLimits(
        max_initial_line_bytes=router.max_initial_line_kb * 1024,
        max_headers_bytes=router.max_headers_kb * 1024,
    )


async def worker_main(ctx: WorkerContext, shutdown: trio.Event) -> None:
    """Serve every router of ``ctx.config`` on the inherited listeners until ``shutdown``."""
    config: LinkerConfig = ctx.config
    listeners = ctx.trio_listeners()
    pools: list[UpstreamPool] = []
    async with trio.open_nursery() as background:
        async with trio.open_nursery() as serving:
            for router_cfg in config.routers:
                interpreter = build_interpreter(
                    router_cfg.interpreter,
                    router_cfg.dtab,
                    config.namers,
                    bind_timeout_s=router_cfg.binding_timeout_ms / 1000,
                    # Shared by this linker's workers and their successors (the master's
                    # directory outlives workers, SIGHUP generations and crashes).
                    last_known_dir=(
                        os.path.join(ctx.metrics_dir, "last-known") if ctx.metrics_dir else None
                    ),
                    last_known_name=router_cfg.label,
                )
                await background.start(interpreter.run)
                _interpreter_gauges(ctx, router_cfg.label, interpreter)
                # One of each per router, shared by all of its servers: what a failure, a
                # retry or a connection teaches through one server holds for the others.
                identifier = build_identifier(router_cfg.identifier, router_cfg.dst_prefix)
                pool = UpstreamPool(_pool_limits(router_cfg))
                pools.append(pool)
                policies = RouterPolicies(router_cfg, ctx.metrics.router(router_cfg.label))
                socks = listeners.get(router_cfg.label, [])
                for server_cfg, listener in zip(router_cfg.servers, socks, strict=True):
                    router = Router(router_cfg, server_cfg, identifier, interpreter, pool, policies)
                    await serving.start(
                        partial(
                            serve_listeners,
                            [listener],
                            router.handle,
                            _server_limits(router_cfg),
                            shutdown=shutdown,
                            on_event=_events(ctx, router_cfg.label),
                        )
                    )
            ctx.ready()
        # Every server has drained (shutdown was set and in-flight requests finished).
        background.cancel_scope.cancel()
    for pool in pools:
        await pool.aclose()


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


def _events(ctx: WorkerContext, label: str) -> Any:
    prefix = f"rt/{label}/server"

    def on_event(name: str) -> None:
        ctx.metrics.incr(f"{prefix}/{name}")

    return on_event


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``linker`` command."""
    parser = argparse.ArgumentParser(prog="linker", description="The linker data plane.")
    parser.add_argument("config", nargs="?", help="config file (YAML; - for stdin)")
    parser.add_argument("-c", "--config", dest="config_opt", help="config file (same as CONFIG)")
    parser.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    parser.add_argument("--validate", action="store_true", help="check the config and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s linker %(process)d %(levelname)s %(message)s"
    )
    path = args.config_opt or args.config
    try:
        config = load_config(path, workers=args.workers)
    except ConfigError as err:
        print(f"linker: {err}", file=sys.stderr)
        return 2
    if args.validate:
        print(f"linker: {config.source}: configuration is valid")
        return 0

    metrics_dir = tempfile.mkdtemp(prefix="linker-metrics-")
    master: Master | None = None

    def current_config() -> dict[str, Any]:
        return (master.config if master is not None else config).to_json()

    def reload() -> LinkerConfig:
        return load_config(path, workers=args.workers)

    admin = AdminServer(
        config.admin.ip,
        config.admin.port,
        metrics_dir=metrics_dir,
        config_json=current_config,
        delegate=make_delegate(config),
        on_shutdown=lambda: master.request_shutdown() if master is not None else None,
        master_stats=lambda: master.stats() if master is not None else {},
    )
    bind = {r.label: [(s.ip, s.port) for s in r.servers] for r in config.routers}
    master = Master(
        MasterSettings(workers=config.workers),
        bind,
        worker_main,
        config,
        admin=admin,
        reload=reload,
    )
    try:
        return master.run()
    finally:
        # The master removes only directories it created; this one is ours.
        shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
