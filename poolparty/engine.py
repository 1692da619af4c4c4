"""The one engine loop: write -> submit workers -> poll -> reopen lost claims -> gather.

Every backend runs through :class:`MapRun`; only the :class:`Scheduler` differs. Jobs
are workers (poolparty.worker): each pulls chunks of the map's tasks from the work_dir
(poolparty.claims) until none is left, so no task is bound to a job when the map starts,
and uneven tasks spread over every worker. Policy lives here and nowhere else:

- How many workers: as many as there is work for, up to the pool's capacity, in one
  submission per round. More are submitted only when work waits (tasks never claimed,
  a claim reopened) and fewer workers are queued than that work and the capacity allow:
  a lost worker is replaced, one that ran out of work is not. Workers still waiting in
  the queue when every task is claimed are cancelled (fair share).
- Looking for result files is cheap and done often; the scheduler is asked at most once
  per ``polling_interval``, one call for all the map's workers.
- A worker shown running, then pending again, was requeued: its claims are reopened at
  once (its job restarts later as a fresh worker). A worker in an ERROR state is
  cancelled. One missing from the queue on two polls in a row has ended (a job just
  submitted may not show yet; a result on NFS may show late).
  A claim whose worker ended without writing its result is reopened at once for the
  other workers, and counts against that claim, not the worker: a claim is attempted at
  most ``1 + max_num_resubmissions`` times; past that, and LATE_RESULT_SECONDS more
  without its result, :class:`ChunksLostError` naming it and each ending.
- How a worker's job ended is told apart (poolparty.endings). A claim lost to a time
  limit or to memory the scheduler can raise is reopened for a raised worker only, and
  one is submitted for it (poolparty.escalation); one lost to a preemption or a failed
  node is not counted. A requeued worker is cancelled and replaced at once: SLURM would
  start it again only minutes later.
- A worker whose log records that a task ended its process (poolparty.crashes) crashed:
  the claim is reopened once; the same task crashing again, or a crash with no attempt
  left, is :class:`TaskCrashedError` at once.
- Workers that keep dying before they claim anything (a node that can't run python)
  end the map once ``(1 + max_num_resubmissions)`` rounds of them died so: the error
  names the tasks never claimed.
- A result that reached the work_dir is used, even from a worker thought lost; a second
  result of the same claim is deleted.
- A failing scheduler query is logged and tried again at the next poll: one bad poll
  never kills a map.
- On any way out but success (a task raised, chunks lost, Ctrl-C) every worker of the
  map still queued is cancelled and the work_dir is kept.
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .claims import ClaimBoard
from .code_identity import installed_versions
from .crashes import Crash, crash_in_log, newest_log
from .endings import MAX_FREE_REOPENINGS, Ending, describe, ending_in_log
from .errors import (
    ChunksLostError,
    PoolTerminated,
    RemoteError,
    RemoteTraceback,
    ResultsReusedWarning,
    SchedulerCommandError,
    TaskCrashedError,
)
from .escalation import OWN, Steps
from .events import FINISHED, ClientEvents, output_of_tasks
from .lobby import Lobby
from .scheduler import Scheduler, State
from .work_dir import WorkDir

#: between looks for result files: short after results came, growing to MAX_NAP while
#: none come. A result waits at most MAX_NAP to be gathered; a look is one listing.
MIN_NAP = 0.02
MAX_NAP = 0.1
MISSING_POLLS_BEFORE_LOST = 2
#: a worker missing from one poll is looked for again this soon (at most): one more
#: query, once, instead of a whole polling interval before its work is reopened
RECHECK_SECONDS = 1.0
#: how long a finished map with a kept work_dir waits for its cancelled workers to leave
SETTLE_SECONDS = 15.0
#: a worker the scheduler has shown running this long that never started was lost on
#: its way to the node (SGE can lose a task so when sge_execd stops during the
#: hand-over, and keeps listing it as running): it is cancelled and replaced
STUCK_AFTER_SECONDS = 600.0
#: a claim lost once more than max_num_resubmissions allows is given this long for a
#: result still on its way before the map fails: NFS clients cache directory listings
#: for up to 60 s (acdirmax), longer than short jobs take to be lost four times over
LATE_RESULT_SECONDS = 60.0
#: a claim held by a worker no scheduler lists for this map (started by hand) goes back
#: to the others once its heartbeat (the claim file's mtime, set every 10 s by such a
#: worker) is this old: six missed beats, and room for clocks that differ
HEARTBEAT_TIMEOUT_SECONDS = 60.0
#: a map that starts with warm workers of its pool waits this long before it asks the
#: scheduler for more: a small map is done by then, and submitting workers only to
#: cancel them at its end costs each round an sbatch and an scancel (and, on a busy
#: cluster, a place in the queue)
WARM_GRACE_SECONDS = 1.0
#: Outcomes of a map's tasks, as the engine hands them out: the tasks' positions, then
#: one outcome per task (see poolparty.worker)
Arrival = tuple[range, list]


@dataclass
class WorkerStatus:
    """One worker (one job) as the engine knows it: what the scheduler showed of it,
    and how it ended. Its methods are the transitions the poll loop applies."""

    missing_polls: int = 0
    #: the state the scheduler last showed
    last_seen: State | None = None
    #: known to have run: the scheduler showed it running, or a claim names it
    ran: bool = False
    #: cancelled by the pool: it may stay listed (COMPLETING) a moment after that
    cancelled: bool = False
    #: when the scheduler first showed it running (monotonic)
    running_since: float | None = None
    #: how it ended, for the error the user sees; None while it may still be queued
    ending: str | None = None
    #: the class of that ending, where something told it (poolparty.endings)
    ending_class: Ending | None = None
    #: pending again after the scheduler showed it running (requeued): it will start
    #: again as a fresh worker, so its claims were reopened
    requeued: bool = False
    #: how often its time and memory were raised (poolparty.escalation)
    steps: Steps = OWN

    @property
    def live(self) -> bool:
        """Not known to have ended: the scheduler may still have it."""
        return self.ending is None

    def seen(self, state: State, now: float | None = None) -> bool:
        """The scheduler lists it (PENDING or RUNNING) at this poll. True when it was
        shown running and is pending again: its job was requeued (killed and put back in
        the queue, to start later as a fresh worker), so what it held is lost now."""
        requeued = state is State.PENDING and self.last_seen is State.RUNNING
        self.missing_polls = 0
        self.last_seen = state
        if requeued:
            self.running_since = None
            self.requeued = True
        elif state is State.RUNNING:
            self.requeued = False
        if state is State.RUNNING:
            self.ran = True
        if state is State.RUNNING and self.running_since is None:
            self.running_since = time.monotonic() if now is None else now
        return requeued

    def missed(self) -> bool:
        """It is not in the queue at this poll. True once that happened
        MISSING_POLLS_BEFORE_LOST polls in a row: a job just submitted may not show yet,
        and a result on NFS may show late, so one miss is not an ending."""
        self.missing_polls += 1
        return self.missing_polls >= MISSING_POLLS_BEFORE_LOST

    def shown_running_longer_than(self, seconds: float, now: float | None = None) -> bool:
        """Whether the scheduler has shown it running for over ``seconds``."""
        now = time.monotonic() if now is None else now
        return self.running_since is not None and now - self.running_since > seconds

    def left_queue(self) -> str:
        """How a worker that left the queue without finishing ended, in the user's words."""
        return "its job left the queue without a result " + (
            "while running" if self.ran else "before it was seen running")


