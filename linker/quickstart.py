"""The quick start: the whole stack on embedded defaults, in one command.

    python -m linker.quickstart

Starts two demo services (``hello`` on 8081, ``world`` on 8082), namerd (API 4180, admin 9991,
its own embedded Redis in ``./.quickstart/namerd``) with an ``io.l5d.fs`` namer, seeds the
``default`` dtab, starts a linker with 2 workers (router 4140, admin 9990) routed by namerd, and
prints what to try. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path as FsPath

__all__ = ["main", "write_configs"]

#: How long each component may take to come up.
START_TIMEOUT_S = 60.0
#: How long the stack gets to drain after Ctrl-C before what is left is killed.
STOP_GRACE_S = 20.0
#: How long the embedded Redis gets to save and exit when the quickstart shuts it down.
REDIS_SHUTDOWN_TIMEOUT_S = 5.0

PORTS = {
    "hello": 8081,
    "world": 8082,
    "namerd": 4180,
    "namerd-admin": 9991,
    "linker": 4140,
    "linker-admin": 9990,
}


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do: a port with only TIME_WAIT connections left is free to listen on.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, log: FsPath) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"quickstart: {what} exited ({proc.returncode}); see {log}:\n"
                + log.read_text()[-2000:]
            )
        with contextlib.suppress(OSError, urllib.error.URLError):
            with urllib.request.urlopen(url, timeout=1):
                return
        time.sleep(0.1)
    raise SystemExit(f"quickstart: {what} did not come up within {START_TIMEOUT_S:.0f}s; see {log}")


def _put_dtab(namerd: str, ns: str, dtab: str) -> None:
    req = urllib.request.Request(
        f"{namerd}/api/1/dtabs/{ns}",
        data=dtab.encode(),
        method="PUT",
        headers={"Content-Type": "application/dtab"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 204


def write_configs(work: FsPath, ports: Mapping[str, int] = PORTS) -> tuple[FsPath, FsPath]:
    """Write the demo services' ``disco`` directory and the namerd and linker configs into
    ``work`` (on ``ports``, by :data:`PORTS`' names); returns the two config files."""
    disco = work / "disco"
    disco.mkdir(parents=True, exist_ok=True)
    (disco / "hello").write_text(f"127.0.0.1 {ports['hello']}\n")
    (disco / "world").write_text(f"127.0.0.1 {ports['world']}\n")
    namerd, linker = work / "namerd.yaml", work / "linker.yaml"
    namerd.write_text(
        f"namers:\n- kind: io.l5d.fs\n  rootDir: {disco}\n"
        f"interfaces:\n- kind: io.l5d.httpController\n  port: {ports['namerd']}\n"
        f"admin:\n  port: {ports['namerd-admin']}\n"
    )
    linker.write_text(
        f"admin:\n  port: {ports['linker-admin']}\nrouters:\n- protocol: http\n"
        f"  label: outgoing\n  servers:\n  - port: {ports['linker']}\n"
        "  interpreter:\n    kind: io.l5d.namerd.http\n    experimental: true\n"
        f"    dst: /$/inet/127.0.0.1/{ports['namerd']}\n    namespace: default\n"
    )
    return namerd, linker


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the quick start until Ctrl-C (or ``--check``: start, verify routing, stop)."""
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", default=".quickstart", help="working directory (default ./.quickstart)"
    )
    parser.add_argument(
        "--check", action="store_true", help="start, send a routed request, stop (for CI)"
    )
    args = parser.parse_args(argv)
    busy = [f"{name} ({port})" for name, port in PORTS.items() if not _port_free(port)]
    if busy:
        print(
            f"quickstart: these ports are in use: {', '.join(busy)}; stop what uses them first.",
            file=sys.stderr,
        )
        return 1
    work = FsPath(args.dir).resolve()
    write_configs(work)
    py = sys.executable
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, cmd: list[str]) -> tuple[subprocess.Popen[bytes], FsPath]:
        log = work / f"{name}.log"
        proc = subprocess.Popen(
            cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=work, start_new_session=True
        )
        procs.append((name, proc))
        return proc, log

    try:
        for name in ("hello", "world"):
            p, log = start(
                name, [py, "-m", "linker.demo", "--name", name, "--port", str(PORTS[name])]
            )
            _wait_http(f"http://127.0.0.1:{PORTS[name]}/", p, f"demo service {name}", log)
        p, log = start(
            "namerd",
            [
                py,
                "-m",
                "namerd.main",
                str(work / "namerd.yaml"),
                "--data-dir",
                str(work / "namerd"),
            ],
        )
        _wait_http("http://127.0.0.1:9991/admin/ping", p, "namerd", log)
        _put_dtab("http://127.0.0.1:4180", "default", "/svc => /#/io.l5d.fs;")
        p, log = start(
            "linker", [py, "-m", "linker.main", "-c", str(work / "linker.yaml"), "--workers", "2"]
        )
        _wait_http("http://127.0.0.1:9990/admin/ping", p, "linker", log)
        # The first routed request also waits for the linker's namerd watches to connect.
        req = urllib.request.Request("http://127.0.0.1:4140/", headers={"Host": "hello"})
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    first = r.read().decode()
                break
            except (OSError, urllib.error.URLError) as err:
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"quickstart: routing through the linker does not work ({err}); "
                        f"see {work}/*.log"
                    ) from err
                time.sleep(0.2)
        if args.check:
            print(first, end="")
            return 0 if first.startswith("Hello from hello") else 1
        print(GUIDE.format(work=work, first=first.splitlines()[0]), flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        # From here on a signal only sets a flag: a second Ctrl-C that lands anywhere in the
        # stopping code (even in this print) must cut the wait short, never raise out of it
        # and leave children running.
        again = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: again.set())
        print("\nquickstart: stopping... (Ctrl-C again to kill at once)", flush=True)
        _stop(procs, again, work / "namerd" / "redis.sock")
    return 0


def _stop(
    procs: list[tuple[str, subprocess.Popen[bytes]]], again: threading.Event, redis_sock: FsPath
) -> None:
    """SIGTERM every process group and wait for each to drain; SIGKILL what is left after
    STOP_GRACE_S, or at once when ``again`` is set (a second Ctrl-C: a terminal sends one to the
    whole group, often twice)."""
    for _name, proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while any(proc.poll() is None for _name, proc in procs):
        if again.wait(0.05):
            print("quickstart: killing what is left", flush=True)
            break
        if time.monotonic() > deadline:
            break
    killed = False
    for _name, proc in reversed(procs):
        if proc.poll() is None:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if killed:
        _shutdown_redis(redis_sock)


def _shutdown_redis(socket_path: FsPath) -> None:
    """Stop namerd's embedded Redis after namerd was killed: it runs in its own session (so
    that namerd decides when it stops) and outlives a SIGKILLed namerd by design. SHUTDOWN
    persists its data first (AOF); nothing answering is fine."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(REDIS_SHUTDOWN_TIMEOUT_S)
        sock.connect(os.fspath(socket_path))
        sock.sendall(b"SHUTDOWN\r\n")
        sock.recv(1024)  # the server closes the connection once it has saved and exits


