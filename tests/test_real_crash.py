"""Tasks that end their worker's process, on the real SLURM and Sun Grid Engine.

tests/test_crash.py covers every case on local processes and the dummy schedulers;
here the real schedulers run the two that depend on them: how a job's end shows in
their queues and logs, and whether their execution daemons let a segfault leave a
core file (SGE did: 11 MB in the caller's directory per segfault). Before, such a map
ended after 40-74 s in ChunksLostError ("left the queue without a result before it
was seen running", with a submission listed that never happened).
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import REAL_PARAMS, attempts_per_claim, made_backend, the_map_dir
from task_functions import segfault_on_three, underscore_exit_on_three
from test_real_faults import claim_of_task, reopened_claims

import poolparty

#: well below the 40-74 s a crash took to be reported before, with room for a busy node
DEADLINE = 35

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(params=REAL_PARAMS)
def real(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made




def crash(pool: poolparty.Pool, function, tasks, chunksize: int) -> poolparty.TaskCrashedError:
    started = time.monotonic()
    with pool, pytest.raises(poolparty.TaskCrashedError) as caught:
        pool.map(function, tasks, chunksize=chunksize)
    assert time.monotonic() - started < DEADLINE
    return caught.value


def assert_run_twice(map_dir, task: int) -> None:
    """The claim holding ``task`` ran twice (the crash, its one rerun), reopened once."""
    claim = claim_of_task(map_dir, task)
    assert attempts_per_claim(map_dir)[claim] == 2
    assert reopened_claims(map_dir)[claim] == 1


def test_a_task_calling_os_exit_is_named_promptly_after_one_rerun(real, work_root):
    error = crash(real.make_pool(), underscore_exit_on_three, range(6), chunksize=2)
    message = str(error)
    assert error.task_index == 3 and error.status == 1
    assert "task 3 ended its worker's process: it exited with status 1" in message
    assert "task 3 is about to os._exit(1)" in message
    assert_run_twice(the_map_dir(work_root), 3)  # the crash, and its one rerun
    assert "submission 2:" in message and "submission 3" not in message
    assert "before it was seen running" not in message


def test_a_segfaulting_task_is_named_and_leaves_no_core_file(real, work_root, tmp_path,
                                                             monkeypatch):
    caller = tmp_path / "caller"
    caller.mkdir()
    monkeypatch.chdir(caller)  # the jobs' directory
    error = crash(real.make_pool(), segfault_on_three, range(6), chunksize=2)
    assert error.task_index == 3 and error.signal == signal.SIGSEGV
    assert "killed by signal 11 (SIGSEGV)" in str(error)
    assert_run_twice(the_map_dir(work_root), 3)
    assert sorted(caller.rglob("core*")) == []
    assert sorted(work_root.rglob("core*")) == []
