"""Inside a SLURM allocation the workers are job steps of it (poolparty.slurm.steps): on
the real test SLURM, with clients run by a real ``sbatch`` and ``salloc``, and from
outside an allocation made with ``salloc --no-shell``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_scheduler, squeue_jobs, wait_for

import poolparty
from poolparty.errors import AllocationEndedError
from poolparty.slurm.steps import allocation_cpus

real_slurm = pytest.mark.real_slurm

CLIENT = """\
import json, os, sys, poolparty

def where(x):
    return [x * x, os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID")]

with poolparty.Pool(work_dir=sys.argv[1], polling_interval=0.5{options}) as pool:
    results = pool.map(where, range(6), chunksize=1)
    print(json.dumps({{"backend": pool.scheduler.name, "results": results,
                       "allocation": os.environ.get("SLURM_JOB_ID")}}), flush=True)
"""


def run(argv: list[str], timeout: float = 30) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, (argv, done.stdout, done.stderr)
    return done.stdout


def client_script(tmp_path: Path, options: str = "") -> Path:
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(options=options))
    return script


def report(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, text
    return json.loads(lines[-1])


@pytest.fixture
def slurm() -> None:
    require_scheduler("slurm")


def steps_of(job_id: str) -> list[str]:
    """The steps of a job squeue lists (the batch step aside)."""
    text = run(["squeue", "--noheader", "--steps", f"--jobs={job_id}", "--format=%i|%j"])
    return [line for line in text.splitlines() if ".batch" not in line and line.strip()]


@real_slurm
@pytest.mark.timeout(180)
def test_in_an_sbatch_script_the_workers_are_steps_of_its_allocation(slurm, tmp_path):
    """A script submitted with 3 CPUs: its Pool() runs every task in a step of that
    job (same SLURM_JOB_ID, a step id each), and submits no job."""
    output = tmp_path / "out.txt"
    run(["sbatch", "--wait", "--ntasks=3", f"--output={output}", "--job-name=pp-allocation",
         f"--wrap={sys.executable} {client_script(tmp_path)} {tmp_path / 'work'}"],
        timeout=150)
    seen = report(output.read_text())
    assert seen["backend"] == "slurm-steps"
    assert [square for square, _, _ in seen["results"]] == [x * x for x in range(6)]
    assert {job for _, job, _ in seen["results"]} == {seen["allocation"]}
    assert all(step is not None and step.isdigit() for _, _, step in seen["results"])


@real_slurm
@pytest.mark.timeout(180)
def test_salloc_runs_the_client_with_its_allocation(slurm, tmp_path):
    seen = report(run(["salloc", "--ntasks=2", "--job-name=pp-allocation", sys.executable,
                       str(client_script(tmp_path)), str(tmp_path / "work")], timeout=150))
    assert seen["backend"] == "slurm-steps"
    assert [square for square, _, _ in seen["results"]] == [x * x for x in range(6)]
    assert {job for _, job, _ in seen["results"]} == {seen["allocation"]}


@real_slurm
@pytest.mark.timeout(180)
def test_use_allocation_false_submits_jobs_as_outside(slurm, tmp_path):
    script = client_script(tmp_path, options=", use_allocation=False")
    seen = report(run(["salloc", "--ntasks=1", "--job-name=pp-allocation", sys.executable,
                       str(script), str(tmp_path / "work")], timeout=150))
    assert seen["backend"] == "slurm-array"
    assert seen["allocation"] not in {job for _, job, _ in seen["results"]}


@pytest.fixture
def allocation(slurm):
    """An allocation of 2 CPUs made from outside (``salloc --no-shell``); cancelled after."""
    done = subprocess.run(["salloc", "--no-shell", "--ntasks=2", "--job-name=pp-allocation"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split("Granted job allocation")[1].split()[0]
    try:
        yield job_id
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def sleepy(x: float) -> float:
    time.sleep(x)
    return x


def fails_soon(x: float) -> float:
    if x == 0:
        time.sleep(0.5)
        raise ValueError("task 0 fails")
    time.sleep(x)
    return x


@real_slurm
@pytest.mark.timeout(180)
def test_the_steps_are_told_the_time_the_allocation_has_left(slurm, tmp_path):
    """An allocation of 5 minutes: each step's worker gets what is left of them as its
    time limit (it claims no task the allocation's end would cut)."""
    done = subprocess.run(["salloc", "--no-shell", "--ntasks=2", "--time=5",
                           "--job-name=pp-allocation"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stderr.split("Granted job allocation")[1].split()[0]
    try:
        pool = poolparty.Pool(backend="slurm-steps", allocation=job_id,
                              work_dir=tmp_path / "work", polling_interval=0.5)
        options = pool.scheduler.worker_options()
        assert options[:3] == ("--steps", "0,0", "--time-limit"), options
        assert 240 < float(options[3]) <= 300, options
        with pool:
            assert pool.map(abs, [-1, -2]) == [1, 2]
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


@real_slurm
@pytest.mark.timeout(180)
def test_a_map_that_fails_leaves_no_step_running(allocation, tmp_path):
    """The steps still running when a task raised are ended on their node, not only
    their srun (whose SIGKILL would leave them running there)."""
    pool = poolparty.Pool(backend="slurm-steps", allocation=allocation,
                          work_dir=tmp_path / "work", polling_interval=0.5)
    assert pool.scheduler.default_max_running == 2
    with pool, pytest.raises(ValueError, match="task 0 fails"):
        pool.map(fails_soon, [0, 60, 60, 60], chunksize=1)
    wait_for(lambda: not steps_of(allocation), 15, f"the steps of {allocation} to end")


@real_slurm
@pytest.mark.timeout(180)
def test_an_allocation_that_ends_fails_the_map_saying_so(allocation, tmp_path):
    pool = poolparty.Pool(backend="slurm-steps", allocation=allocation,
                          work_dir=tmp_path / "work", polling_interval=0.5)
    with pool:
        result = pool.map_async(sleepy, [60, 60], chunksize=1)
        wait_for(lambda: len(steps_of(allocation)) == 2, 30, "two steps running")
        run(["scancel", allocation])
        with pytest.raises(AllocationEndedError, match=f"allocation {allocation}"):
            result.get(timeout=60)
    assert not [job for job in squeue_jobs({"pp-allocation"}) if job.startswith(allocation)]


def test_the_allocations_cpus_are_read_from_slurms_variables():
    assert allocation_cpus({"SLURM_JOB_CPUS_PER_NODE": "4(x2),2"}) == 10
    assert allocation_cpus({"SLURM_JOB_CPUS_PER_NODE": "8"}) == 8
    assert allocation_cpus({"SLURM_CPUS_ON_NODE": "3"}) == 3
    assert allocation_cpus({}) == 1


def test_outside_an_allocation_the_steps_backend_says_what_to_do(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(poolparty.errors.InvalidInputError, match="salloc"):
        poolparty.Pool(backend="slurm-steps")
    assert os.environ.get("SLURM_JOB_ID") is None
