"""Dummy ``bkill``: kill jobs or array elements of a fake queue, IBM LSF style.

``python -m poolparty.dummy_schedulers.bkill --queue DIR JOBID | "JOBID[INDEX]" ...``

Each one killed is reported ``Job <1000[3]> is being terminated`` on stdout; a job that
ended is ``Job <1000>: Job has already finished`` and one never submitted ``Job <1000>:
No matching job found``, on stderr, as LSF says them.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import cancel_tasks, select_tasks, task_label, was_submitted
from ._state import transaction

_TARGET = re.compile(r"(\d+)(?:\[(\d+)\])?")


def parse(argv: list[str]) -> argparse.Namespace:
    """Job ids, each ``JOBID`` or ``JOBID[INDEX]``."""
    parser = ArgumentParser("bkill")
    parser.add_argument("ids", nargs="+")
    args = parser.parse_args(argv)
    args.targets = [(text, _TARGET.fullmatch(text)) for text in args.ids]
    return args


def kill(queue_dir: Path, args: argparse.Namespace) -> str:
    """Kill or dequeue the selected tasks and say so."""
    said, errors = [], []
    with transaction(queue_dir) as state:
        for text, match in args.targets:
            if match is None:
                errors.append(f"{text}: Illegal job ID.")
                continue
            job_id = int(match[1])
            tasks = select_tasks(state, job_id, None if match[2] is None else {int(match[2])})
            if not tasks:
                why = ("Job has already finished" if was_submitted(state, job_id)
                       else "No matching job found")
                errors.append(f"Job <{text}>: {why}")
            said += [f"Job <{task_label(state, task)}> is being terminated\n" for task in tasks]
            cancel_tasks(queue_dir, state, tasks)
    if errors:
        raise CommandError("\n".join(errors), stdout="".join(said))
    return "".join(said)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy bkill; returns the exit code."""
    return run_command("bkill", argv, parse, kill, scheduler="lsf")


if __name__ == "__main__":
    raise SystemExit(main())
