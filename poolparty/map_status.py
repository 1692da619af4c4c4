"""What a map is doing, read from its work_dir: the model behind ``poolparty status``
and ``poolparty top``, usable from Python (a notebook, say)::

    from poolparty.map_status import read_status

    status = read_status(".poolparty")      # the most recent map there, or a map's dir
    status.state, status.tasks["done"], status.errors

It reads the work_dir's files only: its events (``poolparty.events``), map.json, and
the claims the workers made (``poolparty.claims``: ``claims/``, ``retries/``,
``requeue/``) and the result files not gathered yet, by their names (never a pickle):
while the map runs, after it ended (failed, or ``keep_work_dir=True``) and after its
client died. Nothing in the work_dir is written, locked or repaired, so it is safe next
to a running client, on any host that sees the work_dir. It never asks the scheduler:
that is the command line's job (``poolparty.commands.status``), which knows when it is
worth a query.

Workers pull chunks of tasks ("claims", cut when claimed), so a task's state follows
from the claim that covers it, the strongest fact winning:

- gathered by the client (its latest ``gathered`` event): done, or failed (the function
  raised);
- lost (its claim's workers died more often than ``max_num_resubmissions`` allows);
- a result file waits for the client (busy, or dead), or the worker holding it
  finished (it writes each result before its next claim; the file may not be listed
  here yet): done, or failed as its worker said;
- the map ended without it: cancelled (the client cancels what is left when it ends);
- claimed, no result yet: running (its tasks that raised already count as failed);
  reopened after its worker was lost and not claimed again yet: queued;
- never claimed: queued once a worker was submitted, else pending.

Listings of a shared file system may lag (NFS: up to a minute), so a claim made a moment
ago may still show as queued. Workers are counted from their events: submitted by the
client, started and finished on their node; a worker whose claim was reopened was lost.

Throughput and ETA use the client's timestamps only: tasks gathered by the current
client divided by the time since it started, up to now when status runs on the
client's host and the client is alive, else up to the client's last event. Worker
durations are differences on each worker's own clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .claims import CLAIMS, RETRIES, ClaimBoard, parse_entry
from .errors import InvalidInputError
from .events import (
    ABANDONED,
    CHUNK_FINISHED,
    CHUNK_STARTED,
    CLAIM_DONE,
    GATHERED,
    LOST,
    MAP_ENDED,
    MAP_STARTED,
    RESUBMIT,
    SUBMITTED,
    TASK_FAILED,
    WORKER_LOST,
    EventLog,
    read_events,
)
from .ranges import expand_ranges
from .work_dir import WorkDir, client_running, default_root

#: the states of a task, in the order status shows them
STATES = ("pending", "queued", "running", "done", "failed", "lost", "cancelled")
#: the states of a map that has ended
ENDED = ("finished", "failed", "cancelled", "stopped")
FIRST_TASKS = 5  #: task ids shown per error type


# ---------------------------------------------------------------------- finding the map
class NoMapError(InvalidInputError):
    """The path is not a map's work_dir and holds none: a map that succeeded removes
    its work_dir (unless ``keep_work_dir=True``), so there is nothing left to read."""


def find_map(path: str | os.PathLike | None = None) -> Path:
    """The map directory to read: ``path`` itself, or the most recent map in it (a
    work_dir root such as ./.poolparty); None: the configured ``work_dir`` root (see
    ``poolparty config``), else ./.poolparty."""
    root = Path(path).expanduser().absolute() if path else configured_root()
    if not root.exists():
        raise NoMapError(
            f"no work_dir {str(root)!r}. A map that succeeded removes its work_dir (unless "
            f"keep_work_dir=True), so only maps that failed, were kept, or still run have "
            f"a status. Give the map's directory, or its root (default ./.poolparty)."
        )
    if not root.is_dir():
        raise NoMapError(f"{str(root)!r} is not a directory: give a map's work_dir.")
    if is_map_dir(root):
        return root
    maps = [child for child in root.iterdir()
            if child.is_dir() and not child.name.startswith(".") and is_map_dir(child)]
    if not maps:
        raise NoMapError(f"no poolparty map in {str(root)!r} (nor is it one).")
    return max(maps, key=last_activity)


def configured_root() -> Path:
    """Where pools made here put their maps: ``work_dir`` from POOLPARTY_WORK_DIR or a
    config file, else the default root. A broken setting raises ConfigError."""
    from .config import resolve  # the config layer: only when no path is given

    work_dir = resolve()["work_dir"].value
    return Path(work_dir).expanduser().absolute() if work_dir else default_root()


def is_map_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("map.json", "client.lock"))


def last_activity(path: Path) -> float:
    """When a map last changed: its directory or its journals, whichever is newest."""
    times = []
    for candidate in (path, path / "events.jsonl", path / "client.log.jsonl", path / "logs.zip"):
        try:
            times.append(candidate.stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


# ---------------------------------------------------------------------- claims on disk
@dataclass
class ClaimFiles:
    """The claims as the work_dir's files show them now (listings are hints: a claim
    made a moment ago may not show yet). Read with ``poolparty.claims.ClaimBoard``."""

    #: each claim's tasks, by claim number
    ranges: dict[int, range] = field(default_factory=dict)
    #: the worker holding each claim's newest attempt claimed (None: can't be read yet)
    holders: dict[int, int | None] = field(default_factory=dict)
    #: reopened claims whose newest attempt nobody claimed yet
    waiting: set[int] = field(default_factory=set)
    #: workers that held an attempt of a claim that was reopened since: lost
    lost_workers: set[int] = field(default_factory=set)
    #: claims whose result file waits for the client
    results: set[int] = field(default_factory=set)
    _by_start: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @classmethod
    def read(cls, work_dir: WorkDir, num_tasks: int) -> ClaimFiles:
        if not (work_dir.path / CLAIMS).is_dir():  # a map that succeeded archived them
            return cls.from_archive(work_dir.archived_claims())
        board, files = ClaimBoard(work_dir.path, num_tasks), cls()
        for number, info in board.claims().items():
            files.holders[number] = worker_number(info.identity)
            if info.start is None and info.attempt > 0:  # a retry not readable yet:
                info = board.read(number, 0)  # the same range
            if info.start is not None and info.stop is not None:
                files.ranges[number] = range(info.start, info.stop)
        for number, attempt in board.requeues().items():
            earlier = board.claims_of(number)
            if attempt > max((info.attempt for info in earlier), default=-1):
                files.waiting.add(number)
            files.lost_workers.update(
                w for info in earlier if info.attempt < attempt
                and (w := worker_number(info.identity)) is not None)
        files.results = set(result_ids(work_dir))
        return files

    @classmethod
    def from_archive(cls, members: dict[str, bytes]) -> ClaimFiles:
        """The claims of a map that succeeded, from their copies in logs.zip: each
        claim's range and the worker of its newest attempt (whose result counted)."""
        files, newest = cls(), {}
        for name, blob in members.items():
            directory, _, entry = name.partition("/")
            found = ((int(entry), 0) if directory == CLAIMS and entry.isdigit()
                     else parse_entry(entry) if directory == RETRIES else None)
            try:
                record = json.loads(blob)
            except ValueError:
                continue
            if found is None or not isinstance(record, dict):
                continue
            number, attempt = found
            if isinstance(record.get("start"), int) and isinstance(record.get("stop"), int):
                files.ranges.setdefault(number, range(record["start"], record["stop"]))
            if attempt >= newest.get(number, -1):
                newest[number] = attempt
                files.holders[number] = worker_number(record)
        return files

    def claim_of(self, task: int) -> int | None:
        """The claim covering a task, if its claim file was read."""
        if len(self._by_start) != len(self.ranges):
            self._by_start = sorted((tasks.start, number) for number, tasks in self.ranges.items())
        index = bisect.bisect_right(self._by_start, (task, math.inf)) - 1
        if index >= 0 and task in self.ranges[self._by_start[index][1]]:
            return self._by_start[index][1]
        return None


