"""The one engine loop: write -> submit -> poll -> resubmit -> gather.

Every backend runs through :class:`MapRun`; only the :class:`Scheduler` differs.
Policy lives here and nowhere else:

- Looking for result files is cheap and done often; asking the scheduler is expensive
  and done at most once per ``polling_interval``, with one call for all jobs.
- A job in an ERROR state is cancelled and resubmitted. A chunk missing from the queue
  without a result on two polls in a row is lost and resubmitted (a job just submitted
  may not show yet; a result on NFS may show late). Each chunk is submitted at most
  ``1 + max_num_resubmissions`` times; past that, and LATE_RESULT_SECONDS more without
  its result, :class:`ChunksLostError`.
- A job whose log records that a task ended the worker's process (poolparty.crashes)
  crashed, it was not lost: decided at once, rerun once; the same task crashing again,
  or a crash with no resubmission left, is :class:`TaskCrashedError` at once.
- A result that reached the work_dir is used, even from a job thought lost.
- A failing scheduler query is logged and tried again at the next poll: one bad poll
  never kills a map.
- On any way out but success (a task raised, chunks lost, Ctrl-C) every job of the
  map still queued is cancelled and the work_dir is kept.
"""

from __future__ import annotations

import logging
import pickle
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from .code_identity import installed_versions
from .crashes import Crash, crash_of
from .errors import (
    ChunksLostError,
    PoolTerminated,
    RemoteTraceback,
    ResultsReusedWarning,
    SchedulerCommandError,
    TaskCrashedError,
)
from .events import ClientEvents, output_of_attempts
from .scheduler import Scheduler, State
from .work_dir import WorkDir

#: between looks for result files: short after results came, growing to MAX_NAP while
#: none come. A result waits at most MAX_NAP to be gathered, and until then it and its
#: job's log are two more files in the work_dir; a look is one directory listing.
MIN_NAP = 0.02
MAX_NAP = 0.1
MISSING_POLLS_BEFORE_LOST = 2
#: a job the scheduler has shown running this long, with no worker started for it, was
#: lost on its way to the node (SGE can lose a task so when sge_execd stops during the
#: hand-over, and keeps listing it as running): it is cancelled and resubmitted
STUCK_AFTER_SECONDS = 600.0
#: a chunk lost once more than max_num_resubmissions allows is given this long for a
#: result still on its way before the map fails: NFS clients cache directory listings
#: for up to 60 s (acdirmax), longer than short jobs take to be lost four times over
LATE_RESULT_SECONDS = 60.0


