"""pypoolparty's README, with ``poolparty`` in place of ``pypoolparty``, works as written.

Its users write ``import pypoolparty`` and then ``pypoolparty.slurm.array.Pool()``: no
import of the submodule. Each snippet runs in a fresh interpreter, where nothing else
imported the submodule first, against a dummy SLURM/SGE on PATH. The worker's start-up
must not pay for that: ``python -m poolparty.worker`` imports no more than before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: pypoolparty's README lines, ``pypoolparty`` replaced by ``poolparty``
README_SNIPPETS = {
    "slurm.array": """
        import poolparty

        pool = poolparty.slurm.array.Pool()
        results = pool.map(sum, [[1, 2], [2, 3], [4, 5], ])
    """,
    "slurm": """
        import poolparty

        pool = poolparty.slurm.Pool(polling_interval=0.2)
        results = pool.map(sum, [[1, 2], [2, 3], [4, 5], ])
    """,
    "sun_grid_engine": """
        import poolparty

        pool = poolparty.sun_grid_engine.Pool(polling_interval=0.2)
        results = pool.map(sum, [[1, 2], [2, 3], [4, 5], ])
    """,
}


def run_fresh_python(code: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter that imports this checkout's poolparty."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", sorted(README_SNIPPETS))
def test_pypoolparty_readme_lines_work_with_poolparty_in_a_fresh_interpreter(
        name, dummy_slurm, tmp_path):
    code = textwrap.dedent(README_SNIPPETS[name]) + "print(results)\n"
    done = run_fresh_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[3, 5, 9]"


#: every module ``import poolparty.worker`` brings (poolparty's own, and the others)
WORKER_MODULES = {
    "poolparty", "poolparty.errors", "poolparty.events", "poolparty.map_files",
    "poolparty.ranges", "poolparty.version", "poolparty.worker",
    "rename_after_writing", "rename_after_writing.version",
}


def test_the_worker_imports_nothing_more_than_it_needs(tmp_path):
    """Each job starts a worker: the client-side submodules (pool, slurm, sun_grid_engine,
    qstat, ...) must stay out of its imports."""
    done = run_fresh_python("""
        import sys
        before = set(sys.modules)
        import poolparty.worker
        print("\\n".join(sorted(set(sys.modules) - before)))
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    ours_or_third_party = {m for m in imported
                           if m.split(".")[0] in {"poolparty", "rename_after_writing", "qstat",
                                                  "cloudpickle", "json_line_logger"}}
    assert ours_or_third_party == WORKER_MODULES
