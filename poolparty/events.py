"""Events of a map, as JSON lines: what ``poolparty status`` and ``poolparty top`` read.

Each event is one JSON object on one line: ``{"event": kind, "t": time, "src": writer,
"n": sequence number, ...}``. No pickles and no environment values go into events: a
status command must be able to read them without trusting them with code.

Who writes where:

- The client appends its events to ``events.jsonl`` in the work_dir.
- Each worker (one job attempt of one chunk) appends to its own small file,
  ``events/<chunk>-<host>-<pid>.jsonl``: over NFS, ``O_APPEND`` from several hosts to one
  file is not atomic, but one writer per file is always safe.
- The client folds a chunk's worker files into ``events.jsonl`` when it gathers (or
  resubmits) that chunk, as logs are folded into ``logs.zip``, so a running map holds
  one events file per running chunk.
- When the map ends (however it ends) the client folds what is left, then moves
  ``events.jsonl`` into ``logs.zip`` (member ``events.jsonl``): a finished work_dir stays
  about ten files. A client that resumes the map starts a new ``events.jsonl``.

Every line is written by a single ``os.write`` on an ``O_APPEND`` descriptor of a file
created 0600, so writers on one host never interleave within a line. A reader takes
``logs.zip``'s copies, then ``events.jsonl``, then the unfolded worker files (read in the
opposite order, so a fold happening meanwhile duplicates lines instead of hiding them);
duplicates are dropped by ``(src, n)``. A last line without its newline (a writer killed
mid-write, or still writing) and a line that is not a JSON object are skipped and
counted; unknown kinds and unknown fields are ignored, so older readers keep working.

Writing an event never fails a map: an error is logged once and the event is dropped.

Timestamps ``t`` are each writer's own ``time.time()``. Clocks of nodes differ, so
rates and ages are computed from the client's timestamps only, and a worker reports the
duration of its chunk as a difference of its own monotonic clock.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .ranges import compress_ranges

TYPE_CHECKING = False  # not typing's: workers import this module on every job start
if TYPE_CHECKING:
    from typing import Any

    from .scheduler import Scheduler
    from .work_dir import WorkDir

JOURNAL = "events.jsonl"  # the client's file, and its name inside logs.zip
WORKER_DIR = "events"
#: the scheduler commands a status may call later to ask about the map's jobs
QUERY_COMMANDS = ("squeue", "qstat")
#: environment variables naming the scheduler job a worker runs in: (job id, array index)
JOB_VARIABLES = (
    ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"),
    ("SLURM_JOB_ID", None),
    ("JOB_ID", "SGE_TASK_ID"),
)
MAX_MESSAGE = 200
#: task failures a worker reports one by one; past that only its final count (each
#: event opens and closes a file, which costs round trips on NFS), the client's
#: "gathered" event lists them all
MAX_WORKER_FAILURES = 100
_WORKER_FILE = re.compile(r"^(\d+)-.*\.jsonl$")


# ---------------------------------------------------------------------- writing
def append_line_bytes(path: Path, data: bytes) -> None:
    """Append whole lines with one ``os.write`` on an O_APPEND descriptor (0600)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it all at once unless the disk is full
            view = view[os.write(descriptor, view):]
    finally:
        os.close(descriptor)


def describe_error(error: BaseException) -> tuple[str, str]:
    """An exception as (type name, first line of its message), short enough for a line."""
    try:
        text = str(error).strip()
    except Exception:  # noqa: BLE001 - a user's __str__ may raise: the event still goes
        text = "(its message could not be printed)"
    first_line = text.splitlines()[0] if text else ""
    return type(error).__qualname__, first_line[:MAX_MESSAGE]