@dataclass
class ChunkStatus:
    """One chunk as the engine knows it: its submissions, what the scheduler showed of
    the current one, and how earlier ones ended. Its methods are the transitions the
    poll loop applies; the loop itself decides what to do about them."""

    tasks: range
    submissions: int = 0
    missing_polls: int = 0
    #: the state the scheduler last showed for the current submission
    last_seen: State | None = None
    #: when the scheduler first showed the current submission running (monotonic)
    running_since: float | None = None
    #: how each earlier submission ended, for the error the user sees
    endings: list[str] = field(default_factory=list)
    #: the submissions that ended in a task killing its worker's process
    crashes: list[Crash] = field(default_factory=list)
    done: bool = False

    @property
    def outstanding(self) -> bool:
        """Submitted and without its result yet: the scheduler should have its job."""
        return self.submissions > 0 and not self.done

    @property
    def resubmitted(self) -> bool:
        """Submitted more than once: an older job of it may still be queued."""
        return self.submissions > 1

    def out_of_resubmissions(self, max_num_resubmissions: int) -> bool:
        """Submitted as often as the limit allows: another loss fails the map."""
        return self.submissions > max_num_resubmissions

    def submitted(self) -> None:
        """A new job runs it: what was seen of the previous one no longer counts."""
        self.submissions += 1
        self.missing_polls = 0
        self.last_seen = None
        self.running_since = None

    def adopted(self) -> None:
        """Its job, queued by an earlier client of the work_dir, still runs (resume):
        it counts as submitted once, and is not submitted again."""
        self.submissions = 1

    def seen(self, state: State, now: float | None = None) -> None:
        """The scheduler lists its job (PENDING or RUNNING) at this poll."""
        self.missing_polls = 0
        self.last_seen = state
        if state is State.RUNNING and self.running_since is None:
            self.running_since = time.monotonic() if now is None else now

    def missed(self) -> bool:
        """Its job is not in the queue at this poll, and no result came. True once that
        happened MISSING_POLLS_BEFORE_LOST polls in a row: a job just submitted may not
        show yet, and a result on NFS may show late, so one miss is not a loss."""
        self.missing_polls += 1
        return self.missing_polls >= MISSING_POLLS_BEFORE_LOST

    def lost(self) -> None:
        """Its job left the queue without a result."""
        self.end_submission("its job left the queue without a result " + (
            "while running" if self.last_seen is State.RUNNING else "before it was seen running"))

    def in_error(self) -> None:
        """The scheduler holds its job in an error state: it will never run by itself."""
        self.end_submission("the scheduler put its job in an error state")

    def shown_running_longer_than(self, seconds: float, now: float | None = None) -> bool:
        """Whether the scheduler has shown its current job running for over ``seconds``."""
        now = time.monotonic() if now is None else now
        return self.running_since is not None and now - self.running_since > seconds

    def stuck(self) -> None:
        """Shown running for STUCK_AFTER_SECONDS with no worker started: lost on its way
        to a node, though the scheduler still lists it."""
        self.end_submission(
            f"the scheduler showed its job running for over {STUCK_AFTER_SECONDS:.0f} s, "
            f"but no worker ever started on a node")

    def crashed(self, crash: Crash) -> bool:
        """A task ended its worker's process (the job's log says so). True when the same
        task did so before: running it again would crash again."""
        if self.end_submission(crash.ending):
            self.crashes.append(crash)
        return sum(1 for earlier in self.crashes if earlier.task == crash.task) > 1

    def end_submission(self, ending: str) -> bool:
        """Note how the current submission ended, once: a chunk whose resubmission
        failed is seen gone again at the next polls, and the list the user sees must
        name only submissions that happened. True if noted now."""
        if len(self.endings) >= self.submissions:
            return False
        self.endings.append(ending)
        return True


