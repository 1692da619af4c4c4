"""Workers that pull work (issue 14), on the real SLURM (array and per-job) and SGE.

Each job is a worker that claims chunks of tasks from the work_dir until none is left
(poolparty.claims): uneven tasks spread over the workers, a worker cancelled mid-map
loses its claim to the others at once, a held worker does not hold the map back, and a
client killed mid-map resumes without running anything again. The claims a kept
work_dir holds say which job ran what (tests/test_real_faults.py reads them).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import conftest
import pytest
from conftest import REAL_PARAMS, made_backend
from test_real_faults import (
    attempts,
    claim_attempts,
    claim_holder,
    claim_of_task,
    faulty,
    job_of_claim,
    reopen_reasons,
    reopened_claims,
    run,
    wait_for,
)
from test_resume import kill_and_resume

pytestmark = pytest.mark.timeout(120)

MAP_DEADLINE = 60


@pytest.fixture(params=REAL_PARAMS)
def real(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    path = tmp_path / "ran"
    path.mkdir()
    return path


def the_map_dir(work_root: Path) -> Path:
    return conftest.the_map_dir(work_root, 60, holding="jobs.jsonl")


def is_sge(backend: conftest.Backend) -> bool:
    return backend.name.endswith("sge")


def uneven(x: int, ran: str, long: int) -> int:
    """Tasks below ``long`` take 2 s, once every one of them started (waiting up to 20 s:
    a map that gave them all to one worker never gets there); the others 0.02 s."""
    Path(ran, str(x)).touch()
    if x < long:
        deadline = time.monotonic() + 20
        while (not all(Path(ran, str(i)).exists() for i in range(long))
               and time.monotonic() < deadline):
            time.sleep(0.05)
        time.sleep(2)
    else:
        time.sleep(0.02)
    return x * 10


def nothing_left(backend: conftest.Backend) -> None:
    """The map's jobs all left the queue (a pool cancels its idle ones as the map ends)."""
    wait_for(lambda: not backend.queued_jobs(), 15, "the map's jobs to leave the queue")


def test_uneven_tasks_run_on_different_workers(real, work_root, ran):
    """Four long tasks first, then 60 short ones, on four workers: a worker that has
    measured nothing claims one task, so the long ones go to four different workers
    instead of one chunk."""
    tasks = range(64)
    pool = real.make_pool(processes=4, keep_work_dir=True)
    with pool:
        assert pool.map(functools.partial(uneven, ran=str(ran), long=4), tasks,
                        ) == [x * 10 for x in tasks]
    map_dir = the_map_dir(work_root)
    runs = claim_attempts(map_dir)
    holders = [job_of_claim(runs[claim_of_task(map_dir, task)][-1]) for task in range(4)]
    assert len(set(holders)) == 4, holders
    assert reopened_claims(map_dir) == {}
    nothing_left(real)


def test_a_worker_cancelled_mid_map_loses_its_claim_to_the_others(real, work_root, ran):
    """scancel / qdel of the worker running task 0 (which would run 600 s on its first
    attempt): its claim is reopened at once, another worker runs it, every result comes."""
    victim, tasks = 0, range(12)
    pool = real.make_pool(processes=3, keep_work_dir=True)
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=victim, fault="overrun",
                              seconds=0.5), tasks, chunksize=1)
        map_dir = the_map_dir(work_root)
        job = wait_for(lambda: attempts(ran, victim) == 1 and claim_holder(map_dir, victim),
                       60, f"a worker to run task {victim}")
        run(["qdel" if is_sge(real) else "scancel", job])
        assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
    claim = claim_of_task(map_dir, victim)
    assert attempts(ran, victim) == 2
    assert reopened_claims(map_dir) == {claim: 1}
    assert reopen_reasons(map_dir)[claim], "no resubmit event says why"
    assert job_of_claim(claim_attempts(map_dir)[claim][1]) != job
    nothing_left(real)


