"""What each dummy scheduler does its own way, in one table: the runner and the queue
stay the same for all of them.

A flavour says how its scheduler names an array task, what it writes into a job's log
when it kills the job at its time limit or over its memory, whether it enforces memory
by watching (SLURM, PBS, LSF) or by a resource limit set before the start (SGE's
``h_vmem``), and what becomes of a task that can't even start (SGE keeps it in an error
state, the others drop it). The log lines are those the real schedulers write (sources
in tests/data/endings/README).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Flavour:
    """One scheduler's ways, as the dummies imitate them."""

    #: an array task's name: ``1000_3`` (SLURM), ``1000.3`` (SGE), ``1000[3]`` (PBS, LSF)
    label: Callable[[int, int], str]
    #: the line written into a task's log when it is killed at its time limit (None: none)
    time_limit_line: Callable[[int, float], str] | None = None
    #: the line(s) written when it is killed for its memory (None: not watched, but set
    #: as a limit of the address space before it starts)
    memory_line: Callable[[int, int, int], str] | None = None
    #: what becomes of a task that can't start: "error_state" or "vanish"
    launch_failure: str = "vanish"


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _bracketed(job_id: int, index: int) -> str:
    return f"{job_id}[{index}]"


FLAVOURS = {
    "slurm": Flavour(
        label=lambda job_id, index: f"{job_id}_{index}",
        time_limit_line=lambda job_id, limit: (
            f"slurmstepd: error: *** JOB {job_id} ON localhost CANCELLED AT {_stamp()} "
            f"DUE TO TIME LIMIT ***"),
        memory_line=lambda job_id, used, limit: (
            f"slurmstepd: error: Job {job_id} exceeded memory limit ({used // 1024} > "
            f"{limit // 1024}), being killed\nslurmstepd: error: Exceeded job memory limit"),
    ),
    "sge": Flavour(  # h_rt kills without a word; h_vmem is a resource limit
        label=lambda job_id, index: f"{job_id}.{index}",
        launch_failure="error_state",
    ),
    "pbs": Flavour(
        label=_bracketed,
        time_limit_line=lambda job_id, limit: (
            f"=>> PBS: job killed: walltime {int(limit) + 1} exceeded limit {int(limit)}"),
        memory_line=lambda job_id, used, limit: (
            f"=>> PBS: job killed: mem {used // 1024}kb exceeded limit {limit // 1024}kb"),
    ),
    "lsf": Flavour(
        label=_bracketed,
        time_limit_line=lambda job_id, limit: (
            "TERM_RUNLIMIT: job killed after reaching LSF run time limit.\n"
            "Exited with exit code 140."),
        memory_line=lambda job_id, used, limit: (
            "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit.\n"
            "Exited with exit code 130."),
    ),
}


def flavour_of(job: dict) -> Flavour:
    """The flavour of a job record (its ``scheduler``)."""
    return FLAVOURS[job["scheduler"]]
