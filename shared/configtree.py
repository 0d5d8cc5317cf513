"""Config trees that remember where each value was written, for errors that say file:line:column.

Stdlib only: each package parses its YAML (or JSON) into :class:`LocatedDict`/:class:`LocatedList`
itself and then reads it with :class:`Section`, which takes the known keys and rejects the rest::

    linker.yaml:7:3: unknown key 'dstPrefx' in routers[0] (known keys: dstPrefix, dtab, ...)

Values are checked twice over: by :class:`Section` for shape and type, and by the builder of
each object (a namer, an interpreter, a balancer) that takes plain data and names the key it
rejects. :func:`locate` turns such a builder's message back into the position of that key, and
:meth:`Section.text_pos` gives the position of a character inside a string value (a dtab's
parse error points at the offending dentry, even in a ``|`` block).

Both namerd and the linker read Linkerd-shaped config files, so both share this.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SharedError

__all__ = [
    "TOP_LEVEL",
    "ConfigError",
    "LocatedDict",
    "LocatedList",
    "Pos",
    "Section",
    "TextPos",
    "directory_problem",
    "error_line",
    "expand_env",
    "listen_hint",
    "load_located_yaml",
    "locate",
    "located_dict",
    "read_config_text",
]


class ConfigError(SharedError, ValueError):
    """A config file is missing, unreadable, malformed, or has a wrong key or value."""


@dataclass(frozen=True, slots=True)
class Pos:
    """A position in a config file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class TextPos:
    """Where the characters of one string value were written: line 0 of the value starts at
    ``line``:``column``, and every further line (of a ``|`` block) at ``column`` of the next
    source line. Only built where that holds exactly (plain or quoted one-line scalars without
    escapes, literal blocks); elsewhere a value has just its start position."""

    file: str
    line: int
    column: int

    def at(self, value: str, offset: int) -> Pos:
        """The position of ``value[offset]``."""
        offset = max(0, min(offset, len(value)))
        line_start = value.rfind("\n", 0, offset) + 1
        return Pos(
            self.file, self.line + value.count("\n", 0, offset), self.column + offset - line_start
        )


class LocatedDict(dict[str, Any]):
    """A mapping from a config file that remembers its position, each key's, and where the
    text of each string value is (:class:`TextPos`, when knowable)."""

    pos: Pos
    key_pos: dict[str, Pos]
    text_pos: dict[str, TextPos]


class LocatedList(list[Any]):
    """A sequence from a config file that remembers its position and each item's."""

    pos: Pos
    item_pos: list[Pos]


def located_dict(pos: Pos, items: dict[str, Any] | None = None) -> LocatedDict:
    """A LocatedDict at ``pos`` (keys without positions of their own point at ``pos``)."""
    out = LocatedDict(items or {})
    out.pos = pos
    out.key_pos = {}
    out.text_pos = {}
    return out


def locate(value: Any, message: str) -> Pos | None:
    """The position in ``value`` (a located mapping) that a builder's error ``message`` names.

    Builders take plain data and say which key they reject: ``loadBalancer.kind: unknown kind
    'x'``, ``unknown key 'tls'``, ``retry.baseSeconds must be a number``. This finds the key of
    ``value`` the message names first (as a whole word), follows ``.child`` and ``[i]`` written
    right after it into nested mappings and lists, then looks for a key of what it reached in
    the rest of the message (``namers[1]: rootDir 'x' cannot be listed``), and returns the
    deepest position found. None when the message names no key of ``value``.
    """
    if not isinstance(value, dict):
        return None
    first: tuple[int, int, str] | None = None
    for key in value:
        found = re.search(rf"(?<!\w){re.escape(str(key))}(?!\w)", message)
        if found and (first is None or found.start() < first[0]):
            first = (found.start(), found.end(), key)
    if first is None:
        return None
    _, end, key = first
    positions: dict[str, Pos] = getattr(value, "key_pos", {})
    pos = positions.get(key)
    child, rest = value[key], message[end:]
    while True:
        step = re.match(r"\.(\w+)|\[(\d+)\]", rest)
        if step is None:
            return locate(child, rest) or pos
        rest = rest[step.end() :]
        if step.group(1) is not None and isinstance(child, dict) and step.group(1) in child:
            pos = getattr(child, "key_pos", {}).get(step.group(1), pos)
            child = child[step.group(1)]
        elif (
            step.group(2) is not None
            and isinstance(child, list)
            and int(step.group(2)) < len(child)
        ):
            index = int(step.group(2))
            items: list[Pos] = getattr(child, "item_pos", [])
            pos = items[index] if index < len(items) else pos
            child = child[index]
        else:
            return locate(child, rest) or pos


