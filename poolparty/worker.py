"""A worker on a compute node: it pulls a map's tasks from the work_dir until none is left.

    python -m poolparty.worker [--lobby DIR --idle-timeout S --run KEY] WORK_DIR WORKER
    python -m poolparty.worker [--lobby ...] WORK_DIR --array BASE ENV_VAR

The second form is for job arrays: the worker's number is BASE plus the array index
the scheduler puts in ENV_VAR (SLURM_ARRAY_TASK_ID, SGE_TASK_ID). With ``--lobby``, a
worker that ran out of work waits up to S seconds in its pool's lobby for the pool's
next map (poolparty.lobby: warm workers).

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
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .chunking import claim_size
from .claims import Claimer
from .errors import RemoteError, TaskCrashedError
from .escalation import OWN, Steps
from .events import MAX_TASKS_RECORDED, WorkerEvents
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


def set_up(work_dir: MapFiles, metadata: dict
           ) -> tuple[tuple[Callable, bool] | None, Outcome | None]:
    """The map's function (and the initializer run), or the failure to report as the
    outcome of every task of the first claim."""
    add_client_import_paths(metadata.get("import_paths", []))
    try:
        return load_function(work_dir), None
    except (Exception, SystemExit) as error:  # noqa: BLE001
        return None, failure(error, 0, "never ran: setting up its worker (the initializer?) "
                                       "called")


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
              events: WorkerEvents, meter: TaskMeter | None = None) -> list[Outcome]:
    """Run the tasks in order; each one that raises is an event at once, so a status
    shows it while the rest of the chunk still runs. ``meter`` records each task for
    the map's report."""
    outcomes = []
    before = usage() if meter is not None else None
    for offset, task in enumerate(tasks):
        events.task_starting(first_task + offset)
        outcome = run_task(function, task, star, first_task + offset)
        if meter is not None:  # a task's end is the next one's start: one reading a task
            after = usage()
            meter.ran(before, after, outcome[0])
            before = after
        if not outcome[0]:
            events.task_failed(first_task + offset, outcome[1])
        outcomes.append(outcome)
    return outcomes


def usage() -> tuple[float, float, float, int]:
    """Now (wall and monotonic), the CPU seconds this process and its children used so
    far, and the larger of their peak resident memories, in kB (Linux's unit)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return time.time(), time.monotonic(), cpu, max(own.ru_maxrss, children.ru_maxrss)


class TaskMeter:
    """Each task of a claim, for the map's report (poolparty.report): when it started
    (seconds after the claim began), how long it ran, the CPU it used and the worker's
    peak memory after it, and whether it returned. One reading of getrusage a task (a
    few microseconds); past MAX_TASKS_RECORDED tasks only the claim's totals are kept."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.began = time.time()
        self.records: list[list] = []
        self.count = self.failed = 0
        self.seconds = self.cpu = 0.0
        self.peak = 0

    def ran(self, before: tuple, after: tuple, ok: bool) -> None:
        seconds, cpu = after[1] - before[1], after[2] - before[2]
        self.count += 1
        self.failed += not ok
        self.seconds += seconds
        self.cpu += cpu
        self.peak = max(self.peak, after[3])
        if self.count <= self.limit:
            self.records.append([round(before[0] - self.began, 4), round(seconds, 4),
                                 round(cpu, 4), after[3], int(ok)])

    def summary(self) -> dict:
        """The fields of the worker's ``claim_done`` event."""
        totals = {"count": self.count, "failed": self.failed, "seconds": round(self.seconds, 4),
                  "cpu": round(self.cpu, 4), "peak_kb": self.peak}
        return {"began": round(self.began, 4), "totals": totals,
                "tasks": self.records if self.count <= self.limit else None}