@dataclass
class ChunkStatus:
    """One claim (a chunk of tasks cut when a worker claimed it) as the engine knows
    it: its attempts, who holds the newest, and how earlier ones ended."""

    tasks: range
    #: the newest attempt opened: 0 is the claim itself, each reopening adds one
    attempt: int = 0
    #: the worker holding the newest attempt (a worker started by hand: its random
    #: id); None while a reopened attempt waits
    worker: int | str | None = None
    #: how each earlier attempt ended, for the error the user sees
    endings: list[str] = field(default_factory=list)
    #: the attempts that ended in a task killing its worker's process
    crashes: list[Crash] = field(default_factory=list)
    #: the worker of the last attempt that ended without a result, and its log's end
    last_worker: int | None = None
    last_log: str = ""
    done: bool = False
    #: attempts lost to preemptions and failed nodes: not counted against the limit
    free_reopenings: int = 0
    #: how often its jobs reached their time limit, or ran out of memory, with the
    #: scheduler able to give more: only a worker raised so often may take it
    needs: Steps = OWN
    #: the worker submitted for it with those raised resources
    raised_worker: int | None = None

    def raise_for(self, ending: Ending | None, scheduler: Scheduler) -> bool:
        """Ask for more time (memory) for its next attempt when it was lost to a time
        limit (out of memory) the scheduler can raise; whether it did."""
        if ending is None or not scheduler.raises(ending):
            return False
        if ending is Ending.TIME_LIMIT:
            self.needs = Steps(self.needs.time + 1, self.needs.memory)
        else:
            self.needs = Steps(self.needs.time, self.needs.memory + 1)
        return True

    @property
    def held(self) -> bool:
        """A worker holds its newest attempt and no result came yet."""
        return self.worker is not None and not self.done

    def out_of_attempts(self, max_num_resubmissions: int) -> bool:
        """Attempted as often as the limit allows: another loss fails the map."""
        return (self.attempt - self.free_reopenings >= max_num_resubmissions
                or self.free_reopenings > MAX_FREE_REOPENINGS)

    def lost(self, ending: str, log_tail: str = "", ending_class: Ending | None = None,
             free: bool = False) -> None:
        """Its worker ended without its result; a preemption or a node lost does not
        count against the resubmission limit (bounded apart, MAX_FREE_REOPENINGS), nor
        does a claim that was never this map's run (``free``)."""
        self.endings.append(ending)
        self.last_worker, self.last_log = self.worker, log_tail
        self.worker = None
        if free or (ending_class is not None and not ending_class.counts_against_the_limit):
            self.free_reopenings += 1

    def crashed(self, crash: Crash, log_tail: str = "") -> bool:
        """A task ended its worker's process. True when the same task did so before:
        running it again would crash again."""
        self.lost(crash.ending, log_tail)
        self.crashes.append(crash)
        return sum(1 for earlier in self.crashes if earlier.task == crash.task) > 1

    def reopened(self) -> None:
        self.attempt += 1
        self.worker = None


