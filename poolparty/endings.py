"""How a worker's job ended, told apart: the classes a user needs to act on.

A job that left the queue without its result was cancelled, hit its time limit, ran out
of memory, was preempted, lost its node, or found no working python on the node; each
calls for something else (a longer time, more memory, nothing at all, a fix of the
environment), and the user must be told which. The sources, most trusted first:

1. what the worker and its shell wrote (poolparty.crashes: the signal that killed it,
   and the task it was running; the worker's note that its job's time limit was 2 s
   away, or that a task ran out of the job's address space);
2. what the scheduler showed (a job pending again after running was requeued);
3. what the scheduler wrote into the job's log: slurmstepd writes
   ``*** JOB 12 ON node CANCELLED AT 2026-12-06T20:00:00 DUE TO TIME LIMIT ***`` (or
   ``DUE TO PREEMPTION``, ``DUE TO JOB REQUEUE``, ``DUE TO NODE FAILURE``, nothing for
   a plain scancel), and
   ``Exceeded job memory limit`` or ``oom_kill event`` for memory; PBS writes
   ``=>> PBS: job killed: walltime 65 exceeded limit 60``, LSF ``TERM_RUNLIMIT: job
   killed after reaching LSF run time limit.`` and the like; the shell writes
   ``No module named`` or ``not found`` when the node's python is not the client's.

Accounting (sacct, qacct) is not asked: it is not always there, and may be slow.
"""

from __future__ import annotations

import enum
import re


class Ending(enum.Enum):
    """One class of ending, with the words the user reads."""

    TIME_LIMIT = "its job reached its time limit"
    OUT_OF_MEMORY = "its job ran out of memory"
    PREEMPTED = "its job was preempted or requeued by the scheduler"
    NODE_FAILURE = "its job's node failed"
    CANCELLED = "its job was cancelled by someone else (scancel, qdel, bkill)"
    ENVIRONMENT = "the node could not start the worker (python or a module missing)"
    CRASHED = "its worker's process died"
    LOST = "its job left the queue without a result, and without a sign why"

    @property
    def counts_against_the_limit(self) -> bool:
        """Whether losing a claim this way counts against ``max_num_resubmissions``:
        not for a preemption or a node lost, which say nothing of the chunk (they are
        bounded apart, so that a flapping node can't loop for ever)."""
        return self not in (Ending.PREEMPTED, Ending.NODE_FAILURE)


#: how many claims a chunk may lose to preemptions and failed nodes, apart from
#: max_num_resubmissions
MAX_FREE_REOPENINGS = 10

_SLURM_CANCELLED = re.compile(
    rb"\*\*\* (?:JOB|STEP) [\d.]+ ON \S+ CANCELLED AT \S+(?: DUE TO ([A-Z ]+?))?(?: \*\*\*|$)",
    re.MULTILINE)
_SLURM_REASONS = {
    b"TIME LIMIT": Ending.TIME_LIMIT,
    b"PREEMPTION": Ending.PREEMPTED,
    b"JOB REQUEUE": Ending.PREEMPTED,  # scontrol requeue (captured on the test SLURM)
    b"NODE FAILURE": Ending.NODE_FAILURE,
}
#: what PBS (MoM: "=>> PBS: job killed: walltime 65 exceeded limit 60"; Torque writes it
#: without the arrow) and LSF (the job report's termination reason, TERM_RUNLIMIT and the
#: like, from IBM's "Termination reasons displayed by bacct, bhist, and bjobs") write
#: into a job's output when they end it
_OTHER_REASONS = (
    (re.compile(rb"PBS: job killed: walltime \d+ exceeded limit"), Ending.TIME_LIMIT),
    (re.compile(rb"PBS: job killed: p?v?mem \d+\w* exceeded limit"), Ending.OUT_OF_MEMORY),
    (re.compile(rb"^TERM_RUNLIMIT\b", re.MULTILINE), Ending.TIME_LIMIT),
    (re.compile(rb"^TERM_(?:MEMLIMIT|SWAP)\b", re.MULTILINE), Ending.OUT_OF_MEMORY),
    (re.compile(rb"^TERM_(?:PREEMPT|REQUEUE_OWNER|REQUEUE_ADMIN)\b", re.MULTILINE),
     Ending.PREEMPTED),
    (re.compile(rb"^TERM_(?:FORCE_)?(?:OWNER|ADMIN)\b", re.MULTILINE), Ending.CANCELLED),
)
_OUT_OF_MEMORY = re.compile(
    rb"Exceeded (?:job|step) memory limit|exceeded memory limit|oom[-_]kill|"
    rb"Out of memory: Killed process|^poolparty worker: out of memory:",
    re.IGNORECASE | re.MULTILINE)
#: poolparty.worker.TIME_LIMIT_LINE
_TIME_LIMIT_NEAR = b"poolparty worker: its job's time limit"
_ENVIRONMENT = re.compile(
    rb"No module named '?(?:poolparty|cloudpickle)|"
    rb"(?:python[\w.]*|\S*/python[\w.]*): (?:command )?not found|"
    rb"(?:python[\w.]*|\S*/python[\w.]*): No such file or directory|"
    rb"cannot execute: required file not found")


def ending_in_log(log: bytes, worker_started: bool) -> Ending | None:
    """The class of ending a job's log shows, or None (no sign). ``worker_started``:
    the worker wrote its first event (then python and poolparty were there).

    A reason slurmstepd gives comes first, then one PBS or LSF gives; then memory
    (SLURM cancels a job over its memory with a plain cancel line after saying why);
    then a plain cancel; then the worker's own note that its time limit came (SGE ends
    such a job without a word)."""
    reasons = [match.group(1) for match in _SLURM_CANCELLED.finditer(log)]
    if reasons and reasons[-1]:
        return _SLURM_REASONS.get(reasons[-1], Ending.CANCELLED)
    for pattern, ending in _OTHER_REASONS:
        if pattern.search(log):
            return ending
    if _OUT_OF_MEMORY.search(log):
        return Ending.OUT_OF_MEMORY
    if reasons:
        return Ending.CANCELLED
    if _TIME_LIMIT_NEAR in log:
        return Ending.TIME_LIMIT
    if not worker_started and _ENVIRONMENT.search(log):
        return Ending.ENVIRONMENT
    return None


def describe(ending: Ending, detail: str = "") -> str:
    """The sentence for the error and the log: the class, then what showed it."""
    return ending.value + (f" ({detail})" if detail else "")
