"""joblib on poolparty: ``joblib.Parallel`` whose batches run as poolparty jobs.

    import joblib
    import poolparty.joblib_backend  # registers the "poolparty" joblib backend

    with joblib.parallel_backend("poolparty", pool_backend="slurm-array", partition="short"):
        squares = joblib.Parallel(n_jobs=20)(joblib.delayed(pow)(x, 2) for x in range(100))

Importing this module registers the backend (``register()`` does it again, e.g. after
something replaced it). Each batch joblib dispatches is one ``Pool.apply_async``, that is
one job; at most ``n_jobs`` of them are submitted at once, on every scheduler. See
docs/joblib.rst.
"""

from __future__ import annotations

import collections
import logging
import operator
import threading
from functools import partial
from typing import Any, Callable

try:
    import joblib
    from joblib.parallel import FallbackToBackend, ParallelBackendBase, SequentialBackend
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "poolparty.joblib_backend needs joblib: pip install 'poolparty[joblib]'"
    ) from error

from .backends import default_capacity
from .errors import PoolTerminated
from .pool import Pool, ResultHandle

log = logging.getLogger("poolparty")

NAME = "poolparty"

#: Pool keywords that joblib's ``parallel_backend``/``parallel_config`` keep for
#: themselves; they reach the Pool under these names instead.
RENAMED_OPTIONS = {"pool_backend": "backend", "pool_verbose": "verbose"}


def register(make_default: bool = False) -> None:
    """Make ``joblib.parallel_backend("poolparty", ...)`` available (done on import)."""
    joblib.register_parallel_backend(NAME, PoolpartyBackend, make_default=make_default)


class BatchFuture(ResultHandle):
    """What ``submit``/``apply_async`` return for one joblib batch, resolved once, when
    the batch's job ends, before joblib's callback runs."""

    def __init__(self, callback: Callable | None) -> None:
        super().__init__()
        self._callback = callback

    def settle(self, success: bool, value: Any) -> None:
        """Record how the batch ended: its results, or the exception to raise."""
        self._set(success, value)

    def call_back(self) -> None:
        """Tell joblib the batch ended. A callback that raises is logged: the batch's
        outcome is already recorded, and the thread calling this is the pool's."""
        if self._callback is None:
            return
        try:
            self._callback(self)
        except Exception:
            log.exception("joblib's batch callback raised")


