"""``poolparty doctor``: check once, on a new cluster, that a map can run here.

Run it on the login node where maps will be started. It finds the scheduler (or takes
``--backend``), reads what the scheduler allows (the largest job array, the longest run
time), runs one tiny map through the very path a map takes (the same work_dir, job
script, submission and polling), watches its job through the scheduler's states, and
has the job report from the node: its python, the packages the worker needs
(poolparty, cloudpickle) and the caller's own (``--import``), and that it wrote its
result into the work_dir. Then it submits a second job and cancels it, and checks that
it left the queue. Each check says what works, what does not and what to change.

The settings come from where a Pool takes them (``poolparty.toml``, ``POOLPARTY_*``
variables; ``poolparty config`` shows them), so a partition or a ``python_path`` set
there is checked too. Exit code 0 when everything a map needs works, 1 when something
fails; ``--json`` prints the same as data.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..backends import BACKENDS
from ..errors import ChunksLostError, PoolpartyError, SchedulerNotFoundError
from ..map_status import read_status
from ..pool import Pool
from ..scheduler import Scheduler, State
from ..work_dir import resolve_root
from . import more_help, plain_text

#: seconds after which a test job the queue no longer lists must have started its worker
#: (its first event in the work_dir), or the work_dir is taken for unseen by the node
NO_START_SECONDS = 20.0
#: seconds the test job to be cancelled may take to show in the queue, then to leave it
CANCEL_SECONDS = 60.0


@dataclass
class Check:
    """One line of the report."""

    name: str
    #: True: works; False: fails (a map needs it); None: a warning, or not checked
    ok: bool | None
    detail: str
    fix: str = ""


def register(subcommands: Any) -> None:
    """Add ``doctor`` to the ``poolparty`` command line."""
    parser = subcommands.add_parser(
        "doctor", help="check that maps can run on this cluster (submits 2 tiny jobs)",
        description=plain_text(__doc__.split("\n\n", 1)[1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=more_help(__name__))
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="default: the configured backend, else the one found here")
    parser.add_argument("--import", dest="modules", action="append", default=[],
                        metavar="MODULE", help="a module your tasks need: the job imports "
                        "it on the node (repeat for more)")
    parser.add_argument("--work-dir", default=None,
                        help="default: the configured work_dir (the doctor works in a new "
                             "directory under it and removes it after)")
    parser.add_argument("--python-path", default=None,
                        help="the python the jobs run (default: the configured one, else "
                             "this one)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the test job (default 300): a busy queue "
                             "may hold it")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    checks = diagnose(arguments.backend, arguments.modules, arguments.work_dir,
                      arguments.python_path, arguments.timeout)
    healthy = all(check.ok is not False for check in checks)
    if arguments.json:
        print(json.dumps({"ok": healthy, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        print(as_text(checks))
    return 0 if healthy else 1


def as_text(checks: list[Check]) -> str:
    """One line per check (``ok``, ``FAIL``, ``warn``), each fix under its line."""
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        mark = {True: "ok", False: "FAIL", None: "warn"}[check.ok]
        lines.append(f"{mark:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  -> {check.fix}")
    failed = sum(check.ok is False for check in checks)
    lines.append("maps can run here" if not failed else
                 f"{failed} check(s) failed: maps would not run as things are")
    return "\n".join(lines)


def diagnose(backend: str | None, modules: list[str], work_dir: str | None,
             python_path: str | None, timeout: float) -> list[Check]:
    """Every check, in order; a check that fails stops those that need it."""
    checks: list[Check] = []
    with doctor_dir(work_dir) as root:
        # one job at a time, none resubmitted, none kept warm for a next map
        options = {"work_dir": root, "processes": 1, "max_num_resubmissions": 0,
                   "keep_work_dir": False, "idle_timeout": 0,
                   **({"backend": backend} if backend else {}),
                   **({"python_path": python_path} if python_path else {})}
        try:
            pool = Pool(**options)
        except SchedulerNotFoundError as error:
            return [Check("scheduler", False, str(error),
                          "pass --backend, or run where the scheduler's commands are")]
        except PoolpartyError as error:  # a setting the pool refuses says what to change
            return [Check("settings", False, str(error))]
        watch = QueueWatch(pool.scheduler)
        try:
            checks.append(Check("scheduler", True, describe_backend(pool.scheduler)))
            checks.append(limits_check(pool.scheduler))
            job = run_probe(pool, watch, modules, root, timeout)
            checks += job
            if job[0].name == "job" and job[0].ok:
                checks.append(cancel_check(pool, watch))
        finally:
            pool.terminate()
    return checks


@contextlib.contextmanager
def doctor_dir(work_dir: str | None) -> Iterator[Path]:
    """A new directory of the doctor's own under the work_dir root, removed after: the
    maps run where the user's maps would, and leave nothing behind."""
    root = resolve_root(work_dir or configured_work_dir())
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix="doctor-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def configured_work_dir() -> str | None:
    """The work_dir a Pool would take from the configuration (None: the default)."""
    from .. import config

    value = config.resolve()["work_dir"].value
    return None if value is None else str(value)


