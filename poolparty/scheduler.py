"""The seam between the pool engine and a batch scheduler.

A backend answers three questions and nothing else: submit these chunks, which of this
map's jobs are still in the queue and in which :class:`State`, cancel these chunks.
Whether a chunk *succeeded* is never the scheduler's call: that is decided by its result
file in the work_dir (a job that left the queue may have finished, crashed, or its
result may still be on its way over NFS).

All subprocess I/O of every backend goes through :func:`run_command`, so retries,
backoff and time limits are written once.
"""

from __future__ import annotations

import abc
import enum
import importlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .endings import Ending
from .errors import InvalidInputError, SchedulerCommandError, SchedulerNotFoundError
from .escalation import DEFAULT_FACTOR, OWN, Steps, clock_time, memory_bytes, scaled_memory
from .settings import FACTOR, SECONDS, STRING, Setting

if TYPE_CHECKING:
    from .work_dir import WorkDir

log = logging.getLogger("poolparty")


class State(enum.Enum):
    """What the engine needs to know about a job that is still in the queue."""

    PENDING = "pending"  # waiting for resources: leave it alone
    RUNNING = "running"  # running or completing: leave it alone
    ERROR = "error"  # stuck in an error state: the engine cancels and resubmits it


class Scheduler(abc.ABC):
    """One batch system, seen through the three calls the engine makes.

    Backends keep what they learn at submission (job ids) in the work_dir via
    :meth:`.WorkDir.record_jobs`, so a client that died can re-attach to its jobs.
    """

    #: Name used in logs and by ``Pool(backend=...)``.
    name: str = "scheduler"

    #: A default for how many chunks run at once when the user gives no limit.
    default_max_running: int = 8

    #: The user's limit on chunks running at once (None: no limit).
    max_running: int | None = None

    #: Whether jobs run on other hosts, whose files the client may see late (NFS): a
    #: chunk past the resubmission limit then gets a last chance for its result.
    runs_elsewhere: bool = True

    # What the rest of poolparty knows of a backend, declared by its class (the registry,
    # poolparty.backends, asks for it by name):
    #: the options of its constructor that a configuration file or variable may set
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: the option taking more arguments for its submit tool (``--scheduler-arg``)
    extra_arguments_option: ClassVar[str | None] = None
    #: the tool that lists its jobs: a status asks it later, with the map's own path
    query_command: ClassVar[str | None] = None
    #: whether its jobs wait in a scheduler's queue (a status may ask that queue)
    is_cluster: ClassVar[bool] = False
    #: a line the scheduler itself writes into a job's log (SLURM's note that the job
    #: was cancelled): not the tasks' output, so never printed as theirs
    own_log_line: ClassVar[re.Pattern[bytes] | None] = None

    @classmethod
    def without_own_lines(cls, output: bytes) -> bytes:
        """A job's output without the lines the scheduler wrote into it (own_log_line):
        a map cancels its idle workers at the end, and the user must not read that
        their job was cancelled as if a task had printed it."""
        if cls.own_log_line is None:
            return output
        return b"".join(line for line in output.splitlines(keepends=True)
                        if not cls.own_log_line.match(line))

    @classmethod
    def found_here(cls) -> bool:
        """Whether ``backend="auto"`` should pick it on this machine (logging why)."""
        return False

    @classmethod
    def default_capacity(cls) -> int:
        """How many chunks it runs at once when the user gives no limit."""
        return cls.default_max_running

    @abc.abstractmethod
    def submit(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
               ) -> None:
        """Queue one job per chunk (an array backend makes as few calls as it can);
        ``steps``: with its time and memory raised so often (poolparty.escalation)."""

    @abc.abstractmethod
    def query(self, work_dir: WorkDir) -> dict[int, State]:
        """Return the state of every chunk of this map still in the queue.

        Must make ONE scheduler call for all jobs of the map: clusters suffer from
        clients that poll job by job. A chunk absent from the answer has left the
        queue. Raises :class:`SchedulerCommandError` when the scheduler can't be asked.
        """

    @abc.abstractmethod
    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        """Remove these chunks' jobs from the queue; a job already gone is no error."""

    def check_available(self) -> None:
        """Raise :class:`SchedulerNotFoundError` when the scheduler can't be used here."""

    def check_work_dir(self, root: Path) -> None:
        """Raise :class:`InvalidInputError` when jobs could not write their logs under
        ``root``: the scheduler would read some of its characters as its own filename
        patterns, and every job would fail after it ran, its output lost."""

    #: the run time each job was given, in seconds (None: no limit asked for): a worker
    #: claims no tasks it could not finish before it
    time_limit_seconds: float | None = None
    #: the CPUs each worker's job holds (its reservation, for a map's report)
    cpus_per_worker: int = 1
    #: the memory each job asks for, in the scheduler's words (None: its default)
    asked_memory: str | None = None

    def is_transient(self, error: SchedulerCommandError) -> bool:
        """Whether a failed command may work if tried again later (a busy or absent
        controller) rather than being refused for good (an unknown partition)."""
        return False

    def close(self) -> None:
        """Release what the backend holds (processes, threads); the pool calls it once."""

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """The commands :meth:`submit` runs for these chunks, built without running
        them: a dry run shows this plan, so the user sees what would reach the scheduler."""
        raise NotImplementedError(f"{self.name} can't show a submission without making it")

    def with_resources(self, resources: Mapping[str, Any]) -> Scheduler:
        """This backend for one map that asks for other ``resources`` than the pool's
        (``pool.map(..., resources={...})``): a copy, checked now, before anything is
        submitted. Backends without resources to choose take none."""
        if resources:
            raise InvalidInputError(
                f"backend {self.name!r} takes no resources per map (got "
                f"{sorted(resources)}): its workers are this machine's processes. Use a "
                f"cluster backend, or leave resources= out.")
        return self

    def raises(self, ending: Ending) -> bool:
        """Whether a claim lost this way is run again by a worker with more of what it
        lacked (poolparty.escalation): a time limit, or memory, the pool asked for (a
        scheduler's default is not known here, so it can't be raised)."""
        return False

    def limits(self) -> dict[str, str]:
        """What the scheduler allows a map, as read from it (``poolparty doctor`` shows
        it): the largest job array, the longest run time. Empty when nothing is known."""
        return {}


