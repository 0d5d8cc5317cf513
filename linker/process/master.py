"""The pre-fork master: binds the routers' ports, forks trio workers, and keeps N of them alive.

Synchronous and trio-free, after gunicorn's arbiter. Theory of operation:

* **Listeners.** :meth:`Master.run` binds every router address once (SO_REUSEADDR), before the
  first fork. Every worker inherits the same sockets and accepts from the same kernel queue, so
  a connection waiting in the backlog is served by whichever worker is alive: replacing or
  reloading workers never drops one. The master keeps its copies until shutdown begins.
* **Signals.** Handlers only enqueue the signal number on a ``queue.SimpleQueue`` and write a
  byte to a self-pipe, which the main loop waits on (with ``signal.set_wakeup_fd`` as well, so a
  signal delivered to the admin thread still wakes it). Everything else happens in the loop:
  nothing is logged or forked from a handler, and syscalls interrupted by signals are retried
  (PEP 475). Signals are never left blocked in the master; they are held for the few
  microseconds of ``fork()`` only, so that one cannot land in the child before the child has
  swapped the master's handlers for its own (it would be consumed there and lost).
* **Loop.** Wake on a signal or every ``check_interval_s``; handle queued signals; reap every
  exited child with ``waitpid(-1, WNOHANG)``; check boot deadlines, heartbeats and drain
  deadlines; spawn or retire workers to match the target.
* **Liveness.** A worker is *booting* until it calls ``ctx.ready()`` (its heartbeat file grows to
  one byte), then *ready*. A booting worker gets ``boot_timeout_s``; a ready one must beat at
  least every ``heartbeat_timeout_s``, or it is SIGKILLed and replaced (SIGSTOP, a blocked
  event loop). A worker asked to stop gets ``graceful_timeout_s`` (``quick_timeout_s`` after
  SIGQUIT) before SIGKILL.
* **Failures.** Until the first generation is fully ready, a worker that fails to boot (exit
  code 3, or any death before ``ready()``) stops the master with exit code 3 and the reason:
  a broken config or import must not fork-loop. Later, dead workers are replaced and counted
  in ``master/worker_restarts``; more than ``restart_storm_limit`` deaths within
  ``restart_storm_window_s`` stop the master (exit code 1).
* **Reload (SIGHUP).** ``reload()`` re-reads the config (on error: keep the old one, log why);
  a new generation of N workers boots alongside the old one; once *all* of them are ready the
  old generation gets SIGTERM and drains. New workers accept from the same sockets while old
  ones finish, so clients see no error. If any new worker fails before ready, the reload is
  abandoned and the old generation keeps serving with the old config.
* **Stop.** SIGTERM/SIGINT (or ``POST /admin/shutdown``): close the master's copies of the
  listeners, SIGTERM every worker, wait up to ``graceful_timeout_s``, SIGKILL stragglers,
  exit 0. SIGQUIT, or a second SIGTERM/SIGINT: the same with SIGQUIT and ``quick_timeout_s``.
* SIGTTIN / SIGTTOU add or remove one worker (never below one).

Exit codes of :meth:`Master.run`: 0 after a requested stop, 1 when the listeners or the admin
port cannot be bound or on a restart storm, 3 when the first generation failed to boot. A
listener that cannot be opened is a :class:`ListenError` naming which one; it is logged, or
handed to ``on_listen_error`` (the ``linker`` command prints it as one line at the port's
position in the config file).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import logging
import os
import queue
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from linker import metrics as _metrics
from linker.process.heartbeat import Heartbeat
from linker.process.worker import (
    EXIT_BOOT_FAILURE,
    EXIT_ERROR,
    EXIT_OK,
    WorkerContext,
    WorkerMain,
    run_worker,
)

if TYPE_CHECKING:
    from linker.process.admin import AdminServer

__all__ = [
    "EXIT_BOOT_FAILURE",
    "EXIT_ERROR",
    "EXIT_OK",
    "LISTEN_BACKLOG",
    "ListenError",
    "Master",
    "MasterSettings",
    "describe_exit",
]

log = logging.getLogger("linker.master")

# Everything the master reacts to. SIGCHLD only wakes the loop; reaping happens every pass.
_MASTER_SIGNALS = frozenset(
    {
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGTTIN,
        signal.SIGTTOU,
        signal.SIGCHLD,
    }
)
# Queued by request_shutdown() (the admin thread): a graceful stop that never escalates.
_ADMIN_SHUTDOWN = -1

#: Ask the kernel for the largest accept queue it allows; it silently clips to
#: net.core.somaxconn. A short queue turns a burst into refused connections (trio's reasoning
#: in ``open_tcp_listeners``).
LISTEN_BACKLOG = 0xFFFF


def _default_workers() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class MasterSettings:
    """How the master supervises. Every duration is in seconds.

    Attributes:
        workers: worker processes per generation (default: the number of CPUs).
        graceful_timeout_s: how long workers may drain after SIGTERM before SIGKILL (30.0).
        heartbeat_timeout_s: a ready worker silent this long is SIGKILLed and replaced (10.0).
        boot_timeout_s: a worker not ready this long after fork is SIGKILLed (30.0).
        heartbeat_interval_s: how often workers beat (1.0); at most half the timeout.
        quick_timeout_s: how long workers get after SIGQUIT before SIGKILL (5.0).
        check_interval_s: how often the master checks heartbeats and deadlines when no
            signal wakes it (0.2); bounds how late a ready worker or a deadline is noticed.
        snapshot_interval_s: how often workers write their metrics snapshot (1.0).
        restart_storm_limit: more unexpected worker deaths than this ... (5)
        restart_storm_window_s: ... within this many seconds stop the master (10.0).
        heartbeat_dir: where heartbeat files are created (unlinked at once); None = $TMPDIR.
        metrics_dir: where workers write snapshots; None = the admin server's, else a fresh
            temporary directory removed on exit.
        backlog: listen() backlog of the routers' sockets (:data:`LISTEN_BACKLOG`).
    """

    workers: int = field(default_factory=_default_workers)
    graceful_timeout_s: float = 30.0
    heartbeat_timeout_s: float = 10.0
    boot_timeout_s: float = 30.0
    heartbeat_interval_s: float = 1.0
    quick_timeout_s: float = 5.0
    check_interval_s: float = 0.2
    snapshot_interval_s: float = _metrics.SNAPSHOT_INTERVAL_S
    restart_storm_limit: int = 5
    restart_storm_window_s: float = 10.0
    heartbeat_dir: str | None = None
    metrics_dir: str | None = None
    backlog: int = LISTEN_BACKLOG

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        for name in (
            "graceful_timeout_s",
            "heartbeat_timeout_s",
            "boot_timeout_s",
            "heartbeat_interval_s",
            "quick_timeout_s",
            "check_interval_s",
            "snapshot_interval_s",
            "restart_storm_window_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.heartbeat_interval_s * 2 > self.heartbeat_timeout_s:
            # One late beat (a GC pause, a slow disk) must not look like a hang.
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be at most half of "
                f"heartbeat_timeout_s ({self.heartbeat_timeout_s})"
            )
        if self.restart_storm_limit < 1:
            raise ValueError(f"restart_storm_limit must be >= 1, got {self.restart_storm_limit}")


class ListenError(OSError):
    """A listener could not be opened: router ``label``'s ``index``-th address, or (``label``
    None) the admin server's. ``strerror`` is the system's reason."""

    def __init__(
        self,
        errno: int | None,
        strerror: str,
        *,
        label: str | None,
        index: int,
        host: str,
        port: int,
    ) -> None:
        super().__init__(errno, strerror)
        self.label = label
        self.index = index
        self.host = host
        self.port = port

    def __str__(self) -> str:
        who = "the admin server" if self.label is None else f"router {self.label!r}"
        return f"{who}: cannot listen on {self.host}:{self.port}: {self.strerror}"


class _State(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(eq=False)
class _Worker:
    """The master's view of one child."""

    pid: int
    worker_id: int
    generation: int
    heartbeat: Heartbeat
    spawned_at: float
    ready: bool = False
    #: Set once we asked it to stop (SIGTERM/SIGQUIT): its exit is then expected.
    stop_deadline: float | None = None
    stop_signal: int | None = None
    #: Set when we SIGKILLed it for cause; it is then only waiting to be reaped.
    kill_reason: str | None = None

    def __repr__(self) -> str:
        state = (
            "killed"
            if self.kill_reason
            else "stopping"
            if self.stop_deadline is not None
            else "ready"
            if self.ready
            else "booting"
        )
        return f"<worker {self.worker_id} pid={self.pid} gen={self.generation} {state}>"


