"""Pool: multiprocessing.Pool's interface on top of one engine and a scheduler backend."""

from __future__ import annotations

import atexit
import hashlib
import inspect
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import cloudpickle

from . import chunking, config
from .backends import detect_backend, make_scheduler
from .code_identity import installed_versions, user_code_digest
from .engine import MapRun, raise_task_error
from .errors import InvalidInputError, UnpicklableError
from .log import close_map_logger, configure_verbose, map_logger
from .scheduler import Scheduler
from .work_dir import WorkDir, resolve_root

log = logging.getLogger("poolparty")

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

def pool_options() -> list[str]:
    """The options of Pool itself, which every backend takes."""
    return [name for name, parameter in inspect.signature(Pool.__init__).parameters.items()
            if name != "self" and parameter.kind is not parameter.VAR_KEYWORD]


def configured_scheduler(backend: str | Scheduler, processes: int | None,
                         resolved: dict[str, config.Resolved], keywords: dict) -> Scheduler:
    """make_scheduler with the backend options of the environment and config files
    that apply to the chosen backend (so it is detected first); keywords win."""
    if backend == "auto":
        backend = detect_backend()
    name = backend if isinstance(backend, str) else None
    return make_scheduler(backend, processes, {**config.scheduler_options(resolved, name),
                                               **keywords}, pool_options())


