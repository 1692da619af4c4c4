"""What ``poolparty run`` and ``poolparty exec`` share: options and running the tasks.

Each command turns its input into a :class:`TaskSet` (a function to run on the nodes
and a list of tasks) and hands it to :func:`run_task_set`, which builds the pool and
does a dry run, one map, or this machine's shares of the tasks (``--bin``), then
writes one record per task (:mod:`.records`).

Unlike ``Pool.map``, a task that fails does not stop the others: every task's outcome
is written, in input order, and the command exits 1 naming the failed ones.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import config
from ..backends import BACKENDS, chosen, extra_arguments_option
from ..errors import ChunksLostError, InvalidInputError, PoolpartyError, TaskCrashedError
from ..pool import Pool
from . import UsageError, shares
from .records import (
    capture_outcome,
    describe_any_failure,
    make_record,
    output_format,
    report,
    write_records,
)

DEFAULT_OUT = "results.jsonl"
DEFAULT_SHARE_DIR = "poolparty-shares"


# ---------------------------------------------------------------------------- the parser
class TrailingArgumentParser(argparse.ArgumentParser):
    """Puts everything after the first ``--`` into ``trailing_dest``, verbatim.

    argparse alone can't take a positional (``SCRIPT.py:FUNC``) before options and
    more arguments after ``--``: it binds the trailing list at the first positional and
    then rejects the rest. Splitting here also keeps a later ``--`` in the command.
    """

    trailing_dest = "trailing"

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = list(sys.argv[1:] if args is None else args)
        tail: list[str] = []
        if "--" in args:
            split = args.index("--")
            args, tail = args[:split], args[split + 1:]
        namespace, extras = super().parse_known_args(args, namespace)
        before = getattr(namespace, self.trailing_dest, None) or []
        setattr(namespace, self.trailing_dest, [*before, *tail])
        return namespace, extras


def add_trailing_arguments(parser: argparse.ArgumentParser, dest: str, metavar: str,
                           help: str) -> None:
    """Put the arguments after ``--`` into ``dest``; call it after the other positionals,
    so that help lists them in order."""
    # add_parser built the parent's parser class; only this class knows about "--"
    parser.__class__ = TrailingArgumentParser
    parser.trailing_dest = dest  # type: ignore[attr-defined]
    parser.add_argument(dest, nargs="*", metavar=f"-- {metavar}", help=help)


def add_pool_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the tasks run; unset options come from poolparty's configuration."""
    group = parser.add_argument_group("where the tasks run")
    group.add_argument("--backend", choices=BACKENDS, default=None,
                       help="default: the configured one, else auto (SLURM arrays if sbatch "
                            "is on PATH, SGE if its qsub is, else local processes)")
    group.add_argument("--processes", type=int, metavar="N",
                       help="chunks running at once (local: processes; arrays: the throttle)")
    group.add_argument("--chunksize", type=int, metavar="K",
                       help="tasks per job (default: about two chunks per job slot)")
    group.add_argument("--scheduler-arg", action="append", default=[], metavar="ARG",
                       help="an argument for sbatch/qsub, added to the configured ones; "
                            "repeat it; write --scheduler-arg=--qos=long for one with a dash")
    group.add_argument("--work-dir", metavar="DIR",
                       help="where maps keep their files (default ./.poolparty)")
    group.add_argument("--keep-work-dir", action="store_const", const=True, default=None,
                       help="keep the map's directory after success")
    group.add_argument("--fresh", dest="reuse_results", action="store_const", const=False,
                       default=None, help="compute every task again, reusing no result of "
                                          "an earlier run of the same map")
    group.add_argument("--verbose", "-v", action="store_const", const=True, default=None,
                       help="print what the pool does")


