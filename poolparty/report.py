"""Where a map's time went: its timeline, efficiency and cost, read afterwards from the
events it left (poolparty.events), offline, with nothing running.

A map's events say when each worker was submitted, started and ended and how, and, per
claim, when each task ran, the CPU it took, the worker's peak memory after it and the
size of the claim's result. :func:`map_report` (``poolparty.map_report``,
``pool.report()``) turns them into a :class:`Report`: wall time, core-hours used and
reserved, CPU efficiency, idle and queue time, the slowest tasks, failures by class, and
the memory peak against the request with a sizing hint. It prints itself (``text()``),
is plain data (``as_dict()``, ``poolparty report --json``), renders itself in Jupyter
(``_repr_html_``) and as a page of its own (``poolparty report --html``,
:mod:`poolparty.report_html`).

Times of workers are their nodes' clocks, the map's start and end the client's: a
cluster's clocks agree to well under a second (NTP), which the report can't correct.
A map that succeeded has its work_dir removed: its client saves the events first, in
``<work_dir root>/reports/`` (gzipped, the 10 most recent maps), so it can be reported.
"""

from __future__ import annotations

import gzip
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: saved events of removed maps: their directory under the work_dir root, how many kept
REPORTS_DIR = "reports"
KEPT_REPORTS = 10
#: how many of the slowest tasks a report names
SLOWEST = 5


@dataclass
class TaskRecord:
    """One task as its worker ran it."""

    index: int  #: its position in the map's input
    worker: int  #: the worker that ran it
    claim: int  #: the claim it was part of
    start: float  #: seconds after the map's start (the node's clock)
    seconds: float  #: how long it ran
    cpu: float  #: CPU seconds of the worker's process (and its children) meanwhile
    peak_memory: int  #: the worker's peak resident memory after it, bytes
    ok: bool  #: returned (False: raised)


@dataclass
class ClaimRecord:
    """One claim (a chunk of tasks) a worker ran: a bar of the timeline."""

    claim: int
    worker: int
    first: int  #: its first task
    tasks: int  #: how many tasks
    start: float  #: seconds after the map's start
    seconds: float
    failed: int  #: tasks that raised
    result_bytes: int  #: the size of its result file


@dataclass
class WorkerRecord:
    """One worker (one job, or one job's array element)."""

    worker: int
    host: str | None
    job: str | None  #: the scheduler's id of its job
    submitted: float | None  #: seconds after the map's start (the client's clock)
    started: float | None  #: the node's clock
    ended: float | None
    ending: str  #: "finished", or how it ended (poolparty.endings), or "unknown"
    claims: int
    tasks: int