def check_python(python_path: str) -> str:
    """The python of the jobs must exist and import poolparty, or every job would fail."""
    resolved = shutil.which(python_path)
    if resolved is None:
        raise InvalidInputError(
            f"python_path {python_path!r} does not exist or is not executable. Give the path "
            f"of the python the compute nodes should run (default: {sys.executable})."
        )
    if os.path.realpath(resolved) == os.path.realpath(sys.executable):
        return resolved
    try:
        check = subprocess.run(
            [resolved, "-c", "import poolparty.worker"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise InvalidInputError(f"python_path {python_path!r} can't be run: {error}") from error
    if check.returncode != 0:
        raise InvalidInputError(
            f"python_path {python_path!r} can't import poolparty; install it there "
            f"(pip install poolparty) or leave python_path unset.\n"
            f"{check.stderr.decode(errors='replace')[-1000:]}"
        )
    return resolved


def check_max_num_resubmissions(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(
            f"max_num_resubmissions must be an int >= 0, not {value!r} (a limit is required: "
            f"a job that always dies would otherwise be resubmitted forever)."
        )
    return value


class Pool:
    """A process pool whose workers are batch jobs: multiprocessing.Pool's interface.

    ``Pool()`` uses SLURM job arrays when ``sbatch`` is on PATH, Sun Grid Engine when
    its ``qsub`` is, and local processes otherwise; ``backend=`` forces one
    (``"local"``, ``"slurm-array"``, ``"slurm"``, ``"sge"``). ``processes`` caps the
    jobs running at once. ``initializer(*initargs)`` runs once in each job before its
    tasks. Remaining keyword arguments go to the backend (e.g. ``partition=``,
    ``time=``, ``memory=`` for SLURM). An unknown option, or a value of the wrong type,
    is an ``InvalidOptionError`` (also a TypeError) naming it and the fix.

    What the tasks print goes to their job's log; the pool prints it on ``sys.stdout``
    as each chunk's results arrive (``relay_output=False``: not), as multiprocessing's
    workers print to the caller's terminal.

    An option left unset (None) comes from a ``POOLPARTY_*`` environment variable, a
    ``poolparty.toml`` / ``[tool.poolparty]`` file, or the default (see
    ``poolparty.config``); backend options from there are ignored by backends that
    don't take them.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Sequence = (),
        maxtasksperchild: int | None = None,
        *,
        backend: str | Scheduler | None = None,
        work_dir: str | os.PathLike | None = None,
        keep_work_dir: bool | None = None,
        reuse_results: bool | None = None,
        python_path: str | None = None,
        polling_interval: float | None = None,
        max_num_resubmissions: int | None = None,
        verbose: bool | None = None,
        progress: bool | None = None,
        relay_output: bool | None = None,
        core_dumps: bool | None = None,
        **backend_options: Any,
    ) -> None:
        values, resolved = config.pool_values({
            "processes": processes, "backend": backend, "work_dir": work_dir,
            "keep_work_dir": keep_work_dir, "reuse_results": reuse_results,
            "python_path": python_path,
            "polling_interval": polling_interval, "max_num_resubmissions": max_num_resubmissions,
            "verbose": verbose, "progress": progress, "relay_output": relay_output,
            "core_dumps": core_dumps,
            **backend_options,
        })
        processes, polling_interval = values["processes"], values["polling_interval"]
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if maxtasksperchild is not None and (
            not isinstance(maxtasksperchild, int) or maxtasksperchild <= 0
        ):
            raise ValueError("maxtasksperchild must be a positive int or None")
        configure_verbose(values["verbose"])
        self._scheduler = configured_scheduler(values["backend"], processes, resolved,
                                               backend_options)
        self._scheduler.check_available()
        self._scheduler.check_work_dir(resolve_root(values["work_dir"]))
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._work_dir_root = values["work_dir"]
        self._keep_work_dir = values["keep_work_dir"]
        self._core_dumps = values["core_dumps"]
        self._reuse_results = values["reuse_results"]
        self._python_path = check_python(values["python_path"] or sys.executable)
        self._polling_interval = float(polling_interval)
        self._max_num_resubmissions = check_max_num_resubmissions(values["max_num_resubmissions"])
        self._max_running = processes or self._scheduler.default_max_running
        self._progress = values["progress"]
        self._relay_output = values["relay_output"]
        self._state = RUN
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._running_maps: set[MapRun] = set()
        _live_pools.add(self)

    # ------------------------------------------------------------------ blocking calls
    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``[func(x) for x in iterable]``, computed by jobs; results in input order.

        The first task that raises makes map raise its exception (the remote traceback
        as its cause); the map's other jobs are then cancelled.
        """
        return self.map_async(func, iterable, chunksize).get()

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``[func(*args) for args in iterable]``, computed by jobs; in input order."""
        return self.starmap_async(func, iterable, chunksize).get()

    def apply(self, func: Callable, args: Sequence = (), kwds: dict | None = None) -> Any:
        """``func(*args, **kwds)`` in one job, waiting for the result."""
        return self.apply_async(func, args, kwds).get()

    # ------------------------------------------------------------------ in the background
    def apply_async(self, func: Callable, args: Sequence = (), kwds: dict | None = None,
                    callback: Callable | None = None,
                    error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        prepared = self._prepare(_apply, [(func, tuple(args), dict(kwds or {}))], 1, star=True)
        result = AsyncResult(self, prepared, callback, error_callback, single=True)
        self._in_background(result._run)
        return result

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None,
                  error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        result = AsyncResult(self, self._prepare(func, iterable, chunksize, star=False),
                             callback, error_callback)
        self._in_background(result._run)
        return result

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None,
                      error_callback: Callable | None = None) -> AsyncResult:
        self._check_running()
        result = AsyncResult(self, self._prepare(func, iterable, chunksize, star=True),
                             callback, error_callback)
        self._in_background(result._run)
        return result

    def imap(self, func: Callable, iterable: Iterable,
             chunksize: int | None = None) -> IMapIterator:
        """Results in input order, each as soon as it and those before it arrived. A
        task that raised raises at its position; iteration can go on after it."""
        self._check_running()
        iterator = IMapIterator(self, self._prepare(func, iterable, chunksize, star=False), True)
        self._in_background(iterator._run)
        return iterator

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int | None = None) -> IMapIterator:
        """Results in the order they arrive, chunk by chunk."""
        self._check_running()
        iterator = IMapIterator(self, self._prepare(func, iterable, chunksize, star=False), False)
        self._in_background(iterator._run)
        return iterator

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """No more work will be given; running maps go on."""
        if self._state == RUN:
            self._state = CLOSE

    def terminate(self) -> None:
        """Stop now: every running map cancels its jobs (and keeps its work_dir)."""
        self._cancel_maps()
        self._join_threads()
        self._scheduler.close()

    def _cancel_maps(self, timeout: float = 0.0) -> None:
        """Refuse more work and stop every running map (each cancels its jobs); wait up
        to ``timeout`` seconds until they have. A map that starts later stops at once."""
        self._state = TERMINATE
        with self._lock:
            runs = list(self._running_maps)
        stop_and_wait(runs, timeout)

    def join(self) -> None:
        """Wait for the background maps; only after close() or terminate()."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._join_threads()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Terminate; on Ctrl-C (a BaseException that is not an Exception) without
        waiting longer than a few seconds for the maps to cancel their jobs."""
        if kind is not None and not issubclass(kind, Exception):
            self._cancel_maps(CANCEL_WAIT_SECONDS)
            self._scheduler.close()
        else:
            self.terminate()

    def __reduce__(self):
        raise NotImplementedError(
            "pool objects cannot be passed between processes or pickled"
        )

    def __repr__(self) -> str:
        return (f"<poolparty.{type(self).__name__} state={self._state} "
                f"backend={self._scheduler.name} processes={self._max_running}>")

    def __del__(self, _warn: Callable = warnings.warn) -> None:
        """A pool dropped while running warns, as multiprocessing's does, and its maps
        (if any are left) are stopped, cancelling their jobs."""
        if getattr(self, "_state", None) != RUN:
            return
        _warn(f"unclosed running poolparty pool {self!r}", ResourceWarning, source=self)
        self._cancel_maps()

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    def _check_running(self) -> None:
        if self._state != RUN:
            raise ValueError("Pool not running")

    def _in_background(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._forget_when_done, args=(target,), daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _forget_when_done(self, target: Callable[[], None]) -> None:
        try:
            target()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _join_threads(self) -> None:
        """Wait for the background maps; a callback may call terminate() or join()
        from one of them, which must not wait for itself."""
        current = threading.current_thread()
        while True:
            with self._lock:
                threads = [thread for thread in self._threads if thread is not current]
            if not threads:
                return
            for thread in threads:
                thread.join()

    # ------------------------------------------------------------------ the one path
    def _default_chunksize(self, num_tasks: int) -> int:
        """The chunksize of a map called without one."""
        return chunking.default_chunksize(num_tasks, self._max_running)

    def _prepare(self, func: Callable, iterable: Iterable, chunksize: int | None,
                 star: bool) -> PreparedMap | None:
        """Check everything, pickle, write the work_dir: nothing is submitted yet.
        None for an empty iterable (nothing to do, nothing written)."""
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        chunksize = chunking.check_chunksize(chunksize)
        tasks = list(iterable)
        if not tasks:
            return None
        if chunksize is None:
            chunksize = self._default_chunksize(len(tasks))
        bounds = chunking.chunk_bounds(len(tasks), chunksize)
        function_blob = self._pickle_function(func, star)
        chunk_blobs = [pickle_chunk(tasks, chunk) for chunk in bounds]
        identity = map_identity(function_blob, chunk_blobs, self._python_path, user_code_digest())
        self._scheduler.check_work_dir(resolve_root(self._work_dir_root))  # the cwd may differ
        work_dir = self._claim_work_dir(identity)
        if not work_dir.has_inputs():
            try:
                work_dir.write_inputs(function_blob, chunk_blobs,
                                      self._metadata(len(tasks), chunksize))
            except InvalidInputError:  # no room: nothing worth keeping was written
                work_dir.remove()
                raise
        work_dir.write_job_script(self._python_path, self._core_dumps)
        map_log = map_logger(work_dir.path / "client.log.jsonl", work_dir.map_id)
        run = MapRun(self._scheduler, work_dir, bounds, self._polling_interval,
                     self._max_num_resubmissions, map_log, relay_output=self._relay_output)
        return PreparedMap(work_dir, bounds, len(tasks), run, map_log)

    def _claim_work_dir(self, identity: str) -> WorkDir:
        """The map's directory. With reuse_results=False, one an earlier run of the same
        map left is emptied first: its jobs still queued cancelled, its results deleted."""
        work_dir = WorkDir.create(self._work_dir_root, identity)
        while work_dir.resumed and not self._reuse_results:
            self._scheduler.cancel(work_dir, work_dir.recorded_chunks())
            log.info("reuse_results=False: deleted the earlier run's %s", work_dir.path)
            work_dir.remove()
            work_dir = WorkDir.create(self._work_dir_root, identity)
        return work_dir

    def _outcomes(self, prepared: PreparedMap) -> Iterator[tuple[int, list]]:
        """Drive one map; clean up after it: the work_dir goes on success (unless
        keep_work_dir) and stays, with a log line saying where, on any other end (a
        task that raised is one: its map can be run again, see resume.rst).

        The last chunk of a map that succeeded is handed out only after the cleanup:
        whoever sees the last result (imap, an Executor's future) may exit at once and
        leave nothing behind.
        """
        succeeded = False
        with self._lock:
            if self._state == TERMINATE:
                prepared.run.stop.set()
            self._running_maps.add(prepared.run)
        bar = progress_bar(prepared.num_tasks, prepared.work_dir.map_id) if self._progress else None
        prepared.log.info("map of %d task(s) in %d chunk(s) in %s", prepared.num_tasks,
                          len(prepared.bounds), prepared.work_dir.path)
        held: list[tuple[int, list]] = []  # the last chunks of a map that will be removed
        all_tasks_ok = True
        try:
            for chunk_id, outcomes in prepared.run.outcomes():
                if bar is not None:
                    bar.update(len(outcomes))
                all_tasks_ok = all_tasks_ok and all(outcome[0] for outcome in outcomes)
                held.append((chunk_id, outcomes))
                if not (all_tasks_ok and prepared.run.all_done()):
                    yield from held  # a map with a task that raised is kept: no need to wait
                    held.clear()
            succeeded = all_tasks_ok
        finally:
            self._end_map(prepared, succeeded, bar)
        yield from held

    def _end_map(self, prepared: PreparedMap, succeeded: bool, bar: Any) -> None:
        """Forget the map; remove its work_dir if it succeeded, else keep it and say so
        (except when it never had a job: its first submission was refused, or it was
        stopped before; then nothing is worth keeping)."""
        with self._lock:
            self._running_maps.discard(prepared.run)
        if bar is not None:
            bar.close()
        discard = (not self._keep_work_dir) if succeeded else prepared.run.submitted_nothing()
        if not succeeded and not discard:
            prepared.log.error("a task raised, or the map failed or was interrupted; "
                               "work_dir kept: %s", prepared.work_dir.path)
        close_map_logger(prepared.log)
        if discard:
            prepared.work_dir.remove()
        else:
            prepared.work_dir.release()

    def _collect(self, prepared: PreparedMap | None) -> list:
        """All results in input order; the first task error is raised at once."""
        if prepared is None:
            return []
        results: list[Any] = [None] * prepared.num_tasks
        outcomes_iterator = self._outcomes(prepared)
        try:
            for chunk_id, outcomes in outcomes_iterator:
                first = prepared.bounds[chunk_id].start
                for offset, outcome in enumerate(outcomes):
                    if not outcome[0]:
                        raise_task_error(outcome, first + offset, prepared.work_dir)
                    results[first + offset] = outcome[1]
        finally:
            outcomes_iterator.close()
        return results

    def dry_run_map(self, func: Callable, iterable: Iterable,
                    chunksize: int | None = None) -> MapPreview | None:
        """Write map(func, iterable)'s work_dir and job script as map would, and return
        the commands that would submit it, submitting nothing: a user checks what would
        reach the cluster (``poolparty run --dry-run``). Calling map with the same
        arguments later re-attaches to this work_dir. None for an empty iterable."""
        self._check_running()
        prepared = self._prepare(func, iterable, chunksize, star=False)
        if prepared is None:
            return None
        try:
            plan = self._scheduler.plan(prepared.work_dir, list(range(len(prepared.bounds))))
        finally:
            close_map_logger(prepared.log)
            prepared.work_dir.release()
        return MapPreview(prepared.work_dir.path, prepared.work_dir.script_path,
                          [list(submission.argv) for submission in plan])

    def _pickle_function(self, func: Callable, star: bool) -> bytes:
        try:
            return cloudpickle.dumps((func, star, self._initializer, self._initargs))
        except Exception as error:
            add_context(error, f"poolparty: the function {func!r} (or the initializer) "
                               f"can't be pickled to send it to the jobs. Define it at module "
                               f"level or avoid capturing open files, locks or connections.")
            raise

    def _metadata(self, num_tasks: int, chunksize: int) -> dict:
        return {
            "num_tasks": num_tasks,
            "chunksize": chunksize,
            "python_path": self._python_path,
            "backend": self._scheduler.name,
            "client_pid": os.getpid(),
            "client_host": os.uname().nodename,
            "import_paths": client_import_paths(),
            "python_version": sys.version.split()[0],
            "installed_versions": installed_versions(),
        }


@dataclass
class PreparedMap:
    """A map whose work_dir is written, ready to be driven by the engine."""

    work_dir: WorkDir
    bounds: list[range]
    num_tasks: int
    run: MapRun
    log: logging.Logger


@dataclass
class MapPreview:
    """What a dry run wrote, and the commands it did not run."""

    work_dir: Path
    job_script: Path
    commands: list[list[str]]


#: every Pool not yet garbage-collected, for the exit hook
_live_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def _cancel_maps_at_exit() -> None:
    """The interpreter is exiting with maps still running: a Ctrl-C escaped a wait that
    poolparty does not see (``concurrent.futures.as_completed``), or a script ended
    without waiting. Their jobs are cancelled, as multiprocessing terminates its
    workers at exit, rather than left running for nobody."""
    for pool in list(_live_pools):
        pool._cancel_maps(CANCEL_WAIT_SECONDS)


#: how long a caller interrupted while waiting (Ctrl-C) waits for its maps to have
#: cancelled their jobs before it raises: the background threads that cancel them are
#: daemons, which die with the interpreter
CANCEL_WAIT_SECONDS = 10.0
#: longest single wait on a lock or event: a caller blocked in one does not see an
#: interrupt that is not a real signal (``_thread.interrupt_main``) until it wakes
WAIT_SLICE_SECONDS = 0.25


def stop_and_wait(runs: Iterable[MapRun], timeout: float) -> None:
    """Stop these maps and wait until each has ended (its jobs cancelled), giving up
    ``timeout`` seconds after the first such wait for that map: the Ctrl-C wait, the
    ``with`` block's exit and the exit hook share the same few seconds."""
    runs = list(runs)
    now = time.monotonic()
    for run in runs:
        run.stop.set()
        if timeout > 0 and run.give_up_at is None:
            run.give_up_at = now + timeout
    for run in runs:
        left = (run.give_up_at or now) - time.monotonic()
        if left > 0 and not run.ended.wait(left):
            log.warning("the map in %s did not cancel its jobs within %.0f s (the scheduler "
                        "does not answer?); some may still be queued", run.work_dir.path,
                        timeout)


class cancelled_on_interrupt:
    """Every wait for results goes through this: Ctrl-C (KeyboardInterrupt, or another
    BaseException such as SystemExit from a signal handler) while waiting stops the maps
    waited on and waits, a few seconds at most, until their jobs are cancelled, then
    raises on. Without it the maps' background threads would die with the interpreter
    and leave the jobs running (and local workers would keep the process alive)."""

    def __init__(self, runs: Callable[[], Iterable[MapRun]]) -> None:
        self._runs = runs

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        if kind is not None and not issubclass(kind, Exception):
            stop_and_wait(self._runs(), CANCEL_WAIT_SECONDS)
        return False


def wait_in_slices(wait: Callable[[float], bool], timeout: float | None) -> bool:
    """``wait(seconds)`` again and again, at most WAIT_SLICE_SECONDS each, until it
    returns True (True) or ``timeout`` has passed (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
        if wait(max(0.0, min(left, WAIT_SLICE_SECONDS))):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


class ResultHandle:
    """A value or an exception that arrives later: multiprocessing's AsyncResult
    surface (ready, successful, wait, get with a timeout)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._success = False
        self._value: Any = None

    def _set(self, success: bool, value: Any) -> None:
        self._success, self._value = success, value
        self._event.set()

    def ready(self) -> bool:
        return self._event.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the outcome; Ctrl-C while waiting cancels the jobs of its map."""
        with cancelled_on_interrupt(self._runs):
            wait_in_slices(self._event.wait, timeout)

    def _runs(self) -> list[MapRun]:
        """The maps whose jobs this result waits for."""
        return []

    def get(self, timeout: float | None = None) -> Any:
        """The value, or the exception raised again."""
        self.wait(timeout)
        if not self.ready():
            raise multiprocessing.TimeoutError
        if self._success:
            return self._value
        raise self._value


class AsyncResult(ResultHandle):
    """The result of apply_async/map_async, as multiprocessing's AsyncResult.

    The map runs in a background thread; callbacks are called from that thread.
    """

    def __init__(self, pool: Pool, prepared: PreparedMap | None, callback: Callable | None,
                 error_callback: Callable | None, single: bool = False) -> None:
        super().__init__()
        self._pool = pool
        self._prepared = prepared
        self._callback = callback
        self._error_callback = error_callback
        self._single = single

    def _run(self) -> None:
        try:
            value = self._pool._collect(self._prepared)
            self._finish(True, value[0] if self._single else value)
        except BaseException as error:  # noqa: BLE001 - handed to the caller of get()
            self._finish(False, error)

    def _finish(self, success: bool, value: Any) -> None:
        """Record the outcome, then call back. A callback that raises is logged: it
        changes neither the result nor which callback runs."""
        callback = self._callback if success else self._error_callback
        self._success, self._value = success, value
        try:
            if callback is not None:
                callback(value)
        except Exception:  # noqa: BLE001 - the caller's result must not depend on it
            log.exception("the %s of %r raised", "callback" if success else "error_callback", self)
        finally:
            self._set(success, value)

    def _runs(self) -> list[MapRun]:
        return [self._prepared.run] if self._prepared is not None else []


class IMapIterator:
    """What imap and imap_unordered return: results as they arrive."""

    def __init__(self, pool: Pool, prepared: PreparedMap | None, ordered: bool) -> None:
        self._pool = pool
        self._prepared = prepared
        self._ordered = ordered
        self._condition = threading.Condition()
        self._arrived: dict[int, tuple] = {}  # task index -> outcome
        self._arrival_order: list[int] = []
        self._position = 0
        self._length = prepared.num_tasks if prepared else 0
        self._failure: BaseException | None = None

    def _run(self) -> None:
        if self._prepared is None:
            return
        try:
            for chunk_id, outcomes in self._pool._outcomes(self._prepared):
                first = self._prepared.bounds[chunk_id].start
                with self._condition:
                    for offset, outcome in enumerate(outcomes):
                        self._arrived[first + offset] = outcome
                        self._arrival_order.append(first + offset)
                    self._condition.notify_all()
        except BaseException as error:  # noqa: BLE001 - raised to the iterating caller
            with self._condition:
                self._failure = error
                self._condition.notify_all()

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; Ctrl-C while waiting cancels the map's jobs."""
        with cancelled_on_interrupt(self._runs), self._condition:
            if self._position >= self._length:
                raise StopIteration
            if not wait_in_slices(partial(self._condition.wait_for, self._has_next), timeout):
                raise multiprocessing.TimeoutError
            if self._ordered:
                index = self._position
            elif self._position < len(self._arrival_order):
                index = self._arrival_order[self._position]
            else:
                index = -1  # woken by a failure, nothing more arrived: raise it
            if index not in self._arrived and self._failure is not None:
                failure, self._length = self._failure, self._position
                raise failure
            outcome = self._arrived.pop(index)
            self._position += 1
        if outcome[0]:
            return outcome[1]
        raise_task_error(outcome, index, self._prepared.work_dir if self._prepared else None)

    __next__ = next

    def _runs(self) -> list[MapRun]:
        return [self._prepared.run] if self._prepared is not None else []

    def _has_next(self) -> bool:
        if self._failure is not None:
            return True
        if self._ordered:
            return self._position in self._arrived
        return self._position < len(self._arrival_order)


def _apply(func: Callable, args: tuple, kwds: dict) -> Any:
    """apply/apply_async's task: call with keyword arguments too."""
    return func(*args, **kwds)


def map_identity(function_blob: bytes, chunk_blobs: list[bytes], python_path: str,
                 code_digest: str) -> str:
    """A map's name in the work_dir, derived from what it computes: calling the same map
    again after the client died finds its directory, results and jobs. ``code_digest``
    covers the user's modules the jobs would import (poolparty.code_identity): results
    of an earlier run are never taken for those of changed code."""
    digest = hashlib.sha256(function_blob)
    digest.update(python_path.encode())
    digest.update(code_digest.encode())
    for blob in chunk_blobs:
        digest.update(len(blob).to_bytes(8, "little"))
        digest.update(blob)
    return "map-" + digest.hexdigest()[:24]


def progress_bar(total: int, map_id: str):
    """A tqdm bar for terminals and notebooks alike (tqdm.auto)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        raise InvalidInputError(
            "progress=True needs tqdm: pip install 'poolparty[progress]'"
        ) from error
    return tqdm(total=total, unit="task", desc=f"poolparty {map_id[:16]}")


def client_import_paths() -> list[str]:
    """The client's sys.path entries that are its own code, not an installation: the
    worker adds them so functions pickled by reference import on the node."""
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if not any(path == root or path.startswith(root + os.sep) for root in installed):
            paths.append(path)
    return list(dict.fromkeys(paths))


def pickle_chunk(tasks: list, chunk: range) -> bytes:
    """``(first_task_index, tasks)`` pickled; names the first task that can't be.

    cloudpickle, not pickle: a task may hold a function or an object defined in the
    caller's script (``__main__``), which plain pickle would store by a name the job
    can't import.
    """
    payload = (chunk.start, tasks[chunk.start : chunk.stop])
    try:
        return cloudpickle.dumps(payload)
    except Exception as chunk_error:
        for index in chunk:
            try:
                cloudpickle.dumps(tasks[index])
            except Exception as error:
                add_context(error, f"poolparty: task {index} ({tasks[index]!r:.100}) can't "
                                   f"be pickled to send it to the jobs")
                error.__suppress_context__ = True  # the chunk's failure is this one
                raise error
        add_context(chunk_error, f"poolparty: the tasks {chunk.start}..{chunk.stop - 1} "
                                 f"can't be pickled together to send them to the jobs")
        raise


def add_context(error: BaseException, note: str) -> None:
    """Say what poolparty was doing when ``error`` was raised, keeping its type so that
    the caller's ``except`` clauses catch it as with multiprocessing: a note (Python >=
    3.11), or else an :class:`UnpicklableError` carrying the note as its cause."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    elif error.__cause__ is None:
        error.__cause__ = UnpicklableError(note)
