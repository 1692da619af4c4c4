"""The numbers of a map's report (poolparty.report) checked on the real test SLURM, for a
map whose timing the test controls: tasks that sleep known times, two workers of 2 CPUs
each. Each figure is checked from below (a task that sleeps 1 s can't take less) or
against another figure of the same report, never against a hoped-for upper time."""

from __future__ import annotations

import os
import time

import pytest
from conftest import made_backend

SLEEPS = [1.0, 1.0, 2.0, 2.0]


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.real_slurm
def test_a_reports_numbers_match_a_map_of_known_sleeps(work_root, tmp_path):
    with made_backend("real-slurm-array", work_root, tmp_path) as slurm:
        with slurm.make_pool(processes=2, cpus_per_task=2) as pool:
            assert pool.map(sleep_for, SLEEPS, chunksize=1) == SLEEPS
            report = pool.report()
    assert report.backend == "slurm-array" and report.state == "finished"
    assert report.cpus_per_worker == 2
    # one bar per claim, one claim per task (chunksize=1), every task recorded
    assert sorted(claim.first for claim in report.claims) == [0, 1, 2, 3]
    assert [task.index for task in report.tasks] == [0, 1, 2, 3]
    for task in report.tasks:
        assert task.seconds >= SLEEPS[task.index]
        assert task.cpu < 0.5 * task.seconds  # sleeping, not computing
    assert {task.index for task in report.slowest[:2]} == {2, 3}
    ran = [worker for worker in report.workers if worker.claims]
    assert 1 <= len(ran) <= 2
    assert all(w.host == os.uname().nodename and w.job for w in ran)
    assert all(w.submitted is not None and w.started >= w.submitted for w in ran)
    # two workers share 6 s of sleeps: the map can't take less than half
    assert report.wall_seconds >= sum(SLEEPS) / 2
    worker_seconds = sum(w.ended - w.started for w in ran)
    assert worker_seconds >= sum(SLEEPS)
    assert report.core_hours_reserved == pytest.approx(worker_seconds * 2 / 3600)
    assert report.idle_seconds == pytest.approx(
        worker_seconds - sum(task.seconds for task in report.tasks), abs=0.01)
    assert report.cpu_efficiency < 0.1
    assert report.queue_wait_mean >= 0 and report.queue_wait_max >= report.queue_wait_mean
    assert report.failures == {} and report.task_errors == {}
