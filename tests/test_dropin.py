"""pypoolparty's README, with ``poolparty`` in place of ``pypoolparty``, works as written.

Its users write ``import pypoolparty`` and then ``pypoolparty.slurm.array.Pool()``: no
import of the submodule. Each snippet runs in a fresh interpreter, where nothing else
imported the submodule first, against a dummy SLURM/SGE on PATH. (That the worker's
start-up does not pay for that is tests/test_imports.py's.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import require_scheduler, the_map_dir, wait_for
from task_functions import slow_abs

import poolparty
from poolparty.dummy_schedulers import DummyQueue
from poolparty.errors import InvalidInputError, SchedulerCommandError
from poolparty.scheduler import State
from poolparty.sun_grid_engine import state_of

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


@pytest.mark.parametrize("name, scheduler", [
    pytest.param("slurm.array", "slurm", marks=pytest.mark.real_slurm),
    pytest.param("slurm", "slurm", marks=pytest.mark.real_slurm),
    pytest.param("sun_grid_engine", "sge", marks=pytest.mark.real_sge),
])
@pytest.mark.timeout(240)
def test_pypoolparty_readme_lines_work_on_the_real_scheduler(name, scheduler, tmp_path):

    require_scheduler(scheduler)
    code = textwrap.dedent(README_SNIPPETS[name]) + "print(results)\n"
    done = run_fresh_python(code, tmp_path, timeout=200)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[3, 5, 9]"


# ------------------------------------------------------------ pypoolparty's keywords
POOL_CLASSES = ["slurm.array", "slurm", "sun_grid_engine"]


def predecessor_pool(name: str, queue, tmp_path: Path, **options):
    """pypoolparty's pool ``name`` on a dummy queue, keeping its work_dir to look at."""
    module = poolparty.slurm.array if name == "slurm.array" else getattr(poolparty, name)
    return module.Pool(polling_interval=0.2, work_dir=str(tmp_path / "work"),
                       keep_work_dir=True, commands=queue.commands(), **options)


def chunks_run(tmp_path: Path) -> int:
    """How many chunks (jobs or array elements) the one map under tmp_path/work
    submitted: jobs.jsonl holds one record per submission, with its chunks."""
    records = (the_map_dir(tmp_path / "work") / "jobs.jsonl").read_text().splitlines()
    return len({chunk for line in records for chunk in json.loads(line)["chunks"]})


@pytest.mark.parametrize("name", POOL_CLASSES)
def test_num_chunks_spreads_the_tasks_over_that_many_chunks(name, tmp_path):
    """pypoolparty: "the tasks are grouped in this many chunks", each run in series."""
    queue = DummyQueue(tmp_path / "queue")
    try:
        pool = predecessor_pool(name, queue, tmp_path, num_chunks=3)
        assert pool.map(abs, range(-10, 0)) == list(range(10, 0, -1))
        assert chunks_run(tmp_path) == 3
    finally:
        queue.shutdown(timeout=30)


