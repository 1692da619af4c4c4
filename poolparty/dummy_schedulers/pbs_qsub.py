"""Dummy ``qsub`` of PBS Professional / OpenPBS: queue a job or an array job (``-J``).

``python -m poolparty.dummy_schedulers.pbs_qsub --queue DIR [qsub options] SCRIPT``
``python -m poolparty.dummy_schedulers.pbs_qsub --queue DIR [qsub options] -- PROGRAM [ARGS...]``

As PBS's qsub (qsub(1B)): a script takes no arguments, a program after ``--`` does;
the job starts in the user's home directory (``PBS_O_WORKDIR`` names the submitter's);
``^array_index^`` in ``-o`` becomes each subjob's index; it prints ``1000[].server``
for an array and ``1000.server`` for a job. ``walltime`` and ``mem`` (job-wide, or of
the ``select`` chunk) are enforced as PBS's MoM does: killed, with its line in the log.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from ..escalation import duration_seconds, memory_bytes
from ..ranges import compress_ranges
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import add_job, allocate_job_ids, new_job, new_task, spool_path
from ._ranges import expand, parse_range
from ._state import transaction

QUEUES = ("workq",)
#: the placeholder PBS replaces in an array's -o and -e paths
ARRAY_INDEX = "^array_index^"


def server_name() -> str:
    """The PBS server's name, which ends every job id: this host's short name."""
    return socket.gethostname().split(".")[0]


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like qsub's."""
    parser = ArgumentParser("qsub")
    parser.add_argument("-N", dest="name", default=None)
    parser.add_argument("-o", dest="output", default=None)
    parser.add_argument("-e", dest="error", default=None)
    parser.add_argument("-j", dest="join", choices=["oe", "eo", "n"], default="n")
    parser.add_argument("-k", dest="keep", default="n")
    parser.add_argument("-J", dest="range", default=None)
    parser.add_argument("-q", dest="queue", default=None)
    parser.add_argument("-A", dest="account", default=None)
    parser.add_argument("-P", dest="project", default=None)
    parser.add_argument("-l", dest="resources", action="append", default=[])
    parser.add_argument("-V", dest="export_env", action="store_true")
    parser.add_argument("script", nargs="?", default=None)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the arguments as qsub does before contacting the server."""
    options, program = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if (
        "--" in argv) else (argv, [])
    args = _parser().parse_args(options)
    if program and args.script is not None:
        raise CommandError("qsub: a script and a program after -- may not both be given")
    if not program and args.script is None:
        raise CommandError("qsub: the dummy reads no job from standard input")
    args.program = program
    args.range = _parse_array(args.range)
    args.resources = _resources(args.resources)
    args.time_limit = _walltime(args.resources.get("walltime"))
    args.memory_limit = None if "mem" not in args.resources else _size(args.resources["mem"])
    args.script_bytes = b"" if program else _read_script(args.script)
    if args.join != "oe" and args.output is not None:
        raise CommandError("qsub: the dummy writes a job's output and error to one file: "
                           "give -j oe")
    return args


def _read_script(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        raise CommandError(f"qsub: script file:: No such file or directory {path}") from None


def _parse_array(spec: str | None) -> tuple[int, int, int] | None:
    """``-J X-Y[:Z]``: indices from X >= 0, at least two subjobs (qsub(1B))."""
    if spec is None:
        return None
    try:
        first, last, step = parse_range(spec)
    except ValueError:
        first = last = 0
    if last <= first:
        raise CommandError("qsub: illegal -J value")
    return first, last, step


def _resources(items: list[str]) -> dict[str, str]:
    """``-l name=value,...`` and ``-l select=1:name=value:...`` as one dict: the job's
    one chunk's resources count as the job's here."""
    resources: dict[str, str] = {}
    for item in ",".join(items).split(","):
        name, _, value = item.partition("=")
        if name.strip() == "select":
            count, *chunk = value.split(":")
            if not count.isdigit():
                chunk = [count, *chunk]
            resources.update(part.partition("=")[::2] for part in chunk)
        elif name.strip():
            resources[name.strip()] = value.strip()
    return resources


def _walltime(value: str | None) -> float | None:
    """PBS's walltime (``hh:mm:ss``, ``mm:ss`` or seconds) in seconds."""
    if value is None:
        return None
    seconds = float(value) if value.isdigit() else (
        duration_seconds(value) if ":" in value else None)
    if seconds is None:
        raise CommandError("qsub: Illegal attribute or resource value Resource_List.walltime")
    return seconds