@dataclass(frozen=True)
class Submission:
    """One command that queues chunks, built before it runs: ``submit()``
    runs it and a dry run shows it, so a preview can't differ from the real thing.

    The job id is known only from the tool's answer, so what is written to the work_dir
    after it ran (:meth:`record`) is built from the job id then."""

    #: the tool's name among the backend's commands ("sbatch", "qsub")
    tool: str
    #: the whole command line, the tool's argv prefix included
    argv: tuple[str, ...]
    #: the chunks it queues: chunk id -> its index in the job array (None: a plain job)
    chunks: Mapping[int, int | None]
    #: each job's log in the work_dir's logs, ``{job_id}`` and ``{index}`` filled in
    log_pattern: str

    def record(self, job_id: str) -> dict[int, tuple[int | None, str]]:
        """What :meth:`.WorkDir.record_jobs` keeps of the jobs it queued:
        ``{chunk: (array index, log name)}``."""
        return {chunk: (index, self.log_pattern.format(job_id=job_id, index=index))
                for chunk, index in self.chunks.items()}


@dataclass(frozen=True)
class QueuedJob:
    """One job (or one array element) the scheduler lists, in the engine's terms."""

    job_id: str
    index: int | None
    state: State


def states_of_chunks(work_dir: WorkDir, jobs: Iterable[QueuedJob]) -> dict[int, State]:
    """Map queued jobs to this map's chunks (other jobs are ignored). When a chunk has
    several jobs (an old one being cancelled, its resubmission), the liveliest wins."""
    liveliness = {State.ERROR: 0, State.PENDING: 1, State.RUNNING: 2}
    states: dict[int, State] = {}
    for job in jobs:
        chunk_id = work_dir.chunk_of_job(job.job_id, job.index)
        if chunk_id is None:
            continue
        if chunk_id not in states or liveliness[job.state] > liveliness[states[chunk_id]]:
            states[chunk_id] = job.state
    return states


#: the tools of every backend: a DummyQueue offers all of them at once
KNOWN_COMMANDS = {"sbatch", "squeue", "scancel", "scontrol", "qsub", "qstat", "qdel", "qconf",
                  "qmgr", "bsub", "bjobs", "bkill", "badmin"}


