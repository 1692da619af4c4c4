"""``DummyQueue``: the test-side handle on one fake SLURM, SGE, PBS or LSF queue."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._cli import COMMANDS, MODULES
from ._jobs import cancel_tasks, job_of, runner_alive, task_label, tasks_in
from ._state import read_state, transaction

_POLL_SECONDS = 0.01


class DummyQueue:
    """One fake batch queue whose state lives in a directory.

    The dummy commands returned by ``commands()`` act on it and
    really run the submitted scripts as local processes, at most ``slots``
    at a time.  Several queues (several directories) are fully independent,
    so tests may run in parallel.
    """

    def __init__(
        self, path: str | os.PathLike[str], slots: int = 8, max_array_size: int = 1001
    ) -> None:
        self.path = Path(path).absolute()
        with transaction(self.path) as state:
            state["config"].update(slots=slots, max_array_size=max_array_size)

    def __repr__(self) -> str:
        return f"DummyQueue({str(self.path)!r})"

    def commands(self, scheduler: str | None = None) -> dict[str, list[str]]:
        """Return the argv prefix of each dummy command, e.g. ``commands()["sbatch"]``.

        Append the real command's arguments.  Nothing global (PATH, files in
        bin directories) is involved, so each queue's commands stay its own.
        ``scheduler``: "slurm", "sge", "pbs" or "lsf" for that one's commands only;
        by default SLURM's and SGE's (PBS's ``qsub`` is not SGE's: ask for "pbs").
        """
        if scheduler is not None and scheduler not in MODULES:
            raise ValueError(f"unknown scheduler {scheduler!r}; known: {sorted(MODULES)}")
        chosen = [scheduler] if scheduler else ["slurm", "sge"]
        return {
            command: [sys.executable, "-m", f"poolparty.dummy_schedulers.{module}",
                      "--queue", str(self.path)]
            for name in chosen for command, module in MODULES[name].items()
        }

    def inject(
        self,
        *,
        fail: Mapping[str, int] | None = None,
        empty: Mapping[str, int] | None = None,
        hang: Mapping[str, tuple[float, int]] | None = None,
        error_state: int | None = None,
        vanish: int | None = None,
        kill_after: tuple[float, int] | None = None,
        stuck: int | None = None,
    ) -> None:
        """Arrange faults, seen by every dummy command and by the runner.

        fail
            ``{command: n}``: its next n calls fail with a timeout error (exit 1).
        empty
            ``{command: n}``: its next n calls print nothing, do nothing, exit 0.
        hang
            ``{command: (seconds, n)}``: its next n calls sleep first.
        error_state
            The next n tasks to start go to an error state instead (SLURM: PENDING,
            "launch failed requeued held"; SGE: Eqw) and stay queued until cancelled.
        vanish
            The next n tasks to start disappear without running.
        kill_after
            ``(seconds, n)``: the next n tasks to start are SIGKILLed and vanish that
            many seconds after starting.
        stuck
            The next n tasks to start are listed as running but never run, until
            cancelled: a task lost on its way to the node, as SGE can lose one when
            sge_execd stops during the hand-over.

        Per-command settings are merged into the current ones; the others
        replace theirs.  Arguments left out change nothing.
        """
        tables = {"fail": fail, "empty": empty, "hang": hang}
        for table in tables.values():
            unknown = set(table or ()) - set(COMMANDS)
            if unknown:
                raise ValueError(f"unknown commands {sorted(unknown)}; known: {COMMANDS}")
        with transaction(self.path) as state:
            faults = state["faults"]
            for name, table in tables.items():
                faults[name].update({cmd: _plain(value) for cmd, value in (table or {}).items()})
            task_faults = {"error_state": error_state, "vanish": vanish,
                           "kill_after": kill_after, "stuck": stuck}
            for name, value in task_faults.items():
                if value is not None:
                    faults[name] = _plain(value)

    def jobs(self) -> list[dict[str, Any]]:
        """Describe the tasks in the queue, in queue order.

        Each is ``{"id": "1000_3" (SLURM) or "1000.3" (SGE) or "1000",
        "job_id": 1000, "index": 3 or None, "state": "PENDING" | "RUNNING" |
        "ERROR", "name": ..., "pid": int or None, "scheduler": "slurm" | "sge" |
        "pbs" | "lsf"}`` (PBS and LSF name array tasks ``1000[3]``).
        """
        state = read_state(self.path)
        return [
            {
                "id": task_label(state, task),
                "job_id": task["job_id"],
                "index": task["index"],
                "state": task["state"],
                "name": job_of(state, task)["name"],
                "pid": task["pid"],
                "scheduler": job_of(state, task)["scheduler"],
            }
            for task in state["tasks"]
        ]

    def kill_running(self, n: int) -> list[str]:
        """SIGKILL n running tasks, which leave the queue without writing more.

        Simulates a node failure or an administrator's scancel.  Returns the
        ids (as ``jobs()`` names them) of the tasks killed: fewer than n if
        fewer were running.
        """
        with transaction(self.path) as state:
            doomed = tasks_in(state, "RUNNING")[:n]
            labels = [task_label(state, task) for task in doomed]
            cancel_tasks(self.path, state, doomed)
        return labels

    def history(self) -> dict[str, int]:
        """Count the calls of each command so far, e.g. ``{"sbatch": 1, "squeue": 7}``.

        Calls rejected for bad arguments are not counted.
        """
        return dict(read_state(self.path)["history"])

    def runner_pid(self) -> int | None:
        """Return the pid of the queue's runner process, or None if none is alive."""
        with transaction(self.path) as state:
            return state["runner_pid"] if runner_alive(self.path) else None

    def wait_until_empty(self, timeout: float = 10.0) -> None:
        """Wait until no task is left in the queue and the runner has exited.

        Tasks in the error state never leave by themselves: cancel them first.
        Raises TimeoutError, listing what is left, after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with transaction(self.path) as state:
                left = [task_label(state, task) for task in state["tasks"]]
                if not left and not runner_alive(self.path):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self!r} not empty after {timeout} s: tasks {left}")
            time.sleep(_POLL_SECONDS)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel every task and wait for the runner to exit: a test's cleanup."""
        with transaction(self.path) as state:
            cancel_tasks(self.path, state, list(state["tasks"]))
        self.wait_until_empty(timeout)


def _plain(value: Any) -> Any:
    """Turn tuples into lists, as the JSON state would store them anyway."""
    return list(value) if isinstance(value, tuple) else value
