"""The front ends (Executor, the joblib backend, the CLI's commands) use the public
methods of the objects they get (a Pool, ``pool.maps``), never another module's
private ones; and the package imports no private module of another package. Both are
checked on the source (ast), so a new shortcut fails here, not in a later refactoring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "poolparty"

FRONT_ENDS = [PACKAGE / "executor.py", PACKAGE / "joblib_backend.py",
              *sorted((PACKAGE / "commands").glob("*.py"))]

def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def names_defined_in(tree: ast.Module) -> set[str]:
    """What a module defines itself (functions, classes, attributes set on self or in a
    class body): its private names are its own to use on its own objects."""
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
    return defined


def is_own_object(node: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: an object whose private names are its class's."""
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "super")


def foreign_private_uses(path: Path) -> list[str]:
    """``x._name`` where ``_name`` belongs to another module, and ``from m import _name``."""
    tree = ast.parse(path.read_text(), str(path))
    own = names_defined_in(tree)
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and is_private(node.attr)
                and not is_own_object(node.value) and node.attr not in own):
            uses.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom):
            uses += [f"{path.name}:{node.lineno}: import {alias.name}"
                     for alias in node.names if is_private(alias.name)]
    return uses


def imported_modules(tree: ast.Module) -> list[tuple[int, str]]:
    """The absolute modules a module imports (relative imports are the package's own)."""
    modules = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.append((node.lineno, node.module))
    return modules


def private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [f"{path.relative_to(PACKAGE)}:{line}: {module}"
            for line, module in imported_modules(tree)
            if any(is_private(part) for part in module.split("."))]


@pytest.mark.parametrize("path", FRONT_ENDS, ids=lambda path: path.name)
def test_front_ends_use_no_private_name_of_another_module(path):
    assert foreign_private_uses(path) == []


def test_the_package_imports_no_private_module_of_another_package():
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_imports(path)]
    assert found == []


def test_the_check_sees_a_private_method_called_on_another_object(tmp_path):
    module = tmp_path / "front_end.py"
    module.write_text("class Own:\n    def _mine(self):\n        self._other()\n\n"
                      "def run(pool, own):\n    own._mine()\n    pool._prepare()\n")
    assert foreign_private_uses(module) == ["front_end.py:7: ._prepare"]
