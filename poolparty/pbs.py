"""PBS Professional / OpenPBS: ``qsub -J`` arrays, ``qstat -f -F json -t`` once per poll.

Workers go in as array jobs, one qsub per run of consecutive worker ids, whose subjob
indices *are* the worker ids (``-J 17-24``: PBS indices may start anywhere from 0), at
most the server's ``max_array_size`` subjobs each. PBS refuses an array of a single
subjob, so a run of one worker is a plain job told its id. Each job's output goes to
``logs/<worker id>.log``: PBS replaces ``^array_index^`` in an array's ``-o`` path, and
has no placeholder for the job id. The job ids qsub prints (``1234[].server``,
``1235.server``) are kept without the server's name, as qstat and qdel take them.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError, SchedulerCommandError
from .escalation import OWN, Steps, clock_time, duration_seconds
from .ranges import contiguous_runs
from .scheduler import (
    CommandLineScheduler,
    QueuedJob,
    State,
    refuse_characters,
    states_of_chunks,
    what_command_says,
)
from .settings import INT_OR_STRING, POSITIVE_INT, STRING, STRING_LIST, TABLE, Setting
from .work_dir import WorkDir

if TYPE_CHECKING:
    from .scheduler import Submission

log = logging.getLogger("poolparty")

#: stderr of a PBS command worth retrying: the server is away, busy or restarting
#: (``qstat: cannot connect to server pbs (errno=15010)``, ``pbs_iff: ... timed out``)
TRANSIENT_ERRORS = re.compile(
    r"cannot connect to server|connection refused|no route to host|timed? ?out|timeout|"
    r"try again|"
    r"temporarily|server busy|end of file|communication failure|errno=150(10|31)",
    re.IGNORECASE,
)

#: PBS's default for the number of subjobs of one array (``qmgr -c 'list server'``)
DEFAULT_MAX_ARRAY_SIZE = 10000

#: qstat's job states (PBS Professional Reference Guide, "Job States"), as the engine
#: needs to see them. Held (H) and waiting (W: for its start time, or a stage-in) jobs
#: will run by themselves once released; in transit (T) and moved (M) jobs are on
#: their way to a queue. Suspended jobs (S, and U: its workstation busy) go on where
#: they stopped, holding their claims. B is an array begun; finished (F) and expired
#: (X, a subjob done while its array lives) jobs have left the queue.
STATES: dict[str, State | None] = {
    "Q": State.PENDING, "H": State.PENDING, "W": State.PENDING, "T": State.PENDING,
    "M": State.PENDING, "R": State.RUNNING, "E": State.RUNNING, "B": State.RUNNING,
    "S": State.RUNNING, "U": State.RUNNING, "F": None, "X": None,
}

#: a key of qstat's "Jobs": ``1234.server``, ``1234[].server`` (an array), ``1234[7].server``
_JOB_KEY = re.compile(r"(\d+)(?:\[(\d*)\])?(?:\.\S*)?")

_warned_states: set[str] = set()


def state_of(entry: Mapping[str, Any]) -> State | None:
    """A job's State from its qstat record; None when it has left the queue.

    A held job whose holds include a system hold (``Hold_Types`` holding ``s``) is an
    error: PBS holds a job so when it failed to start twenty times (``run_count``), and
    it will not run until an administrator releases it. A user's hold (``u``) is the
    user's business and waits. Unknown codes are logged once and taken as RUNNING:
    leaving a job alone is the safe mistake."""
    code = str(entry.get("job_state", ""))
    if code == "H" and "s" in str(entry.get("Hold_Types", "")):
        return State.ERROR
    if code not in STATES:
        if code not in _warned_states:
            _warned_states.add(code)
            log.warning("unknown PBS job state %r: treating it as running", code)
        return State.RUNNING
    return STATES[code]


def parse_qstat_json(text: str) -> list[QueuedJob]:
    """The jobs in ``qstat -f -F json -t`` output, each subjob on its own (``1234[7]``
    -> job ``1234[]``, index 7); an array's own record (``1234[]``) only sums up its
    subjobs and is left out, as are jobs that have left the queue."""
    jobs = []
    for key, entry in qstat_records(text).items():
        match = _JOB_KEY.fullmatch(key)
        state = state_of(entry)
        if match is None or state is None:
            continue
        number, index = match.groups()
        if index is None:
            jobs.append(QueuedJob(number, None, state))
        elif index:
            jobs.append(QueuedJob(f"{number}[]", int(index), state))
    return jobs


def qstat_records(text: str) -> dict[str, dict[str, Any]]:
    """The ``Jobs`` object of qstat's JSON (absent when no job is queued). Some PBS
    versions write a job's environment (``Variable_List``: all of it, with ``-V``)
    with control characters and backslashes left unescaped: read leniently."""
    try:
        data = json.loads(text, strict=False)
    except json.JSONDecodeError:
        data = json.loads(re.sub(r'\\(?!["\\/bfnrtu])', r"\\\\", text), strict=False)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data.get("Jobs") or {}


def parse_max_array_size(text: str) -> int:
    """max_array_size from ``qmgr -c 'list server'``; PBS's default when not listed
    (qmgr lists only attributes that were set) or 0 (no array could be submitted: not
    a limit a server runs with, so taken for unset)."""
    match = re.search(r"^\s*max_array_size\s*=\s*(\d+)", text, re.MULTILINE)
    return (int(match.group(1)) if match else 0) or DEFAULT_MAX_ARRAY_SIZE


def is_pbs_professional(version_text: str) -> bool:
    """``qstat --version`` of PBS Professional and OpenPBS says ``pbs_version = 22.05.11``;
    Torque's says ``Version: 6.1.3``, SGE's qstat knows no such option."""
    return re.search(r"^pbs_version\s*=\s*\S+", version_text.strip(), re.MULTILINE) is not None


def refused_job_ids(stderr: str) -> list[str]:
    """The jobs a plain qdel could not delete (``qdel: Server could not connect to MOM
    1234[3].server``), for a second qdel with ``-W force``; a job qdel does not know
    (``Unknown Job Id``) or that has finished is already gone."""
    refused = []
    for line in stderr.splitlines():
        if re.search(r"unknown job id|job has finished|nonexistent", line, re.IGNORECASE):
            continue
        found = re.findall(r"\b\d+(?:\[\d*\])?(?=\.|\s|$)", line.split(":", 1)[-1])
        refused += found[-1:]
    return refused


def walltime_seconds(value: object) -> float | None:
    """PBS's walltime in seconds: ``hh:mm:ss``, ``mm:ss``, or a number of seconds (PBS
    reads a bare number as seconds, unlike SLURM); None when it is none of them."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    return duration_seconds(text) if ":" in text else None


