"""Runs one chunk of tasks on a compute node.

    python -m poolparty.worker WORK_DIR CHUNK_ID
    python -m poolparty.worker WORK_DIR --array BASE ENV_VAR

The second form is for job arrays: the chunk is BASE plus the array index the
scheduler puts in ENV_VAR (SLURM_ARRAY_TASK_ID, SGE_TASK_ID).

A fixed module rather than generated source: what runs on the node is the same
reviewed code for every map. Each task's outcome is stored as ``(True, value)`` or
``(False, exception, traceback_text)``; the chunk's outcomes are written to
``results/<chunk>.pkl`` under a temporary name and renamed, so a worker killed
mid-write never leaves something that looks like a result. An exception in the user's
function is a result (it is re-raised in the caller), not a crash of the job; so is a
call to ``sys.exit`` (a :class:`TaskCrashedError` in the caller, which must not exit).
A task that ends the process itself (``os._exit``, a signal) is noted in the job's log:
the worker writes each task's index before running it (poolparty.crashes reads it).
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import sys
from collections.abc import Callable, Sequence

from .errors import RemoteError, TaskCrashedError
from .events import WorkerEvents
from .map_files import MapFiles

TYPE_CHECKING = False  # typing is not imported at run time: see below
if TYPE_CHECKING:
    from typing import Any

Outcome = tuple  # (True, value) | (False, exception, traceback_text)

# Every job starts here, and on a busy node each millisecond of start-up counts once per
# job: so the worker imports only what every job needs (the node's side of the work_dir
# is MapFiles, not the client's WorkDir; no logging, dataclasses or typing), and modules
# needed only in rarer cases (traceback when a task raises, cloudpickle for a result plain
# pickle can't take) are imported when needed. benchmarks/job_start.py measures it.


def parse_chunk_id(argv: Sequence[str], environ: dict[str, str]) -> int:
    """The chunk this job runs, from ``CHUNK_ID`` or ``--array BASE ENV_VAR``."""
    if argv[0] == "--array":
        base, variable = int(argv[1]), argv[2]
        return base + int(environ[variable])
    return int(argv[0])


def run_task(function: Callable, task: Any, star: bool, task_index: int) -> Outcome:
    try:
        return (True, function(*task) if star else function(task))
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the caller decides what to re-raise
        return failure(error, task_index, "called")


def apply_call(function: Callable, args: tuple, kwargs: dict) -> Any:
    """The task of ``Pool.apply_async`` and ``Executor.submit``: a call with keyword
    arguments too. Defined here, so that unpickling it on the node imports nothing more."""
    return function(*args, **kwargs)


def failure(error: BaseException, task_index: int, verb: str) -> Outcome:
    """A task's exception as its outcome. SystemExit becomes a TaskCrashedError: raised
    as it is in the caller, it would end the caller's program. KeyboardInterrupt is not
    caught: it interrupts the job (a signal sent to it), not one task."""
    import traceback

    text = traceback.format_exc()
    if isinstance(error, SystemExit):
        error = TaskCrashedError(task_index, f"{verb} sys.exit({error.code!r})")
    return (False, error, text)


def encode_outcomes(outcomes: list[Outcome], first_task: int) -> bytes:
    """Pickle the chunk's outcomes; an unpicklable value or exception becomes an error
    naming its task, instead of losing the whole chunk.

    Plain pickle first: it refuses (rather than mis-pickles) what only cloudpickle can
    carry, such as a class defined in the client's ``__main__``.
    """
    try:
        return pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    import cloudpickle

    try:
        return cloudpickle.dumps(outcomes)
    except Exception:
        pass
    safe: list[Outcome] = []
    for offset, outcome in enumerate(outcomes):
        try:
            cloudpickle.dumps(outcome)
            safe.append(outcome)
        except Exception as error:  # noqa: BLE001
            what = "result" if outcome[0] else f"exception {type(outcome[1]).__name__}"
            message = (
                f"task {first_task + offset}: its {what} could not be pickled to send it "
                f"back ({type(error).__name__}: {error})"
            )
            text = outcome[2] if not outcome[0] else ""
            safe.append((False, RemoteError(message), text))
    return cloudpickle.dumps(safe)


def add_client_import_paths(paths: Sequence[str]) -> None:
    """Make the client's own modules importable here (its script's folder, a notebook's
    directory, PYTHONPATH entries): functions defined there are pickled by reference."""
    sys.path[:0] = [p for p in paths if p not in sys.path and os.path.isdir(p)]


def load_chunk(work_dir: MapFiles, chunk_id: int) -> tuple[Callable, bool, list, int]:
    """Unpickle what a chunk needs; returns (function, star, tasks, first task index)."""
    function, star, initializer, initargs = pickle.loads(work_dir.read_function())
    first_task, tasks = pickle.loads(work_dir.read_chunk(chunk_id))
    if initializer is not None:
        initializer(*initargs)
    return function, star, tasks, first_task


def run_tasks(function: Callable, tasks: list, star: bool, first_task: int,
              events: WorkerEvents) -> list[Outcome]:
    """Run the tasks in order; each one that raises is an event at once, so a status
    shows it while the rest of the chunk still runs."""
    outcomes = []
    for offset, task in enumerate(tasks):
        events.task_starting(first_task + offset)
        outcome = run_task(function, task, star, first_task + offset)
        if not outcome[0]:
            events.task_failed(first_task + offset, outcome[1])
        outcomes.append(outcome)
    return outcomes


def run_chunk(work_dir: MapFiles, chunk_id: int) -> None:
    """Run every task of one chunk and write their outcomes as one result file.

    A failure to set up (a module missing on this node, an initializer raising) is
    reported as the outcome of every task of the chunk: the caller sees the real
    exception at once, instead of the job being resubmitted to fail again.

    Events (started, each task that raised, finished) go to the job's log, as marked
    lines on standard error; "finished" is written before the result, so a gathered
    chunk has it.
    """
    faulthandler.enable()  # a segfault's Python traceback goes into the job's log
    events = WorkerEvents(chunk_id)
    events.started(dict(os.environ))
    metadata = work_dir.metadata()
    add_client_import_paths(metadata.get("import_paths", []))
    try:
        function, star, tasks, first_task = load_chunk(work_dir, chunk_id)
    except (Exception, SystemExit) as error:  # noqa: BLE001
        first_task = chunk_id * metadata["chunksize"]
        count = min(metadata["chunksize"], metadata["num_tasks"] - first_task)
        outcome = failure(error, first_task, "never ran: setting up its chunk (the initializer?)"
                          " called")
        outcomes = [outcome] * count
        for task_index in range(first_task, first_task + count):
            events.task_failed(task_index, outcome[1])
    else:
        outcomes = run_tasks(function, tasks, star, first_task, events)
    failed = sum(1 for outcome in outcomes if not outcome[0])
    events.finished(ok=len(outcomes) - failed, failed=failed)
    sys.stdout.flush()
    sys.stderr.flush()
    work_dir.write_result(chunk_id, encode_outcomes(outcomes, first_task))


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    work_dir = MapFiles(arguments[0])
    chunk_id = parse_chunk_id(arguments[1:], dict(os.environ))
    # events.OWN_LINE_PREFIXES: the output relayed to the caller leaves this line out
    print(f"poolparty worker: map {work_dir.map_id} chunk {chunk_id} on {os.uname().nodename}",
          file=sys.stderr, flush=True)
    run_chunk(work_dir, chunk_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