@dataclass(eq=False)
class _Reload:
    generation: int
    config: Any
    started_at: float


def describe_exit(code: int, *, killed_by_master: bool = False) -> str:
    """An ``os.waitstatus_to_exitcode`` result in words, for logs."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        # A SIGKILL nobody here sent is most often the kernel's OOM killer.
        oom = -code == signal.SIGKILL and not killed_by_master
        return f"killed by {name}" + (" (perhaps out of memory?)" if oom else "")
    if code == EXIT_BOOT_FAILURE:
        return f"exited with code {code} (boot failure)"
    return f"exited with code {code}"


class Master:
    """Supervises the linker's workers. Construct, then call :meth:`run` from the main thread.

    Args:
        settings: see :class:`MasterSettings`.
        bind: router label -> ``(host, port)`` addresses to listen on. Fixed for the master's
            life: a reload cannot move ports (restart for that).
        worker_main: the async body each worker runs (see ``linker.process.worker``).
        config: the parsed config handed to workers; :attr:`config` is always the one the
            serving generation runs.
        admin: the admin server to start and stop with the master (it runs in a thread here).
            Wire it with closures over the master: ``on_shutdown=master.request_shutdown``,
            ``master_stats=master.stats``.
        reload: called on SIGHUP; returns the new config, or raises to keep the old one.
        on_listen_error: called instead of logging when a listener cannot be opened (then
            :meth:`run` returns 1); None logs it.
        clock: monotonic clock; injectable for tests.
    """

    def __init__(
        self,
        settings: MasterSettings,
        bind: dict[str, list[tuple[str, int]]],
        worker_main: WorkerMain,
        config: Any,
        *,
        admin: AdminServer | None,
        reload: Callable[[], Any] | None = None,
        on_listen_error: Callable[[ListenError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._on_listen_error = on_listen_error
        self.bind = bind
        self.worker_main = worker_main
        self.config = config
        self.admin = admin
        self._reload_config = reload
        self._clock = clock
        #: router label -> the addresses actually bound (port 0 resolved), filled by run().
        self.addresses: dict[str, list[tuple[str, int]]] = {}
        self.metrics_dir = ""
        self._owns_metrics_dir = False
        self._listeners: dict[str, list[socket.socket]] = {}
        self._workers: dict[int, _Worker] = {}
        self._ids = itertools.count(1)
        self._generation = 1
        self._last_generation = 1
        self._target = settings.workers
        self._reload: _Reload | None = None
        self._state = _State.RUNNING
        self._quick = False
        self._exit_code = EXIT_OK
        self._up = False
        self._restarts = 0
        self._deaths: deque[float] = deque()
        self._started_at = 0.0
        self._signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake_r = self._wake_w = -1
        self._selector: selectors.BaseSelector | None = None
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd = -1

    # -- public, thread-safe -------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Begin a graceful stop, as SIGTERM would. Safe from any thread (the admin server)."""
        self._enqueue(_ADMIN_SHUTDOWN)

    def stats(self) -> dict[str, dict[str, float]]:
        """The master's own metrics, merged into the admin server's views. Any thread."""
        workers = list(self._workers.values())
        return {
            "counters": {"master/worker_restarts": self._restarts},
            "gauges": {
                "master/workers": len(workers),
                "master/workers_ready": sum(1 for w in workers if w.ready),
                "master/generation": self._generation,
                "master/uptime_s": round(self._clock() - self._started_at, 3)
                if self._started_at
                else 0.0,
            },
        }

    def worker_pids(self) -> dict[int, int]:
        """pid -> generation of every child not yet reaped (for logs and tests)."""
        return {w.pid: w.generation for w in list(self._workers.values())}

    # -- run -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Bind, fork, supervise until stopped. Returns the process exit code.

        Raises:
            RuntimeError: if not called from the main thread (signal handlers need it).
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("Master.run() must be called from the main thread")
        self._started_at = self._clock()
        try:
            try:
                self._prepare_metrics_dir()
                self._listeners = self._bind()
            except ListenError as exc:
                return self._listen_failed(exc)
            except OSError as exc:
                log.critical("cannot start: %s", exc)
                return EXIT_ERROR
            self._open_wake_pipe()
            self._install_signals()
            if self.admin is not None:
                try:
                    self.admin.start()
                except OSError as exc:
                    return self._listen_failed(
                        ListenError(
                            exc.errno,
                            exc.strerror or str(exc),
                            label=None,
                            index=0,
                            host=self.admin.ip,
                            port=self.admin.port,
                        )
                    )
            log.info(
                "master %d: %d workers, listening on %s",
                os.getpid(),
                self._target,
                ", ".join(
                    f"{label}={h}:{p}" for label, addrs in self.addresses.items() for h, p in addrs
                ),
            )
            self._loop()
            log.info("master %d: stopped (exit code %d)", os.getpid(), self._exit_code)
            return self._exit_code
        except BaseException:
            # A bug in the master: do not leave workers behind. SIGTERM, not SIGKILL: they can
            # drain on their own (they would also notice the master's death and drain).
            log.exception("master crashed; asking the workers to stop")
            for w in list(self._workers.values()):
                self._signal(w.pid, signal.SIGTERM)
            raise
        finally:
            self._restore_signals()
            self._close_listeners()
            if self.admin is not None:
                with contextlib.suppress(Exception):
                    self.admin.stop()
            self._close_wake_pipe()
            for w in self._workers.values():
                w.heartbeat.close()
            if self._owns_metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _loop(self) -> None:
        self._manage()
        while True:
            self._wait(self.settings.check_interval_s)
            self._handle_signals()
            self._reap()
            self._check()
            self._manage()
            if self._state is _State.STOPPING and not self._workers:
                return

    # -- setup ---------------------------------------------------------------------------------

    def _prepare_metrics_dir(self) -> None:
        d = self.settings.metrics_dir or (self.admin.metrics_dir if self.admin else None)
        if d:
            os.makedirs(d, exist_ok=True)
            # Snapshots of a previous run could carry pids that are alive again.
            _metrics.clear(d)
            self.metrics_dir = d
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="l5d-metrics-")
            self._owns_metrics_dir = True
        if self.admin is not None:
            # One directory for writers and reader, whichever of the two named it.
            self.admin.metrics_dir = self.metrics_dir

    def _listen_failed(self, exc: ListenError) -> int:
        if self._on_listen_error is not None:
            self._on_listen_error(exc)
        else:
            log.critical("cannot start: %s", exc)
        return EXIT_ERROR

    def _bind(self) -> dict[str, list[socket.socket]]:
        bound: dict[str, list[socket.socket]] = {}
        try:
            for label, addrs in self.bind.items():
                socks = bound.setdefault(label, [])
                for index, (host, port) in enumerate(addrs):
                    socks.append(self._listen(label, index, host, port))
                    name = socks[-1].getsockname()
                    self.addresses.setdefault(label, []).append((str(name[0]), int(name[1])))
        except OSError:
            for socks in bound.values():
                for s in socks:
                    s.close()
            raise
        return bound

    def _listen(self, label: str, index: int, host: str, port: int) -> socket.socket:
        try:
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ListenError(
                exc.errno, exc.strerror or str(exc), label=label, index=index, host=host, port=port
            ) from exc
        try:
            # REUSEADDR so a restart does not wait out TIME_WAIT; no REUSEPORT: one shared
            # queue is what lets a reload hand queued connections to the new generation.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(self.settings.backlog)
            # O_NONBLOCK is shared by every process holding the socket; set it once, here, so
            # no worker can ever block its event loop in accept().
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ListenError(
                exc.errno, exc.strerror or str(exc), label=label, index=index, host=host, port=port
            ) from exc
        return sock

    def _close_listeners(self) -> None:
        # Workers hold their own descriptors: closing ours stops nothing by itself, but once the
        # workers close theirs too the port is released and new connections are refused.
        for socks in self._listeners.values():
            for s in socks:
                s.close()
        self._listeners = {}

    def _open_wake_pipe(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    def _close_wake_pipe(self) -> None:
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _install_signals(self) -> None:
        for sig in _MASTER_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        # Also wakes the loop when the kernel delivers a signal to the admin thread, whose
        # Python-level handler then only runs once the main thread executes bytecode again.
        self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _restore_signals(self) -> None:
        if self._old_handlers:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            for sig, handler in self._old_handlers.items():
                signal.signal(sig, handler)
            self._old_handlers = {}

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        # Runs between two bytecodes of the main loop: enqueue and wake, nothing else.
        self._enqueue(signum)

    def _enqueue(self, item: int) -> None:
        self._signals.put_nowait(item)
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # full pipe: the loop is awake anyway
                os.write(self._wake_w, b"\0")

    def _wait(self, timeout_s: float) -> None:
        assert self._selector is not None
        if self._signals.empty():
            self._selector.select(timeout_s)
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _handle_signals(self) -> None:
        while True:
            try:
                item = self._signals.get_nowait()
            except queue.Empty:
                return
            if item == signal.SIGCHLD:
                continue  # reaping runs on every pass
            if item == _ADMIN_SHUTDOWN:
                log.info("shutdown requested through the admin server")
                self._begin_stop(quick=False)
            elif item in (signal.SIGTERM, signal.SIGINT):
                name = signal.Signals(item).name
                if self._state is _State.STOPPING and not self._quick:
                    log.info("%s again: quick shutdown", name)
                    self._begin_stop(quick=True)
                else:
                    log.info(
                        "%s: graceful shutdown (%.1fs)", name, self.settings.graceful_timeout_s
                    )
                    self._begin_stop(quick=False)
            elif item == signal.SIGQUIT:
                log.info("SIGQUIT: quick shutdown (%.1fs)", self.settings.quick_timeout_s)
                self._begin_stop(quick=True)
            elif item == signal.SIGHUP:
                self._begin_reload()
            elif item == signal.SIGTTIN:
                self._target += 1
                log.info("SIGTTIN: %d workers", self._target)
            elif item == signal.SIGTTOU:
                if self._target > 1:
                    self._target -= 1
                log.info("SIGTTOU: %d workers", self._target)

    # -- stop ----------------------------------------------------------------------------------

    def _begin_stop(self, *, quick: bool, exit_code: int = EXIT_OK) -> None:
        if self._exit_code == EXIT_OK:
            self._exit_code = exit_code
        if self._state is _State.STOPPING and (self._quick or not quick):
            return
        self._state = _State.STOPPING
        self._quick = self._quick or quick
        self._reload = None
        self._close_listeners()
        for w in list(self._workers.values()):
            self._ask_to_stop(w, quick=self._quick)

    def _ask_to_stop(self, w: _Worker, *, quick: bool) -> None:
        if w.kill_reason:
            return
        sig = signal.SIGQUIT if quick else signal.SIGTERM
        timeout_s = self.settings.quick_timeout_s if quick else self.settings.graceful_timeout_s
        deadline = self._clock() + timeout_s
        if w.stop_signal == signal.SIGQUIT or w.stop_signal == sig:
            return
        w.stop_signal = sig
        w.stop_deadline = deadline if w.stop_deadline is None else min(w.stop_deadline, deadline)
        self._signal(w.pid, sig)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _kill(self, w: _Worker, reason: str) -> None:
        log.warning("worker %d (pid %d) %s: SIGKILL", w.worker_id, w.pid, reason)
        w.kill_reason = reason
        self._signal(w.pid, signal.SIGKILL)

    # -- reload --------------------------------------------------------------------------------

    def _begin_reload(self) -> None:
        if self._state is _State.STOPPING:
            log.info("SIGHUP while stopping: ignored")
            return
        config = self.config
        if self._reload_config is not None:
            try:
                config = self._reload_config()
            except Exception as exc:
                log.error("SIGHUP: reloading the config failed, keeping the current one: %s", exc)
                return
        if self._reload is not None:
            log.info("SIGHUP during a reload: replacing generation %d", self._reload.generation)
            self._abandon_reload()
        self._last_generation += 1
        self._reload = _Reload(self._last_generation, config, self._clock())
        log.info(
            "SIGHUP: booting generation %d (%d workers); generation %d serves until it is ready",
            self._last_generation,
            self._target,
            self._generation,
        )

    def _abandon_reload(self) -> None:
        r = self._reload
        if r is None:
            return
        self._reload = None
        for w in list(self._workers.values()):
            if w.generation == r.generation:
                self._ask_to_stop(w, quick=False)

    def _commit_reload(self, r: _Reload) -> None:
        old = self._generation
        self._generation = r.generation
        self.config = r.config
        self._reload = None
        draining = 0
        for w in list(self._workers.values()):
            if w.generation != r.generation and w.stop_deadline is None:
                self._ask_to_stop(w, quick=False)
                draining += 1
        log.info(
            "reload complete: generation %d serving, %d workers of generation %d draining",
            r.generation,
            draining,
            old,
        )

    # -- reap and check ------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            w = self._workers.pop(pid, None)
            if w is None:
                continue
            if not w.ready:
                # It may have become ready since the last check: the file still says so.
                with contextlib.suppress(OSError):
                    w.ready = w.heartbeat.is_ready()
            w.heartbeat.close()
            try:
                _metrics.retire(self.metrics_dir, pid)
            except OSError as exc:
                log.warning("could not retire the metrics of pid %d: %s", pid, exc)
            self._exited(w, os.waitstatus_to_exitcode(status))

    def _exited(self, w: _Worker, code: int) -> None:
        how = describe_exit(code, killed_by_master=w.kill_reason is not None)
        if w.kill_reason:
            how = f"{w.kill_reason}; {how}"
        who = f"worker {w.worker_id} (pid {w.pid}, generation {w.generation})"
        if w.stop_deadline is not None:
            log.info("%s stopped: %s", who, how)
            return
        if self._state is _State.STOPPING:
            log.warning("%s died while stopping: %s", who, how)
            return
        if self._reload is not None and w.generation == self._reload.generation:
            log.error(
                "reload abandoned: %s %s before the new generation was ready; "
                "generation %d keeps serving with the previous config",
                who,
                how,
                self._generation,
            )
            self._abandon_reload()
            return
        if not self._up and (code == EXIT_BOOT_FAILURE or not w.ready):
            log.critical(
                "%s failed to boot: %s. Not forking again: stopping with exit code %d "
                "(the worker's own log above says why)",
                who,
                how,
                EXIT_BOOT_FAILURE,
            )
            self._begin_stop(quick=False, exit_code=EXIT_BOOT_FAILURE)
            return
        now = self._clock()
        self._restarts += 1
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > self.settings.restart_storm_window_s:
            self._deaths.popleft()
        if len(self._deaths) > self.settings.restart_storm_limit:
            log.critical(
                "%s %s; %d workers died within %.0fs: restart storm, stopping with exit code %d",
                who,
                how,
                len(self._deaths),
                self.settings.restart_storm_window_s,
                EXIT_ERROR,
            )
            self._begin_stop(quick=False, exit_code=EXIT_ERROR)
            return
        log.error("%s %s; replacing it", who, how)

    def _check(self) -> None:
        now = self._clock()
        s = self.settings
        for w in list(self._workers.values()):
            if w.kill_reason:
                continue
            if w.stop_deadline is not None and now > w.stop_deadline:
                self._kill(
                    w, f"did not exit within its {'quick' if self._quick else 'graceful'} timeout"
                )
                continue
            try:
                if not w.ready and w.stop_deadline is None:
                    # (A worker asked to stop while booting is bounded by its stop deadline.)
                    if w.heartbeat.is_ready():
                        w.ready = True
                        log.debug("worker %d ready after %.2fs", w.worker_id, now - w.spawned_at)
                    elif now - w.spawned_at > s.boot_timeout_s:
                        self._kill(w, f"not ready after boot_timeout_s={s.boot_timeout_s:g}s")
                        continue
                if w.ready:
                    age_s = w.heartbeat.last_beat_age_s()
                    if age_s > s.heartbeat_timeout_s:
                        self._kill(
                            w,
                            f"silent for {age_s:.1f}s "
                            f"(heartbeat_timeout_s={s.heartbeat_timeout_s:g}s)",
                        )
            except OSError as exc:  # the heartbeat file itself failed: treat as hung
                self._kill(w, f"heartbeat unreadable ({exc})")
        if not self._up and self._state is _State.RUNNING:
            serving = self._serving(self._generation)
            if len(serving) >= self._target and all(w.ready for w in serving):
                self._up = True
                log.info("up: %d workers ready", len(serving))

    def _serving(self, generation: int) -> list[_Worker]:
        """Workers of ``generation`` that nobody asked to stop.

        Includes workers SIGKILLed for cause but not reaped yet: their slot is only freed by
        the reap, which first decides whether a replacement is allowed at all (a failure on
        the first boot is not replaced).
        """
        return [
            w
            for w in self._workers.values()
            if w.generation == generation and w.stop_deadline is None
        ]

    # -- manage --------------------------------------------------------------------------------

    def _manage(self) -> None:
        if self._state is not _State.RUNNING:
            return
        self._resize(self._generation, self.config)
        r = self._reload
        if r is not None and self._state is _State.RUNNING:
            self._resize(r.generation, r.config)
            new = self._serving(r.generation)
            if len(new) >= self._target and all(w.ready for w in new):
                self._commit_reload(r)

    def _resize(self, generation: int, config: Any) -> None:
        current = self._serving(generation)
        for _ in range(self._target - len(current)):
            if not self._spawn(generation, config):
                break
        surplus = len(current) - self._target
        if surplus > 0:
            for w in sorted(current, key=lambda w: w.worker_id)[:surplus]:
                log.info("retiring worker %d (pid %d): too many workers", w.worker_id, w.pid)
                self._ask_to_stop(w, quick=False)

    def _spawn(self, generation: int, config: Any) -> bool:
        worker_id = next(self._ids)
        try:
            hb = Heartbeat(self.settings.heartbeat_dir)
        except OSError as exc:
            log.error("cannot create a heartbeat file: %s", exc)
            return False
        for stream in (sys.stdout, sys.stderr):  # or the child would print our buffer again
            with contextlib.suppress(Exception):
                stream.flush()
        # Held only across fork(): see the module docstring.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            hb.close()
            log.error("fork failed: %s", exc)
            return False
        if pid == 0:
            self._become_worker(worker_id, generation, config, hb)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self._workers[pid] = _Worker(pid, worker_id, generation, hb, self._clock())
        log.info("booting worker %d (generation %d) with pid %d", worker_id, generation, pid)
        return True

    def _become_worker(
        self, worker_id: int, generation: int, config: Any, hb: Heartbeat
    ) -> NoReturn:
        """In the child: drop the master's resources, then run the worker. Never returns."""
        try:
            signal.set_wakeup_fd(-1)
            self._close_wake_pipe()
            for other in self._workers.values():
                other.heartbeat.close()
            self._workers = {}
            if self.admin is not None:
                self.admin.close_in_child()
            s = self.settings
            ctx = WorkerContext(
                worker_id=worker_id,
                generation=generation,
                listeners=self._listeners,
                heartbeat=hb,
                metrics_dir=self.metrics_dir,
                config=config,
                heartbeat_interval_s=s.heartbeat_interval_s,
                snapshot_interval_s=s.snapshot_interval_s,
                graceful_timeout_s=s.graceful_timeout_s,
                master_pid=os.getppid(),
            )
            run_worker(ctx, self.worker_main)
        except BaseException:
            with contextlib.suppress(Exception):
                log.exception("worker %d could not start", worker_id)
        finally:
            os._exit(EXIT_BOOT_FAILURE)
