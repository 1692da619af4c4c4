"""Inside a SLURM allocation: each worker is a job step of the allocation the client
runs in (``salloc``, an ``sbatch`` script), started with ``srun``; no job is submitted.

Many users already hold an allocation: queueing new jobs from inside it would wait in the
queue again for CPUs they already have. Here a worker is ``srun --exact --ntasks=1
--cpus-per-task=C`` of the map's job script: it gets CPUs of the allocation of its own,
and SLURM starts it when some are free. The steps are children of the client, as local
workers are (:class:`poolparty.local.Local` runs them); their output goes to their log
in the work_dir as for any backend.

Cancelling a step is two SIGINTs to its ``srun`` within a second: srun then kills the
step's tasks on their node (a SIGKILL of srun alone would leave them running there);
a step of the map still listed once none of its sruns is left is scancelled.
Each poll asks ``squeue`` once whether the allocation still runs: when it ended (its
time limit), the map fails saying so, instead of starting steps that can't start.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable

from ..errors import AllocationEndedError, InvalidInputError, SchedulerCommandError
from ..escalation import duration_seconds
from ..local import Local
from ..scheduler import State, run_command
from ..settings import POSITIVE_INT, STRING, Setting
from ..work_dir import WorkDir

log = logging.getLogger("poolparty")

#: how long a cancelled step's srun gets to end its tasks before it is killed
STEP_CANCEL_SECONDS = 5.0
#: how long the time the allocation has left is taken from one squeue
TIME_LEFT_SECONDS = 30.0


def allocation_id(environ: dict[str, str] | None = None) -> str | None:
    """The job id of the allocation this process runs in (None: not in one)."""
    environ = os.environ if environ is None else environ
    return environ.get("SLURM_JOB_ID") or None


def allocation_cpus(environ: dict[str, str] | None = None) -> int:
    """The CPUs of the allocation, over all its nodes: ``SLURM_JOB_CPUS_PER_NODE``
    (``"4(x2),2"``: 4 on each of two nodes, 2 on a third), else ``SLURM_CPUS_ON_NODE``."""
    environ = os.environ if environ is None else environ
    total = 0
    for count, _, repeat in re.findall(r"(\d+)(\(x(\d+)\))?",
                                       environ.get("SLURM_JOB_CPUS_PER_NODE", "")):
        total += int(count) * int(repeat or 1)
    return total or int(environ.get("SLURM_CPUS_ON_NODE", "1") or 1)


class SlurmSteps(Local):
    """Workers as job steps of the SLURM allocation the client runs in."""

    name = "slurm-steps"
    runs_elsewhere = True  # steps may run on the allocation's other nodes
    settings = (Setting("cpus_per_task", POSITIVE_INT, None, "SLURM --cpus-per-task"),
                Setting("allocation", STRING, None, "the SLURM job whose allocation runs "
                        "the steps (unset: the one the client runs in, SLURM_JOB_ID)"))

    @classmethod
    def found_here(cls) -> bool:
        """In a SLURM allocation with srun on PATH (``use_allocation=False``, or a
        backend named, submits jobs instead)."""
        job = allocation_id()
        if job is None or shutil.which("srun") is None:
            return False
        log.info("running in SLURM allocation %s: the workers are its job steps "
                 "(use_allocation=False submits jobs instead)", job)
        return True

    @classmethod
    def default_capacity(cls) -> int:
        return allocation_cpus()

    def __init__(self, max_workers: int | None = None, *, cpus_per_task: int | None = None,
                 allocation: str | None = None, call_timeout: float = 60.0) -> None:
        """``allocation``: the job id of an allocation of the user's (``salloc
        --no-shell``) to run the steps in, from outside it; its CPUs are then asked of
        squeue."""
        job = allocation or allocation_id()
        if job is None:
            raise InvalidInputError(
                "backend='slurm-steps' runs workers as steps of the SLURM allocation the "
                "client runs in, but SLURM_JOB_ID is not set here: run inside salloc or "
                "an sbatch script, pass allocation='JOBID', or use backend='slurm-array'.")
        self.job_id = str(job)
        self.cpus_per_task = self.cpus_per_worker = cpus_per_task or 1
        self.call_timeout = call_timeout
        self._time_left: tuple[float | None, float] | None = None
        self._names: set[str] = set()  # of the maps whose steps it started
        cpus = allocation_cpus() if allocation is None else self.cpus_of_allocation()
        super().__init__(max_workers or max(1, cpus // self.cpus_per_task))

    def cpus_of_allocation(self) -> int:
        """The CPUs of the allocation named by ``allocation``, as squeue lists them."""
        text = run_command(["squeue", "--noheader", f"--jobs={self.job_id}", "--format=%C"],
                           self.call_timeout)
        return int(text.split()[0]) if text.split() and text.split()[0].isdigit() else 1

    def job_name(self, work_dir: WorkDir) -> str:
        """Every step of a map carries this name (``squeue --steps`` shows it)."""
        return f"poolparty-{work_dir.map_id}"

    def launcher_for(self, work_dir: WorkDir) -> tuple[str, ...]:
        self._names.add(self.job_name(work_dir))
        return ("srun", "--exact", "--ntasks=1", "--nodes=1",
                f"--cpus-per-task={self.cpus_per_task}", f"--jobid={self.job_id}",
                f"--job-name={self.job_name(work_dir)}", "--quiet")

    def worker_options(self) -> tuple[str, ...]:
        """The time the allocation has left, as the worker's time limit: it claims no
        tasks that the allocation's end would cut (``--steps 0,0``: the pool's own
        resources, see poolparty.worker.raised_resources)."""
        left = self.time_left()
        return () if left is None else ("--steps", "0,0", "--time-limit", f"{left:.0f}")

    def time_left(self) -> float | None:
        """Seconds the allocation has left (squeue's ``%L``, asked at most every
        TIME_LEFT_SECONDS); None without a limit or when squeue can't say."""
        now = time.monotonic()
        if self._time_left is None or now - self._time_left[1] > TIME_LEFT_SECONDS:
            try:
                text = run_command(["squeue", "--noheader", f"--jobs={self.job_id}",
                                    "--format=%L"], self.call_timeout).strip()
            except SchedulerCommandError as error:
                log.info("could not read the time the allocation has left: %s", error)
                text = ""
            self._time_left = (duration_seconds(text) if text else None, now)
        seconds, asked = self._time_left
        return None if seconds is None else max(0.0, seconds - (now - asked))

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        """End the steps' sruns; once none of the map's is left, end any step of the
        map that is still listed (one whose srun had to be killed leaves it running)."""
        super().cancel(work_dir, chunk_ids)
        if not super().query(work_dir):
            self.cancel_steps_named({self.job_name(work_dir)})

    def close(self) -> None:
        super().close()
        self.cancel_steps_named(self._names)

    def cancel_steps_named(self, names: set[str]) -> None:
        """scancel the allocation's steps with one of these names (best effort: one
        squeue, one scancel)."""
        if not names:
            return
        try:
            text = run_command(["squeue", "--noheader", "--steps", f"--jobs={self.job_id}",
                                "--format=%i|%j"], min(self.call_timeout, 10.0))
            steps = [line.split("|")[0] for line in text.splitlines()
                     if line.split("|")[-1].strip() in names]
            if steps:
                run_command(["scancel", *steps], min(self.call_timeout, 10.0))
        except SchedulerCommandError as error:
            log.info("could not end the steps left of %s: %s", sorted(names), error)

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        """The steps still running (or waiting for CPUs), after asking once whether the
        allocation still runs."""
        self.check_allocation()
        return super().query(work_dir)

    def check_allocation(self) -> None:
        """Raise :class:`AllocationEndedError` once squeue no longer shows the
        allocation running; a squeue that fails for a moment is the engine's to retry."""
        try:
            state = run_command(["squeue", "--noheader", f"--jobs={self.job_id}",
                                 "--format=%T"], self.call_timeout,
                                lambda error: "Invalid job id" not in error.stderr).strip()
        except SchedulerCommandError as error:
            if "Invalid job id" not in error.stderr:
                raise
            state = ""
        if state not in ("RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING"):
            raise AllocationEndedError(
                f"the SLURM allocation {self.job_id} this pool runs its workers in has ended "
                f"({state or 'no longer listed'}: its time limit, or it was cancelled); the "
                f"tasks it did not finish did not run. Start a new allocation (salloc) and "
                f"run again: the finished results are reused. Or submit jobs instead: "
                f"Pool(use_allocation=False).")

    @staticmethod
    def stop_process(process: subprocess.Popen) -> None:
        """Two SIGINTs within a second make srun kill the step's tasks, wherever they
        run; then srun itself is waited for (killed if it hangs)."""
        for _ in range(2):
            try:
                process.send_signal(signal.SIGINT)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            process.wait(timeout=STEP_CANCEL_SECONDS)
        except subprocess.TimeoutExpired:
            Local.stop_process(process)
