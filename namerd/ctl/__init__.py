"""``namerctl``: manage namerd's dtabs and explain its routing from the command line.

A re-implementation of Linkerd's ``namerctl`` (reference namerd-api.md §6) on httpx, plus
``delegate``, ``bind`` and ``resolve`` commands for namerd's lookup endpoints (§2.5-2.8)::

    namerctl [--base-url URL] [--config FILE] [--token T] [--timeout-s S] COMMAND ...

    dtab list|ls [--json]
    dtab get|cat NAME [--json] [--pretty=true|false]
    dtab create|new NAME FILE|-
    dtab update|up NAME FILE|- [--version ETAG]
    dtab delete|del|rm NAME
    delegate NS PATH [--dtab DTAB] [--json]
    bind NS PATH [--dtab DTAB] [--json]
    resolve NS PATH [--dtab DTAB] [--json]

Settings, first found wins: the flag, the environment (``NAMERCTL_BASE_URL``,
``NAMERCTL_TOKEN``), the config file (``--config FILE``, else the first ``.namerctl.yaml``,
``.namerctl.yml`` or ``.namerctl.json`` in the working directory or a parent; keys
``base-url``, ``token``, ``timeout-s``), the default (``http://127.0.0.1:4180``, no token, 10 s).

Where we differ from namerctl, on purpose:

* ``dtab update --version`` wins over a ``version`` field in a JSON file (namerctl#21: a file
  saved by ``dtab get --json`` carries its old version, so the second update failed with 412
  and the flag could not rescue it). Without the flag, the file's version is used, as before.
* A JSON file may also be a bare ``[{"prefix":..,"dst":..}]`` list (namerd's own JSON).
* A dtab file is checked locally (same parser as namerd) before anything is sent, so a typo
  is reported with its file, line and column.
* Writes succeed only on namerd's 204 (or 201); a 200, or a 404 to a create, cannot come from
  namerd's API (e.g. the admin port answered) and is an error, not a false "Created"
  (namerctl#28).
* Global options are accepted before or after the command, as namerctl's persistent flags.
* Every failure is one line on stderr (``namerctl: ...``) and a non-zero exit: 1 for a failed
  request or bad input, 2 for bad arguments or settings. Never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx
import yaml

from shared import (
    Addr,
    AddrBound,
    Address,
    AddrFailed,
    AddrNeg,
    AddrPending,
    Alt,
    AltNode,
    Bound,
    DelegateNode,
    DelegateTree,
    Dtab,
    DtabParseError,
    Empty,
    EmptyNode,
    ExceptionNode,
    Fail,
    FailNode,
    Leaf,
    LeafNode,
    NameTree,
    Neg,
    NegNode,
    Path,
    TransformationNode,
    Union,
    UnionNode,
    WireFormatError,
    format_weight,
)
from shared.wire import (
    addr_from_json,
    bound_tree_from_json,
    delegate_tree_from_json,
    dtab_from_json,
    encode,
)

__all__ = ["main"]

DEFAULT_BASE_URL = "http://127.0.0.1:4180"
DEFAULT_TIMEOUT_S = 10.0
CONFIG_NAMES = (".namerctl.yaml", ".namerctl.yml", ".namerctl.json")
CONFIG_KEYS = ("base-url", "token", "timeout-s")
ENV_BASE_URL = "NAMERCTL_BASE_URL"
ENV_TOKEN = "NAMERCTL_TOKEN"

JSON = "application/json"
DTAB = "application/dtab"

#: At most this many addresses are listed on one line of a tree (``--json`` has them all).
MAX_ADDRS_SHOWN = 8

#: Delegation trees of looping dtabs are ~100 levels deep; decoding them recurses.
_RECURSION_LIMIT = 10000

T = TypeVar("T")


class CtlError(Exception):
    """A failure reported as one line on stderr; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CtlError):
    """Bad arguments or settings (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 2)


class _HelpExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# -- settings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    base_url: str
    token: str | None
    timeout_s: float


def find_config(start: FsPath) -> FsPath | None:
    """The first ``.namerctl.{yaml,yml,json}`` in ``start`` or one of its parents."""
    for directory in (start, *start.parents):
        for name in CONFIG_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def load_config(path: FsPath) -> dict[str, Any]:
    """Read a namerctl config file (YAML, or JSON, which YAML also reads)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read config file {path}: {_os_reason(err)}") from None
    try:
        value = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())
        raise UsageError(f"config file {path} is not valid {_fmt(path)}: {reason}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"config file {path} must be a mapping with a base-url key")
    unknown = sorted(str(k) for k in value if k not in CONFIG_KEYS)
    if unknown:
        raise UsageError(
            f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})"
        )
    return value