def pbs_size(value: object) -> str | None:
    """A memory size in PBS's words (``4gb``, ``3072mb``; a bare number is bytes) from
    PBS's or the other schedulers' (``4G``); None when it is not a size."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)(b|w)?\s*", str(value), re.IGNORECASE)
    if match is None:
        return None
    number, unit, kind = match.groups()
    return f"{number}{unit.lower()}{(kind or 'b').lower()}"


#: what qsub makes of characters in an -o path
UNUSABLE = {
    ":": "ends a host name (host:path)",
    "^": "starts ^array_index^, which it replaces",
    "\n": "ends the path",
}

#: qsub options poolparty sets and qsub_args may not: where the output goes and how it
#: is kept, the name, the array
RESERVED = ("-o", "-e", "-j", "-k", "-N", "-J")

#: the names ``resources=`` takes for a map -> the resource PBS knows it by
RESOURCE_NAMES = {"time": "walltime", "walltime": "walltime", "memory": "mem", "mem": "mem",
                  "cpus": "ncpus", "ncpus": "ncpus", "gpus": "ngpus", "ngpus": "ngpus"}
#: what each of them must be, in PBS's words
_CHECKS = {
    "walltime": (lambda v: walltime_seconds(v) is not None, "hh:mm:ss or seconds, e.g. '1:30:00'"),
    "mem": (lambda v: pbs_size(v) is not None, "a size, e.g. '4gb' or '500mb'"),
    "ncpus": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an int >= 1"),
    "ngpus": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an int >= 0"),
}


def check_resource(name: str, value: Any) -> Any:
    """A value of one of the resources PBS chooses a job's chunk and walltime by, or an
    InvalidInputError saying what qsub takes."""
    valid, expected = _CHECKS[name]
    if isinstance(value, bool) or not valid(value):
        raise InvalidInputError(f"-l {name}={value!r} is not something qsub takes: give "
                                f"{expected}.")
    return value


#: PBS starts a job in the user's home directory and has no option for another (SGE's
#: -wd): the job changes to the client's directory first, as jobs of the other
#: schedulers start there, so that a task's relative paths mean what they mean to the
#: caller (arguments: the directory, then the job script and its arguments)
IN_CLIENT_DIRECTORY = 'cd "$1" && shift && exec /bin/sh "$@"'


class Pbs(CommandLineScheduler):
    """Chunks run as subjobs of PBS Professional / OpenPBS array jobs.

    ``time`` (``-l walltime``), ``memory``, ``cpus_per_task`` and ``gpus`` (the job's one
    chunk: ``-l select=1:ncpus=N:mem=M:ngpus=G``), ``queue`` (-q), ``account`` (-A),
    ``resources`` (each ``-l key=value``, job-wide) and ``qsub_args`` (passed as they are)
    choose what the jobs get.
    """

    name = "pbs"
    default_max_running = 8
    command_names = ("qsub", "qstat", "qdel", "qmgr")
    required_commands = ("qsub", "qstat", "qdel")
    transient_errors = TRANSIENT_ERRORS
    settings = (
        Setting("queue", STRING, None, "PBS queue (qsub -q)"),
        Setting("time", STRING, None, "PBS walltime, e.g. '1:00:00'"),
        Setting("memory", STRING, None, "PBS mem of the job's chunk, e.g. '4gb'"),
        Setting("cpus_per_task", POSITIVE_INT, None, "PBS ncpus of the job's chunk"),
        Setting("gpus", INT_OR_STRING, None, "PBS ngpus of the job's chunk"),
        Setting("resources", TABLE, None, "PBS job-wide resources, each -l key=value"),
        Setting("qsub_args", STRING_LIST, [], "more qsub arguments, passed as they are"),
        *CommandLineScheduler.settings,
    )
    extra_arguments_option = "qsub_args"
    query_command = "qstat"
    #: a bare memory number counts in bytes
    memory_unit = 1

    def __init__(
        self,
        max_running: int | None = None,
        *,
        queue: str | None = None,
        account: str | None = None,
        time: str | None = None,
        memory: str | None = None,
        cpus_per_task: int | None = None,
        gpus: int | None = None,
        resources: dict[str, Any] | None = None,
        qsub_args: Sequence[str] = (),
        commands: dict[str, Sequence[str]] | None = None,
        **common: Any,
    ) -> None:
        """``common``: what every command line backend takes (call_timeout,
        time_escalation, memory_escalation, max_memory)."""
        super().__init__(max_running, commands, **common)
        self.queue, self.account = queue, account
        chosen = {"walltime": time, "mem": memory, "ncpus": cpus_per_task, "ngpus": gpus}
        #: the resources asked for by the names poolparty knows (walltime, the chunk's)
        self.named = {name: check_resource(name, value)
                      for name, value in chosen.items() if value is not None}
        self.resources = dict(resources or {})
        self.read_limits()
        self.extra_args = self.argument_list(qsub_args, "['-P', 'project']", RESERVED)

    def with_resources(self, resources: Mapping[str, Any]) -> Pbs:
        """A copy asking for ``resources`` on top of the pool's: ``time`` (walltime),
        ``memory`` (mem), ``cpus`` (ncpus), ``gpus`` (ngpus), ``queue`` (-q), ``account``
        (-A), and any other of PBS's resources by name (``-l name=value``)."""
        if not resources:
            return self
        changed = copy.copy(self)
        changed.named, changed.resources = dict(self.named), dict(self.resources)
        for name, value in resources.items():
            if name in ("queue", "account"):
                setattr(changed, name, self._word(name, value))
            elif name == "partition":
                raise InvalidInputError(
                    "resources={'partition': ...}: PBS has queues, not partitions; give "
                    "resources={'queue': 'workq'} (qsub -q).")
            elif name in RESOURCE_NAMES:
                key = RESOURCE_NAMES[name]
                changed.named[key] = check_resource(key, value)
            else:
                changed.resources[self._word(name, name)] = self._word(name, value)
        changed.read_limits()
        return changed

    @staticmethod
    def _word(name: str, value: Any) -> str:
        """A queue, an account, a resource's name or value: one word of qsub's."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not (
                re.fullmatch(r"[\w.@+-]+", str(value))):
            raise InvalidInputError(
                f"resources={{{name!r}: {value!r}}}: PBS takes -l name=value (a resource), "
                f"-q queue or -A account, each one word, e.g. {{'walltime': '1:00:00', "
                f"'queue': 'workq'}}.")
        return str(value)

    def read_limits(self) -> None:
        """What the engine and the workers need of the resources: the time limit in
        seconds and the memory asked for."""
        walltime = self.named.get("walltime", self.resources.get("walltime"))
        self.asked_time = None if walltime is None else str(walltime)
        self.time_limit_seconds = None if walltime is None else walltime_seconds(walltime)
        memory = self.named.get("mem", self.resources.get("mem"))
        self.asked_memory = None if memory is None else str(memory)
        self.cpus_per_worker = int(self.named.get("ncpus") or 1)

    @property
    def resource_args(self) -> list[str]:
        """The resources every job of the pool asks for, and the extra arguments."""
        return self.resource_arguments(OWN)

    def resource_arguments(self, steps: Steps) -> list[str]:
        """The resources of a job raised by ``steps`` (poolparty.escalation): its one
        chunk (``select=1:...``), its walltime and the job-wide resources."""
        chunk, resources = dict(self.named), dict(self.resources)
        if "walltime" in chunk:
            resources["walltime"] = chunk.pop("walltime")
        if steps.time and self.time_limit_seconds is not None:
            resources["walltime"] = clock_time(self.time_limit_for(steps) or 0)
        if "mem" in chunk:
            resources.pop("mem", None)
        if self.asked_memory is not None:
            memory = self.memory_for(steps) if steps.memory else self.asked_memory
            (chunk if "mem" in chunk else resources)["mem"] = pbs_size(memory) or memory
        arguments = ["-q", self.queue] if self.queue else []
        arguments += ["-A", self.account] if self.account else []
        if chunk:
            arguments += ["-l", "select=1:" + ":".join(f"{k}={v}" for k, v in chunk.items())]
        for key, value in resources.items():
            arguments += ["-l", f"{key}={value}"]
        return arguments + self.extra_args

    @classmethod
    def found_here(cls) -> bool:
        """A PBS Professional or OpenPBS qsub and qstat on PATH. SGE and Torque ship a
        ``qsub`` and ``qstat`` too: PBS is recognised by what ``qstat --version`` says."""
        if not (shutil.which("qsub") and shutil.which("qstat")):
            return False
        said = what_command_says(["qstat", "--version"])
        if is_pbs_professional(said):
            log.info("PBS found (%s): running on PBS array jobs", said.strip().splitlines()[0])
            return True
        log.info("a qsub was found but it is not PBS Professional's or OpenPBS's: not used")
        return False

    @property
    def max_array_size(self) -> int:
        """The server's max_array_size, asked once; PBS's default if it can't be read."""
        return self.limit_read_once("max_array_size", "qmgr", ["-c", "list server"],
                                    parse_max_array_size, DEFAULT_MAX_ARRAY_SIZE)

    def limits(self) -> dict[str, str]:
        return {"subjobs per array job (max_array_size)": str(self.max_array_size),
                **super().limits()}

    def check_work_dir(self, root: Path) -> None:
        """The work_dir holds the logs (-o), a path qsub reads as ``[host:]path``."""
        refuse_characters(root, UNUSABLE, "qsub in -o")

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """One array job per run of consecutive worker ids (subjob ``i`` is worker
        ``i``), a plain job for a run of one."""
        common = ["-N", self.job_name(work_dir), "-j", "oe", "-k", "od", "-V",
                  *self.resource_arguments(steps)]
        script = ["--", "/bin/sh", "-c", IN_CLIENT_DIRECTORY, "sh", os.getcwd(),
                  str(work_dir.script_path), *self.worker_arguments(steps)]
        plan = []
        for run in contiguous_runs(chunk_ids, self.max_array_size):
            if len(run) == 1:
                output, array, worker = f"{run.start}.log", [], [str(run.start)]
                chunks: dict[int, int | None] = {run.start: None}
            else:
                output, array = "^array_index^.log", ["-J", f"{run.start}-{run[-1]}"]
                worker, chunks = ["--array", "0", "PBS_ARRAY_INDEX"], {c: c for c in run}
            argv = ["-o", f"{work_dir.logs_dir}/{output}", *array, *common, *script, *worker]
            pattern = output.replace("^array_index^", "{index}")
            plan.append(self.submission("qsub", argv, chunks, pattern))
        return plan

    def job_id_of(self, output: str) -> str:
        """qsub prints ``1234[].server`` for an array, ``1235.server`` for a job: kept
        as ``1234[]`` and ``1235``, the names qstat's keys are read into."""
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        if not lines or _JOB_KEY.fullmatch(lines[-1]) is None:
            raise SchedulerCommandError(self.commands["qsub"], 0, output, "",
                                        reason="printed no job id")
        return lines[-1].split(".", 1)[0]

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        """One ``qstat -f -F json -t`` (every job with its subjobs): qstat selects jobs
        by neither name nor owner in its full format, and asked for the map's job ids
        it fails on those that have ended."""
        jobs = self.listed_jobs("qstat", ["-f", "-F", "json", "-t"], parse_qstat_json)
        return states_of_chunks(work_dir, jobs)

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        """qdel in batches; the jobs a plain qdel could not delete (their node is
        gone) once more with ``-W force``."""
        job_ids = self.job_ids_of_chunks(
            work_dir, chunk_ids, lambda job_id, index: job_id.replace("[]", f"[{index}]"))
        refused = self.qdel([], job_ids)
        if refused:
            self.qdel(["-W", "force"], refused)

    def qdel(self, options: list[str], job_ids: Sequence[str]) -> list[str]:
        """qdel in batches of 500, best effort (see :meth:`cancel_ids`): the jobs it
        could not delete for a reason that ``-W force`` overrides."""
        refused = []
        for start in range(0, len(job_ids), 500):
            try:
                self.run("qdel", [*options, *job_ids[start : start + 500]])
            except SchedulerCommandError as error:
                refused += refused_job_ids(error.stderr)
                log.info("qdel %s did not cancel everything: %s", " ".join(options), error)
        return refused
