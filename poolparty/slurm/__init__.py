"""SLURM: what every SLURM backend shares (commands, squeue parsing, states, resources).

A SLURM backend is argv builders plus pure parsers, tested on output captured from a
real SLURM in tests/data/. All commands go through :func:`run_command`.

``poolparty.slurm.array.Pool`` submits one job array per round (the fast default).
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import scheduler
from ..errors import InvalidInputError, SchedulerCommandError
from ..escalation import OWN, Steps, clock_time, duration_seconds, memory_bytes
from ..ranges import expand_ranges
from ..scheduler import (
    CommandLineScheduler,
    QueuedJob,
    State,
    refuse_characters,
    states_of_chunks,
)
from ..settings import INT_OR_STRING, POSITIVE_INT, STRING, STRING_LIST, Setting
from ..work_dir import WorkDir

if TYPE_CHECKING:
    from ..scheduler import Submission

log = logging.getLogger("poolparty")

#: squeue's states, as the engine needs to see them. Plain squeue lists only pending,
#: running and completing jobs (a finished or failed job just disappears and is found
#: missing); the terminal states are mapped for squeue variants and --states callers.
STATES: dict[str, State] = {
    "PENDING": State.PENDING,
    "REQUEUED": State.PENDING,
    "REQUEUE_HOLD": State.PENDING,
    "REQUEUE_FED": State.PENDING,
    # suspended (preemption by suspension, scontrol suspend): it keeps its claim and
    # goes on where it stopped; taken for pending it would look requeued
    "SUSPENDED": State.RUNNING,
    "STOPPED": State.RUNNING,
    "RESV_DEL_HOLD": State.PENDING,
    "CONFIGURING": State.RUNNING,
    "RUNNING": State.RUNNING,
    "COMPLETING": State.RUNNING,
    "COMPLETED": State.RUNNING,  # its result file is about to be (or already) there
    "RESIZING": State.RUNNING,
    "SIGNALING": State.RUNNING,
    "STAGE_OUT": State.RUNNING,
    "CANCELLED": State.ERROR,
    "FAILED": State.ERROR,
    "TIMEOUT": State.ERROR,
    "NODE_FAIL": State.ERROR,
    "BOOT_FAIL": State.ERROR,
    "OUT_OF_MEMORY": State.ERROR,
    "DEADLINE": State.ERROR,
    "PREEMPTED": State.ERROR,
    "SPECIAL_EXIT": State.ERROR,
}

#: Pending reasons that mean "this will never run by itself".
ERROR_REASONS = ("launch failed requeued held", "JobHoldMaxRequeue")

#: sbatch options poolparty sets and sbatch_args may not: where the output goes, the name
RESERVED = ("--output", "--error", "--open-mode", "--job-name", "-o", "-e", "-J")
#: stderr of a SLURM command that is worth retrying: the controller is busy or away.
TRANSIENT_ERRORS = re.compile(
    r"timed out|time out|timeout|unable to contact|connection refused|try again|"
    r"temporarily|slurm_load_jobs error|controller|communication|socket|"
    r"resource temporarily unavailable|busy",
    re.IGNORECASE,
)

SQUEUE_FORMAT = "%i|%T|%r"

#: what sbatch makes of characters in an --output path that ``%%`` can't escape
UNESCAPABLE = {"\\": "turns off all of its % patterns, %j and %a too"}

_warned_states: set[str] = set()

#: the options of every SLURM backend that a configuration may set
SETTINGS = (
    Setting("partition", STRING, None, "SLURM --partition"),
    Setting("time", STRING, None, "SLURM --time, e.g. '1:00:00'"),
    Setting("memory", STRING, None, "SLURM --mem, e.g. '2G'"),
    Setting("cpus_per_task", POSITIVE_INT, None, "SLURM --cpus-per-task"),
    Setting("gpus", INT_OR_STRING, None, "SLURM --gpus, e.g. 1 or 'a100:2'"),
    Setting("sbatch_args", STRING_LIST, [], "more sbatch arguments, passed as they are"),
)


def parse_squeue(text: str) -> list[QueuedJob]:
    """Parse ``squeue --noheader --array --format=%i|%T|%r``.

    ``%i`` is ``JOBID`` or ``JOBID_INDEX``; an array not yet split shows as
    ``JOBID_[3-9%2]`` and is expanded. Unknown states are logged once and taken as
    RUNNING: leaving a job alone is the safe mistake.
    """
    jobs = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0]:
            continue
        job_text, state_text = fields[0], fields[1].strip()
        reason = fields[2].strip() if len(fields) > 2 else ""
        state = _state_of(state_text, reason)
        job_id, _, index_text = job_text.partition("_")
        if not index_text:
            jobs.append(QueuedJob(job_id, None, state))
        elif index_text.startswith("["):
            jobs.extend(QueuedJob(job_id, i, state) for i in expand_ranges(index_text))
        else:
            jobs.append(QueuedJob(job_id, int(index_text), state))
    return jobs


def _state_of(state_text: str, reason: str) -> State:
    base = state_text.split()[0].rstrip("+") if state_text else ""
    if any(error_reason in reason for error_reason in ERROR_REASONS):
        return State.ERROR
    if base not in STATES:
        if base not in _warned_states:
            _warned_states.add(base)
            log.warning("unknown SLURM job state %r: treating it as running", base)
        return State.RUNNING
    return STATES[base]


def output_option(work_dir: WorkDir, pattern: str) -> str:
    """``--output=<logs dir>/<pattern>``: sbatch expands ``%`` patterns (``%u``, ``%j``)
    anywhere in the path, so every ``%`` of the directory is written ``%%``."""
    return f"--output={str(work_dir.logs_dir).replace('%', '%%')}/{pattern}"


def parse_max_array_size(text: str, default: int = 1001) -> int:
    """MaxArraySize from ``scontrol show config``: array indices must stay below it."""
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(match.group(1)) if match else default


def parse_max_time(text: str, partition: str | None) -> float | None:
    """MaxTime of ``partition`` (None: the default one) in ``scontrol show partition``
    output, in seconds; None when UNLIMITED or not found."""
    for block in re.split(r"\n\s*\n", text):
        name = re.search(r"PartitionName=(\S+)", block)
        if name is None or (partition is None and "Default=YES" not in block) or (
                partition is not None and name.group(1) != partition):
            continue
        limit = re.search(r"MaxTime=(\S+)", block)
        return None if limit is None else duration_seconds(limit.group(1))
    return None


def check_resource(option: str, value: Any) -> Any:
    """A value of sbatch's ``--<option>``, or InvalidInputError in sbatch's words."""
    valid = {
        "time": lambda v: isinstance(v, (str, int)) and duration_seconds(str(v)) is not None,
        "mem": lambda v: isinstance(v, (str, int)) and memory_bytes(v, 2**20) is not None,
        "cpus-per-task": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "gpus": lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
        or (isinstance(v, str) and bool(v.strip())),
        "partition": lambda v: isinstance(v, str) and bool(v.strip()),
    }
    examples = {"time": "'1:30:00' or 90 (minutes)", "mem": "'4G' or '500M'",
                "cpus-per-task": "4", "gpus": "1 or 'a100:2'", "partition": "'gpu'"}
    if not valid[option](value):
        raise InvalidInputError(f"--{option}={value!r} is not something sbatch takes: give "
                                f"e.g. {examples[option]}.")
    return str(value)


def cluster_arguments(clusters: str | Sequence[str] | None) -> list[str]:
    """``--clusters=NAME`` for every SLURM command, or nothing.

    One cluster only: with several, SLURM picks one per job and job ids are unique only
    within a cluster, so the pool could not tell which job a squeue line or a scancel
    means. pypoolparty's ``clusters=["name"]`` is the usual use."""
    if clusters is None:
        return []
    names = list(clusters) if isinstance(clusters, (list, tuple)) else [clusters]
    if len(names) != 1 or not isinstance(names[0], str) or not names[0] or "," in names[0]:
        raise InvalidInputError(
            f"clusters must name one SLURM cluster (e.g. 'gpu' or ['gpu']), not {clusters!r}: "
            "poolparty submits a map's jobs to one cluster.")
    return [f"--clusters={names[0]}"]