def _fmt(path: FsPath) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def _os_reason(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)


def normalize_base_url(raw: str, source: str) -> str:
    """Check that the base URL has an http(s) scheme and a host; drop a trailing ``/``."""
    hint = "it must have a scheme and host, e.g. http://namerd:4180"
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise UsageError(f"invalid base URL {raw!r} from {source}: {hint}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"invalid base URL {raw!r} from {source}: {hint}")
    if url.query or url.fragment:
        raise UsageError(f"invalid base URL {raw!r} from {source}: no query or fragment allowed")
    return str(url.copy_with(query=None, fragment=None)).rstrip("/")


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str], cwd: FsPath) -> Settings:
    """Flag, then environment, then config file, then default."""
    config_flag = getattr(args, "config", None)
    if config_flag is not None and not FsPath(config_flag).is_file():
        raise UsageError(f"config file {config_flag} does not exist (from --config)")
    config_path = FsPath(config_flag) if config_flag is not None else find_config(cwd)
    config = load_config(config_path) if config_path is not None else {}

    base: tuple[Any, str] = (DEFAULT_BASE_URL, "the default")
    if getattr(args, "base_url", None) is not None:
        base = (args.base_url, "--base-url")
    elif env.get(ENV_BASE_URL):
        base = (env[ENV_BASE_URL], ENV_BASE_URL)
    elif config.get("base-url") is not None:
        base = (config["base-url"], f"config file {config_path}")
    if not isinstance(base[0], str):
        raise UsageError(f"base-url in {base[1]} must be a string")
    base_url = normalize_base_url(base[0], base[1])

    token: Any = getattr(args, "token", None)
    if token is None:
        token = env.get(ENV_TOKEN) or config.get("token")
    if token is not None and not isinstance(token, str):
        raise UsageError(f"token in config file {config_path} must be a string")

    timeout: Any = getattr(args, "timeout_s", None)
    source = "--timeout-s"
    if timeout is None:
        timeout, source = config.get("timeout-s", DEFAULT_TIMEOUT_S), f"config file {config_path}"
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError(f"timeout-s from {source} must be a number of seconds > 0")
    return Settings(base_url, token or None, float(timeout))


# -- HTTP -----------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 400 else line[:400] + "..."
    return ""


