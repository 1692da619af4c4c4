"""SLURM: what every SLURM backend shares (commands, squeue parsing, states, resources).

A SLURM backend is argv builders plus pure parsers, tested on output captured from a
real SLURM in tests/data/. All commands go through :func:`run_command`.

``poolparty.slurm.array.Pool`` submits one job array per round (the fast default).
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..errors import SchedulerCommandError, SchedulerNotFoundError
from ..scheduler import Scheduler, State, expand_ranges, run_command
from ..work_dir import WorkDir

log = logging.getLogger("poolparty")

#: squeue's states, as the engine needs to see them. Terminal states (FAILED,
#: TIMEOUT, ...) are shown briefly before the job leaves the queue: the job will not
#: write a result, so the engine may as well resubmit it now.
STATES: dict[str, State] = {
    "PENDING": State.PENDING,
    "REQUEUED": State.PENDING,
    "REQUEUE_HOLD": State.PENDING,
    "REQUEUE_FED": State.PENDING,
    "SUSPENDED": State.PENDING,
    "STOPPED": State.PENDING,
    "RESV_DEL_HOLD": State.PENDING,
    "CONFIGURING": State.RUNNING,
    "RUNNING": State.RUNNING,
    "COMPLETING": State.RUNNING,
    "COMPLETED": State.RUNNING,  # its result file is about to be (or already) there
    "RESIZING": State.RUNNING,
    "SIGNALING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "CANCELLED": State.ERROR,
    "FAILED": State.ERROR,
    "TIMEOUT": State.ERROR,
    "NODE_FAIL": State.ERROR,
    "BOOT_FAIL": State.ERROR,
    "OUT_OF_MEMORY": State.ERROR,
    "DEADLINE": State.ERROR,
    "PREEMPTED": State.ERROR,
    "SPECIAL_EXIT": State.ERROR,
}

#: Pending reasons that mean "this will never run by itself".
ERROR_REASONS = ("launch failed requeued held", "JobHoldMaxRequeue")

#: stderr of a SLURM command that is worth retrying: the controller is busy or away.
TRANSIENT_ERRORS = re.compile(
    r"timed out|time out|timeout|unable to contact|connection refused|try again|"
    r"temporarily|slurm_load_jobs error|controller|communication|socket|"
    r"resource temporarily unavailable|busy",
    re.IGNORECASE,
)

SQUEUE_FORMAT = "%i|%T|%r"

_warned_states: set[str] = set()


@dataclass(frozen=True)
class QueuedJob:
    """One line of squeue: a job, or one element of an array."""

    job_id: str
    index: int | None
    state: State


def parse_squeue(text: str) -> list[QueuedJob]:
    """Parse ``squeue --noheader --array --format=%i|%T|%r``.

    ``%i`` is ``JOBID`` or ``JOBID_INDEX``; an array not yet split shows as
    ``JOBID_[3-9%2]`` and is expanded. Unknown states are logged once and taken as
    RUNNING: leaving a job alone is the safe mistake.
    """
    jobs = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0]:
            continue
        job_text, state_text = fields[0], fields[1].strip()
        reason = fields[2].strip() if len(fields) > 2 else ""
        state = _state_of(state_text, reason)
        job_id, _, index_text = job_text.partition("_")
        if not index_text:
            jobs.append(QueuedJob(job_id, None, state))
        elif index_text.startswith("["):
            jobs.extend(QueuedJob(job_id, i, state) for i in expand_ranges(index_text))
        else:
            jobs.append(QueuedJob(job_id, int(index_text), state))
    return jobs


def _state_of(state_text: str, reason: str) -> State:
    base = state_text.split()[0].rstrip("+") if state_text else ""
    if any(error_reason in reason for error_reason in ERROR_REASONS):
        return State.ERROR
    if base not in STATES:
        if base not in _warned_states:
            _warned_states.add(base)
            log.warning("unknown SLURM job state %r: treating it as running", base)
        return State.RUNNING
    return STATES[base]


def states_of_chunks(work_dir: WorkDir, jobs: Iterable[QueuedJob]) -> dict[int, State]:
    """Map queued jobs to their chunks; when a chunk has several jobs (an old one being
    cancelled, a resubmitted one), the liveliest state wins."""
    liveliness = {State.ERROR: 0, State.PENDING: 1, State.RUNNING: 2}
    states: dict[int, State] = {}
    for job in jobs:
        chunk_id = work_dir.chunk_of_job(job.job_id, job.index)
        if chunk_id is None:
            continue
        if chunk_id not in states or liveliness[job.state] > liveliness[states[chunk_id]]:
            states[chunk_id] = job.state
    return states


def parse_max_array_size(text: str, default: int = 1001) -> int:
    """MaxArraySize from ``scontrol show config``: array indices must stay below it."""
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else default


def _is_transient(error: SchedulerCommandError) -> bool:
    return error.returncode is None or bool(TRANSIENT_ERRORS.search(error.stderr))


class SlurmBase(Scheduler):
    """Commands, resources and the squeue/scancel half shared by SLURM backends.

    ``commands`` maps ``sbatch``, ``squeue``, ``scancel``, ``scontrol`` to argv
    prefixes (the dummy scheduler's, or full paths); ``sbatch_args`` are passed to
    every sbatch as they are.
    """

    name = "slurm"
    default_max_running = 8

    def __init__(
        self,
        max_running: int | None = None,
        *,
        partition: str | None = None,
        time: str | None = None,
        memory: str | None = None,
        cpus_per_task: int | None = None,
        gpus: int | str | None = None,
        sbatch_args: Sequence[str] = (),
        commands: dict[str, Sequence[str]] | None = None,
        call_timeout: float = 60.0,
    ) -> None:
        if max_running is not None:
            self.default_max_running = max_running
        #: a throttle only when the user asks for one: otherwise the scheduler's
        #: fair share decides, and throttled arrays start more slowly
        self.max_running = max_running
        if isinstance(sbatch_args, str):
            raise TypeError("sbatch_args must be a list of arguments, e.g. ['--qos=long']")
        resources = {
            "partition": partition, "time": time, "mem": memory,
            "cpus-per-task": cpus_per_task, "gpus": gpus,
        }
        self.resource_args = [f"--{k}={v}" for k, v in resources.items() if v is not None]
        self.resource_args += [str(a) for a in sbatch_args]
        self.commands = {name: [name] for name in ("sbatch", "squeue", "scancel", "scontrol")}
        self.commands.update({k: list(v) for k, v in (commands or {}).items()})
        self.call_timeout = float(call_timeout)

    def check_available(self) -> None:
        for name in ("sbatch", "squeue", "scancel"):
            if shutil.which(self.commands[name][0]) is None:
                raise SchedulerNotFoundError(
                    f"{self.commands[name][0]!r} was not found on PATH, so SLURM can't be used "
                    f"here. Run on a SLURM login node, or use local processes: "
                    f"poolparty.Pool(backend='local')."
                )

    def run(self, name: str, arguments: Sequence[str]) -> str:
        return run_command(self.commands[name] + list(arguments), self.call_timeout, _is_transient)

    def job_name(self, work_dir: WorkDir) -> str:
        return f"poolparty-{work_dir.map_id}"

    def sbatch(self, work_dir: WorkDir, options: Sequence[str], script_args: Sequence[str]) -> str:
        """Submit and return the job id (``--parsable`` prints ``ID`` or ``ID;cluster``)."""
        argv = [
            "--parsable", f"--job-name={self.job_name(work_dir)}", *options,
            *self.resource_args, str(work_dir.script_path), *script_args,
        ]
        return self.run("sbatch", argv).strip().split(";")[0]

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        text = self.run("squeue", [
            "--noheader", "--array", "--me", f"--name={self.job_name(work_dir)}",
            f"--format={SQUEUE_FORMAT}",
        ])
        return states_of_chunks(work_dir, parse_squeue(text))

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        job_ids = sorted({
            ref.job_id if ref.index is None else f"{ref.job_id}_{ref.index}"
            for chunk_id in chunk_ids for ref in work_dir.jobs_of_chunk(chunk_id)
        })
        for start in range(0, len(job_ids), 500):
            try:
                self.run("scancel", job_ids[start : start + 500])
            except SchedulerCommandError as error:
                if error.returncode is None:
                    raise
                log.info("scancel reported: %s", error.stderr.strip())  # e.g. already ended