class SlurmBase(CommandLineScheduler):
    """Resources, sbatch, and the squeue/scancel half shared by the SLURM backends.

    ``sbatch_args`` are passed to every sbatch as they are (e.g. ``["--qos=long"]``).
    ``clusters`` (pypoolparty's option, SLURM's ``--clusters``; needs SlurmDBD) sends
    every command (sbatch, squeue, scancel, scontrol) to that one cluster.
    """

    name = "slurm"
    default_max_running = 8
    command_names = ("sbatch", "squeue", "scancel", "scontrol")
    required_commands = ("sbatch", "squeue", "scancel")
    transient_errors = TRANSIENT_ERRORS
    settings = (*SETTINGS, *CommandLineScheduler.settings)
    extra_arguments_option = "sbatch_args"
    query_command = "squeue"
    # slurmstepd's "error: *** JOB 12 ON node CANCELLED AT 2026-12-06T00:22:53 ***"
    # (STEP for a job step; "DUE TO TIME LIMIT" and the like are kept: they explain)
    own_log_line = re.compile(
        rb"slurmstepd(-\S*)?: error: \*\*\* (JOB|STEP) \S+ (ON \S+ )?CANCELLED AT \S+ \*\*\*")

    def __init__(
        self,
        max_running: int | None = None,
        *,
        partition: str | None = None,
        time: str | None = None,
        memory: str | None = None,
        cpus_per_task: int | None = None,
        gpus: int | str | None = None,
        sbatch_args: Sequence[str] = (),
        clusters: str | Sequence[str] | None = None,
        commands: dict[str, Sequence[str]] | None = None,
        **common: Any,
    ) -> None:
        """``common``: what every command line backend takes (call_timeout,
        time_escalation, memory_escalation, max_memory)."""
        super().__init__(max_running, commands, **common)
        self.cluster_args = cluster_arguments(clusters)
        self.partition = partition
        self.resources = {
            "partition": partition, "time": time, "mem": memory,
            "cpus-per-task": cpus_per_task, "gpus": gpus,
        }
        self.read_limits()
        self.extra_args = self.argument_list(sbatch_args, "['--qos=long']", RESERVED,
                                             attached_values=True)

    def read_limits(self) -> None:
        """What the engine and the workers need of :attr:`resources`: the time and
        memory asked for, and the time limit in seconds (SLURM reads a bare number as
        minutes, as duration_seconds does); the partition's MaxTime is asked again."""
        self.asked_time, self.asked_memory = self.resources["time"], self.resources["mem"]
        self.time_limit_seconds = (None if self.asked_time is None
                                   else duration_seconds(self.asked_time))
        self.partition = self.resources["partition"]
        self.cpus_per_worker = int(self.resources["cpus-per-task"] or 1)
        self._max_time: tuple[float | None] | None = None

    #: the names ``resources=`` takes for a map: the pool's option names and sbatch's
    RESOURCE_NAMES = {"time": "time", "memory": "mem", "mem": "mem", "cpus": "cpus-per-task",
                      "cpus_per_task": "cpus-per-task", "cpus-per-task": "cpus-per-task",
                      "gpus": "gpus", "partition": "partition"}

    def with_resources(self, resources: Mapping[str, Any]) -> SlurmBase:
        """A copy asking for ``resources`` (time, memory, cpus, gpus, partition) on top
        of the pool's; each checked as sbatch would."""
        if not resources:
            return self
        changed = copy.copy(self)
        changed.resources = dict(self.resources)
        for name, value in resources.items():
            option = self.RESOURCE_NAMES.get(name)
            if option is None:
                raise InvalidInputError(
                    f"resources={{{name!r}: ...}}: SLURM takes time, memory, cpus, gpus and "
                    f"partition per map (sbatch's --time, --mem, --cpus-per-task, --gpus, "
                    f"--partition). Other sbatch options go in sbatch_args of the Pool.")
            changed.resources[option] = check_resource(option, value)
        changed.read_limits()
        return changed

    @property
    def resource_args(self) -> list[str]:
        """The resources every job of the pool asks for, and the extra arguments."""
        return self.resource_arguments(OWN)

    def resource_arguments(self, steps: Steps) -> list[str]:
        """The resources of a job raised by ``steps`` (poolparty.escalation)."""
        resources = dict(self.resources)
        if steps.time and self.time_limit_seconds is not None:
            resources["time"] = clock_time(self.time_limit_for(steps) or 0)
        if steps.memory:
            resources["mem"] = self.memory_for(steps)
        return [f"--{k}={v}" for k, v in resources.items() if v is not None] + self.extra_args

    def max_time_seconds(self) -> float | None:
        """The partition's MaxTime (asked once; None when unlimited or not known)."""
        if self._max_time is None:
            arguments = ["show", "partition", *([self.partition] if self.partition else [])]
            try:
                text = self.run("scontrol", arguments)
            except SchedulerCommandError as error:
                log.info("could not read the partition's MaxTime: %s", error)
                text = ""
            self._max_time = (parse_max_time(text, self.partition),)
        return self._max_time[0]

    def argv(self, name: str, arguments: Sequence[str]) -> list[str]:
        """Every SLURM command goes to the chosen cluster (its options come first)."""
        return super().argv(name, [*self.cluster_args, *arguments])

    def check_work_dir(self, root: Path) -> None:
        refuse_characters(root, UNESCAPABLE, "sbatch in --output")

    def sbatch(self, work_dir: WorkDir, options: Sequence[str], script_args: Sequence[str],
               chunks: dict[int, int | None], log_pattern: str, steps: Steps) -> Submission:
        """One sbatch of the job script, named as every job of the map."""
        argv = [
            "--parsable", f"--job-name={self.job_name(work_dir)}", *options,
            *self.resource_arguments(steps), str(work_dir.script_path),
            *self.worker_arguments(steps), *script_args,
        ]
        return self.submission("sbatch", argv, chunks, log_pattern)

    def job_id_of(self, output: str) -> str:
        """``--parsable`` prints ``ID`` or ``ID;cluster``."""
        return output.strip().split(";")[0]

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        text = self.run("squeue", [
            "--noheader", "--array", "--me", f"--name={self.job_name(work_dir)}",
            f"--format={SQUEUE_FORMAT}",
        ])
        return states_of_chunks(work_dir, parse_squeue(text))

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        self.cancel_ids("scancel", self.job_ids_of_chunks(
            work_dir, chunk_ids, lambda job_id, index: f"{job_id}_{index}"))


class SlurmJobs(SlurmBase):
    """One ``sbatch`` per chunk, for clusters where job arrays are disabled or capped.

    Still one squeue call per poll for every job of the map (they share a job name).
    The engine never queues more workers than the pool's processes, so no throttle is
    needed.
    """

    name = "slurm"

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        output = output_option(work_dir, "%j.log")
        return [self.sbatch(work_dir, [output], [str(chunk_id)], {chunk_id: None}, "{job_id}.log",
                            steps)
                for chunk_id in chunk_ids]


def __getattr__(name: str) -> Any:
    """``Pool``: pypoolparty's ``slurm.Pool`` (:class:`poolparty.predecessor.SlurmJobsPool`).

    ``array``: the submodule, imported when first asked for, so that ``import
    poolparty.slurm`` is enough for ``poolparty.slurm.array.Pool`` (as pypoolparty
    allowed) without this module importing the one that imports it.
    """
    if name == "array":
        return importlib.import_module(f"{__name__}.array")
    return scheduler.predecessor_attribute(__name__, name)
