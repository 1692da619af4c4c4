"""Dummy ``bsub``: queue a command (or a job array) on a fake queue, IBM LSF style.

``python -m poolparty.dummy_schedulers.bsub --queue DIR -J "NAME[1-N]%K" -o PATH
[-q normal] [-W [HOUR:]MINUTE] [-M SIZE] [-n N] [-R REQ] [-gpu SPEC] COMMAND [ARGS...]``

As LSF does, it runs the command line in the submitter's directory and environment,
stdout and stderr (no ``-e``) appended to the ``-o`` file, where ``%J`` is the job id and
``%I`` the array index; it prints ``Job <1000> is submitted to queue <normal>.``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..escalation import memory_bytes
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import add_job, allocate_job_ids, new_job, new_task
from ._ranges import parse_range_list
from ._state import State, transaction

QUEUES = ("normal",)
#: LSF's default for the largest array index (lsb.params)
MAX_JOB_ARRAY_SIZE = 1000
_ARRAY_NAME = re.compile(r"(?P<name>[^\[\]]*)(?:\[(?P<spec>[^\]]*)\])?(?:%(?P<limit>\d+))?")
_RUN_LIMIT = re.compile(r"(?:(\d+):)?(\d+)")


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like bsub's."""
    parser = ArgumentParser("bsub")
    parser.add_argument("-J", dest="name", default=None)
    parser.add_argument("-o", dest="output", required=True)
    parser.add_argument("-q", dest="queue", default=None)
    parser.add_argument("-W", dest="run_limit", default=None)
    parser.add_argument("-M", dest="memory", default=None)
    parser.add_argument("-n", dest="slots", type=int, default=1)
    parser.add_argument("-R", dest="requirements", action="append", default=[])
    parser.add_argument("-gpu", dest="gpu", default=None)
    parser.add_argument("-P", dest="project", default=None)
    parser.add_argument("command")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the arguments as bsub does before contacting mbatchd."""
    args = _parser().parse_args(argv)
    args.job_name, args.indices, args.throttle = _parse_name(args.name or args.command)
    args.time_limit = _run_limit_seconds(args.run_limit)
    args.memory_limit = None
    if args.memory is not None:
        args.memory_limit = memory_bytes(args.memory, 1024)  # a bare number: KB
        if args.memory_limit is None:
            raise CommandError(f"{args.memory}: Bad argument for option -M. Job not submitted.")
    return args


def _parse_name(text: str) -> tuple[str, list[int | None], int | None]:
    """``NAME``, or ``NAME[1-10,12:2]%K``: the name, the indices (1 and up) and the
    throttle. A plain job is one task with index None."""
    match = _ARRAY_NAME.fullmatch(text)
    if match is None:
        raise CommandError(f"{text}: Bad job name. Job not submitted.")
    if match["spec"] is None:
        return match["name"], [None], None
    try:
        indices: list[int | None] = list(parse_range_list(match["spec"]))
    except ValueError:
        indices = []
    if not indices or min(index for index in indices if index is not None) < 1:
        raise CommandError("Bad job array index list. Job not submitted.")
    return match["name"], indices, int(match["limit"]) if match["limit"] else None


def _run_limit_seconds(text: str | None) -> float | None:
    """``-W [hour:]minute`` in seconds."""
    if text is None:
        return None
    match = _RUN_LIMIT.fullmatch(text)
    if match is None:
        raise CommandError(f"{text}: Bad RUNLIMIT specification. Job not submitted.")
    return float((int(match[1] or 0) * 60 + int(match[2])) * 60)


def submit(queue_dir: Path, args: argparse.Namespace) -> str:
    """Queue the job and say so, as bsub does."""
    queue = args.queue or QUEUES[0]
    if queue not in QUEUES:
        raise CommandError(f"{queue}: No such queue. Job not submitted.")
    with transaction(queue_dir) as state:
        _check_array_size(state, args)
        job_id = allocate_job_ids(state, 1)
        cwd = os.getcwd()
        job = new_job(
            scheduler="lsf",
            name=args.job_name,
            partition=queue,
            command=[args.command, *args.args],  # a command line, not a spooled script
            cwd=cwd,
            env=_job_env(args, job_id, queue, cwd),
            throttle=args.throttle,
            step=1,
            slots=args.slots,
            append_output=True,  # -o appends (-oo would overwrite)
            time_limit=args.time_limit,
            memory_limit=args.memory_limit,
        )
        tasks = [new_task(job_id, index, job_id,
                          os.path.join(cwd, _expand_path(args.output, job_id, index)),
                          _task_env(args.job_name, index))
                 for index in args.indices]
        add_job(queue_dir, state, job_id, job, tasks, b"")
    return f"Job <{job_id}> is submitted to queue <{queue}>.\n"


def _check_array_size(state: State, args: argparse.Namespace) -> None:
    """Refuse an index above MAX_JOB_ARRAY_SIZE, as mbatchd does."""
    largest = max((index for index in args.indices if index is not None), default=0)
    if largest > state["config"].get("max_job_array_size", MAX_JOB_ARRAY_SIZE):
        raise CommandError("Job array index too large. Job not submitted.")


def _job_env(args: argparse.Namespace, job_id: int, queue: str, cwd: str) -> dict[str, str]:
    """The LSF variables shared by all elements of a job."""
    env = {"LSB_JOBID": str(job_id), "LSB_QUEUE": queue, "LS_SUBCWD": cwd,
           "LSB_DJOB_NUMPROC": str(args.slots), "LSB_MAX_NUM_PROCESSORS": str(args.slots)}
    if args.gpu is not None:  # the devices a job sees, as LSF's GPU support sets them
        count = re.match(r"(?:num=)?(\d+)", args.gpu)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, range(int(count[1]) if count else 1)))
    return env


def _task_env(name: str, index: int | None) -> dict[str, str]:
    """The variables that differ between elements: LSB_JOBINDEX is 0 outside arrays."""
    return {"LSB_JOBINDEX": str(index or 0),
            "LSB_JOBNAME": name if index is None else f"{name}[{index}]"}


def _expand_path(pattern: str, job_id: int, index: int | None) -> str:
    """Replace bsub's ``%J`` (job id) and ``%I`` (array index, 0 outside arrays)."""
    return pattern.replace("%J", str(job_id)).replace("%I", str(index or 0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy bsub; returns the exit code."""
    return run_command("bsub", argv, parse, submit, scheduler="lsf")


if __name__ == "__main__":
    raise SystemExit(main())