class Pace:
    """How much this worker claims next: from what it measured, the map's shape
    (``metadata``: num_tasks, block, claim_unit, workers) and its job's time limit."""

    def __init__(self, metadata: dict, clock: Callable[[], float] = time.monotonic,
                 started: float | None = None) -> None:
        """``started``: when the job began (its clock's reading), if before now: a warm
        worker visiting a later map has used part of its time already."""
        self.block = metadata.get("block", 1)
        #: a chunksize the caller gave: every claim is exactly that many tasks
        self.unit = metadata.get("claim_unit")
        self.workers = metadata.get("workers", 1)
        limit = metadata.get("time_limit_seconds")
        self.clock = clock
        #: when to stop claiming: the job's time limit, less a margin for the result
        began = clock() if started is None else started
        self.deadline = None if limit is None else began + limit * 0.95 - margin(limit)
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


def margin(time_limit: float) -> float:
    """Time kept free at the end of a job for writing the last result: 5 s, or a tenth
    of a limit shorter than 50 s (only tests ask for a limit of a few seconds)."""
    return min(5.0, time_limit / 10)


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
               heartbeat: Heartbeat | None = None, guest: Guest | None = None,
               code: LoadedCode | None = None, steps: Steps = OWN,
               time_limit: float | None = None, job_started: float | None = None,
               expected: str | None = None) -> int:
    """Claim and run chunks until no work is open (or the time limit is near); returns
    how many claims this worker ran. ``worker_id`` None: started by hand, or a warm
    worker of the pool visiting a later map (``guest``); no scheduler lists it for this
    map, so its claims name it by its random id, and carry ``heartbeat``.

    A guest loads the function at its first claim: looking at a map with no work left
    costs it nothing. A failure to set up (a module missing on this node, an
    initializer raising) is reported as the outcome of every task of the first claim,
    and the worker stops: the caller sees the real exception at once, instead of jobs
    failing again and again.

    Events (started, each task that raised, finished) go to the job's log, as marked
    lines on standard error; a claim's result is written after its tasks' output. A
    guest writes both into ``logs/guest-<its id>.log`` of the map it visits, which that
    map's client gathers and relays as any worker's log.

    ``steps``: a worker the pool submitted with raised resources (poolparty.escalation)
    may take the claims reopened for such a worker. ``time_limit`` (its job's, when not
    the map's) and ``job_started`` (monotonic): when its job must end, which a warm
    worker keeps from map to map.

    ``expected``: the making of the map's directory this worker is for (map.json's
    "incarnation"). The same map called again makes its directory anew under the same
    path: a worker of the earlier one must not run the later one (other resources,
    another pool's run), so it leaves when the directory is not the one it was
    started for, or is made anew while it runs; a claim it made in the new one just
    before it saw that, the new client gives to the others.
    """
    environ = dict(os.environ) if environ is None else environ
    faulthandler.enable()  # a segfault's Python traceback goes into the job's log
    events = WorkerEvents(worker_id)
    signature = work_dir.incarnation()  # before the metadata: a making after it shows
    metadata = work_dir.metadata()
    if expected is not None and metadata.get("incarnation", "-") != expected:
        print("poolparty worker: the map's directory was made anew (the same map called "
              "again): it leaves", file=sys.stderr, flush=True)
        return 0
    if guest is None:
        events.started(environ)
    claimer = Claimer(work_dir.path, metadata["num_tasks"], environ, steps=steps)
    claimer.identity["worker_number"] = worker_id  # the id the client submitted it as
    claimer.identity["incarnation"] = metadata.get("incarnation")
    pace = Pace(metadata if time_limit is None else dict(metadata, time_limit_seconds=time_limit),
                started=job_started)
    loaded: tuple[Callable, bool] | None = None
    broken = None
    if guest is None:  # a process that dies setting up must do so before it claims
        loaded, broken = set_up(work_dir, metadata)
        if code is not None:
            code.note()
    ok = failed = claims = 0
    meter: TaskMeter | None = None
    while (pace.time_left() and (guest is None or guest.still_open())
           and work_dir.incarnation() == signature):
        claim = claimer.claim_next(pace.size_for)
        if claim is None or work_dir.incarnation() != signature:
            break
        claims += 1
        if claims == 1 and guest is not None:
            guest.enter(work_dir, claimer.identity["worker"])
            events.started(environ)
            loaded, broken = set_up(work_dir, metadata)
        if heartbeat is not None:
            heartbeat.claim = claim
        if broken is not None or loaded is None:
            meter = None
            outcomes = [broken] * (claim.stop - claim.start)
            for task_index in range(claim.start, claim.stop):
                events.task_failed(task_index, broken[1])
        else:
            began = time.monotonic()
            tasks = load_tasks(work_dir, claim.start, claim.stop, pace.block)
            meter = TaskMeter(MAX_TASKS_RECORDED)
            outcomes = run_tasks(loaded[0], tasks, loaded[1], claim.start, events, meter)
            pace.ran(len(tasks), time.monotonic() - began)
            if metadata.get("memory_raisable") or steps.memory:
                leave_if_out_of_memory(outcomes, claim.start)
        bad = sum(1 for outcome in outcomes if not outcome[0])
        ok, failed = ok + len(outcomes) - bad, failed + bad
        if code is not None:  # before the result: the caller may change the files after
            code.note()
        sys.stdout.flush()
        sys.stderr.flush()
        result = encode_outcomes(outcomes, claim.start)
        work_dir.write_result(claim.number, result)
        if meter is not None:
            events.claim_done(claim.number, claim.start, len(result), meter.summary())
        if heartbeat is not None:
            heartbeat.claim = None
        if broken is not None:
            break
    if work_dir.incarnation() != signature:
        print("poolparty worker: its map ended and its directory is gone or made anew "
              "(the same map called again): it leaves", file=sys.stderr, flush=True)
    if guest is None or claims:
        events.finished(ok=ok, failed=failed)
    if guest is not None and claims:
        guest.leave()
    return claims