def _size(value: str) -> int:
    """A PBS size (``4gb``, ``500mb``; a bare number is bytes) in bytes."""
    size = memory_bytes(value, 1)
    if size is None:
        raise CommandError("qsub: Illegal attribute or resource value Resource_List.mem")
    return size


def submit(queue_dir: Path, args: argparse.Namespace) -> str:
    """Queue the job and print its id, as qsub does."""
    if args.queue is not None and args.queue not in QUEUES:
        raise CommandError("qsub: Unknown queue")
    if args.output is not None and ":" in args.output:
        raise CommandError("qsub: illegal -o value")
    indices: list[int | None] = list(expand(*args.range)) if args.range else [None]
    name = args.name or (os.path.basename(args.script) if args.script else "STDIN")
    with transaction(queue_dir) as state:
        if len(indices) > state["config"]["max_array_size"]:
            raise CommandError("qsub: Array job exceeds server or queue size limit")
        job_id = allocate_job_ids(state, 1)
        label = f"{job_id}[]" if args.range else str(job_id)
        job = new_job(
            scheduler="pbs", name=name, partition=args.queue or QUEUES[0],
            command=args.program or ["/bin/sh", str(spool_path(queue_dir, job_id))],
            cwd=os.path.expanduser("~"), env=_job_env(args, label, name), throttle=None,
            step=args.range[2] if args.range else 1, slots=1, append_output=False,
            time_limit=args.time_limit, memory_limit=args.memory_limit,
        )
        if args.range:  # what qstat shows of the array as a whole
            job.update(array_indices=compress_ranges(expand(*args.range)), subjobs=len(indices))
        tasks = [new_task(job_id, index, job_id, _output(args, job_id, index, name),
                          _task_env(job_id, index))
                 for index in indices]
        add_job(queue_dir, state, job_id, job, tasks, args.script_bytes)
    return f"{label}.{server_name()}\n"


def _job_env(args: argparse.Namespace, label: str, name: str) -> dict[str, str]:
    """The PBS variables shared by all subjobs of a job."""
    return {
        "PBS_JOBNAME": name,
        "PBS_O_WORKDIR": os.getcwd(),
        "PBS_O_HOST": socket.gethostname(),
        "PBS_QUEUE": args.queue or QUEUES[0],
        "PBS_ENVIRONMENT": "PBS_BATCH",
        **({"PBS_ARRAY_ID": f"{label}.{server_name()}"} if args.range else {}),
    }


def _task_env(job_id: int, index: int | None) -> dict[str, str]:
    """What differs per subjob: its id and index."""
    if index is None:
        return {"PBS_JOBID": f"{job_id}.{server_name()}"}
    return {"PBS_JOBID": f"{job_id}[{index}].{server_name()}", "PBS_ARRAY_INDEX": str(index)}


def _output(args: argparse.Namespace, job_id: int, index: int | None, name: str) -> str:
    """A subjob's output file: -o with ^array_index^ replaced, or PBS's default
    ``<name>.o<sequence number>[.<index>]`` in the submitter's directory."""
    if args.output is None:
        suffix = "" if index is None else f".{index}"
        return os.path.join(os.getcwd(), f"{name}.o{job_id}{suffix}")
    path = args.output if index is None else args.output.replace(ARRAY_INDEX, str(index))
    return os.path.abspath(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qsub; returns the exit code."""
    return run_command("qsub", argv, parse, submit, scheduler="pbs")


if __name__ == "__main__":
    raise SystemExit(main())
