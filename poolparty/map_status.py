"""What a map is doing, read from its work_dir: the model behind ``poolparty status``
and ``poolparty top``, usable from Python (a notebook, say)::

    from poolparty.map_status import read_status

    status = read_status(".poolparty")      # the most recent map there, or a map's dir
    status.state, status.tasks["done"], status.errors

It reads the work_dir's files only (its events, ``poolparty.events``, and map.json):
while the map runs, after it ended (failed, or ``keep_work_dir=True``) and after its
client died. Nothing in the work_dir is written, locked or repaired, so it is safe next
to a running client, on any host that sees the work_dir. It never asks the scheduler:
that is the command line's job (``poolparty.commands.status``), which knows when it is
worth a query.

Each chunk's state is decided from its events in the order they were written (a new
submission starts the chunk afresh), never by comparing clocks of different hosts:

- gathered by the client: its tasks are done, or failed (the function raised);
- abandoned (its futures were cancelled), or lost (resubmitted too often): so counted;
- finished on a worker, not gathered yet (the client is busy, or died): done or failed;
- the map ended without it: cancelled (the client cancels what is left when it ends);
- started on a worker: running (its tasks that raised already count as failed);
- submitted: queued; otherwise pending.

Throughput and ETA use the client's timestamps only: tasks gathered by the current
client divided by the time since it started, up to now when status runs on the
client's host and the client is alive, else up to the client's last event. Worker
durations are differences on each worker's own clock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .chunking import chunk_bounds
from .errors import InvalidInputError
from .events import (
    ABANDONED,
    CHUNK_FINISHED,
    CHUNK_STARTED,
    GATHERED,
    LOST,
    MAP_ENDED,
    MAP_STARTED,
    RESUBMIT,
    SUBMITTED,
    TASK_FAILED,
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


# ---------------------------------------------------------------------- from events to states
@dataclass
class ChunkView:
    """One chunk as its events describe it (see the module doc for the rules)."""

    tasks: range
    submissions: int = 0
    attempts: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    worker_errors: dict[int, tuple[str, str]] = field(default_factory=dict)
    finished: tuple[int, int] | None = None  # (ok, failed), said by a worker
    gathered_errors: dict[int, tuple[str, str]] | None = None  # None: not gathered
    lost: bool = False
    abandoned: bool = False

    def submitted(self) -> None:
        """A new submission: earlier attempts are over (their files were folded)."""
        self.submissions += 1
        self.attempts.clear()
        self.hosts.clear()
        self.worker_errors.clear()
        self.finished = self.gathered_errors = None
        self.lost = self.abandoned = False

    def state(self, map_ended: bool) -> tuple[str, dict[int, tuple[str, str]]]:
        """The chunk's state and its tasks that raised."""
        if self.gathered_errors is not None:
            return "done", self.gathered_errors
        if self.abandoned:
            return "cancelled", {}
        if self.lost:
            return "lost", {}
        if self.finished is not None:
            return "done", self.worker_errors
        if map_ended:
            return "cancelled", {}
        if self.attempts:
            return "running", self.worker_errors
        return ("queued" if self.submissions else "pending"), {}


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


