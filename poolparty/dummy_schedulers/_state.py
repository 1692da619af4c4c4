"""Storage of one fake queue: a JSON file changed under an exclusive lock.

Every process that touches the queue (the CLIs, the runner, the test's
``DummyQueue``) is short-lived or polls, so the simplest correct sharing is a
read-modify-write of the whole state under ``flock``.  The lock lives in its
own file because the state file is replaced atomically (temp file +
``os.replace``) and a lock on a replaced inode would protect nothing.

State format (``<queue dir>/state.json``)::

    {
      "version": 1,
      "config": {"slots": 8, "max_array_size": 1001, "max_job_count": 10000},
      "first_job_id": 1000,        # ids below next_job_id were handed out
      "next_job_id": 1000,
      "runner_pid": null,          # the last runner started; liveness is its locks
      "history": {"squeue": 12},   # calls per command
      "faults": {"fail": {"squeue": 2}, "empty": {}, "hang": {"qstat": [5.0, 1]},
                 "error_state": 0, "vanish": 0, "kill_after": null,
                 "stuck": 0},
      "jobs": {"1000": JOB, ...},  # keyed by the id sbatch/qsub printed
      "tasks": [TASK, ...]         # in submission order
    }

    JOB  = {"scheduler": "slurm"|"sge"|"pbs"|"lsf", "name", "owner", "partition",
            "command": argv, "cwd", "env": {...}, "throttle": int|null,
            "step": int, "slots": int, "append_output": bool,
            "submit_time": float}
    TASK = {"job_id": int, "index": int|null, "task_job_id": int,
            "state": "PENDING"|"RUNNING"|"ERROR", "pid": int|null,
            "output": path, "env": {...}, "start_time": float|null,
            "kill_at": float|null}

Finished, cancelled and vanished tasks are removed from ``tasks``; a job
record goes away with its last task.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

State = dict[str, Any]

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
RUNNER_LOCK_FILE = "runner.lock"  # held by the runner while it schedules
ALIVE_LOCK_FILE = "runner.alive"  # held by the runner process until it exits
RUNNER_LOG_FILE = "runner.log"
SPOOL_DIR = "spool"
FIRST_JOB_ID = 1000


def initial_state() -> State:
    """Return the state of a queue nobody has used yet."""
    return {
        "version": 1,
        "config": {"slots": 8, "max_array_size": 1001, "max_job_count": 10000},
        "first_job_id": FIRST_JOB_ID,
        "next_job_id": FIRST_JOB_ID,
        "runner_pid": None,
        "history": {},
        "faults": {
            "fail": {},
            "empty": {},
            "hang": {},
            "error_state": 0,
            "vanish": 0,
            "kill_after": None,
            "stuck": 0,
        },
        "jobs": {},
        "tasks": [],
    }


@contextlib.contextmanager
def transaction(queue_dir: Path) -> Iterator[State]:
    """Yield the queue's state for reading and changing, under the queue lock.

    Changes are written back only if the block ends normally and something
    changed, so an exception aborts the transaction and a read-only poll
    costs no write.
    """
    queue_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(queue_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        path = queue_dir / STATE_FILE
        before = path.read_text() if path.exists() else None
        state = json.loads(before) if before else initial_state()
        yield state
        after = json.dumps(state, indent=1)
        if after != before:
            _write_atomically(path, after)
    finally:
        os.close(lock_fd)  # closing the descriptor releases the flock


def read_state(queue_dir: Path) -> State:
    """Return a consistent snapshot of the state, for callers that only look."""
    with transaction(queue_dir) as state:
        return state


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one step so that a crash never leaves half a state.

    The temporary name needs no uniqueness: callers hold the queue lock.
    """
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
