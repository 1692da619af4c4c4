"""Pool: multiprocessing.Pool's interface on top of one engine and a scheduler backend."""

from __future__ import annotations

import atexit
import inspect
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable

from . import config
from .backends import detect_backend, make_scheduler
from .engine import MapRun
from .errors import InvalidInputError
from .imap import IMapIterator, start_imap
from .log import configure_verbose
from .maps import MapPreview, Maps, MapSettings, PreparedMap
from .scheduler import Scheduler
from .waiting import CANCEL_WAIT_SECONDS, cancelled_on_interrupt, wait_in_slices
from .work_dir import resolve_root

if TYPE_CHECKING:
    from .report import Report

log = logging.getLogger("poolparty")

RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

def pool_options() -> list[str]:
    """The options of Pool itself, which every backend takes."""
    return [name for name, parameter in inspect.signature(Pool.__init__).parameters.items()
            if name != "self" and parameter.kind is not parameter.VAR_KEYWORD]


def configured_scheduler(backend: str | Scheduler, processes: int | None,
                         resolved: dict[str, config.Resolved], keywords: dict,
                         use_allocation: bool = True) -> Scheduler:
    """make_scheduler with the backend options of the environment and config files
    that apply to the chosen backend (so it is detected first); keywords win."""
    if backend == "auto":
        backend = detect_backend(use_allocation)
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

    ``Pool()`` uses the steps of the SLURM allocation it runs in, SLURM job arrays when
    ``sbatch`` is on PATH, Sun Grid Engine, PBS or LSF when their commands are, and local
    processes otherwise; ``backend=`` forces one (``"local"``, ``"slurm-steps"``,
    ``"slurm-array"``, ``"slurm"``, ``"sge"``, ``"pbs"``, ``"lsf"``). Each job is a worker that
    claims chunks of tasks from the work_dir until none is left; ``processes`` is the
    most workers of a map at once. ``chunksize`` given is exactly what a worker claims
    at a time; by default the workers size their claims from the durations they measure.
    ``initializer(*initargs)`` runs once in each job before its first task. Remaining
    keyword arguments go to the backend (e.g. ``partition=``, ``time=``, ``memory=`` for
    SLURM). An unknown option, or a value of the wrong type, is an
    ``InvalidOptionError`` (also a TypeError) naming it and the fix.

    What the tasks print goes to their job's log; the pool prints it on ``sys.stdout``
    as each chunk's results arrive (``relay_output=False``: not), as multiprocessing's
    workers print to the caller's terminal.

    ``submit_workers=False`` submits nothing: the maps wait for workers started by hand
    (``poolparty worker MAP_DIR``: in an allocation you hold, on another partition, on a
    workstation that sees the work_dir), each map logging the command to run.

    A worker with nothing left to do waits ``idle_timeout`` seconds (default 10) for the
    pool's next map, ``apply_async`` or ``Executor.submit``, which then starts at once
    on it instead of queueing new jobs (warm workers; ``0``: workers exit as soon as
    their map's work is done). ``close()``, ``terminate()``, leaving ``with``, Ctrl-C
    and the client's exit end them.

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
        submit_workers: bool | None = None,
        idle_timeout: float | None = None,
        use_allocation: bool | None = None,
        **backend_options: Any,
    ) -> None:
        values, resolved = config.pool_values({
            "processes": processes, "backend": backend, "work_dir": work_dir,
            "keep_work_dir": keep_work_dir, "reuse_results": reuse_results,
            "python_path": python_path,
            "polling_interval": polling_interval, "max_num_resubmissions": max_num_resubmissions,
            "verbose": verbose, "progress": progress, "relay_output": relay_output,
            "core_dumps": core_dumps, "submit_workers": submit_workers,
            "idle_timeout": idle_timeout, "use_allocation": use_allocation, **backend_options,
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
                                               backend_options, values["use_allocation"])
        self._scheduler.check_available()
        self._scheduler.check_work_dir(resolve_root(values["work_dir"]))
        self._max_running = processes or self._scheduler.default_max_running
        #: how this pool prepares, runs and stops its maps: the API every front end uses
        self.maps = Maps(MapSettings(
            scheduler=self._scheduler,
            python_path=check_python(values["python_path"] or sys.executable),
            work_root=values["work_dir"],
            keep_work_dir=values["keep_work_dir"],
            reuse_results=values["reuse_results"],
            core_dumps=values["core_dumps"],
            polling_interval=float(polling_interval),
            max_num_resubmissions=check_max_num_resubmissions(values["max_num_resubmissions"]),
            progress=values["progress"],
            relay_output=values["relay_output"],
            submit_workers=values["submit_workers"],
            idle_timeout=values["idle_timeout"],
            default_chunksize=chunksize_rule(self),
            capacity=self._max_running,
            initializer=initializer,
            initargs=tuple(initargs),
        ))
        self._state = RUN
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        _live_pools.add(self)

    # ------------------------------------------------------------------ blocking calls
    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *,
            resources: dict | None = None) -> list:
        """``[func(x) for x in iterable]``, computed by jobs; results in input order.

        The first task that raises makes map raise its exception (the remote traceback
        as its cause); the map's other jobs are then cancelled.

        ``resources``: what this map's jobs ask for on top of the pool's, e.g.
        ``{"time": "4:00:00", "memory": "16G", "cpus": 4, "gpus": 1}`` (SLURM; SGE
        takes time, memory, cpus, queue and its own resource names): checked before
        anything is submitted; the map gets workers of its own.
        """
        return self.map_async(func, iterable, chunksize, resources=resources).get()

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None, *,
                resources: dict | None = None) -> list:
        """``[func(*args) for args in iterable]``, computed by jobs; in input order."""
        return self.starmap_async(func, iterable, chunksize, resources=resources).get()

    def apply(self, func: Callable, args: Sequence = (), kwds: dict | None = None, *,
              resources: dict | None = None) -> Any:
        """``func(*args, **kwds)`` in one job, waiting for the result."""
        return self.apply_async(func, args, kwds, resources=resources).get()

    # ------------------------------------------------------------------ in the background
    def apply_async(self, func: Callable, args: Sequence = (), kwds: dict | None = None,
                    callback: Callable | None = None,
                    error_callback: Callable | None = None, *,
                    resources: dict | None = None) -> AsyncResult:
        self._check_running()
        prepared = self.maps.prepare_calls([(func, args, kwds)], 1, resources)
        result = AsyncResult(self.maps, prepared, callback, error_callback, single=True)
        self._in_background(result._run)
        return result

    def map_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                  callback: Callable | None = None,
                  error_callback: Callable | None = None, *,
                  resources: dict | None = None) -> AsyncResult:
        self._check_running()
        result = AsyncResult(self.maps, self.maps.prepare(func, iterable, chunksize,
                                                          resources=resources),
                             callback, error_callback)
        self._in_background(result._run)
        return result

    def starmap_async(self, func: Callable, iterable: Iterable, chunksize: int | None = None,
                      callback: Callable | None = None,
                      error_callback: Callable | None = None, *,
                      resources: dict | None = None) -> AsyncResult:
        self._check_running()
        result = AsyncResult(self.maps, self.maps.prepare(func, iterable, chunksize, star=True,
                                                          resources=resources),
                             callback, error_callback)
        self._in_background(result._run)
        return result

    def imap(self, func: Callable, iterable: Iterable,
             chunksize: int | None = None, *, resources: dict | None = None) -> IMapIterator:
        """Results in input order, each as soon as it and those before it arrived. A
        task that raised raises at its position; iteration can go on after it.

        A list or other sized input is one map; any other iterable (a generator) is read
        as the workers need it, a bounded distance ahead (poolparty.imap): an endless
        one works, and an exception it raises comes out of next() at its position."""
        self._check_running()
        return start_imap(self.maps, func, iterable, chunksize, True, self._in_background,
                          resources)

    def imap_unordered(self, func: Callable, iterable: Iterable,
                       chunksize: int | None = None, *,
                       resources: dict | None = None) -> IMapIterator:
        """Results in the order they arrive, chunk by chunk; the input read as imap's."""
        self._check_running()
        return start_imap(self.maps, func, iterable, chunksize, False, self._in_background,
                          resources)

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """No more work will be given; running maps go on. The workers waiting for the
        pool's next map end now, or with the last map running."""
        if self._state == RUN:
            self._state = CLOSE
            self.maps.close()

    def report(self) -> Report:
        """Where the time of this pool's last map went (poolparty.report): its timeline,
        efficiency and cost; in Jupyter it shows itself. A map still at work is reported
        as far as it got. Raises NoMapError before any map started."""
        from .report import map_report

        if self.maps.last_map_dir is None:
            from .map_status import NoMapError

            raise NoMapError("this pool has run no map yet: nothing to report.")
        self.maps.wait_for_last_end(timeout=30)
        return map_report(self.maps.last_map_dir)

    def terminate(self) -> None:
        """Stop now: every running map cancels its jobs (and keeps its work_dir)."""
        self._cancel_maps()
        self._join_threads()
        self._scheduler.close()

    def _cancel_maps(self, timeout: float = 0.0) -> None:
        """Refuse more work and stop every running map (each cancels its jobs); wait up
        to ``timeout`` seconds until they have. A map that starts later stops at once."""
        self._state = TERMINATE
        self.maps.stop_all(timeout)

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
        """Started under the lock: a terminate() from another thread joins every
        thread it sees, and joining one not yet started raises."""
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
    def _default_chunksize(self, num_tasks: int) -> int | None:
        """The chunksize of a map called without one: None, the workers size their
        claims from the durations they measure (poolparty.chunking)."""
        return None

    def dry_run_map(self, func: Callable, iterable: Iterable,
                    chunksize: int | None = None) -> MapPreview | None:
        """Write map(func, iterable)'s work_dir and job script as map would, and return
        the commands that would submit it, submitting nothing: a user checks what would
        reach the cluster (``poolparty run --dry-run``). Calling map with the same
        arguments later re-attaches to this work_dir. None for an empty iterable."""
        self._check_running()
        return self.maps.dry_run(func, iterable, chunksize)


def chunksize_rule(pool: Pool) -> Callable[[int], int | None]:
    """The pool's ``_default_chunksize`` for its maps, without keeping the pool alive: a
    pool dropped while running warns and stops its maps as soon as it is dropped, as
    multiprocessing's does, not at the next garbage collection."""
    method = weakref.WeakMethod(pool._default_chunksize)
    return lambda num_tasks: method()(num_tasks)  # type: ignore[misc]


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

    def __init__(self, maps: Maps, prepared: PreparedMap | None, callback: Callable | None,
                 error_callback: Callable | None, single: bool = False) -> None:
        super().__init__()
        self._maps = maps
        self._prepared = prepared
        self._callback = callback
        self._error_callback = error_callback
        self._single = single

    def _run(self) -> None:
        try:
            value = self._maps.collect(self._prepared)
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