def directory_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot serve as a directory whose files are read, or None if it can.

    The check a namer's first scan makes (list the directory), done when the config is read so
    that a wrong ``rootDir`` is a config error with its position, not a failure at boot.
    """
    try:
        with os.scandir(path) as entries:
            next(entries, None)
    except FileNotFoundError:
        return "does not exist"
    except NotADirectoryError:
        return "is not a directory"
    except PermissionError:
        return "cannot be listed (permission denied)"
    except OSError as err:
        return f"cannot be listed ({err.strerror or err})"
    if not os.access(path, os.R_OK | os.X_OK):
        return "cannot be read (permission denied)"
    return None


#: The ``where`` of the file's top-level mapping (its keys are named without a prefix).
TOP_LEVEL = "the top level"


class Section:
    """One mapping being read: :meth:`get` known keys, then :meth:`done` rejects the rest.

    ``error`` is the exception class to raise (each package has its own exception tree).
    """

    def __init__(
        self,
        value: Any,
        where: str,
        pos: Pos | str | None = None,
        *,
        error: type[Exception] = ConfigError,
    ) -> None:
        self.error_cls = error
        if value is None:
            value = located_dict(pos if isinstance(pos, Pos) else Pos(str(pos or "<config>"), 1, 1))
        if not isinstance(value, dict):
            at = getattr(value, "pos", pos)
            raise error(f"{at or '<config>'}: {where} must be a mapping, got {value!r}")
        self.value: dict[str, Any] = value
        self.where = where
        self.taken: set[str] = set()

    @property
    def pos(self) -> Pos | str:
        """Where this section starts."""
        pos: Pos | str = getattr(self.value, "pos", "<config>")
        return pos

    def key_pos(self, key: str) -> Pos | str:
        """Where ``key`` was written (or this section's start)."""
        positions: dict[str, Pos] = getattr(self.value, "key_pos", {})
        return positions.get(key, self.pos)

    def text_pos(self, key: str, offset: int) -> Pos | str:
        """Where character ``offset`` of the string value of ``key`` was written (the key's
        position when that is not knowable, e.g. after ``${VAR}`` expansion)."""
        spans: dict[str, TextPos] = getattr(self.value, "text_pos", {})
        value = self.value.get(key)
        span = spans.get(key)
        if span is None or not isinstance(value, str):
            return self.key_pos(key)
        return span.at(value, offset)

    def path(self, key: str) -> str:
        """How errors name ``key``: ``routers[0].dtab``; a top-level key by itself."""
        return key if self.where == TOP_LEVEL else f"{self.where}.{key}"

    def error(self, key: str, message: str) -> Exception:
        """An error pointing at ``key``."""
        return self.error_cls(f"{self.key_pos(key)}: {self.path(key)}: {message}")

    def error_at(self, pos: Pos | str, key: str, message: str) -> Exception:
        """An error about ``key`` pointing at ``pos`` (somewhere inside its value)."""
        return self.error_cls(f"{pos}: {self.path(key)}: {message}")

    def get(
        self, key: str, default: Any = None, types: type | tuple[type, ...] | None = None
    ) -> Any:
        """Take ``key`` (``default`` if absent), checking its type if ``types`` is given.

        ``bool`` is not accepted where ``int``/``float`` is asked for (YAML ``yes`` is not 1).
        """
        self.taken.add(key)
        if key not in self.value:
            return default
        v = self.value[key]
        if types is not None:
            allowed = types if isinstance(types, tuple) else (types,)
            if not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed):
                names = " or ".join(t.__name__ for t in allowed)
                raise self.error(key, f"expected {names}, got {v!r}")
        return v

    def ip(self, key: str, default: str) -> str:
        """An IP address (v4 or v6) to listen on."""
        value = self.get(key, default, str)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise self.error(
                key, f"not an IP address: {value!r} (0.0.0.0 listens everywhere)"
            ) from None
        return str(value)

    def port(self, key: str, default: int) -> int:
        """A TCP port, 0-65535 (0: any free port)."""
        value = int(self.get(key, default, int))
        if not 0 <= value <= 65535:
            raise self.error(key, f"port must be 0-65535, got {value}")
        return value

    def positive_int(self, key: str, default: int) -> int:
        """An integer > 0 (sizes, counts, timeouts that cannot be turned off)."""
        value = int(self.get(key, default, int))
        if value <= 0:
            raise self.error(key, f"must be a positive integer, got {value}")
        return value

    def millis(self, key: str, default: int, *, zero_turns_off: bool = True) -> int:
        """A duration in milliseconds: >= 0 where 0 turns the timeout off, else > 0."""
        value = int(self.get(key, default, int))
        if zero_turns_off and value < 0:
            raise self.error(key, f"must be >= 0 milliseconds (0 turns it off), got {value}")
        if not zero_turns_off and value <= 0:
            raise self.error(
                key, f"must be > 0 milliseconds (it cannot be turned off), got {value}"
            )
        return value

    def has(self, key: str) -> bool:
        """True if ``key`` is present."""
        return key in self.value

    def done(self, also_allowed: Iterable[str] = ()) -> None:
        """Reject any key that was not taken, naming it and where it is."""
        allowed = self.taken | set(also_allowed)
        for key in self.value:
            if key not in allowed:
                known = ", ".join(sorted(allowed)) or "none"
                where = f"{self.key_pos(key)}: unknown key {key!r} in {self.where}"
                raise self.error_cls(f"{where} (known keys: {known})")


