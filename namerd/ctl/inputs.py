"""Dtabs read from a file or stdin for ``dtab create`` and ``dtab update``.

A file is JSON if it starts with ``{`` or ``[`` (``{"version": "<etag>", "dtab": [...]}`` as
``dtab get --json`` prints, or a bare list of dentries), else dtab text. Either is checked with
namerd's own parser before anything is sent, so a typo is reported with its file, line and
column. The parsed dentries are kept in namerd's canonical JSON form, so that commands can show
what a write changes (``namerd.ctl.diff``) and refuse an empty dtab.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from namerd.ctl.client import DTAB, JSON
from namerd.ctl.errors import CtlError, UsageError, first_line, os_reason
from shared import Dtab, DtabParseError, WireFormatError
from shared.wire import dtab_from_json, dtab_to_json, encode

__all__ = ["DtabInput", "read_dtab_input"]


@dataclass(frozen=True)
class DtabInput:
    """A dtab read from a file or stdin, ready to send."""

    content: bytes
    content_type: str
    version: str | None
    source: str
    #: The dentries as namerd's JSON (``[{"prefix", "dst"}]``, canonical text).
    dentries: list[dict[str, Any]]


def _read_source(arg: str) -> tuple[str, str]:
    if arg == "":
        raise UsageError("empty dtab path: give a file name, or - for stdin")
    if arg == "-":
        source = "stdin"
        buffer = getattr(sys.stdin, "buffer", None)
        try:
            raw: bytes | str = buffer.read() if buffer is not None else sys.stdin.read()
        except OSError as err:
            raise CtlError(f"cannot read stdin: {os_reason(err)}") from None
    else:
        source = arg
        try:
            raw = FsPath(arg).read_bytes()
        except OSError as err:
            raise CtlError(f"cannot read {arg}: {os_reason(err)}") from None
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8-sig"), source
        except UnicodeDecodeError as err:
            raise CtlError(f"{source} is not UTF-8 text: {err}") from None
    return raw.lstrip("\ufeff"), source


def read_dtab_input(arg: str) -> DtabInput:
    """Read a dtab from a file (or ``-``): JSON if it starts with ``{`` or ``[``, else text.

    JSON is ``{"version": "<etag>", "dtab": [...]}`` (what ``dtab get --json`` prints) or a
    bare list of dentries; only the list is sent. Both forms are checked with namerd's parser.
    """
    text, source = _read_source(arg)
    if text.lstrip().startswith(("{", "[")):
        try:
            value = json.loads(text)
        except ValueError as err:
            raise CtlError(f"{source}: not valid JSON: {err}") from None
        version: str | None = None
        where = "$"
        if isinstance(value, dict):
            if "dtab" not in value:
                raise CtlError(
                    f'{source}: a JSON dtab must be {{"version": "...", "dtab": [...]}} '
                    "(as `dtab get --json` prints) or a list of dentries"
                )
            raw_version = value.get("version")
            if raw_version is not None and not isinstance(raw_version, str):
                raise CtlError(f"{source}: $.version must be a string (an ETag)")
            version = raw_version or None
            value, where = value["dtab"], "$.dtab"
        try:
            dtab = dtab_from_json(value, where)
        except WireFormatError as err:
            raise CtlError(f"{source}: invalid dtab: {err}") from None
        return DtabInput(encode(value).encode("utf-8"), JSON, version, source, dtab_to_json(dtab))
    try:
        dtab = Dtab.read(text)
    except DtabParseError as err:
        raise CtlError(f"{source}: invalid dtab: {first_line(err.render())}") from None
    return DtabInput(text.encode("utf-8"), DTAB, None, source, dtab_to_json(dtab))
