"""What every dummy command does around its own work: ``--queue``, faults, history.

Each CLI module supplies two functions, ``parse(argv)`` and
``act(queue_dir, request) -> stdout text``; ``run_command`` wires them to
the call counting and fault injection that tests rely on, so those behave
identically for every scheduler's commands.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

from ._state import transaction

Request = TypeVar("Request")

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "scontrol")
SGE_COMMANDS = ("qsub", "qstat", "qdel", "qconf")
PBS_COMMANDS = ("qsub", "qstat", "qdel", "qmgr")
LSF_COMMANDS = ("bsub", "bjobs", "bkill", "badmin")
#: each scheduler's commands -> the dummy module that plays it (PBS's qsub, qstat and
#: qdel share their names with SGE's, so theirs are modules of their own)
MODULES = {
    "slurm": {command: command for command in SLURM_COMMANDS},
    "sge": {command: command for command in SGE_COMMANDS},
    "pbs": {command: f"pbs_{command}" for command in PBS_COMMANDS},
    "lsf": {command: command for command in LSF_COMMANDS},
}
#: every command name a fault may be injected into
COMMANDS = tuple(dict.fromkeys(SLURM_COMMANDS + SGE_COMMANDS + PBS_COMMANDS + LSF_COMMANDS))

# What each SLURM command was doing when the controller stopped answering.
_SLURM_FAILED_CALL = {
    "sbatch": "Batch job submission failed",
    "squeue": "slurm_load_jobs error",
    "scancel": "Kill job error",
    "scontrol": "slurm_load_ctl_conf error",
}
_SGE_TIMEOUT = (
    "error: failed receiving gdi request response for mid=1 "
    "(got syncron message receive timeout error)."
)
# PBS's and LSF's words when their server does not answer (PBS Professional's
# "pbs_errno 15010"-style failures; LSF's "batch system daemon not responding").
_PBS_TIMEOUT = "{command}: cannot connect to server pbs-server (errno=15010)"
_LSF_TIMEOUT = ("LSF daemon (LIM) not responding ... still trying\n"
                "batch system daemon not responding")


class CommandError(Exception):
    """A failure reported on stderr, worded like the real command, with exit code 1.

    ``stdout`` is what the command still printed, e.g. the jobs qdel did delete.
    """

    def __init__(self, message: str, stdout: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout


class ArgumentParser(argparse.ArgumentParser):
    """argparse that rejects bad arguments with exit code 1, as the real CLIs do.

    No ``-h``: squeue uses it for ``--noheader``, and the real commands'
    help is not what a dummy is for.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog=prog, add_help=False, allow_abbrev=False)

    def error(self, message: str) -> NoReturn:
        raise CommandError(f"{self.prog}: error: {message}")


@dataclass
class Fault:
    """The faults injected for one call, already taken off the state."""

    fail: bool = False
    empty: bool = False
    hang: float = 0.0


def run_command(
    command: str,
    argv: Sequence[str] | None,
    parse: Callable[[list[str]], Request],
    act: Callable[[Path, Request], str],
    scheduler: str | None = None,
) -> int:
    """Run one dummy command and return its exit code.

    Arguments are checked before the "controller" is contacted, so a
    malformed call neither counts in the history nor consumes a fault.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        queue_dir, rest = split_queue_option(command, args)
        request = parse(rest)
        fault = _record_call(queue_dir, command)
        if fault.hang:
            time.sleep(fault.hang)
        if fault.fail:
            raise CommandError(_failure_message(command, scheduler))
        if fault.empty:
            return 0
        sys.stdout.write(act(queue_dir, request))
    except CommandError as error:
        sys.stdout.write(error.stdout)
        sys.stdout.flush()
        print(error, file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


def split_queue_option(command: str, argv: list[str]) -> tuple[Path, list[str]]:
    """Take the leading ``--queue DIR`` (or ``--queue=DIR``) off the arguments.

    It must come first so that it can never be mistaken for an argument of
    the real command, or of the job script.
    """
    if argv[:1] == ["--queue"] and len(argv) >= 2:
        return Path(argv[1]).absolute(), argv[2:]
    if argv and argv[0].startswith("--queue="):
        return Path(argv[0].removeprefix("--queue=")).absolute(), argv[1:]
    raise CommandError(f"{command}: error: the dummy needs --queue DIR as its first option")


def _record_call(queue_dir: Path, command: str) -> Fault:
    """Count the call and take the faults injected for it, in one transaction."""
    with transaction(queue_dir) as state:
        state["history"][command] = state["history"].get(command, 0) + 1
        faults = state["faults"]
        fault = Fault(fail=_take(faults["fail"], command), empty=_take(faults["empty"], command))
        hang = faults["hang"].get(command)
        if hang:
            fault.hang, count = hang
            if count > 1:
                faults["hang"][command] = [fault.hang, count - 1]
            else:
                del faults["hang"][command]
    return fault


def _take(counts: dict[str, int], command: str) -> bool:
    """Use up one of the remaining injected calls of ``command``, if any."""
    left = counts.pop(command, 0)
    if left > 1:
        counts[command] = left - 1
    return left > 0


def _failure_message(command: str, scheduler: str | None = None) -> str:
    """The stderr of a command whose controller timed out (``scheduler``: whose
    command it is, where the name alone does not say: PBS's qsub)."""
    if scheduler == "pbs":
        return _PBS_TIMEOUT.format(command=command)
    if scheduler == "lsf" or command in LSF_COMMANDS:
        return _LSF_TIMEOUT
    if command in SLURM_COMMANDS:
        what = _SLURM_FAILED_CALL[command]
        return f"{command}: error: {what}: Socket timed out on send/recv operation"
    return _SGE_TIMEOUT

