"""Workers that pull work (issue 14), on local processes and the dummy schedulers:
uneven tasks spread over every worker, as many workers as there is work for in one
submission, claims read back from a kept work_dir. tests/test_faults.py covers lost,
crashed and stuck workers; tests/test_real_pull.py the real schedulers."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from conftest import CLUSTER_BACKENDS, dummy_backend, made_backend, the_map_dir, wait_for

LONG = 4  # the first tasks, each waiting until all of them run at once


def meet_the_others(x: int, meeting: str) -> int:
    """The first LONG tasks each wait until every one of them has started: they can
    only all return if each ran on a worker of its own, at the same time (a worker
    holding two of them would wait for itself, and the map would time out)."""
    if x < LONG:
        Path(meeting, str(x)).touch()
        deadline = time.monotonic() + 60
        while len(list(Path(meeting).iterdir())) < LONG:
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {x}: the other long tasks never ran beside it")
            time.sleep(0.01)
    return x


def claims_of(map_dir: Path) -> list[dict]:
    """The claim records a kept work_dir of a map that succeeded holds in logs.zip."""
    with zipfile.ZipFile(map_dir / "logs.zip") as logs:
        return [json.loads(logs.read(name)) for name in logs.namelist()
                if name.startswith("claims/")]


@pytest.fixture(params=["local", *(f"dummy-{name}" for name in CLUSTER_BACKENDS)])
def backend(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


def test_the_first_tasks_run_side_by_side_on_workers_of_their_own(backend, work_root,
                                                                    tmp_path):
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    pool = backend.make_pool(processes=LONG, keep_work_dir=True)
    tasks = [(x, str(meeting)) for x in range(40)]
    assert pool.starmap(meet_the_others, tasks) == list(range(40))
    claims = claims_of(the_map_dir(work_root))
    holders = {claim["worker_number"] for claim in claims if claim["start"] < LONG}
    assert len(holders) == LONG
    # the chain tiles the tasks exactly: every task claimed once
    spans = sorted((claim["start"], claim["stop"]) for claim in claims)
    assert [start for start, _ in spans] == [0] + [stop for _, stop in spans[:-1]]
    assert spans[-1][1] == 40


def test_a_chunksize_given_is_every_claim(backend, work_root):
    pool = backend.make_pool(keep_work_dir=True)
    assert pool.map(abs, range(-10, 0), chunksize=3) == list(range(10, 0, -1))
    sizes = sorted(claim["stop"] - claim["start"] for claim in claims_of(the_map_dir(work_root)))
    assert sizes == [1, 3, 3, 3]


def test_no_more_workers_than_work_and_one_submission(tmp_path, work_root):
    made = dummy_backend("slurm-array", work_root, tmp_path / "queue")
    try:
        assert made.make_pool(processes=8).map(abs, [-1, -2, -3]) == [1, 2, 3]
        assert made.queue.history()["sbatch"] == 1
        big = made.make_pool(processes=8, keep_work_dir=True).map(abs, range(500))
        assert big == list(range(500))
        assert made.queue.history()["sbatch"] == 2  # 500 tasks: one more array
    finally:
        made.queue.shutdown(timeout=30)
    jobs = (the_map_dir(work_root) / "jobs.jsonl").read_text().splitlines()
    assert len(jobs) == 1 and len(json.loads(jobs[0])["chunks"]) == 8


def test_workers_waiting_for_a_slot_do_not_hold_the_map_back(tmp_path, work_root):
    made = dummy_backend("sge", work_root, tmp_path / "queue", slots=2)
    try:
        pool = made.make_pool(processes=6, keep_work_dir=True)
        assert pool.map(abs, range(-30, 0)) == list(range(30, 0, -1))
        # those that never started were cancelled; one that just started finds no work
        wait_for(lambda: made.queued_jobs() == [], 30, "the idle workers to leave the queue")
    finally:
        made.queue.shutdown(timeout=30)


def test_a_worker_that_starts_after_its_map_ended_exits_quietly(work_root):
    """A job that waited in the queue until its map was done (cancelling it raced with
    its start) finds the claims archived: nothing to do, exit 0, no traceback in its log,
    and the kept results stay as they were."""
    import subprocess
    import sys

    import poolparty

    assert poolparty.Pool(backend="local", keep_work_dir=True, work_dir=work_root).map(
        abs, [-7, 8], chunksize=1) == [7, 8]
    map_dir = the_map_dir(work_root)
    archived = (map_dir / "results.zip").read_bytes()
    late = subprocess.run([sys.executable, "-m", "poolparty.worker", str(map_dir), "5"],
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 0 and "Traceback" not in late.stderr, late.stderr
    assert (map_dir / "results.zip").read_bytes() == archived
    assert not (map_dir / "claims").exists()
