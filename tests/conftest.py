"""Fixtures: one test suite over every backend.

``backend`` is parametrized over local processes, the dummy SLURM (fast, can inject
faults) and the real SLURM of this machine. Real-scheduler tests skip with a message
when no scheduler runs here, unless POOLPARTY_REQUIRE_SCHEDULERS names it (CI sets it):
then a missing scheduler is a failure, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import poolparty

HOW_TO_ENABLE = "start one with: sudo bash scripts/test_cluster.sh {name}"


def scheduler_running(name: str) -> bool:
    probe = {"slurm": ["sinfo", "-h", "-o", "%T"], "sge": ["qstat", "-help"]}[name]
    if shutil.which(probe[0]) is None:
        return False
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    if name == "slurm":
        return done.returncode == 0 and any(
            s in done.stdout for s in ("idle", "mix", "alloc", "completing")
        )
    return done.returncode == 0 or "SGE" in done.stdout


def require_scheduler(name: str) -> None:
    """Skip (on a user's machine) or fail (in CI) when ``name`` is not running here."""
    if scheduler_running(name):
        return
    required = os.environ.get("POOLPARTY_REQUIRE_SCHEDULERS", "").split(",")
    message = f"no running {name} on this machine; " + HOW_TO_ENABLE.format(name=name)
    if name in required:
        pytest.fail(message + " (required here by POOLPARTY_REQUIRE_SCHEDULERS)")
    pytest.skip(message)


@dataclass
class Backend:
    """A way to build pools on one backend, and to look at its queue."""

    name: str
    make_pool: Callable[..., poolparty.Pool]
    queued_jobs: Callable[[], list[str]] = field(default=lambda: [])
    running_count: Callable[[], int] = field(default=lambda: 0)
    kill_running: Callable[[int], list[str]] | None = None
    queue: Any = None


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "pp"


def local_worker_processes() -> list[str]:
    """Worker processes of local maps still alive (children of this test process)."""
    done = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines()
            if "poolparty.worker" in line and "ps -eo" not in line]


def local_running_count() -> int:
    return len(local_worker_processes())


def local_backend(work_root: Path) -> Backend:
    def make_pool(**options: Any) -> poolparty.Pool:
        options.setdefault("polling_interval", 0.2)
        options.setdefault("work_dir", work_root)
        return poolparty.Pool(backend="local", **options)

    return Backend("local", make_pool, local_worker_processes, local_running_count)


def dummy_slurm_backend(work_root: Path, tmp_path: Path) -> Backend:
    from poolparty.dummy_schedulers import DummyQueue

    queue = DummyQueue(tmp_path / "queue")

    def make_pool(**options: Any) -> poolparty.Pool:
        options.setdefault("polling_interval", 0.2)
        options.setdefault("call_timeout", 10)
        options.setdefault("work_dir", work_root)
        return poolparty.Pool(backend="slurm-array", commands=queue.commands(), **options)

    def queued_jobs() -> list[str]:
        return [str(job) for job in queue.jobs()]

    def running_count() -> int:
        return sum(1 for job in queue.jobs() if job["state"] == "RUNNING")

    return Backend("dummy-slurm-array", make_pool, queued_jobs, running_count,
                   queue.kill_running, queue)


def squeue_jobs_named(prefix: str = "poolparty-") -> list[str]:
    done = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i|%T|%j"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return [line for line in done.stdout.splitlines() if f"|{prefix}" in line]


def scancel_running(count: int) -> list[str]:
    running = [l.split("|")[0] for l in squeue_jobs_named() if "|RUNNING|" in l]
    victims = running[:count]
    if victims:
        subprocess.run(["scancel", *victims], check=True, timeout=30)
    return victims


def real_slurm_backend(work_root: Path) -> Backend:
    require_scheduler("slurm")

    def make_pool(**options: Any) -> poolparty.Pool:
        options.setdefault("polling_interval", 0.5)
        options.setdefault("work_dir", work_root)
        return poolparty.Pool(backend="slurm-array", **options)

    def running_count() -> int:
        return sum(1 for line in squeue_jobs_named() if "|RUNNING|" in line)

    return Backend("real-slurm-array", make_pool, squeue_jobs_named, running_count,
                   scancel_running)


@pytest.fixture(params=["local", "dummy-slurm-array", "real-slurm-array"])
def backend(request, work_root: Path, tmp_path: Path):
    if request.param == "local":
        yield local_backend(work_root)
    elif request.param == "dummy-slurm-array":
        b = dummy_slurm_backend(work_root, tmp_path)
        yield b
        b.queue.wait_until_empty(timeout=30)
    else:
        yield real_slurm_backend(work_root)


@pytest.fixture(params=["dummy-slurm-array", "real-slurm-array"])
def cluster_backend(request, work_root: Path, tmp_path: Path):
    if request.param == "dummy-slurm-array":
        yield dummy_slurm_backend(work_root, tmp_path)
    else:
        yield real_slurm_backend(work_root)


@pytest.fixture
def dummy(work_root: Path, tmp_path: Path) -> Backend:
    return dummy_slurm_backend(work_root, tmp_path)