class PoolpartyBackend(ParallelBackendBase):
    """A joblib backend running each batch as a job of a :class:`poolparty.Pool`.

    The keyword arguments are those of ``poolparty.Pool`` except ``processes``, which
    is joblib's ``n_jobs``. Because ``parallel_backend()`` and ``parallel_config()``
    take ``backend=`` and ``verbose=`` for themselves, pass the Pool's as
    ``pool_backend=`` and ``pool_verbose=`` there (``backend=`` works when you build
    the backend yourself: ``parallel_backend(PoolpartyBackend(backend="sge"))``).

    ``n_jobs`` is how many batches run at once: ``Pool(processes=n_jobs)``, and this
    backend never has more than ``n_jobs`` batches submitted, on any scheduler. A
    negative ``n_jobs`` (joblib's "all") is ``processes=None``: the scheduler's default
    decides. ``n_jobs=1`` runs the tasks in this process, as with every joblib backend.
    """

    default_n_jobs = -1
    supports_retrieve_callback = True  # joblib >= 1.3: results arrive through callbacks
    supports_timeout = True  # joblib < 1.3 calls get(timeout=...) on what we return
    supports_sharedmem = False
    supports_inner_max_num_threads = False
    uses_threads = False

    def __init__(self, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **pool_options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        if "processes" in pool_options:
            raise TypeError("pass n_jobs= to joblib instead of processes= to the pool")
        for alias, name in RENAMED_OPTIONS.items():
            if alias in pool_options:
                if name in pool_options:
                    raise TypeError(f"give {alias}= or {name}=, not both")
                pool_options[name] = pool_options.pop(alias)
        self.pool_options = pool_options
        self.parallel = None
        self._lock = threading.Lock()
        self._pool: Pool | None = None
        self._n_jobs: int | None = None  # as joblib asked, to configure again after abort
        self._processes: int | None = None
        self._limit = 1  # batches allowed in the pool at once
        self._running = 0  # batches given to the pool, not finished
        self._waiting: collections.deque[tuple[BatchFuture, Callable]] = collections.deque()

    @property
    def pool(self) -> Pool | None:
        """The Pool of the current Parallel call (None before configure, after terminate)."""
        return self._pool

    # ------------------------------------------------------------------ sizes
    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        processes = processes_for(n_jobs)
        if processes is not None:
            return processes
        with self._lock:
            if self._pool is not None and self._processes is None:
                return self._limit
        return self._scheduler_default()

    def _scheduler_default(self) -> int:
        """How many jobs the chosen scheduler runs at once when not told (no pool yet)."""
        return default_capacity(self.pool_options.get("backend", "auto"))

    # ------------------------------------------------------------------ life cycle
    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None,
                  require: Any = None, **joblib_options: Any) -> int:
        """Make the Pool (``processes=n_jobs``) and return how many batches run at once.

        joblib's own options (temp_folder, max_nbytes, mmap_mode, context, ...) are for
        its process pools and are ignored here.
        """
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        self.parallel = parallel
        processes = processes_for(n_jobs)
        if processes == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        with self._lock:
            reuse = self._pool is not None and self._processes == processes
        if not reuse:
            self.terminate()
            pool = Pool(processes=processes, **self.pool_options)
            with self._lock:
                self._pool, self._processes = pool, processes
                self._limit = processes or pool.scheduler.default_max_running
                self._running = 0
        self._n_jobs = n_jobs
        return self._limit

    def terminate(self) -> None:
        """Stop the Pool (its jobs still queued are cancelled); batches not yet given
        to it fail with PoolTerminated."""
        with self._lock:
            pool, self._pool = self._pool, None
            waiting = list(self._waiting)
            self._waiting.clear()
            self._running = 0
        for future, _ in waiting:
            self._finish(future, None, False,
                         PoolTerminated("the joblib backend was terminated before this batch ran"))
        if pool is not None:
            pool.terminate()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: cancel every other batch, and start afresh if joblib goes on."""
        self.terminate()
        if ensure_ready:
            self.configure(n_jobs=self._n_jobs, parallel=self.parallel)

    # ------------------------------------------------------------------ batches
    def submit(self, func: Callable, callback: Callable | None = None) -> BatchFuture:
        """Run one joblib batch as one job; ``callback(future)`` when it ends, whatever
        the end. Never blocks: past ``n_jobs`` batches in the pool it waits in a queue."""
        future = BatchFuture(callback)
        with self._lock:
            if self._pool is None:
                raise RuntimeError("the poolparty joblib backend is not configured "
                                   "(or was terminated)")
            self._waiting.append((future, func))
        self._start_waiting()
        return future

    def apply_async(self, func: Callable, callback: Callable | None = None) -> BatchFuture:
        """joblib < 1.5 calls this name."""
        return self.submit(func, callback)

    def retrieve_result_callback(self, out: BatchFuture) -> Any:
        """joblib >= 1.3: the batch's results, or the task's exception raised."""
        return out.get()

    def _start_waiting(self) -> None:
        """Give waiting batches to the pool while fewer than ``n_jobs`` run there."""
        while True:
            with self._lock:
                if self._pool is None or not self._waiting or self._running >= self._limit:
                    return
                future, func = self._waiting.popleft()
                self._running += 1
                pool = self._pool
            try:
                pool.apply_async(func,
                                 callback=partial(self._finish, future, pool, True),
                                 error_callback=partial(self._finish, future, pool, False))
            except BaseException as error:
                # Fail it from another thread, as if the job had: this thread may be
                # inside joblib's callback, holding joblib's lock.
                threading.Thread(target=self._finish, args=(future, pool, False, error),
                                 daemon=True).start()
                if not isinstance(error, Exception):
                    raise

    def _finish(self, future: BatchFuture, pool: Pool | None, success: bool, value: Any) -> None:
        """A batch ended: free its place, start the next one, then tell joblib. Only the
        first call counts (the pool calls error_callback too if a callback raises)."""
        with self._lock:
            if future.ready():
                return
            future.settle(success, value)
            if pool is not None and pool is self._pool:
                self._running -= 1
        self._start_waiting()
        future.call_back()


def processes_for(n_jobs: int | None) -> int | None:
    """joblib's ``n_jobs`` as ``Pool(processes=...)``: negative means the scheduler
    decides (None); None, joblib's "not given", is 1."""
    if n_jobs is None:
        return 1
    try:
        n_jobs = operator.index(n_jobs)
    except TypeError:
        raise ValueError(f"n_jobs must be an int, not {n_jobs!r}") from None
    return None if n_jobs < 0 else n_jobs


register()
