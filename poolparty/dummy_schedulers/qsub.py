"""Dummy ``qsub``: queue a job script (or an array job) on a fake queue, SGE style.

``python -m poolparty.dummy_schedulers.qsub --queue DIR [qsub options] SCRIPT [ARGS...]``
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from ..escalation import duration_seconds, memory_bytes
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import add_job, allocate_job_ids, new_job, new_task, spool_path
from ._ranges import expand, parse_range
from ._state import transaction

QUEUES = ("all.q",)
_PSEUDO_VARIABLE = re.compile(r"\$(JOB_ID|TASK_ID|JOB_NAME|USER|HOME|HOSTNAME)")


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like qsub's."""
    parser = ArgumentParser("qsub")
    parser.add_argument("-terse", action="store_true")
    parser.add_argument("-N", dest="name", default=None)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("-j", dest="join", choices=["y", "yes"], required=True)
    parser.add_argument("-t", dest="tasks", default=None)
    parser.add_argument("-tc", dest="throttle", type=int, default=None)
    parser.add_argument("-q", dest="queue", default=None)
    parser.add_argument("-l", dest="resources", action="append", default=[])
    parser.add_argument("-pe", dest="pe", nargs=2, metavar=("PE", "SLOTS"), default=None)
    parser.add_argument("-wd", dest="workdir", default=None)
    parser.add_argument("-V", dest="export_env", action="store_true")
    parser.add_argument("-S", dest="shell", default="/bin/sh")
    parser.add_argument("-b", dest="binary", choices=["n", "no"], default="n")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the arguments as qsub does before contacting the qmaster."""
    args = _parser().parse_args(argv)
    args.range = _parse_tasks(args.tasks)
    if args.pe is not None and not args.pe[1].isdigit():
        raise CommandError(f'qsub: ERROR! invalid option argument "-pe {" ".join(args.pe)}"')
    try:
        args.script_bytes = Path(args.script).read_bytes()
    except OSError as error:
        raise CommandError(
            "Unable to read script file because of error: "
            f"error opening {args.script}: {error.strerror}"
        ) from None
    return args


def _parse_tasks(spec: str | None) -> tuple[int, int, int] | None:
    """Parse ``-t FIRST-LAST[:STEP]``; SGE task ids start at 1."""
    if spec is None:
        return None
    try:
        first, last, step = parse_range(spec)
    except ValueError:
        first = 0
    if first < 1:
        raise CommandError(f'qsub: ERROR! invalid option argument "-t {spec}"')
    return first, last, step


def submit(queue_dir: Path, args: argparse.Namespace) -> str:
    """Queue the job and print its id, as ``qsub [-terse]`` does."""
    if args.queue is not None and args.queue not in QUEUES:
        raise CommandError(
            "Unable to run job: Job was rejected because job requests unknown "
            f'queue "{args.queue}".\nExiting.'
        )
    name = args.name or os.path.basename(args.script)
    indices: list[int | None] = list(expand(*args.range)) if args.range else [None]
    with transaction(queue_dir) as state:
        job_id = allocate_job_ids(state, 1)
        # SGE replaces its pseudo variables in -wd too ($HOME: a directory that may not
        # exist, which puts the tasks in the error state)
        cwd = os.path.abspath(_substitute(args.workdir, job_id, None, name)
                              if args.workdir else os.path.expanduser("~"))
        job = new_job(
            scheduler="sge",
            name=name,
            partition=QUEUES[0],
            command=[args.shell, str(spool_path(queue_dir, job_id)), *args.args],
            cwd=cwd,
            env=_job_env(args, job_id, name, cwd),
            throttle=args.throttle,
            step=args.range[2] if args.range else 1,
            slots=int(args.pe[1]) if args.pe else 1,
            append_output=True,  # SGE appends to an existing output file
            time_limit=_resource_seconds(args.resources, "h_rt"),
            memory_limit=_resource_bytes(args.resources, "h_vmem"),
        )
        tasks = [
            new_task(
                job_id,
                index,
                job_id,
                os.path.join(cwd, _expand_path(args.output, job_id, index, name)),
                {"SGE_TASK_ID": "undefined" if index is None else str(index)},
            )
            for index in indices
        ]
        add_job(queue_dir, state, job_id, job, tasks, args.script_bytes)
    return _submitted_message(args, job_id, name)


def _resource(resources: list[str], name: str) -> str | None:
    """The value of ``-l name=value`` (the last one given), or None."""
    values = [item.partition("=")[2] for item in ",".join(resources).split(",")
              if item.partition("=")[0].strip() == name]
    return values[-1] if values else None


def _resource_seconds(resources: list[str], name: str) -> float | None:
    """A time resource (``h_rt=0:0:30`` or ``h_rt=30``) in seconds."""
    value = _resource(resources, name)
    if value is None:
        return None
    return float(value) if value.isdigit() else duration_seconds(value)


def _resource_bytes(resources: list[str], name: str) -> int | None:
    """A memory resource (``h_vmem=2G``; a bare number is bytes) in bytes."""
    value = _resource(resources, name)
    return None if value is None else memory_bytes(value, 1)


def _job_env(args: argparse.Namespace, job_id: int, name: str, cwd: str) -> dict[str, str]:
    """The SGE variables shared by all tasks of a job."""
    first, last, step = (str(value) for value in args.range) if args.range else ["undefined"] * 3
    return {
        "JOB_ID": str(job_id),
        "JOB_NAME": name,
        "SGE_TASK_FIRST": first,
        "SGE_TASK_LAST": last,
        "SGE_TASK_STEPSIZE": step,
        "SGE_O_WORKDIR": cwd,
        "NSLOTS": args.pe[1] if args.pe else "1",
        "QUEUE": QUEUES[0],
    }


def _expand_path(pattern: str, job_id: int, index: int | None, name: str) -> str:
    """Substitute qsub's ``$JOB_ID``-style pseudo variables in an ``-o`` path. As
    SGE 8.1 does, the path ends at a newline, and a colon or a comma is refused (they
    separate ``host:path`` and a list of paths); qsub has no escape for any of them."""
    pattern = pattern.split("\n")[0]
    if "," in pattern:
        raise CommandError("Unable to run job: ERROR! two files are specified for the same "
                           "host\nExiting.")
    if ":" in pattern:
        raise CommandError(f'Unable to run job: can\'t resolve hostname '
                           f'"{pattern.split(":")[0]}"\nExiting.')
    return _substitute(pattern, job_id, index, name)


def _substitute(pattern: str, job_id: int, index: int | None, name: str) -> str:
    """Replace qsub's pseudo variables: ``$JOB_ID $TASK_ID $JOB_NAME $USER $HOME
    $HOSTNAME``."""
    values = {
        "JOB_ID": str(job_id),
        "TASK_ID": "undefined" if index is None else str(index),
        "JOB_NAME": name,
        "USER": getpass.getuser(),
        "HOME": os.path.expanduser("~"),
        "HOSTNAME": socket.gethostname(),
    }
    return _PSEUDO_VARIABLE.sub(lambda match: values[match[1]], pattern)


def _submitted_message(args: argparse.Namespace, job_id: int, name: str) -> str:
    """What qsub prints: just the id with ``-terse``, a sentence otherwise."""
    if args.range is None:
        what, submitted = "job", str(job_id)
    else:
        first, last, step = args.range
        what, submitted = "job-array", f"{job_id}.{first}-{last}:{step}"
    if args.terse:
        return f"{submitted}\n"
    return f'Your {what} {submitted} ("{name}") has been submitted\n'


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qsub; returns the exit code."""
    return run_command("qsub", argv, parse, submit)


if __name__ == "__main__":
    raise SystemExit(main())
