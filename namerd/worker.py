"""The gunicorn worker class: uvicorn's, plus a graceful drain of watch streams.

uvicorn's graceful shutdown waits for open responses to finish; a watch stream never finishes
by itself, so without help every SIGTERM would wait out the whole grace period and then cut
streams mid-chunk. On SIGTERM/SIGINT/SIGQUIT we first tell every stream of this worker to end
(cleanly, with the terminating chunk), then let uvicorn drain normal requests as usual.
"""

from __future__ import annotations

import logging
import os
import warnings
from types import FrameType

with warnings.catch_warnings():
    # uvicorn.workers is deprecated in favour of the uvicorn-worker package; it still works and
    # saves a dependency.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker

from uvicorn.server import Server

from namerd.app import begin_shutdown

__all__ = ["NamerdWorker"]

log = logging.getLogger("namerd.worker")


class _DrainingServer(Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin_shutdown()
        super().handle_exit(sig, frame)


class NamerdWorker(UvicornWorker):
    """UvicornWorker whose server drains watch streams on exit signals."""

    # uvicorn declares CONFIG_KWARGS as a plain class attribute; a ClassVar annotation here
    # would conflict with that declaration (mypy), so ruff's RUF012 is silenced instead.
    CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "lifespan": "on"}  # noqa: RUF012

    async def _serve(self) -> None:
        import sys

        from gunicorn.arbiter import Arbiter

        self.config.app = self.wsgi
        server = _DrainingServer(config=self.config)
        self._install_sigquit_handler()
        # Shows (with --log-level debug) that the level the master set reached the workers.
        log.debug("worker pid %d serving on %d sockets", os.getpid(), len(self.sockets))
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
