"""Events of a map, as JSON lines: what ``poolparty status`` and ``poolparty top`` read.

Each event is one JSON object on one line: ``{"event": kind, "t": time, "src": writer,
"n": sequence number, ...}``. No pickles and no environment values go into events: a
status command must be able to read them without trusting them with code.

Who writes where:

- The client appends its events to ``events.jsonl`` in the work_dir.
- Each worker (one job attempt of one chunk) writes its events into its job's log
  (``logs/``, the file the scheduler sends the job's output to), each on a line of its
  own after the mark ``poolparty-event:``. The log has one writer, the job, so this is
  safe over NFS, and a running chunk costs one file, not two: the work_dir's peak number
  of files is one of the things users watch (inode quotas).
- The client folds a chunk's worker events from its logs into ``events.jsonl`` when it
  gathers (or resubmits) that chunk, just before the logs go into ``logs.zip``.
- When the map ends (however it ends) the client folds what is left, then moves
  ``events.jsonl`` into ``logs.zip`` (member ``events.jsonl``): a finished work_dir stays
  about ten files. A client that resumes the map starts a new ``events.jsonl``.

Every line is written by a single ``os.write``: the client's on an ``O_APPEND``
descriptor of a file created 0600, a worker's on its standard error (after flushing
Python's own buffers), so writers never interleave within a line. A reader takes
``logs.zip``'s copies, then ``events.jsonl``, then the marked lines of the logs not yet
archived (read in the opposite order, so a fold happening meanwhile duplicates lines
instead of hiding them); duplicates are dropped by ``(src, n)``. A last line without its
newline (a writer killed mid-write, or still writing) and a line that is not a JSON object
are skipped and counted; unknown kinds and unknown fields are ignored, so older readers
keep working. In a log, only marked lines count; the mark may follow a line the user's
code left unfinished.

Writing an event never fails a map: an error is logged once and the event is dropped.

Timestamps ``t`` are each writer's own ``time.time()``. Clocks of nodes differ, so
rates and ages are computed from the client's timestamps only, and a worker reports the
duration of its chunk as a difference of its own monotonic clock.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Container, Iterable, Sequence
from pathlib import Path

from .escalation import memory_bytes
from .ranges import compress_ranges

TYPE_CHECKING = False  # not typing's: workers import this module on every job start
if TYPE_CHECKING:
    from typing import Any

    from .scheduler import Scheduler
    from .work_dir import WorkDir

JOURNAL = "events.jsonl"  # the client's file, and its name inside logs.zip
#: what starts a worker's event in its job's log
MARK = b"poolparty-event: "
#: what starts the line a worker writes before each task: ``poolparty-task: <index>``.
#: Not an event (a line per task would swell the journal): the record, read when a job
#: died, of the task its worker was running (poolparty.crashes)
TASK_MARK = b"poolparty-task: "

# The kinds of events (their "event" field): the writers below and the readers
# (poolparty.map_status, poolparty.crashes) name them by these constants only.
MAP_STARTED = "map_started"  #: the client began (or resumed) the map
SUBMITTED = "submitted"  #: the client submitted workers
RESUBMIT = "resubmit"  #: the client reopened a lost worker's claim, and why
WORKER_LOST = "worker_lost"  #: a worker ended before it claimed anything, and why
LOST = "lost"  #: chunks resubmitted too often: given up
ABANDONED = "abandoned"  #: chunks nobody needs any more (their futures were cancelled)
GATHERED = "gathered"  #: chunks whose results the client has
MAP_ENDED = "map_ended"  #: how the map ended
CHUNK_STARTED = "chunk_started"  #: a worker began a chunk
TASK_FAILED = "task_failed"  #: a task of a worker's chunk raised
CHUNK_FINISHED = "chunk_finished"  #: a worker ran all of its chunk's tasks
CLAIM_DONE = "claim_done"  #: a worker wrote a claim's result: each task's times (report)
CLIENT_KINDS = (MAP_STARTED, SUBMITTED, RESUBMIT, WORKER_LOST, LOST, ABANDONED, GATHERED,
                MAP_ENDED)
WORKER_KINDS = (CHUNK_STARTED, TASK_FAILED, CHUNK_FINISHED, CLAIM_DONE)
KINDS = CLIENT_KINDS + WORKER_KINDS


def marked_event(kind: str) -> bytes:
    """How a worker's event of this kind begins in its job's log ("event" is the first
    field EventWriter.emit writes): finding it needs no JSON parsing."""
    return MARK + b'{"event": "' + kind.encode() + b'"'


#: what a log holds once its worker started its chunk
STARTED = marked_event(CHUNK_STARTED)
#: what a log holds when its worker finished its chunk (and wrote the result after it)
FINISHED = marked_event(CHUNK_FINISHED)
#: how much of a log's start is read to tell whether its worker started
_HEAD_BYTES = 65536
#: environment variables naming the scheduler job a worker runs in: (job id, array index)
JOB_VARIABLES = (
    ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"),
    ("SLURM_JOB_ID", None),
    ("JOB_ID", "SGE_TASK_ID"),
)
MAX_MESSAGE = 200
#: how many tasks of a claim a worker records one by one for the map's report (past
#: that, the claim's totals: a line per claim must stay a line)
MAX_TASKS_RECORDED = 2000
#: task failures a worker reports one by one; past that only its final count (they
#: share the job's log with its output), the client's "gathered" event lists them all
MAX_WORKER_FAILURES = 100


# ---------------------------------------------------------------------- writing
def append_line_bytes(path: Path, data: bytes) -> None:
    """Append whole lines with one ``os.write`` on an O_APPEND descriptor (0600)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        write_all(descriptor, data)
    finally:
        os.close(descriptor)