def test_an_explicit_chunksize_wins_over_num_chunks(tmp_path):

    queue = DummyQueue(tmp_path / "queue")
    try:
        pool = predecessor_pool("slurm.array", queue, tmp_path, num_chunks=2)
        assert pool.map(abs, range(-6, 0), chunksize=1) == [6, 5, 4, 3, 2, 1]
        assert chunks_run(tmp_path) == 6
    finally:
        queue.shutdown(timeout=30)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_a_bad_num_chunks_is_an_error_before_anything_runs(bad, tmp_path):

    with pytest.raises(InvalidInputError, match="num_chunks"):
        poolparty.slurm.Pool(num_chunks=bad, work_dir=str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_queue_name_is_the_sge_queue_jobs_are_submitted_to(tmp_path):
    """pypoolparty's ``queue_name`` is qsub's ``-q``: the dummy refuses a queue it does
    not have, so the submission shows it got there."""
    queue = DummyQueue(tmp_path / "queue")
    try:
        pool = predecessor_pool("sun_grid_engine", queue, tmp_path, queue_name="no-such.q")
        with pytest.raises(SchedulerCommandError, match="no-such.q"):
            pool.map(abs, [-1, -2])
    finally:
        queue.shutdown(timeout=30)


def test_queue_name_and_queue_together_are_an_error(tmp_path):

    with pytest.raises(TypeError, match="queue_name"):
        poolparty.sun_grid_engine.Pool(queue_name="a.q", queue="b.q")


@pytest.mark.parametrize("indicator, code, error", [
    ("E", "Eqw", True), ("E", "qw", False), ("E", "r", False),
    ("h", "hqw", True), ("h", "Eqw", True),  # E never runs by itself: always an error
    ("h", "qw", False), ("h", "r", False),
])
def test_error_state_indicator_marks_states_that_are_errors(indicator, code, error):
    """pypoolparty: a job whose state holds ``error_state_indicator`` (default "E") is
    in error: deleted and resubmitted."""
    assert (state_of(code, indicator) is State.ERROR) is error


def test_error_state_indicator_reaches_the_sge_backend_and_is_checked(tmp_path):

    pool = poolparty.sun_grid_engine.Pool(error_state_indicator="h",
                                          work_dir=str(tmp_path / "work"))
    assert pool._scheduler.error_state_indicator == "h"
    with pytest.raises(InvalidInputError, match="error_state_indicator"):
        poolparty.sun_grid_engine.Pool(error_state_indicator="")


@pytest.mark.parametrize("name", ["slurm.array", "slurm"])
def test_clusters_sends_every_slurm_command_to_that_cluster(name, tmp_path):
    """pypoolparty's ``clusters`` is sbatch's ``--clusters``. The dummy SLURM reaches a
    second cluster whose jobs squeue and scancel see only when asked for it: the map
    completes with one submission per chunk (squeue saw the jobs there, none was taken
    for lost) and terminate() leaves nothing on that cluster (scancel reached it)."""
    queue = DummyQueue(tmp_path / "queue")
    try:
        pool = predecessor_pool(name, queue, tmp_path, clusters=["dummy-other"],
                                max_num_resubmissions=0)
        assert pool.map(slow_abs, [-1, -2], chunksize=1) == [1, 2]
        assert len(queue.jobs()) == 0
        assert chunks_run(tmp_path) == 2
        assert queue.history()["sbatch"] == (1 if name == "slurm.array" else 2)

        pool = predecessor_pool(name, queue, tmp_path / "second", clusters="dummy-other")
        pool.map_async(slow_abs, range(4), chunksize=1)
        wait_for(lambda: queue.jobs(), 30, "the jobs to be queued")
        pool.terminate()
        assert queue.jobs() == []
    finally:
        queue.shutdown(timeout=30)


@pytest.mark.parametrize("clusters", [["a", "b"], "a,b", "", [""], 3])
def test_clusters_must_name_one_cluster(clusters):

    with pytest.raises(InvalidInputError, match="clusters must name one SLURM cluster"):
        poolparty.slurm.array.Pool(clusters=clusters)


@pytest.mark.parametrize("name, scheduler, options", [
    pytest.param("slurm.array", "slurm", {}, marks=pytest.mark.real_slurm),
    pytest.param("sun_grid_engine", "sge", {"queue_name": "all.q"},
                 marks=pytest.mark.real_sge),
])
@pytest.mark.timeout(240)
def test_pypoolparty_keywords_on_the_real_scheduler(name, scheduler, options, tmp_path):
    """num_chunks=2 makes two jobs of six tasks; queue_name="all.q" is the test cluster's
    queue (scripts/test_cluster.sh)."""
    require_scheduler(scheduler)
    module = poolparty.slurm.array if name == "slurm.array" else poolparty.sun_grid_engine
    pool = module.Pool(polling_interval=0.5, work_dir=str(tmp_path / "work"),
                       keep_work_dir=True, num_chunks=2, **options)
    assert pool.map(abs, range(-6, 0)) == [6, 5, 4, 3, 2, 1]
    assert chunks_run(tmp_path) == 2