@dataclass
class Report:
    """A map's report (see the module doc); times in seconds, memory in bytes."""

    map_id: str
    backend: str | None
    state: str  #: finished, failed, cancelled, stopped, or running (not ended yet)
    num_tasks: int
    wall_seconds: float | None
    cpus_per_worker: int
    memory_asked: str | None  #: as the pool asked for it ("8G"), None: not asked
    core_hours_used: float  #: the tasks' CPU time
    core_hours_reserved: float  #: the workers' run time times their CPUs
    cpu_efficiency: float | None  #: used / reserved
    idle_seconds: float  #: workers' run time that ran no task
    queue_wait_mean: float | None  #: submitted -> started, over the workers
    queue_wait_max: float | None
    peak_memory: int | None  #: the largest peak of any worker
    memory_hint: str | None  #: "asked 8G, peak 1.2G: 2G would do"
    client_cpu_seconds: float | None
    failures: dict[str, int]  #: workers lost, by how they ended
    task_errors: dict[str, int]  #: tasks that raised, by exception type
    slowest: list[TaskRecord]
    workers: list[WorkerRecord]
    claims: list[ClaimRecord]
    tasks: list[TaskRecord] = field(repr=False)  #: every task recorded one by one

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON (``poolparty report --json``)."""
        return asdict(self)

    def text(self) -> str:
        """The report to read in a terminal."""
        return format_text(self)

    def _repr_html_(self) -> str:
        from .report_html import render_fragment

        return render_fragment(self)

    def html(self) -> str:
        """One self-contained page (no network needed to view it)."""
        from .report_html import render_page

        return render_page(self)


def format_text(report: Report) -> str:
    """What ``poolparty report`` prints: a few lines, the numbers a user acts on."""
    lines = [headline(report)]
    lines += [f"{name:<16} {value}" for name, value in summary_rows(report)]
    lines += [f"{'workers lost':<16} {count}: {name}" for name, count in report.failures.items()]
    lines += [f"{'tasks raised':<16} {count}: {name}"
              for name, count in report.task_errors.items()]
    return "\n".join(lines)


def headline(report: Report) -> str:
    return (f"map {report.map_id} on {report.backend or '?'}: {report.state}, "
            f"{report.num_tasks} task(s), {len(report.workers)} worker(s), "
            f"{len(report.claims)} claim(s)")


def summary_rows(report: Report) -> list[tuple[str, str]]:
    """The summary's lines, (name, value), as the text and the page show them; the
    fields not known (None) left out."""
    rows = []
    if report.wall_seconds is not None:
        rows.append(("wall time", f"{seconds_text(report.wall_seconds)} s"))
    rows.append(core_time_row(report))
    if report.cpu_efficiency is not None:
        rows.append(("CPU efficiency", f"{report.cpu_efficiency:.0%} (task CPU / worker time)"))
    rows.append(("idle", f"{seconds_text(report.idle_seconds)} worker-seconds ran no task"))
    if report.queue_wait_mean is not None:
        rows.append(("queue wait", f"{seconds_text(report.queue_wait_mean)} s mean, "
                     f"{seconds_text(report.queue_wait_max or 0.0)} s at most "
                     "(submitted -> started)"))
    if report.peak_memory is not None:
        rows.append(("memory peak", size_text(report.peak_memory)
                     + (f" (asked {report.memory_asked})" if report.memory_asked else "")))
    if report.memory_hint:
        rows.append(("memory hint", report.memory_hint))
    if report.client_cpu_seconds is not None:
        rows.append(("client CPU", f"{report.client_cpu_seconds:.2f} s"))
    if report.slowest:
        rows.append(("slowest tasks", ", ".join(
            f"#{task.index} {seconds_text(task.seconds)} s (worker {task.worker})"
            for task in report.slowest)))
    return rows


def core_time_row(report: Report) -> tuple[str, str]:
    """Core-hours; a short map's in core-seconds, which it would show as 0.000."""
    per_worker = f"({report.cpus_per_worker} CPU(s) per worker)"
    if report.core_hours_reserved >= 0.1:
        return ("core-hours", f"{report.core_hours_used:.2f} used of "
                f"{report.core_hours_reserved:.2f} reserved {per_worker}")
    return ("core-seconds", f"{seconds_text(report.core_hours_used * 3600)} used of "
            f"{seconds_text(report.core_hours_reserved * 3600)} reserved {per_worker}")


def seconds_text(seconds: float) -> str:
    """Two decimals for short times, fewer for long ones: a bar's precision."""
    if abs(seconds) < 10:
        return f"{seconds:.2f}"
    return f"{seconds:.1f}" if abs(seconds) < 1000 else f"{seconds:.0f}"


def size_text(size: float) -> str:
    """Bytes as people write memory: ``1.2G``, ``340M``."""
    for unit, scale in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    return f"{int(size)}B"


def memory_hint(asked: int | None, asked_text: str | None, peak: int | None) -> str | None:
    """How much memory would do: the peak and a quarter more, rounded up to a size
    people ask for; said only when the request is at least twice that, or too small."""
    if peak is None or asked is None:
        return None
    enough = nice_size(peak * 1.25)
    if asked >= 2 * enough or asked < peak:
        return f"asked {asked_text}, peak {size_text(peak)}: {size_text(enough)} would do"
    return None


def nice_size(size: float) -> int:
    """The smallest of 256M, 512M, 1G, 2G, 3G, 4G, 6G, 8G, 12G, 16G... at least ``size``."""
    steps = [256 * 2**20, 512 * 2**20]
    gigabytes = 1
    while steps[-1] < size:
        steps.append(gigabytes * 2**30)
        gigabytes = gigabytes + 1 if gigabytes < 4 else int(gigabytes * 1.5)
    return next(step for step in steps if step >= size)


def saved_reports(root: Path) -> Path:
    return root / REPORTS_DIR


def save_events(root: Path, map_id: str, journal: bytes) -> None:
    """Keep a removed map's events (gzipped, private) for its report; only the
    KEPT_REPORTS most recent maps' (an inode quota counts every file)."""
    directory = saved_reports(root)
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / f"{map_id}.jsonl.gz"
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(gzip.compress(journal))
    os.replace(temporary, path)
    saved = sorted(directory.glob("*.jsonl.gz"), key=lambda p: p.stat().st_mtime)
    for old in saved[:-KEPT_REPORTS]:
        old.unlink(missing_ok=True)


