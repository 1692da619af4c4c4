"""Sun Grid Engine: ``qsub -t`` arrays, ``qstat -xml`` once per poll, ``qdel``.

Chunks go in as array jobs: one qsub per contiguous run of chunk ids (a resubmission
round is usually one or a few runs), at most ``max_aj_tasks`` tasks each. SGE task ids
start at 1, so the array of chunks ``a..b`` has tasks ``1..b-a+1`` and base ``a-1``.
``qstat -xml`` is parsed with the standard library (``xml.etree``).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import scheduler
from .errors import InvalidInputError
from .escalation import OWN, Steps, clock_time, duration_seconds, scaled_memory
from .ranges import contiguous_runs, expand_ranges
from .scheduler import (
    CommandLineScheduler,
    QueuedJob,
    State,
    refuse_characters,
    states_of_chunks,
    what_command_says,
)
from .settings import PARALLEL_ENVIRONMENT, STRING, STRING_LIST, TABLE, Setting
from .work_dir import WorkDir

if TYPE_CHECKING:
    from .scheduler import Submission

log = logging.getLogger("poolparty")

TRANSIENT_ERRORS = re.compile(
    r"timed? ?out|timeout|unable to contact|can't contact|failed receiving gdi|"
    r"commlib error|connection refused|try again|temporarily|busy",
    re.IGNORECASE,
)

#: SGE's default for the number of tasks in one array job (``qconf -sconf``).
DEFAULT_MAX_AJ_TASKS = 75000


def state_of(code: str, error_state_indicator: str = "E") -> State:
    """Map an SGE state code (``qw``, ``r``, ``Eqw``, ``hqw``, ``dr``, ...) to a State.

    ``E`` means the job will never run by itself. ``d`` (being deleted: by an admin,
    or stuck as ``dt`` when its execd is gone) means it will not deliver a result:
    both are errors, and the engine resubmits the chunk, as is a code holding
    ``error_state_indicator`` (pypoolparty's option; "E" by default). Running,
    transferring and suspended (``s``, ``S``, ``T``: they go on where they stopped,
    holding their claims) jobs are left alone; everything else waits.
    """
    if "E" in code or "d" in code or error_state_indicator in code:
        return State.ERROR
    if any(letter in code for letter in "rtsST"):  # running, transferring, suspended
        return State.RUNNING
    return State.PENDING


def parse_qstat_xml(text: str, job_name: str, error_state_indicator: str = "E"
                    ) -> list[QueuedJob]:
    """The jobs named ``job_name`` in ``qstat -xml`` output, one per array task.

    Pending array tasks are grouped (``<tasks>9-20:1</tasks>``) and get expanded.
    """
    jobs = []
    for entry in job_lists(text):
        if entry.get("JB_name") != job_name:
            continue
        state = state_of(entry.get("state", ""), error_state_indicator)
        tasks = entry.get("tasks")
        job_id = entry["JB_job_number"]
        if tasks is None:
            jobs.append(QueuedJob(job_id, None, state))
        else:
            jobs.extend(QueuedJob(job_id, task, state) for task in expand_ranges(tasks))
    return jobs


def job_lists(text: str) -> list[dict[str, str]]:
    """Every ``<job_list>`` of ``qstat -xml`` (running and pending alike) as a flat dict.

    The PyPI package ``qstat`` parses this too, but only behind a private module
    (``qstat._tools``) or by running ``qstat`` itself without a timeout; the
    standard library reads these flat records just as well.
    """
    # imported when first parsing: the configuration imports this module for its
    # settings on every Pool creation, SGE or not
    from xml.etree import ElementTree

    root = ElementTree.fromstring(text)
    return [{field.tag: (field.text or "").strip() for field in entry}
            for entry in root.iter("job_list")]


def parse_max_aj_tasks(text: str) -> int:
    """max_aj_tasks from ``qconf -sconf``; 0 there means unlimited."""
    match = re.search(r"^max_aj_tasks\s+(\d+)", text, re.MULTILINE)
    value = int(match.group(1)) if match else DEFAULT_MAX_AJ_TASKS
    return value or 10**9




#: the resources that limit a job's run time, and those that ask for memory: raised
#: for a claim whose job reached its time limit, or ran out of memory
TIME_RESOURCES = ("h_rt", "s_rt")
MEMORY_RESOURCES = ("h_vmem", "s_vmem", "mem_free", "virtual_free", "h_data", "s_data")

#: what qsub makes of characters in an -o path; it has no way to escape them
UNUSABLE = {
    "$": "starts $HOME, $USER, $JOB_ID, $TASK_ID and the like, which it replaces",
    ":": "ends a host name",
    ",": "separates paths",
    "\n": "ends the path",
}

#: what qsub makes of characters in a -wd path
UNUSABLE_WD = {key: UNUSABLE[key] for key in ("$", "\n")}

#: qsub options poolparty sets and qsub_args may not: where the output goes, the name
RESERVED = ("-o", "-e", "-j", "-N")


class SunGridEngine(CommandLineScheduler):
    """Chunks run as tasks of SGE array jobs.

    ``queue`` (-q), ``resources`` (each ``-l key=value``, e.g. ``{"h_vmem": "2G",
    "h_rt": "1:00:00"}``), ``parallel_environment`` (``("smp", 4)`` -> ``-pe smp 4``) and
    ``qsub_args`` (passed as they are) choose what the jobs get. A job whose state
    holds ``error_state_indicator`` (besides ``E`` and ``d``) is taken as failed.
    """

    name = "sge"
    default_max_running = 8
    command_names = ("qsub", "qstat", "qdel", "qconf")
    required_commands = ("qsub", "qstat", "qdel")
    transient_errors = TRANSIENT_ERRORS
    settings = (
        Setting("queue", STRING, None, "SGE queue (qsub -q)"),
        Setting("resources", TABLE, None, "SGE resources, each becomes -l key=value"),
        Setting("parallel_environment", PARALLEL_ENVIRONMENT, None, "SGE parallel "
                "environment [name, slots] (qsub -pe name slots)"),
        Setting("qsub_args", STRING_LIST, [], "more qsub arguments, passed as they are"),
        *CommandLineScheduler.settings,
    )
    extra_arguments_option = "qsub_args"
    query_command = "qstat"

    def __init__(
        self,
        max_running: int | None = None,
        *,
        queue: str | None = None,
        resources: dict[str, Any] | None = None,
        parallel_environment: tuple[str, int] | None = None,
        qsub_args: Sequence[str] = (),
        error_state_indicator: str = "E",
        commands: dict[str, Sequence[str]] | None = None,
        **common: Any,
    ) -> None:
        """``common``: what every command line backend takes (call_timeout,
        time_escalation, memory_escalation, max_memory)."""
        super().__init__(max_running, commands, **common)
        if not isinstance(error_state_indicator, str) or not error_state_indicator:
            raise InvalidInputError(
                f"error_state_indicator must be a letter of SGE's job states (e.g. 'E'), "
                f"not {error_state_indicator!r}")
        self.error_state_indicator = error_state_indicator
        self.queue = queue
        self.resources = dict(resources or {})
        self.parallel_environment = parallel_environment
        self.read_limits()
        self.extra_args = self.argument_list(qsub_args, "['-P', 'project']", RESERVED)

    #: a bare memory number counts in bytes
    memory_unit = 1

    def with_resources(self, resources: Mapping[str, Any]) -> SunGridEngine:
        """A copy asking for ``resources`` on top of the pool's: ``time`` (``h_rt``),
        ``memory`` (``h_vmem``), ``cpus`` (slots of the pool's parallel environment),
        ``queue`` (``-q``), and any of SGE's own resources by name (``-l name=value``)."""
        if not resources:
            return self
        changed = copy.copy(self)
        changed.resources = dict(self.resources)
        for name, value in resources.items():
            if name == "queue":
                changed.queue = str(value)
            elif name == "cpus":
                if self.parallel_environment is None or not (
                        isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                    raise InvalidInputError(
                        f"resources={{'cpus': {value!r}}}: SGE gives a job several slots "
                        f"through a parallel environment; give the pool one "
                        f"(parallel_environment=('smp', 1)) and cpus as an int >= 1.")
                changed.parallel_environment = (self.parallel_environment[0], value)
            elif name == "gpus":
                raise InvalidInputError(
                    "resources={'gpus': ...}: SGE has no standard GPU resource; give your "
                    "site's by its name, e.g. resources={'gpu': 1} (qsub -l gpu=1).")
            else:
                key = {"time": "h_rt", "memory": "h_vmem"}.get(name, name)
                if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not (
                        re.fullmatch(r"[A-Za-z_][\w.]*", key)):
                    raise InvalidInputError(
                        f"resources={{{name!r}: {value!r}}}: SGE takes -l name=value, e.g. "
                        f"{{'h_rt': '1:00:00', 'h_vmem': '4G'}}.")
                changed.resources[key] = value
        changed.read_limits()
        return changed

    def read_limits(self) -> None:
        """What the engine and the workers need of :attr:`resources`: the time limit
        in seconds and the memory asked for (the first memory resource given)."""
        self.time_limit_seconds = sge_time_limit(self.resources)
        self.asked_memory = next((str(self.resources[key]) for key in MEMORY_RESOURCES
                                  if key in self.resources), None)
        self.cpus_per_worker = (1 if self.parallel_environment is None
                                else int(self.parallel_environment[1]))

    @property
    def resource_args(self) -> list[str]:
        """The resources every job of the pool asks for, and the extra arguments."""
        return self.resource_arguments(OWN)

    def resource_arguments(self, steps: Steps) -> list[str]:
        """The resources of a job raised by ``steps`` (poolparty.escalation): every
        time limit (h_rt, s_rt) and memory request (h_vmem, mem_free, ...) given."""
        arguments = ["-q", self.queue] if self.queue else []
        for key, value in self.resources.items():
            if steps.time and key in TIME_RESOURCES and self.time_limit_seconds:
                factor = (self.time_limit_for(steps) or 0) / self.time_limit_seconds
                seconds = sge_time_limit({key: value})
                value = value if seconds is None else clock_time(seconds * factor)
            elif steps.memory and key in MEMORY_RESOURCES:
                value = scaled_memory(str(value), self.memory_escalation ** steps.memory,
                                      self.memory_unit, self.max_memory)
            arguments += ["-l", f"{key}={value}"]
        if self.parallel_environment is not None:
            pe_name, slots = self.parallel_environment
            arguments += ["-pe", str(pe_name), str(slots)]
        return arguments + self.extra_args

    @classmethod
    def found_here(cls) -> bool:
        """An SGE qsub and qstat on PATH. PBS/Torque ship a ``qsub`` too, so SGE is
        recognised by what ``qstat -help`` says."""
        if not (shutil.which("qsub") and shutil.which("qstat")):
            return False
        help_text = what_command_says(["qstat", "-help"])
        if is_sun_grid_engine(help_text):
            log.info("Sun Grid Engine found (%s): running on SGE array jobs",
                     help_text.splitlines()[0].strip())
            return True
        log.info("a qsub was found but it is not Sun Grid Engine's (PBS/Torque?): not used")
        return False

    @property
    def max_aj_tasks(self) -> int:
        """The cluster's max_aj_tasks, asked once; SGE's default if it can't be read."""
        return self.limit_read_once("max_aj_tasks", "qconf", ["-sconf"], parse_max_aj_tasks,
                                    DEFAULT_MAX_AJ_TASKS)

    def limits(self) -> dict[str, str]:
        return {"tasks per array job (max_aj_tasks)": str(self.max_aj_tasks)}

    def check_work_dir(self, root: Path) -> None:
        """The work_dir holds the logs (-o); the current directory is the jobs' -wd,
        where qsub replaces $HOME and the like too."""
        refuse_characters(root, UNUSABLE, "qsub in -o")
        refuse_characters(Path.cwd(), UNUSABLE_WD, "qsub in -wd", "the current directory",
                          "Run from a directory whose path has none of them.")

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """One array job per contiguous run of chunk ids (task ``i`` runs chunk
        ``base + i``)."""
        throttle = ["-tc", str(self.max_running)] if self.max_running else []
        plan = []
        for run in contiguous_runs(chunk_ids, self.max_aj_tasks):
            base = run.start - 1
            argv = [
                "-terse", "-N", self.job_name(work_dir), "-o",
                f"{work_dir.logs_dir}/$JOB_ID.$TASK_ID.log", "-j", "y", "-V", "-S", "/bin/sh",
                "-wd", os.getcwd(), "-t", f"1-{len(run)}", *throttle,
                *self.resource_arguments(steps),
                str(work_dir.script_path), *self.worker_arguments(steps),
                "--array", str(base), "SGE_TASK_ID",
            ]
            plan.append(self.submission("qsub", argv, {chunk: chunk - base for chunk in run},
                                        "{job_id}.{index}.log"))
        return plan

    def job_id_of(self, output: str) -> str:
        """``-terse`` prints ``ID`` for a job, ``ID.1-5:1`` for an array."""
        return output.strip().split(".")[0]

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        name = self.job_name(work_dir)
        jobs = self.listed_jobs("qstat", ["-xml"], lambda text: parse_qstat_xml(
            text, name, self.error_state_indicator))
        return states_of_chunks(work_dir, jobs)

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        self.cancel_ids("qdel", self.job_ids_of_chunks(
            work_dir, chunk_ids, lambda job_id, index: f"{job_id}.{index}"))


def is_sun_grid_engine(qstat_help: str) -> bool:
    """PBS/Torque ship a ``qsub`` too: SGE says so in the first line of ``qstat -help``
    (``SGE 8.1.9``, ``GE 2011.11``, ``OGS/GE ...``)."""
    first_line = qstat_help.strip().splitlines()[0] if qstat_help.strip() else ""
    return bool(re.match(r"^(SGE|GE|OGS|UGE|Univa|Son of Grid Engine)\b", first_line))


def __getattr__(name: str) -> Any:
    """``Pool``: pypoolparty's ``sun_grid_engine.Pool`` constructor, change the import
    only (:class:`poolparty.predecessor.SunGridEnginePool`)."""
    return scheduler.predecessor_attribute(__name__, name)


def sge_time_limit(resources: dict[str, Any]) -> float | None:
    """The run time SGE gives each job, from ``h_rt`` (or ``s_rt``): ``hh:mm:ss`` or a
    number of seconds (SGE reads a bare number as seconds, unlike SLURM)."""
    for key in ("h_rt", "s_rt"):
        value = str(resources.get(key, "")).strip()
        if value.isdigit():
            return float(value)
        if value.count(":") == 2:
            return duration_seconds(value)
    return None
