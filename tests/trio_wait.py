"""Waiting in trio tests: poll a condition until it holds, on trio's clock (autojump-friendly)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio


async def eventually(
    check: Callable[[], Any], what: str, timeout_s: float = 5.0, interval_s: float = 0.02
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that value.

    Raises AssertionError naming ``what`` after ``timeout_s`` of trio time.
    """
    deadline = trio.current_time() + timeout_s
    while True:
        value = check()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if trio.current_time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await trio.sleep(interval_s)
