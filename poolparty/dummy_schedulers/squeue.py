"""Dummy ``squeue``: list the tasks of a fake queue, SLURM style.

``python -m poolparty.dummy_schedulers.squeue --queue DIR [-h] [-r] [--me] [--name=N,...]
[--format=FMT]``

The pool calls ``squeue --noheader --array --me --name=NAME --format=%i|%T|%r``.
"""

from __future__ import annotations

import argparse
import re
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import _clusters
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Job, Task, is_throttled, job_of, running_counts
from ._ranges import slurm_range_string
from ._state import State, read_state

DEFAULT_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
_FIELD = re.compile(r"%(\.)?(\d*)([a-zA-Z])")


@dataclass
class Row:
    """One output line: a task, or the pending tasks of an array collapsed."""

    task: Task  # the task whose state, reason, name... the line shows
    job: Job
    job_id: str  # %i
    array_job_id: str  # %A
    array_task_id: str  # %a
    reason: str

    @property
    def state(self) -> str:
        """SLURM's name for the state: an error-state task is held PENDING."""
        return "PENDING" if self.task["state"] == "ERROR" else str(self.task["state"])


# code: (header, value of a row)
_FIELDS: dict[str, tuple[str, Callable[[Row], str]]] = {
    "i": ("JOBID", lambda row: row.job_id),
    "A": ("ARRAY_JOB_ID", lambda row: row.array_job_id),
    "a": ("ARRAY_TASK_ID", lambda row: row.array_task_id),
    "j": ("NAME", lambda row: row.job["name"]),
    "u": ("USER", lambda row: row.job["owner"]),
    "P": ("PARTITION", lambda row: row.job["partition"]),
    "T": ("STATE", lambda row: row.state),
    "t": ("ST", lambda row: "R" if row.state == "RUNNING" else "PD"),
    "r": ("REASON", lambda row: row.reason),
    "M": ("TIME", lambda row: _elapsed(row.task)),
    "D": ("NODES", lambda row: "1"),
    "R": ("NODELIST(REASON)",
          lambda row: socket.gethostname() if row.state == "RUNNING" else f"({row.reason})"),
}


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like squeue's."""
    parser = ArgumentParser("squeue")
    parser.add_argument("-h", "--noheader", action="store_true")
    parser.add_argument("-r", "--array", action="store_true")
    parser.add_argument("--me", action="store_true")
    parser.add_argument("-n", "--name", default=None)
    parser.add_argument("-o", "--format", default=DEFAULT_FORMAT)
    _clusters.add_option(parser)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the arguments, rejecting format codes the dummy cannot fill."""
    args = _parser().parse_args(argv)
    args.cluster_names = _clusters.named("squeue", args)
    for _, _, code in _FIELD.findall(args.format):
        if code not in _FIELDS:
            raise CommandError(f"squeue: error: Invalid job format specification: {code}")
    return args


def show(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the queue, one line per row, in the requested format: the local
    cluster's jobs, or with ``--clusters`` each named cluster's after a
    ``CLUSTER: name`` line."""
    state = read_state(queue_dir)
    if args.cluster_names is None:
        return _show_cluster(state, args, _clusters.CLUSTERS[0])
    return "".join(f"CLUSTER: {cluster}\n" + _show_cluster(state, args, cluster)
                   for cluster in args.cluster_names)


def _show_cluster(state: State, args: argparse.Namespace, cluster: str) -> str:
    names = set(args.name.split(",")) if args.name else None
    rows = [
        row
        for row in _rows(state, one_per_task=args.array)
        if (names is None or row.job["name"] in names) and _clusters.cluster_of(row.job) == cluster
    ]
    rows.sort(key=lambda row: (row.job["partition"], row.state != "PENDING"))  # squeue's "P,t"
    lines = [] if args.noheader else [_format(args.format, lambda code: _FIELDS[code][0])]
    lines += [_format(args.format, partial(_value, row)) for row in rows]
    return "".join(line + "\n" for line in lines)


def _value(row: Row, code: str) -> str:
    """The text of field ``code`` for a row."""
    return _FIELDS[code][1](row)


def _rows(state: State, one_per_task: bool) -> list[Row]:
    """One row per task; without ``--array``, the pending tasks of each array
    share one row like ``1000_[3-9%2]``, as the real squeue prints them."""
    reasons = _reasons(state)
    groups: dict[int, list[Task]] = defaultdict(list)
    if not one_per_task:
        for task in state["tasks"]:
            if task["index"] is not None and task["state"] == "PENDING":
                groups[task["job_id"]].append(task)
    collapsed = {id(task) for group in groups.values() for task in group}
    rows = []
    for task in state["tasks"]:
        if id(task) not in collapsed:
            rows.append(_row(state, task, reasons[id(task)], str(task["index"])))
        elif task is groups[task["job_id"]][0]:
            indices = _bracketed(state, groups[task["job_id"]])
            rows.append(_row(state, task, reasons[id(task)], indices))
    return rows


def _row(state: State, task: Task, reason: str, index: str) -> Row:
    """The row of a task, or of a group of tasks whose indices are ``index``."""
    job, job_id = job_of(state, task), str(task["job_id"])
    if task["index"] is None:
        return Row(task, job, job_id, job_id, "N/A", reason)
    return Row(task, job, f"{job_id}_{index}", job_id, index, reason)


def _bracketed(state: State, tasks: list[Task]) -> str:
    """Array indices of collapsed pending tasks, as ``[3-9,12%2]``."""
    throttle = job_of(state, tasks[0])["throttle"]
    suffix = f"%{throttle}" if throttle else ""
    return f"[{slurm_range_string([task['index'] for task in tasks])}{suffix}]"


def _reasons(state: State) -> dict[int, str]:
    """Why each task is in its state, keyed by ``id(task)``, as SLURM explains it.

    The first task waiting for a free slot waits for "Resources", the ones
    behind it for "Priority"; a freshly queued task not yet considered by the
    scheduler shows "None".
    """
    running, per_job = running_counts(state)
    slots_full = running >= state["config"]["slots"]
    reasons: dict[int, str] = {}
    waiting = 0
    for task in state["tasks"]:
        if task["state"] == "RUNNING":
            reasons[id(task)] = "None"
        elif task["state"] == "ERROR":
            reasons[id(task)] = "launch failed requeued held"
        elif is_throttled(state, task, per_job):
            reasons[id(task)] = "JobArrayTaskLimit"
        elif slots_full:
            reasons[id(task)] = "Priority" if waiting else "Resources"
            waiting += 1
        else:
            reasons[id(task)] = "None"
    return reasons


def _format(spec: str, value: Callable[[str], str]) -> str:
    """Fill a squeue format: ``%.18i`` right-justifies to 18 columns, ``%18i``
    left-justifies, both truncate; ``%i`` prints the value as it is."""

    def field(match: re.Match[str]) -> str:
        right, width, code = match.groups()
        text = value(code)
        if not width:
            return text
        text = text[: int(width)]
        return text.rjust(int(width)) if right else text.ljust(int(width))

    return _FIELD.sub(field, spec)


def _elapsed(task: Task) -> str:
    """Run time as squeue prints it: ``M:SS``, ``H:MM:SS`` or ``D-HH:MM:SS``."""
    seconds = int(time.time() - task["start_time"]) if task["start_time"] else 0
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}-{hours:02}:{minutes:02}:{seconds:02}"
    if hours:
        return f"{hours}:{minutes:02}:{seconds:02}"
    return f"{minutes}:{seconds:02}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy squeue; returns the exit code."""
    return run_command("squeue", argv, parse, show)


if __name__ == "__main__":
    raise SystemExit(main())
