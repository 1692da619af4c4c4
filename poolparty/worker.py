"""A worker on a compute node: it pulls a map's tasks from the work_dir until none is left.

    python -m poolparty.worker WORK_DIR WORKER
    python -m poolparty.worker WORK_DIR --array BASE ENV_VAR

The second form is for job arrays: the worker's number is BASE plus the array index
the scheduler puts in ENV_VAR (SLURM_ARRAY_TASK_ID, SGE_TASK_ID).

Each job is a worker: it claims a chunk of tasks (poolparty.claims: atomic on a shared
file system, no connection to the client needed), runs it, writes its result, and
claims the next, sized from the durations it measured (chunking.claim_size), so uneven
tasks spread over every worker and the tail does not straggle. A worker whose job has a
time limit claims no more than it can finish in time.

A fixed module rather than generated source: what runs on the node is the same
reviewed code for every map. Each task's outcome is stored as ``(True, value)`` or
``(False, exception, traceback_text)``; a claim's ``(first task, outcomes)`` are written
to ``results/<claim>.pkl`` under a temporary name and renamed, so a worker killed
mid-write never leaves something that looks like a result. An exception in the user's
function is a result (it is re-raised in the caller), not a crash of the job; so is a
call to ``sys.exit`` (a :class:`TaskCrashedError` in the caller, which must not exit).
A task that ends the process itself (``os._exit``, a signal) is noted in the job's log:
the worker writes each task's index before running it (poolparty.crashes reads it).
"""

from __future__ import annotations

import faulthandler
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence

from .chunking import claim_size
from .claims import Claimer
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


def parse_worker_id(argv: Sequence[str], environ: dict[str, str]) -> int:
    """This worker's number, from ``WORKER`` or ``--array BASE ENV_VAR``."""
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
    return (False, rebuildable(error, task_index), text)


def rebuildable(error: BaseException, task_index: int) -> BaseException:
    """The exception, or a RemoteError saying what it was when it would not unpickle
    (an exception class whose ``__init__`` takes other arguments than its ``args``
    cannot be rebuilt): the caller must see the task's error, not a broken result."""
    import cloudpickle

    try:
        pickle.loads(cloudpickle.dumps(error))
        return error
    except Exception as problem:  # noqa: BLE001 - anything: the caller must hear of it
        return RemoteError(f"task {task_index} raised {type(error).__name__}: {error} (the "
                           f"exception itself could not be sent back: unpickling it raised "
                           f"{type(problem).__name__}: {problem})")


