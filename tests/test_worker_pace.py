"""How much a worker claims (worker.Pace): one task before it has measured, then
guided self-scheduling in whole blocks, the caller's chunksize exactly when given, and
nothing it could not finish before its job's time limit."""

from __future__ import annotations

import pytest

from poolparty.escalation import duration_seconds
from poolparty.sun_grid_engine import sge_time_limit
from poolparty.worker import Pace


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pace(clock: Clock | None = None, **metadata) -> Pace:
    return Pace({"num_tasks": 400, "block": 1, "claim_unit": None, "workers": 8, **metadata},
                clock or Clock())


def test_a_worker_that_measured_nothing_claims_one_task():
    assert pace().size_for(400) == 1


def test_after_measuring_it_claims_a_share_of_what_is_left():
    worker = pace()
    worker.ran(1, 1.0)  # one-second tasks: no overhead floor
    assert worker.size_for(400) == 25  # 400 / (2 x 8 workers)
    assert worker.size_for(16) == 1


def test_trivial_tasks_are_claimed_in_chunks_big_enough_to_pay_for_the_claim():
    worker = pace()
    worker.ran(1000, 0.001)  # 1 us per task
    assert worker.size_for(400) == 400


def test_claims_are_whole_blocks():
    worker = pace(block=10)
    assert worker.size_for(4000) == 10
    worker.ran(10, 10.0)
    assert worker.size_for(4000) % 10 == 0


def test_a_chunksize_given_by_the_caller_is_every_claim():
    worker = pace(block=7, claim_unit=7)
    assert worker.size_for(400) == 7
    worker.ran(7, 0.0001)
    assert worker.size_for(400) == 7


def test_no_time_limit_no_deadline():
    worker = pace()
    worker.ran(1, 1e6)
    assert worker.time_left()


def test_near_its_time_limit_a_worker_claims_only_what_fits_then_stops():
    clock = Clock()
    worker = pace(clock, time_limit_seconds=100.0)  # deadline: 100 x 0.95 - 5 = 90 s
    worker.ran(1, 10.0)
    assert worker.time_left() and worker.size_for(400) == 9  # 90 s of 10 s tasks
    clock.now += 75.0
    assert worker.time_left() and worker.size_for(400) == 1
    clock.now += 6.0  # 9 s left, a task takes 10
    assert not worker.time_left()


@pytest.mark.parametrize("text, seconds", [
    ("30", 1800), ("5:30", 330), ("1:00:00", 3600), ("2-0", 172800), ("1-2:03", 93780),
    ("1-02:03:04", 93784), ("soon", None), ("1:2:3:4", None), ("", None),
])
def test_slurm_time_formats(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("resources, seconds", [
    ({"h_rt": "3600"}, 3600), ({"h_rt": "01:30:00"}, 5400), ({"s_rt": "60"}, 60),
    ({"h_vmem": "2G"}, None), ({}, None),
])
def test_sge_time_limits(resources, seconds):
    assert sge_time_limit(resources) == seconds


def test_the_tasks_of_a_claim_are_exactly_its_own_whatever_its_bounds(tmp_path):
    """Tasks are stored in blocks; a claim that does not start or end on a block
    boundary still gets exactly its tasks, each under its own index."""
    import poolparty
    from poolparty.map_files import MapFiles
    from poolparty.worker import load_tasks

    inputs = list(range(100, 120))
    poolparty.Pool(backend="local", keep_work_dir=True, work_dir=tmp_path).map(
        abs, inputs, chunksize=5)
    (map_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("map-")]
    files = MapFiles(map_dir)
    for start, stop in [(0, 5), (1, 6), (3, 4), (5, 20), (17, 20), (6, 14)]:
        assert load_tasks(files, start, stop, 5) == inputs[start:stop], (start, stop)
