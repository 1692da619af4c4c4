"""Dummy ``sbatch``: queue a batch script (or a job array) on a fake queue.

``python -m poolparty.dummy_schedulers.sbatch --queue DIR [sbatch options] SCRIPT [ARGS...]``
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..escalation import duration_seconds, memory_bytes
from . import _clusters
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import add_job, allocate_job_ids, new_job, new_task, spool_path
from ._ranges import parse_range_list
from ._state import State, transaction

PARTITIONS = ("debug",)
# SLURM prints this array index for a job that is not an array.
NO_ARRAY_INDEX = "4294967294"
_TIME = re.compile(r"(UNLIMITED|INFINITE|(\d+-)?\d+(:\d+){0,2})")
_MEMORY = re.compile(r"\d+[KMGT]?")
_GPUS = re.compile(r"(\w+:)?(\d+)")
_FILENAME_PATTERN = re.compile(r"%(\d*)([Aajxu%])")


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like sbatch's."""
    parser = ArgumentParser("sbatch")
    parser.add_argument("--parsable", action="store_true")
    parser.add_argument("-J", "--job-name", default=None)
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("-a", "--array", default=None)
    parser.add_argument("-p", "--partition", default=None)
    parser.add_argument("-t", "--time", default=None)
    parser.add_argument("--mem", default=None)
    parser.add_argument("-c", "--cpus-per-task", type=int, default=1)
    parser.add_argument("-G", "--gpus", default=None)
    parser.add_argument("-D", "--chdir", default=None)
    parser.add_argument("--export", choices=["ALL"], default="ALL")
    _clusters.add_option(parser)
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the arguments as sbatch does before contacting the controller."""
    args = _parser().parse_args(argv)
    if args.time is not None and not _TIME.fullmatch(args.time):
        raise CommandError("sbatch: error: Invalid --time specification")
    if args.mem is not None and not _MEMORY.fullmatch(args.mem):
        raise CommandError("sbatch: error: Invalid --mem specification")
    if args.gpus is not None and not _GPUS.fullmatch(args.gpus):
        raise CommandError("sbatch: error: Invalid --gpus specification")
    args.cluster_names = _clusters.named("sbatch", args)
    args.indices, args.throttle = _parse_array(args.array)
    args.script_bytes = _read_script(args.script)
    return args


def _parse_array(spec: str | None) -> tuple[list[int | None], int | None]:
    """Expand ``--array=0-9,12%4`` into its indices and its ``%N`` throttle.

    A plain job is one task with index None.
    """
    if spec is None:
        return [None], None
    ranges, _, throttle = spec.partition("%")
    try:
        return list(parse_range_list(ranges)), int(throttle) if throttle else None
    except ValueError:
        raise CommandError("sbatch: error: Invalid --array specification") from None


def _read_script(path: str) -> bytes:
    """Read the batch script, which sbatch requires to start with a ``#!`` line."""
    try:
        script = Path(path).read_bytes()
    except OSError:
        raise CommandError(f"sbatch: error: Unable to open file {path}") from None
    if not script.startswith(b"#!"):
        raise CommandError(
            "sbatch: error: This does not look like a batch script.  The first\n"
            "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
            "sbatch: error: For instance: #!/bin/sh"
        )
    return script


