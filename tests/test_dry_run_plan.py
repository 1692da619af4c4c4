"""A dry run shows the plan that submit runs, and records nothing.

Backends build their submission as data (:class:`poolparty.scheduler.Submission`):
submit() runs it, a dry run prints it. Here the dummy schedulers' submit tools are
wrapped by a recorder, so what reached them is compared with what the dry run showed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import poolparty
from poolparty.dummy_schedulers import DummyQueue
from poolparty.scheduler import Submission
from poolparty.slurm import SlurmJobs
from poolparty.sun_grid_engine import SunGridEngine
from poolparty.work_dir import WorkDir

SUBMIT_TOOL = {"slurm-array": "sbatch", "slurm": "sbatch", "sge": "qsub"}

RECORDER = """\
import json, subprocess, sys
log, *command = sys.argv[1:]
with open(log, "a") as file:
    file.write(json.dumps(command) + "\\n")
sys.exit(subprocess.run(command).returncode)
"""


def square(x):
    return x * x


@pytest.fixture
def recorded(tmp_path: Path):
    """A dummy queue's commands, its submit tools wrapped by a recorder of their argv;
    returns (commands, the recorded argvs)."""
    queue = DummyQueue(tmp_path / "queue")
    recorder, log = tmp_path / "record.py", tmp_path / "submitted.jsonl"
    recorder.write_text(RECORDER)
    commands = queue.commands()
    for tool in ("sbatch", "qsub"):
        commands[tool] = [sys.executable, str(recorder), str(log), *commands[tool]]

    def submitted() -> list[list[str]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines]

    yield commands, submitted, queue
    queue.shutdown()


def make_pool(backend: str, commands: dict, work_root: Path, **options) -> poolparty.Pool:
    return poolparty.Pool(backend=backend, commands=commands, work_dir=work_root,
                          polling_interval=0.2, call_timeout=10, **options)


@pytest.mark.parametrize("backend", ["slurm-array", "slurm", "sge"])
def test_the_dry_run_shows_what_submit_runs(backend, recorded, tmp_path):
    commands, submitted, _ = recorded
    tasks = list(range(7))
    with make_pool(backend, commands, tmp_path / "work", processes=2) as pool:
        preview = pool.dry_run_map(square, tasks, chunksize=2)
        assert submitted() == []
        assert pool.map(square, tasks, chunksize=2) == [x * x for x in tasks]
    # the plan's argv starts with the recorder (python, record.py, its log), then the
    # dummy tool's argv: what the recorder passed on
    assert all(command[:3] == commands[SUBMIT_TOOL[backend]][:3] for command in preview.commands)
    assert [command[3:] for command in preview.commands] == submitted()


@pytest.mark.parametrize("backend", ["slurm-array", "slurm", "sge", "local"])
def test_a_dry_run_records_nothing_in_the_work_dir(backend, recorded, tmp_path):
    commands, submitted, queue = recorded
    options = {} if backend == "local" else {"commands": commands}
    pool = poolparty.Pool(backend=backend, work_dir=tmp_path / "work", keep_work_dir=True,
                          processes=3, **options)
    with pool:
        preview = pool.dry_run_map(square, range(5), chunksize=2)
    # three workers (three claims of two tasks): one array, or a job each
    assert len(preview.commands) == (3 if backend in ("slurm", "local") else 1)
    assert not (preview.work_dir / "jobs.jsonl").exists()
    assert not list((preview.work_dir / "logs").iterdir())
    assert submitted() == [] and queue.jobs() == []


def test_a_submission_records_its_jobs_under_the_job_id_the_tool_printed():
    submission = Submission("qsub", ("qsub", "job.sh"), {4: 1, 5: 2}, "{job_id}.{index}.log")
    assert submission.record("77") == {4: (1, "77.1.log"), 5: (2, "77.2.log")}
    plain = Submission("sbatch", ("sbatch", "job.sh"), {3: None}, "{job_id}.log")
    assert plain.record("12") == {3: (None, "12.log")}


def test_sge_plans_one_array_per_contiguous_run(tmp_path):
    work_dir = prepared_work_dir(tmp_path)
    scheduler = SunGridEngine(commands=DummyQueue(tmp_path / "queue").commands())
    plan = scheduler.plan(work_dir, [0, 1, 2, 5, 6])
    assert [dict(s.chunks) for s in plan] == [{0: 1, 1: 2, 2: 3}, {5: 1, 6: 2}]
    assert [s.argv[s.argv.index("-t") + 1] for s in plan] == ["1-3", "1-2"]
    assert [s.tool for s in plan] == ["qsub", "qsub"]
    assert [s.argv[-3:] for s in plan] == [("--array", "-1", "SGE_TASK_ID"),
                                          ("--array", "4", "SGE_TASK_ID")]
    assert scheduler.job_id_of("81.1-3:1\n") == "81"


def test_slurm_clusters_come_once_right_after_the_tool(tmp_path):
    work_dir = prepared_work_dir(tmp_path)
    scheduler = SlurmJobs(clusters="gpu", commands={"sbatch": ["sbatch"]})
    (submission,) = scheduler.plan(work_dir, [0])
    assert submission.argv[:2] == ("sbatch", "--clusters=gpu")
    assert submission.argv.count("--clusters=gpu") == 1
    assert scheduler.job_id_of("123;gpu\n") == "123"


def prepared_work_dir(tmp_path: Path) -> WorkDir:
    """A fresh map's work_dir: a plan needs its paths only."""
    work_dir = WorkDir.create(tmp_path / "work")
    work_dir.release()
    return work_dir