class CommandLineScheduler(Scheduler):
    """A scheduler driven by command line tools (sbatch, qsub, ...).

    ``commands`` maps each tool's name to an argv prefix: a full path, or a dummy
    scheduler's ``[python, -m, ...]``. Every call goes through :func:`run_command`.
    """

    #: the tools this backend calls; the first ones must exist for it to be usable
    command_names: tuple[str, ...] = ()
    required_commands: tuple[str, ...] = ()
    #: stderr patterns worth retrying: the scheduler is busy or away
    transient_errors: re.Pattern[str]
    is_cluster = True
    settings = (
        Setting("call_timeout", SECONDS, 60.0, "seconds within which a failing "
                "scheduler command is retried"),
        Setting("time_escalation", FACTOR, DEFAULT_FACTOR, "a claim whose job reached its "
                "time limit runs again in a job with this many times the time (1: as before)"),
        Setting("memory_escalation", FACTOR, DEFAULT_FACTOR, "a claim whose job ran out of "
                "memory runs again in a job with this many times the memory (1: as before)"),
        Setting("max_memory", STRING, None, "the most memory a raised job may ask for, "
                "e.g. '64G' (unset: no cap but max_num_resubmissions)"),
    )

    def __init__(self, max_running: int | None, commands: dict[str, Sequence[str]] | None,
                 *, call_timeout: float = 60.0, time_escalation: float = DEFAULT_FACTOR,
                 memory_escalation: float = DEFAULT_FACTOR, max_memory: str | None = None
                 ) -> None:
        if max_running is not None:
            self.default_max_running = max_running
        #: a throttle only when the user asks for one: otherwise the scheduler's fair
        #: share decides (and throttled arrays start more slowly)
        self.max_running = max_running
        # a DummyQueue offers every scheduler's commands: only unknown names are an error
        unknown = set(commands or {}) - set(self.command_names) - KNOWN_COMMANDS
        if unknown:
            raise TypeError(f"unknown command(s) {sorted(unknown)}; known: {self.command_names}")
        self.commands = {name: [name] for name in self.command_names}
        self.commands.update({k: list(v) for k, v in (commands or {}).items()})
        self.call_timeout = float(call_timeout)
        self.time_escalation = check_factor("time_escalation", time_escalation)
        self.memory_escalation = check_factor("memory_escalation", memory_escalation)
        self.max_memory = max_memory

    #: the time each job asks for (the backend's own words), or None
    asked_time: str | None = None
    #: what a bare memory number counts in (SLURM: megabytes, SGE: bytes)
    memory_unit: int = 2**20

    def raises(self, ending: Ending) -> bool:
        if ending is Ending.TIME_LIMIT:
            return self.time_limit_seconds is not None and self.time_escalation > 1
        if ending is Ending.OUT_OF_MEMORY:
            return (memory_bytes(self.asked_memory, self.memory_unit) is not None
                    and self.memory_escalation > 1)
        return False

    def time_limit_for(self, steps: Steps) -> float | None:
        """The run time a job with these steps asks for, in seconds, at most the
        queue's own limit (:meth:`max_time_seconds`)."""
        if self.time_limit_seconds is None or not steps.time:
            return self.time_limit_seconds
        seconds = self.time_limit_seconds * self.time_escalation ** steps.time
        cap = self.max_time_seconds()
        return seconds if cap is None else max(self.time_limit_seconds, min(seconds, cap))

    def memory_for(self, steps: Steps) -> str | None:
        """The memory a job with these steps asks for, at most ``max_memory``."""
        if self.asked_memory is None or not steps.memory:
            return self.asked_memory
        return scaled_memory(self.asked_memory, self.memory_escalation ** steps.memory,
                             self.memory_unit, self.max_memory)

    def max_time_seconds(self) -> float | None:
        """The longest run time the jobs' queue allows (None: not known, no cap)."""
        return None

    def limit_read_once(self, name: str, tool: str, arguments: Sequence[str],
                        parse: Callable[[str], int], default: int) -> int:
        """A limit of the cluster's (the largest job array), read with one of the tools
        the first time it is needed and kept (copies for other resources share it); the
        scheduler's default, with a warning, when it can't be read: a map must not fail
        for want of a limit it may never reach."""
        known = self.__dict__.setdefault("limits_read", {})
        if name not in known:
            try:
                known[name] = parse(self.run(tool, arguments))
            except SchedulerCommandError as error:
                log.warning("could not read %s, assuming %d: %s", name, default, error)
                known[name] = default
        return known[name]

    def limits(self) -> dict[str, str]:
        seconds = self.max_time_seconds()
        return {"longest run time": "not limited or not known" if seconds is None
                else clock_time(seconds)}

    def worker_arguments(self, steps: Steps) -> list[str]:
        """What a worker raised by ``steps`` is told first: its steps (which reopened
        claims it may take) and its own time limit."""
        if not steps:
            return []
        limit = self.time_limit_for(steps)
        return ["--steps", str(steps), *([] if limit is None else ["--time-limit", f"{limit:g}"])]

    def check_available(self) -> None:
        for name in self.required_commands:
            if shutil.which(self.commands[name][0]) is None:
                raise SchedulerNotFoundError(
                    f"{self.commands[name][0]!r} was not found on PATH, so {self.name} can't be "
                    f"used here. Run on a login node of the cluster, or use local processes: "
                    f"poolparty.Pool(backend='local')."
                )

    @staticmethod
    def argument_list(arguments: Sequence[str], example: str, reserved: Sequence[str] = (),
                      attached_values: bool = False) -> list[str]:
        """Extra scheduler arguments must be a list: a string would be split into
        letters, or pasted into a shell. None may set one of the ``reserved`` options:
        ``--flag``, ``--flag=value``, and with ``attached_values`` (sbatch's ``-ofile``)
        a short ``-x`` with its value attached."""
        if isinstance(arguments, str):
            raise TypeError(f"extra scheduler arguments must be a list, e.g. {example}")
        arguments = [str(argument) for argument in arguments]
        for argument in arguments:
            for flag in reserved:
                if argument == flag or argument.startswith(flag + "=") or (
                        attached_values and len(flag) == 2 and argument.startswith(flag)):
                    raise InvalidInputError(
                        f"{argument!r} in the extra scheduler arguments: poolparty sets {flag} "
                        f"itself. Each job's output goes to its log in the work_dir (the "
                        f"worker writes its events there too, and logs.zip keeps it), and the "
                        f"job name is how the map finds its jobs in the queue. Remove it."
                    )
        return arguments

    def argv(self, name: str, arguments: Sequence[str]) -> list[str]:
        """The whole command line of one of the tools: its argv prefix, then ``arguments``
        (a backend adds what every one of its commands needs here)."""
        return self.commands[name] + list(arguments)

    def run(self, name: str, arguments: Sequence[str]) -> str:
        """Run one of the tools, retrying transient failures within call_timeout."""
        return run_command(self.argv(name, arguments), self.call_timeout, self.is_transient)

    def submit(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
               ) -> None:
        """Run the :meth:`plan`, recording each job once its tool named it."""
        for submission in self.plan(work_dir, chunk_ids, steps):
            output = run_command(submission.argv, self.call_timeout, self.is_transient)
            job_id = self.job_id_of(output)
            work_dir.record_jobs(job_id, submission.record(job_id))

    @abc.abstractmethod
    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """The submit commands for these chunks (see :class:`Submission`)."""

    @abc.abstractmethod
    def job_id_of(self, output: str) -> str:
        """The job id in what the submit tool printed."""

    def submission(self, name: str, arguments: Sequence[str],
                   chunks: Mapping[int, int | None], log_pattern: str) -> Submission:
        """A :class:`Submission` running the tool ``name`` with these arguments."""
        return Submission(name, tuple(self.argv(name, arguments)), chunks, log_pattern)

    def is_transient(self, error: SchedulerCommandError) -> bool:
        return error.returncode is None or bool(self.transient_errors.search(error.stderr))

    def listed_jobs(self, tool: str, arguments: Sequence[str],
                    parse: Callable[[str], list[QueuedJob]]) -> list[QueuedJob]:
        """The jobs a listing tool shows, parsed; output that can't be read (torn or empty
        while a controller restarts) is a SchedulerCommandError like a failed call, which
        the engine survives as a bad poll."""
        text = self.run(tool, arguments)
        try:
            return parse(text)
        except Exception as error:
            raise SchedulerCommandError(self.argv(tool, arguments), 0, text[-2000:], "",
                                        reason=f"unreadable output: {error}") from error

    @staticmethod
    def job_ids_of_chunks(work_dir: WorkDir, chunk_ids: Iterable[int],
                          element: Callable[[str, int], str]) -> list[str]:
        """The ids to cancel the jobs of these chunks by: a plain job's own id, an array
        element's as ``element(job_id, index)`` names it (``12_3``, ``12.3``, ``12[3]``)."""
        return sorted({ref.job_id if ref.index is None else element(ref.job_id, ref.index)
                       for chunk_id in chunk_ids for ref in work_dir.jobs_of_chunk(chunk_id)})

    def job_name(self, work_dir: WorkDir) -> str:
        """Every job of a map carries this name, so one query finds them all."""
        return f"poolparty-{work_dir.map_id}"

    def cancel_ids(self, name: str, job_ids: Sequence[str]) -> None:
        """Cancel jobs in batches, best effort: a job that already ended makes the tool
        complain, and a cancel that fails must not kill a running map (the engine's
        limits still bound what a stray job can cost)."""
        for start in range(0, len(job_ids), 500):
            try:
                self.run(name, list(job_ids[start : start + 500]))
            except SchedulerCommandError as error:
                log.info("%s did not cancel everything: %s", name, error)


