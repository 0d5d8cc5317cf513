"""Sharing the namerd interpreter's last-known answers between the workers of one linker.

Each worker writes what namerd last told it (``NamerdClient.export_last_known``) to
``<dir>/<label>.<pid>.json`` whenever it changed (at most every ``interval_s``, default 1 s),
atomically (a temporary file renamed over the old one), so a reader never sees half a file.
A worker starting reads the newest :data:`MAX_LAST_KNOWN_FILES` files of its router's label
(any worker's, its predecessors' included), oldest first so newer answers win, and hands them
to ``NamerdClient.import_last_known``; older files are deleted. A worker that starts while
namerd is unreachable thus routes on them instead of failing every name it never bound.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path as FsPath
from typing import Final

import trio

from linker.naming.watches import NamerdClient

__all__ = [
    "DEFAULT_LAST_KNOWN_INTERVAL_S",
    "MAX_LAST_KNOWN_FILES",
    "load_last_known",
    "share_last_known",
]

# The interpreter's logger: these messages are about its state.
log = logging.getLogger("linker.interpreter")

#: How often a namerd interpreter writes its last-known state for other workers (if changed).
DEFAULT_LAST_KNOWN_INTERVAL_S: Final = 1.0
#: Last-known files read at start (the newest); older ones are deleted.
MAX_LAST_KNOWN_FILES: Final = 16


def _file_safe(name: str) -> str:
    """``name`` usable in a file name, without dots (they separate the label from the pid)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "_"


def _write_atomically(target: FsPath, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name("." + target.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, target)


def load_last_known(client: NamerdClient, folder: FsPath, label: str) -> None:
    """Import the newest last-known files of this router (any worker, this one's
    predecessors included), oldest first so newer answers win; delete the rest."""
    files: list[tuple[float, FsPath]] = []
    for path in folder.glob(f"{_file_safe(label)}.*.json"):
        try:
            files.append((path.stat().st_mtime, path))
        except OSError:
            continue
    files.sort()
    for _, stale in files[:-MAX_LAST_KNOWN_FILES]:
        stale.unlink(missing_ok=True)
    taken = 0
    for _, path in files[-MAX_LAST_KNOWN_FILES:]:
        try:
            taken += client.import_last_known(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError, AttributeError) as err:
            log.warning("ignoring last-known state %s: %s", path, err)
    if taken:
        log.info("%d last-known namerd answers available from other workers", taken)


async def share_last_known(
    client: NamerdClient, folder: FsPath, label: str, interval_s: float
) -> None:
    """Write this worker's last-known answers whenever they changed (atomically)."""
    target = folder / f"{_file_safe(label)}.{os.getpid()}.json"
    written = -1
    warned = False
    while True:
        generation = client.changes.generation
        if generation != written:
            # Inline, like the metrics snapshots: a few KB to the page cache costs less
            # than a thread hop.
            try:
                _write_atomically(target, json.dumps(client.export_last_known()))
                written = generation
            except OSError as err:
                if not warned:
                    log.warning("cannot share last-known namerd state in %s: %s", folder, err)
                    warned = True
        await trio.sleep(interval_s)