class EventWriter:
    """Appends one writer's events to one file; thread-safe; never raises."""

    def __init__(self, path: Path) -> None:
        self.path = path
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
                append_line_bytes(self.path, (json.dumps(line) + "\n").encode())
            except Exception as error:  # noqa: BLE001 - a full disk, a value JSON can't hold
                self._warn(error)

    def _warn(self, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            import logging  # rare, and the worker avoids its import on every job start

            logging.getLogger("poolparty").warning(
                "could not write events to %s (poolparty status will miss them): %s",
                self.path, error)


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
    """The events of one attempt at one chunk, in its own file (see the module doc)."""

    def __init__(self, work_dir_path: Path, chunk_id: int) -> None:
        host = os.uname().nodename
        safe_host = re.sub(r"[^A-Za-z0-9._]", "_", host)[:64]
        super().__init__(work_dir_path / WORKER_DIR / f"{chunk_id}-{safe_host}-{os.getpid()}.jsonl")
        self.chunk_id = chunk_id
        self.host = host
        self._start = time.monotonic()
        self._failures = 0

    def _warn(self, error: Exception) -> None:
        if isinstance(error, FileNotFoundError):
            return  # no events directory: a client that does not collect events
        super()._warn(error)

    def started(self, environ: dict[str, str]) -> None:
        self._start = time.monotonic()
        self.emit("chunk_started", chunk=self.chunk_id, host=self.host, pid=os.getpid(),
                  **job_of_environment(environ))

    def task_failed(self, task_index: int, error: BaseException) -> None:
        self._failures += 1
        if self._failures > MAX_WORKER_FAILURES:
            return
        kind, message = describe_error(error)
        self.emit("task_failed", chunk=self.chunk_id, task=task_index, type=kind,
                  message=message)

    def finished(self, ok: int, failed: int) -> None:
        """``seconds`` is a difference on this node's clock: skew between nodes can't
        distort it."""
        self.emit("chunk_finished", chunk=self.chunk_id, ok=ok, failed=failed,
                  seconds=round(time.monotonic() - self._start, 3))


class ClientEvents(EventWriter):
    """The client's events, and the folding of workers' files into its journal."""

    def __init__(self, work_dir: WorkDir) -> None:
        super().__init__(work_dir.path / JOURNAL)
        self.work_dir = work_dir
        self.worker_dir = work_dir.path / WORKER_DIR
        try:
            os.mkdir(self.worker_dir, 0o700)
            os.chmod(self.worker_dir, 0o700)
        except FileExistsError:
            pass
        except OSError as error:
            self._warn(error)

    def map_started(self, scheduler: Scheduler, chunks: Sequence[range], resumed: bool) -> None:
        commands = getattr(scheduler, "commands", None) or {}
        self.emit(
            "map_started", map_id=self.work_dir.map_id, tasks=sum(len(c) for c in chunks),
            chunks=len(chunks), chunksize=len(chunks[0]) if chunks else 0,
            backend=scheduler.name, host=os.uname().nodename, pid=os.getpid(),
            resumed=resumed,
            commands={name: [str(part) for part in commands[name]]
                      for name in QUERY_COMMANDS if name in commands},
        )

    def submitted(self, chunk_ids: Sequence[int]) -> None:
        """Job ids are those known now (a local job gets its id when it starts)."""
        jobs = {ref.job_id for c in chunk_ids for ref in self.work_dir.jobs_of_chunk(c)[-1:]}
        self.emit("submitted", chunks=compress_ranges(chunk_ids), jobs=sorted(jobs))

    def resubmit(self, in_error: Sequence[int], missing: Sequence[int]) -> None:
        """The engine's decision and its reason; the resubmission itself is ``submitted``.
        The chunks' worker files are folded first: their attempts are over, and the
        reader then takes the files left in ``events/`` for the current attempt."""
        if in_error or missing:
            self.fold([*in_error, *missing])
            self.emit("resubmit", error=compress_ranges(in_error),
                      missing=compress_ranges(missing))

    def lost(self, chunk_ids: Sequence[int]) -> None:
        self.emit("lost", chunks=compress_ranges(chunk_ids))

    def abandoned(self, chunk_ids: Sequence[int]) -> None:
        self.emit("abandoned", chunks=compress_ranges(chunk_ids))

    def gathered(self, arrived: Sequence[tuple[int, list]], chunks: Sequence[range],
                 recovered: bool = False) -> None:
        """Chunks whose results the client has, with the tasks that raised.

        ``recovered``: results of an earlier client of this work_dir, which must not
        count in this client's throughput.
        """
        if not arrived:
            return
        self.fold([chunk_id for chunk_id, _ in arrived])
        errors = []
        for chunk_id, outcomes in arrived:
            for offset, outcome in enumerate(outcomes):
                if not outcome[0]:
                    errors.append([chunks[chunk_id].start + offset, *describe_error(outcome[1])])
        self.emit("gathered", chunks=compress_ranges([c for c, _ in arrived]),
                  tasks=sum(len(outcomes) for _, outcomes in arrived), errors=errors,
                  recovered=recovered)

    def map_ended(self, finished: bool, error: BaseException | None) -> None:
        """Record how the map ended, then archive the journal (see the module doc)."""
        how, fields = end_of(finished, error)
        self.emit("map_ended", how=how, **fields)
        self.archive()

    # ------------------------------------------------------------------ folding
    def fold(self, chunk_ids: Iterable[int] | None) -> None:
        """Move these chunks' worker files (all, for None) into the journal: appended
        first, deleted after, so a crash in between duplicates lines, never loses them.
        Never raises: the map goes on without its events."""
        wanted = None if chunk_ids is None else set(chunk_ids)
        paths = [p for p in worker_files(self.worker_dir)
                 if wanted is None or worker_chunk(p.name) in wanted]
        if not paths:
            return
        try:
            blobs = [_read(path) for path in paths]
            append_line_bytes(self.path, b"".join(
                blob if blob.endswith(b"\n") or not blob else blob + b"\n" for blob in blobs
            ))
            for path in paths:
                path.unlink(missing_ok=True)
        except OSError as error:
            self._warn(error)

    def archive(self) -> None:
        """The map ended: everything into ``logs.zip``, the small files deleted."""
        try:
            self.fold(None)
            if self.path.exists():
                self.work_dir.archive_log(JOURNAL, self.path.read_bytes())
                self.path.unlink()
            self.worker_dir.rmdir()  # a late write of a cancelled job has nowhere to go
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
def worker_files(directory: Path) -> list[Path]:
    """The unfolded worker files, by name (chunk, host, pid): a stable order."""
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries if _WORKER_FILE.match(entry.name)]
    except OSError:
        return []
    return [directory / name for name in sorted(names, key=_worker_sort_key)]


def worker_chunk(name: str) -> int | None:
    match = _WORKER_FILE.match(name)
    return int(match.group(1)) if match else None


def _worker_sort_key(name: str) -> tuple[int, str]:
    return worker_chunk(name) or 0, name


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
    """Every event of a work_dir: archived copies, the journal, then unfolded worker
    files (read last-to-first, processed first-to-last; see the module doc)."""
    worker_blobs = [_read(path) for path in worker_files(work_dir.path / WORKER_DIR)]
    journal = _read(work_dir.path / JOURNAL)
    archived = [] if started_afresh(journal) else work_dir.archived_logs(JOURNAL)
    events = EventLog()
    for blob in [*archived, journal, *worker_blobs]:
        events.add_blob(blob)
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
    return isinstance(event, dict) and event.get("event") == "map_started" and (
        event.get("resumed") is False)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # folded and deleted meanwhile: its lines are in the journal now
        return b""
