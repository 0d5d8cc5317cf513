"""Reading Linkerd-shaped YAML config files with positions, so errors can say file:line:column.

:func:`load_yaml` returns plain dicts/lists (``LocatedDict``/``LocatedList``) that also remember
where each key and value came from. :class:`Section` helps a config class take its known keys and
reject anything else with the key's name and position, e.g.::

    namerd.yaml:7:3: unknown key 'storge' in the top level (known keys: admin, interfaces, ...)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import NamerdError

__all__ = ["ConfigError", "LocatedDict", "LocatedList", "Section", "load_yaml"]


class ConfigError(NamerdError):
    """The config file is missing, unreadable, not YAML, or has a wrong key or value."""


@dataclass(frozen=True, slots=True)
class Pos:
    """A position in a config file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class LocatedDict(dict[str, Any]):
    """A dict from YAML that remembers the position of itself and of each key."""

    pos: Pos
    key_pos: dict[str, Pos]


class LocatedList(list[Any]):
    """A list from YAML that remembers its position and each item's."""

    pos: Pos
    item_pos: list[Pos]


def _pos(file: str, node: yaml.Node) -> Pos:
    return Pos(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(file: str, node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = LocatedDict()
        out.pos = _pos(file, node)
        out.key_pos = {}
        loader.flatten_mapping(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise ConfigError(f"{_pos(file, key_node)}: keys must be strings, got {key!r}")
            if key in out:
                raise ConfigError(f"{_pos(file, key_node)}: duplicate key {key!r}")
            out[key] = _convert(file, value_node, loader)
            out.key_pos[key] = _pos(file, key_node)
        return out
    if isinstance(node, yaml.SequenceNode):
        lst = LocatedList()
        lst.pos = _pos(file, node)
        lst.item_pos = []
        for item in node.value:
            lst.append(_convert(file, item, loader))
            lst.item_pos.append(_pos(file, item))
        return lst
    return loader.construct_object(node, deep=True)


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML (or JSON, a subset) into located containers; an empty file gives ``{}``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            empty = LocatedDict()
            empty.pos, empty.key_pos = Pos(file, 1, 1), {}
            return empty
        return _convert(file, node, loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from err
    finally:
        loader.dispose()


class Section:
    """One mapping of the config being read: take known keys, then :meth:`done` rejects the rest."""

    def __init__(self, value: Any, where: str, pos: Pos | str | None = None) -> None:
        if value is None:
            value = LocatedDict()
            value.pos = pos if isinstance(pos, Pos) else Pos(str(pos or "<config>"), 1, 1)
            value.key_pos = {}
        if not isinstance(value, dict):
            at = getattr(value, "pos", pos)
            raise ConfigError(f"{at or '<config>'}: {where} must be a mapping, got {value!r}")
        self.value = value
        self.where = where
        self.taken: set[str] = set()

    @property
    def pos(self) -> Pos | str:
        """Where this section starts."""
        return getattr(self.value, "pos", "<config>")

    def key_pos(self, key: str) -> Pos | str:
        """Where ``key`` was written (or this section's start)."""
        positions = getattr(self.value, "key_pos", {})
        return positions.get(key, self.pos)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError pointing at ``key``."""
        return ConfigError(f"{self.key_pos(key)}: {self.where}.{key}: {message}")

    def get(
        self, key: str, default: Any = None, types: type | tuple[type, ...] | None = None
    ) -> Any:
        """Take ``key`` (or ``default`` if absent), checking its type if ``types`` is given."""
        self.taken.add(key)
        if key not in self.value:
            return default
        v = self.value[key]
        if types is not None and (
            not isinstance(v, types) or (isinstance(v, bool) and bool not in _as_tuple(types))
        ):
            names = " or ".join(t.__name__ for t in _as_tuple(types))
            raise self.error(key, f"expected {names}, got {v!r}")
        return v

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
                raise ConfigError(f"{where} (known keys: {known})")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
