"""IBM Spectrum LSF: ``bsub -J "name[1-N]%K"`` arrays, ``bjobs -json`` once per poll, ``bkill``.

Chunks go in as job arrays, as on SGE: one bsub per contiguous run of chunk ids, at most
``MAX_JOB_ARRAY_SIZE`` elements each (``badmin showconf mbd``; LSF's default 1000). LSF
indices start at 1, so the array of chunks ``a..b`` has elements ``1..b-a+1`` and base
``a-1``; the worker reads its index from ``LSB_JOBINDEX``. ``bjobs -json -o`` is parsed
with the standard library (``json``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, SchedulerCommandError
from .escalation import OWN, Steps, memory_bytes
from .ranges import contiguous_runs
from .scheduler import (
    CommandLineScheduler,
    QueuedJob,
    State,
    Submission,
    refuse_characters,
    states_of_chunks,
    what_command_says,
)
from .settings import INT_OR_STRING, POSITIVE_INT, STRING, STRING_LIST, Setting
from .work_dir import WorkDir

log = logging.getLogger("poolparty")

#: what LSF says while its batch daemon (mbatchd) is busy, restarting or away
TRANSIENT_ERRORS = re.compile(
    r"LSF is processing your request|batch system daemon not responding|"
    r"Failed in an LSF library call|not responding|cannot connect to LSF|"
    r"timed? ?out|try again|temporarily",
    re.IGNORECASE,
)

#: LSF's default for the largest index of a job array (``MAX_JOB_ARRAY_SIZE``, lsb.params)
DEFAULT_MAX_JOB_ARRAY_SIZE = 1000

#: the fields one poll asks bjobs for
BJOBS_FIELDS = "jobid jobindex stat exit_code job_name"

#: LSF's job states (``bjobs`` STAT) in the engine's terms. A job held by its user
#: (PSUSP) waits; suspended ones (USUSP, SSUSP) go on where they stopped, holding their
#: claims; UNKWN is a host mbatchd can't reach, which may come back: all left alone.
#: ZOMBI (killed on a host that went away) will never deliver a result. DONE and EXIT
#: have left the queue: their result files decide.
STATES = {
    "PEND": State.PENDING, "PSUSP": State.PENDING, "WAIT": State.PENDING,
    "PROV": State.PENDING, "RUN": State.RUNNING, "USUSP": State.RUNNING,
    "SSUSP": State.RUNNING, "UNKWN": State.RUNNING, "ZOMBI": State.ERROR,
}
FINISHED = frozenset({"DONE", "EXIT"})
_unknown_codes_logged: set[str] = set()

#: how bjobs says that none of the jobs asked for is left (on stderr, exit 0 or 255)
NO_JOBS = re.compile(r"No (?:unfinished |matching )?job found|Job <[^>]*> is not found",
                     re.IGNORECASE)

#: what bsub makes of an -o path: it replaces these two (and no other ``%``), with no
#: way to escape them
UNUSABLE = {
    "%J": "is replaced by the job id",
    "%I": "is replaced by the array index",
}

#: bsub options poolparty sets and bsub_args may not: where the output goes, the name
RESERVED = ("-o", "-e", "-J", "-oo", "-eo")

#: the names of resources a map may ask for (``with_resources``), LSF's own included
RESOURCE_NAMES = {"time": "time", "W": "time", "memory": "memory", "M": "memory",
                  "cpus": "cpus", "n": "cpus", "gpus": "gpus", "gpu": "gpus",
                  "queue": "queue", "q": "queue"}

_TIME = re.compile(r"(\d+)(?::(\d+))?(?::(\d+))?")
_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
#: what follows the array's name in an element's JOB_NAME: ``[3]`` (or a whole
#: ``[1-10]%2`` where an LSF shows the array's specification)
_ELEMENT_SUFFIX = re.compile(r"\[[\d,:-]*\](?:%\d+)?$")


def state_of(code: str) -> State | None:
    """An LSF STAT in the engine's terms; None for a job that has left the queue. An
    unknown code is logged once and taken as RUNNING: leaving a job alone is the safe
    mistake."""
    if code in FINISHED:
        return None
    if code not in STATES:
        if code not in _unknown_codes_logged:
            _unknown_codes_logged.add(code)
            log.warning("bjobs shows an unknown job state %r: taken as running", code)
        return State.RUNNING
    return STATES[code]


def parse_bjobs_json(text: str, job_name: str) -> list[QueuedJob]:
    """The jobs named ``job_name`` (an array's elements are named ``name[3]``) in
    ``bjobs -json -o "jobid jobindex stat ... job_name"`` output, finished ones left out.
    A record without a job id (bjobs reports a job it could not find so) is skipped."""
    jobs = []
    for record in json.loads(text).get("RECORDS", []):
        if "ERROR" in record or not str(record.get("JOBID", "")).isdigit():
            continue
        if _ELEMENT_SUFFIX.sub("", str(record.get("JOB_NAME", ""))) != job_name:
            continue
        state = state_of(record.get("STAT", ""))
        if state is not None:
            index = str(record.get("JOBINDEX", "0"))
            jobs.append(QueuedJob(record["JOBID"], int(index) if index.isdigit()
                                  and index != "0" else None, state))
    return jobs


def job_id_in(output: str) -> str:
    """The id in bsub's ``Job <1234> is submitted to queue <normal>.`` (a busy mbatchd
    may print other lines first)."""
    match = _SUBMITTED.search(output)
    if match is None:
        raise ValueError(f"bsub printed no job id: {output.strip()[-300:]!r}")
    return match.group(1)


def parse_max_job_array_size(text: str) -> int:
    """MAX_JOB_ARRAY_SIZE from ``badmin showconf mbd``; LSF's default when not listed."""
    match = re.search(r"^\s*MAX_JOB_ARRAY_SIZE\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_JOB_ARRAY_SIZE


def is_lsf(version_text: str) -> bool:
    """Whether ``lsid`` (or ``bsub -V``) speaks of IBM Spectrum LSF or Platform LSF."""
    return re.search(r"\bLSF\b", version_text) is not None


def lsf_minutes(value: object) -> int | None:
    """``-W``'s ``[hour:]minute`` (or ``hours:minutes:seconds``, rounded up to a minute)
    in minutes; None when unreadable."""
    match = _TIME.fullmatch(str(value).strip())
    if match is None or isinstance(value, bool):
        return None
    numbers = [int(part) for part in match.groups() if part is not None]
    if len(numbers) == 3:
        return numbers[0] * 60 + numbers[1] + math.ceil(numbers[2] / 60)
    return numbers[0] * 60 + numbers[1] if len(numbers) == 2 else numbers[0]


def run_limit(minutes: int) -> str:
    """Minutes as ``-W`` takes them: ``hours:minutes``."""
    return f"{minutes // 60}:{minutes % 60:02d}"


def lsf_memory(text: str) -> str:
    """A memory size with an explicit unit (``4096MB``): a bare number would count in the
    cluster's LSF_UNIT_FOR_LIMITS, which the client can't know."""
    size = memory_bytes(text, 1024)
    if size is None:
        raise ValueError(text)
    return f"{math.ceil(size / 2**20)}MB"


class Lsf(CommandLineScheduler):
    """Chunks run as elements of LSF job arrays.

    ``queue`` (-q), ``time`` (-W, ``[hour:]minute``), ``memory`` (-M and
    ``rusage[mem=...]``, with a unit: ``"4GB"``), ``cpus`` (-n, on one host), ``gpus``
    (``-gpu "num=N"``) and ``bsub_args`` (passed as they are) choose what the jobs get.
    """

    name = "lsf"
    default_max_running = 8
    command_names = ("bsub", "bjobs", "bkill", "badmin")
    required_commands = ("bsub", "bjobs", "bkill")
    transient_errors = TRANSIENT_ERRORS
    settings = (
        Setting("queue", STRING, None, "LSF queue (bsub -q)"),
        Setting("time", STRING, None, "LSF run limit, bsub -W [hour:]minute"),
        Setting("memory", STRING, None, "LSF memory, with a unit (bsub -M, rusage[mem])"),
        Setting("cpus", POSITIVE_INT, None, "LSF slots on one host (bsub -n)"),
        Setting("gpus", INT_OR_STRING, None, "LSF GPUs, bsub -gpu num=N"),
        Setting("bsub_args", STRING_LIST, [], "more bsub arguments, passed as they are"),
        *CommandLineScheduler.settings,
    )
    extra_arguments_option = "bsub_args"
    query_command = "bjobs"
    #: a bare memory number counts in KB (LSF's default unit); poolparty writes units
    memory_unit = 1024

    def __init__(
        self,
        max_running: int | None = None,
        *,
        queue: str | None = None,
        time: str | int | None = None,
        memory: str | None = None,
        cpus: int | None = None,
        gpus: int | str | None = None,
        bsub_args: Sequence[str] = (),
        commands: dict[str, Sequence[str]] | None = None,
        **common: Any,
    ) -> None:
        """``common``: what every command line backend takes (call_timeout,
        time_escalation, memory_escalation, max_memory)."""
        super().__init__(max_running, commands, **common)
        self.queue = queue
        self.time, self.memory, self.cpus, self.gpus = time, memory, cpus, gpus
        check_resources(self.chosen_resources())
        self.read_limits()
        self.extra_args = self.argument_list(bsub_args, "['-P', 'project']", RESERVED)

    def chosen_resources(self) -> dict[str, Any]:
        """The resources asked for, by poolparty's names (None: not asked)."""
        return {"time": self.time, "memory": self.memory, "cpus": self.cpus,
                "gpus": self.gpus, "queue": self.queue}

    def with_resources(self, resources: Mapping[str, Any]) -> Lsf:
        """A copy asking for ``resources`` on top of the pool's: ``time`` (-W),
        ``memory`` (-M), ``cpus`` (-n), ``gpus`` (-gpu) and ``queue`` (-q), or by
        bsub's letters (``W``, ``M``, ``n``, ``gpu``, ``q``)."""
        if not resources:
            return self
        unknown = [name for name in resources if name not in RESOURCE_NAMES]
        if unknown:
            raise InvalidInputError(
                f"resources={{{unknown[0]!r}: ...}}: LSF takes time (bsub -W), memory (-M), "
                f"cpus (-n), gpus (-gpu) and queue (-q) per map; give other bsub options to "
                f"the pool's bsub_args.")
        changed = copy.copy(self)
        for name, value in resources.items():
            setattr(changed, RESOURCE_NAMES[name], value)
        check_resources(changed.chosen_resources())
        changed.read_limits()
        return changed

    def read_limits(self) -> None:
        """What the engine and the workers need: the run limit in seconds, the memory."""
        minutes = None if self.time is None else lsf_minutes(self.time)
        self.time_limit_seconds = None if minutes is None else minutes * 60.0
        self.asked_time = None if minutes is None else run_limit(minutes)
        self.asked_memory = None if self.memory is None else lsf_memory(str(self.memory))
        self.cpus_per_worker = int(self.cpus or 1)

    @property
    def resource_args(self) -> list[str]:
        """The resources every job of the pool asks for, and the extra arguments."""
        return self.resource_arguments(OWN)

    def resource_arguments(self, steps: Steps) -> list[str]:
        """The resources of a job raised by ``steps`` (poolparty.escalation): its run
        limit and memory times their factors, the rest as asked."""
        arguments = ["-q", str(self.queue)] if self.queue else []
        seconds = self.time_limit_for(steps)
        if seconds is not None:
            arguments += ["-W", run_limit(math.ceil(seconds / 60))]
        requirements = []
        memory = self.memory_for(steps)
        if memory is not None:
            memory = lsf_memory(memory)
            arguments += ["-M", memory]
            requirements.append(f"rusage[mem={memory}]")
        if self.cpus is not None:
            arguments += ["-n", str(self.cpus)]
            requirements.append("span[hosts=1]")  # one worker process: its cpus on one host
        if requirements:
            arguments += ["-R", " ".join(requirements)]
        if self.gpus is not None:
            arguments += ["-gpu", gpu_request(self.gpus)]
        return arguments + self.extra_args

    @classmethod
    def found_here(cls) -> bool:
        """bsub and bjobs on PATH, and ``lsid`` (or ``bsub -V``) naming LSF: other
        schedulers' compatibility layers ship a bsub too."""
        if not (shutil.which("bsub") and shutil.which("bjobs")):
            return False
        probe = ["lsid"] if shutil.which("lsid") else ["bsub", "-V"]
        said = what_command_says(probe)
        if is_lsf(said):
            log.info("IBM LSF found (%s): running on LSF job arrays",
                     said.strip().splitlines()[0])
            return True
        log.info("a bsub was found but %s does not name LSF: not used", " ".join(probe))
        return False

    @property
    def max_job_array_size(self) -> int:
        """The cluster's MAX_JOB_ARRAY_SIZE, asked once; LSF's default if unreadable."""
        return self.limit_read_once("MAX_JOB_ARRAY_SIZE", "badmin", ["showconf", "mbd"],
                                    parse_max_job_array_size, DEFAULT_MAX_JOB_ARRAY_SIZE)

    def limits(self) -> dict[str, str]:
        return {"largest job array (MAX_JOB_ARRAY_SIZE)": str(self.max_job_array_size)}

    def check_work_dir(self, root: Path) -> None:
        """The work_dir holds the logs (-o), where bsub replaces ``%J`` and ``%I``."""
        refuse_characters(root, UNUSABLE, "bsub in -o")

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """One array per contiguous run of chunk ids (element ``i`` runs chunk
        ``base + i``); stdout and stderr (no -e) into ``logs/<job id>.<index>.log``."""
        throttle = f"%{self.max_running}" if self.max_running else ""
        plan = []
        for run in contiguous_runs(chunk_ids, self.max_job_array_size):
            base = run.start - 1
            argv = [
                "-J", f"{self.job_name(work_dir)}[1-{len(run)}]{throttle}",
                "-o", f"{work_dir.logs_dir}/%J.%I.log",
                *self.resource_arguments(steps),
                "/bin/sh", str(work_dir.script_path), *self.worker_arguments(steps),
                "--array", str(base), "LSB_JOBINDEX",
            ]
            plan.append(self.submission("bsub", argv, {chunk: chunk - base for chunk in run},
                                        "{job_id}.{index}.log"))
        return plan

    def job_id_of(self, output: str) -> str:
        return job_id_in(output)

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        """One ``bjobs -J <name>`` for every element of the map's arrays."""
        name = self.job_name(work_dir)
        arguments = ["-json", "-o", BJOBS_FIELDS, "-J", name]
        try:  # with none listed it says so on stderr, and prints nothing
            jobs = self.listed_jobs("bjobs", arguments, lambda text: parse_bjobs_json(
                text, name) if text.strip() else [])
        except SchedulerCommandError as error:
            if error.returncode in (0, 255) and NO_JOBS.search(error.stderr):
                return {}
            raise
        return states_of_chunks(work_dir, jobs)

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        """bkill of each element (``1234[3]``) in batches; one already gone is no error."""
        self.cancel_ids("bkill", self.job_ids_of_chunks(
            work_dir, chunk_ids, lambda job_id, index: f"{job_id}[{index}]"))


def gpu_request(gpus: int | str) -> str:
    """``-gpu``'s value: a count becomes ``num=N``; a string is LSF's own syntax."""
    return f"num={gpus}" if isinstance(gpus, int) else str(gpus)


def check_resources(resources: Mapping[str, Any]) -> None:
    """Refuse, before anything is submitted, a resource bsub would refuse or misread,
    in LSF's words."""
    for name, value in resources.items():
        if value is None:
            continue
        why = RESOURCE_PROBLEMS[name](value)
        if why:
            raise InvalidInputError(f"{name}={value!r} is not something bsub takes: {why}.")


def _time_problem(value: Any) -> str | None:
    if isinstance(value, bool) or lsf_minutes(value) is None:
        return "-W is [hour:]minute, e.g. 90 or '1:30' (or '1:30:00')"
    return None


def _memory_problem(value: Any) -> str | None:
    text = str(value).strip()
    if isinstance(value, bool) or memory_bytes(text, 1024) is None:
        return "-M is a size with a unit, e.g. '4GB' or '500MB'"
    if text[-1:].isdigit():
        return ("give it a unit, e.g. '4GB': LSF reads a bare number in the cluster's "
                "LSF_UNIT_FOR_LIMITS (KB unless set), which poolparty can't know")
    return None


def _count_problem(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return "-n takes a whole number >= 1"
    return None


def _gpu_problem(value: Any) -> str | None:
    if isinstance(value, str) and re.fullmatch(r"num=\d+\S*", value):
        return None
    if _count_problem(value) is None:
        return None
    return "-gpu takes a number of GPUs, e.g. 1, or LSF's 'num=2:mode=exclusive_process'"


def _queue_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not re.fullmatch(r"[\w.-]+", value):
        return "-q takes a queue's name, e.g. 'normal'"
    return None


RESOURCE_PROBLEMS = {"time": _time_problem, "memory": _memory_problem, "cpus": _count_problem,
                     "gpus": _gpu_problem, "queue": _queue_problem}
