"""Maps: the one internal API for preparing a map and streaming its outcomes.

Every front end runs its work through it: ``Pool`` (multiprocessing's interface),
``Executor`` (concurrent.futures) and the joblib backend. Each of them owns a Pool and
uses ``pool.maps``: ``prepare`` (or ``prepare_calls``) checks and pickles the tasks and
writes the work_dir, nothing submitted yet; ``outcomes`` drives the map through the
engine and yields each task's outcome as it arrives; ``collect`` is all of them in
input order; ``dry_run`` previews the submission; ``stop_all`` stops every running map.
So no front end calls another's private methods, and a change to how maps run is made
here once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import cloudpickle

from . import chunking
from .code_identity import installed_versions, user_code_digest
from .endings import Ending
from .engine import MapRun, raise_task_error
from .errors import InvalidInputError, UnpicklableError
from .lobby import Lobby
from .log import close_map_logger, map_logger
from .scheduler import Scheduler
from .work_dir import WorkDir, resolve_root
from .worker import Outcome, apply_call

#: a map's own resources (``pool.map(..., resources={...})``), None: the pool's
Resources = Optional[dict[str, Any]]

log = logging.getLogger("poolparty")
#: how long closing a pool waits for its idle workers to leave by themselves
WARM_EXIT_SECONDS = 2.0


@dataclass(frozen=True)
class MapSettings:
    """What a Pool resolved once (arguments, configuration, defaults) for all its maps."""

    scheduler: Scheduler
    python_path: str
    work_root: str | os.PathLike | None
    keep_work_dir: bool
    reuse_results: bool
    core_dumps: bool
    polling_interval: float
    max_num_resubmissions: int
    progress: bool
    relay_output: bool
    #: False: no worker is submitted, the maps wait for workers started by hand
    submit_workers: bool
    #: the chunksize of a map given none, from its number of tasks (a pool decides);
    #: None: claims sized by the workers
    default_chunksize: Callable[[int], int | None]
    #: how many workers may run at once
    capacity: int = 8
    #: how long a worker with nothing to do waits for the pool's next map (0: not at all)
    idle_timeout: float = 0.0
    initializer: Callable | None = None
    initargs: tuple = ()


@dataclass
class PreparedMap:
    """A map whose work_dir is written, ready to be driven by the engine."""

    work_dir: WorkDir
    num_tasks: int
    run: MapRun
    log: logging.Logger


@dataclass
class MapPreview:
    """What a dry run wrote, and the commands it did not run."""

    work_dir: Path
    job_script: Path
    commands: list[list[str]]


class Maps:
    """The maps of one pool: prepare, run and stop them (see the module's docstring)."""

    def __init__(self, settings: MapSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._running: set[MapRun] = set()
        self._stopped = False  # after stop_all, a map that starts stops at once
        self._closing = False  # after close: the warm workers end with the last map
        #: where the pool's workers wait for its next map (made with the first map)
        self._lobby: Lobby | None = None
        #: workers left running by maps that succeeded (warm): their run's key in the
        #: lobby, their map's work_dir (which names their jobs), their numbers
        self._warm: list[tuple[str, WorkDir, list[int]]] = []
        #: the group of each prepared map that is part of one call (imap's segments)
        self._groups: dict[MapRun, object] = {}
        #: the directory of the last map started (its report: poolparty.report), and
        #: whether it ended: its last results reach the caller before the end of a map
        #: whose task raised is written
        self.last_map_dir: Path | None = None
        self.last_map_ended = threading.Event()

    # ------------------------------------------------------------------ preparing
    def check_map_arguments(self, func: Callable, chunksize: int | None,
                            resources: Resources = None) -> int | None:
        """The checks made before anything is read or written; the chunksize checked."""
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        self.scheduler_for(resources)
        return chunking.check_chunksize(chunksize)

    def scheduler_for(self, resources: Resources) -> Scheduler:
        """The pool's backend, asking for a map's own ``resources`` (checked now)."""
        if resources is not None and not isinstance(resources, dict):
            raise TypeError(f"resources must be a dict, e.g. {{'time': '2:00:00', "
                            f"'memory': '8G'}}, not {resources!r}")
        return self.settings.scheduler.with_resources(resources or {})

    def prepare(self, func: Callable, tasks: Iterable, chunksize: int | None = None,
                star: bool = False, group: object = None, resources: Resources = None
                ) -> PreparedMap | None:
        """Check everything, pickle, write the work_dir: nothing is submitted yet.
        ``star``: each task is a tuple of arguments. None for no tasks (nothing to
        do, nothing written). ``group``: the maps that are parts of one call (imap's
        segments): each counts the workers serving the others as its own.
        ``resources``: the map's own (time, memory, ...): its workers are its own too,
        neither warm workers of the pool's other maps nor kept warm for them."""
        chunksize = self.check_map_arguments(func, chunksize, resources)
        scheduler = self.scheduler_for(resources)
        tasks = list(tasks)
        if not tasks:
            return None
        if chunksize is None:
            chunksize = self.settings.default_chunksize(len(tasks))
        block = chunking.block_size(len(tasks), chunksize)
        function_blob = self._pickle_function(func, star)
        chunk_blobs = [pickle_chunk(tasks, chunk)
                       for chunk in chunking.chunk_bounds(len(tasks), block)]
        identity = map_identity(function_blob, chunk_blobs, self.settings.python_path,
                                user_code_digest())
        self.settings.scheduler.check_work_dir(resolve_root(self.settings.work_root))  # cwd
        work_dir = self._claim_work_dir(identity)
        if not work_dir.has_inputs():
            try:
                work_dir.write_inputs(function_blob, chunk_blobs,
                                      self._metadata(len(tasks), block, chunksize, scheduler))
            except InvalidInputError:  # no room: nothing worth keeping was written
                work_dir.remove()
                raise
        lobby = None if resources else self._lobby_of_pool()
        # the same map may run again (same work_dir): each run has its own key there
        run_key = f"{work_dir.map_id}.{os.urandom(4).hex()}"
        waiting = None if lobby is None else (lobby.path, self.settings.idle_timeout, run_key)
        work_dir.write_job_script(self.settings.python_path, self.settings.core_dumps, waiting)
        return self._prepared(work_dir, len(tasks), block, run_key, group, scheduler, lobby)

    def prepare_calls(self, calls: Iterable[tuple[Callable, tuple, dict]],
                      chunksize: int | None = None, resources: Resources = None
                      ) -> PreparedMap | None:
        """``prepare`` for calls shaped as apply's and submit's: each one is
        ``(function, args, kwargs)``, run as ``function(*args, **kwargs)``."""
        checked = [(function, tuple(args), dict(kwargs or {})) for function, args, kwargs in calls]
        return self.prepare(apply_call, checked, chunksize, star=True, resources=resources)

    def _prepared(self, work_dir: WorkDir, num_tasks: int, block: int,
                  run_key: str = "", group: object = None, scheduler: Scheduler | None = None,
                  lobby: Lobby | None = None) -> PreparedMap:
        map_log = map_logger(work_dir.path / "client.log.jsonl", work_dir.map_id)
        run = MapRun(scheduler or self.settings.scheduler, work_dir, num_tasks,
                     self.settings.polling_interval, self.settings.max_num_resubmissions,
                     map_log, capacity=self._workers(num_tasks, block), block=block,
                     relay_output=self.settings.relay_output,
                     submit_workers=self.settings.submit_workers,
                     settle_workers=self.settings.keep_work_dir,
                     lobby=lobby, lobby_key=run_key,
                     running_maps=partial(self._running_ids, group),
                     end_pool_workers=self._end_warm_workers,
                     watch_claims=group is not None)
        if group is not None:
            with self._lock:
                self._groups[run] = group
        return PreparedMap(work_dir, num_tasks, run, map_log)

    # ------------------------------------------------------------------ warm workers
    def _lobby_of_pool(self) -> Lobby | None:
        """The pool's lobby, made with its first map; None without warm workers (an
        idle_timeout of 0, or workers started by hand)."""
        if not self.keeps_workers_warm():
            return None
        with self._lock:
            if self._lobby is None:
                self._lobby = Lobby(resolve_root(self.settings.work_root))
            return self._lobby

    def keeps_workers_warm(self) -> bool:
        """Whether workers wait in the pool's lobby for its next map."""
        return self.settings.idle_timeout > 0 and self.settings.submit_workers

    def stopped(self) -> bool:
        """stop_all was called: every map from now on stops at once."""
        return self._stopped

    def _running_ids(self, group: object = None) -> set[str]:
        """The lobby keys of the maps running, but those of ``group`` (if any)."""
        with self._lock:
            return {run.lobby_key for run in self._running
                    if group is None or self._groups.get(run) is not group}

    def _end_warm_workers(self, close: bool = False) -> None:
        """Cancel the workers that wait in the lobby (or serve a map of the pool);
        ``close``: and close the lobby, so none waits there any more. Best effort: a
        scheduler that does not answer is logged, never raised."""
        with self._lock:
            warm, self._warm = self._warm, []
            lobby = self._lobby
        if lobby is not None and close:
            lobby.close()
            warm = self._still_present(lobby, warm)
        for _, work_dir, worker_ids in warm:
            try:
                self.settings.scheduler.cancel(work_dir, worker_ids)
            except Exception as error:  # noqa: BLE001
                log.warning("could not cancel the pool's waiting workers %s: %s",
                            worker_ids, error)
        if warm:
            log.info("cancelled the pool's %d waiting worker(s)",
                     sum(len(w) for _, _, w in warm))
        if lobby is not None and close:
            lobby.remove()

    @staticmethod
    def _still_present(lobby: Lobby, warm: list[tuple[str, WorkDir, list[int]]]
                       ) -> list[tuple[str, WorkDir, list[int]]]:
        """The lobby is closed: idle workers leave by themselves at their next look (a
        clean exit, no scheduler call). Wait WARM_EXIT_SECONDS at most for that; the
        ones still present then (busy with a claim) are returned, to be cancelled."""
        deadline = time.monotonic() + WARM_EXIT_SECONDS
        while True:
            present = lobby.present()
            left = [(key, work_dir, [w for w in ids if (key, w) in present])
                    for key, work_dir, ids in warm]
            left = [entry for entry in left if entry[2]]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.05)

    def close(self) -> None:
        """No more maps: the warm workers end now, or with the last map running."""
        with self._lock:
            self._closing = True
            idle = not self._running
        if idle:
            self._end_warm_workers(close=True)

    def _workers(self, num_tasks: int, block: int) -> int:
        """How many workers a map gets at most: the capacity, or one per block."""
        return max(1, min(self.settings.capacity, -(-num_tasks // block)))

    def _claim_work_dir(self, identity: str) -> WorkDir:
        """The map's directory. With reuse_results=False, one an earlier run of the same
        map left is emptied first: its jobs still queued cancelled, its results deleted."""
        work_dir = WorkDir.create(self.settings.work_root, identity)
        while work_dir.resumed and not self.settings.reuse_results:
            self.settings.scheduler.cancel(work_dir, work_dir.recorded_chunks())
            log.info("reuse_results=False: deleted the earlier run's %s", work_dir.path)
            work_dir.remove()
            work_dir = WorkDir.create(self.settings.work_root, identity)
        return work_dir

    def _pickle_function(self, func: Callable, star: bool) -> bytes:
        try:
            return cloudpickle.dumps((func, star, self.settings.initializer,
                                      self.settings.initargs))
        except Exception as error:
            add_context(error, f"poolparty: the function {func!r} (or the initializer) "
                               f"can't be pickled to send it to the jobs. Define it at module "
                               f"level or avoid capturing open files, locks or connections.")
            raise

    def _metadata(self, num_tasks: int, block: int, claim_unit: int | None,
                  scheduler: Scheduler) -> dict:
        return {
            "num_tasks": num_tasks,
            # which making of this directory: a job submitted for an earlier one that
            # starts only now (its map ended, the same map was called again) leaves
            "incarnation": os.urandom(8).hex(),
            # what the workers need to size their claims (poolparty.worker.Pace)
            "block": block,
            "claim_unit": claim_unit,
            "workers": self._workers(num_tasks, block),
            "time_limit_seconds": scheduler.time_limit_seconds,
            # a task's MemoryError under the job's memory limit (SGE's h_vmem) is then
            # the job running out of memory: its claim runs again with more
            "memory_raisable": scheduler.raises(Ending.OUT_OF_MEMORY),
            "python_path": self.settings.python_path,
            "backend": self.settings.scheduler.name,
            "client_pid": os.getpid(),
            "client_host": os.uname().nodename,
            "import_paths": client_import_paths(),
            "python_version": sys.version.split()[0],
            "installed_versions": installed_versions(),
        }

    # ------------------------------------------------------------------ running
    def outcomes(self, prepared: PreparedMap) -> Iterator[tuple[int, Outcome]]:
        """Run the map: ``(task index, outcome)`` for each task as its chunk's result
        arrives, a chunk's tasks in a row. Cleans up after it (see ``chunk_outcomes``)."""
        for tasks, outcomes in self.chunk_outcomes(prepared):
            yield from zip(tasks, outcomes)

    def chunk_outcomes(self, prepared: PreparedMap) -> Iterator[tuple[range, list[Outcome]]]:
        """Drive one map, ``(a chunk's task positions, their outcomes)`` as each chunk
        arrives; clean up
        after it: the work_dir goes on success (unless keep_work_dir) and stays, with a
        log line saying where, on any other end (a task that raised is one: its map can
        be run again, see resume.rst).

        The last chunk of a map that succeeded is handed out only after the cleanup:
        whoever sees the last result (imap, an Executor's future) may exit at once and
        leave nothing behind.
        """
        succeeded = False
        with self._lock:
            if self._stopped:
                prepared.run.stop.set()
            self._running.add(prepared.run)
            self.last_map_dir = prepared.work_dir.path
            self.last_map_ended.clear()
        if prepared.run.lobby is not None:  # not a map with resources of its own
            prepared.run.lobby.announce(prepared.run.lobby_key, prepared.work_dir.path,
                                        prepared.work_dir.metadata().get("incarnation"))
        bar = (progress_bar(prepared.num_tasks, prepared.work_dir.map_id)
               if self.settings.progress else None)
        prepared.log.info("map of %d task(s) in %s", prepared.num_tasks,
                          prepared.work_dir.path)
        held: list[tuple[range, list]] = []  # the last chunks of a map that will be removed
        all_tasks_ok = True
        try:
            for tasks, outcomes in prepared.run.outcomes():
                if bar is not None:
                    bar.update(len(outcomes))
                all_tasks_ok = all_tasks_ok and all(outcome[0] for outcome in outcomes)
                held.append((tasks, outcomes))
                if not (all_tasks_ok and prepared.run.all_done()):
                    yield from held  # a map with a task that raised is kept: no need to wait
                    held.clear()
            succeeded = all_tasks_ok
        finally:
            self._end(prepared, succeeded, bar)
        yield from held

    def _end(self, prepared: PreparedMap, succeeded: bool, bar: Any) -> None:
        """Forget the map; remove its work_dir if it succeeded, else keep it and say so
        (except when it never had a job: its first submission was refused, or it was
        stopped before; then nothing is worth keeping)."""
        with self._lock:
            self._running.discard(prepared.run)
            self._groups.pop(prepared.run, None)
            if prepared.run.kept_warm:
                self._warm.append((prepared.run.lobby_key, prepared.work_dir,
                                   prepared.run.kept_warm))
            last_of_closed_pool = self._closing and not self._running
        if prepared.run.lobby is not None:
            prepared.run.lobby.withdraw(prepared.run.lobby_key)
        if last_of_closed_pool:
            self._end_warm_workers(close=True)
        if bar is not None:
            bar.close()
        discard = ((not self.settings.keep_work_dir) if succeeded
                   else prepared.run.abandoned or prepared.run.submitted_nothing())
        if not succeeded and not discard:
            prepared.log.error("a task raised, or the map failed or was interrupted; "
                               "work_dir kept: %s", prepared.work_dir.path)
        close_map_logger(prepared.log)
        try:
            if discard:
                if succeeded:  # its events outlive it, for its report (poolparty.report)
                    save_report_events(prepared.work_dir, prepared.log)
                prepared.work_dir.remove()
                return
            if succeeded:  # kept (keep_work_dir): a handful of files, as a finished map
                prepared.work_dir.archive_claims()
            prepared.work_dir.release()
        finally:
            if self.last_map_dir == prepared.work_dir.path:
                self.last_map_ended.set()

    def wait_for_last_end(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the end of the last map started to be
        written, if it is ending: every task has its outcome, which may have reached the
        caller before the end is written (a task raised). A map still at work is not
        waited for."""
        with self._lock:
            working = [run for run in self._running
                       if run.work_dir.path == self.last_map_dir and not run.all_done()
                       and not run.ended.is_set()]
        if not working:
            self.last_map_ended.wait(timeout)

    def collect(self, prepared: PreparedMap | None) -> list:
        """All results in input order; the first task error is raised at once."""
        if prepared is None:
            return []
        results: list[Any] = [None] * prepared.num_tasks
        outcomes = self.outcomes(prepared)
        try:
            for index, outcome in outcomes:
                if not outcome[0]:
                    raise_task_error(outcome, index, prepared.work_dir)
                results[index] = outcome[1]
        finally:
            outcomes.close()
        return results

    def dry_run(self, func: Callable, tasks: Iterable,
                chunksize: int | None = None) -> MapPreview | None:
        """Write the map's work_dir and job script as running it would, and return the
        commands that would submit it, submitting nothing. None for no tasks."""
        prepared = self.prepare(func, tasks, chunksize)
        if prepared is None:
            return None
        try:
            plan = self.settings.scheduler.plan(prepared.work_dir,
                                                list(range(prepared.run.capacity)))
        finally:
            close_map_logger(prepared.log)
            prepared.work_dir.release()
        return MapPreview(prepared.work_dir.path, prepared.work_dir.script_path,
                          [list(submission.argv) for submission in plan])

    # ------------------------------------------------------------------ stopping
    def stop_all(self, timeout: float = 0.0) -> None:
        """Stop every running map (each cancels its jobs), and every map started from
        now on at once; wait up to ``timeout`` seconds until they have."""
        with self._lock:
            self._stopped = True
            runs = list(self._running)
        stop_and_wait(runs, timeout)
        self._end_warm_workers(close=True)


def save_report_events(work_dir: WorkDir, log: logging.Logger) -> None:
    """Keep the events of a map about to be removed, for its report: its journal,
    archived in logs.zip by now. A failure to keep them costs the report only."""
    from .events import JOURNAL
    from .report import save_events

    try:
        save_events(work_dir.path.parent, work_dir.map_id,
                    b"".join(work_dir.archived_logs(JOURNAL)))
    except OSError as error:
        log.info("could not keep the map's events for its report: %s", error)


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