GUIDE = """
The stack is up (logs and data in {work}):
  demo services  hello 127.0.0.1:8081, world 127.0.0.1:8082
  namerd         API http://127.0.0.1:4180  admin http://127.0.0.1:9991  (embedded Redis)
  linker         http://127.0.0.1:4140  (2 workers)  admin http://127.0.0.1:9990
  dtab default   /svc => /#/io.l5d.fs;

Try:
  # route by Host: /svc/hello -> /#/io.l5d.fs/hello -> 127.0.0.1:8081
  curl -H 'Host: hello' http://127.0.0.1:4140/
      -> {first}

  # a per-request override sends just this request to world
  curl -H 'Host: hello' -H 'l5d-dtab: /svc/hello => /svc/world' http://127.0.0.1:4140/

  # change the dtab in namerd: every linker worker follows within moments
  .venv/bin/namerctl dtab update default - <<< '/svc => /#/io.l5d.fs; /svc/hello => /svc/world;'
  curl -H 'Host: hello' http://127.0.0.1:4140/
  .venv/bin/namerctl dtab update default - <<< '/svc => /#/io.l5d.fs;'

  # explain a route, see what failed, watch metrics
  curl 'http://127.0.0.1:9990/delegator.json?path=/svc/hello'
  curl -i -H 'Host: nosuch' http://127.0.0.1:4140/
  curl http://127.0.0.1:9990/admin/metrics.json

Ctrl-C stops everything.
"""


if __name__ == "__main__":
    sys.exit(main())
