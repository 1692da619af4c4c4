"""Dummy ``bjobs -json -o "FIELDS"``: list a fake queue in the JSON of IBM LSF 10.1.

``python -m poolparty.dummy_schedulers.bjobs --queue DIR -json -o "jobid jobindex stat
exit_code job_name" [-J NAME] [-a]``

Each array element is one record (``JOBINDEX`` 3, ``JOB_NAME`` ``name[3]``); a plain
job has ``JOBINDEX`` 0. With no job to show it prints ``No unfinished job found`` on
stderr and nothing on stdout, as LSF does. Finished jobs leave the queue at once here
(no ``CLEAN_PERIOD``), so ``-a`` shows what it shows without.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Job, Task, job_of
from ._state import read_state

#: the STAT LSF shows for a task of the dummy queue: an error-state task is a ZOMBI
#: (killed on a host that is gone: it never ends by itself)
STATS = {"PENDING": "PEND", "RUNNING": "RUN", "ERROR": "ZOMBI"}

FIELDS: dict[str, Callable[[Task, Job], str]] = {
    "jobid": lambda task, job: str(task["job_id"]),
    "jobindex": lambda task, job: str(task["index"] or 0),
    "stat": lambda task, job: STATS[task["state"]],
    "exit_code": lambda task, job: "",
    "job_name": lambda task, job: (job["name"] if task["index"] is None
                                   else f"{job['name']}[{task['index']}]"),
    "queue": lambda task, job: job["partition"],
    "user": lambda task, job: job["owner"],
}


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept the customized JSON output, the one format the dummy writes."""
    parser = ArgumentParser("bjobs")
    parser.add_argument("-json", action="store_true")
    parser.add_argument("-o", dest="format", default=None)
    parser.add_argument("-J", dest="name", default=None)
    parser.add_argument("-a", dest="all", action="store_true")
    args = parser.parse_args(argv)
    if not args.json or args.format is None:
        raise CommandError("bjobs: the dummy only supports bjobs -json -o \"FIELDS\"")
    args.fields = args.format.lower().split()
    unknown = [field for field in args.fields if field not in FIELDS]
    if unknown:
        raise CommandError(f"{unknown[0]}: Illegal field name. Job not found.")
    return args


def show(queue_dir: Path, args: argparse.Namespace) -> str:
    """The queue's tasks (those named ``-J``) as bjobs -json writes them."""
    state = read_state(queue_dir)
    records = [[(field.upper(), FIELDS[field](task, job_of(state, task)))
                for field in args.fields]
               for task in state["tasks"]
               if args.name is None or job_of(state, task)["name"] == args.name]
    if not records:
        print("No unfinished job found", file=sys.stderr)
        return ""
    return json_text(records)


def json_text(records: list[list[tuple[str, str]]]) -> str:
    """LSF's layout: two spaces an indent level, no space after a colon."""
    bodies = [",\n".join(f"      {json.dumps(key)}:{json.dumps(value)}" for key, value in record)
              for record in records]
    return ('{\n  "COMMAND":"bjobs",\n  "JOBS":' + str(len(records)) + ',\n  "RECORDS":[\n'
            + ",\n".join("    {\n" + body + "\n    }" for body in bodies) + "\n  ]\n}\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy bjobs; returns the exit code."""
    return run_command("bjobs", argv, parse, show, scheduler="lsf")


if __name__ == "__main__":
    raise SystemExit(main())
