"""Tasks that end their worker's process: ``sys.exit``, ``os._exit``, a signal.

The worker notes each task it starts in its job's log, and the job's shell notes how
the worker ended: a chunk whose job left with such a record crashed in that task; it
is not a lost job. A crash is rerun once; the same task crashing again is reported at
once as :class:`poolparty.TaskCrashedError`, naming the task and how it died. Runs on
local processes and on every dummy scheduler; tests/test_real_crash.py runs a smaller
set on the real ones.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CLUSTER_BACKENDS, attempts_per_claim, made_backend, the_map_dir, wait_for
from task_functions import segfault_on_three, underscore_exit_on_three

import poolparty

#: the crash tests' maps take a few seconds; losing a chunk four times over took 40-74 s
DEADLINE = 30


@pytest.fixture(params=["local", *(f"dummy-{name}" for name in CLUSTER_BACKENDS)])
def backend(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    path = tmp_path / "ran"
    path.mkdir()
    return path


# ---------------------------------------------------------------------- task functions
def exit_on_three(x):
    if x == 3:
        sys.exit(3)
    return x * 10



def sigkill(x, ran: str, victim: int, always: bool):
    """Task ``victim`` kills its process, on its first attempt (or on every one)."""
    first = not any(name.startswith(f"{x}.") for name in os.listdir(ran))
    Path(ran, f"{x}.{uuid.uuid4().hex}").touch()
    if x == victim and (first or always):
        os.kill(os.getpid(), signal.SIGKILL)
    return x * 10


def exit_on_three_or_wait(x):
    if x == 3:
        os._exit(1)
    time.sleep(120)
    return x


def exit_in_initializer():
    os._exit(2)


def sys_exit_in_initializer():
    sys.exit(2)



def crash(pool: poolparty.Pool, function, tasks, **options) -> poolparty.TaskCrashedError:
    """Run a map expected to crash; return the error, checking it came in time."""
    started = time.monotonic()
    with pytest.raises(poolparty.TaskCrashedError) as caught:
        pool.map(function, tasks, **options)
    assert time.monotonic() - started < DEADLINE
    return caught.value


# ---------------------------------------------------------------------- sys.exit
def test_a_task_calling_sys_exit_is_a_task_error_and_the_caller_goes_on(backend, work_root):
    error = crash(backend.make_pool(), exit_on_three, range(6), chunksize=2)
    assert error.task_index == 3
    assert "task 3" in str(error) and "sys.exit(3)" in str(error)
    # an error of the task, as if it had raised: not rerun
    assert attempts_per_claim(the_map_dir(work_root))[1] == 1


def test_only_the_future_of_a_call_to_sys_exit_fails(backend):
    with backend.make_executor() as executor:
        futures = [executor.submit(exit_on_three, x) for x in range(5)]
        with pytest.raises(poolparty.TaskCrashedError, match=r"sys\.exit\(3\)"):
            futures[3].result(timeout=120)
        assert [f.result(timeout=120) for f in futures[:3]] == [0, 10, 20]
        assert futures[4].result(timeout=120) == 40


# ---------------------------------------------------------------------- the process dies
def test_a_task_calling_os_exit_is_reported_with_its_index_and_status(backend, work_root):
    error = crash(backend.make_pool(), underscore_exit_on_three, range(6), chunksize=2)
    assert error.task_index == 3
    message = str(error)
    assert "task 3" in message and "exited with status 1" in message
    assert "task 3 is about to os._exit(1)" in message  # the job's output
    assert "poolparty-task" not in message and "poolparty-event" not in message
    # rerun once to tell a deterministic crash from a lost job, not max_num_resubmissions times
    assert attempts_per_claim(the_map_dir(work_root))[1] == 2
    assert "submission 2:" in message and "submission 3" not in message


def test_a_segfaulting_task_is_named_and_leaves_no_core_file(backend, work_root, tmp_path,
                                                             monkeypatch):
    """Core files are off in jobs: a cluster's execution daemon may allow them (SGE
    left an 11 MB core in the caller's directory for each segfault)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps are impossible here: the hard limit is 0")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))  # the jobs inherit it
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)
    try:
        error = crash(backend.make_pool(), segfault_on_three, range(4), chunksize=1)
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert error.task_index == 3
    assert "killed by signal 11 (SIGSEGV)" in str(error)
    assert error.signal == signal.SIGSEGV
    assert sorted(caller.rglob("core*")) == []
    assert sorted(work_root.rglob("core*")) == []


def test_core_dumps_when_asked_for(work_root, tmp_path, monkeypatch):
    """``core_dumps=True`` (or POOLPARTY_CORE_DUMPS) leaves the limit as the job got it."""
    from conftest import local_backend

    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0 or Path("/proc/sys/kernel/core_pattern").read_text().startswith("|"):
        pytest.skip("no core files here: the hard limit is 0 or cores go to a program")
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POOLPARTY_CORE_DUMPS", "yes")
    try:
        crash(local_backend(work_root).make_pool(max_num_resubmissions=0), segfault_on_three,
              [3])
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    assert list(tmp_path.glob("core*"))