def code_of(state: str) -> bytes:
    """A task state's code in MapView.task_codes: its index in STATES."""
    return bytes([STATES.index(state)])


def worker_number(identity: dict[str, Any] | None) -> int | None:
    """The worker id (the scheduler seam's) a claim's identity names."""
    number = (identity or {}).get("worker_number")
    return number if isinstance(number, int) else None


def result_ids(work_dir: WorkDir) -> list[int]:
    """Claims with a result file not gathered yet (names only: nothing is unpickled)."""
    try:
        return work_dir.new_result_ids()
    except OSError:
        return []


# ---------------------------------------------------------------------- from events to states
@dataclass
class WorkerView:
    """One worker (one job) as its events describe it."""

    host: str | None = None
    started: bool = False
    #: (ok, failed, seconds) once it ran out of work, said by the worker
    finished: tuple[int, int, float] | None = None
    #: tasks that raised, as it reported them (its first MAX_WORKER_FAILURES)
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Session:
    """One client's run of the map (a resumed map has one per client)."""

    source: str
    started: float
    host: str | None
    pid: int | None
    backend: str | None
    commands: dict[str, list[str]]
    last: float
    gathered_tasks: int = 0  # by this client, recovered results excluded
    ended: dict[str, Any] | None = None


Event = dict[str, Any]
Errors = dict[int, tuple[str, str]]


