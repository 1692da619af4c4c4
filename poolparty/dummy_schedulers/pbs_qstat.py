"""Dummy ``qstat -f -F json [-t]`` of PBS Professional / OpenPBS, and ``qstat --version``.

``python -m poolparty.dummy_schedulers.pbs_qstat --queue DIR -f -F json -t``

Prints the JSON of PBS 22.05 (``timestamp``, ``pbs_version``, ``pbs_server``, and
``Jobs`` keyed by job id, left out when no job is queued; tests/data/pbs/). An array
job is listed as ``1000[].server`` (state ``Q``, or ``B`` once a subjob began) and,
with ``-t``, each subjob as ``1000[3].server``. A task in the error state is shown as
PBS shows a job it gave up starting: held (``H``) by a system hold (``Hold_Types`` s).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..ranges import compress_ranges
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Job, Task
from ._state import read_state
from .pbs_qsub import server_name

PBS_VERSION = "22.05.11"

#: a task's state -> (job_state, Hold_Types, comment)
_STATES = {
    "PENDING": ("Q", "n", "Not Running: Insufficient amount of resource: ncpus"),
    "RUNNING": ("R", "n", "Job run at {start} on ({host}:ncpus=1)"),
    "ERROR": ("H", "s", "job held, too many failed attempts to run"),
}


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``--version``, or ``-f -F json`` with ``-t`` (subjobs) and ``-x`` (the
    dummy keeps no history: the same answer)."""
    if argv == ["--version"]:
        return argparse.Namespace(version=True)
    parser = ArgumentParser("qstat")
    parser.add_argument("-f", dest="full", action="store_true")
    parser.add_argument("-F", dest="format", choices=["json", "dsv"], default=None)
    parser.add_argument("-t", dest="subjobs", action="store_true")
    parser.add_argument("-x", dest="history", action="store_true")
    args = parser.parse_args(argv)
    if not args.full or args.format != "json":
        raise CommandError("qstat: the dummy only writes qstat -f -F json [-t]")
    args.version = False
    return args


def show(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the queue as ``qstat -f -F json [-t]`` does."""
    if args.version:
        return f"pbs_version = {PBS_VERSION}\n"
    state = read_state(queue_dir)
    records: dict[str, Any] = {}
    for job_id, job in state["jobs"].items():
        tasks = [task for task in state["tasks"] if str(task["job_id"]) == job_id]
        if tasks and tasks[0]["index"] is not None:
            records[f"{job_id}[].{server_name()}"] = _array(job, tasks)
            if args.subjobs:
                records.update((f"{job_id}[{task['index']}].{server_name()}",
                                _record(job, task, job_id)) for task in tasks)
        elif tasks:
            records[f"{job_id}.{server_name()}"] = _record(job, tasks[0], None)
    answer: dict[str, Any] = {"timestamp": int(time.time()), "pbs_version": PBS_VERSION,
                              "pbs_server": server_name()}
    if records:
        answer["Jobs"] = records
    return json.dumps(answer, indent=4, separators=(",", ":")) + "\n"


def _common(job: Job) -> dict[str, Any]:
    """What every record of a job shows, subjobs included."""
    return {
        "Job_Name": job["name"],
        "Job_Owner": f"{job['owner']}@{server_name()}",
        "queue": job["partition"],
        "server": server_name(),
        "ctime": time.ctime(job["submit_time"]),
        "Join_Path": "oe",
        "Resource_List": {"ncpus": 1, "nodect": 1, "place": "pack", "select": "1:ncpus=1"},
        "project": "_pbs_project_default",
    }


def _record(job: Job, task: Task, array_job: str | None) -> dict[str, Any]:
    """One job's, or one subjob's, record."""
    code, holds, comment = _STATES[task["state"]]
    record = {**_common(job), "job_state": code, "Hold_Types": holds,
              "Output_Path": f"{server_name()}:{task['output']}"}
    if task["start_time"] is not None:
        record["stime"] = time.ctime(task["start_time"])
    record["comment"] = comment.format(
        start=time.strftime("%a %b %-d at %H:%M", time.localtime(task["start_time"] or 0)),
        host=server_name())
    if array_job is not None:
        record.update(array_id=f"{array_job}[].{server_name()}", array_index=task["index"])
    return record


def _array(job: Job, tasks: list[Task]) -> dict[str, Any]:
    """An array job's own record: its subjobs summed up."""
    queued = [task["index"] for task in tasks if task["state"] != "RUNNING"]
    running = len(tasks) - len(queued)
    began = running > 0 or _submitted(job) != len(tasks)
    return {**_common(job), "job_state": "B" if began else "Q", "Hold_Types": "n",
            "array": "True",
            "array_state_count": f"Queued:{len(queued)} Running:{running} Exiting:0 "
                                 f"Expired:{_submitted(job) - len(tasks)} ",
            "array_indices_submitted": job.get("array_indices", ""),
            "array_indices_remaining": compress_ranges(queued)}


def _submitted(job: Job) -> int:
    """How many subjobs the array had when submitted."""
    return int(job.get("subjobs", 0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qstat; returns the exit code."""
    return run_command("qstat", argv, parse, show, scheduler="pbs")


if __name__ == "__main__":
    raise SystemExit(main())