def leave_if_out_of_memory(outcomes: list[Outcome], first_task: int) -> None:
    """A task's MemoryError under a limit of this job's address space (SGE's h_vmem)
    is the job out of memory, not the task's failure: the worker leaves without the
    claim's result, saying so in its log (poolparty.endings), and the pool runs the
    claim again in a job with more memory."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return
    for offset, outcome in enumerate(outcomes):
        if not outcome[0] and isinstance(outcome[1], MemoryError):
            print(f"{OUT_OF_MEMORY_LINE} task {first_task + offset} raised MemoryError under "
                  f"the job's memory limit ({limit} bytes of address space)",
                  file=sys.stderr, flush=True)
            raise SystemExit(1)


class TimeLimitWatch:
    """Says in the job's log, just before its time limit, that the limit is coming
    while a task runs. Some schedulers end such a job without a word (SGE's h_rt is a
    SIGKILL): this line tells the client that it was the time limit (poolparty.endings).
    A daemon thread: it dies with the worker, and says nothing if the worker is done."""

    def __init__(self, job_started: float, time_limit: float) -> None:
        import threading

        self.before = min(TIME_LIMIT_NOTICE_SECONDS, time_limit / 4)
        self.at = job_started + time_limit - self.before
        threading.Thread(target=self._watch, daemon=True, name="poolparty-time-limit").start()

    def _watch(self) -> None:
        time.sleep(max(0.0, self.at - time.monotonic()))
        print(f"{TIME_LIMIT_LINE} is {self.before:.3g} s away",
              file=sys.stderr, flush=True)


#: how long before its job's time limit a worker says it is near
TIME_LIMIT_NOTICE_SECONDS = 2.0
#: the worker's own words for the two endings it can see coming (poolparty.endings)
TIME_LIMIT_LINE = "poolparty worker: its job's time limit"
OUT_OF_MEMORY_LINE = "poolparty worker: out of memory:"


class Guest:
    """A warm worker visiting a later map of its pool (poolparty.lobby): while it runs
    that map's claims its output goes into ``logs/guest-<id>.log`` there, for that map's
    client to relay, and it stops claiming once the pool's journal says the map ended
    (succeeded, failed or was interrupted)."""

    def __init__(self, journal: Any) -> None:
        self.journal = journal
        self.visiting = ""  # the run key of the map it visits
        self._saved: tuple[int, int] | None = None

    def still_open(self) -> bool:
        return self.journal.is_open(self.visiting)

    def enter(self, work_dir: MapFiles, worker: str) -> None:
        flush_quietly()
        log = os.open(work_dir.logs_dir / f"guest-{worker}.log",
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)

    def leave(self) -> None:
        """Back to the job's own log (idempotent)."""
        if self._saved is None:
            return
        flush_quietly()
        for target, saved in zip((1, 2), self._saved):
            os.dup2(saved, target)
            os.close(saved)
        self._saved = None