def count_by(values: list[str]) -> dict[str, int]:
    return dict(Counter(values).most_common())


# ---------------------------------------------------------------------- reading
def map_report(path: str | os.PathLike | None = None) -> Report:
    """The report of a map: ``path`` is its work_dir, its saved events
    (``reports/<map id>.jsonl.gz``), or a work_dir root, whose most recent map (kept or
    saved) is reported; None: the configured root. Raises NoMapError (an
    InvalidInputError) when there is none."""
    map_id, events = load_events(path)
    return build_report(map_id, events)


def load_events(path: str | os.PathLike | None) -> tuple[str, list[dict[str, Any]]]:
    """The map's id and its events, in reading order."""
    from .events import EventLog, read_events
    from .map_status import NoMapError, configured_root, is_map_dir, last_activity
    from .work_dir import WorkDir

    target = Path(path).expanduser().absolute() if path else configured_root()
    saved = saved_file(target)
    if saved is None and target.is_dir() and not is_map_dir(target):
        candidates = [(last_activity(child), child) for child in target.iterdir()
                      if child.is_dir() and not child.name.startswith(".")
                      and is_map_dir(child)]
        candidates += [(file.stat().st_mtime, file)
                       for file in saved_reports(target).glob("*.jsonl.gz")]
        if not candidates:
            raise NoMapError(f"no poolparty map in {str(target)!r}, and no saved report "
                             f"in its {REPORTS_DIR}/: give a map's work_dir.")
        target = max(candidates)[1]
        saved = saved_file(target)
    if saved is not None:
        log = EventLog()
        log.add_blob(gzip.decompress(saved.read_bytes()))
        return saved.name.removesuffix(".jsonl.gz"), log.events
    if not is_map_dir(target):
        raise NoMapError(f"{str(target)!r} is no map's work_dir, and no report of it was "
                         f"saved: give a map's work_dir or its root.")
    return target.name, read_events(WorkDir.inspect(target)).events


def saved_file(target: Path) -> Path | None:
    """The saved events ``target`` names: the file itself, or those of a removed map
    (its directory gone, its events in the root's reports/)."""
    if target.name.endswith(".jsonl.gz") and target.is_file():
        return target
    if not target.exists():
        candidate = saved_reports(target.parent) / f"{target.name}.jsonl.gz"
        return candidate if candidate.is_file() else None
    return None


def build_report(map_id: str, events: list[dict[str, Any]]) -> Report:
    """A report of the map's last run (a resumed map: since it was resumed)."""
    from .events import MAP_STARTED

    starts = [i for i, event in enumerate(events) if event["event"] == MAP_STARTED]
    if not starts:
        from .map_status import NoMapError

        raise NoMapError(f"map {map_id} has no events of a start: nothing to report.")
    start = events[starts[-1]]
    origin = float(start["t"])
    later = [event for event in events[starts[-1]:] if event.get("src") == start.get("src")]
    workers_events = [event for event in events if event.get("src") != start.get("src")
                      and float(event.get("t", 0)) >= origin - 5]
    timeline = Timeline(origin, int(start.get("cpus") or 1))
    for event in later + workers_events:
        timeline.apply(event)
    return timeline.report(map_id, start)