class MapView:
    """Applies events in order, each by the handler of its kind (``handlers``); unknown
    kinds are ignored (older readers keep working), malformed events counted. The
    claims' ranges come from their files (``files``): events name claims by number."""

    def __init__(self, num_tasks: int, files: ClaimFiles) -> None:
        self.num_tasks, self.files = num_tasks, files
        self.sessions: list[Session] = []
        self.submitted: set[int] = set()  # worker ids
        self.workers: dict[int, WorkerView] = {}
        self.reopened: list[dict[str, Any]] = []  # {"chunk", "attempt", "reason"}
        self.lost: set[int] = set()  # claim numbers
        self.abandoned: set[int] = set()
        self.gathered: set[int] = set()
        self.gathered_errors: Errors = {}
        self.malformed = 0

    def apply(self, event: Event) -> None:
        handler = self.handlers.get(event["event"])
        if handler is None:
            return
        try:
            handler(self, event)
            session = self.sessions[-1] if self.sessions else None
            if session is not None and event.get("src") == session.source:
                session.last = max(session.last, float(event.get("t", session.last)))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            self.malformed += 1

    def worker(self, worker_id: Any) -> WorkerView:
        if not isinstance(worker_id, int):
            raise TypeError(worker_id)
        return self.workers.setdefault(worker_id, WorkerView())

    # client events
    def _on_map_started(self, event: Event) -> None:
        commands = event.get("commands") or {}
        self.sessions.append(Session(
            str(event["src"]), float(event["t"]), event.get("host"), event.get("pid"),
            event.get("backend"), {str(k): [str(a) for a in v] for k, v in commands.items()},
            float(event["t"]),
        ))

    def _on_submitted(self, event: Event) -> None:
        self.submitted.update(expand_ranges(event["workers"]))

    def _on_resubmit(self, event: Event) -> None:
        self.reopened.append({"chunk": int(event["chunk"]), "attempt": int(event["attempt"]),
                              "reason": str(event.get("reason", ""))})
        if isinstance(event.get("worker"), int):  # known after the claims are archived too
            self.files.lost_workers.add(event["worker"])

    def _on_worker_lost(self, event: Event) -> None:
        if isinstance(event.get("worker"), int):
            self.files.lost_workers.add(event["worker"])

    def _on_lost(self, event: Event) -> None:
        self.lost.update(expand_ranges(event["chunks"]))

    def _on_abandoned(self, event: Event) -> None:
        self.abandoned.update(expand_ranges(event["chunks"]))

    def _on_gathered(self, event: Event) -> None:
        """A claim gathered again (a resumed map reruns claims whose tasks raised) drops
        the errors its earlier result had."""
        claims = expand_ranges(event["chunks"])
        for number, start, stop in event.get("spans", []):  # known without the claim files
            self.files.ranges.setdefault(int(number), range(int(start), int(stop)))
        for number in claims:
            tasks = self.files.ranges.get(number, range(0))
            if self.gathered_errors and tasks:
                for task in tasks:
                    self.gathered_errors.pop(task, None)
        self.gathered.update(claims)
        for task, kind, message in event.get("errors", []):
            self.gathered_errors[int(task)] = (str(kind), str(message))
        if self.sessions and not event.get("recovered"):
            self.sessions[-1].gathered_tasks += int(event.get("tasks", 0))

    def _on_map_ended(self, event: Event) -> None:
        if self.sessions:
            self.sessions[-1].ended = {"how": str(event["how"]), "t": float(event["t"]),
                                       "type": event.get("type"),
                                       "message": event.get("message")}

    # worker events
    def _on_chunk_started(self, event: Event) -> None:
        worker = self.worker(event["worker"])
        worker.started, worker.host = True, str(event.get("host", "?"))

    def _on_task_failed(self, event: Event) -> None:
        worker = self.worker(event["worker"])
        worker.errors[int(event["task"])] = (str(event["type"]), str(event["message"]))

    def _on_chunk_finished(self, event: Event) -> None:
        worker = self.worker(event["worker"])
        worker.finished = (int(event["ok"]), int(event["failed"]), float(event["seconds"]))

    def _on_claim_done(self, event: Event) -> None:
        """Each task's times, for the map's report (poolparty.report); the status counts
        tasks from the results and the claims."""

    #: what each kind of event does to the view
    handlers: ClassVar[dict[str, Callable[[MapView, Event], None]]] = {
        MAP_STARTED: _on_map_started,
        SUBMITTED: _on_submitted,
        RESUBMIT: _on_resubmit,
        WORKER_LOST: _on_worker_lost,
        LOST: _on_lost,
        ABANDONED: _on_abandoned,
        GATHERED: _on_gathered,
        MAP_ENDED: _on_map_ended,
        CHUNK_STARTED: _on_chunk_started,
        TASK_FAILED: _on_task_failed,
        CHUNK_FINISHED: _on_chunk_finished,
        CLAIM_DONE: _on_claim_done,
    }

    # summaries
    def task_counts(self, map_ended: bool) -> tuple[dict[str, int], Errors]:
        """Tasks per state, and every task known to have raised (see the module doc)."""
        codes = self.task_codes(map_ended)
        errors = self.known_errors()
        for task in errors:
            if 0 <= task < self.num_tasks and STATES[codes[task]] in ("done", "running"):
                codes[task:task + 1] = code_of("failed")
        counts = {state: codes.count(code_of(state)) for state in STATES}
        unreported = min(self.unreported_failures(), counts["done"])
        counts["done"] -= unreported
        counts["failed"] += unreported
        return counts, errors

    def task_codes(self, map_ended: bool) -> bytearray:
        """Each task's state as its index in STATES, failures not applied yet: claims
        painted in the order of the module doc's rules, the strongest last."""
        unclaimed = len(STATES)  # a code of its own until the end
        codes = bytearray([unclaimed]) * self.num_tasks
        self._paint(codes, self.files.ranges, "running")
        self._paint(codes, self.files.waiting, "queued")
        if map_ended:
            for state in ("running", "queued"):
                codes = codes.replace(bytes([STATES.index(state)]), code_of("cancelled"))
        self._paint(codes, self.files.results | self.finished_workers_claims(), "done")
        self._paint(codes, self.lost, "lost")
        self._paint(codes, self.abandoned, "cancelled")
        self._paint(codes, self.gathered, "done")
        lost_unclaimed = any(number not in self.files.ranges for number in self.lost)
        rest = ("lost" if lost_unclaimed else "cancelled" if map_ended
                else "queued" if self.submitted else "pending")
        return codes.replace(bytes([unclaimed]), code_of(rest))

    def finished_workers_claims(self) -> set[int]:
        """Claims held by workers that finished: each wrote its result before it went on."""
        finished = {w for w, view in self.workers.items() if view.finished is not None}
        return {number for number, holder in self.files.holders.items() if holder in finished}

    def _paint(self, codes: bytearray, claims: Iterable[int], state: str) -> None:
        """Set the tasks of these claims (those whose range is known) to ``state``."""
        for number in claims:
            tasks = self.files.ranges.get(number)
            if tasks:
                codes[tasks.start:tasks.stop] = code_of(state) * len(tasks)

    def known_errors(self) -> Errors:
        """The tasks that raised: as gathered, else as the worker holding the newest
        attempt of their claim reported (an earlier, lost attempt's reports are void:
        its tasks run again)."""
        errors = dict(self.gathered_errors)
        void = self.gathered | self.files.waiting
        for worker_id, worker in self.workers.items():
            for task, error in worker.errors.items():
                claim = self.files.claim_of(task)
                if claim is None or claim in void or task in errors:
                    continue
                if self.files.holders.get(claim) in (worker_id, None):
                    errors[task] = error
        return errors

    def unreported_failures(self) -> int:
        """Failures a finished worker counted but did not report one by one (past its
        first MAX_WORKER_FAILURES), in results not gathered yet."""
        total = 0
        for worker_id, worker in self.workers.items():
            if worker.finished is None or worker.finished[1] <= len(worker.errors):
                continue
            held = {number for number, holder in self.files.holders.items()
                    if holder == worker_id}
            known = sum(1 for task in self.gathered_errors
                        if self.files.claim_of(task) in held)
            pending = sum(1 for task in worker.errors
                          if self.files.claim_of(task) not in self.gathered)
            total += max(0, worker.finished[1] - known - pending)
        return total

    def worker_counts(self, map_ended: bool) -> dict[str, Any]:
        """Workers submitted, running (started, not finished, not lost, while the map
        runs), finished and lost; hosts of the running ones."""
        lost = self.files.lost_workers
        finished = {w for w, view in self.workers.items() if view.finished is not None}
        running = [view for w, view in self.workers.items()
                   if view.started and w not in finished and w not in lost and not map_ended]
        seconds = [view.finished[2] for view in self.workers.values() if view.finished]
        return {
            "submitted": len(self.submitted),
            "running": len(running),
            "finished": len(finished),
            "lost": len(lost - finished),
            "mean_seconds": round(sum(seconds) / len(seconds), 3) if seconds else None,
            "running_hosts": dict(Counter(view.host or "?" for view in running).most_common()),
        }

    def unfinished_workers(self) -> list[int]:
        """Workers submitted that its events and claims don't say ended, whether or not
        the map ended."""
        return sorted(w for w in self.submitted if w not in self.files.lost_workers
                      and (w not in self.workers or self.workers[w].finished is None))


