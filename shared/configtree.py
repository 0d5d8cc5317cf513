"""Config trees that remember where each value was written, for errors that say file:line:column.

Stdlib only: each package parses its YAML (or JSON) into :class:`LocatedDict`/:class:`LocatedList`
itself and then reads it with :class:`Section`, which takes the known keys and rejects the rest::

    linker.yaml:7:3: unknown key 'dstPrefx' in routers[0] (known keys: dstPrefix, dtab, ...)

Both namerd and the linker read Linkerd-shaped config files, so both share this.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import SharedError

__all__ = [
    "ConfigError",
    "LocatedDict",
    "LocatedList",
    "Pos",
    "Section",
    "load_located_yaml",
    "located_dict",
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


class LocatedDict(dict[str, Any]):
    """A mapping from a config file that remembers its position and each key's."""

    pos: Pos
    key_pos: dict[str, Pos]


class LocatedList(list[Any]):
    """A sequence from a config file that remembers its position and each item's."""

    pos: Pos
    item_pos: list[Pos]


def located_dict(pos: Pos, items: dict[str, Any] | None = None) -> LocatedDict:
    """A LocatedDict at ``pos`` (keys without positions of their own point at ``pos``)."""
    out = LocatedDict(items or {})
    out.pos = pos
    out.key_pos = {}
    return out


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

    def error(self, key: str, message: str) -> Exception:
        """An error pointing at ``key``."""
        return self.error_cls(f"{self.key_pos(key)}: {self.where}.{key}: {message}")

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

    def millis(self, key: str, default: int) -> int:
        """A duration in milliseconds >= 0, where 0 turns the timeout off."""
        value = int(self.get(key, default, int))
        if value < 0:
            raise self.error(key, f"must be >= 0 milliseconds (0 turns it off), got {value}")
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


def load_located_yaml(
    text: str, file: str, yaml: Any, *, error: type[Exception] = ConfigError
) -> Any:
    """Parse YAML (JSON is a subset) into Located containers; an empty file gives ``{}``.

    ``yaml`` is the PyYAML module, passed in by the caller so this package stays stdlib-only.
    Duplicate keys are an error (PyYAML silently keeps the last one).
    """
    loader = yaml.SafeLoader(text)

    def pos(node: Any) -> Pos:
        return Pos(file, node.start_mark.line + 1, node.start_mark.column + 1)

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
            return out
        if isinstance(node, yaml.SequenceNode):
            items = LocatedList()
            items.pos, items.item_pos = pos(node), []
            for item in node.value:
                items.append(convert(item))
                items.item_pos.append(pos(item))
            return items
        return loader.construct_object(node, deep=True)

    try:
        node = loader.get_single_node()
        return located_dict(Pos(file, 1, 1)) if node is None else convert(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise error(f"{where}: not valid YAML: {problem}") from err
    finally:
        loader.dispose()