def holding_shim(tmp_path: Path, sge: bool) -> dict:
    """``commands=``: the map's first submission is made held (``sbatch --hold``, ``qsub
    -h``), then released but for its last job (array element): that one stays held, and
    pending, while the others run. Later submissions are left alone."""
    marker, shim = tmp_path / "held-once", tmp_path / "holding-submit"
    if sge:  # -terse prints ID.1-N:1 for an array
        body = ('out=$(qsub -h "$@") || exit $?\n'
                'id=${out%%.*}\n'
                'last=$(echo "$out" | sed -n "s/^[0-9]*\\.1-\\([0-9]*\\):.*/\\1/p")\n'
                'if [ -n "$last" ] && [ "$last" -gt 1 ]; then\n'
                '  qrls "$id.1-$((last - 1))" >/dev/null; fi\n')
        name = "qsub"
    else:  # --parsable prints ID or ID;cluster
        body = ('out=$(sbatch --hold "$@") || exit $?\n'
                'id=${out%%;*}\n'
                'for element in $(squeue -h -r -j "$id" -o %i | sort -t_ -k2 -n | sed \'$d\'); do\n'
                '  scontrol release "$element" >/dev/null; done\n')
        name = "sbatch"
    shim.write_text(f'#!/bin/sh\nif [ -e "{marker}" ]; then exec {name} "$@"; fi\n'
                    f'touch "{marker}"\n{body}echo "$out"\n')
    shim.chmod(0o755)
    return {name: [str(shim)]}


def held_jobs(backend: conftest.Backend, map_dir: Path) -> list[str]:
    """The map's jobs held in the queue (SGE state ``hqw``, SLURM reason JobHeldUser)."""
    if is_sge(backend):
        return [line.split("|")[0] for line in backend.queued_jobs()
                if "h" in line.split("|")[1]]
    lines = run(["squeue", "-h", "-r", f"--name=poolparty-{map_dir.name}", "-o", "%i|%r"])
    return [line.split("|")[0] for line in lines.splitlines() if "Held" in line]


def test_a_held_worker_does_not_block_the_map_and_is_cancelled(real, work_root, ran,
                                                               tmp_path):
    """One of four workers is held from its submission on: the map completes through the
    other three (a held job never runs any task), and the held job, still pending, is
    cancelled when the map ends."""
    tasks = range(12)
    commands = holding_shim(tmp_path, is_sge(real))
    pool = real.make_pool(processes=4, keep_work_dir=True, commands=commands)
    with pool:
        result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=0.5), tasks,
                                chunksize=1)
        map_dir = the_map_dir(work_root)
        held = wait_for(lambda: attempts(ran, 0) and held_jobs(real, map_dir), 60,
                        "a held worker while the others run")
        assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
    assert all(attempts(ran, x) == 1 for x in tasks)
    ran_by = {job_of_claim(runs[-1]) for runs in claim_attempts(map_dir).values()}
    assert not ran_by & set(held), (held, ran_by)
    nothing_left(real)


def test_a_killed_client_resumes_without_rerunning_anything(real, tmp_path):
    kill_and_resume(real, tmp_path)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("limited", [
    pytest.param(("real-sge", {"resources": {"h_rt": "0:0:15"}}, 3.0),
                 marks=pytest.mark.real_sge),
], ids=["real-sge"])
def test_a_worker_near_its_time_limit_stops_claiming_and_another_finishes(
        limited, work_root, ran, tmp_path):
    """One worker at a time, a time limit of 15 s (SGE ``h_rt``), five tasks of a fifth
    of it: the first worker runs what fits before its limit (95 % of it, less a tenth)
    and stops claiming; the pool submits another for the rest. No job reaches its
    limit: no claim is run twice, none is reopened. (On SLURM the same worker reads its
    limit from ``time``, whose least is a minute: tests/test_worker_pace.py; a job over
    it is tests/test_real_faults.py's.)"""
    param, options, seconds = limited
    tasks = range(5)
    with made_backend(param, work_root, tmp_path) as backend:
        pool = backend.make_pool(processes=1, keep_work_dir=True, **options)
        with pool:
            assert pool.map(functools.partial(faulty, ran=str(ran), seconds=seconds),
                            tasks) == [x * 10 for x in tasks]
        map_dir = the_map_dir(work_root)
        runs = claim_attempts(map_dir)
        assert all(len(attempts_of_claim) == 1 for attempts_of_claim in runs.values()), runs
        assert reopened_claims(map_dir) == {}
        assert all(attempts(ran, x) == 1 for x in tasks)
        workers = [job_of_claim(runs[number][0]) for number in sorted(runs)]
        assert len(set(workers)) == 2 and workers[0] != workers[-1], workers
        nothing_left(backend)
