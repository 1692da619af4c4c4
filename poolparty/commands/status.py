"""``poolparty status [WORK_DIR] [--json]`` and ``poolparty top [WORK_DIR]``.

What a map is doing, read from its work_dir's events (``poolparty.events``): while
it runs, after it ended (failed, or ``keep_work_dir=True``) and after its client died.
It only reads: nothing in the work_dir is written, locked or repaired, so it is safe
next to a running client, on any host that sees the work_dir.

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

The scheduler is asked (one squeue / qstat call, as the client would) only when it can
tell something the events can't: by default when the map's backend is a cluster one,
the map has not ended and its client is not running (then nobody else is watching the
jobs); ``--query`` always, ``--no-query`` never. A failing query is shown, not fatal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import is_cluster, make_scheduler
from ..chunking import chunk_bounds
from ..errors import SchedulerCommandError
from ..events import EventLog, read_events
from ..ranges import expand_ranges
from ..work_dir import WorkDir, client_running, default_root
from . import UsageError

STATES = ("pending", "queued", "running", "done", "failed", "lost", "cancelled")
#: seconds for one scheduler query, retries included (each try gets a third): a busy
#: controller may take seconds to answer
QUERY_TIMEOUT = 30.0
TOP_QUERY_EVERY = 30.0  #: top asks the scheduler at most this often
FIRST_TASKS = 5  #: task ids shown per error type
CLEAR = "\x1b[H\x1b[2J"
ENDED = ("finished", "failed", "cancelled", "stopped")


# ---------------------------------------------------------------------- command line
def register(subcommands: Any) -> None:
    """Add ``status`` and ``top`` to the ``poolparty`` command line."""
    status = subcommands.add_parser(
        "status", help="what a map is doing: tasks, speed, errors, jobs",
        description="Show a map's tasks by state, its throughput and ETA, its errors "
                    "grouped by exception type and, when useful, its jobs' states in "
                    "the scheduler. Works while the map runs, after it ended (failed or "
                    "kept) and after its client died.",
    )
    add_common_arguments(status)
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print one JSON object")
    shown.add_argument("--output", action="store_true",
                       help="print what the map's tasks printed (stdout and stderr), chunk "
                            "by chunk in task order, instead of the status")
    status.set_defaults(run=run_status)
    top = subcommands.add_parser(
        "top", help="redraw a map's status until it ends (Ctrl-C to quit)",
        description="Redraw 'poolparty status' every --interval seconds until the map "
                    "ends, its work_dir goes away or Ctrl-C.",
    )
    add_common_arguments(top)
    top.add_argument("--interval", type=positive_float, default=2.0, metavar="S",
                     help="seconds between redraws (default 2)")
    top.add_argument("--iterations", type=positive_int, default=None, metavar="N",
                     help="stop after N redraws")
    top.set_defaults(run=run_top)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "work_dir", nargs="?", metavar="WORK_DIR",
        help="a map's directory, or a directory of maps (its most recent map is shown); "
             "default: the most recent map under ./.poolparty",
    )
    query = parser.add_mutually_exclusive_group()
    query.add_argument("--query", dest="query", action="store_const", const="always",
                       default="auto", help="ask the scheduler about the map's jobs")
    query.add_argument("--no-query", dest="query", action="store_const", const="never",
                       help="never ask the scheduler")


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def run_status(arguments: argparse.Namespace) -> int:
    if arguments.output:
        sys.stdout.write(render_output(locate_map(arguments.work_dir)))
        return 0
    status = collect_status(locate_map(arguments.work_dir), arguments.query)
    print(json.dumps(status, indent=2) if arguments.json else render(status))
    return 0


def run_top(arguments: argparse.Namespace) -> int:
    """Redraw until the map ends, its work_dir is removed (a success), N redraws or
    Ctrl-C. The scheduler is asked at most every TOP_QUERY_EVERY seconds."""
    path = locate_map(arguments.work_dir)
    redraws, last_query = 0, -TOP_QUERY_EVERY
    try:
        while True:
            may_ask = time.monotonic() - last_query >= TOP_QUERY_EVERY
            try:
                status = collect_status(path, arguments.query if may_ask else "never")
            except OSError:
                if path.exists():
                    raise
                print(f"\n{path} is gone: the map finished (a map that succeeds removes its "
                      f"work_dir unless keep_work_dir=True), or it was deleted.")
                return 0
            if status["scheduler"]["asked"]:
                last_query = time.monotonic()
            stamp = time.strftime("%H:%M:%S")
            sys.stdout.write(f"{CLEAR}poolparty top - {stamp}, every {arguments.interval:g} s"
                             f" (Ctrl-C to quit)\n\n{render(status)}\n")
            sys.stdout.flush()
            redraws += 1
            if status["state"] in ENDED or redraws == arguments.iterations:
                return 0
            time.sleep(arguments.interval)
    except KeyboardInterrupt:
        print()
        return 0


# ---------------------------------------------------------------------- finding the map
def locate_map(argument: str | None) -> Path:
    """The map directory to show: WORK_DIR itself, or the most recent map in it (a
    work_dir root such as ./.poolparty, the default, or the configured ``work_dir``)."""
    path = Path(argument).expanduser().absolute() if argument else configured_root()
    if not path.exists():
        raise UsageError(
            f"no work_dir {str(path)!r}. A map that succeeded removes its work_dir (unless "
            f"keep_work_dir=True), so only maps that failed, were kept, or still run have "
            f"a status. Give the map's directory, or its root (default ./.poolparty)."
        )
    if not path.is_dir():
        raise UsageError(f"{str(path)!r} is not a directory: give a map's work_dir.")
    if is_map_dir(path):
        return path
    maps = [child for child in path.iterdir()
            if child.is_dir() and not child.name.startswith(".") and is_map_dir(child)]
    if not maps:
        raise UsageError(f"no poolparty map in {str(path)!r} (nor is it one).")
    return max(maps, key=last_activity)


def configured_root() -> Path:
    """Where pools made here put their maps: ``work_dir`` from POOLPARTY_WORK_DIR or a
    config file (see ``poolparty config``), else the default root."""
    from ..config import ConfigError, resolve

    try:
        work_dir = resolve()["work_dir"].value
    except ConfigError as error:
        raise UsageError(str(error)) from error
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


class MapView:
    """Applies events in order; unknown kinds are ignored, malformed ones counted."""

    def __init__(self, num_tasks: int, chunksize: int) -> None:
        self.num_tasks, self.chunksize = num_tasks, chunksize
        self.chunks = [ChunkView(tasks) for tasks in chunk_bounds(num_tasks, chunksize)]
        self.sessions: list[Session] = []
        self.reasons: Counter[str] = Counter()
        self.worker_seconds: list[float] = []
        self.malformed = 0

    def apply(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event['event']}", None)
        if handler is None:
            return
        try:
            handler(event)
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
    def _on_map_started(self, event: dict[str, Any]) -> None:
        commands = event.get("commands") or {}
        self.sessions.append(Session(
            str(event["src"]), float(event["t"]), event.get("host"), event.get("pid"),
            event.get("backend"), {str(k): [str(a) for a in v] for k, v in commands.items()},
            float(event["t"]),
        ))

    def _on_submitted(self, event: dict[str, Any]) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.submitted()

    def _on_resubmit(self, event: dict[str, Any]) -> None:
        for reason in ("error", "missing"):
            self.reasons[reason] += len(expand_ranges(event.get(reason, "")))

    def _on_lost(self, event: dict[str, Any]) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.lost = True

    def _on_abandoned(self, event: dict[str, Any]) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.abandoned = True

    def _on_gathered(self, event: dict[str, Any]) -> None:
        for chunk in self.chunks_in(event["chunks"]):
            chunk.gathered_errors = {}
        for task, kind, message in event.get("errors", []):
            self.chunk(task // self.chunksize).gathered_errors[task] = (str(kind), str(message))
        if self.sessions and not event.get("recovered"):
            self.sessions[-1].gathered_tasks += int(event.get("tasks", 0))

    def _on_map_ended(self, event: dict[str, Any]) -> None:
        if self.sessions:
            self.sessions[-1].ended = {"how": str(event["how"]), "t": float(event["t"]),
                                       "type": event.get("type"),
                                       "message": event.get("message")}

    # worker events
    def _on_chunk_started(self, event: dict[str, Any]) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.attempts.add(str(event.get("src")))
        chunk.hosts.add(str(event.get("host", "?")))

    def _on_task_failed(self, event: dict[str, Any]) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.worker_errors[int(event["task"])] = (str(event["type"]), str(event["message"]))

    def _on_chunk_finished(self, event: dict[str, Any]) -> None:
        chunk = self.chunk(event["chunk"])
        chunk.finished = (int(event["ok"]), int(event["failed"]))
        self.worker_seconds.append(float(event["seconds"]))

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


def map_size(events: EventLog, path: Path) -> tuple[int, int] | None:
    """(tasks, chunksize) from the first map_started event, else map.json."""
    for event in events.events:
        if event["event"] == "map_started":
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
def collect_status(path: Path, query: str = "auto") -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output)."""
    work_dir = WorkDir.inspect(path)
    events = read_events(work_dir)
    size = map_size(events, path)
    view = MapView(*(size or (0, 1)))
    for event in events.events:
        view.apply(event)
    running = client_running(work_dir.path)
    session = view.sessions[-1] if view.sessions else None
    ended = session.ended if session else None
    counts, errors = view.task_counts(ended is not None)
    status: dict[str, Any] = {
        "work_dir": str(work_dir.path),
        "map_id": work_dir.map_id,
        "backend": session.backend if session else metadata_of(path).get("backend"),
        "state": map_state(session, running, counts),
        "ended": ended,
        "client": client_info(session, running, path),
        "tasks": {"total": view.num_tasks if size else None, **counts},
        "chunks": chunk_info(view, size),
        **speed(session, running, counts),
        "workers": worker_info(view, ended is not None),
        "errors": group_errors(errors),
        "skipped_lines": {"truncated": events.truncated,
                          "unreadable": events.unreadable + view.malformed},
    }
    status["scheduler"] = scheduler_info(work_dir, view, session, status, query)
    return status