def describe_backend(scheduler: Scheduler) -> str:
    commands = getattr(scheduler, "commands", {})
    found = [shutil.which(argv[0]) or argv[0] for argv in commands.values()]
    return f"{scheduler.name}" + (f" ({', '.join(found)})" if found else "")


def limits_check(scheduler: Scheduler) -> Check:
    """What the scheduler allows, as read from it (never a failure: a limit it did not
    tell is assumed at the scheduler's default)."""
    try:
        limits = scheduler.limits()
    except PoolpartyError as error:
        return Check("limits", None, f"could not be read: {error}")
    shown = "; ".join(f"{name}: {value}" for name, value in limits.items())
    return Check("limits", True, shown or "none to read for this backend")


class QueueWatch:
    """Records every answer the scheduler gives the pool's polls, so the doctor can tell
    what the queue showed of its job (the pool's own query, wrapped: the one a map
    makes)."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.query = scheduler.query
        self.seen: list[tuple[float, dict[int, State]]] = []
        self.last_work_dir: Any = None
        scheduler.query = self.recording  # type: ignore[method-assign]

    def recording(self, work_dir: Any) -> dict[int, State]:
        states = self.query(work_dir)
        self.last_work_dir = work_dir
        self.seen.append((time.monotonic(), dict(states)))
        return states

    def reset(self) -> None:
        self.seen.clear()

    def states(self) -> list[State]:
        """The states the job was seen in, in order, each once."""
        shown: list[State] = []
        for _, states in self.seen:
            for state in states.values():
                if not shown or shown[-1] is not state:
                    shown.append(state)
        return shown



def run_probe(pool: Pool, watch: QueueWatch, modules: list[str], root: Path,
              timeout: float) -> list[Check]:
    """The test map: one job that reports from its node."""
    started = time.monotonic()
    result = pool.map_async(probe, [modules])
    while not result.ready():
        waited = time.monotonic() - started
        if waited > timeout:
            return [Check("job", False, f"the test job did not finish within {timeout:.0f} s "
                          f"(the queue showed it as {shown_states(watch)})",
                          "a busy queue holds it: wait, or pass a partition/queue with free "
                          "nodes in poolparty.toml, or a larger --timeout")]
        if watch.states() and watch.states()[-1] is State.ERROR:
            return [Check("job", False, "the scheduler put the test job in an error state: "
                          "it will not run", "ask the scheduler why (SGE: qstat -j JOB; "
                          "often the work_dir or the current directory is missing on the "
                          "node: use a filesystem the nodes share)")]
        if (waited > NO_START_SECONDS and watch.seen and not watch.seen[-1][1]
                and not worker_started(root)):
            return [Check("work_dir", False, f"the test job is not in the queue, and its "
                          f"worker did not start within {NO_START_SECONDS:.0f} s: the node "
                          f"did not find the map's files in {root}", "put work_dir on a "
                          "filesystem the nodes share (work_dir= in poolparty.toml, or "
                          "--work-dir)")]
        time.sleep(0.25)
    return probe_checks(result, watch, modules, time.monotonic() - started)


def worker_started(root: Path) -> bool:
    """Whether the worker of the doctor's map wrote its first event."""
    try:
        workers = read_status(root).workers
    except PoolpartyError:
        return False
    return bool(workers.get("running") or workers.get("finished"))


