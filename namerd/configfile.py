"""Reading namerd's YAML config with positions (the containers, ``Section`` and the YAML walk
live in ``shared.configtree``, shared with the linker).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import yaml

from namerd.errors import NamerdError
from shared import configtree
from shared.configtree import LocatedDict, LocatedList, Pos

__all__ = ["ConfigError", "LocatedDict", "LocatedList", "Pos", "Section", "load_yaml"]


class ConfigError(NamerdError, configtree.ConfigError):
    """The config file is missing, unreadable, not YAML, or has a wrong key or value."""


#: ``Section`` raising namerd's ConfigError.
Section = partial(configtree.Section, error=ConfigError)


def load_yaml(text: str, file: str, env: Mapping[str, str] | None = None) -> Any:
    """Parse namerd's YAML (or JSON) config text into located containers.

    ``env`` (the caller passes ``os.environ``) turns on ``${VAR}`` / ``${VAR:-default}``
    expansion in values; None leaves every ``$`` as written.
    """
    return configtree.load_located_yaml(text, file, yaml, error=ConfigError, env=env)