def render_output(path: Path) -> str:
    """What the tasks of a map printed, under a line naming each chunk and its tasks:
    the attempt that delivered each chunk's result (see WorkDir.task_outputs)."""
    outputs = WorkDir.inspect(path).task_outputs()
    if not outputs:
        return (f"the tasks of {path} printed nothing (or their jobs' logs are gone: a "
                f"map that succeeds removes its work_dir unless keep_work_dir=True)\n")
    metadata = metadata_of(path)
    try:
        bounds = chunk_bounds(metadata["num_tasks"], metadata["chunksize"])
    except (KeyError, TypeError, ValueError):
        bounds = []
    parts = []
    for chunk_id, output in outputs.items():
        tasks = bounds[chunk_id] if chunk_id < len(bounds) else None
        which = "" if not tasks else (f", task {tasks.start}" if len(tasks) == 1
                                      else f", tasks {tasks.start}-{tasks.stop - 1}")
        parts.append(f"--- chunk {chunk_id}{which} ---\n"
                     + output.decode("utf-8", errors="replace"))
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts)


def metadata_of(path: Path) -> dict[str, Any]:
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


def scheduler_info(work_dir: WorkDir, view: MapView, session: Session | None,
                   status: dict[str, Any], query: str) -> dict[str, Any]:
    """The jobs' states in the scheduler, asked once when it is useful (module doc)."""
    backend = status["backend"]
    info: dict[str, Any] = {"asked": False, "why": "", "error": None, "states": None,
                            "unfinished_not_queued": None}
    if not is_cluster(backend):
        info["why"] = f"the {backend or 'unknown'} backend has no queue to ask"
        return info
    if query == "never" or (query == "auto" and status["client"]["running"] is not False):
        info["why"] = "the client is running and watches the jobs (--query asks)"
        if query == "never":
            info["why"] = "not asked (--no-query)"
        return info
    if query == "auto" and status["ended"] is not None:
        info["why"] = "the map ended and its jobs were cancelled (--query asks)"
        return info
    info["asked"] = True
    try:
        states = ask_scheduler(work_dir, backend, session.commands if session else {})
    except QueryError as error:
        info["error"] = str(error)
        return info
    counts = Counter(state.value for state in states.values())
    info["states"] = {name: counts.get(name, 0) for name in ("pending", "running", "error")}
    unfinished = [i for i, chunk in enumerate(view.chunks)
                  if chunk.state(False)[0] in ("queued", "running")]
    info["unfinished_not_queued"] = sum(1 for i in unfinished if i not in states)
    return info


