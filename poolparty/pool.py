"""Pool: multiprocessing.Pool's interface on top of one engine and a scheduler backend."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
from typing import Any, Callable, Iterable, Sequence

import cloudpickle

from . import chunking
from .engine import MapRun, raise_task_error
from .errors import InvalidInputError
from .log import close_map_logger, configure_verbose, map_logger
from .scheduler import Scheduler
from .work_dir import WorkDir

log = logging.getLogger("poolparty")

BACKENDS = ("auto", "local", "slurm-array", "slurm", "sge")


def make_scheduler(backend: str | Scheduler, processes: int | None, options: dict) -> Scheduler:
    """Turn ``backend=`` into a Scheduler; unknown options are a TypeError, as usual."""
    if isinstance(backend, Scheduler):
        if options:
            raise TypeError(f"unexpected keyword argument(s) {sorted(options)} with a Scheduler")
        return backend
    if backend == "auto":
        backend = detect_backend()
    if backend == "local":
        from .local import Local

        return Local(max_workers=processes, **options)
    if backend == "slurm-array":
        from .slurm.array import SlurmArray

        return SlurmArray(processes, **options)
    if backend == "slurm":
        from .slurm import SlurmJobs

        return SlurmJobs(processes, **options)
    if backend == "sge":
        from .sun_grid_engine import SunGridEngine

        return SunGridEngine(processes, **options)
    raise InvalidInputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")


def detect_backend() -> str:
    """The best scheduler installed here; the choice is logged.

    PBS/Torque ship a ``qsub`` too, so SGE is recognised by what ``qstat -help`` says.
    """
    if shutil.which("sbatch"):
        log.info("sbatch found: running on SLURM job arrays")
        return "slurm-array"
    if shutil.which("qsub") and shutil.which("qstat"):
        from .sun_grid_engine import is_sun_grid_engine

        try:
            help_text = subprocess.run(
                ["qstat", "-help"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            help_text = ""
        if is_sun_grid_engine(help_text):
            log.info("Sun Grid Engine found (%s): running on SGE array jobs",
                     help_text.splitlines()[0].strip())
            return "sge"
        log.info("a qsub was found but it is not Sun Grid Engine's (PBS/Torque?): not used")
    log.info("no batch scheduler found (no sbatch, no SGE qsub on PATH): running on local processes")
    return "local"


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
    """A process pool whose workers are batch jobs.

    ``Pool()`` uses SLURM job arrays when ``sbatch`` is on PATH and local processes
    otherwise; ``backend=`` forces one (``"local"``, ``"slurm-array"``). ``processes``
    caps the jobs running at once. Remaining keyword arguments go to the backend
    (e.g. ``partition=``, ``time=``, ``memory=`` for SLURM); unknown ones are a
    TypeError.
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable | None = None,
        initargs: Sequence = (),
        maxtasksperchild: int | None = None,
        *,
        backend: str | Scheduler = "auto",
        work_dir: str | os.PathLike | None = None,
        keep_work_dir: bool = False,
        python_path: str | None = None,
        polling_interval: float = 5.0,
        max_num_resubmissions: int = 3,
        verbose: bool = False,
        **backend_options: Any,
    ) -> None:
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if not polling_interval > 0:
            raise InvalidInputError(f"polling_interval must be > 0 seconds, not {polling_interval!r}")
        configure_verbose(verbose)
        self._scheduler = make_scheduler(backend, processes, backend_options)
        self._scheduler.check_available()
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._work_dir_root = work_dir
        self._keep_work_dir = keep_work_dir
        self._python_path = check_python(python_path or sys.executable)
        self._polling_interval = float(polling_interval)
        self._max_num_resubmissions = check_max_num_resubmissions(max_num_resubmissions)
        self._max_running = processes or self._scheduler.default_max_running
        self._closed = False

    # ------------------------------------------------------------------ public API
    def map(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``[func(x) for x in iterable]``, computed by jobs; results in input order."""
        return self._map(func, iterable, chunksize, star=False)

    def starmap(self, func: Callable, iterable: Iterable, chunksize: int | None = None) -> list:
        """``[func(*args) for args in iterable]``, computed by jobs; in input order."""
        return self._map(func, iterable, chunksize, star=True)

    def close(self) -> None:
        self._closed = True

    def terminate(self) -> None:
        self._closed = True

    def join(self) -> None:
        if not self._closed:
            raise ValueError("Pool is still running")

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.terminate()

    @property
    def scheduler(self) -> Scheduler:
        return self._scheduler

    # ------------------------------------------------------------------ the map
    def _map(self, func: Callable, iterable: Iterable, chunksize: int | None, star: bool) -> list:
        if self._closed:
            raise ValueError("Pool not running")
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        chunksize = chunking.check_chunksize(chunksize)
        tasks = list(iterable)
        if not tasks:
            return []
        if chunksize is None:
            chunksize = chunking.default_chunksize(len(tasks), self._max_running)
        bounds = chunking.chunk_bounds(len(tasks), chunksize)
        function_blob = self._pickle_function(func, star)
        chunk_blobs = [pickle_chunk(tasks, chunk) for chunk in bounds]
        work_dir = WorkDir.create(self._work_dir_root)
        work_dir.write_inputs(function_blob, chunk_blobs, self._metadata(len(tasks), chunksize))
        work_dir.write_job_script(self._python_path)
        return self._run(work_dir, bounds, len(tasks))

    def _run(self, work_dir: WorkDir, bounds: list[range], num_tasks: int) -> list:
        map_log = map_logger(work_dir.path / "client.log.jsonl", work_dir.map_id)
        run = MapRun(
            self._scheduler, work_dir, bounds, self._polling_interval,
            self._max_num_resubmissions, map_log,
        )
        map_log.info("map of %d task(s) in %d chunk(s) in %s", num_tasks, len(bounds), work_dir.path)
        results: list[Any] = [None] * num_tasks
        succeeded = False
        try:
            for chunk_id, outcomes in run.outcomes():
                first = bounds[chunk_id].start
                for offset, outcome in enumerate(outcomes):
                    if not outcome[0]:
                        raise_task_error(outcome, first + offset, work_dir)
                    results[first + offset] = outcome[1]
            succeeded = True
        except BaseException:
            map_log.error("map failed or interrupted; work_dir kept: %s", work_dir.path)
            raise
        finally:
            close_map_logger(map_log)
            if succeeded and not self._keep_work_dir:
                work_dir.remove()
        return results

    def _pickle_function(self, func: Callable, star: bool) -> bytes:
        try:
            return cloudpickle.dumps((func, star, self._initializer, self._initargs))
        except Exception as error:
            raise UnpicklableError(
                f"the function {func!r} (or the initializer) can't be pickled to send it to "
                f"the jobs: {type(error).__name__}: {error}. Define it at module level or "
                f"avoid capturing open files, locks or connections."
            ) from error

    def _metadata(self, num_tasks: int, chunksize: int) -> dict:
        return {
            "num_tasks": num_tasks,
            "chunksize": chunksize,
            "python_path": self._python_path,
            "backend": self._scheduler.name,
            "client_pid": os.getpid(),
            "client_host": os.uname().nodename,
            "import_paths": client_import_paths(),
        }


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


class UnpicklableError(InvalidInputError, TypeError):
    """A function or task can't be pickled; raised before anything is submitted."""


def pickle_chunk(tasks: list, chunk: range) -> bytes:
    """``(first_task_index, tasks)`` pickled; names the first task that can't be."""
    payload = (chunk.start, tasks[chunk.start : chunk.stop])
    try:
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    try:
        return cloudpickle.dumps(payload)
    except Exception:
        for index in chunk:
            try:
                cloudpickle.dumps(tasks[index])
            except Exception as error:
                raise UnpicklableError(
                    f"task {index} ({tasks[index]!r:.100}) can't be pickled to send it to the "
                    f"jobs: {type(error).__name__}: {error}"
                ) from error
        raise
