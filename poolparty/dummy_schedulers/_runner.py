"""The detached "scheduler daemon" of one fake queue: it really runs the tasks.

Started by ``sbatch``/``qsub`` when no runner is alive (see
``_jobs.ensure_runner``), it polls the state every few milliseconds: it
removes tasks whose process ended, kills tasks whose injected deadline came,
and starts pending tasks while slots and array throttles allow.  It stops by
itself as soon as nothing is pending or running, so tests leave no process
behind; the next submission starts a new one.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._flavours import flavour_of
from ._jobs import (
    Task,
    cancel_tasks,
    is_throttled,
    job_of,
    kill_group,
    process_exists,
    remove_tasks,
    running_counts,
    tasks_in,
)
from ._state import ALIVE_LOCK_FILE, STATE_FILE, State, transaction

# How often to look for a reason to schedule (cheap: a stat and a waitpid per child).
POLL_SECONDS = 0.005
# Schedule at least this often even without a visible reason: a safety net
# for changes the file signature cannot show, and for tasks that are not our
# children (left by a runner that died).
MAX_IDLE_SECONDS = 0.1


class Runner:
    """Owns the processes of the running tasks of one queue."""

    def __init__(self, queue_dir: Path, lock_fd: int) -> None:
        self.queue_dir = queue_dir
        self.lock_fd = lock_fd  # the runner lock: we schedule the queue while we hold it
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.seen_signature: tuple[int, ...] = ()  # of the state we last read
        self.wake_at = 0.0  # time of the next scheduling round, at the latest
        self.memory_look_at = 0.0  # when to look at the tasks' memory next

    def run(self) -> None:
        """Schedule until the queue has nothing left to run.

        Reading the whole state every few milliseconds would cost a good
        share of a core, so between rounds we only watch for what can make
        a round useful: the state file changing, a child exiting, a deadline.
        """
        hold_until_exit(self.queue_dir / ALIVE_LOCK_FILE)
        while True:
            # Taken before the round reads the state: a change made after it
            # is either read by this round or differs from this signature.
            self.seen_signature = self.state_signature()
            if not self.seen_signature:
                self.abandon()
                return
            if not self.tick():
                return
            while not self.round_due():
                time.sleep(POLL_SECONDS)

    def state_signature(self) -> tuple[int, ...]:
        """Identify the current version of the state file, without reading it;
        () once the queue was deleted."""
        try:
            stat = os.stat(self.queue_dir / STATE_FILE)
        except FileNotFoundError:
            return ()
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def abandon(self) -> None:
        """Kill our tasks: their queue was deleted (say, an old test's tmp dir)."""
        for pid, child in self.children.items():
            kill_group(pid)
            child.wait()

    def round_due(self) -> bool:
        """Tell whether something happened that the next round should handle."""
        return (
            time.time() >= self.wake_at
            or self.state_signature() != self.seen_signature
            or any(child.poll() is not None for child in self.children.values())
        )

    def tick(self) -> bool:
        """Do one round of scheduling; return False once the runner has stopped."""
        with transaction(self.queue_dir) as state:
            self.reap(state)
            self.enforce_deadlines(state)
            self.enforce_memory(state)
            self.start_ready(state)
            deadlines = [task["kill_at"] for task in tasks_in(state, "RUNNING") if task["kill_at"]]
            if any(job.get("memory_limit") for job in state["jobs"].values()):
                deadlines.append(self.memory_look_at)
            self.wake_at = min([time.time() + MAX_IDLE_SECONDS, *deadlines])
            if tasks_in(state, "PENDING", "RUNNING") or self.children:
                return True
            # Release the runner lock while still holding the state lock: a
            # submission that comes after us must find no runner and start one.
            os.close(self.lock_fd)
            return False

    def reap(self, state: State) -> None:
        """Remove the tasks whose process ended, and any process they left behind."""
        exited = {pid for pid, child in self.children.items() if child.poll() is not None}
        for pid in exited:
            del self.children[pid]
        ended = [
            task
            for task in tasks_in(state, "RUNNING")
            if task["pid"] is not None  # None: a stuck task, which never ends by itself
            and (
                task["pid"] in exited
                # a task started by an earlier runner that died: not our child
                or (task["pid"] not in self.children and not process_exists(task["pid"]))
            )
        ]
        for task in ended:
            kill_group(task["pid"])  # a batch job's leftovers die with it
        remove_tasks(self.queue_dir, state, ended)

    def enforce_deadlines(self, state: State) -> None:
        """Kill the tasks an injected ``kill_after`` fault has doomed by now, and those
        past their job's time limit (SLURM says so in the job's log, SGE does not)."""
        now = time.time()
        doomed = [
            task
            for task in tasks_in(state, "RUNNING")
            if task["kill_at"] is not None and task["kill_at"] <= now
        ]
        for task in doomed:
            job = job_of(state, task)
            says = flavour_of(job).time_limit_line
            if task.get("kill_reason") == "time" and says is not None:
                note(task, says(task["task_job_id"], job["time_limit"]))
        cancel_tasks(self.queue_dir, state, doomed)

    def enforce_memory(self, state: State) -> None:
        """Kill the tasks whose processes hold more memory than their job asked for
        (as SLURM's OverMemoryKill, PBS's MoM and LSF's per-job limit do: they look now
        and then, and write why into the job's log). SGE's h_vmem is a resource limit
        (launch)."""
        if time.time() < self.memory_look_at:
            return
        self.memory_look_at = time.time() + MEMORY_LOOK_SECONDS
        doomed = []
        for task in tasks_in(state, "RUNNING"):
            job = job_of(state, task)
            limit = job.get("memory_limit")
            says = flavour_of(job).memory_line
            if limit is None or says is None or task["pid"] is None:
                continue
            used = group_memory(task["pid"])
            if used > limit:
                note(task, says(task["task_job_id"], used, limit))
                doomed.append(task)
        cancel_tasks(self.queue_dir, state, doomed)

    def start_ready(self, state: State) -> None:
        """Start pending tasks in queue order while slots and throttles allow."""
        running, per_job = running_counts(state)
        vanished = []
        for task in tasks_in(state, "PENDING"):
            if running >= state["config"]["slots"]:
                break
            if is_throttled(state, task, per_job):
                continue
            failure = take_start_fault(state) or self.launch(state, task)
            if failure == "error_state":
                task["state"] = "ERROR"
            elif failure == "vanish":
                vanished.append(task)
            elif failure == "stuck":
                task.update(state="RUNNING", pid=None, start_time=time.time(), kill_at=None)
                running += 1
                per_job[task["job_id"]] += 1
            else:
                running += 1
                per_job[task["job_id"]] += 1
        remove_tasks(self.queue_dir, state, vanished)

    def launch(self, state: State, task: Task) -> str | None:
        """Start a task's process and return None; if it cannot even start,
        return how the real scheduler fails such a task (its flavour's launch_failure:
        a missing output or working directory puts an SGE task in the error state,
        Eqw, while SLURM drops the job)."""
        job = job_of(state, task)
        flavour = flavour_of(job)
        address_space = job.get("memory_limit") if flavour.memory_line is None else None
        try:
            with open(task["output"], "ab" if job["append_output"] else "wb") as output:
                child = subprocess.Popen(
                    job["command"],
                    cwd=job["cwd"],
                    env={**job["env"], **task["env"]},
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, to kill it whole
                    # SGE's h_vmem: a limit of the address space, set before it starts
                    preexec_fn=None if address_space is None else (
                        lambda: resource.setrlimit(resource.RLIMIT_AS,
                                                   (address_space, address_space))),
                )
        except OSError as error:
            print(f"runner: cannot start task {task['job_id']}.{task['index']}: {error}",
                  file=sys.stderr, flush=True)
            return flavour.launch_failure
        self.children[child.pid] = child
        task.update(state="RUNNING", pid=child.pid, start_time=time.time())
        kill_after = state["faults"]["kill_after"]
        if kill_after:
            seconds, count = kill_after
            task["kill_at"] = task["start_time"] + seconds
            state["faults"]["kill_after"] = [seconds, count - 1] if count > 1 else None
        limit = job.get("time_limit")
        if limit is not None and (task["kill_at"] is None
                                  or task["start_time"] + limit < task["kill_at"]):
            task.update(kill_at=task["start_time"] + limit, kill_reason="time")
        return None


#: how often the memory of tasks with a watched memory limit is looked at
MEMORY_LOOK_SECONDS = 0.25


def note(task: Task, line: str) -> None:
    """Append what the scheduler says of a task to its log."""
    try:
        with open(task["output"], "a") as output:
            output.write(line + "\n")
    except OSError:
        pass


def group_memory(group: int) -> int:
    """Bytes resident in the processes of a process group."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command: state, ppid, pgrp, ... rss is the 24th field of the line
        if len(fields) > 21 and int(fields[2]) == group:
            total += int(fields[21]) * page
    return total


def hold_until_exit(path: Path) -> None:
    """Lock ``path`` for the rest of this process's life, so that others can
    tell when it is really gone (the kernel drops the lock at exit).

    Blocks while a previous runner is still exiting: they never overlap.
    """
    fcntl.flock(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), fcntl.LOCK_EX)


def take_start_fault(state: State) -> str | None:
    """Use up one injected start fault: ``"error_state"``, ``"vanish"``, ``"stuck"``
    or None."""
    faults = state["faults"]
    if faults["error_state"] > 0:
        faults["error_state"] -= 1
        return "error_state"
    if faults["vanish"] > 0:
        faults["vanish"] -= 1
        return "vanish"
    if faults.get("stuck", 0) > 0:
        faults["stuck"] -= 1
        return "stuck"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m poolparty.dummy_schedulers._runner``."""
    parser = argparse.ArgumentParser(prog="dummy-scheduler-runner")
    parser.add_argument("--queue", type=Path, required=True)
    parser.add_argument("--lock-fd", type=int, required=True)
    args = parser.parse_args(argv)
    Runner(args.queue, args.lock_fd).run()


if __name__ == "__main__":
    main()