class Timeline:
    """The events of one run, folded into workers, claims and tasks."""

    def __init__(self, origin: float, cpus: int) -> None:
        self.origin = origin
        self.cpus = cpus
        self.workers: dict[int, WorkerRecord] = {}
        self.claims: list[ClaimRecord] = []
        self.tasks: list[TaskRecord] = []
        self.task_cpu = self.task_seconds = 0.0
        self.peak_kb = 0
        self.lost: list[str] = []
        self.errors: list[str] = []
        self.end: dict[str, Any] | None = None

    def worker(self, number: int) -> WorkerRecord:
        if number not in self.workers:
            self.workers[number] = WorkerRecord(number, None, None, None, None, None,
                                                "never started", 0, 0)
        return self.workers[number]

    def at(self, event: dict[str, Any]) -> float:
        return round(float(event["t"]) - self.origin, 3)

    def apply(self, event: dict[str, Any]) -> None:
        from . import events as kinds
        from .ranges import expand_ranges

        kind, number = event["event"], event.get("worker")
        if kind == kinds.SUBMITTED:
            for worker in expand_ranges(str(event.get("workers") or "")):
                record = self.worker(worker)
                record.submitted = self.at(event) if record.submitted is None else (
                    record.submitted)
        elif kind == kinds.CHUNK_STARTED and isinstance(number, int):
            record = self.worker(number)
            record.started, record.host = self.at(event), event.get("host")
            record.job = event.get("job") and f"{event['job']}" + (
                f"[{event['index']}]" if event.get("index") else "")
            record.ending = "unknown" if record.ending == "never started" else record.ending
        elif kind == kinds.CHUNK_FINISHED and isinstance(number, int):
            record = self.worker(number)
            record.ended = self.at(event)
            if record.ending in ("unknown", "never started"):
                record.ending = "finished"
        elif kind == kinds.CLAIM_DONE and isinstance(number, int):
            self.claim_done(number, event)
        elif kind in (kinds.RESUBMIT, kinds.WORKER_LOST):
            how = str(event.get("reason") or "lost").split(" (")[0]
            self.lost.append(how)
            if isinstance(number, int):
                record = self.worker(number)
                record.ending = how
                record.ended = record.ended if record.ended is not None else self.at(event)
        elif kind == kinds.LOST:
            self.lost += ["given up: resubmitted too often"] * len(
                expand_ranges(str(event.get("chunks") or "")))
        elif kind == kinds.GATHERED:
            self.errors += [str(error[1]) for error in event.get("errors") or []
                            if isinstance(error, list) and len(error) > 1]
        elif kind == kinds.MAP_ENDED:
            self.end = event

    def claim_done(self, number: int, event: dict[str, Any]) -> None:
        """A bar of the timeline, and its tasks."""
        record = self.worker(number)
        totals = event.get("totals") or {}
        began = round(float(event.get("began", event["t"])) - self.origin, 3)
        first, claim = int(event.get("first", 0)), int(event.get("claim", -1))
        self.claims.append(ClaimRecord(claim, number, first, int(totals.get("count", 0)),
                                       began, float(totals.get("seconds", 0.0)),
                                       int(totals.get("failed", 0)), int(event.get("bytes", 0))))
        record.claims += 1
        record.tasks += int(totals.get("count", 0))
        record.ended = max(record.ended or 0.0, self.at(event))
        self.task_cpu += float(totals.get("cpu", 0.0))
        self.task_seconds += float(totals.get("seconds", 0.0))
        self.peak_kb = max(self.peak_kb, int(totals.get("peak_kb", 0)))
        for offset, task in enumerate(event.get("tasks") or []):
            start, seconds, cpu, peak_kb, ok = task
            self.tasks.append(TaskRecord(first + offset, number, claim, round(began + start, 4),
                                         seconds, cpu, peak_kb * 1024, bool(ok)))

    def report(self, map_id: str, start: dict[str, Any]) -> Report:
        ran = [w for w in self.workers.values() if w.started is not None and w.ended is not None]
        worker_seconds = sum(max(0.0, w.ended - w.started) for w in ran)  # type: ignore[operator]
        waits = [max(0.0, w.started - w.submitted) for w in self.workers.values()
                 if w.started is not None and w.submitted is not None]
        reserved = worker_seconds * self.cpus / 3600
        peak = self.peak_kb * 1024 if self.peak_kb else None
        asked = start.get("memory_bytes")
        end = self.end
        return Report(
            map_id=map_id, backend=start.get("backend"),
            state=str(end.get("how")) if end else "running",
            num_tasks=int(start.get("tasks") or 0),
            wall_seconds=None if end is None else self.at(end),
            cpus_per_worker=self.cpus, memory_asked=start.get("memory"),
            core_hours_used=self.task_cpu / 3600, core_hours_reserved=reserved,
            cpu_efficiency=(self.task_cpu / 3600) / reserved if reserved else None,
            idle_seconds=max(0.0, worker_seconds - self.task_seconds),
            queue_wait_mean=sum(waits) / len(waits) if waits else None,
            queue_wait_max=max(waits) if waits else None,
            peak_memory=peak,
            memory_hint=memory_hint(asked, start.get("memory"), peak),
            client_cpu_seconds=None if end is None else end.get("client_cpu"),
            failures=count_by(self.lost), task_errors=count_by(self.errors),
            slowest=sorted(self.tasks, key=lambda t: -t.seconds)[:SLOWEST],
            workers=sorted(self.workers.values(), key=lambda w: w.worker),
            claims=sorted(self.claims, key=lambda c: (c.start, c.claim)),
            tasks=sorted(self.tasks, key=lambda t: t.index),
        )
