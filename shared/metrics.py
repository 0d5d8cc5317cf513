"""Per-process metrics snapshots: their files, their merge, and Prometheus text pieces.

The linker (a pre-fork master and trio workers) and namerd (gunicorn workers) both run several
processes, and each keeps its metrics in memory. Each process writes a *snapshot* of them to
``<dir>/<pid>.json`` every second or so; whoever serves the admin page merges the snapshots,
so a scrape sees the whole process tree whichever process answers. Plain files: no shared
memory, locks or Redis, so metrics keep working while anything else is down. This module is
the part both sides share; each keeps its own registry, names and renderings.

Snapshot format (JSON)::

    {"pid": 123,
     "counters":   {"name": number},                 # monotonic since the process started
     "gauges":     {"name": number},                 # describe the present
     "histograms": {"name": {"counts": [int, ...],   # per bucket, the last one is +Inf
                             "count": int, "sum": number,
                             "min": number | null, "max": number | null}},
     "scopes":     {"prefix": any}}                  # optional: the linker's label table

Merge rules (:func:`merge`):

* counters are summed over the live processes plus the *retired* totals (what exited
  processes had counted, folded in by :func:`fold_retired`), so a merged counter never goes
  backwards when a process is replaced;
* gauges are summed over the live processes only: a dead worker's open connections are not
  open;
* histograms add bucket by bucket (and count, sum; min of mins, max of maxes); two with a
  different number of buckets were written with other bounds (mixed versions) and are not
  mixed: the first one seen is kept;
* scopes: the first entry seen for a prefix is kept;
* a value that is not a number (a corrupt or foreign file) is skipped, not fatal.

File I/O here is plain reads and atomic replaces; the process-liveness check is
``os.kill(pid, 0)``. No clock, sockets or runtime.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path as FsPath
from typing import Any, Final, TypeGuard

__all__ = [
    "Snapshot",
    "compact_number",
    "fold_retired",
    "live_snapshots",
    "merge",
    "prom_histogram_lines",
    "prom_labels",
    "prom_name_part",
    "prom_value",
    "read_snapshot",
    "snapshot_name",
    "snapshot_pid",
    "write_snapshot_file",
]

#: A snapshot or a merge result, as parsed JSON (see the module docstring).
Snapshot = dict[str, Any]

_PID_FILE: Final = re.compile(r"^(\d+)\.json$")


def _number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _table(snap: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    table = snap.get(key)
    return table if isinstance(table, Mapping) else {}


def _add_numbers(acc: dict[str, Any], table: Mapping[str, Any]) -> None:
    for k, v in table.items():
        if _number(v):
            acc[k] = acc.get(k, 0) + v


def _add_histogram(acc: dict[str, Any], name: str, h: object) -> None:
    if not isinstance(h, Mapping):
        return
    counts, count, total = h.get("counts"), h.get("count"), h.get("sum")
    if not (isinstance(counts, list) and all(_number(n) for n in counts)):
        return
    if not (_number(count) and _number(total)):
        return
    mine = acc.get(name)
    if mine is None:
        acc[name] = {
            "counts": list(counts),
            "count": count,
            "sum": total,
            "min": h.get("min"),
            "max": h.get("max"),
        }
        return
    if len(mine["counts"]) != len(counts):
        return  # written with other bucket bounds: refuse to mix them
    mine["counts"] = [a + b for a, b in zip(mine["counts"], counts, strict=True)]
    mine["count"] += count
    mine["sum"] += total
    lows = [v for v in (mine.get("min"), h.get("min")) if _number(v)]
    highs = [v for v in (mine.get("max"), h.get("max")) if _number(v)]
    mine["min"] = min(lows) if lows else None
    mine["max"] = max(highs) if highs else None


def _add(acc: Snapshot, snap: Mapping[str, Any], *, with_gauges: bool) -> None:
    _add_numbers(acc["counters"], _table(snap, "counters"))
    if with_gauges:
        _add_numbers(acc["gauges"], _table(snap, "gauges"))
    for k, h in _table(snap, "histograms").items():
        _add_histogram(acc["histograms"], k, h)
    for k, v in _table(snap, "scopes").items():
        acc["scopes"].setdefault(k, v)


def _empty() -> Snapshot:
    return {"workers": 0, "counters": {}, "gauges": {}, "histograms": {}, "scopes": {}}


def merge(live: Iterable[Mapping[str, Any]], retired: Mapping[str, Any] | None = None) -> Snapshot:
    """Merge the snapshots of live processes and the retired totals (see the module docstring).

    Returns:
        ``{"workers": <live snapshots>, "counters", "gauges", "histograms", "scopes"}``.
    """
    acc = _empty()
    if retired is not None:
        _add(acc, retired, with_gauges=False)
    for snap in live:
        _add(acc, snap, with_gauges=True)
        acc["workers"] += 1
    return acc


def fold_retired(retired: Mapping[str, Any] | None, snap: Mapping[str, Any]) -> Snapshot:
    """The retired totals with an exited process's last snapshot added (no gauges)."""
    acc = merge((), retired)
    _add(acc, snap, with_gauges=False)
    return {k: acc[k] for k in ("counters", "histograms", "scopes")}