#: What to do about an address that cannot be listened on, by errno (see :func:`listen_hint`).
_LISTEN_HINTS = {
    errno.EADDRINUSE: "stop the process using that port or choose another port",
    errno.EADDRNOTAVAIL: "this host has no such address; use one of its addresses or 0.0.0.0",
    errno.EACCES: "ports below 1024 need privileges; choose a port above 1023",
}


def listen_hint(err: OSError) -> str:
    """What to do when a configured address cannot be bound (``err`` from bind/listen)."""
    return _LISTEN_HINTS.get(err.errno or 0, "check the address")


def error_line(program: str, message: str, source: str | None) -> str:
    """The one line a command prints for an error: ``message`` as it is when it starts with a
    position in config file ``source`` (``file:line:col: ...``), else ``program: message``;
    further lines, if any, joined with `` | ``."""
    located = source is not None and message.startswith(f"{source}:")
    text = message if located else f"{program}: {message}"
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def read_config_text(path: str, *, error: type[Exception] = ConfigError) -> tuple[str, str]:
    """The text of config file ``path`` (``-``: standard input) and the name errors give it.

    Raises:
        error: the file cannot be read, or is not UTF-8 (the message says what to do).
    """
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(), path
    except OSError as err:
        raise error(
            f"cannot read config file {path}: {err.strerror or err}; check the path and that "
            "this user may read it"
        ) from None
    except UnicodeDecodeError as err:
        raise error(
            f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None


def load_located_yaml(
    text: str,
    file: str,
    yaml: Any,
    *,
    error: type[Exception] = ConfigError,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Parse YAML (JSON is a subset) into Located containers; an empty file gives ``{}``.

    ``yaml`` is the PyYAML module, passed in by the caller so this package stays stdlib-only.
    Duplicate keys are an error (PyYAML silently keeps the last one).

    With ``env`` (callers pass ``os.environ``; None turns expansion off), ``${VAR}`` and
    ``${VAR:-default}`` in scalar *values* are replaced, and ``$$`` is a literal ``$``; a ``$``
    before anything else stays as written, so dtab paths such as ``/$/inet/...`` need no
    escaping. See :func:`expand_env` for the rules. Expansion happens on the parsed node, so
    positions in errors stay those of the file, and the type of a plain (unquoted) scalar is
    resolved *after* substitution: ``port: ${PORT:-4140}`` is the int 4140. Quoted and block
    scalars stay strings, an explicit tag (``!!str ${X}``) is kept, and a value can never
    turn into a mapping or list (it stays one scalar). Mapping keys are not expanded.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as err:  # a control character: the reader checks the whole text
        raise _yaml_error(err, text, file, error) from err
    # Scalars whose tag the resolver chose (no explicit ``!!tag``), with the event's
    # ``implicit`` flags (plain or quoted): only these are resolved again after substitution.
    # The composer drops that information, so it is noted here as each node is built.
    implicit: dict[int, Any] = {}
    compose_scalar = loader.compose_scalar_node

    def compose_scalar_node(anchor: Any) -> Any:
        event = loader.peek_event()
        node = compose_scalar(anchor)
        if event.tag is None or event.tag == "!":
            # Nodes live as long as the loader, so their ids stay unique meanwhile.
            implicit[id(node)] = event.implicit
        return node

    if env is not None:
        loader.compose_scalar_node = compose_scalar_node

    def pos(node: Any) -> Pos:
        return Pos(file, node.start_mark.line + 1, node.start_mark.column + 1)

    def text_pos(node: Any) -> TextPos | None:
        """Where the characters of a scalar's value were written, if that is knowable."""
        start, end = node.start_mark, node.end_mark
        buffer = start.buffer
        if buffer is None:
            return None
        if start.line == end.line:
            written = buffer[start.index : end.index]
            # Plain scalars are written as their value; quoted ones add a quote each side.
            # Anything else (escapes, folding) has no exact mapping.
            if written == node.value:
                return TextPos(file, start.line + 1, start.column + 1)
            if node.style in ("'", '"') and written[1:-1] == node.value:
                return TextPos(file, start.line + 1, start.column + 2)
            return None
        if node.style != "|":
            return None
        # A literal block: value line k is source line k after the `|` header, every line
        # indented alike. Check that on the first non-empty line before relying on it.
        lines = node.value.split("\n")
        source = buffer[start.index : end.index].split("\n")[1:]
        for k, text in enumerate(lines):
            if text and k < len(source):
                indent = len(source[k]) - len(text)
                if indent < 0 or source[k][indent:] != text:
                    return None
                return TextPos(file, start.line + 2, indent + 1)
        return None

    def offset_pos(node: Any, offset: int) -> Pos:
        """Where character ``offset`` of a scalar's value was written, if that is knowable."""
        span = text_pos(node)
        return span.at(node.value, offset) if span is not None else pos(node)

    def substitute(node: Any) -> Any:
        try:
            value = expand_env(node.value, env or {})
        except _ExpandError as err:
            raise error(f"{offset_pos(node, err.offset)}: {err.message}") from None
        if value == node.value:
            return node
        tag = node.tag
        if id(node) in implicit:
            # As the composer does: a plain scalar gets the tag its new text resolves to
            # (int, float, bool, null, str); a quoted one stays a string.
            tag = loader.resolve(yaml.ScalarNode, value, implicit[id(node)])
        return yaml.ScalarNode(tag, value, node.start_mark, node.end_mark, node.style)

    def convert(node: Any) -> Any:
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            out = located_dict(pos(node))
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise error(f"{pos(key_node)}: keys must be strings, got {key!r}")
                if key in out:
                    raise error(f"{pos(key_node)}: duplicate key {key!r}")
                out[key] = convert(value_node)
                out.key_pos[key] = pos(key_node)
                if isinstance(value_node, yaml.ScalarNode) and out[key] == value_node.value:
                    # (A value changed by ${VAR} expansion has no exact character positions.)
                    span = text_pos(value_node)
                    if span is not None:
                        out.text_pos[key] = span
            return out
        if isinstance(node, yaml.SequenceNode):
            items = LocatedList()
            items.pos, items.item_pos = pos(node), []
            for item in node.value:
                items.append(convert(item))
                items.item_pos.append(pos(item))
            return items
        if env is not None and isinstance(node, yaml.ScalarNode) and "$" in node.value:
            node = substitute(node)
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        return located_dict(Pos(file, 1, 1)) if node is None else convert(node)
    except yaml.YAMLError as err:
        raise _yaml_error(err, text, file, error) from err
    finally:
        loader.dispose()


def _yaml_error(err: Any, text: str, file: str, error: type[Exception]) -> Exception:
    """``error`` for a PyYAML exception, with file:line:column where PyYAML knows it."""
    mark = getattr(err, "problem_mark", None)
    position = getattr(err, "position", None)  # ReaderError: a character offset
    if mark is not None:
        where = f"{file}:{mark.line + 1}:{mark.column + 1}"
    elif isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        where = f"{file}:{line}:{column}"
    else:
        where = file
    problem = getattr(err, "problem", None)
    if problem is None and isinstance(getattr(err, "character", None), int):
        problem = f"unacceptable character #x{err.character:04x}: {err.reason}"
    return error(f"{where}: not valid YAML: {problem or err}")


_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _ExpandError(ValueError):
    """A bad ``${...}`` at character ``offset`` of the value."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in ``value`` from ``env``; ``$$`` is ``$``.

    The rules (a subset of the shell's and docker compose's):

    * ``${VAR}`` is VAR's value; VAR unset is an error (an empty value is used as it is).
    * ``${VAR:-default}`` is ``default`` when VAR is unset *or empty*. The default is taken
      literally, up to the first ``}``: it cannot contain ``}`` or another ``${...}``.
    * ``$$`` is one literal ``$``; any other ``$`` (``/$/inet/...``, ``$VAR``) stays as written.
    * Substituted text is not scanned again, so a value cannot expand further.

    Raises:
        ValueError: an unset variable, an unterminated ``${`` or an invalid name (the
            message names the variable; ``load_located_yaml`` adds file:line:column).
    """
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        dollar = value.find("$", i)
        if dollar < 0:
            out.append(value[i:])
            break
        out.append(value[i:dollar])
        nxt = value[dollar + 1 : dollar + 2]
        if nxt == "$":
            out.append("$")
            i = dollar + 2
            continue
        if nxt != "{":
            out.append("$")
            i = dollar + 1
            continue
        close = value.find("}", dollar + 2)
        if close < 0:
            raise _ExpandError(dollar, f"unterminated ${{ in {value!r} (write $$ for a literal $)")
        body = value[dollar + 2 : close]
        name, sep, default = body.partition(":-")
        if not _VAR_NAME.fullmatch(name):
            raise _ExpandError(
                dollar,
                f"invalid variable reference ${{{body}}}: expected ${{NAME}} or ${{NAME:-default}}"
                " with NAME made of letters, digits and _",
            )
        found = env.get(name)
        if sep:
            out.append(found if found else default)
        elif found is None:
            raise _ExpandError(
                dollar,
                f"environment variable {name} is not set (write ${{{name}:-default}} to give a"
                " default)",
            )
        else:
            out.append(found)
        i = close + 1
    return "".join(out)