def map_size(events: EventLog, path: Path) -> int | None:
    """How many tasks: from the first map_started event, else map.json."""
    for event in events.events:
        if event["event"] == MAP_STARTED and isinstance(event.get("tasks"), int):
            return event["tasks"]
    tasks = metadata_of(path).get("num_tasks")
    return tasks if isinstance(tasks, int) else None


def group_errors(errors: dict[int, tuple[str, str]]) -> list[dict[str, Any]]:
    """Errors by exception type, most frequent first, with their first task ids."""
    groups: dict[str, list[int]] = {}
    for task in sorted(errors):
        groups.setdefault(errors[task][0], []).append(task)
    return [
        {"type": kind, "count": len(tasks), "first_tasks": tasks[:FIRST_TASKS],
         "message": errors[tasks[0]][1]}
        for kind, tasks in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    ]


# ---------------------------------------------------------------------- the status
#: a MapStatus field for the command line's scheduler query, left out of as_dict()
_NOT_IN_JSON = {"json": False}


@dataclass
class MapStatus:
    """A map's status as ``poolparty status --json`` prints it (the ``poolparty status``
    page of the documentation says more of each field), but for the scheduler's part,
    which only the command line asks."""

    work_dir: str  #: the map's directory
    map_id: str  #: its name
    backend: str | None  #: local, slurm-array, slurm, sge; None: not known yet
    #: finished, failed, cancelled, stopped (see ENDED); running, starting,
    #: interrupted or unknown
    state: str
    #: how the map ended ({"how", "t", "type", "message"}), None while it has not
    ended: dict[str, Any] | None
    #: whether its client runs ({"running": True, False or None: can't tell}), its
    #: host and pid, and how long ago its last event was (on its host only)
    client: dict[str, Any]
    #: tasks per state (STATES), and their total (None: no map.json and no events yet)
    tasks: dict[str, Any]
    #: the chunks workers claimed: how many so far, the caller's chunksize (None: sized
    #: by the workers), how many were reopened after their worker was lost and why,
    #: how many lost
    chunks: dict[str, Any]
    elapsed: float | None  #: seconds since the client started, on its clock
    throughput: float | None  #: tasks this client gathered per second
    eta: float | None  #: seconds left at that rate, while the client runs
    #: workers submitted, running, finished and lost; their mean seconds; hosts
    #: running workers now
    workers: dict[str, Any]
    #: the tasks that raised by exception type, most frequent first
    errors: list[dict[str, Any]]
    #: event lines cut short or unreadable
    skipped_lines: dict[str, int]
    #: the scheduler commands the map's client used to ask about its jobs
    query_commands: dict[str, list[str]] = field(default_factory=dict, metadata=_NOT_IN_JSON)
    #: workers the events say are queued or running, ignoring the map's end
    unfinished_workers: list[int] = field(default_factory=list, metadata=_NOT_IN_JSON)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON, in field order."""
        data = dataclasses.asdict(self)
        return {item.name: data[item.name]
                for item in dataclasses.fields(self) if item.metadata.get("json", True)}


def read_status(path: str | os.PathLike | None = None) -> MapStatus:
    """The status of the map in ``path`` (a map's work_dir, or a directory of maps: its
    most recent; see find_map), from its files only. Raises NoMapError when there is no
    map to read."""
    map_dir = find_map(path)
    work_dir = WorkDir.inspect(map_dir)
    events = read_events(work_dir)
    size = map_size(events, map_dir)
    view = MapView(size or 0, ClaimFiles.read(work_dir, size or 0))
    for event in events.events:
        view.apply(event)
    running = client_running(work_dir.path)
    session = view.sessions[-1] if view.sessions else None
    ended = session.ended if session else None
    counts, errors = view.task_counts(ended is not None)
    return MapStatus(
        work_dir=str(work_dir.path),
        map_id=work_dir.map_id,
        backend=session.backend if session else metadata_of(map_dir).get("backend"),
        state=map_state(session, running, counts),
        ended=ended,
        client=client_info(session, running, map_dir),
        tasks={"total": size, **counts},
        chunks=chunk_info(view, metadata_of(map_dir)),
        **speed(session, running, counts),
        workers=view.worker_counts(ended is not None),
        errors=group_errors(errors),
        skipped_lines={"truncated": events.truncated,
                       "unreadable": events.unreadable + view.malformed},
        query_commands=session.commands if session else {},
        unfinished_workers=view.unfinished_workers(),
    )


def metadata_of(path: Path) -> dict[str, Any]:
    """The map's map.json, or {} when it is missing or unreadable."""
    try:
        metadata = json.loads((path / "map.json").read_text())
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def map_state(session: Session | None, running: bool | None, counts: dict[str, int]) -> str:
    """finished / failed / cancelled / stopped once ended; else running, starting (no
    events yet), interrupted (the client died without recording an end) or unknown."""
    if session is not None and session.ended is not None:
        how = session.ended["how"]
        return "failed" if how == "stopped" and counts["failed"] else how
    if running:
        return "running" if session else "starting"
    return "interrupted" if running is False else "unknown"