class QueryError(Exception):
    """The scheduler could not be asked; the message is one line for the status."""


def ask_scheduler(work_dir: WorkDir, backend: str, commands: dict[str, list[str]]) -> dict:
    """One query, with the map's own command paths (a dummy scheduler's, say)."""
    options: dict[str, Any] = {"call_timeout": QUERY_TIMEOUT}
    if commands:
        options["commands"] = commands
    scheduler = make_scheduler(backend, None, options)
    known = getattr(scheduler, "commands", {})
    name = scheduler.query_command or "the scheduler"
    if name in known and shutil.which(known[name][0]) is None:  # say so now, not after retries
        raise QueryError(f"{name}: {known[name][0]!r} is not installed here")
    try:
        return scheduler.query(work_dir)
    except SchedulerCommandError as error:
        outcome = (f"exit status {error.returncode}" if error.returncode is not None
                   else error.reason or "no answer")
        said = [line.strip() for line in error.stderr.splitlines() if line.strip()]
        raise QueryError(f"{name}: {outcome}" + (f": {said[-1]}" if said else "")) from error


# ---------------------------------------------------------------------- text
def render(status: dict[str, Any]) -> str:
    """The status as a few labelled lines, for a terminal."""
    lines = [f"map        {status['map_id']} ({status['backend'] or 'backend unknown'})",
             f"work_dir   {status['work_dir']}",
             f"state      {describe_state(status)}"]
    lines += tasks_lines(status)
    lines += speed_lines(status)
    lines += error_lines(status["errors"])
    lines += scheduler_lines(status["scheduler"])
    skipped = status["skipped_lines"]
    if skipped["truncated"] or skipped["unreadable"]:
        lines.append(f"events     skipped {skipped['truncated']} line(s) cut short and "
                     f"{skipped['unreadable']} unreadable line(s)")
    return "\n".join(lines)


