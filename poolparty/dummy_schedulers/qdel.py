"""Dummy ``qdel``: delete jobs or array tasks of a fake queue, SGE style.

``python -m poolparty.dummy_schedulers.qdel --queue DIR [-t RANGE] JOBID[.TASKRANGE] ...``
"""

from __future__ import annotations

import argparse
import getpass
import re
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Task, cancel_tasks, select_tasks, task_label
from ._ranges import parse_range_list
from ._state import State, transaction

_JOB_ID = re.compile(r"(\d+)(?:\.(.+))?")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the arguments into ``args.targets``: ``(text, job_id or None, indices or None)``.

    Anything that is not a job id is kept with job_id None: qdel then
    reports that such a job does not exist, as SGE does.
    """
    parser = ArgumentParser("qdel")
    parser.add_argument("-t", dest="tasks", default=None)
    parser.add_argument("ids", nargs="+")
    args = parser.parse_args(argv)
    args.targets = [_parse_target(text, args.tasks) for text in args.ids]
    return args


def _parse_target(text: str, tasks: str | None) -> tuple[str, int | None, set[int] | None]:
    """Split ``JOBID[.TASKRANGE]``; ``-t RANGE`` applies where no range is given."""
    match = _JOB_ID.fullmatch(text)
    if not match:
        return text, None, None
    ranges = match[2] or tasks
    try:
        indices = set(parse_range_list(ranges)) if ranges else None
    except ValueError:
        raise CommandError(f'qdel: ERROR! invalid task range "{ranges}"') from None
    return text, int(match[1]), indices


def delete(queue_dir: Path, args: argparse.Namespace) -> str:
    """Kill or dequeue the selected tasks and say so, as qdel does."""
    messages, errors = [], []
    with transaction(queue_dir) as state:
        for text, job_id, indices in args.targets:
            tasks = [] if job_id is None else select_tasks(state, job_id, indices)
            if not tasks:
                errors.append(f'denied: job "{text}" does not exist')
            messages += [_deleted_message(state, task) for task in tasks]
            cancel_tasks(queue_dir, state, tasks)
    if errors:
        raise CommandError("\n".join(errors), stdout="".join(messages))
    return "".join(messages)


def _deleted_message(state: State, task: Task) -> str:
    """qdel's report: running tasks are "registered for deletion", waiting ones "deleted"."""
    user = getpass.getuser()
    what = "job" if task["index"] is None else "job-array task"
    label = task_label(state, task)
    if task["state"] == "RUNNING":
        return f"{user} has registered the {what} {label} for deletion\n"
    return f"{user} has deleted {what} {label}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qdel; returns the exit code."""
    return run_command("qdel", argv, parse, delete)


if __name__ == "__main__":
    raise SystemExit(main())