@dataclass(eq=False)  # identity, not value: runs are kept in sets
class MapRun:
    """Drives one map's tasks through workers until each task has an outcome."""

    scheduler: Scheduler
    work_dir: WorkDir
    num_tasks: int
    polling_interval: float
    max_num_resubmissions: int
    log: logging.Logger
    #: how many workers may run at once (the pool's processes, or the backend's default)
    capacity: int = 8
    #: tasks are stored, and claimed, in whole blocks of this many
    block: int = 1
    stop: threading.Event = field(default_factory=threading.Event)
    #: print what the tasks printed as each worker's log is gathered (relay_output)
    relay_output: bool = False
    #: False: submit nothing, the map waits for workers started by hand (poolparty worker)
    submit_workers: bool = True
    #: at the end, wait for the cancelled workers to leave the queue (a kept work_dir)
    settle_workers: bool = False
    #: set once the map is over and, unless it succeeded, its workers were cancelled: a
    #: caller interrupted while waiting (Ctrl-C) waits for this before exiting
    ended: threading.Event = field(default_factory=threading.Event)
    #: when callers stop waiting for ``ended`` (monotonic): set by the first wait, shared
    #: by later ones, so a hung cancel delays an interrupted client once, not per wait
    give_up_at: float | None = None
    #: the pool's lobby (warm workers, poolparty.lobby): workers waiting there join this
    #: map, so fewer are submitted; None: no warm workers
    lobby: Lobby | None = None
    #: this run's name in the lobby (the same map run again gets another)
    lobby_key: str = ""
    #: the ids of the pool's maps running now (a worker still serving one is busy)
    running_maps: Callable[[], set[str]] = set
    #: called when the map is stopped (Ctrl-C, terminate): ends the pool's warm workers
    end_pool_workers: Callable[[], None] | None = None
    #: workers left running when the map succeeded: they wait in the lobby
    kept_warm: list[int] = field(init=False, default_factory=list)
    #: stopped because nobody wants its results (a dropped imap): its jobs are
    #: cancelled and its work_dir removed, but the pool's warm workers stay
    abandoned: bool = field(init=False, default=False)
    #: every task claimed (none waits for a worker): the next segment of an imap may
    #: start, this one's workers are soon free (poolparty.imap)
    all_claimed: bool = field(init=False, default=False)
    #: look for all_claimed at every look for results, not only at each poll
    watch_claims: bool = False
    chunks: dict[int, ChunkStatus] = field(init=False, default_factory=dict)
    workers: dict[int, WorkerStatus] = field(init=False, default_factory=dict)
    _last_query: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.board = ClaimBoard(self.work_dir.path, self.num_tasks)
        self._done = bytearray(self.num_tasks)  # 1 per task with its outcome
        self._done_count = 0
        self._abandoned: set[int] = set()
        self._abandon_lock = threading.Lock()
        self._claims_read: set[tuple[int, int]] = set()
        #: the making of this map's directory (map.json's "incarnation")
        try:
            self._making = self.work_dir.metadata().get("incarnation")
        except (OSError, ValueError):
            self._making = None
        self._started = False
        #: claims past the attempt limit, and when to give up on a late result
        self._last_chance: dict[int, float] = {}
        #: workers that died before claiming anything since a result last came
        self._barren: list[int] = []
        self._barren_logs: dict[int, str] = {}
        #: workers whose process died before they claimed a task
        self._early_crashes = 0
        #: when to give up on workers that all die before claiming (see _check_barren)
        self._barren_deadline: float | None = None
        self._logs_gathered: set[int] = set()
        #: workers of the pool's lobby were counted on (they may have claimed)
        self._had_guests = False
        #: no submission before this (monotonic): warm workers had the first go
        self._submit_after = 0.0
        self.events = ClientEvents(self.work_dir)  # what poolparty status reads

    # ------------------------------------------------------------------ progress
    def all_done(self) -> bool:
        """Whether every task has its outcome (or nobody needs it any more)."""
        return self._done_count + len(self._abandoned) >= self.num_tasks

    def abandon(self, task_indices: Iterable[int]) -> None:
        """Nobody needs these tasks any more (their futures were cancelled): once no
        task is left that someone needs, the map ends and its workers are cancelled.
        A worker may still run them meanwhile. Thread-safe."""
        with self._abandon_lock:
            self._abandoned.update(i for i in task_indices if not self._done[i])

    def _mark_done(self, tasks: range) -> None:
        with self._abandon_lock:
            for index in tasks:
                if not self._done[index]:
                    self._done[index] = 1
                    self._done_count += 1
                    self._abandoned.discard(index)

    def submitted_nothing(self) -> bool:
        """Whether this map never had a worker (its first submission was refused, or it
        was stopped before): then its fresh work_dir holds nothing worth keeping. Never
        so for a map that waits for workers started by hand: they may have claimed."""
        return (self.submit_workers and not self.work_dir.resumed and not self._had_guests
                and not self.work_dir.recorded_chunks())

    # ------------------------------------------------------------------ the loop
    def outcomes(self) -> Iterator[Arrival]:
        """Yield ``(task positions, outcomes)`` as results arrive, until every task has
        one.

        Any way out but exhaustion (a task error raised by the caller, Ctrl-C, a
        terminated pool) cancels the map's workers, so nothing stays queued.
        """
        finished = False
        client_cpu = time.process_time()  # the client's CPU while the map runs (report)
        self.events.map_started(self.scheduler, self.num_tasks, self.block,
                                self.work_dir.resumed)
        try:
            yield from self._gather_archived()
            yield from self._gather()  # results an earlier client had not gathered yet
            self._say_what_is_reused()
            self._check_stop()  # stopped before it started: submit nothing
            if not self.all_done():
                self._attach()
                self._top_up(first=True)
            self._started = True
            nap = MIN_NAP
            while not self.all_done():
                self._check_stop()
                arrived = self._gather()
                yield from arrived
                if self.watch_claims and not self.all_claimed:
                    self.all_claimed = self.board.all_covered()
                if self._submit_after and time.monotonic() >= self._submit_after:
                    self._submit_after = 0.0  # the warm workers had their go
                    self._top_up()
                if time.monotonic() - self._last_query >= self._poll_interval():
                    yield from self._poll()
                nap = MIN_NAP if arrived else min(nap * 1.5, MAX_NAP, self.polling_interval)
                if not arrived and not self.all_done():
                    self.stop.wait(nap)
            finished = True
        finally:
            try:
                self._end_workers(finished)
                self._gather_logs(list(self.workers))
                self._gather_guest_logs()
                self.events.map_ended(finished, sys.exc_info()[1],
                                      time.process_time() - client_cpu)
            finally:
                self.ended.set()

    def _poll_interval(self) -> float:
        """The polling interval, or RECHECK_SECONDS while a worker known to have run
        (shown running, or named by a claim) is missing from the last poll: it is lost
        once a second poll misses it too, and its claim waits for that. (One not known
        to have run may be a job just submitted that the scheduler does not list yet:
        it gets the whole interval.)"""
        if any(w.live and w.missing_polls and w.ran for w in self.workers.values()):
            return min(self.polling_interval, RECHECK_SECONDS)
        return self.polling_interval

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise PoolTerminated("the pool was terminated while this map ran")

    # ------------------------------------------------------------------ results
    def _gather_archived(self) -> Iterator[Arrival]:
        """Results an earlier client of this work_dir gathered (resume). Claims whose
        tasks raised are run again: the cause may have been fixed since."""
        recovered = []
        for number, blob in sorted(self.work_dir.archived_results().items()):
            loaded = self._load_result(number, blob)
            if loaded is None:
                continue
            tasks, outcomes = loaded
            chunk = self.chunks.setdefault(number, ChunkStatus(tasks))
            if all(outcome[0] for outcome in outcomes):
                chunk.done = True
                self._mark_done(tasks)
                recovered.append((number, tasks, outcomes))
        self.events.gathered(recovered, recovered=True)
        yield from ((tasks, outcomes) for _, tasks, outcomes in recovered)

    def _gather(self) -> list[Arrival]:
        """Read new result files, archive them, and return their outcomes."""
        blobs: dict[int, bytes] = {}
        for number in self.work_dir.new_result_ids():
            chunk = self.chunks.get(number)
            if chunk is not None and chunk.done:  # a second result of a reopened claim
                self.work_dir.result_path(number).unlink(missing_ok=True)
                continue
            blobs[number] = self.work_dir.read_result(number)
        arrived = []
        for number, blob in sorted(blobs.items()):
            loaded = self._load_result(number, blob)
            if loaded is None:  # its claim is not readable yet: at a later look
                del blobs[number]
                continue
            tasks, outcomes = loaded
            chunk = self.chunks.setdefault(number, ChunkStatus(tasks))
            chunk.done = True
            self._mark_done(tasks)
            arrived.append((number, tasks, outcomes))
        if arrived:
            self.work_dir.archive(blobs, {})
            self._barren.clear()
            self._barren_deadline = None
            self._early_crashes = 0
            self._last_chance = {c: t for c, t in self._last_chance.items()
                                 if not self.chunks[c].done}
            # before the first submission: results left by an earlier client
            self.events.gathered(arrived, recovered=not self._started)
        return [(tasks, outcomes) for _, tasks, outcomes in arrived]

    def _load_result(self, number: int, blob: bytes) -> Arrival | None:
        """A result's tasks and outcomes. One that does not unpickle here (a class the
        client can't import, a value whose rebuilding raises) is an error for each of its
        tasks, naming why; its bytes stay in results.zip. None when that claim's range
        can't be read yet."""
        try:
            start, outcomes = pickle.loads(blob)
            return range(start, start + len(outcomes)), outcomes
        except Exception as error:  # noqa: BLE001 - one bad result must not stop the map
            tasks = self._tasks_of_claim(number)
            if tasks is None:
                return None
            problem = RemoteError(
                f"the result of task(s) {tasks.start}..{tasks.stop - 1} could not be "
                f"unpickled here ({type(error).__name__}: {error}); its bytes are kept as "
                f"{number}.pkl in results.zip of {self.work_dir.path}")
            return tasks, [(False, problem, "")] * len(tasks)

    def _tasks_of_claim(self, number: int) -> range | None:
        chunk = self.chunks.get(number)
        if chunk is not None:
            return chunk.tasks
        info = self.board.read(number, 0)
        return None if info.start is None or info.stop is None else range(info.start, info.stop)

    def _say_what_is_reused(self) -> None:
        """Results of an earlier run, used instead of computing them: the user must know
        (a ResultsReusedWarning, shown every time), and how to get a fresh run."""
        if not self._done_count:
            return
        message = (
            f"poolparty: reusing the results of {self._done_count} of {self.num_tasks} "
            f"task(s) computed by an earlier run of this map (same function, same code of "
            f"yours, same tasks), kept in {self.work_dir.path}. To compute them again: "
            f"Pool(reuse_results=False), POOLPARTY_REUSE_RESULTS=no, or poolparty "
            f"run/exec --fresh"
        )
        changed = changed_versions(self.work_dir)
        if changed:
            message += f". Installed packages changed since that run: {changed}"
        self.log.info(message)
        # a fresh registry: the default filter would show an identical message only once
        warnings.warn_explicit(message, ResultsReusedWarning, __file__, 0, module="poolparty",
                               registry={})

    # ------------------------------------------------------------------ claims
    def _read_claims(self) -> None:
        """Learn the claims (and reopened attempts) workers made since the last look:
        only entries a listing shows and not read before (a claim never changes)."""
        for number, attempt in sorted(self.board.listed() - self._claims_read):
            info = self.board.read(number, attempt)
            if info.identity is None:  # listed, not readable here yet: next poll
                continue
            self._claims_read.add((number, attempt))
            chunk = self.chunks.setdefault(number, ChunkStatus(range(info.start, info.stop)))
            if self._making and info.identity.get("incarnation") not in (None, self._making):
                self._reopen_stale(number, attempt)
                continue
            # a worker started by hand has no number: its random id names it
            worker = info.identity.get("worker_number")
            if worker is None:
                worker = info.identity.get("worker")
            if worker in self.workers:  # it ran, whether or not a poll saw it running
                self.workers[worker].ran = True
            if attempt >= chunk.attempt:  # done or not: whose output to relay
                chunk.attempt = attempt
                chunk.worker = worker

    def _reopen_stale(self, number: int, attempt: int) -> None:
        """A claim made by a worker of an earlier run of this map, in this run's
        directory of the same path, just before that worker saw it made anew and left:
        no worker of this run holds it; it goes to them at once, not counted."""
        chunk = self.chunks[number]
        if chunk.done or attempt < chunk.attempt:
            return
        chunk.attempt, chunk.worker = attempt, None
        reason = "claimed by a worker of an earlier run of this map, which left"
        chunk.lost(reason, free=True)
        self._reopen(number, reason)

    def _work_waiting(self) -> int:
        """Blocks never claimed, plus reopened claims nobody took yet. None once every
        result is in (on NFS a result can be seen before the claim that led to it)."""
        if self._done_count >= self.num_tasks:
            return 0
        unclaimed = max(0, self.num_tasks - self.board.covered().stop)
        reopened = sum(1 for number, c in self.chunks.items()
                       if not c.done and c.worker is None and c.attempt > 0
                       and number not in self._last_chance)
        return math.ceil(unclaimed / self.block) + reopened

    def _reopen(self, number: int, reason: str) -> None:
        """Open the claim's next attempt for the other workers, or, past the limit,
        give it LATE_RESULT_SECONDS for a result still on its way."""
        chunk = self.chunks[number]
        if chunk.out_of_attempts(self.max_num_resubmissions):
            self._last_chance[number] = time.monotonic() + self._grace
            if self._grace > 0:
                self.log.warning(
                    "chunk %d (tasks %d..%d) died without a result %d time(s), more than "
                    "max_num_resubmissions=%d allows: waiting %.0f s for a result that may "
                    "still be on its way (NFS) before giving up", number, chunk.tasks.start,
                    chunk.tasks.stop - 1, chunk.attempt + 1, self.max_num_resubmissions,
                    self._grace)
            return
        chunk.reopened()
        try:
            self.board.requeue(number, chunk.attempt, reason, chunk.needs)
        except FileExistsError:  # an earlier client of this work_dir reopened it
            pass
        self.events.reopened(number, chunk.attempt, reason, chunk.last_worker)
        self.log.warning("chunk %d (tasks %d..%d): %s; reopened for %s (attempt %d)",
                         number, chunk.tasks.start, chunk.tasks.stop - 1, reason,
                         f"a worker with {self._raised_words(chunk.needs)}" if chunk.needs
                         else "the other workers", chunk.attempt + 1)

    def _raised_words(self, steps: Steps) -> str:
        """What a worker raised by ``steps`` is given, for the log."""
        raised = []
        if steps.time:
            raised.append(f"{self.scheduler.time_limit_for(steps):.0f} s of time")
        if steps.memory:
            raised.append(f"{self.scheduler.memory_for(steps)} of memory")
        return " and ".join(raised)

    @property
    def _grace(self) -> float:
        """How long a claim past the attempt limit waits for a late result: not at all
        when the workers write on this host."""
        return LATE_RESULT_SECONDS if self.scheduler.runs_elsewhere else 0.0

    def _give_up_on_late_results(self) -> None:
        """Fail the map for claims past the attempt limit whose last chance for a late
        result is over; a result that came meanwhile was gathered as any other."""
        now = time.monotonic()
        expired = [c for c, deadline in self._last_chance.items()
                   if not self.chunks[c].done and now >= deadline]
        if not expired:
            return
        self.events.lost(expired)
        raise ChunksLostError(
            {c: (self.chunks[c].tasks, self.chunks[c].last_log) for c in expired},
            self.work_dir.path,
            {c: self.chunks[c].endings for c in expired},
            self._grace,
        )

    # ------------------------------------------------------------------ workers
    def _attach(self) -> None:
        """Re-attach to the work_dir of a client that died: its workers still queued
        go on (adopted), the claims of those gone without a result are reopened."""
        if not self.work_dir.resumed:
            return
        try:
            queued = self.scheduler.query(self.work_dir)
        except SchedulerCommandError as error:
            self.log.warning("could not ask the scheduler which workers still run: %s", error)
            queued = {}
        in_error = []
        for worker_id in self.work_dir.recorded_chunks():
            status = self.workers[worker_id] = WorkerStatus()
            state = queued.get(worker_id)
            if state in (State.PENDING, State.RUNNING):
                status.seen(state)
            elif state is State.ERROR:  # it would stay queued (held) for ever
                status.ending = "the scheduler put its job in an error state"
                in_error.append(worker_id)
            else:
                status.ending = "it ended while no client watched the map"
        if in_error:
            self.log.warning("worker(s) %s in an error state: cancelling them", in_error)
            self._cancel_quietly(in_error)
        self._read_claims()  # now that the workers are known: those that ran
        self._reopen_abandoned("its worker ended while no client watched the map")
        live = sum(1 for w in self.workers.values() if w.live)
        self.log.info("re-attached to %s: %d of %d task(s) done, %d worker(s) still queued",
                      self.work_dir.path, self._done_count, self.num_tasks, live)

    def _top_up(self, first: bool = False) -> None:
        """Submit workers for the work waiting, up to the capacity, in one submission
        (and one per kind of raised worker the reopened claims need). The first
        submission of a map raises when refused or when the scheduler is away; later
        ones are tried again at the next poll."""
        waiting = self._work_waiting()
        self.all_claimed = waiting == 0
        if not self.submit_workers:
            if first:
                self.log.warning(
                    "no worker is submitted (submit_workers=False): run `poolparty worker "
                    "%s` where that directory is seen, once for each worker wanted",
                    self.work_dir.path)
            return
        if self._barren_deadline is not None:
            return
        raised = self._claims_needing_raised_workers()
        for steps, numbers in raised.items():
            room = self.capacity - sum(1 for w in self.workers.values() if w.live)
            for number, worker_id in zip(numbers, self._submit(min(room, len(numbers)),
                                                               first, steps)):
                self.chunks[number].raised_worker = worker_id
        waiting -= self._raised_waiting()
        live = sum(1 for w in self.workers.values() if w.live)
        warm = self._warm_workers() if waiting else 0
        wanted = min(self.capacity, live + warm + waiting) - live - warm
        if wanted <= 0:
            return
        if first and warm:
            self._submit_after = time.monotonic() + WARM_GRACE_SECONDS
        if time.monotonic() < self._submit_after:
            return
        self._submit(wanted, first)

    def _raised_waiting(self) -> int:
        """Reopened claims waiting for a raised worker (the pool's own leave them)."""
        return sum(1 for number, c in self.chunks.items()
                   if not c.done and c.worker is None and c.attempt > 0 and c.needs
                   and number not in self._last_chance)

    def _claims_needing_raised_workers(self) -> dict[Steps, list[int]]:
        """Reopened claims that need a raised worker and have none queued or running."""
        needing: dict[Steps, list[int]] = {}
        for number, chunk in sorted(self.chunks.items()):
            if (chunk.done or chunk.worker is not None or chunk.attempt == 0
                    or not chunk.needs or number in self._last_chance):
                continue
            worker = self.workers.get(chunk.raised_worker)  # type: ignore[arg-type]
            if worker is None or not worker.live:
                needing.setdefault(chunk.needs, []).append(number)
        return needing

    def _submit(self, count: int, first: bool, steps: Steps = OWN) -> list[int]:
        """Submit ``count`` workers (raised by ``steps``); their ids, none when the
        scheduler refused for now."""
        if count <= 0:
            return []
        start = max([*self.workers, *self.work_dir.recorded_chunks(), -1]) + 1
        worker_ids = list(range(start, start + count))
        try:
            self.scheduler.submit(self.work_dir, worker_ids, steps)
        except SchedulerCommandError as error:
            # one sbatch per worker may fail half-way: those queued are the map's, to
            # watch and to cancel at its end
            for worker_id in set(worker_ids) & set(self.work_dir.recorded_chunks()):
                self.workers[worker_id] = WorkerStatus(steps=steps)
            if first or not (self.scheduler.is_transient(error) or self._any_live()):
                raise  # refused for good (an unknown partition): retrying can't help
            # refused now (a limit of jobs per user reached?) while workers still run:
            # they may finish the map; a replacement is asked for again at the next poll
            self.log.warning("could not submit workers now, trying again later: %s", error)
            return []
        for worker_id in worker_ids:
            self.workers[worker_id] = WorkerStatus(steps=steps)
        self._last_query = time.monotonic()
        self.events.submitted(worker_ids)
        self.log.info("submitted %d worker(s) to %s%s", len(worker_ids), self.scheduler.name,
                      f" with {self._raised_words(steps)}" if steps else "")
        return worker_ids

    def _warm_workers(self) -> int:
        """Workers of the pool's lobby this map can count on instead of submitting."""
        if self.lobby is None:
            return 0
        warm = self.lobby.warm_workers(self.lobby_key, self.running_maps())
        if warm:
            self._had_guests = True
        return warm

    def _any_live(self) -> bool:
        return any(w.live for w in self.workers.values())

    def _poll(self) -> Iterator[Arrival]:
        """Ask the scheduler once; note the workers that ended, reopen their claims,
        replace them if work waits."""
        self._last_query = time.monotonic()
        # A claim read before the scheduler answers was made by a worker that had
        # started by then: only such a claim says a worker the answer shows pending
        # was requeued (one read later may be a pending worker's that just started).
        self._read_claims()
        held_before = {n for n, c in self.chunks.items() if c.held}
        try:
            states = self.scheduler.query(self.work_dir)
        except SchedulerCommandError as error:
            self.log.warning("could not ask the scheduler, trying again next poll: %s", error)
            self._give_up_on_late_results()
            return
        # Results may have landed while the scheduler answered: a worker that just left
        # the queue must not be taken for lost.
        yield from self._gather()
        self._read_claims()
        self._reopen_abandoned()  # claims seen only now, of workers that ended before
        now = time.monotonic()
        in_error, ended, requeued = [], [], []
        crashes: dict[int, Crash] = {}
        for worker_id, worker in self.workers.items():
            if not worker.live:
                continue
            state = states.get(worker_id)
            if state is State.ERROR:
                worker.ending = "the scheduler put its job in an error state"
                in_error.append(worker_id)
            elif state is None:
                log = newest_log(self.work_dir, worker_id)
                crash = crash_in_log(log)
                told = ending_in_log(log, self.events.worker_started(worker_id))
                if crash is not None:  # a positive signal: no need to wait for more polls
                    worker.ending = crash.ending
                    if told is Ending.OUT_OF_MEMORY:
                        worker.ending = describe(told, crash.ending)
                    worker.ending_class = told or Ending.CRASHED
                    crashes[worker_id] = crash
                    ended.append(worker_id)
                elif told is not None:  # the scheduler's own words: positive too
                    worker.ending, worker.ending_class = describe(told), told
                    ended.append(worker_id)
                elif worker.missed():
                    worker.ending, worker.ending_class = worker.left_queue(), Ending.LOST
                    ended.append(worker_id)
            elif worker.seen(state, now) or state is State.PENDING:
                # A pending job holding a claim ran before: it was requeued, perhaps
                # before any poll saw it running (a no-op when it holds nothing).
                if self._worker_requeued(worker_id, held_before) or worker.requeued:
                    requeued.append(worker_id)
        self._replace_requeued(requeued)
        in_error += self._stuck_workers(now)
        if in_error:
            self.log.warning("worker(s) %s in an error state or stuck: cancelling them",
                             in_error)
            self._cancel_quietly(in_error)
        for worker_id in in_error + ended:
            self._worker_ended(worker_id, crashes.get(worker_id))
        self._gather_logs(in_error + ended)
        self._give_up_on_late_results()
        self._check_barren()
        self._reopen_silent()
        self._top_up()
        self._cancel_idle()

    def _reopen_abandoned(self, ending: str | None = None) -> None:
        """Reopen the claims held by a worker of this map known to have ended. On NFS a
        claim can be listed only after its worker was taken for gone, holding nothing
        then: nobody else would ever run it, and the map would wait for ever."""
        for number, chunk in sorted(self.chunks.items()):
            holder = self.workers.get(chunk.worker) if chunk.held else None  # type: ignore[arg-type]
            if holder is None or holder.live:
                continue
            reason = ending or holder.ending or "its worker ended"
            chunk.lost(reason)
            self._reopen(number, reason)

    def _reopen_silent(self) -> None:
        """Claims held by a worker no scheduler lists for this map (started by hand with
        ``poolparty worker``, or a job whose record was lost) go back to the others once
        their heartbeat is older than HEARTBEAT_TIMEOUT_SECONDS: such a worker touches
        the claim it runs, and nothing else says whether it still runs."""
        for number, chunk in sorted(self.chunks.items()):
            if not chunk.held or chunk.worker in self.workers or number in self._last_chance:
                continue
            age = self.board.read(number, chunk.attempt).age
            if age is None or age <= HEARTBEAT_TIMEOUT_SECONDS:
                continue
            reason = (f"its worker, which no scheduler lists for this map (started by hand?), "
                      f"has not touched it for {age:.0f} s")
            chunk.lost(reason)
            self._reopen(number, reason)

    def _stuck_workers(self, now: float) -> list[int]:
        """Workers shown running for STUCK_AFTER_SECONDS that never started (a worker
        writes its first event into the job's log first thing)."""
        stuck = [worker_id for worker_id, worker in self.workers.items()
                 if worker.live and worker.shown_running_longer_than(STUCK_AFTER_SECONDS, now)
                 and not self.events.worker_started(worker_id)]
        for worker_id in stuck:
            self.workers[worker_id].ending = (
                f"the scheduler showed its job running for over {STUCK_AFTER_SECONDS:.0f} s, "
                f"but no worker ever started on a node")
        return stuck

    def _worker_ended(self, worker_id: int, crash: Crash | None = None) -> None:
        """Reopen the claim the worker held (raising when a task crashed it once too
        often); note a worker that died before claiming anything."""
        ending = self.workers[worker_id].ending or ""
        held = [n for n, c in self.chunks.items() if c.held and c.worker == worker_id]
        if not held:
            if crash is not None or (not self._finished_cleanly(worker_id)
                                     and self._work_waiting()):
                self._barren.append(worker_id)
                self._barren_logs[worker_id] = self.work_dir.log_tail(worker_id)
                self.events.worker_lost(worker_id, ending or "it ended before claiming")
            if crash is not None and crash.task is None:  # before its first task
                self._early_crashes += 1
                if self._early_crashes > 1:  # every worker would die so (none delivered)
                    self._raise_crash(None, crash, True, worker_id)
            return
        tail = self.work_dir.log_tail(worker_id)
        ending_class = self.workers[worker_id].ending_class
        for number in held:
            chunk = self.chunks[number]
            raised = chunk.raise_for(ending_class, self.scheduler)
            if crash is not None and crash.task in chunk.tasks and not raised:
                again = chunk.crashed(crash, tail)
                if again or chunk.out_of_attempts(self.max_num_resubmissions):
                    self._raise_crash(number, crash, again, worker_id)
            else:
                chunk.lost(ending, tail, ending_class)
            self._reopen(number, ending)

    def _worker_requeued(self, worker_id: int, claims: set[int]) -> bool:
        """Reopen the worker's ``claims`` (those read before the scheduler showed its job
        requeued): it was killed, and its job starts again only later (SLURM: ~2
        minutes), as a fresh worker that claims anew; the others must not wait for that.
        Whether it held any."""
        ending = describe(Ending.PREEMPTED, "shown pending again after running: killed, "
                                            "to start again later")
        held = [n for n in sorted(claims)
                if self.chunks[n].held and self.chunks[n].worker == worker_id]
        tail = self.work_dir.log_tail(worker_id) if held else ""
        for number in held:
            self.chunks[number].lost(ending, tail, Ending.PREEMPTED)
            self._reopen(number, ending)
        return bool(held)

    def _replace_requeued(self, worker_ids: list[int]) -> None:
        """Cancel workers whose jobs were requeued: they would start again only later
        (SLURM holds a requeued job ~2 minutes), holding a place of the pool's
        ``processes`` meanwhile; a worker submitted now takes that place."""
        if not worker_ids:
            return
        self.log.warning("worker(s) %s requeued by the scheduler: cancelled, to be replaced "
                         "now rather than start again later", worker_ids)
        self._cancel_quietly(worker_ids)
        for worker_id in worker_ids:
            worker = self.workers[worker_id]
            worker.ending = describe(Ending.PREEMPTED, "requeued, then cancelled by the pool "
                                                       "to be replaced at once")
            worker.ending_class = Ending.PREEMPTED
        self._gather_logs(worker_ids)

    def _finished_cleanly(self, worker_id: int) -> bool:
        """Whether the worker's log says it ran out of work and exited (then it claimed
        nothing because nothing was left, which is no failure)."""
        refs = self.work_dir.jobs_of_chunk(worker_id)
        if not refs:
            return False
        try:
            return FINISHED in (self.work_dir.logs_dir / refs[-1].log_name).read_bytes()
        except OSError:
            return False

    def _raise_crash(self, number: int | None, crash: Crash, again: bool,
                     worker_id: int) -> None:
        """:class:`TaskCrashedError` for the task that ended a worker's process (or, for
        ``number`` None, for the first task no worker got to run)."""
        if crash.task is None or number is None:
            task = min(self.board.covered().stop, self.num_tasks - 1)
            how = (f"never ran: its worker's process died before its first task (unpickling "
                   f"the function, or the initializer): it {crash.how}")
            endings = [self.workers[w].ending or "" for w in self._barren]
        else:
            task, how = crash.task, f"ended its worker's process: it {crash.how}"
            endings = self.chunks[number].endings
        if not again:
            how += (f" (not rerun to see whether it does so again: max_num_resubmissions="
                    f"{self.max_num_resubmissions} allows no more attempts)")
        if number is not None:
            self.events.lost([number])
        raise TaskCrashedError(task, how, crash.signal, crash.status,
                               self.work_dir.log_tail(worker_id), str(self.work_dir.path),
                               endings)

    def _check_barren(self) -> None:
        """Fail the map when (1 + max_num_resubmissions) rounds of workers died before
        claiming anything since the last result: they will not get any further. First
        LATE_RESULT_SECONDS pass with nothing submitted: their claims and results may
        still be on their way (NFS); one that comes lets the map go on. A worker whose
        node said it can't run it (no python there, poolparty missing) fails the map at
        once: every worker would end so until the environment is fixed."""
        limit = (1 + self.max_num_resubmissions) * max(1, min(self.capacity, self.num_tasks))
        broken = any(self.workers[w].ending_class is Ending.ENVIRONMENT for w in self._barren)
        if (len(self._barren) < limit and not broken) or not self._work_waiting():
            return
        now = time.monotonic()
        if broken:
            self._barren_deadline = now
        if self._barren_deadline is None:
            self._barren_deadline = now + self._grace
            if self._grace > 0:
                self.log.warning(
                    "%d worker(s) in a row ended before claiming any task, more than "
                    "max_num_resubmissions=%d allows: waiting %.0f s for a result that may "
                    "still be on its way (NFS) before giving up", len(self._barren),
                    self.max_num_resubmissions, self._grace)
        if now < self._barren_deadline:
            return
        first = self.board.covered().stop
        tail = self._barren_logs.get(self._barren[-1], "")
        endings = [self.workers[w].ending or "" for w in self._barren]
        lost = {len(self.chunks): (range(first, self.num_tasks), tail)}
        lost.update({n: (c.tasks, "") for n, c in self.chunks.items()
                     if not c.done and c.worker is None and c.attempt > 0})
        self.events.lost(sorted(lost))
        raise ChunksLostError(lost, self.work_dir.path, dict.fromkeys(lost, endings),
                              self._grace)

    def _cancel_idle(self) -> None:
        """Once every task is claimed and no claim waits to be reopened, cancel the
        workers holding nothing that did not start yet or were requeued: they would
        start (again) for nothing."""
        if self._work_waiting() or self._last_chance:
            return
        holders = {c.worker for c in self.chunks.values() if c.held}
        idle = [w for w, status in self.workers.items()
                if status.live and w not in holders
                and (status.requeued or not self.events.worker_started(w))]
        if not idle or not self._cancel_quietly(idle):
            return
        for worker_id in idle:
            self.workers[worker_id].ending = "cancelled by the pool: no work left for it"
        self.log.info("cancelled %d idle worker(s): no work left for them", len(idle))

    def _cancel_quietly(self, worker_ids: list[int]) -> bool:
        """Cancel these workers; whether that worked. A scheduler that fails to answer
        (retried already) must not end a map that is running: logged, tried again at
        a later poll where that applies."""
        try:
            self.scheduler.cancel(self.work_dir, worker_ids)
            for worker_id in worker_ids:
                self.workers[worker_id].cancelled = True
            return True
        except SchedulerCommandError as error:
            self.log.warning("could not cancel workers %s now: %s", worker_ids, error)
            return False

    def _end_workers(self, finished: bool) -> None:
        """The map is over: cancel every worker still queued. On success none has work
        left (a pending one would start for nothing, a running one is only walking to
        the end of the claims), and one left running could write into the work_dir after
        it was archived or removed. With ``settle_workers`` (a kept work_dir) wait,
        briefly, for them to leave the queue, so their logs are whole when archived.
        Best effort: a failure here must not hide the exception being raised."""
        try:
            live = [w for w, status in self.workers.items() if status.live]
            if finished and self.lobby is not None and not self.settle_workers:
                # running ones wait in the lobby for the pool's next map (warm)
                self._read_claims()  # those that claimed run, whether or not a poll saw it
                self.kept_warm = [w for w in live if not self.workers[w].requeued and (
                    self.workers[w].ran or self.workers[w].last_seen is State.RUNNING
                    or self.events.worker_started(w))]
                live = [w for w in live if w not in self.kept_warm]
            elif (self.stop.is_set() and self.end_pool_workers is not None
                  and not self.abandoned):
                self.end_pool_workers()  # Ctrl-C, terminate: the lobby's workers too
            if live:
                self.scheduler.cancel(self.work_dir, live)
                for worker_id in live:
                    self.workers[worker_id].ending = "cancelled by the pool: the map was over"
                    self.workers[worker_id].cancelled = True
                if finished and not self._abandoned:
                    self.log.info("cancelled %d worker(s) left with no work", len(live))
                else:
                    self.log.warning("cancelled the %d worker(s) of this map", len(live))
            # those cancelled earlier too (idle ones): still COMPLETING, they write logs
            cancelled = [w for w, status in self.workers.items() if status.cancelled]
            if self.settle_workers and cancelled:
                self._wait_until_gone(cancelled)
        except Exception as error:  # noqa: BLE001
            self.log.error("could not cancel workers of this map: %s", error)

    def _wait_until_gone(self, worker_ids: list[int]) -> None:
        """Poll until none of these workers is listed, for at most SETTLE_SECONDS."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            states = self.scheduler.query(self.work_dir)
            if not any(w in states for w in worker_ids):
                return
            time.sleep(min(0.5, self.polling_interval))
        self.log.warning("workers %s still queued %.0f s after being cancelled",
                         [w for w in worker_ids if w in states], SETTLE_SECONDS)

    # ------------------------------------------------------------------ logs
    def _gather_logs(self, worker_ids: list[int]) -> None:
        """Fold these workers' events into the map's journal, print what their tasks
        printed (relay_output), and move their logs into logs.zip. Never fails the map."""
        worker_ids = [w for w in worker_ids if w not in self._logs_gathered]
        if not worker_ids:
            return
        try:
            logs = self.work_dir.logs_of(worker_ids)
            if self.relay_output:
                self._read_claims()  # who ran what: a short map may not have polled yet
                self._relay_output(logs)
            self.events.fold_logs(logs.values())
            self.work_dir.archive_logs(logs)
            self._logs_gathered.update(worker_ids)
        except Exception as error:  # noqa: BLE001 - the results matter more than the logs
            self.log.warning("could not archive the workers' logs: %s", error)

    def _gather_guest_logs(self) -> None:
        """As _gather_logs, for the logs of the pool's warm workers that visited this
        map (``logs/guest-<worker>.log``, named by the random id their claims carry)."""
        try:
            logs = self.work_dir.guest_logs()
            if not logs:
                return
            if self.relay_output:
                self._read_claims()
                self._relay_output(logs)
            self.events.fold_logs(logs.values())
            self.work_dir.archive_logs(logs)
        except Exception as error:  # noqa: BLE001 - the results matter more than the logs
            self.log.warning("could not archive the warm workers' logs: %s", error)

    def _relay_output(self, logs: dict[str, bytes]) -> None:
        """Print what the workers' tasks printed (``logs`` as ``logs_of`` gives them,
        ``<worker>/<log>``), only for tasks whose result came from that worker: to
        ``sys.stdout`` as it is now (a notebook's, a test's capture), as
        multiprocessing's workers print to the caller's terminal. Never fails the map."""
        try:
            for name, log in logs.items():
                worker_id = worker_of_log(name)
                delivered = {index for chunk in self.chunks.values()
                             if chunk.done and chunk.worker == worker_id for index in chunk.tasks}
                output = self.scheduler.without_own_lines(output_of_tasks(log, delivered))
                if output:
                    sys.stdout.write(output.decode("utf-8", errors="replace"))
            sys.stdout.flush()
        except Exception as error:  # noqa: BLE001 - a closed stdout must not lose results
            self.log.warning("could not print the tasks' output: %s", error)


def worker_of_log(name: str) -> int | str:
    """Whose log a name in logs.zip is: ``<worker>/<log>`` (a worker the map submitted),
    or ``guest/guest-<id>.log`` (a warm worker of the pool, by its random id)."""
    folder, _, file = name.partition("/")
    if folder == "guest":
        return file.removeprefix("guest-").removesuffix(".log")
    return int(folder)


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