# -- files --------------------------------------------------------------------------------------


def snapshot_name(pid: int) -> str:
    """The file name of process ``pid``'s snapshot."""
    return f"{pid}.json"


def snapshot_pid(name: str) -> int | None:
    """The pid whose snapshot a file called ``name`` is, or None if it is no snapshot."""
    m = _PID_FILE.match(name)
    return None if m is None else int(m.group(1))


def write_snapshot_file(folder: str | os.PathLike[str], snapshot: Mapping[str, Any]) -> None:
    """Write ``snapshot`` as ``<folder>/<pid>.json`` via a hidden temp file and ``os.replace``.

    A reader sees the old or the new snapshot, never half of one.

    Raises:
        OSError: the folder is not writable; the caller decides whether that matters.
    """
    name = snapshot_name(int(snapshot["pid"]))
    target = FsPath(folder) / name
    tmp = target.with_name(f".{name}.tmp")
    tmp.write_text(json.dumps(snapshot, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, target)


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot | None:
    """A snapshot file's content, or None if it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(FsPath(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists. A zombie counts: its parent has not reaped (retired) it yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_snapshots(
    folder: str | os.PathLike[str], *, skip_pid: int | None = None
) -> list[Snapshot]:
    """The readable snapshots in ``folder`` of processes that still exist, by pid file name.

    The file of a process that no longer exists is deleted, not returned: nobody retired it
    (a crashed parent), so its counts cannot be told apart from a live process's. Other
    files are left alone; ``skip_pid`` (the caller, who has its own in memory) is skipped.
    A folder that cannot be listed has no snapshots.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out: list[Snapshot] = []
    for name in names:
        pid = snapshot_pid(name)
        if pid is None or pid == skip_pid:
            continue
        path = FsPath(folder) / name
        if not _alive(pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        snap = read_snapshot(path)
        if snap is not None:
            out.append(snap)
    return out


# -- Prometheus text format 0.0.4 ----------------------------------------------------------------

_PROM_BAD: Final = re.compile(r"[^a-zA-Z0-9_]")


def prom_name_part(part: str) -> str:
    """``part`` usable in a Prometheus metric or label name: other characters become ``_``."""
    return _PROM_BAD.sub("_", part)


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prom_labels(labels: Iterable[tuple[str, str]], extra: str = "") -> str:
    """``{k="v",...}`` (values escaped), with ``extra`` (e.g. ``le="5"``) last; "" if none."""
    body = ",".join(f'{prom_name_part(k)}="{_label_value(v)}"' for k, v in labels)
    if extra:
        body = f"{body},{extra}" if body else extra
    return "{" + body + "}" if body else ""


def compact_number(v: float) -> float | int:
    """An integral float as an int (``12``, not ``12.0``), as Linkerd prints counters."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def prom_value(v: float) -> str:
    """A sample value: integral floats without ``.0``, full precision, ``NaN``/``±Inf``."""
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        return repr(compact_number(v))
    return str(v)


def prom_histogram_lines(
    metric: str,
    labels: Sequence[tuple[str, str]],
    bounds: Sequence[float],
    counts: Sequence[int],
    *,
    total: float | None = None,
    count: int | None = None,
) -> list[str]:
    """A Prometheus histogram: cumulative ``_bucket{le=...}`` lines, ``_sum``, ``_count``.

    Args:
        bounds: the bucket upper bounds; ``counts`` has one more entry, for ``+Inf``.
        total: the ``_sum`` line's value; None leaves the line out.
        count: the ``_count`` value; None means the sum of ``counts``.
    """
    lines: list[str] = []
    running = 0
    for bound, n in zip([*(prom_value(b) for b in bounds), "+Inf"], counts, strict=False):
        running += n
        le = 'le="' + bound + '"'
        lines.append(f"{metric}_bucket{prom_labels(labels, le)} {running}")
    if total is not None:
        lines.append(f"{metric}_sum{prom_labels(labels)} {prom_value(float(total))}")
    lines.append(f"{metric}_count{prom_labels(labels)} {running if count is None else count}")
    return lines