class Client:
    """namerd's HTTP API, with every failure turned into a one-line :class:`CtlError`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base = settings.base_url
        headers = {"User-Agent": "namerctl (l5py)"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self.http = httpx.Client(timeout=settings.timeout_s, headers=headers)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = self.base + path
        try:
            return self.http.request(method, url, params=params, headers=headers, content=content)
        except httpx.TimeoutException:
            raise CtlError(
                f"namerd at {self.base} did not answer within {self.settings.timeout_s:g} s "
                "(--timeout-s)"
            ) from None
        except httpx.ConnectError as err:
            raise CtlError(
                f"cannot reach namerd at {self.base}: {_exc_reason(err)} — is it running? "
                f"set --base-url or {ENV_BASE_URL}"
            ) from None
        except httpx.HTTPError as err:
            raise CtlError(
                f"talking to namerd at {self.base} failed: {_exc_reason(err)} — is --base-url "
                "namerd's HTTP API?"
            ) from None

    def fail(self, resp: httpx.Response, name: str | None = None, extra: str = "") -> NoReturn:
        """Raise the one-line error for a non-success response."""
        status = f"{resp.status_code} {resp.reason_phrase}".strip()
        body = _first_line(resp.text)
        if resp.status_code == 404:
            if name is not None:
                raise CtlError(f"resource was not found by ID or name: {name}")
            raise CtlError(
                f"{resp.request.url.copy_with(query=None)} was not found (404) — is --base-url "
                "namerd's HTTP API (not its admin port)?"
            )
        if resp.status_code == 412:
            raise CtlError(
                "version mismatch: the dtab changed since you read it; get it again and retry"
                + extra
            )
        if resp.status_code == 401:
            hint = (
                "the token sent was not accepted"
                if self.settings.token
                else f"pass --token or set {ENV_TOKEN}"
            )
            raise CtlError(f"namerd refused the request ({status}): {body} — {hint}")
        if 400 <= resp.status_code < 500:
            if body:
                raise CtlError(f"namerd refused the request ({status}): {body}")
            raise CtlError(f"unexpected response: {status}")
        if body:
            raise CtlError(f"namerd failed ({status}): {body}")
        raise CtlError(f"unexpected response: {status}")

    def json(self, resp: httpx.Response) -> Any:
        try:
            return json.loads(resp.text)
        except ValueError:
            raise CtlError(
                f"unexpected response from {resp.request.url.copy_with(query=None)}: not JSON — "
                "is --base-url namerd's HTTP API (not its admin port)?"
            ) from None


def _exc_reason(err: Exception) -> str:
    reason = str(err) or type(err).__name__
    cause = err.__cause__ or err.__context__
    while not str(err) and cause is not None:
        reason = str(cause) or reason
        cause = cause.__cause__ or cause.__context__
    return " ".join(reason.split())


def _ns_path(kind: str, ns: str) -> str:
    return f"/api/1/{kind}/{quote(ns, safe='')}"


def _lookup_params(path: str, dtab: str | None) -> dict[str, str]:
    params = {"path": path}
    if dtab is not None:
        params["dtab"] = dtab
    return params


# -- input files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DtabInput:
    """A dtab read from a file or stdin, ready to send."""

    content: bytes
    content_type: str
    version: str | None
    source: str


def _read_source(arg: str) -> tuple[str, str]:
    if arg == "":
        raise UsageError("empty dtab path: give a file name, or - for stdin")
    if arg == "-":
        source = "stdin"
        buffer = getattr(sys.stdin, "buffer", None)
        try:
            raw: bytes | str = buffer.read() if buffer is not None else sys.stdin.read()
        except OSError as err:
            raise CtlError(f"cannot read stdin: {_os_reason(err)}") from None
    else:
        source = arg
        try:
            raw = FsPath(arg).read_bytes()
        except OSError as err:
            raise CtlError(f"cannot read {arg}: {_os_reason(err)}") from None
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
            dtab_from_json(value, where)
        except WireFormatError as err:
            raise CtlError(f"{source}: invalid dtab: {err}") from None
        return DtabInput(encode(value).encode("utf-8"), JSON, version, source)
    try:
        Dtab.read(text)
    except DtabParseError as err:
        raise CtlError(f"{source}: invalid dtab: {_first_line(err.render())}") from None
    return DtabInput(text.encode("utf-8"), DTAB, None, source)


# -- output helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Glyphs:
    tee: str
    last: str
    pipe: str
    space: str
    arrow: str
    cross: str
    used: str


UNICODE = Glyphs("├─ ", "└─ ", "│  ", "   ", "→", "✗", "← used")
ASCII = Glyphs("|- ", "`- ", "|  ", "   ", "->", "x", "<- used")


def glyphs() -> Glyphs:
    """Box-drawing characters if stdout can encode them, else ASCII."""
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "├└│→✗←".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


def out(line: str = "") -> None:
    print(line, file=sys.stdout)


def draw_tree(
    root: T, describe: Callable[[T], tuple[str, Sequence[T]]], g: Glyphs
) -> Iterator[str]:
    """Lines of an indented tree; ``describe(node)`` gives its text and children.

    Iterative, so the ~100-level trees of looping dtabs draw without deep recursion.
    """
    stack: list[tuple[T, bool | None, str]] = [(root, None, "")]
    while stack:
        node, is_last, indent = stack.pop()
        text, kids = describe(node)
        if is_last is None:
            yield text
            child_indent = ""
        else:
            yield indent + (g.last if is_last else g.tee) + text
            child_indent = indent + (g.space if is_last else g.pipe)
        for i in range(len(kids) - 1, -1, -1):
            stack.append((kids[i], i == len(kids) - 1, child_indent))


def _number(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def show_address(a: Address, full_meta: bool = False) -> str:
    host = f"[{a.ip}]" if ":" in a.ip else a.ip
    text = f"{host}:{a.port}"
    weight = a.meta.get("endpoint_addr_weight")
    if weight is not None:
        text += f" w={_number(weight)}"
    if full_meta:
        for key in sorted(k for k in a.meta if k != "endpoint_addr_weight"):
            text += f" {key}={encode(a.meta[key])}"
    return text


def show_addr(addr: Addr | None, g: Glyphs) -> str:
    """An inline addr on a tree line."""
    if addr is None:
        return ""
    if isinstance(addr, AddrBound):
        addrs = addr.sorted_addrs()
        if not addrs:
            return "[] (exists, no endpoints)"
        shown = [show_address(a) for a in addrs[:MAX_ADDRS_SHOWN]]
        if len(addrs) > MAX_ADDRS_SHOWN:
            shown.append(f"... {len(addrs) - MAX_ADDRS_SHOWN} more")
        return "[" + ", ".join(shown) + "]"
    if isinstance(addr, AddrFailed):
        return f"{g.cross} addresses failed: {_first_line(addr.cause)}"
    if isinstance(addr, AddrPending):
        return "(addresses pending)"
    return "(no addresses: the namer does not know this id)"


def _join(*parts: str) -> str:
    return "  ".join(p for p in parts if p)


def _shares(weights: Sequence[float]) -> list[str]:
    total = sum(w for w in weights if w > 0)
    out_: list[str] = []
    for w in weights:
        share = f" ({w / total:.0%})" if total > 0 and w >= 0 else ""
        out_.append(f"{format_weight(w)}{share}")
    return out_


def _message(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return lines[0].strip() + (" ..." if len(lines) > 1 else "")


# -- delegate trees -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Text:
    """A display-only line under a node (the bound name of a leaf)."""

    text: str


@dataclass(frozen=True)
class _DNode:
    node: DelegateTree | _Text
    parent_dentry: str | None = None
    weight: str | None = None
    used: bool = False


def _delegate_children(node: DelegateTree) -> list[DelegateTree]:
    if isinstance(node, DelegateNode | TransformationNode):
        return [node.tree]
    if isinstance(node, AltNode):
        return list(node.trees)
    if isinstance(node, UnionNode):
        return [w.tree for w in node.weighted]
    return []


def negative_nodes(root: DelegateTree) -> set[int]:
    """ids of the nodes that evaluate to ``~`` (an Alt skips them): a neg, or a node all of
    whose children are negative. Computed bottom-up without recursion."""
    neg: set[int] = set()
    order: list[DelegateTree] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(_delegate_children(node))
    for node in reversed(order):  # children before parents
        kids = _delegate_children(node)
        if isinstance(node, NegNode) or (kids and all(id(k) in neg for k in kids)):
            neg.add(id(node))
        elif isinstance(node, AltNode | UnionNode) and not kids:
            neg.add(id(node))
    return neg


def render_delegate(root: DelegateTree, addrs: Mapping[Path, Addr], g: Glyphs) -> list[str]:
    """A delegation explanation as an indented tree.

    Each line is one node: its weight (union branches), the dentry that produced it (only
    when it differs from its parent's), ``→``, the path it is about, and what it is. A leaf
    gets a child line with its bound id, residual and addresses; on an alt the first
    non-negative branch, the one binding uses, is marked.
    """
    neg = negative_nodes(root)

    def bound_line(b: Bound) -> _Text:
        residual = f"residual {b.residual.show()}" if not b.residual.is_empty else ""
        return _Text(_join(f"bound {b.id.show()}", residual, show_addr(addrs.get(b.id), g)))

    def describe(d: _DNode) -> tuple[str, list[_DNode]]:
        node = d.node
        if isinstance(node, _Text):
            return node.text, []
        weight = d.weight or ""
        used = g.used if d.used else ""
        if isinstance(node, TransformationNode):
            head = f"{node.path.show()}  (transformed by {node.name})"
            return _join(weight, head, used), [
                _DNode(bound_line(node.bound)),
                _DNode(node.tree, d.parent_dentry),
            ]
        dentry = node.dentry.show() if node.dentry is not None else None
        via = f"{dentry}  {g.arrow}  " if dentry is not None and dentry != d.parent_dentry else ""
        if isinstance(node, NegNode | FailNode) and node.path.is_empty:
            path = "~" if isinstance(node, NegNode) else "!"
        else:
            path = node.path.show()
        head = via + path
        kids: list[_DNode] = []
        what = ""
        if isinstance(node, DelegateNode):
            kids = [_DNode(node.tree, dentry)]
        elif isinstance(node, AltNode):
            what = "(alt: the first branch that is not ~ wins)"
            chosen = next((i for i, t in enumerate(node.trees) if id(t) not in neg), None)
            if len(node.trees) < 2:
                chosen = None
            kids = [_DNode(t, dentry, used=i == chosen) for i, t in enumerate(node.trees)]
        elif isinstance(node, UnionNode):
            what = "(union: split by weight)"
            labels = _shares([w.weight for w in node.weighted])
            kids = [
                _DNode(w.tree, dentry, weight=label)
                for w, label in zip(node.weighted, labels, strict=True)
            ]
        elif isinstance(node, LeafNode):
            value = node.value
            bound = value if isinstance(value, Bound) else Bound(value)
            kids = [_DNode(bound_line(bound))]
        elif isinstance(node, NegNode):
            what = "(neg: nothing here, falls back)"
        elif isinstance(node, FailNode):
            what = "(fail: the lookup stops here)"
        elif isinstance(node, EmptyNode):
            what = "(empty: exists, no endpoints)"
        elif isinstance(node, ExceptionNode):
            what = f"{g.cross} error: {_message(node.message)}"
        return _join(weight, head, what, used), kids

    return list(draw_tree(_DNode(root), describe, g))


# -- bound trees ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _BNode:
    tree: NameTree[Bound]
    weight: str | None = None
    used: bool = False


def _bound_negative(root: NameTree[Bound]) -> set[int]:
    neg: set[int] = set()
    order: list[NameTree[Bound]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(_bound_children(node))
    for node in reversed(order):
        kids = _bound_children(node)
        if isinstance(node, Neg) or (
            isinstance(node, Alt | Union) and all(id(k) in neg for k in kids)
        ):
            neg.add(id(node))
    return neg


def _bound_children(node: NameTree[Bound]) -> list[NameTree[Bound]]:
    if isinstance(node, Alt):
        return list(node.trees)
    if isinstance(node, Union):
        return [w.tree for w in node.weighted]
    return []


def render_bound(root: NameTree[Bound], addrs: Mapping[Path, Addr], g: Glyphs) -> list[str]:
    """A bind result as an indented tree: ids, residuals, weights and addresses."""
    neg = _bound_negative(root)

    def describe(b: _BNode) -> tuple[str, list[_BNode]]:
        node = b.tree
        weight = b.weight or ""
        used = g.used if b.used else ""
        kids: list[_BNode] = []
        if isinstance(node, Leaf):
            value = node.value
            residual = f"residual {value.residual.show()}" if not value.residual.is_empty else ""
            text = _join(value.id.show(), residual, show_addr(addrs.get(value.id), g))
        elif isinstance(node, Alt):
            text = "alt (the first branch that is not ~ wins)"
            chosen = next((i for i, t in enumerate(node.trees) if id(t) not in neg), None)
            if len(node.trees) < 2:
                chosen = None
            kids = [_BNode(t, used=i == chosen) for i, t in enumerate(node.trees)]
        elif isinstance(node, Union):
            text = "union (split by weight)"
            labels = _shares([w.weight for w in node.weighted])
            kids = [
                _BNode(w.tree, weight=label) for w, label in zip(node.weighted, labels, strict=True)
            ]
        elif isinstance(node, Neg):
            text = "~  (neg: the name does not resolve)"
        elif isinstance(node, Fail):
            text = "!  (fail: the dtab says this name fails)"
        elif isinstance(node, Empty):
            text = "$  (empty: exists, no endpoints)"
        else:  # pragma: no cover - NameTree is closed
            text = repr(node)
        return _join(weight, text, used), kids

    return list(draw_tree(_BNode(root), describe, g))


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# -- commands -------------------------------------------------------------------------------------


def cmd_dtab_list(client: Client, args: argparse.Namespace) -> int:
    resp = client.request("GET", "/api/1/dtabs", headers={"Accept": JSON})
    if resp.status_code != 200:
        client.fail(resp)
    names = client.json(resp)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CtlError("unexpected response from namerd: /api/1/dtabs is not a list of names")
    if args.json:
        out(encode(names))
    else:
        for name in names:
            out(name)
    return 0


def _get_dtab(client: Client, name: str) -> tuple[str, list[dict[str, str]]]:
    resp = client.request("GET", _ns_path("dtabs", name), headers={"Accept": JSON})
    if resp.status_code != 200:
        client.fail(resp, name)
    dentries = client.json(resp)
    if not isinstance(dentries, list) or not all(
        isinstance(d, dict) and isinstance(d.get("prefix"), str) and isinstance(d.get("dst"), str)
        for d in dentries
    ):
        raise CtlError(f"unexpected response from namerd: dtab {name} is not a list of dentries")
    return resp.headers.get("ETag", ""), dentries


def pretty_dtab(dentries: Sequence[Mapping[str, str]]) -> list[str]:
    """namerctl's pretty form: prefixes padded to one width, then ``  => dst ;``."""
    width = max((len(d["prefix"]) for d in dentries), default=0)
    return [f"{d['prefix'].ljust(width)}  => {d['dst']} ;" for d in dentries]


def cmd_dtab_get(client: Client, args: argparse.Namespace) -> int:
    version, dentries = _get_dtab(client, args.name)
    if args.json:
        out(encode({"version": version, "dtab": dentries}))
    elif args.pretty:
        if version:
            out(f"# version {version}")
        for line in pretty_dtab(dentries):
            out(line)
    else:
        out("".join(f"{d['prefix']}=>{d['dst']};" for d in dentries))
    return 0


def _write_ok(client: Client, resp: httpx.Response, name: str | None, extra: str = "") -> None:
    if resp.status_code in (201, 204):
        return
    if resp.status_code == 200:
        raise CtlError(
            f"unexpected response: {resp.status_code} {resp.reason_phrase} (namerd answers 204) "
            "— is --base-url namerd's HTTP API, not its admin port?"
        )
    client.fail(resp, name, extra)


def cmd_dtab_create(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
    resp = client.request(
        "POST",
        _ns_path("dtabs", args.name),
        headers={"Content-Type": data.content_type},
        content=data.content,
    )
    # namerd never answers 404 to a create: that is another server (or its admin port).
    _write_ok(client, resp, None)
    out(f"Created {args.name}")
    return 0


def cmd_dtab_update(client: Client, args: argparse.Namespace) -> int:
    data = read_dtab_input(args.file)
    version, origin = None, ""
    if args.version is not None:  # namerctl#21: the flag wins over the file's version
        version, origin = args.version, "--version"
    elif data.version is not None:
        version, origin = data.version, f"the version field of {data.source}"
    headers = {"Content-Type": data.content_type}
    if version:
        headers["If-Match"] = version
    resp = client.request(
        "PUT", _ns_path("dtabs", args.name), headers=headers, content=data.content
    )
    extra = f" (sent version {version} from {origin})" if version else ""
    _write_ok(client, resp, args.name, extra)
    out(f"Updated {args.name}")
    return 0


def cmd_dtab_delete(client: Client, args: argparse.Namespace) -> int:
    resp = client.request("DELETE", _ns_path("dtabs", args.name))
    _write_ok(client, resp, args.name)
    out(f"Deleted {args.name}")
    return 0


def _lookup(client: Client, kind: str, args: argparse.Namespace) -> httpx.Response:
    # Checked here with namerd's own parser, for a message with line and column.
    try:
        Path.read(args.path)
    except DtabParseError as err:
        raise UsageError(f"invalid PATH {args.path!r}: {_first_line(err.render())}") from None
    if args.dtab:
        try:
            Dtab.read(args.dtab)
        except DtabParseError as err:
            raise UsageError(f"invalid --dtab: {_first_line(err.render())}") from None
    resp = client.request(
        "GET",
        _ns_path(kind, args.namespace),
        params=_lookup_params(args.path, args.dtab),
        headers={"Accept": JSON},
    )
    if resp.status_code != 200:
        client.fail(resp)
    return resp


def _print_raw_json(resp: httpx.Response) -> None:
    out(resp.text.rstrip("\n"))


def cmd_delegate(client: Client, args: argparse.Namespace) -> int:
    resp = _lookup(client, "delegate", args)
    with _deep_recursion():
        value = client.json(resp)
        if args.json:
            _print_raw_json(resp)
            return 0
        try:
            tree, addrs = delegate_tree_from_json(value)
        except WireFormatError as err:
            raise CtlError(f"unexpected response from namerd: not a delegate tree: {err}") from None
        for line in render_delegate(tree, addrs, glyphs()):
            out(line)
    return 0


def cmd_bind(client: Client, args: argparse.Namespace) -> int:
    resp = _lookup(client, "bind", args)
    with _deep_recursion():
        value = client.json(resp)
        if args.json:
            _print_raw_json(resp)
            return 0
        try:
            tree, addrs = bound_tree_from_json(value)
        except WireFormatError as err:
            raise CtlError(f"unexpected response from namerd: not a bound tree: {err}") from None
        for line in render_bound(tree, addrs, glyphs()):
            out(line)
    return 0


def cmd_resolve(client: Client, args: argparse.Namespace) -> int:
    resp = _lookup(client, "resolve", args)
    value = client.json(resp)
    if args.json:
        _print_raw_json(resp)
        return 0
    try:
        addr = addr_from_json(value)
    except WireFormatError as err:
        raise CtlError(f"unexpected response from namerd: not an addr: {err}") from None
    where = f"{args.path} in namespace {args.namespace}"
    if isinstance(addr, AddrBound):
        addrs = addr.sorted_addrs()
        if not addrs:
            print(f"namerctl: {where} exists but has no endpoints", file=sys.stderr)
        for a in addrs:
            out(show_address(a, full_meta=True))
        return 0
    if isinstance(addr, AddrFailed):
        raise CtlError(f"resolving {where} failed: {_first_line(addr.cause)}")
    if isinstance(addr, AddrNeg):
        raise CtlError(
            f"{where} does not resolve to any address (neg); "
            f"see why with: namerctl delegate {args.namespace} {args.path}"
        )
    raise CtlError(f"{where} is still pending")


# -- argument parsing -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and never calls sys.exit itself."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("namerctl").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message.rstrip("\n"), file=sys.stderr)
        raise _HelpExit(status)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "t", "true", "yes", "on"):
        return True
    if lowered in ("0", "f", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


TOP_HELP = f"""\
namerctl manages namerd's delegation tables (dtabs) and explains how names route.

Settings (first found wins: flag, environment, config file, default):
  base URL   --base-url, ${ENV_BASE_URL}, config key base-url ({DEFAULT_BASE_URL})
  token      --token, ${ENV_TOKEN}, config key token (sent as Authorization: Bearer)
  timeout    --timeout-s, config key timeout-s ({DEFAULT_TIMEOUT_S:g} s)
The config file is --config FILE, else the first of {", ".join(CONFIG_NAMES)}
found in the working directory or one of its parents.

Exit status: 0 ok, 1 request failed or bad input, 2 bad arguments or settings."""

UPDATE_HELP = """\
Replace a dtab. FILE (or - for stdin) is a text dtab, or JSON if it starts with { or [:
{"version": "<etag>", "dtab": [...]} as `dtab get --json` prints, or a list of dentries.

Which version is sent as If-Match (the update then fails with 412 if the dtab changed):
  1. --version ETAG, if given. It wins over a version in the JSON file (namerctl#21 fix:
     re-applying a saved file no longer fails forever; pass the current version instead).
  2. else the JSON file's "version" field, if any;
  3. else none: the dtab is overwritten unconditionally (and created if missing)."""

GET_EPILOG = """\
--pretty (the default) prints '# version <etag>', then one 'prefix  => dst ;' line per
dentry, prefixes padded to one width; --pretty=false prints 'p=>d;p=>d;'; --json prints
{"version":"<etag>","dtab":[...]}, which `dtab update` accepts back."""

CREATE_EPILOG = """\
FILE (or - for stdin) is a text dtab, or JSON if it starts with { or [:
{"version": .., "dtab": [...]} (the version is ignored) or a list of dentries."""

LOOKUP_EPILOG = """\
PATH is a name such as /svc/users; --dtab adds rules for this lookup only (like the l5d-dtab
header), with priority over the stored dtab."""


def build_parser() -> _Parser:
    common = _Parser(add_help=False)
    g = common.add_argument_group("global options")
    g.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"namerd's HTTP API, e.g. http://namerd:4180 (env {ENV_BASE_URL}; "
        f"default {DEFAULT_BASE_URL})",
    )
    g.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="config file with a base-url key (default: .namerctl.yaml/.yml/.json searched in "
        "the working directory and its parents)",
    )
    g.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"bearer token for namerd's writes (env {ENV_TOKEN})",
    )
    g.add_argument(
        "--timeout-s",
        default=argparse.SUPPRESS,
        type=_positive_float,
        metavar="SECONDS",
        help=f"request timeout (default {DEFAULT_TIMEOUT_S:g})",
    )

    def sub(group: Any, name: str, aliases: Sequence[str], help_: str, **kw: Any) -> _Parser:
        p: _Parser = group.add_parser(
            name,
            aliases=list(aliases),
            help=help_,
            description=kw.pop("description", help_),
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        return p

    parser = _Parser(
        prog="namerctl",
        description=TOP_HELP,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    dtab = sub(commands, "dtab", [], "control namerd's delegation tables")
    dtab_cmds = dtab.add_subparsers(dest="dtab_command", metavar="COMMAND")

    p = sub(dtab_cmds, "list", ["ls"], "list dtab names")
    p.add_argument("--json", action="store_true", help="print the JSON array")
    p.set_defaults(func=cmd_dtab_list)

    p = sub(
        dtab_cmds,
        "get",
        ["cat"],
        "print a dtab and its version",
        epilog=GET_EPILOG,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print version and dtab as JSON")
    p.add_argument(
        "--pretty",
        type=_bool,
        default=True,
        metavar="true|false",
        help="aligned, one dentry per line (default true)",
    )
    p.set_defaults(func=cmd_dtab_get)

    p = sub(
        dtab_cmds,
        "create",
        ["new"],
        "create a dtab (fails if it exists)",
        epilog=CREATE_EPILOG,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.set_defaults(func=cmd_dtab_create)

    p = sub(dtab_cmds, "update", ["up"], "replace a dtab", description=UPDATE_HELP)
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument(
        "--version",
        metavar="ETAG",
        help="only update if the dtab is still at this version; wins over a version in the "
        "JSON file (namerctl#21)",
    )
    p.set_defaults(func=cmd_dtab_update)

    p = sub(dtab_cmds, "delete", ["del", "rm"], "delete a dtab")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_dtab_delete)

    for name, func, help_, json_help in (
        (
            "delegate",
            cmd_delegate,
            "explain, step by step, how the dtab routes a path",
            "print namerd's delegate tree JSON",
        ),
        (
            "bind",
            cmd_bind,
            "bind a path: the bound tree with ids, residuals and addresses",
            "print namerd's bound tree JSON",
        ),
        (
            "resolve",
            cmd_resolve,
            "resolve a path to its addresses (one per line; exit 1 if it does not resolve)",
            "print namerd's addr JSON",
        ),
    ):
        p = sub(commands, name, [], help_, epilog=LOOKUP_EPILOG)
        p.add_argument("namespace", metavar="NS")
        p.add_argument("path", metavar="PATH")
        p.add_argument("--dtab", metavar="DTAB", help="extra dtab rules for this lookup")
        p.add_argument("--json", action="store_true", help=json_help)
        p.set_defaults(func=func)

    parser.set_defaults(help_parser=parser)
    dtab.set_defaults(help_parser=dtab)
    return parser


def _preprocess(argv: Sequence[str]) -> list[str]:
    """A bare ``--pretty`` means ``--pretty=true`` and never eats the next argument (Go's
    bool flags: ``dtab get --pretty NAME``)."""
    result: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            result.extend(argv[i:])
            break
        result.append("--pretty=true" if arg == "--pretty" else arg)
    return result


def run(argv: Sequence[str], env: Mapping[str, str], cwd: FsPath) -> int:
    parser = build_parser()
    args = parser.parse_args(_preprocess(argv))
    func = getattr(args, "func", None)
    if func is None:  # a command group alone (`namerctl`, `namerctl dtab`): its help, as cobra
        args.help_parser.print_help(sys.stdout)
        return 0
    settings = resolve_settings(args, env, cwd)
    client = Client(settings)
    try:
        return int(func(client, args))
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """The ``namerctl`` command. Returns the exit status; never raises."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        return run(list(argv), os.environ, FsPath.cwd())
    except _HelpExit as done:
        return done.code
    except CtlError as err:
        _report(str(err))
        return err.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout went away (e.g. `| head`): stop quietly, without Python's exit-time complaint.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as err:  # a bug here must still be one line, not a traceback
        _report(f"internal error: {type(err).__name__}: {err}")
        return 1


def _report(message: str) -> None:
    text = "namerctl: " + " ".join(message.split())
    try:
        print(text, file=sys.stderr)
    except UnicodeEncodeError:
        print(text.encode("ascii", "replace").decode("ascii"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