def client_info(session: Session | None, running: bool | None, path: Path) -> dict[str, Any]:
    metadata = metadata_of(path) if session is None else {}
    host = session.host if session else metadata.get("client_host")
    info = {"running": running, "host": host,
            "pid": session.pid if session else metadata.get("client_pid"),
            "last_event_age": None}
    if session is not None and host == socket.gethostname():
        info["last_event_age"] = round(max(0.0, time.time() - session.last), 3)
    return info


def chunk_info(view: MapView, metadata: dict[str, Any]) -> dict[str, Any]:
    """The claims so far (their sizes are cut when claimed), and the reopened ones."""
    unit = metadata.get("claim_unit")
    return {
        "total": len(view.files.ranges),
        "claim_unit": unit if isinstance(unit, int) else None,
        "resubmitted": len(view.reopened),
        "resubmit_reasons": dict(Counter(r["reason"] for r in view.reopened).most_common()),
        "reopened": view.reopened,
        "lost": len(view.lost),
    }


def speed(session: Session | None, running: bool | None,
          counts: dict[str, int]) -> dict[str, float | None]:
    """Throughput and ETA from the client's clock only (see the module doc)."""
    result: dict[str, float | None] = {"elapsed": None, "throughput": None, "eta": None}
    if session is None:
        return result
    if session.ended is not None:
        now = session.ended["t"]
    elif running and session.host == socket.gethostname():
        now = time.time()
    else:
        now = session.last
    elapsed = max(0.0, now - session.started)
    result["elapsed"] = round(elapsed, 3)
    if elapsed > 0 and session.gathered_tasks:
        rate = session.gathered_tasks / elapsed
        result["throughput"] = round(rate, 4)
        remaining = counts["pending"] + counts["queued"] + counts["running"]
        if session.ended is None and running:
            result["eta"] = round(remaining / rate, 1)
    return result