def flush_quietly() -> None:
    """Flush stdout and stderr; a log removed under them (its map ended) is no error."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass


class LoadedCode:
    """The files of the modules this process loaded that can change under it (the
    user's own, and poolparty's), by their stat signature when first seen: noted after
    the function is loaded and after each claim's tasks, before its result is written
    (once the caller has the results it may change the files). A warm
    worker whose files changed since must not run a later map: it would run the code it
    loaded before (sys.modules) under the name of the changed code, a wrong result."""

    def __init__(self) -> None:
        self.signatures: dict[str, tuple[int, ...] | None] = {}

    def note(self) -> None:
        from .code_identity import user_module_files

        poolparty = os.path.dirname(os.path.realpath(__file__))
        files = user_module_files() | {
            os.path.realpath(module.__file__) for name, module in list(sys.modules.items())
            if name.startswith("poolparty") and isinstance(getattr(module, "__file__", None), str)
            and os.path.realpath(module.__file__).startswith(poolparty)}
        for path in files - self.signatures.keys():
            self.signatures[path] = file_signature(path)

    def changed(self) -> str | None:
        """A file that changed (or went) since it was noted; None if none did."""
        for path, signature in self.signatures.items():
            if file_signature(path) != signature:
                return path
        return None


def file_signature(path: str) -> tuple[int, ...] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


def serve_lobby(lobby: str, idle_timeout: float, environ: dict[str, str],
                presence: Any, code: LoadedCode, steps: Steps = OWN,
                time_limit: float | None = None, job_started: float | None = None) -> None:
    """After its own map: wait up to ``idle_timeout`` seconds in the pool's lobby for
    another map of the pool, visit each one announced (again only when one of its claims
    was reopened), and exit when idle that long, when the pool closes, or when code it
    loaded changed on disk."""
    from .lobby import LOOK_SECONDS, Journal

    journal = Journal(lobby)
    guest = Guest(journal)
    heartbeat = Heartbeat(10.0)
    visited: dict[str, int | None] = {}  # its own map's run too: a claim may be reopened
    idle_since, nap = time.monotonic(), LOOK_SECONDS
    presence.serve(None)
    while True:
        journal.refresh()
        if journal.closed:
            return
        for run_key, path in list(journal.open_maps.items()):
            mark = requeue_mark(Path(path))
            if run_key in visited and visited[run_key] == mark:
                continue
            visited[run_key] = mark
            changed = code.changed()
            if changed is not None:
                print(f"poolparty worker: leaves the pool: {changed} changed since this "
                      f"worker loaded it", file=sys.stderr, flush=True)
                return
            presence.serve(run_key)
            guest.visiting = run_key
            try:
                claims = run_worker(MapFiles(path), None, environ, heartbeat, guest, code,
                                    steps, time_limit, job_started,
                                    journal.incarnations.get(run_key))
            except OSError:  # the map ended and its directory went meanwhile
                claims = 0
            finally:
                guest.leave()
                presence.serve(None)
            if claims:
                idle_since, nap = time.monotonic(), LOOK_SECONDS
        if time.monotonic() - idle_since >= idle_timeout:
            return
        time.sleep(nap)
        nap = min(nap * 1.5, MAX_LOOK_SECONDS)


#: the longest an idle worker sleeps between looks at its pool's journal
MAX_LOOK_SECONDS = 0.2


def requeue_mark(map_dir: Path) -> int | None:
    """When the map's ``requeue/`` last changed: a claim reopened there since a visit
    is a reason to visit again."""
    try:
        return os.stat(map_dir / "requeue").st_mtime_ns
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    job_started = job_start()
    arguments = list(sys.argv[1:] if argv is None else argv)
    incarnation = None
    if arguments[:1] == ["--incarnation"] and len(arguments) > 2:
        incarnation, arguments = arguments[1], arguments[2:]
    lobby, idle_timeout, run_key = None, 0.0, ""
    if arguments[:1] == ["--lobby"] and len(arguments) > 6:
        lobby, idle_timeout, run_key = arguments[1], float(arguments[3]), arguments[5]
        arguments = arguments[6:]
    if len(arguments) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    work_dir = MapFiles(arguments[0])
    steps, time_limit, arguments = raised_resources(arguments[1:])
    worker_id = parse_worker_id(arguments, dict(os.environ))
    # events.OWN_LINE_PREFIXES: the output relayed to the caller leaves this line out
    print(f"poolparty worker: map {work_dir.map_id} worker {worker_id} on {os.uname().nodename}",
          file=sys.stderr, flush=True)
    if incarnation is not None and not same_incarnation(work_dir, incarnation):
        print("poolparty worker: submitted for an earlier run of this map, which ended "
              "(the same map was called again since): it leaves", file=sys.stderr, flush=True)
        return 0
    presence, code = None, None
    if lobby is not None and idle_timeout > 0:
        from .lobby import Presence

        presence, code = Presence(lobby, run_key, worker_id), LoadedCode()
    try:
        if time_limit is None:  # the map's, kept for the maps a warm worker visits
            time_limit = map_time_limit(work_dir)
        if time_limit is not None:
            TimeLimitWatch(job_started, time_limit)
        run_worker(work_dir, worker_id, code=code, steps=steps, time_limit=time_limit,
                   job_started=job_started, expected=incarnation)
        if presence is not None and lobby is not None and code is not None:
            serve_lobby(lobby, idle_timeout, dict(os.environ), presence, code, steps,
                        time_limit, job_started)
    finally:
        if presence is not None:
            presence.leave()
    return 0


def job_start() -> float:
    """When this worker's job began, on the monotonic clock: when its shell (the map's
    job.sh, this process's parent) started, read from /proc, for python may take
    seconds to start on a busy node and the scheduler's clock runs from the job's
    start; now, where that can't be read."""
    now = time.monotonic()
    try:
        parent = os.getppid()
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            if b"job.sh" not in cmdline.read():
                return now
        with open(f"/proc/{parent}/stat") as stat:
            ticks = int(stat.read().rpartition(")")[2].split()[19])
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    return now - min(max(elapsed, 0.0), 3600.0)