def write_all(descriptor: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may take only part of it."""
    view = memoryview(data)
    while view:  # a regular file takes it all at once unless the disk is full
        view = view[os.write(descriptor, view):]


def describe_error(error: BaseException) -> tuple[str, str]:
    """An exception as (type name, first line of its message), short enough for a line."""
    try:
        text = str(error).strip()
    except Exception:  # noqa: BLE001 - a user's __str__ may raise: the event still goes
        text = "(its message could not be printed)"
    first_line = text.splitlines()[0] if text else ""
    return type(error).__qualname__, first_line[:MAX_MESSAGE]


class EventWriter:
    """Writes one writer's events, a line each; thread-safe; never raises."""

    def __init__(self) -> None:
        self.source = os.urandom(6).hex()  # not secrets: a cheap import on every job start
        self._sequence = 0
        self._lock = threading.Lock()
        self._warned = False

    def emit(self, kind: str, **fields: Any) -> None:
        with self._lock:
            line = {"event": kind, "t": round(time.time(), 3), "src": self.source,
                    "n": self._sequence, **fields}
            self._sequence += 1
            try:
                self._write((json.dumps(line) + "\n").encode())
            except Exception as error:  # noqa: BLE001 - a full disk, a value JSON can't hold
                self._warn(error)

    def _write(self, line: bytes) -> None:
        raise NotImplementedError

    def _warn(self, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            import logging  # rare, and the worker avoids its import on every job start

            logging.getLogger("poolparty").warning(
                "could not write events (poolparty status will miss them): %s", error)


def job_of_environment(environ: dict[str, str]) -> dict[str, str]:
    """The scheduler job a worker runs in, from the scheduler's own variables only."""
    for job_variable, index_variable in JOB_VARIABLES:
        if environ.get(job_variable):
            job = {"job": environ[job_variable]}
            if index_variable and environ.get(index_variable):
                job["index"] = environ[index_variable]
            return job
    return {}


class WorkerEvents(EventWriter):
    """The events of one worker (one job), marked lines in its job's log (the worker's
    standard error; see the module doc)."""

    def __init__(self, worker_id: int | None, descriptor: int = 2) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.descriptor = descriptor
        self.host = os.uname().nodename
        self._start = time.monotonic()
        self._failures = 0

    def _write(self, line: bytes) -> None:
        """After what Python still holds of the task's output, so the log keeps its
        order; a line of output left unfinished gets the mark after it."""
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        write_all(self.descriptor, MARK + line)

    def started(self, environ: dict[str, str]) -> None:
        self._start = time.monotonic()
        self.emit(CHUNK_STARTED, worker=self.worker_id, host=self.host, pid=os.getpid(),
                  **job_of_environment(environ))

    def task_starting(self, task_index: int) -> None:
        """Note the task about to run, after the output of those before it: if it ends
        the process, the log says which task did. One short write per task."""
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
            os.write(self.descriptor, b"%s%d\n" % (TASK_MARK, task_index))
        except Exception:  # noqa: BLE001 - a full disk, a stream closed by the user's code:
            pass  # the task runs all the same

    def task_failed(self, task_index: int, error: BaseException) -> None:
        self._failures += 1
        if self._failures > MAX_WORKER_FAILURES:
            return
        kind, message = describe_error(error)
        self.emit(TASK_FAILED, worker=self.worker_id, task=task_index, type=kind,
                  message=message)

    def claim_done(self, claim: int, first: int, result_bytes: int, measured: dict) -> None:
        """A claim's result is written: its tasks as TaskMeter measured them, for the
        map's report (poolparty.report). One line per claim, not per task."""
        self.emit(CLAIM_DONE, worker=self.worker_id, claim=claim, first=first,
                  bytes=result_bytes, **measured)

    def finished(self, ok: int, failed: int) -> None:
        """``seconds`` is a difference on this node's clock: skew between nodes can't
        distort it."""
        self.emit(CHUNK_FINISHED, worker=self.worker_id, ok=ok, failed=failed,
                  seconds=round(time.monotonic() - self._start, 3))


class ClientEvents(EventWriter):
    """The client's events, and the folding of workers' events into its journal."""

    def __init__(self, work_dir: WorkDir) -> None:
        super().__init__()
        self.path = work_dir.path / JOURNAL
        self.work_dir = work_dir

    def _write(self, line: bytes) -> None:
        append_line_bytes(self.path, line)

    def map_started(self, scheduler: Scheduler, num_tasks: int, block: int,
                    resumed: bool) -> None:
        commands = getattr(scheduler, "commands", None) or {}
        self.emit(
            MAP_STARTED, map_id=self.work_dir.map_id, tasks=num_tasks, block=block,
            backend=scheduler.name, host=os.uname().nodename, pid=os.getpid(),
            resumed=resumed,
            commands={name: [str(part) for part in commands[name]]
                      for name in [scheduler.query_command] if name in commands},
            cpus=scheduler.cpus_per_worker, memory=scheduler.asked_memory,
            memory_bytes=memory_bytes(scheduler.asked_memory,
                                      getattr(scheduler, "memory_unit", 2**20)),
        )

    def submitted(self, worker_ids: Sequence[int]) -> None:
        """Job ids are those known now (a local job gets its id when it starts)."""
        jobs = {ref.job_id for w in worker_ids for ref in self.work_dir.jobs_of_chunk(w)[-1:]}
        self.emit(SUBMITTED, workers=compress_ranges(worker_ids), jobs=sorted(jobs))

    def reopened(self, number: int, attempt: int, reason: str, worker: int | None) -> None:
        """The engine reopened a claim whose worker ended without its result (that
        worker is lost), and why."""
        self.emit(RESUBMIT, chunk=number, attempt=attempt, reason=reason, worker=worker)

    def worker_lost(self, worker: int, reason: str) -> None:
        """A worker ended holding no claim while work waited (its job died before it
        claimed): nothing to reopen, but a loss the map's report counts."""
        self.emit(WORKER_LOST, worker=worker, reason=reason)

    def lost(self, chunk_ids: Sequence[int]) -> None:
        self.emit(LOST, chunks=compress_ranges(chunk_ids))

    def abandoned(self, chunk_ids: Sequence[int]) -> None:
        self.emit(ABANDONED, chunks=compress_ranges(chunk_ids))

    def gathered(self, arrived: Sequence[tuple[int, range, list]],
                 recovered: bool = False) -> None:
        """Claims whose results the client has (``(claim, tasks, outcomes)``): their
        numbers, their tasks (``spans``: the claim files are archived when the map
        succeeds) and the tasks that raised.

        ``recovered``: results of an earlier client of this work_dir, which must not
        count in this client's throughput.
        """
        if not arrived:
            return
        errors = []
        for _, tasks, outcomes in arrived:
            for offset, outcome in enumerate(outcomes):
                if not outcome[0]:
                    errors.append([tasks.start + offset, *describe_error(outcome[1])])
        self.emit(GATHERED, chunks=compress_ranges([c for c, _, _ in arrived]),
                  spans=[[c, tasks.start, tasks.stop] for c, tasks, _ in arrived],
                  tasks=sum(len(outcomes) for _, _, outcomes in arrived), errors=errors,
                  recovered=recovered)

    def map_ended(self, finished: bool, error: BaseException | None,
                  cpu: float | None = None) -> None:
        """Record how the map ended (``cpu``: the CPU seconds its client's process used
        while the map ran, for the map's report), then archive the journal (see the
        module doc)."""
        how, fields = end_of(finished, error)
        self.emit(MAP_ENDED, how=how, **fields,
                  **({} if cpu is None else {"client_cpu": round(cpu, 3)}))
        self.archive()

    # ------------------------------------------------------------------ folding
    def fold(self, chunk_ids: Iterable[int] | None) -> None:
        """Copy the worker events in these chunks' logs (every log, for None) into the
        journal, before the logs are archived and deleted: a crash in between duplicates
        lines, never loses them. Never raises: the map goes on without its events."""
        if chunk_ids is None:
            paths = log_files(self.work_dir.logs_dir)
        else:
            paths = [self.work_dir.logs_dir / ref.log_name
                     for chunk_id in chunk_ids for ref in self.work_dir.jobs_of_chunk(chunk_id)]
        self.fold_logs(_read(path) for path in paths)

    def fold_logs(self, logs: Iterable[bytes]) -> None:
        """Copy the worker events in these logs into the journal (see fold)."""
        lines = [line for log in logs for line in marked_lines(log)]
        if not lines:
            return
        try:
            append_line_bytes(self.path, b"\n".join(lines) + b"\n")
        except OSError as error:
            self._warn(error)

    def worker_started(self, chunk_id: int) -> bool:
        """Whether the worker of the chunk's newest job began: its first event is near
        the top of the job's log (only the log's start is read)."""
        refs = self.work_dir.jobs_of_chunk(chunk_id)
        if not refs:
            return False
        try:
            with open(self.work_dir.logs_dir / refs[-1].log_name, "rb") as log:
                head = log.read(_HEAD_BYTES)
        except OSError:
            return False
        return STARTED in head

    def archive(self) -> None:
        """The map ended: everything into ``logs.zip``, the small files deleted."""
        try:
            self.fold(None)
            if self.path.exists():
                self.work_dir.archive_log(JOURNAL, self.path.read_bytes())
                self.path.unlink()
        except FileNotFoundError:
            pass
        except Exception as error:  # noqa: BLE001 - must not hide how the map ended
            self._warn(error)


def end_of(finished: bool, error: BaseException | None) -> tuple[str, dict[str, str]]:
    """How a map ended, in the words status shows: finished, cancelled, stopped (the
    caller stopped reading results: in ``map`` a task raised) or failed."""
    from .errors import PoolTerminated

    if finished:
        return "finished", {}
    if error is None or isinstance(error, GeneratorExit):
        return "stopped", {}
    if isinstance(error, (KeyboardInterrupt, PoolTerminated)):
        return "cancelled", {"type": type(error).__qualname__}
    kind, message = describe_error(error)
    return "failed", {"type": kind, "message": message}


# ---------------------------------------------------------------------- reading
def log_files(directory: Path) -> list[Path]:
    """The logs not archived yet (of running jobs, or of a map that ended unfinished),
    by name: a stable order."""
    try:
        with os.scandir(directory) as entries:
            names = sorted(entry.name for entry in entries if entry.is_file())
    except OSError:
        return []
    return [directory / name for name in names]


def marked_lines(log: bytes) -> list[bytes]:
    """The worker events in a job's log: what follows the mark on each whole line."""
    if MARK not in log:
        return []
    lines = log.split(b"\n")[:-1]  # the last part has no newline yet
    return [line[line.index(MARK) + len(MARK):] for line in lines if MARK in line]


#: the lines of a job's log that are poolparty's, not the tasks' output: the worker's
#: first line (poolparty.worker.main) and job.sh's word on how the worker ended
OWN_LINE_PREFIXES = (b"poolparty worker: ", b"poolparty: the worker ")


def task_output(log: bytes) -> bytes:
    """What the tasks printed (stdout and stderr, merged as the job's log has them):
    the log without the worker's events and poolparty's own lines. Output left
    unfinished before an event is kept, ended by a newline."""
    kept = []
    for line in log.splitlines(keepends=True):
        mark = MARK if MARK in line else TASK_MARK if TASK_MARK in line else None
        if mark is not None:
            before = line[:line.index(mark)]
            if before:
                kept.append(before + b"\n")
        elif not line.startswith(OWN_LINE_PREFIXES):
            kept.append(line)
    return b"".join(kept)


def output_of_tasks(log: bytes, keep: Container[int]) -> bytes:
    """What a worker's tasks in ``keep`` printed (each task's output runs from its
    ``poolparty-task`` line to the next), and what the worker printed before its first
    task (an initializer's output): a worker that died mid-claim leaves out the output
    of tasks another worker ran again."""
    kept, current = [], None
    for line in log.splitlines(keepends=True):
        if TASK_MARK in line:
            before = line[:line.index(TASK_MARK)]
            if before and (current is None or current in keep):
                kept.append(before + b"\n")
            current = int(line[line.index(TASK_MARK) + len(TASK_MARK):].strip() or -1)
        elif current is None or current in keep:
            kept.append(line)
    return task_output(b"".join(kept))


def output_of_attempts(logs: Sequence[bytes]) -> bytes:
    """The task output of a chunk's attempts (oldest first): the newest that finished
    its chunk, as that is the one whose result counts; else the newest."""
    finished = [log for log in logs if FINISHED in log]
    chosen = finished[-1] if finished else (logs[-1] if logs else b"")
    return task_output(chosen)


class EventLog:
    """The events of one work_dir, in reading order, with what had to be skipped."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        #: a last line without its newline: killed, or still being written
        self.truncated = 0
        #: lines that are not a JSON object with an "event" kind
        self.unreadable = 0
        self.duplicates = 0
        self._seen: set[tuple[str, int]] = set()

    def add_blob(self, blob: bytes) -> None:
        lines = blob.split(b"\n")
        if lines[-1].strip():
            self.truncated += 1
        for line in lines[:-1]:
            if line.strip():
                self.add_line(line)

    def add_log(self, log: bytes) -> None:
        """The worker events in a job's log (its other lines are the job's output)."""
        last_line = log.rsplit(b"\n", 1)[-1]
        if MARK in last_line:
            self.truncated += 1
        for line in marked_lines(log):
            self.add_line(line)

    def add_line(self, line: bytes) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.unreadable += 1
            return
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            self.unreadable += 1
            return
        key = (event.get("src"), event.get("n"))
        if isinstance(key[0], str) and isinstance(key[1], int):
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
        self.events.append(event)


def read_events(work_dir: WorkDir) -> EventLog:
    """Every event of a work_dir: archived copies, the journal, then the worker events
    in logs not archived yet (read last-to-first, processed first-to-last; see the module
    doc)."""
    logs = [_read(path) for path in log_files(work_dir.logs_dir)]
    journal = _read(work_dir.path / JOURNAL)
    archived = [] if started_afresh(journal) else work_dir.archived_logs(JOURNAL)
    events = EventLog()
    for blob in [*archived, journal]:
        events.add_blob(blob)
    for log in logs:
        events.add_log(log)
    return events


def started_afresh(journal: bytes) -> bool:
    """Whether the journal begins with the first client's start: then no copy of it was
    archived yet, and logs.zip, which a running client keeps without a readable index
    (salvaging it means reading every log), need not be read."""
    first_line = journal.split(b"\n", 1)[0]
    try:
        event = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == MAP_STARTED and (
        event.get("resumed") is False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # folded and deleted meanwhile: its lines are in the journal now
        return b""
