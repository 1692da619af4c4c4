"""Dummy ``scancel``: cancel jobs or array tasks of a fake queue, SLURM style.

``python -m poolparty.dummy_schedulers.scancel --queue DIR [--name=NAME] [JOBID | JOBID_INDEX ...]``
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from . import _clusters
from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import Task, cancel_tasks, job_of, select_tasks, was_submitted
from ._state import State, transaction

_JOB_ID = re.compile(r"(\d+)(?:_(\d+))?")


def _parser() -> ArgumentParser:
    """The options the pool uses, spelled like scancel's."""
    parser = ArgumentParser("scancel")
    parser.add_argument("-n", "--name", default=None)
    _clusters.add_option(parser)
    parser.add_argument("ids", nargs="*")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse and check the arguments as scancel does before contacting the controller.

    Each id becomes ``(text, job_id, index or None)`` in ``args.targets``.
    """
    args = _parser().parse_args(argv)
    args.cluster_names = _clusters.named("scancel", args) or [_clusters.CLUSTERS[0]]
    if not args.ids and args.name is None:
        raise CommandError("scancel: error: No job identification provided")
    args.targets = []
    for text in args.ids:
        match = _JOB_ID.fullmatch(text)
        if not match:
            raise CommandError(f"scancel: error: Invalid job id {text}")
        args.targets.append((text, int(match[1]), int(match[2]) if match[2] else None))
    return args


def cancel(queue_dir: Path, args: argparse.Namespace) -> str:
    """Kill or dequeue the selected tasks; complain about ids never submitted.

    Ids of jobs that already finished are silently accepted. Only jobs of the local
    cluster, or of the clusters ``--clusters`` names, are seen.
    """
    errors = []
    with transaction(queue_dir) as state:
        seen = [task for task in state["tasks"]
                if _clusters.cluster_of(job_of(state, task)) in args.cluster_names]
        seen_ids = {id(task) for task in seen}
        doomed = [] if args.targets else seen
        for text, job_id, index in args.targets:
            tasks = [task for task in _select(state, job_id, index) if id(task) in seen_ids]
            if not tasks and not was_submitted(state, job_id):
                errors.append(
                    f"scancel: error: Kill job error on job id {text}: Invalid job id specified"
                )
            doomed += tasks
        if args.name is not None:
            doomed = [task for task in doomed if job_of(state, task)["name"] == args.name]
        cancel_tasks(queue_dir, state, doomed)
    if errors:
        raise CommandError("\n".join(errors))
    return ""


def _select(state: State, job_id: int, index: int | None) -> list[Task]:
    """The tasks ``JOBID`` or ``JOBID_INDEX`` names.

    A bare id is an array's id (all its tasks) or, failing that, the own job
    id SLURM gives each array task.
    """
    if index is not None:
        return select_tasks(state, job_id, {index})
    return select_tasks(state, job_id) or [
        task for task in state["tasks"] if task["task_job_id"] == job_id
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy scancel; returns the exit code."""
    return run_command("scancel", argv, parse, cancel)


if __name__ == "__main__":
    raise SystemExit(main())
