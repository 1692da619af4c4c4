"""The package's import structure: no cycle, every module importable on its own, a worker
that imports no client-side module, backends that depend on the seam only.

The graph is read from the source (module-level import statements), so a cycle is found
even where today's import order happens to survive it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from poolparty.backends import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "poolparty"

#: the modules a backend may import: the seam between the engine and the schedulers
SEAM = {"poolparty.errors", "poolparty.ranges", "poolparty.scheduler", "poolparty.settings",
        "poolparty.work_dir", "poolparty.escalation", "poolparty.endings"}

#: every module ``import poolparty.worker`` brings (poolparty's own, and the others)
WORKER_MODULES = {
    "poolparty", "poolparty.chunking", "poolparty.claims", "poolparty.errors",
    "poolparty.escalation",
    "poolparty.events", "poolparty.map_files", "poolparty.ranges", "poolparty.version",
    "poolparty.worker",
    "rename_after_writing", "rename_after_writing.version",
}
#: client-side modules: a worker that imported one would pay for it on every job start
CLIENT_SIDE = ("poolparty.pool", "poolparty.config", "poolparty.backends", "poolparty.engine",
               "poolparty.commands", "poolparty.predecessor", "poolparty.executor",
               "poolparty.slurm", "poolparty.sun_grid_engine", "poolparty.local")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def is_type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for annotations only, never run."""
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The import statements run when the module is imported: its body's, and those in
    its top-level ``if``/``try`` blocks, not those inside functions or classes."""
    found, pending = [], list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.If, ast.Try)) and not is_type_checking(node):
            pending += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                        *(statement for handler in getattr(node, "handlers", [])
                          for statement in handler.body)]
    return found


def imported_modules(name: str, statements: list[ast.Import | ast.ImportFrom]) -> set[str]:
    """The package's modules these statements import (``from X import y`` imports
    ``X.y`` when that is a module, else ``X``)."""
    package = name if is_package(name) else name.rpartition(".")[0]
    targets: set[str] = set()
    for statement in statements:
        if isinstance(statement, ast.Import):
            targets.update(alias.name for alias in statement.names)
            continue
        base = statement.module or ""
        if statement.level:
            anchor = package.split(".")[: len(package.split(".")) - statement.level + 1]
            base = ".".join([*anchor, *filter(None, [base])])
        named = {f"{base}.{alias.name}" for alias in statement.names}
        targets.update(named & set(MODULES))
        if named - set(MODULES):  # names defined in X itself
            targets.add(base)
    return {target for target in targets if target in MODULES and target != name}


def import_graph(every_statement: bool = False) -> dict[str, set[str]]:
    """Each module -> the package's modules it imports (module level, or anywhere)."""
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        statements = ([node for node in ast.walk(tree)
                       if isinstance(node, (ast.Import, ast.ImportFrom))]
                      if every_statement else module_level_imports(tree))
        graph[name] = imported_modules(name, statements)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first repeated last), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph[node]):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_graph_reader_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert "poolparty.backends" in import_graph()["poolparty.config"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def fresh_python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter that imports this checkout's poolparty."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Imported first, each module finds what it needs, whatever the import order
    (a cycle that today's order survives fails here when entered elsewhere)."""
    failed = {}
    for name in MODULES:
        done = fresh_python(f"import {name}")
        if done.returncode != 0:
            failed[name] = done.stderr.strip().splitlines()[-1:]
    assert not failed


def test_the_worker_imports_nothing_more_than_it_needs():
    """Each job starts a worker: the client-side submodules (pool, config, backends,
    the engine, the command line, qstat, ...) must stay out of its imports."""
    done = fresh_python(
        "import sys\n"
        "before = set(sys.modules)\n"
        "import poolparty.worker\n"
        "print('\\n'.join(sorted(set(sys.modules) - before)))\n")
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    assert not [m for m in imported if m.startswith(CLIENT_SIDE)]
    ours_or_third_party = {m for m in imported
                           if m.split(".")[0] in {"poolparty", "rename_after_writing", "qstat",
                                                  "cloudpickle", "json_line_logger"}}
    assert ours_or_third_party == WORKER_MODULES


def backend_modules() -> set[str]:
    """The registered backends' modules, and the packages they are in."""
    names = {module for module, _ in REGISTRY.values()}
    return names | {name.rpartition(".")[0] for name in names if name.count(".") > 1}


@pytest.mark.parametrize("backend", sorted(backend_modules()))
def test_a_backend_imports_only_the_seam(backend):
    """Not the API layer (pool, config, the registry): a backend is a plug-in under
    the engine, and importing one for its settings must stay cheap and cycle-free."""
    imported = import_graph(every_statement=True)[backend]
    assert imported <= SEAM | backend_modules(), sorted(imported - SEAM - backend_modules())