@dataclass(eq=False)  # identity, not value: runs are kept in sets
class MapRun:
    """Drives one map's chunks through the scheduler until each has a result."""

    scheduler: Scheduler
    work_dir: WorkDir
    chunks: list[range]
    polling_interval: float
    max_num_resubmissions: int
    log: logging.Logger
    stop: threading.Event = field(default_factory=threading.Event)
    #: print what each chunk's tasks printed when it is gathered (Pool's relay_output)
    relay_output: bool = False
    #: set once the map is over and, unless it succeeded, its jobs were cancelled: a
    #: caller interrupted while waiting (Ctrl-C) waits for this before exiting
    ended: threading.Event = field(default_factory=threading.Event)
    #: when callers stop waiting for ``ended`` (monotonic): set by the first wait, shared
    #: by later ones, so a hung cancel delays an interrupted client once, not per wait
    give_up_at: float | None = None
    status: dict[int, ChunkStatus] = field(init=False)
    _last_query: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.status = {i: ChunkStatus(tasks) for i, tasks in enumerate(self.chunks)}
        self._abandon_requests: set[int] = set()
        self._abandon_lock = threading.Lock()
        self._backlog: deque[int] = deque()
        self._started = False
        #: chunks past the resubmission limit, and when to give up on a late result
        self._last_chance: dict[int, float] = {}
        self._statuses = list(self.status.values())  # in order, for all_done's cursor
        self._cursor = 0
        self.events = ClientEvents(self.work_dir)  # what poolparty status reads

    def all_done(self) -> bool:
        """Whether every chunk has its result (or was abandoned). Cheap enough to ask
        after each chunk: a chunk once done stays done, so a cursor skips past them."""
        statuses = self._statuses
        while self._cursor < len(statuses) and statuses[self._cursor].done:
            self._cursor += 1
        return self._cursor == len(statuses)

    def _top_up(self) -> None:
        """Submit waiting chunks: all of them, or, for a backend that can't throttle
        itself, as many as keep max_running chunks in the queue."""
        limit = None if self.scheduler.throttles_itself else self.scheduler.max_running
        outstanding = sum(1 for s in self.status.values() if s.outstanding)
        room = len(self._backlog) if limit is None else max(0, limit - outstanding)
        batch = []
        while self._backlog and len(batch) < room:
            chunk_id = self._backlog.popleft()
            if not self.status[chunk_id].done:
                batch.append(chunk_id)
        if not batch:
            return
        if not self._started:  # the first submission: a refusal or an outage is raised
            self._submit(batch)
        elif not self._submit_while_running(batch):
            self._backlog.extendleft(reversed(batch))

    def abandon(self, chunk_ids: list[int]) -> None:
        """Nobody needs these chunks any more (their futures were cancelled): cancel
        their jobs at the next turn of the loop and stop waiting for them. Thread-safe."""
        with self._abandon_lock:
            self._abandon_requests.update(chunk_ids)

    def _handle_abandoned(self) -> None:
        with self._abandon_lock:
            requests, self._abandon_requests = self._abandon_requests, set()
        chunk_ids = [c for c in requests if not self.status[c].done]
        if chunk_ids:
            self.scheduler.cancel(self.work_dir, chunk_ids)
            for chunk_id in chunk_ids:
                self.status[chunk_id].done = True
            self.events.abandoned(chunk_ids)
            self.log.info("abandoned chunk(s) %s: nothing needs them any more", chunk_ids)

    # ------------------------------------------------------------------ the loop
    def outcomes(self) -> Iterator[tuple[int, list]]:
        """Yield ``(chunk_id, outcomes)`` as results arrive, until every chunk has one.

        Any way out but exhaustion (a task error raised by the caller, Ctrl-C, a
        terminated pool) cancels the map's remaining jobs, so nothing stays queued.
        """
        finished = False
        self.events.map_started(self.scheduler, self.chunks, self.work_dir.resumed)
        try:
            yield from self._gather_archived()
            yield from self._gather()  # results an earlier client had not gathered yet
            self._say_what_is_reused()
            self._check_stop()  # stopped before it started: submit nothing
            self._backlog.extend(self._chunks_to_start())
            self._top_up()
            self._started = True
            nap = MIN_NAP
            while not all(s.done for s in self.status.values()):
                self._check_stop()
                self._handle_abandoned()
                arrived = self._gather()
                if arrived:
                    self._top_up()
                yield from arrived
                if time.monotonic() - self._last_query >= self.polling_interval:
                    yield from self._poll()
                nap = MIN_NAP if arrived else min(nap * 1.5, MAX_NAP, self.polling_interval)
                if not arrived:
                    self.stop.wait(nap)
            finished = True
        finally:
            try:
                if not finished:
                    self._cancel_unfinished()
                self.events.map_ended(finished, sys.exc_info()[1])
            finally:
                self.ended.set()

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise PoolTerminated("the pool was terminated while this map ran")

    def submitted_nothing(self) -> bool:
        """Whether this map never had a job (its first submission was refused, or it
        was stopped before): then its fresh work_dir holds nothing worth keeping."""
        return not self.work_dir.resumed and not any(
            self.work_dir.jobs_of_chunk(chunk_id) for chunk_id in self.status)

    def _gather_archived(self) -> Iterator[tuple[int, list]]:
        """Results an earlier client of this work_dir gathered (resume). Chunks whose
        tasks raised are run again: the cause may have been fixed since."""
        recovered = []
        for chunk_id, blob in sorted(self.work_dir.archived_results().items()):
            outcomes = pickle.loads(blob)
            if chunk_id in self.status and all(outcome[0] for outcome in outcomes):
                self.status[chunk_id].done = True
                recovered.append((chunk_id, outcomes))
        self.events.gathered(recovered, self.chunks, recovered=True)
        yield from recovered

    def _say_what_is_reused(self) -> None:
        """Results of an earlier run, used instead of computing them: the user must know
        (a ResultsReusedWarning, shown every time), and how to get a fresh run."""
        reused = [s.tasks for s in self.status.values() if s.done]
        if not reused:
            return
        message = (
            f"poolparty: reusing the results of {sum(map(len, reused))} of "
            f"{sum(len(s.tasks) for s in self.status.values())} task(s) computed by an "
            f"earlier run of this map (same function, same code of yours, same tasks), kept "
            f"in {self.work_dir.path}. To compute them again: Pool(reuse_results=False), "
            f"POOLPARTY_REUSE_RESULTS=no, or poolparty run/exec --fresh"
        )
        changed = changed_versions(self.work_dir)
        if changed:
            message += f". Installed packages changed since that run: {changed}"
        self.log.info(message)
        # a fresh registry: the default filter would show an identical message only once
        warnings.warn_explicit(message, ResultsReusedWarning, __file__, 0, module="poolparty",
                               registry={})

    def _chunks_to_start(self) -> list[int]:
        """Every chunk without a result, except, when re-attaching to the work_dir of a
        client that died, those whose jobs are still queued: they are left alone."""
        waiting = [c for c, s in self.status.items() if not s.done]
        if not self.work_dir.resumed:
            return waiting
        try:
            queued = self.scheduler.query(self.work_dir)
        except SchedulerCommandError as error:
            self.log.warning("could not ask the scheduler which jobs still run: %s", error)
            queued = {}
        for chunk_id in waiting:
            if queued.get(chunk_id) in (State.PENDING, State.RUNNING):
                self.status[chunk_id].adopted()
        adopted = sum(1 for c in waiting if self.status[c].submissions)
        self.log.info("re-attached to %s: %d chunk(s) done, %d still queued, %d to submit",
                      self.work_dir.path, len(self.status) - len(waiting), adopted,
                      len(waiting) - adopted)
        return [c for c in waiting if not self.status[c].submissions]

    def _gather(self) -> list[tuple[int, list]]:
        """Read new result files, archive them, and return their outcomes."""
        blobs: dict[int, bytes] = {}
        for chunk_id in self.work_dir.new_result_ids():
            chunk = self.status.get(chunk_id)
            if chunk is None or chunk.done:  # a duplicate from a resubmitted job
                self.work_dir.result_path(chunk_id).unlink(missing_ok=True)
                continue
            blobs[chunk_id] = self.work_dir.read_result(chunk_id)
        arrived = [(chunk_id, pickle.loads(blob)) for chunk_id, blob in sorted(blobs.items())]
        logs = self.work_dir.logs_of(sorted(blobs))  # read once: relayed, folded, archived
        if self.relay_output:
            self._relay_output(logs)
        self.events.fold_logs(logs.values())  # before archive() deletes the logs
        self.work_dir.archive(blobs, logs)
        for chunk_id, _ in arrived:
            self.status[chunk_id].done = True
        # before the first submission: results left by an earlier client of this work_dir
        self.events.gathered(arrived, self.chunks, recovered=not self._started)
        self._cancel_duplicates([chunk_id for chunk_id, _ in arrived])
        return arrived

    def _relay_output(self, logs: dict[str, bytes]) -> None:
        """Print what the gathered chunks' tasks printed (``logs`` as ``logs_of`` gives
        them): to ``sys.stdout`` as it is now (a notebook's, a test's capture), as
        multiprocessing's workers print to the caller's terminal. Never fails the map."""
        attempts: dict[str, list[bytes]] = {}
        for name, log in logs.items():
            attempts.setdefault(name.split("/", 1)[0], []).append(log)
        try:
            for chunk_logs in attempts.values():
                output = output_of_attempts(chunk_logs)
                if output:
                    sys.stdout.write(output.decode("utf-8", errors="replace"))
            sys.stdout.flush()
        except Exception as error:  # noqa: BLE001 - a closed stdout must not lose results
            self.log.warning("could not print the tasks' output: %s", error)

    def _cancel_duplicates(self, chunk_ids: list[int]) -> None:
        """A chunk submitted more than once (thought lost, or in an error state) may
        still have a job queued after one of its jobs delivered: nothing needs it."""
        duplicated = [c for c in chunk_ids if self.status[c].resubmitted]
        if duplicated:
            self.scheduler.cancel(self.work_dir, duplicated)

    # ------------------------------------------------------------------ scheduler calls
    def _submit(self, chunk_ids: list[int]) -> None:
        if not chunk_ids:
            return
        self.scheduler.submit(self.work_dir, chunk_ids)
        for chunk_id in chunk_ids:
            self.status[chunk_id].submitted()
        self._last_query = time.monotonic()
        self.events.submitted(chunk_ids)
        self.log.info("submitted %d chunk(s) to %s", len(chunk_ids), self.scheduler.name)

    def _poll(self) -> Iterator[tuple[int, list]]:
        """Ask the scheduler once; resubmit chunks in ERROR or lost from the queue."""
        self._last_query = time.monotonic()
        try:
            states = self.scheduler.query(self.work_dir)
        except SchedulerCommandError as error:
            self.log.warning("could not ask the scheduler, trying again next poll: %s", error)
            self._give_up_on_late_results()
            return
        # Results may have landed while the scheduler answered: a job that just left
        # the queue must not be taken for lost.
        yield from self._gather()
        in_error, lost = [], []
        now = time.monotonic()
        for chunk_id, chunk in self.status.items():
            if not chunk.outstanding or chunk_id in self._last_chance:
                continue
            state = states.get(chunk_id)
            if state is State.ERROR:
                in_error.append(chunk_id)
                if not self._crashed(chunk_id):
                    chunk.in_error()
            elif state is None:
                missing_too_long = chunk.missed()
                if self._crashed(chunk_id):
                    lost.append(chunk_id)
                elif missing_too_long:
                    lost.append(chunk_id)
                    chunk.lost()
            else:
                chunk.seen(state, now)
        in_error += self._stuck_chunks({*in_error, *self._last_chance})
        if in_error:
            self.log.warning("chunk(s) %s in an error state: cancelling them", in_error)
            self.scheduler.cancel(self.work_dir, in_error)
        if lost:
            self.log.warning("chunk(s) %s left the queue without a result", lost)
        self.events.resubmit(in_error, lost)
        self._resubmit(in_error + lost)
        self._give_up_on_late_results()
        self._top_up()  # chunks held back, or whose submission failed earlier

    def _stuck_chunks(self, already: set[int]) -> list[int]:
        """Chunks shown running for STUCK_AFTER_SECONDS whose worker never started
        (it would have written its first event into the job's log first thing)."""
        now = time.monotonic()
        suspects = [
            chunk_id for chunk_id, chunk in self.status.items()
            if not chunk.done and chunk_id not in already
            and chunk.shown_running_longer_than(STUCK_AFTER_SECONDS, now)
        ]
        stuck = [chunk_id for chunk_id in suspects if not self.events.worker_started(chunk_id)]
        for chunk_id in stuck:
            self.status[chunk_id].stuck()
        if stuck:
            self.log.warning("chunk(s) %s shown running but no worker started: lost on the way "
                             "to a node", stuck)
        return stuck

    def _crashed(self, chunk_id: int) -> bool:
        """Whether the chunk's job ended in a task killing its worker's process (its log
        says so): then it is resubmitted once; raises :class:`TaskCrashedError` when the
        same task did it before, or when no resubmission is left to tell."""
        crash = crash_of(self.work_dir, chunk_id)
        if crash is None:
            return False
        chunk = self.status[chunk_id]
        again = chunk.crashed(crash)
        if again or chunk.out_of_resubmissions(self.max_num_resubmissions):
            self._raise_crash(chunk_id, crash, again)
        self.log.warning("chunk %d: %s; running it once more", chunk_id, crash.ending)
        return True

    def _raise_crash(self, chunk_id: int, crash: Crash, again: bool) -> None:
        chunk = self.status[chunk_id]
        if crash.task is None:
            task = chunk.tasks.start
            how = (f"never ran: its worker's process died before its first task (unpickling "
                   f"the function, or the initializer): it {crash.how}")
        else:
            task, how = crash.task, f"ended its worker's process: it {crash.how}"
        if not again:
            how += (f" (not rerun to see whether it does so again: max_num_resubmissions="
                    f"{self.max_num_resubmissions} allows no more submissions)")
        self.events.lost([chunk_id])
        raise TaskCrashedError(task, how, crash.signal, crash.status,
                               self.work_dir.log_tail(chunk_id), str(self.work_dir.path),
                               chunk.endings)

    def _resubmit(self, chunk_ids: list[int]) -> None:
        """Submit these chunks again, except those past the resubmission limit: they
        wait LATE_RESULT_SECONDS for a result still on its way (see _give_up_on_late_results)."""
        limit = self.max_num_resubmissions
        over_limit = [c for c in chunk_ids if self.status[c].out_of_resubmissions(limit)]
        if over_limit:
            self._last_chance.update(dict.fromkeys(over_limit, time.monotonic() + self._grace))
            if self._grace > 0:
                self.log.warning(
                    "chunk(s) %s died without a result %d time(s), more than "
                    "max_num_resubmissions=%d allows: waiting %.0f s for a result that may "
                    "still be on its way (NFS) before giving up", over_limit, limit + 1,
                    limit, self._grace)
        chunk_ids = [c for c in chunk_ids if c not in self._last_chance]
        for chunk_id in chunk_ids:
            self.work_dir.archive_logs_of(chunk_id)
        # if the controller is away, these chunks are still missing at the next poll
        # and are resubmitted then
        self._submit_while_running(chunk_ids, "resubmit")

    @property
    def _grace(self) -> float:
        """How long a chunk past the resubmission limit waits for a late result: not at
        all when the jobs write on this host."""
        return LATE_RESULT_SECONDS if self.scheduler.runs_elsewhere else 0.0

    def _give_up_on_late_results(self) -> None:
        """Fail the map for chunks past the resubmission limit whose last chance for a
        late result is over; a result that came meanwhile was gathered as any other."""
        now = time.monotonic()
        expired = [c for c, deadline in self._last_chance.items()
                   if not self.status[c].done and now >= deadline]
        if not expired:
            return
        self.events.lost(expired)
        raise ChunksLostError(
            {c: (self.status[c].tasks, self.work_dir.log_tail(c)) for c in expired},
            self.work_dir.path,
            {c: self.status[c].endings for c in expired},
            self._grace,
        )

    def _submit_while_running(self, chunk_ids: list[int], verb: str = "submit") -> bool:
        """Submit during a running map. A scheduler that can't be reached now is
        tried again later (as a failing query is); one refusing the job raises."""
        try:
            self._submit(chunk_ids)
            return True
        except SchedulerCommandError as error:
            if not self.scheduler.is_transient(error):
                raise  # the scheduler refuses the job itself: retrying can't help
            self.log.warning("could not %s %s now, trying again later: %s",
                             verb, chunk_ids, error)
            return False

    def _cancel_unfinished(self) -> None:
        """Best effort: a failure here must not hide the exception being raised."""
        unfinished = [c for c, s in self.status.items() if not s.done]
        if not unfinished:
            return
        try:
            self.scheduler.cancel(self.work_dir, unfinished)
            self.log.warning("cancelled the %d unfinished chunk(s) of this map", len(unfinished))
        except Exception as error:  # noqa: BLE001
            self.log.error("could not cancel jobs of this map: %s", error)


