"""The architecture, enforced: every import points down the layer table, never up or across.

Layers are listed bottom-up. A module may import from its own layer entry (a package imports its
own modules) and from any entry of a *lower* rank; never from a higher rank, and never from a
different entry of the *same* rank (siblings stay independent, e.g. ``linker.policy`` and
``linker.naming``). ``linker`` and ``namerd`` never import each other, ``shared`` imports only
the standard library, and ``namerd.ctl`` (namerctl, a client) imports nothing of namerd's server
side. Every import counts, including ones inside functions and under ``TYPE_CHECKING``: a lazy
import is still a dependency.

The table is the architecture as README.md draws it; a new module must fall under an entry
(the test says so when it does not).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: (rank, entry) per package, bottom-up. An entry covers the module of that name and everything
#: below it; the longest matching entry decides a module's layer.
LAYERS: dict[str, list[tuple[int, str]]] = {
    "shared": [(0, "shared")],
    "linker": [
        (0, "linker.errors"),
        (0, "linker.metrics"),
        (0, "linker.config.prefix"),
        (1, "linker.config.model"),
        (2, "linker.http"),
        (3, "linker.policy"),
        (3, "linker.naming"),
        (4, "linker.routing"),
        (5, "linker.config"),
        (5, "linker.process"),
        (6, "linker.main"),
        (6, "linker.quickstart"),
        (6, "linker.demo"),
        (7, "linker"),  # the package's own __init__
    ],
    "namerd": [
        (0, "namerd.errors"),
        (0, "namerd.aio"),
        (0, "namerd.metrics"),
        (1, "namerd.configfile"),
        (2, "namerd.config"),
        (2, "namerd.storage"),
        (3, "namerd.naming"),
        (4, "namerd.runtime"),
        (5, "namerd.http"),
        (6, "namerd.app"),
        (7, "namerd.worker"),
        (8, "namerd.main"),
        (0, "namerd.ctl"),  # namerctl: a client of the API; checked separately below
        (9, "namerd"),
    ],
}

# A package's own modules and the third-party libraries each top-level package may use.
STDLIB = frozenset(sys.stdlib_module_names)


def _entry(module: str) -> tuple[int, str] | None:
    top = module.split(".")[0]
    best: tuple[int, str] | None = None
    for rank, name in LAYERS.get(top, []):
        # The bare package name (its __init__) covers only itself, not unlisted modules.
        whole = "." in name or len(LAYERS[top]) == 1  # shared is one layer
        covers = module == name or (whole and module.startswith(name + "."))
        if covers and (best is None or len(name) > len(best[1])):
            best = (rank, name)
    return best


def _imports(module: str, source: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source``, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            # `from pkg import mod` imports pkg.mod when mod is a module of ours.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else target))
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(module: str, source: str, is_package: bool = False) -> list[str]:
    """What is wrong with the imports of ``module`` (whose text is ``source``)."""
    top = module.split(".")[0]
    own = _entry(module)
    if own is None:
        return [f"{module}: not in the layer table of tests/test_architecture.py"]
    out: list[str] = []
    for line, target in _imports(module, source, is_package):
        target_top = target.split(".")[0]
        where = f"{module}:{line} imports {target}"
        if top == "shared":
            if target_top != "shared" and target_top not in STDLIB:
                out.append(f"{where}: shared/ uses the standard library only")
            continue
        if {top, target_top} == {"linker", "namerd"}:
            out.append(f"{where}: linker and namerd never import each other")
            continue
        if module.startswith("namerd.ctl") and target_top == "namerd":
            if not target.startswith("namerd.ctl"):
                out.append(f"{where}: namerctl is a client; it imports only shared and itself")
            continue
        if target_top != top:
            continue
        theirs = _entry(target)
        if theirs is None or theirs[1] == own[1]:
            continue
        if theirs[0] > own[0]:
            out.append(f"{where}: {theirs[1]} is a layer above {own[1]}")
        elif theirs[0] == own[0]:
            out.append(f"{where}: {theirs[1]} and {own[1]} are siblings and stay independent")
    return out


def _modules() -> list[tuple[str, Path]]:
    mods = []
    for top in LAYERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods.append((".".join(parts), path))
    return mods


def test_every_import_points_down() -> None:
    problems: list[str] = []
    for module, path in _modules():
        problems += violations(module, path.read_text(), path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # The HTTP layer reaching up into routing: the classic mistake this test exists for.
        (
            "linker.http.server",
            "from linker.routing.router import Router\n",
            "linker.routing is a layer above linker.http",
        ),
        # A lazy import inside a function is a dependency too.
        (
            "linker.http.upstream",
            "def f():\n    from linker.process import master\n",
            "linker.process is a layer above linker.http",
        ),
        ("linker.policy.balancer", "import linker.naming.interpreter\n", "are siblings"),
        ("linker.routing.router", "from namerd.storage import store\n", "never import each"),
        ("namerd.storage.store", "from namerd.http.api import x\n", "a layer above"),
        ("namerd.ctl", "from namerd.runtime import Runtime\n", "namerctl is a client"),
        ("shared.dtab", "import trio\n", "standard library only"),
        ("shared.dtab", "from ..linker import router\n", "standard library only"),
        ("linker.newthing", "", "not in the layer table"),
    ],
)
def test_a_wrong_import_is_caught(module: str, source: str, expected: str) -> None:
    found = violations(module, source)
    assert found, f"{module}: {source!r} passed"
    assert expected in found[0]


def test_a_right_import_passes() -> None:
    assert violations("linker.routing.router", "from linker.http.upstream import Pool\n") == []
    assert violations("namerd.http.api", "from namerd.storage.store import Store\n") == []
    assert violations("shared.dtab", "import re\nfrom shared.path import Path\n") == []