def add_output_options(parser: argparse.ArgumentParser, key_help: str) -> None:
    """Where the records go, dry runs, and this machine's share of the tasks."""
    group = parser.add_argument_group("results")
    group.add_argument("--out", metavar="PATH",
                       help=f"the records' file: JSON lines, or pickle for .pkl/.pickle; - is "
                            f"stdout (default {DEFAULT_OUT}); with --bin the directory of the "
                            f"share files (default {DEFAULT_SHARE_DIR})")
    group.add_argument("--out-format", choices=("jsonl", "pickle"),
                       help="the format of --out, whatever its extension")
    group.add_argument("--dry-run", action="store_true",
                       help="write the work_dir and job script, print the submit command(s), "
                            "submit nothing")
    group.add_argument("--bin", metavar="I/N",
                       help="run only share(s) I of N, here on local processes: 3/10, "
                            "0-2,5/10; merge the share files with poolparty collect")
    group.add_argument("--bin-key", metavar="KEYS", help=key_help)


# ---------------------------------------------------------------------------- the tasks
@dataclass
class TaskSet:
    """A command's tasks, ready for the pool.

    ``function`` runs on the nodes, one task in, its value out (it must pickle).
    ``key_of`` gives the values ``--bin-key`` hashes (None: shares by position).
    ``is_success`` judges a value (exec: exit code 0). ``describe_task`` shows a task
    as the user would write it, for dry runs.
    """

    function: Callable[[Any], Any]
    tasks: list[Any]
    describe_task: Callable[[Any], str]
    key_of: Callable[[Any], list] | None = None
    is_success: Callable[[Any], bool] = field(default=lambda value: True)


def run_task_set(arguments: argparse.Namespace, task_set: TaskSet) -> int:
    """Run a command's tasks as its options say. The exit code: 0 when every task
    succeeded, 1 when one failed; bad input is raised as UsageError (exit 2)."""
    try:
        return _run_task_set(arguments, task_set)
    except InvalidInputError as error:  # the pool refused before submitting anything
        raise UsageError(str(error)) from error
    except KeyboardInterrupt:
        print("interrupted: the map's jobs were cancelled", file=sys.stderr)
        return 130
    except PoolpartyError as error:  # e.g. the scheduler refused the jobs
        print(f"poolparty: {error}", file=sys.stderr)
        return 1


def _run_task_set(arguments: argparse.Namespace, task_set: TaskSet) -> int:
    bins = shares.parse_bin(arguments.bin) if arguments.bin else None
    if arguments.bin_key and bins is None:
        raise UsageError("--bin-key says how --bin assigns tasks to shares: give --bin too")
    indexed, share_of = select_tasks(task_set, bins)
    out = arguments.out or (DEFAULT_SHARE_DIR if bins else DEFAULT_OUT)
    out_format = output_format(out, arguments.out_format)
    check_out(out, bins is not None)
    function = functools.partial(capture_outcome, task_set.function)
    with make_pool(arguments, local=bins is not None) as pool:
        if arguments.dry_run:
            return print_dry_run(pool, function, indexed, arguments.chunksize,
                                 task_set.describe_task)
        # what the tasks print is relayed to stdout: not into the records written there
        relay_to = sys.stderr if out == "-" else sys.stdout
        with contextlib.redirect_stdout(relay_to):
            outcomes = gather(pool, function, indexed, arguments.chunksize)
    records = [make_record(i, outcomes[i], task_set.is_success) for i, _ in indexed]
    if bins is None:
        write_records(out, out_format, records)
    else:
        write_shares(Path(out), out_format, bins, share_of, records, arguments.bin_key)
    return report(records, describe_any_failure, out)


def select_tasks(task_set: TaskSet, bins: shares.Bins | None
                 ) -> tuple[list[tuple[int, Any]], list[int]]:
    """The ``(index, task)`` pairs to run here (all, or those of this machine's shares),
    and the share of every task (empty without --bin)."""
    indexed = list(enumerate(task_set.tasks))
    if bins is None:
        return indexed, []
    share_of = shares.assign(task_set.tasks, bins.count, task_set.key_of)
    return [(i, task) for i, task in indexed if share_of[i] in bins.shares], share_of


def check_out(out: str, is_share_dir: bool) -> None:
    """Refuse an output that can't be written before running anything: finding out
    after hours of jobs would lose their results."""
    path = Path(out)
    if is_share_dir:
        if out == "-" or (path.exists() and not path.is_dir()):
            raise UsageError(f"--out {out!r}: with --bin, --out is a directory for the shares")
        return
    if out == "-":
        return
    if path.is_dir():
        raise UsageError(f"--out {out!r} is a directory; give a file name")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"--out {out!r}: the directory {str(path.parent)!r} does not exist")


