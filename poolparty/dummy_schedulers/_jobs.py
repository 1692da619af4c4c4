"""Operations on jobs and tasks shared by the CLIs, the runner and DummyQueue.

Everything here takes a ``state`` obtained from ``_state.transaction`` and
must be called while that transaction is open: the lock is what makes
"look at a task, then kill its process" free of races with the runner.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._flavours import flavour_of
from ._state import ALIVE_LOCK_FILE, RUNNER_LOCK_FILE, RUNNER_LOG_FILE, SPOOL_DIR, State

Task = dict[str, Any]
Job = dict[str, Any]

RUNNER_MODULE = "poolparty.dummy_schedulers._runner"


def allocate_job_ids(state: State, count: int) -> int:
    """Reserve ``count`` consecutive job ids and return the first.

    SLURM gives every array task a job id of its own, so an array of n
    tasks reserves n ids; SGE tasks share their job's id.
    """
    first: int = state["next_job_id"]
    state["next_job_id"] = first + count
    return first


def new_job(
    *,
    scheduler: str,
    name: str,
    partition: str,
    command: list[str],
    cwd: str,
    env: dict[str, str],
    throttle: int | None,
    step: int,
    slots: int,
    append_output: bool,
    time_limit: float | None = None,
    memory_limit: int | None = None,
) -> Job:
    """Return a job record.

    Tasks run in the submitter's environment plus ``env`` (the scheduler's
    job-wide variables), as with ``--export=ALL`` or ``qsub -V``.
    """
    return {
        "scheduler": scheduler,
        "name": name,
        "owner": getpass.getuser(),
        "partition": partition,
        "command": command,
        "cwd": cwd,
        "env": {**os.environ, **env},
        "throttle": throttle,
        "step": step,
        "slots": slots,
        "append_output": append_output,
        "submit_time": time.time(),
        # enforced by the runner, as the scheduler would: seconds of run time, and
        # bytes (SLURM: resident memory, watched; SGE: address space, a resource limit)
        "time_limit": time_limit,
        "memory_limit": memory_limit,
    }


def new_task(
    job_id: int, index: int | None, task_job_id: int, output: str, env: dict[str, str]
) -> Task:
    """Return a pending task; ``env`` holds only the variables that differ per task."""
    return {
        "job_id": job_id,
        "index": index,
        "task_job_id": task_job_id,
        "state": "PENDING",
        "pid": None,
        "output": output,
        "env": env,
        "start_time": None,
        "kill_at": None,
    }


def spool_path(queue_dir: Path, job_id: int) -> Path:
    """Where a job's script is kept: the command a task runs refers to it."""
    return queue_dir / SPOOL_DIR / str(job_id)


def add_job(
    queue_dir: Path, state: State, job_id: int, job: Job, tasks: list[Task], script: bytes
) -> None:
    """Queue a job and its tasks and make sure a runner will start them.

    The script is copied now, as real schedulers do, so editing or deleting
    it after submission changes nothing; ``job["command"]`` must run the copy
    at ``spool_path(queue_dir, job_id)``.
    """
    spool = spool_path(queue_dir, job_id)
    spool.parent.mkdir(exist_ok=True)
    spool.write_bytes(script)
    spool.chmod(0o755)
    state["jobs"][str(job_id)] = job
    state["tasks"].extend(tasks)
    ensure_runner(queue_dir, state)


def job_of(state: State, task: Task) -> Job:
    """Return the job record a task belongs to."""
    job: Job = state["jobs"][str(task["job_id"])]
    return job


def task_label(state: State, task: Task) -> str:
    """Name a task the way its own scheduler does: ``1000_3`` (SLURM), ``1000.3`` (SGE),
    ``1000[3]`` (PBS, LSF)."""
    if task["index"] is None:
        return str(task["job_id"])
    return flavour_of(job_of(state, task)).label(task["job_id"], task["index"])


def tasks_in(state: State, *states: str) -> list[Task]:
    """Return the tasks whose state is one of ``states``, in queue order."""
    return [task for task in state["tasks"] if task["state"] in states]