def what_command_says(argv: Sequence[str], timeout: float = 30.0) -> str:
    """What a command prints (its output, then its errors), to tell whose scheduler's
    tools are on PATH (``found_here``: SGE, PBS and Torque all ship a ``qsub``); "" when
    it can't be run. A probe, not a call to the scheduler: no retries."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def check_factor(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
        raise InvalidInputError(f"{name} must be a number >= 1 (1: never raised), not {value!r}")
    return float(value)


def predecessor_attribute(module: str, name: str) -> Any:
    """A backend module's ``Pool``: pypoolparty's class of that module, from the API
    layer (:mod:`poolparty.predecessor`), imported only when asked for, so that a
    backend never imports the layer above it (a module's ``__getattr__`` calls this)."""
    if name != "Pool":
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return importlib.import_module("poolparty.predecessor").POOL_OF_MODULE[module]


def refuse_characters(path: Path, characters: dict[str, str], reader: str,
                      what: str = "work_dir",
                      fix: str = "Pass work_dir= a directory whose path has none of them."
                      ) -> None:
    """Refuse a path holding any of ``characters`` (each with what the scheduler makes
    of it), naming those it holds and the fix."""
    found = [char for char in characters if char in str(path)]
    if found:
        reasons = "; ".join(f"{char!r} {characters[char]}" for char in found)
        raise InvalidInputError(
            f"{what} {str(path)!r} holds {', '.join(repr(char) for char in found)}, which "
            f"{reader} reads as its own ({reasons}): the jobs would fail or their output go "
            f"elsewhere, and every job would be lost. {fix}")


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def run_command(
    argv: Sequence[str],
    timeout: float,
    is_transient: Callable[[SchedulerCommandError], bool] = lambda error: True,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run a scheduler command and return its stdout, retrying transient failures.

    Real clusters have bad minutes: ``Socket timed out``, a controller restarting, a
    command that hangs. Each attempt gets a share of ``timeout``; failures judged
    transient are retried with exponential backoff until ``timeout`` seconds have
    passed in total. Then, or at once for a permanent failure (``invalid partition``),
    raise :class:`.SchedulerCommandError` carrying argv, exit code, stdout and stderr.
    Commands are always argv lists: nothing is ever interpreted by a shell.
    """
    deadline = time.monotonic() + timeout
    attempt_timeout = max(1.0, timeout / 3)
    backoff = 0.25
    while True:
        remaining = deadline - time.monotonic()
        error = _run_once(argv, min(attempt_timeout, max(remaining, 0.5)))
        if isinstance(error, str):
            return error
        if not is_transient(error):
            raise error
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error
        log.warning("%s; retrying in %.1f s", str(error).splitlines()[0], backoff)
        sleep(min(backoff, remaining))
        backoff = min(backoff * 2, 10.0)


def _run_once(argv: Sequence[str], timeout: float) -> str | SchedulerCommandError:
    """One attempt: stdout on success, the error (not raised) on failure."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as timed_out:
        return SchedulerCommandError(
            argv, None, _decode(timed_out.stdout), _decode(timed_out.stderr),
            reason=f"no answer within {timeout:.3g} s",
        )
    except OSError as os_error:
        return SchedulerCommandError(argv, None, "", str(os_error), reason="could not start")
    stdout, stderr = _decode(done.stdout), _decode(done.stderr)
    if done.returncode != 0:
        return SchedulerCommandError(argv, done.returncode, stdout, stderr)
    return stdout