def test_a_task_killed_once_is_rerun_and_its_result_used(backend, work_root, ran):
    import functools

    pool = backend.make_pool(keep_work_dir=True)
    task = functools.partial(sigkill, ran=str(ran), victim=3, always=False)
    assert pool.map(task, range(6), chunksize=2) == [x * 10 for x in range(6)]
    assert attempts_per_claim(the_map_dir(work_root))[1] == 2


def test_a_task_killed_every_time_is_reported_after_one_rerun(backend, work_root, ran):
    import functools

    task = functools.partial(sigkill, ran=str(ran), victim=3, always=True)
    error = crash(backend.make_pool(), task, range(6), chunksize=2)
    assert error.task_index == 3
    assert "killed by signal 9 (SIGKILL)" in str(error)
    assert attempts_per_claim(the_map_dir(work_root))[1] == 2
    assert len([name for name in os.listdir(ran) if name.startswith("3.")]) == 2


def test_a_worker_dying_in_the_initializer_is_reported_as_such(backend, work_root):
    pool = backend.make_pool(initializer=exit_in_initializer)
    error = crash(pool, abs, range(2), chunksize=1)
    assert "before its first task" in str(error) and "exited with status 2" in str(error)
    assert "submission 2:" in str(error)  # a second worker died so before the map failed
    assert attempts_per_claim(the_map_dir(work_root)) == {}  # before claiming any task


def test_an_initializer_calling_sys_exit_is_the_error_of_every_task_of_its_chunk(backend):
    pool = backend.make_pool(initializer=sys_exit_in_initializer)
    error = crash(pool, abs, range(2), chunksize=1)
    assert "never ran" in str(error) and "initializer" in str(error)
    assert "sys.exit(2)" in str(error)


def test_a_crash_cancels_the_maps_other_jobs(backend):
    """As a task that raises does: nobody waits for the rest of the map."""
    crash(backend.make_pool(processes=4), exit_on_three_or_wait, range(4), chunksize=1)
    wait_for(lambda: backend.queued_jobs() == [], 20, "the other jobs to be cancelled")


def test_without_resubmissions_a_crash_is_reported_at_once(backend, work_root):
    error = crash(backend.make_pool(max_num_resubmissions=0), underscore_exit_on_three, [3])
    assert error.task_index == 0  # the input's position, not its value
    assert "max_num_resubmissions=0" in str(error)
    assert attempts_per_claim(the_map_dir(work_root))[0] == 1


def test_imap_yields_the_results_before_the_crash(backend):
    results = backend.make_pool().imap(underscore_exit_on_three, range(6), chunksize=1)
    assert [next(results) for _ in range(3)] == [0, 10, 20]
    with pytest.raises(poolparty.TaskCrashedError):
        list(results)


def test_the_error_survives_pickling():
    import pickle

    error = poolparty.TaskCrashedError(3, "was killed by signal 11 (SIGSEGV)", signal=11,
                                       log_tail="segfault here", work_dir="/w")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.task_index, copy.signal, str(copy)) == (3, 11, str(error))


# ---------------------------------------------------------------------- lost jobs
def test_jobs_lost_list_exactly_the_submissions_that_happened(dummy, monkeypatch):
    """The wait for a late result is not one more submission."""
    from poolparty import engine

    monkeypatch.setattr(engine, "LATE_RESULT_SECONDS", 1.0)
    dummy.queue.inject(vanish=1000)
    with pytest.raises(poolparty.ChunksLostError) as caught:
        dummy.make_pool(max_num_resubmissions=1).map(abs, [1])
    message = str(caught.value)
    assert "submission 2:" in message and "submission 3" not in message
    assert "  then no result came in the 1 s waited after that" in message
    assert len(caught.value.endings[0]) == 2


def test_a_resubmission_that_fails_is_not_listed_as_a_submission(dummy, work_root):
    """sbatch failing while a lost chunk is resubmitted: the chunk stays missing at the
    next polls, but only submissions that happened are listed."""
    dummy.queue.inject(vanish=1000)
    pool = dummy.make_pool(max_num_resubmissions=1, polling_interval=0.2)
    with ThreadPoolExecutor(1) as thread:
        mapped = thread.submit(pool.map, abs, [1])
        wait_for(lambda: work_root.exists() and list(work_root.glob("*/jobs.jsonl")), 30,
                 "the first submission")
        # a resubmission tries once or twice in 0.3 s: three polls in a row can't resubmit
        pool.scheduler.call_timeout = 0.3
        dummy.queue.inject(fail={dummy.command["submit"]: 6})
        with pytest.raises(poolparty.ChunksLostError) as caught:
            mapped.result(timeout=120)
    assert len(caught.value.endings[0]) == 2
    assert "submission 3" not in str(caught.value)