def shown_states(watch: QueueWatch) -> str:
    """The states the queue showed, e.g. ``pending -> running``."""
    return " -> ".join(state.value for state in watch.states()) or "nowhere"


def probe_checks(result: Any, watch: QueueWatch, modules: list[str], took: float
                 ) -> list[Check]:
    """The checks the test map answers: it ran, on what python, with which packages."""
    try:
        report = result.get(0)[0]
    except ChunksLostError as error:
        said = [line.strip() for line in str(error).splitlines()[2:] if line.strip()]
        return [Check("job", False, "the test job ended without a result: " + "; ".join(
                      said[:4]), "read the job's log above; see docs/failures.rst")]
    except Exception as error:  # the node's environment, an unpicklable result...
        return [Check("job", False, f"{type(error).__name__}: {str(error).splitlines()[0]}",
                      environment_fix(str(error)))]
    listed = f"; the queue showed it {shown_states(watch)}" if watch.states() else ""
    checks = [Check("job", True, f"ran on {report['host']} in {took:.1f} s{listed}")]
    checks.append(python_check(report))
    checks.append(Check("packages", True, f"poolparty {report['poolparty']}, cloudpickle "
                        f"{report['cloudpickle']} on the node"))
    for module in modules:
        error = report["imports"].get(module)
        checks.append(Check(f"import {module}", error is None,
                            "imports on the node" if error is None else error,
                            "" if error is None else "install it where the nodes' python "
                            "finds it, or pass --python-path a python that has it"))
    checks.append(Check("work_dir", True, "the node wrote its result there"))
    return checks


def python_check(report: dict[str, Any]) -> Check:
    """The node's python: another minor version than here may not load what this one
    pickled (a warning, not a failure: plain functions and data often do)."""
    here = platform.python_version()
    there = report["python_version"]
    detail = f"{report['python']} {there}"
    if there.split(".")[:2] != here.split(".")[:2]:
        return Check("python", None, f"{detail}, but {here} here",
                     "use the same python on both (python_path=)")
    return Check("python", True, detail)


def environment_fix(message: str) -> str:
    if "No module named" in message or "not found" in message or "No such file" in message:
        return ("the nodes' python lacks poolparty or is not there: pass --python-path (or "
                "python_path= in poolparty.toml) a python on a filesystem the nodes share "
                "that has poolparty installed")
    return "read the job's words above"


def cancel_check(pool: Pool, watch: QueueWatch) -> Check:
    """A second job, cancelled once the queue lists it: it must leave the queue."""
    watch.reset()
    pool.map_async(time.sleep, [600])
    if not wait_for(lambda: any(states for _, states in watch.seen), CANCEL_SECONDS):
        return Check("queue", False, f"the scheduler's query did not list the second test "
                     f"job within {CANCEL_SECONDS:.0f} s (cancelling was not tried): the pool "
                     f"would take running jobs for lost", "check that the scheduler lists "
                     "your jobs to you (squeue --me, qstat, bjobs)")
    work_dir = watch.last_work_dir
    asked = time.monotonic()
    pool.terminate()
    if not wait_for(lambda: not watch.query(work_dir), CANCEL_SECONDS):
        return Check("cancel", False, f"a cancelled job was still in the queue after "
                     f"{CANCEL_SECONDS:.0f} s", "cancel it by hand; Ctrl-C would leave "
                     "jobs running here")
    return Check("cancel", True, f"a second job, listed {shown_states(watch)}, left the "
                 f"queue {time.monotonic() - asked:.1f} s after it was cancelled")


def wait_for(condition: Callable[[], Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def probe(modules: list[str]) -> dict[str, Any]:
    """Runs on the node: what it has of what a map needs."""
    import cloudpickle

    import poolparty

    imports: dict[str, str | None] = {}
    for module in modules:
        try:
            importlib.import_module(module)
            imports[module] = None
        except Exception as error:
            imports[module] = f"{type(error).__name__}: {error}"
    return {"host": socket.gethostname(), "python": sys.executable,
            "python_version": platform.python_version(),
            "poolparty": poolparty.__version__, "cloudpickle": cloudpickle.__version__,
            "imports": {m: e for m, e in imports.items() if e is not None}, "cwd": os.getcwd()}