def encode_outcomes(outcomes: list[Outcome], first_task: int) -> bytes:
    """Pickle ``(first_task, outcomes)``: a result says which tasks it holds. An
    unpicklable value or exception becomes an error naming its task, instead of losing
    the whole chunk.

    Plain pickle first: it refuses (rather than mis-pickles) what only cloudpickle can
    carry, such as a class defined in the client's ``__main__``.
    """
    try:
        return pickle.dumps((first_task, outcomes), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    import cloudpickle

    try:
        return cloudpickle.dumps((first_task, outcomes))
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
    return cloudpickle.dumps((first_task, safe))


def add_client_import_paths(paths: Sequence[str]) -> None:
    """Make the client's own modules importable here (its script's folder, a notebook's
    directory, PYTHONPATH entries): functions defined there are pickled by reference."""
    sys.path[:0] = [p for p in paths if p not in sys.path and os.path.isdir(p)]


def load_function(work_dir: MapFiles) -> tuple[Callable, bool]:
    """Unpickle the map's function and run the initializer, once per worker."""
    function, star, initializer, initargs = pickle.loads(work_dir.read_function())
    if initializer is not None:
        initializer(*initargs)
    return function, star


def load_tasks(work_dir: MapFiles, start: int, stop: int, block: int) -> list:
    """Tasks ``[start, stop)``, read from the blocks that hold them. Claims end at
    block boundaries (except the map's last), but the tasks are cut to the claim all
    the same: a task run under another's index would be a wrong result."""
    first_block = start // block
    tasks: list = []
    for blob in work_dir.read_blocks(first_block, math.ceil(stop / block)):
        tasks.extend(pickle.loads(blob)[1])
    offset = first_block * block
    return tasks[start - offset:stop - offset]


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


class Pace:
    """How much this worker claims next: from what it measured, the map's shape
    (``metadata``: num_tasks, block, claim_unit, workers) and its job's time limit."""

    def __init__(self, metadata: dict, clock: Callable[[], float] = time.monotonic) -> None:
        self.block = metadata.get("block", 1)
        #: a chunksize the caller gave: every claim is exactly that many tasks
        self.unit = metadata.get("claim_unit")
        self.workers = metadata.get("workers", 1)
        limit = metadata.get("time_limit_seconds")
        self.clock = clock
        #: when to stop claiming: the job's time limit, less a margin for the result
        self.deadline = None if limit is None else clock() + limit * 0.95 - 5.0
        self.tasks_run = 0
        self.seconds = 0.0

    @property
    def task_seconds(self) -> float | None:
        return self.seconds / self.tasks_run if self.tasks_run else None

    def ran(self, count: int, seconds: float) -> None:
        self.tasks_run += count
        self.seconds += seconds

    def size_for(self, remaining: int) -> int:
        """How many of the ``remaining`` tasks to claim: whole blocks, the caller's
        chunksize if given, and no more than the time left allows (0: stop)."""
        if self.unit is not None:
            size = self.unit
        else:
            size = claim_size(remaining, self.workers, self.task_seconds)
            size = max(1, math.ceil(size / self.block)) * self.block
        if self.deadline is not None and self.task_seconds:
            fits = int((self.deadline - self.clock()) / self.task_seconds)
            if fits < size:
                size = (fits // self.block) * self.block
        return size

    def time_left(self) -> bool:
        """Whether a claim may still start: the deadline is not reached, and the tasks
        measured so far say at least one more block fits before it."""
        if self.deadline is None:
            return True
        needed = (self.task_seconds or 0.0) * self.block
        return self.clock() + needed < self.deadline


class Heartbeat:
    """For a worker no scheduler lists (started by hand, ``poolparty worker``): the
    mtime of the claim it runs is set every ``interval`` seconds by a thread, so the
    client can tell it lives; a claim whose heartbeat stops goes back to the others.
    (Workers the pool submits need none: the scheduler says whether they run.)"""

    def __init__(self, interval: float) -> None:
        import threading

        self.interval = interval
        self.claim: Any = None
        self._stopped = threading.Event()
        threading.Thread(target=self._beat, daemon=True, name="poolparty-heartbeat").start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            claim = self.claim
            if claim is not None:
                try:
                    claim.touch()
                except OSError:  # the map ended and archived its claims
                    pass

    def stop(self) -> None:
        self._stopped.set()


def run_worker(work_dir: MapFiles, worker_id: int | None, environ: dict[str, str] | None = None,
               heartbeat: Heartbeat | None = None) -> int:
    """Claim and run chunks until no work is open (or the time limit is near); returns
    how many claims this worker ran. ``worker_id`` None: started by hand, no scheduler
    lists it (its claims name it by its random id, and carry ``heartbeat``).

    A failure to set up (a module missing on this node, an initializer raising) is
    reported as the outcome of every task of the first claim, and the worker stops: the
    caller sees the real exception at once, instead of jobs failing again and again.

    Events (started, each task that raised, finished) go to the job's log, as marked
    lines on standard error; a claim's result is written after its tasks' output.
    """
    environ = dict(os.environ) if environ is None else environ
    faulthandler.enable()  # a segfault's Python traceback goes into the job's log
    events = WorkerEvents(worker_id)
    events.started(environ)
    metadata = work_dir.metadata()
    add_client_import_paths(metadata.get("import_paths", []))
    claimer = Claimer(work_dir.path, metadata["num_tasks"], environ)
    claimer.identity["worker_number"] = worker_id  # the id the client submitted it as
    pace = Pace(metadata)
    try:
        function, star = load_function(work_dir)
        broken = None
    except (Exception, SystemExit) as error:  # noqa: BLE001
        broken = failure(error, 0, "never ran: setting up its worker (the initializer?) called")
    ok = failed = claims = 0
    while pace.time_left():
        claim = claimer.claim_next(pace.size_for)
        if claim is None:
            break
        claims += 1
        if heartbeat is not None:
            heartbeat.claim = claim
        if broken is not None:
            outcomes = [broken] * (claim.stop - claim.start)
            for task_index in range(claim.start, claim.stop):
                events.task_failed(task_index, broken[1])
        else:
            began = time.monotonic()
            tasks = load_tasks(work_dir, claim.start, claim.stop, pace.block)
            outcomes = run_tasks(function, tasks, star, claim.start, events)
            pace.ran(len(tasks), time.monotonic() - began)
        bad = sum(1 for outcome in outcomes if not outcome[0])
        ok, failed = ok + len(outcomes) - bad, failed + bad
        sys.stdout.flush()
        sys.stderr.flush()
        work_dir.write_result(claim.number, encode_outcomes(outcomes, claim.start))
        if heartbeat is not None:
            heartbeat.claim = None
        if broken is not None:
            break
    events.finished(ok=ok, failed=failed)
    return claims


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    work_dir = MapFiles(arguments[0])
    worker_id = parse_worker_id(arguments[1:], dict(os.environ))
    # events.OWN_LINE_PREFIXES: the output relayed to the caller leaves this line out
    print(f"poolparty worker: map {work_dir.map_id} worker {worker_id} on {os.uname().nodename}",
          file=sys.stderr, flush=True)
    run_worker(work_dir, worker_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