def select_tasks(state: State, job_id: int, indices: set[int] | None = None) -> list[Task]:
    """Return the queued tasks of a job, or only those with the given array indices."""
    return [
        task
        for task in state["tasks"]
        if task["job_id"] == job_id and (indices is None or task["index"] in indices)
    ]


def was_submitted(state: State, job_id: int) -> bool:
    """Tell whether the queue ever handed out this job id (finished jobs included)."""
    first: int = state["first_job_id"]
    after_last: int = state["next_job_id"]
    return first <= job_id < after_last


def running_counts(state: State) -> tuple[int, Counter[int]]:
    """Count running tasks overall and per job, for slot and throttle checks."""
    running = tasks_in(state, "RUNNING")
    return len(running), Counter(task["job_id"] for task in running)


def is_throttled(state: State, task: Task, running_per_job: Counter[int]) -> bool:
    """Tell whether an array's ``%N`` / ``-tc N`` limit holds this task back."""
    throttle = job_of(state, task)["throttle"]
    return throttle is not None and running_per_job[task["job_id"]] >= throttle


def remove_tasks(queue_dir: Path, state: State, doomed: Iterable[Task]) -> None:
    """Drop tasks from the queue, and each job record (and its spooled script)
    whose last task this was: finished jobs leave no trace, as on a cluster
    without accounting."""
    doomed_ids = {id(task) for task in doomed}
    state["tasks"] = [task for task in state["tasks"] if id(task) not in doomed_ids]
    alive_jobs = {str(task["job_id"]) for task in state["tasks"]}
    for job_id in list(state["jobs"]):
        if job_id not in alive_jobs:
            del state["jobs"][job_id]
            spool_path(queue_dir, int(job_id)).unlink(missing_ok=True)


def cancel_tasks(queue_dir: Path, state: State, doomed: Iterable[Task]) -> None:
    """Kill the running ones among ``doomed`` and remove them all from the queue.

    SIGKILL, not SIGTERM: a cancelled or lost task must never write anything
    more, which is exactly what tests of the pool's recovery rely on.
    """
    doomed = list(doomed)
    for task in doomed:
        if task["state"] == "RUNNING" and task["pid"] is not None:
            kill_group(task["pid"])
    remove_tasks(queue_dir, state, doomed)


def kill_group(pid: int) -> None:
    """SIGKILL a task's whole process group (the task leads its own session)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def process_exists(pid: int) -> bool:
    """Tell whether a process (possibly someone else's child) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Tell whether a process is dead but unreaped: orphans stay so where
    init does not reap (some containers)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: trust kill()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def runner_alive(queue_dir: Path) -> bool:
    """Tell whether a runner process exists for the queue, even one that is exiting.

    Call under the state lock: probing takes the locks for an instant, and a
    submission probing at the same moment must not conclude "no runner".
    """
    return is_locked(queue_dir / RUNNER_LOCK_FILE) or is_locked(queue_dir / ALIVE_LOCK_FILE)


def is_locked(path: Path) -> bool:
    """Tell whether some process holds the flock of ``path``."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ensure_runner(queue_dir: Path, state: State) -> None:
    """Start a detached runner for the queue unless one is alive.

    We take the runner lock here and hand the locked descriptor to the new
    runner, so there is no moment where a second submission could start a
    second runner.  A runner releases the lock under the state lock when it
    decides to stop, so a submission either sees it alive (and it will pick
    the new tasks up) or free (and starts a new one).  Must be called under
    the state lock.
    """
    fd = os.open(queue_dir / RUNNER_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a runner is alive
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(_package_root()), env.get("PYTHONPATH")])
        )
        argv = [sys.executable, "-m", RUNNER_MODULE, "--queue", str(queue_dir),
                "--lock-fd", str(fd)]
        with open(queue_dir / RUNNER_LOG_FILE, "ab") as log:
            runner = subprocess.Popen(
                argv,
                pass_fds=(fd,),
                start_new_session=True,  # survives the submitter, and its signals
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=queue_dir,
                env=env,
            )
        state["runner_pid"] = runner.pid
    finally:
        os.close(fd)  # the runner keeps its own copy, and with it the lock


def _package_root() -> Path:
    """Return the directory holding ``poolparty``, so the runner can import it
    whatever the submitter's working directory was."""
    return Path(__file__).resolve().parents[2]

