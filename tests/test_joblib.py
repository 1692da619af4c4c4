"""joblib.Parallel on poolparty: the "poolparty" joblib backend.

The same calls on local processes, the dummy schedulers and the real ones (skipped
when none runs here): results in order, with module functions and lambdas; a task's
exception reaches the caller of Parallel; n_jobs is the Pool's processes and caps the
jobs running at once. Then what only needs local processes: n_jobs=-1 and 1, a reused
Parallel, aborting on a failure, unpicklable tasks, registration.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import local_worker_processes, make_backend, poolparty_context
from task_functions import TaskFailed, fail_on_three, square

import poolparty

joblib = pytest.importorskip("joblib")
joblib_backend = pytest.importorskip("poolparty.joblib_backend")
PoolpartyBackend = joblib_backend.PoolpartyBackend


def hold(x, folder, seconds):
    """Sleep, and leave when it ran in ``folder``: to count the tasks running at once."""
    start = time.time()
    time.sleep(seconds)
    Path(folder, f"{x}.json").write_text(json.dumps([start, time.time()]))
    return x


def slow_or_failing(x):
    if x == 0:
        raise TaskFailed("first task fails")
    time.sleep(60)
    return x


def most_at_once(folder: Path) -> int:
    intervals = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    return max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)


def on_poolparty(options: dict, **kwargs):
    """``parallel_backend("poolparty", ...)`` with a conftest backend's Pool options;
    its ``backend=`` is passed as ``pool_backend=`` (joblib keeps ``backend=``)."""
    options = dict(options)
    return joblib.parallel_backend("poolparty", pool_backend=options.pop("backend"),
                                   **options, **kwargs)


@pytest.fixture(params=["local", "dummy-slurm-array", "dummy-sge",
                        "real-slurm-array", "real-sge"])
def pool_options(request, work_root, tmp_path):
    """The keyword arguments of poolparty.Pool on one backend, as conftest builds them."""
    backend = make_backend(request.param, work_root, tmp_path)
    yield backend.pool_options()
    if backend.queue is not None:
        backend.queue.shutdown(timeout=30)


@pytest.fixture
def local_options(work_root):
    return {"backend": "local", "work_dir": work_root, "polling_interval": 0.2}


@pytest.fixture
def made_pools(monkeypatch):
    """The ``processes`` of every Pool the joblib backend makes."""
    made = []

    class RecordingPool(poolparty.Pool):
        def __init__(self, processes=None, **options):
            made.append(processes)
            super().__init__(processes, **options)

    monkeypatch.setattr(joblib_backend, "Pool", RecordingPool)
    return made


# ---------------------------------------------------------------------- every backend
# Each batch is a job: batches of 4 (pre_dispatch="all" keeps joblib from cutting the
# last ones smaller) make 20 tasks 5 jobs, one round, and test results of several jobs
# of several tasks. The n_jobs test below runs one task per job, joblib's default.
IN_FIVE_JOBS = {"n_jobs": 5, "batch_size": 4, "pre_dispatch": "all"}


def test_results_in_order_with_a_module_function(pool_options):
    with on_poolparty(pool_options):
        results = joblib.Parallel(**IN_FIVE_JOBS)(joblib.delayed(square)(x) for x in range(20))
    assert results == [x * x for x in range(20)]


def test_results_in_order_with_a_lambda(pool_options):
    offset = 7
    with on_poolparty(pool_options):
        results = joblib.Parallel(**IN_FIVE_JOBS)(
            joblib.delayed(lambda x, y=0: (x, x + offset + y))(x, y=1) for x in range(20)
        )
    assert results == [(x, x + 8) for x in range(20)]


def test_a_task_error_reaches_the_caller_with_its_type_and_message(pool_options):
    with on_poolparty(pool_options):
        with pytest.raises(TaskFailed, match="three is bad: 3") as raised:
            joblib.Parallel(n_jobs=6)(joblib.delayed(fail_on_three)(x) for x in range(6))
    assert isinstance(raised.value.__cause__, poolparty.RemoteTraceback)


def test_n_jobs_is_the_pools_processes_and_caps_jobs_running_at_once(
        pool_options, made_pools, tmp_path):
    folder = tmp_path / "ran"
    folder.mkdir()
    with on_poolparty(pool_options):
        results = joblib.Parallel(n_jobs=2)(
            joblib.delayed(hold)(x, str(folder), 0.5) for x in range(4)
        )
    assert results == list(range(4))
    assert made_pools == [2]
    assert most_at_once(folder) <= 2


# ---------------------------------------------------------------------- local processes
def test_n_jobs_minus_one_lets_the_scheduler_decide(local_options, made_pools):
    backend = PoolpartyBackend(**local_options)
    assert backend.effective_n_jobs(-1) == os.cpu_count()
    with joblib.parallel_backend(backend, n_jobs=-1):
        assert joblib.Parallel()(joblib.delayed(square)(x) for x in range(3)) == [0, 1, 4]
    assert made_pools == [None]
    assert backend.pool is None  # terminated when the call ended


def test_n_jobs_one_runs_in_this_process_as_with_every_joblib_backend(local_options, made_pools):
    with on_poolparty(local_options, n_jobs=1):
        pids = joblib.Parallel()(joblib.delayed(os.getpid)() for _ in range(3))
    assert pids == [os.getpid()] * 3
    assert made_pools == []


def test_a_reused_parallel_keeps_its_pool_and_recovers_after_a_failure(local_options, made_pools):
    with on_poolparty(local_options):
        with joblib.Parallel(n_jobs=2) as parallel:
            assert parallel(joblib.delayed(square)(x) for x in range(4)) == [0, 1, 4, 9]
            with pytest.raises(TaskFailed):
                parallel(joblib.delayed(fail_on_three)(x) for x in range(5))
            assert parallel(joblib.delayed(square)(x) for x in range(3)) == [0, 1, 4]
    assert made_pools == [2, 2]  # a new pool after the failure aborted the first


def test_a_failure_cancels_the_jobs_still_running(local_options, work_root):
    started = time.monotonic()
    with on_poolparty(local_options):
        with pytest.raises(TaskFailed, match="first task fails"):
            joblib.Parallel(n_jobs=2)(joblib.delayed(slow_or_failing)(x) for x in range(4))
    assert time.monotonic() - started < 30
    # workers of this test only: other tests may run on this machine at the same time
    assert [p for p in local_worker_processes() if str(work_root) in p] == []


def test_functions_of_a_script_run_in_the_jobs(work_root, tmp_path):
    """A function of ``__main__`` pickled by reference can't be found in a job: the
    backend cloudpickles batches, so a script's functions travel by value."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import joblib
        import poolparty.joblib_backend

        def cube(x):
            return x ** 3

        if __name__ == "__main__":
            with joblib.parallel_backend("poolparty", pool_backend="local",
                                         work_dir={str(work_root)!r}, polling_interval=0.2):
                print(joblib.Parallel(n_jobs=2)(joblib.delayed(cube)(x) for x in range(4)))
    """))
    source_root = str(Path(poolparty.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [source_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[0, 1, 8, 27]"


def test_a_task_that_cannot_be_pickled_is_an_error_of_the_call(local_options):
    with on_poolparty(local_options):
        with pytest.raises(TypeError) as caught:
            joblib.Parallel(n_jobs=2)(joblib.delayed(id)(threading.Lock()) for _ in range(2))
    assert "can't be pickled" in poolparty_context(caught.value)


def test_backend_keywords_and_registration():
    joblib_backend.register()
    from joblib.parallel import BACKENDS

    assert BACKENDS["poolparty"] is PoolpartyBackend
    assert PoolpartyBackend(pool_backend="sge").pool_options == {"backend": "sge"}
    assert PoolpartyBackend(pool_verbose=True).pool_options == {"verbose": True}
    with pytest.raises(TypeError, match="n_jobs"):
        PoolpartyBackend(processes=3)
    with pytest.raises(TypeError, match="not both"):
        PoolpartyBackend(backend="local", pool_backend="sge")
    with pytest.raises(TypeError):  # unknown Pool keywords fail when the pool is made
        with joblib.parallel_backend("poolparty", pool_backend="local", no_such_option=1):
            joblib.Parallel(n_jobs=2)(joblib.delayed(square)(x) for x in range(2))