class MapView:
    """Applies events in order, each by the handler of its kind (``handlers``); unknown
    kinds are ignored (older readers keep working), malformed events counted."""

    def __init__(self, num_tasks: int, chunksize: int) -> None:
        self.num_tasks, self.chunksize = num_tasks, chunksize
        self.chunks = [ChunkView(tasks) for tasks in chunk_bounds(num_tasks, chunksize)]
        self.sessions: list[Session] = []
        self.reasons: Counter[str] = Counter()
        self.worker_seconds: list[float] = []
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

    def chunk(self, chunk_id: Any) -> ChunkView:
        if not isinstance(chunk_id, int) or not 0 <= chunk_id < len(self.chunks):
            raise IndexError(chunk_id)
        return self.chunks[chunk_id]

    def chunks_in(self, ranges: str) -> list[ChunkView]:
        return [self.chunk(chunk_id) for chunk_id in expand_ranges(ranges)]

    # client events
    def _on_map_started(self, event: Event) -> None:
        commands = event.get("commands") or {}
        self.sessions.append(Session(
            str(event["src"]), float(event["t"]), event.get("host"), event.get("pid"),
            event.get("backend"), {str(k): [str(a) for a in v] for k, v in commands.items()},
            float(event["t"]),
        ))

    def _on_submitted(self, event: Event) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.submitted()

    def _on_resubmit(self, event: Event) -> None:
        for reason in ("error", "missing"):
            self.reasons[reason] += len(expand_ranges(event.get(reason, "")))

    def _on_lost(self, event: Event) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.lost = True

    def _on_abandoned(self, event: Event) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.abandoned = True

    def _on_gathered(self, event: Event) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.gathered_errors = {}
        for task, kind, message in event.get("errors", []):
            self.chunk(task // self.chunksize).gathered_errors[task] = (str(kind), str(message))
        if self.sessions and not event.get("recovered"):
            self.sessions[-1].gathered_tasks += int(event.get("tasks", 0))

    def _on_map_ended(self, event: Event) -> None:
        if self.sessions:
            self.sessions[-1].ended = {"how": str(event["how"]), "t": float(event["t"]),
                                       "type": event.get("type"),
                                       "message": event.get("message")}

    # worker events
    def _on_chunk_started(self, event: Event) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.attempts.add(str(event.get("src")))
        chunk.hosts.add(str(event.get("host", "?")))

    def _on_task_failed(self, event: Event) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.worker_errors[int(event["task"])] = (str(event["type"]), str(event["message"]))

    def _on_chunk_finished(self, event: Event) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.finished = (int(event["ok"]), int(event["failed"]))
        self.worker_seconds.append(float(event["seconds"]))

    #: what each kind of event does to the view
    handlers: ClassVar[dict[str, Callable[[MapView, Event], None]]] = {
        MAP_STARTED: _on_map_started,
        SUBMITTED: _on_submitted,
        RESUBMIT: _on_resubmit,
        LOST: _on_lost,
        ABANDONED: _on_abandoned,
        GATHERED: _on_gathered,
        MAP_ENDED: _on_map_ended,
        CHUNK_STARTED: _on_chunk_started,
        TASK_FAILED: _on_task_failed,
        CHUNK_FINISHED: _on_chunk_finished,
    }

    # summaries
    def task_counts(self, map_ended: bool) -> tuple[dict[str, int], dict[int, tuple[str, str]]]:
        """Tasks per state, and every task known to have raised."""
        counts = dict.fromkeys(STATES, 0)
        errors: dict[int, tuple[str, str]] = {}
        for chunk in self.chunks:
            state, chunk_errors = chunk.state(map_ended)
            failed = min(len(chunk_errors), len(chunk.tasks))
            if state == "done" and chunk.gathered_errors is None and chunk.finished:
                failed = min(max(failed, chunk.finished[1]), len(chunk.tasks))
            counts[state] += len(chunk.tasks) - failed
            counts["failed"] += failed
            errors.update(chunk_errors)
        return counts, errors

    def running_hosts(self, map_ended: bool) -> dict[str, int]:
        hosts: Counter[str] = Counter()
        for chunk in self.chunks:
            if chunk.state(map_ended)[0] == "running":
                hosts.update(chunk.hosts)
        return dict(hosts.most_common())

    def unfinished_chunks(self) -> list[int]:
        """The chunks its events say are queued or running, whether or not the map ended."""
        return [chunk_id for chunk_id, chunk in enumerate(self.chunks)
                if chunk.state(False)[0] in ("queued", "running")]


def map_size(events: EventLog, path: Path) -> tuple[int, int] | None:
    """(tasks, chunksize) from the first map_started event, else map.json."""
    for event in events.events:
        if event["event"] == MAP_STARTED:
            tasks, chunksize = event.get("tasks"), event.get("chunksize")
            if isinstance(tasks, int) and isinstance(chunksize, int) and chunksize > 0:
                return tasks, chunksize
    metadata = metadata_of(path)
    tasks, chunksize = metadata.get("num_tasks"), metadata.get("chunksize")
    if isinstance(tasks, int) and isinstance(chunksize, int) and chunksize > 0:
        return tasks, chunksize
    return None


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
    #: how many, their size, how often they were resubmitted and why, how many lost
    chunks: dict[str, Any]
    elapsed: float | None  #: seconds since the client started, on its clock
    throughput: float | None  #: tasks this client gathered per second
    eta: float | None  #: seconds left at that rate, while the client runs
    #: chunk runs finished and their mean seconds; hosts running chunks now
    workers: dict[str, Any]
    #: the tasks that raised by exception type, most frequent first
    errors: list[dict[str, Any]]
    #: event lines cut short or unreadable
    skipped_lines: dict[str, int]
    #: the scheduler commands the map's client used to ask about its jobs
    query_commands: dict[str, list[str]] = field(default_factory=dict, metadata=_NOT_IN_JSON)
    #: chunks the events say are queued or running, ignoring the map's end
    unfinished_chunks: list[int] = field(default_factory=list, metadata=_NOT_IN_JSON)

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
    view = MapView(*(size or (0, 1)))
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
        tasks={"total": view.num_tasks if size else None, **counts},
        chunks=chunk_info(view, size),
        **speed(session, running, counts),
        workers=worker_info(view, ended is not None),
        errors=group_errors(errors),
        skipped_lines={"truncated": events.truncated,
                       "unreadable": events.unreadable + view.malformed},
        query_commands=session.commands if session else {},
        unfinished_chunks=view.unfinished_chunks(),
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


def chunk_info(view: MapView, size: tuple[int, int] | None) -> dict[str, Any]:
    return {
        "total": len(view.chunks) if size else None,
        "chunksize": view.chunksize if size else None,
        "resubmitted": sum(max(0, chunk.submissions - 1) for chunk in view.chunks),
        "resubmit_reasons": {"error_state": view.reasons["error"],
                             "missing": view.reasons["missing"]},
        "lost": sum(1 for chunk in view.chunks if chunk.lost),
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


def worker_info(view: MapView, map_ended: bool) -> dict[str, Any]:
    seconds = view.worker_seconds
    return {
        "finished_chunks": len(seconds),
        "mean_seconds": round(sum(seconds) / len(seconds), 3) if seconds else None,
        "running_hosts": view.running_hosts(map_ended),
    }
