"""asyncio helpers every namerd layer uses: reconnect delays and cancelling tasks for sure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

from shared.backoff import backoff_s

__all__ = ["cancel_and_wait", "reconnect_delay_s"]

_RECANCEL_INTERVAL_S = 0.1


def reconnect_delay_s(failures: int, min_s: float, max_s: float) -> float:
    """Seconds before reconnecting after ``failures`` consecutive failures (``shared.backoff``).

    ``min_s`` first, doubling up to ``max_s``, jittered into the upper half so that several
    replicas do not reconnect to a restarted Redis in lock step.
    """
    return backoff_s(failures, first_s=min_s, base_s=2 * min_s, max_s=max_s, jitter=random.random())


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has finished.

    A task is cancelled again every ``_RECANCEL_INTERVAL_S`` until it is done, because a
    cancellation can be lost: on Python 3.11, ``asyncio.wait_for`` (which redis-py uses for
    every socket write when a socket timeout is set) returns normally if the inner operation
    completes just as the cancel arrives (CPython bpo-42130, fixed in 3.12). The task then
    carries on to its next await, and a single cancel() would leave close() hanging forever.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_RECANCEL_INTERVAL_S)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn; callbacks log crashes
