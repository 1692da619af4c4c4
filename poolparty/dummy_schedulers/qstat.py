"""Dummy ``qstat -xml``: list a fake queue in the XML of SGE 8.1.9.

``python -m poolparty.dummy_schedulers.qstat --queue DIR -xml``

Running tasks are listed one ``job_list`` each under ``queue_info``; pending
tasks of a job are collapsed per state (``qw``, ``Eqw``) into one
``job_list`` under ``job_info`` whose ``tasks`` reads like ``5-20:1``.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Task, job_of
from ._ranges import sge_range_string
from ._state import State, read_state

_HEADER = (
    "<?xml version='1.0'?>\n"
    '<job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/'
    'util/resources/schemas/qstat/qstat.xsd">\n'
)

# What a real qstat showed for such tasks (tests/data/sge_qstat_xml*.txt).
_STATES = {"RUNNING": "r", "PENDING": "qw", "ERROR": "Eqw"}
_PRIORITIES = {"RUNNING": "0.50000", "PENDING": "0.00000", "ERROR": "0.25000"}


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``-xml``, the one output format the dummy writes."""
    parser = ArgumentParser("qstat")
    parser.add_argument("-xml", action="store_true")
    args = parser.parse_args(argv)
    if not args.xml:
        raise CommandError("qstat: error: the dummy only supports qstat -xml")
    return args


def show(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the whole queue as ``qstat -xml`` does."""
    state = read_state(queue_dir)
    running = [_job_list(state, [task]) for task in state["tasks"] if task["state"] == "RUNNING"]
    pending = [_job_list(state, tasks) for tasks in _pending_groups(state)]
    return (
        _HEADER
        + "  <queue_info>\n" + "".join(running) + "  </queue_info>\n"
        + "  <job_info>\n" + "".join(pending) + "  </job_info>\n"
        + "</job_info>\n"
    )


def _pending_groups(state: State) -> list[list[Task]]:
    """Group the waiting tasks by job and by state, as qstat collapses them."""
    groups: dict[tuple[int, str], list[Task]] = {}
    for task in state["tasks"]:
        if task["state"] != "RUNNING":
            groups.setdefault((task["job_id"], task["state"]), []).append(task)
    return list(groups.values())


def _job_list(state: State, tasks: list[Task]) -> str:
    """One ``job_list`` element: a running task, or a job's waiting tasks of one state."""
    task = tasks[0]
    job = job_of(state, task)
    running = task["state"] == "RUNNING"
    fields = [
        ("JB_job_number", str(task["job_id"])),
        ("JAT_prio", _PRIORITIES[task["state"]]),
        ("JB_name", job["name"]),
        ("JB_owner", job["owner"]),
        ("state", _STATES[task["state"]]),
        ("JAT_start_time" if running else "JB_submission_time",
         _timestamp(task["start_time"] if running else job["submit_time"])),
        ("queue_name", f"{job['partition']}@{socket.gethostname()}" if running else ""),
        ("slots", str(job["slots"])),
    ]
    if task["index"] is not None:
        fields.append(("tasks", sge_range_string([t["index"] for t in tasks], job["step"])))
    body = "".join(f"      <{tag}>{escape(value)}</{tag}>\n" for tag, value in fields)
    list_state = "running" if running else "pending"
    return f'    <job_list state="{list_state}">\n{body}    </job_list>\n'


def _timestamp(seconds: float) -> str:
    """SGE's local-time timestamps, like ``2020-08-15T19:44:26``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qstat; returns the exit code."""
    return run_command("qstat", argv, parse, show)


if __name__ == "__main__":
    raise SystemExit(main())
