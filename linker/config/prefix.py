"""Per-client and per-service parameters: Linkerd's ``io.l5d.global`` and ``io.l5d.static``.

    client:
      kind: io.l5d.static
      configs:
      - prefix: /#/io.l5d.fs/{service}      # every fs client
        loadBalancer: {kind: ewma}
      - prefix: /#/io.l5d.fs/payments        # later match wins, key by key
        failureAccrual: {kind: none}

A prefix is matched element by element against the bound client id (``client``) or the logical
name (``service``): a literal label must be equal, ``*`` and ``{name}`` match any one label, and
a shorter prefix matches every longer path. All matching configs apply in order, each key of a
later one replacing the same key of an earlier one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import Path

__all__ = ["StaticConfig", "params_for", "parse_static"]

_VAR = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}\Z")


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """One ``configs`` entry: its prefix (labels, ``None`` for a wildcard) and its keys."""

    prefix: tuple[bytes | None, ...]
    prefix_text: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def matches(self, path: Path) -> bool:
        """Element-wise prefix match; wildcards match exactly one label."""
        labels = path.labels
        if len(self.prefix) > len(labels):
            return False
        return all(p is None or p == label for p, label in zip(self.prefix, labels, strict=False))


def _parse_prefix(text: str) -> tuple[bytes | None, ...]:
    if not text.startswith("/"):
        raise ValueError(f"prefix {text!r} must start with '/'")
    out: list[bytes | None] = []
    for part in text.strip("/").split("/") if text.strip("/") else []:
        if part == "*" or _VAR.match(part):
            out.append(None)
        elif not part:
            raise ValueError(f"prefix {text!r} has an empty segment")
        else:
            out.append(Path.read("/" + part).labels[0])
    return tuple(out)


def parse_static(configs: Any, where: str, allowed: frozenset[str]) -> tuple[StaticConfig, ...]:
    """Validate an ``io.l5d.static`` ``configs`` list.

    Raises:
        ValueError: not a list of mappings, a missing or bad ``prefix``, or a key outside
            ``allowed``; the message names ``where`` and the entry.
    """
    if not isinstance(configs, list) or not configs:
        raise ValueError(f"{where}.configs must be a non-empty list of {{prefix: ..., ...}}")
    out = []
    for i, entry in enumerate(configs):
        at = f"{where}.configs[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{at} must be a mapping")
        text = entry.get("prefix")
        if not isinstance(text, str):
            raise ValueError(f"{at}.prefix is required (e.g. /#/io.l5d.fs/{{service}})")
        try:
            prefix = _parse_prefix(text)
        except Exception as err:
            raise ValueError(f"{at}.prefix: {err}") from None
        unknown = sorted(k for k in entry if k != "prefix" and k not in allowed)
        if unknown:
            raise ValueError(
                f"{at}: unknown key {unknown[0]!r} (known: prefix, {', '.join(sorted(allowed))})"
            )
        out.append(StaticConfig(prefix, text, {k: v for k, v in entry.items() if k != "prefix"}))
    return tuple(out)


def params_for(
    path: Path, base: Mapping[str, Any], static: Sequence[StaticConfig]
) -> dict[str, Any]:
    """``base`` overlaid with every matching static config, in order (later wins per key)."""
    params = dict(base)
    for cfg in static:
        if cfg.matches(path):
            params.update(cfg.params)
    return params