def write_shares(directory: Path, out_format: str, bins: shares.Bins, share_of: list[int],
                 records: list[dict], key: str | None) -> None:
    for share in sorted(bins.shares):
        own = [record for record in records if share_of[record["index"]] == share]
        header = shares.header(share, bins.count, len(share_of), key)
        path = shares.write_share(directory, out_format, header, own)
        print(f"share {share} of {bins.count}: {len(own)} task(s) -> {path}", file=sys.stderr)


def make_pool(arguments: argparse.Namespace, local: bool) -> Pool:
    """The pool the options ask for; what they leave unset comes from the configuration.

    ``--bin`` shares run on local processes: they are for machines without a scheduler.
    """
    backend = arguments.backend
    if local:
        if backend not in (None, "auto", "local"):
            raise UsageError(f"--bin runs its shares here on local processes, not on "
                             f"{backend}: drop --backend {backend}")
        backend = "local"
    options: dict[str, Any] = {
        "processes": arguments.processes, "work_dir": arguments.work_dir,
        "keep_work_dir": arguments.keep_work_dir, "verbose": arguments.verbose,
        "reuse_results": arguments.reuse_results,
    }
    if arguments.scheduler_arg:
        backend = resolved_backend(backend)
        option = extra_arguments_option(backend)
        if option is None:
            raise UsageError(f"--scheduler-arg is for sbatch or qsub; the backend here is "
                             f"{backend}, which takes none")
        configured = config.resolve({})[option].value or []
        options[option] = [*configured, *arguments.scheduler_arg]
    try:
        return Pool(backend=backend, **{k: v for k, v in options.items() if v is not None})
    except ValueError as error:  # processes < 1: multiprocessing's own message
        raise UsageError(str(error)) from error


def resolved_backend(requested: str | None) -> str:
    """The backend a Pool would pick: --backend, else the configured one, else detected."""
    name = requested or config.resolve({})["backend"].value
    return chosen(name)


def gather(pool: Pool, function: Callable, indexed: list[tuple[int, Any]],
           chunksize: int | None) -> dict[int, tuple[bool, Any]]:
    """Every task's ``(ok, value or error)``. When jobs kept dying (chunks lost) or a
    task ended its worker's process, the map stops: those tasks fail as lost (crashed),
    those not run yet as not run, and the results that arrived are kept. Running the same
    command again resumes the kept work_dir."""
    outcomes: dict[int, tuple[bool, Any]] = {}
    try:
        for index, ok, payload in pool.imap_unordered(function, indexed, chunksize):
            outcomes[index] = (ok, payload)
    except (ChunksLostError, TaskCrashedError) as error:
        first_line = str(error).splitlines()[0]
        lost = {"type": type(error).__name__, "traceback": "",
                "message": f"{first_line} (work_dir kept: {error.work_dir})"}
        not_run = {"type": "NotRun", "traceback": "",
                   "message": "the map stopped when other tasks' jobs were lost or crashed; "
                              "run the command again to run it (results that arrived are "
                              "reused)"}
        lost_indices = {indexed[position][0] for position in error.task_indices}
        for index, _ in indexed:
            outcomes.setdefault(index, (False, lost if index in lost_indices else not_run))
    return outcomes


def print_dry_run(pool: Pool, function: Callable, indexed: list, chunksize: int | None,
                  describe_task: Callable[[Any], str]) -> int:
    """Write the map's work_dir and show what would be submitted: nothing is."""
    preview = pool.dry_run_map(function, indexed, chunksize)
    if preview is None:
        print("dry run: no tasks, nothing would be submitted")
        return 0
    print(f"dry run: {len(indexed)} task(s) on {pool.scheduler.name}, nothing submitted")
    print(f"work_dir: {preview.work_dir}")
    print(f"job script: {preview.job_script}")
    print(f"first task: {describe_task(indexed[0][1])}")
    print("would run:")
    for argv in preview.commands:
        print("  " + shlex.join(argv))
    return 0
