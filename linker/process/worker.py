"""One forked worker process: a trio loop around the linker's ``WorkerMain``.

The master (``linker/process/master.py``) binds the listening sockets, forks, and calls
:func:`run_worker` in the child with a :class:`WorkerContext`. From there this module owns the
process until it exits:

* **Signals** go through ``trio.open_signal_receiver``: SIGTERM and SIGINT set the ``shutdown``
  event (graceful drain: stop accepting, finish in-flight requests, return); SIGQUIT cancels
  ``main`` outright (quick exit). SIGHUP, SIGTTIN and SIGTTOU are ignored: they are the master's
  business, and a terminal hangup sent to the whole process group must not kill every worker.
  Shutdown signals are *blocked* from the moment the master forks until the receiver is in
  place, so a SIGTERM that arrives during boot is delivered late rather than lost or fatal.
* **Heartbeat**: a task beats every ``heartbeat_interval_s`` while the loop is responsive; a
  worker whose loop is wedged (a blocking call, an infinite loop) goes silent and the master
  SIGKILLs it after ``heartbeat_timeout_s``. The same task notices a dead master (the parent pid
  changes, as gunicorn's ``is_parent_alive``) and drains instead of serving as an orphan.
* **Readiness**: ``main`` calls :meth:`WorkerContext.ready` once it is accepting. "Booted" means
  exactly that; the master waits for it before it counts a worker (first boot, SIGHUP reload).
* **Metrics**: ``ctx.metrics`` is written to ``<metrics_dir>/<pid>.json`` every
  ``snapshot_interval_s`` and once more on exit, where the master's admin server merges it.
* **Exit codes**: :data:`EXIT_OK` after a clean drain (or a SIGQUIT), :data:`EXIT_BOOT_FAILURE`
  if ``main`` fails before it called ``ready()`` (the master then refuses to fork-loop),
  :data:`EXIT_ERROR` otherwise.

How a ``WorkerMain`` should drain (what the master's zero-failure reload relies on): when
``shutdown`` is set, stop accepting, then take whatever is already queued on the listening
sockets with :func:`accept_queued` and serve it, then close the listeners and wait for
in-flight requests; answer with ``connection: close`` from then on,
and close idle keep-alive connections. The master SIGKILLs a worker that takes longer than
``graceful_timeout_s``. The listening sockets are shared by every worker and the master, so
while a new generation is running nothing queued is ever lost on a reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from linker.metrics import SNAPSHOT_INTERVAL_S, Metrics
from linker.process.heartbeat import Heartbeat

__all__ = [
    "EXIT_BOOT_FAILURE",
    "EXIT_ERROR",
    "EXIT_OK",
    "GRACEFUL_TIMEOUT_S",
    "HEARTBEAT_INTERVAL_S",
    "WorkerContext",
    "WorkerMain",
    "accept_queued",
    "run_worker",
]

log = logging.getLogger("linker.worker")

#: The worker drained and exited as asked (SIGTERM/SIGINT), or was told to quit (SIGQUIT).
EXIT_OK = 0
#: The worker failed after it was ready, or ``main`` returned without being asked to stop.
EXIT_ERROR = 1
#: ``main`` failed before it called ``ctx.ready()``. Same value as gunicorn's
#: ``WORKER_BOOT_ERROR``: on the first boot the master stops instead of forking again.
EXIT_BOOT_FAILURE = 3

#: Default seconds between heartbeats; the master's ``heartbeat_timeout_s`` must be well above.
HEARTBEAT_INTERVAL_S = 1.0
#: Default seconds a worker may take to drain after SIGTERM before the master SIGKILLs it.
GRACEFUL_TIMEOUT_S = 30.0

# Signals that stop a worker; blocked from fork until trio listens for them.
_SHUTDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
# The master's control signals: meaningless in a worker, and SIGHUP would kill it by default.
_IGNORED_SIGNALS = frozenset({signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH})


@dataclass(eq=False)
class WorkerContext:
    """Everything a worker gets from its master; built in the child right after ``fork()``.

    Attributes:
        worker_id: unique per master (never reused), for logs and per-worker names.
        generation: 1 at start, +1 per SIGHUP reload; workers of one generation share a config.
        listeners: router label -> listening sockets bound by the master (SO_REUSEADDR), shared
            by every worker: all of them accept from the same kernel queue.
        heartbeat: beaten by :func:`run_worker`; ``main`` only calls :meth:`ready`.
        metrics_dir: where this worker's metrics snapshot goes (``<pid>.json``).
        config: the parsed linker config (opaque here).
        heartbeat_interval_s: seconds between beats (default :data:`HEARTBEAT_INTERVAL_S`).
        snapshot_interval_s: seconds between metrics snapshots (default 1.0).
        graceful_timeout_s: how long a drain may take before the master SIGKILLs this worker
            (default :data:`GRACEFUL_TIMEOUT_S`); ``main`` can bound its own drain by it.
        metrics: this worker's registry; build names with ``metrics.router(label)``.
        master_pid: the parent; if it changes, the master died and the worker drains.
    """

    worker_id: int
    generation: int
    listeners: dict[str, list[socket.socket]]
    heartbeat: Heartbeat
    metrics_dir: str
    config: Any
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    snapshot_interval_s: float = SNAPSHOT_INTERVAL_S
    graceful_timeout_s: float = GRACEFUL_TIMEOUT_S
    metrics: Metrics = field(default_factory=Metrics)
    master_pid: int = field(default_factory=os.getppid)
    _ready: bool = field(default=False, init=False, repr=False)

    def ready(self) -> None:
        """Declare this worker booted: listening, config loaded, able to serve. Idempotent.

        Call it from ``main`` once the accept loops run. Until then a failure counts as a boot
        failure, and a SIGHUP reload keeps the old generation serving.
        """
        if not self._ready:
            self._ready = True
            self.heartbeat.mark_ready()
            log.info(
                "worker %d (pid %d, generation %d) ready",
                self.worker_id,
                os.getpid(),
                self.generation,
            )

    @property
    def is_ready(self) -> bool:
        return self._ready

    def trio_listeners(self) -> dict[str, list[trio.SocketListener]]:
        """The inherited sockets wrapped as ``trio.SocketListener`` (sets them non-blocking)."""
        return {
            label: [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
            for label, socks in self.listeners.items()
        }


#: A worker's body: serve until ``shutdown`` is set, then drain in-flight requests and return.
WorkerMain = Callable[[WorkerContext, trio.Event], Awaitable[None]]


def accept_queued(sock: socket.socket) -> list[socket.socket]:
    """Accept, without blocking, every connection already queued on the listening ``sock``.

    Call it right before closing a listener during a drain, with no ``await`` in between: a
    connection the kernel completed but nobody accepted is reset when the last descriptor of
    its listening socket closes, after the client may already have sent its request. (While
    other workers keep the socket open, e.g. during a reload, they would accept it anyway.)

    Leaves ``sock`` non-blocking. Never make a shared listener blocking again: ``O_NONBLOCK``
    belongs to the open file description that every worker shares, so one worker's
    ``setblocking(True)`` would make the others' event loops block in ``accept()``.
    """
    sock.setblocking(False)
    accepted: list[socket.socket] = []
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return accepted
        except OSError:
            # EMFILE and friends: keep what we have; the rest is lost with the socket.
            log.warning("accept_queued: %d accepted, then accept() failed", len(accepted))
            return accepted
        accepted.append(conn)


def run_worker(ctx: WorkerContext, main: WorkerMain) -> NoReturn:
    """Run ``main`` under trio in this (forked) process, then exit the process.

    Never returns: it ends with ``os._exit`` so that nothing of the master's call stack (its
    ``finally`` blocks, its admin server) runs again in the child.

    Exit codes: :data:`EXIT_OK`, :data:`EXIT_BOOT_FAILURE` or :data:`EXIT_ERROR`; see the
    module docstring.
    """
    code = EXIT_ERROR
    try:
        _prepare_signals()
        code = trio.run(_serve, ctx, main)
    except BaseException:
        log.exception("worker %d (pid %d) crashed", ctx.worker_id, os.getpid())
        code = EXIT_ERROR if ctx.is_ready else EXIT_BOOT_FAILURE
    finally:
        try:
            ctx.metrics.write_snapshot(ctx.metrics_dir)
        except Exception:
            log.warning("worker %d: could not write its final metrics snapshot", ctx.worker_id)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(Exception):
            logging.shutdown()
        os._exit(code)


def _prepare_signals() -> None:
    """Give this process a worker's signal dispositions (it inherited the master's)."""
    # Idempotent when the master already blocked them around fork(); needed when not.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)
    # trio installs its own wakeup fd and warns if another library left one behind.
    signal.set_wakeup_fd(-1)
    for sig in _SHUTDOWN_SIGNALS:
        # SIG_DFL, not SIG_IGN: ignoring would discard a pending SIGTERM from the master. While
        # blocked they stay pending, and trio's receiver picks them up once unblocked.
        signal.signal(sig, signal.SIG_DFL)
    for sig in _IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {*_IGNORED_SIGNALS, signal.SIGCHLD})


async def _serve(ctx: WorkerContext, main: WorkerMain) -> int:
    shutdown = trio.Event()
    with trio.open_signal_receiver(*_SHUTDOWN_SIGNALS) as signals:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHUTDOWN_SIGNALS)
        try:
            return await _supervise(ctx, main, shutdown, signals)
        finally:
            # Leaving the receiver restores SIG_DFL; a late SIGTERM must not turn a clean exit
            # into "killed by SIGTERM" while we write the last snapshot.
            signal.pthread_sigmask(signal.SIG_BLOCK, _SHUTDOWN_SIGNALS)


async def _supervise(
    ctx: WorkerContext, main: WorkerMain, shutdown: trio.Event, signals: AsyncIterator[int]
) -> int:
    main_scope = trio.CancelScope()
    code = EXIT_OK
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch_signals, ctx, signals, shutdown, main_scope)
        nursery.start_soon(_beat, ctx, shutdown)
        nursery.start_soon(_snapshots, ctx)
        try:
            with main_scope:
                await main(ctx, shutdown)
            if not shutdown.is_set():
                code = EXIT_ERROR if ctx.is_ready else EXIT_BOOT_FAILURE
                log.error(
                    "worker %d: main returned before shutdown was requested (%s)",
                    ctx.worker_id,
                    "after ready" if ctx.is_ready else "boot failure: never called ctx.ready()",
                )
        except Exception:
            if ctx.is_ready:
                code = EXIT_ERROR
                log.exception("worker %d (pid %d) failed", ctx.worker_id, os.getpid())
            else:
                code = EXIT_BOOT_FAILURE
                log.exception(
                    "worker %d (pid %d) failed to boot (before ctx.ready())",
                    ctx.worker_id,
                    os.getpid(),
                )
        finally:
            nursery.cancel_scope.cancel()
    return code


async def _watch_signals(
    ctx: WorkerContext,
    signals: AsyncIterator[int],
    shutdown: trio.Event,
    main_scope: trio.CancelScope,
) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGQUIT:
            log.info("worker %d: %s, quitting now", ctx.worker_id, name)
            main_scope.cancel()
        elif not shutdown.is_set():
            log.info("worker %d: %s, draining", ctx.worker_id, name)
        # Repeated TERM/INT stay graceful: Ctrl-C reaches the whole process group and the
        # master sends its own SIGTERM too, so two arrive for one request. Only the master
        # escalates (it turns a second Ctrl-C into SIGQUIT).
        shutdown.set()


async def _beat(ctx: WorkerContext, shutdown: trio.Event) -> None:
    while True:
        ctx.heartbeat.beat()
        if not shutdown.is_set() and os.getppid() != ctx.master_pid:
            log.warning("worker %d: master %d is gone, draining", ctx.worker_id, ctx.master_pid)
            shutdown.set()
        await trio.sleep(ctx.heartbeat_interval_s)


async def _snapshots(ctx: WorkerContext) -> None:
    # Written inline: a few KB to the page cache is cheaper than a thread hop, and
    # serialising is CPU-bound under the GIL either way.
    warned = False
    while True:
        try:
            ctx.metrics.write_snapshot(ctx.metrics_dir)
        except OSError as exc:
            if not warned:
                log.warning("worker %d: cannot write metrics: %s", ctx.worker_id, exc)
                warned = True
        await trio.sleep(ctx.snapshot_interval_s)
