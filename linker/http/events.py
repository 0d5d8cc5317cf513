"""Event hooks: how the server and the upstream pool tell a metrics layer what happened.

Both take an optional ``on_event(name)`` callable and call it with one of their event names
(``SERVER_EVENTS``, ``POOL_EVENTS``); the worker turns each into a counter.  A hook that
raises is a metrics bug, which must not cost a request: :func:`emit` logs it and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["EventHook", "emit"]

EventHook = Callable[[str], None]
"""``on_event(name)``: told about one event."""


def emit(hook: EventHook | None, name: str, log: logging.Logger) -> None:
    """Call ``hook(name)`` if there is a hook; log what it raises instead of raising it."""
    if hook is None:
        return
    try:
        hook(name)
    except Exception:
        log.exception("on_event(%r) failed", name)
