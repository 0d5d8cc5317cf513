"""Import boundaries: ``shared`` is stdlib-only, and its public API is what ``__all__`` says."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path as FsPath

import shared

SHARED_DIR = FsPath(shared.__file__).parent


def _imported_top_level_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_shared_imports_only_the_standard_library() -> None:
    offenders = {}
    for module in sorted(SHARED_DIR.rglob("*.py")):
        imported = _imported_top_level_modules(module.read_text(encoding="utf-8"))
        outside = {
            name
            for name in imported
            if name not in sys.stdlib_module_names and name not in {"shared", "__future__"}
        }
        if outside:
            offenders[module.name] = sorted(outside)
    assert not offenders, f"shared must import only the stdlib: {offenders}"


def test_shared_never_imports_linker_or_namerd() -> None:
    for module in SHARED_DIR.rglob("*.py"):
        imported = _imported_top_level_modules(module.read_text(encoding="utf-8"))
        assert not imported & {"linker", "namerd", "loadtests", "tests"}, module.name


def test_importing_shared_loads_no_third_party_module() -> None:
    code = (
        "import sys; before = set(sys.modules); import shared, shared.wire; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "bad = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'shared'); "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"import shared pulled in third-party modules: {out}"


def test_the_checker_catches_a_third_party_import() -> None:
    # Guard against a checker that can never fail.
    assert _imported_top_level_modules("import trio\nfrom redis import Redis\n") == {
        "trio",
        "redis",
    }
    assert "trio" not in sys.stdlib_module_names


def test_every_public_name_exists_and_is_documented() -> None:
    for name in shared.__all__:
        obj = getattr(shared, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert getattr(obj, "__doc__", None), f"{name} has no docstring"
