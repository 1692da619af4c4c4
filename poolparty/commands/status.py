"""``poolparty status [WORK_DIR] [--json]`` and ``poolparty top [WORK_DIR]``.

What a map is doing, read from its work_dir's events (``poolparty.events``): while
it runs, after it ended (failed, or ``keep_work_dir=True``) and after its client died.
It only reads: nothing in the work_dir is written, locked or repaired, so it is safe
next to a running client, on any host that sees the work_dir.

How the tasks' and workers' states, the throughput and the ETA follow from the events
and the claims is the model's, ``poolparty.map_status`` (usable from Python too); this
module parses the arguments, renders the status and asks the scheduler.

The scheduler is asked (one squeue / qstat call, as the client would) only when it can
tell something the events can't: by default when the map's backend is a cluster one,
the map has not ended and its client is not running (then nobody else is watching the
jobs); ``--query`` always, ``--no-query`` never. Its answer is by worker id (each job is
a worker). A failing query is shown, not fatal.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..backends import is_cluster, make_scheduler
from ..errors import SchedulerCommandError
from ..events import TASK_MARK, task_output
from ..map_status import (
    ENDED,
    STATES,
    ClaimFiles,
    MapStatus,
    NoMapError,
    find_map,
    is_map_dir,
    metadata_of,
    read_status,
)
from ..work_dir import WorkDir

#: seconds for one scheduler query, retries included (each try gets a third): a busy
#: controller may take seconds to answer
QUERY_TIMEOUT = 30.0
TOP_QUERY_EVERY = 30.0  #: top asks the scheduler at most this often
CLEAR = "\x1b[H\x1b[2J"


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
        sys.stdout.write(render_output(find_map(arguments.work_dir)))
        return 0
    status = collect_status(find_map(arguments.work_dir), arguments.query)
    print(json.dumps(status, indent=2) if arguments.json else render(status))
    return 0


def run_top(arguments: argparse.Namespace) -> int:
    """Redraw until the map ends, its work_dir is removed (a success), N redraws or
    Ctrl-C. The scheduler is asked at most every TOP_QUERY_EVERY seconds."""
    path = find_map(arguments.work_dir)
    redraws, last_query = 0, -TOP_QUERY_EVERY
    try:
        while True:
            may_ask = time.monotonic() - last_query >= TOP_QUERY_EVERY
            try:
                status = collect_status(path, arguments.query if may_ask else "never")
            except (OSError, NoMapError):  # NoMapError: its files are being removed
                if is_map_dir(path):
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


# ---------------------------------------------------------------------- the status
def collect_status(path: Path, query: str = "auto") -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (the ``--json`` output): the map's
    status (poolparty.map_status) and, when useful, its jobs' states in the scheduler."""
    status = read_status(path)
    return {**status.as_dict(), "scheduler": scheduler_info(status, query)}


def render_output(path: Path) -> str:
    """What the tasks of a map printed, chunk by chunk in task order, each under a line
    naming the chunk (a claim) and its tasks: from the log of the worker holding the
    chunk's newest attempt (the one whose result counts), cut at the line the worker
    writes before each task. What a worker printed before its first task (an
    initializer, say) comes first, under a line naming the worker."""
    work_dir = WorkDir.inspect(path)
    printed = {worker_id: task_outputs_of(logs)
               for worker_id, logs in work_dir.worker_logs().items()}
    num_tasks = metadata_of(path).get("num_tasks")
    files = ClaimFiles.read(work_dir, num_tasks if isinstance(num_tasks, int) else 0)
    parts = [f"--- worker {worker_id}, before its first task ---\n" + outputs[None].decode(
                 "utf-8", errors="replace")
             for worker_id, outputs in sorted(printed.items()) if outputs.get(None)]
    for number, tasks in sorted(files.ranges.items(), key=lambda item: item[1].start):
        outputs = printed.get(files.holders.get(number), {})
        output = b"".join(outputs.get(task, b"") for task in tasks)
        if output:
            which = (f"task {tasks.start}" if len(tasks) == 1
                     else f"tasks {tasks.start}-{tasks.stop - 1}")
            parts.append(f"--- chunk {number}, {which} ---\n"
                         + output.decode("utf-8", errors="replace"))
    if not parts:
        return (f"the tasks of {path} printed nothing (or their jobs' logs are gone: a "
                f"map that succeeds removes its work_dir unless keep_work_dir=True)\n")
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts)


def task_outputs_of(logs: list[bytes]) -> dict[int | None, bytes]:
    """What each task printed in a worker's logs (oldest first: a later run of a task
    replaces an earlier one), by task index; None: before its first task."""
    outputs: dict[int | None, bytes] = {}
    for log in logs:
        task: int | None = None
        segment: list[bytes] = []
        for line in log.splitlines(keepends=True):
            before, mark, after = line.partition(TASK_MARK)
            if not mark:
                segment.append(line)
                continue
            if before:
                segment.append(before + b"\n")
            outputs[task] = task_output(b"".join(segment))
            task, segment = int(after) if after.strip().isdigit() else task, []
        outputs[task] = task_output(b"".join(segment))
    return {task: output for task, output in outputs.items() if output}


def scheduler_info(status: MapStatus, query: str) -> dict[str, Any]:
    """The jobs' states in the scheduler, asked once when it is useful (module doc)."""
    backend = status.backend
    info: dict[str, Any] = {"asked": False, "why": "", "error": None, "states": None,
                            "unfinished_not_queued": None}
    if not is_cluster(backend):
        info["why"] = f"the {backend or 'unknown'} backend has no queue to ask"
        return info
    if query == "never" or (query == "auto" and status.client["running"] is not False):
        info["why"] = "the client is running and watches the jobs (--query asks)"
        if query == "never":
            info["why"] = "not asked (--no-query)"
        return info
    if query == "auto" and status.ended is not None:
        info["why"] = "the map ended and its jobs were cancelled (--query asks)"
        return info
    info["asked"] = True
    try:
        states = ask_scheduler(WorkDir.inspect(status.work_dir), backend,
                               status.query_commands)
    except QueryError as error:
        info["error"] = str(error)
        return info
    counts = Counter(state.value for state in states.values())
    info["states"] = {name: counts.get(name, 0) for name in ("pending", "running", "error")}
    info["unfinished_not_queued"] = sum(1 for w in status.unfinished_workers if w not in states)
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
    size = f" of {chunks['claim_unit']}" if chunks["claim_unit"] else ""
    lines = [f"tasks      {tasks['total']}, {chunks['total']} chunk(s){size} claimed so far: "
             f"{counts}"]
    if chunks["resubmitted"] or chunks["lost"]:
        reasons = "; ".join(f"{reason or 'no reason given'} x{count}"
                            for reason, count in chunks["resubmit_reasons"].items())
        lines.append(f"resubmits  {chunks['resubmitted']} chunk(s) reopened for other "
                     f"workers ({reasons or 'none'}); {chunks['lost']} chunk(s) lost")
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
    if workers["submitted"]:
        mean = workers["mean_seconds"]
        each = f", {duration(mean)} each on average" if mean is not None else ""
        lines.append(f"workers    {workers['submitted']} submitted: {workers['running']} "
                     f"running, {workers['finished']} finished{each}, {workers['lost']} lost")
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
            f"unfinished worker(s) not in the queue"]


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