def describe_state(status: dict[str, Any]) -> str:
    state, client, ended = status["state"], status["client"], status["ended"]
    who = f"client pid {client['pid']} on {client['host']}" if client["pid"] else "client"
    if state in ("running", "starting"):
        age = client["last_event_age"]
        heard = f", last event {duration(age)} ago" if age is not None else ""
        return f"{state}: {who} is alive{heard}"
    if state == "interrupted":
        return (f"interrupted: the {who} is not running and recorded no end (killed, or "
                f"its machine went down). Calling the same map again resumes it.")
    if state == "unknown":
        return f"unknown: can't tell whether the {who} runs (no fcntl locks here)"
    detail = ""
    if ended and ended.get("type"):
        detail = f": {ended['type']}" + (f": {ended['message']}" if ended.get("message") else "")
    if state == "stopped":
        detail = ": the caller stopped waiting for results"
    if state == "finished" and status["tasks"]["failed"]:
        detail = f": {status['tasks']['failed']} task(s) raised"
    return f"{state}{detail}"


def tasks_lines(status: dict[str, Any]) -> list[str]:
    tasks, chunks = status["tasks"], status["chunks"]
    if tasks["total"] is None:
        return ["tasks      unknown: no map.json and no events yet"]
    counts = "  ".join(f"{name} {tasks[name]}" for name in STATES
                       if tasks[name] or name in ("queued", "running", "done", "failed"))
    lines = [f"tasks      {tasks['total']} in {chunks['total']} chunk(s) of up to "
             f"{chunks['chunksize']}: {counts}"]
    if chunks["resubmitted"] or chunks["lost"]:
        reasons = chunks["resubmit_reasons"]
        lines.append(f"resubmits  {chunks['resubmitted']} ({reasons['error_state']} in an "
                     f"error state, {reasons['missing']} missing from the queue); "
                     f"{chunks['lost']} chunk(s) lost")
    return lines


def speed_lines(status: dict[str, Any]) -> list[str]:
    lines = []
    tasks = status["tasks"]
    if tasks["total"]:
        finished = tasks["done"] + tasks["failed"]
        lines.append(f"progress   {bar(finished / tasks['total'])} "
                     f"{100 * finished / tasks['total']:.0f}% of the tasks ran")
    if status["throughput"] is not None:
        eta = f", ETA {duration(status['eta'])}" if status["eta"] is not None else ""
        lines.append(f"speed      {status['throughput']:.3g} tasks/s over "
                     f"{duration(status['elapsed'])}{eta} (client clock)")
    workers = status["workers"]
    if workers["finished_chunks"]:
        lines.append(f"workers    {workers['finished_chunks']} chunk run(s) finished, "
                     f"{duration(workers['mean_seconds'])} each on average")
    if workers["running_hosts"]:
        hosts = ", ".join(f"{host} x{n}" for host, n in workers["running_hosts"].items())
        lines.append(f"running on {hosts}")
    return lines


def error_lines(groups: list[dict[str, Any]]) -> list[str]:
    lines = []
    for index, group in enumerate(groups):
        first = ", ".join(str(task) for task in group["first_tasks"])
        more = ", ..." if group["count"] > len(group["first_tasks"]) else ""
        label = "errors     " if index == 0 else " " * 11
        lines.append(f"{label}{group['type']} x{group['count']} (tasks {first}{more}): "
                     f"{group['message']}")
    return lines


def scheduler_lines(info: dict[str, Any]) -> list[str]:
    if not info["asked"]:
        return [f"scheduler  not asked: {info['why']}"]
    if info["error"]:
        return [f"scheduler  could not be asked: {info['error']}"]
    states = info["states"]
    return [f"scheduler  {states['pending']} pending, {states['running']} running, "
            f"{states['error']} in an error state; {info['unfinished_not_queued']} "
            f"unfinished chunk(s) not in the queue"]


def bar(fraction: float, width: int = 30) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def duration(seconds: float | None) -> str:
    """3.2 s, 4m05s, 2h03m: short, for a terminal."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