def map_time_limit(work_dir: MapFiles) -> float | None:
    """The time limit of the map's jobs (None: none, or the map is gone)."""
    try:
        return work_dir.metadata().get("time_limit_seconds")
    except (OSError, ValueError):
        return None


def raised_resources(arguments: list[str]) -> tuple[Steps, float | None, list[str]]:
    """``--steps T,M [--time-limit SECONDS]`` first in a raised worker's arguments
    (poolparty.escalation): which reopened claims it may take, and its own time limit
    (not the map's); the arguments after them."""
    if arguments[:1] != ["--steps"] or len(arguments) < 3:
        return Steps(), None, arguments
    steps, arguments = Steps.parse(arguments[1]), arguments[2:]
    time_limit = None
    if arguments[:1] == ["--time-limit"] and len(arguments) > 2:
        time_limit, arguments = float(arguments[1]), arguments[2:]
    return steps, time_limit, arguments


def same_incarnation(work_dir: MapFiles, incarnation: str) -> bool:
    """Whether the map's directory is the one this worker's job was submitted for (a
    directory gone meanwhile counts as the same: the worker then finds no work)."""
    try:
        return work_dir.metadata().get("incarnation", "-") == incarnation
    except (OSError, ValueError):
        return True


if __name__ == "__main__":
    sys.exit(main())
