"""Resources per map (``pool.map(..., resources={...})``): on top of the pool's, checked
before anything is submitted, with workers of the map's own; on the dummy schedulers
(no GPU here: the dummy sets CUDA_VISIBLE_DEVICES as SLURM's gres plugin does)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest
from conftest import made_backend

import poolparty
from poolparty.errors import InvalidInputError


def devices(x: int) -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def job_of(x: int) -> str:
    return os.environ.get("SLURM_JOB_ID") or os.environ["JOB_ID"]


@pytest.mark.parametrize("name", ["slurm-array", "slurm"])
def test_a_map_given_gpus_sees_the_devices_its_jobs_were_given(name, work_root, tmp_path,
                                                                 monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with made_backend(f"dummy-{name}", work_root, tmp_path) as backend:
        with backend.make_pool(processes=2) as pool:
            assert pool.map(devices, range(3), resources={"gpus": 2}) == ["0,1"] * 3
            assert pool.map(devices, range(3)) == [None] * 3


@pytest.mark.parametrize("name", ["slurm-array", "sge"])
def test_maps_with_other_resources_get_workers_of_their_own(name, work_root, tmp_path):
    """Warm workers of the pool's first map run its third (same resources), never the
    second, which asks for more time."""
    more = {"time": "30"} if name.startswith("slurm") else {"h_rt": "1800"}
    with made_backend(f"dummy-{name}", work_root, tmp_path) as backend:
        with backend.make_pool(processes=2, idle_timeout=30) as pool:
            first = set(pool.map(job_of, range(4), chunksize=1))
            second = set(pool.map(job_of, range(4), chunksize=1, resources=more))
            third = set(pool.map(job_of, range(4), chunksize=1))
    assert not second & first, (first, second)
    # the third map ran on jobs submitted before the second (job ids grow)
    assert max(map(int, third)) < min(map(int, second)), (first, second, third)


@pytest.mark.parametrize(("name", "resources", "words"), [
    ("slurm-array", {"memroy": "2G"}, "SLURM takes time, memory, cpus, gpus and partition"),
    ("slurm-array", {"time": "soon"}, "--time='soon' is not something sbatch takes"),
    ("slurm", {"cpus": 0}, "--cpus-per-task=0"),
    ("slurm", {"memory": "lots"}, "--mem='lots'"),
    ("sge", {"gpus": 1}, "SGE has no standard GPU resource"),
    ("sge", {"cpus": 4}, "parallel environment"),
    ("sge", {"h rt": "1"}, "SGE takes -l name=value"),
])
def test_bad_resources_are_refused_before_anything_is_submitted(name, resources, words,
                                                                work_root, tmp_path):
    with made_backend(f"dummy-{name}", work_root, tmp_path) as backend:
        with backend.make_pool() as pool:
            with pytest.raises(InvalidInputError, match=words.replace("(", r"\(")):
                pool.map(abs, range(3), resources=resources)
            with pytest.raises(InvalidInputError):
                pool.imap(abs, iter(range(3)), resources=resources)
        assert backend.queued_jobs() == []
    assert not work_root.exists() or not [p for p in work_root.iterdir() if p.is_dir()
                                          and not p.name.startswith(".")]


def test_local_processes_take_no_resources(work_root):
    with poolparty.Pool(2, backend="local", work_dir=work_root) as pool:
        with pytest.raises(InvalidInputError, match="takes no resources per map"):
            pool.map(abs, [1], resources={"time": "1"})
        with pytest.raises(TypeError, match="resources must be a dict"):
            pool.map(abs, [1], resources="1:00:00")


def needs_time(x: int, marks: str) -> int:
    (Path(marks) / f"{x}-{time.time_ns()}").touch()
    time.sleep(2.5)
    return x


def test_a_maps_own_time_limit_is_enforced_and_raised(work_root, tmp_path):
    """A time of 2 s given to one map only: its job is killed at it, and the claim runs
    again with twice that (time_escalation=2); the pool itself has no time limit."""
    marks = tmp_path / "marks"
    marks.mkdir()
    with made_backend("dummy-slurm-array", work_root, tmp_path) as backend:
        with backend.make_pool(time_escalation=2, max_num_resubmissions=1) as pool:
            task = functools.partial(needs_time, marks=str(marks))
            assert pool.map(task, [7], resources={"time": "0:02"}) == [7]
    assert len(list(marks.iterdir())) == 2


def test_apply_and_starmap_take_resources_too(work_root, tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with made_backend("dummy-slurm-array", work_root, tmp_path) as backend:
        with backend.make_pool() as pool:
            assert pool.apply(devices, (1,), resources={"gpus": 1}) == "0"
            assert pool.starmap(devices, [(1,)], resources={"gpus": "a100:3"}) == ["0,1,2"]
            assert list(pool.imap(devices, iter([1, 2]), resources={"gpus": 1})) == ["0", "0"]