def submit(queue_dir: Path, args: argparse.Namespace) -> str:
    """Queue the job and print its id, as ``sbatch [--parsable]`` does."""
    if args.partition is not None and args.partition not in PARTITIONS:
        raise CommandError(
            f"sbatch: error: invalid partition specified: {args.partition}\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified"
        )
    cwd = os.path.abspath(args.chdir or os.getcwd())
    name = args.job_name or os.path.basename(args.script)
    with transaction(queue_dir) as state:
        _check_array_size(state, args)
        job_id = allocate_job_ids(state, len(args.indices))
        job = new_job(
            scheduler="slurm",
            name=name,
            partition=args.partition or PARTITIONS[0],
            command=[str(spool_path(queue_dir, job_id)), *args.args],
            cwd=cwd,
            env=_job_env(args, job_id, name, cwd),
            throttle=args.throttle,
            step=1,
            slots=args.cpus_per_task,
            append_output=False,  # sbatch's default --open-mode=truncate
            # SLURM's limits are whole minutes; the dummy keeps seconds (--time=0:05 is
            # 5 s here), so that a test can reach one fast
            time_limit=None if args.time is None else duration_seconds(args.time),
            memory_limit=None if args.mem is None else memory_bytes(args.mem, 2**20),
        )
        if args.cluster_names:
            job["cluster"] = args.cluster_names[0]
        output = args.output or ("slurm-%A_%a.out" if args.array else "slurm-%j.out")
        tasks = [
            new_task(
                job_id,
                index,
                job_id + position,
                os.path.join(cwd, _expand_filename(output, job_id, index, job_id + position, name)),
                _task_env(job_id + position, index),
            )
            for position, index in enumerate(args.indices)
        ]
        add_job(queue_dir, state, job_id, job, tasks, args.script_bytes)
    if not args.parsable:
        return f"Submitted batch job {job_id}\n"
    return f"{job_id};{job['cluster']}\n" if args.cluster_names else f"{job_id}\n"


def _check_array_size(state: State, args: argparse.Namespace) -> None:
    """Reject array indices beyond MaxArraySize, as slurmctld does."""
    if args.array and max(args.indices) >= state["config"]["max_array_size"]:
        raise CommandError(
            "sbatch: error: Batch job submission failed: Invalid job array specification"
        )


def _job_env(args: argparse.Namespace, job_id: int, name: str, cwd: str) -> dict[str, str]:
    """The SLURM variables shared by all tasks of a job."""
    env = {
        "SLURM_JOB_NAME": name,
        "SLURM_SUBMIT_DIR": cwd,
        "SLURM_JOB_PARTITION": args.partition or PARTITIONS[0],
        "SLURM_CPUS_PER_TASK": str(args.cpus_per_task),
        "SLURM_JOB_NUM_NODES": "1",
    }
    if args.gpus is not None:  # the devices a job sees: as SLURM's gres plugin sets them
        count = int(_GPUS.fullmatch(args.gpus).group(2))  # type: ignore[union-attr]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(device) for device in range(count))
    if args.array:
        env.update(
            SLURM_ARRAY_JOB_ID=str(job_id),
            SLURM_ARRAY_TASK_COUNT=str(len(args.indices)),
            SLURM_ARRAY_TASK_MIN=str(min(args.indices)),
            SLURM_ARRAY_TASK_MAX=str(max(args.indices)),
        )
    return env


def _task_env(task_job_id: int, index: int | None) -> dict[str, str]:
    """The SLURM variables that differ between the tasks of an array."""
    env = {"SLURM_JOB_ID": str(task_job_id), "SLURM_JOBID": str(task_job_id)}
    if index is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(index)
    return env


def _expand_filename(
    pattern: str, job_id: int, index: int | None, task_job_id: int, name: str
) -> str:
    """Substitute sbatch's filename patterns (``%A %a %j %x %u %%``, with
    optional zero padding like ``%3a``) in an ``--output`` path. As SLURM 22.05 does,
    a backslash anywhere turns them all off, and the backslashes are dropped."""
    if "\\" in pattern:
        return pattern.replace("\\", "")
    values = {
        "A": str(job_id),
        "a": NO_ARRAY_INDEX if index is None else str(index),
        "j": str(task_job_id),
        "x": name,
        "u": getpass.getuser(),
        "%": "%",
    }

    def substitute(match: re.Match[str]) -> str:
        value = values[match[2]]
        return value.zfill(int(match[1])) if match[1] and value.isdigit() else value

    return _FILENAME_PATTERN.sub(substitute, pattern)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy sbatch; returns the exit code."""
    return run_command("sbatch", argv, parse, submit)


if __name__ == "__main__":
    raise SystemExit(main())