def changed_versions(work_dir: WorkDir) -> str:
    """The installed packages (and python) whose versions differ from those the map's
    earlier run recorded in map.json: not part of the identity, but worth saying."""
    try:
        metadata = work_dir.metadata()
    except (OSError, ValueError):
        return ""
    before = {"python": metadata.get("python_version"), **metadata.get("installed_versions", {})}
    now = {"python": sys.version.split()[0], **installed_versions()}
    return ", ".join(f"{name} {before[name]} -> {now[name]}" for name in sorted(before)
                     if before[name] and name in now and now[name] != before[name])


def attach_remote_traceback(outcome: tuple) -> BaseException:
    """A task's exception with its remote traceback attached as the cause, as
    multiprocessing does: the caller sees the node's traceback above its own."""
    _, error, traceback_text = outcome
    error.__cause__ = RemoteTraceback(f'\n"""\n{traceback_text}"""')
    return error


def raise_task_error(outcome: tuple, task_index: int, work_dir: WorkDir | None) -> None:
    """Re-raise a task's exception: same type and message, remote traceback as cause."""
    error = attach_remote_traceback(outcome)
    if hasattr(error, "add_note") and work_dir is not None:
        error.add_note(f"(poolparty: raised by task {task_index}; work_dir kept: {work_dir.path})")
    raise error
