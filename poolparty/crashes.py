"""Telling a task that killed its worker from a job that was lost.

A job that left the queue without a result was either lost (cancelled, its node
failed: worth resubmitting) or its worker's process died in a task (``os._exit``, a
segfault, the out-of-memory killer: rerunning it may only repeat that). The job's log
tells them apart: the worker writes ``poolparty-task: <index>`` before each task (after
its ``chunk_started`` event) and ``chunk_finished`` after the last, and job.sh, the shell
around the worker, writes how the worker ended. A log with the worker started, not
finished, and job.sh's line is a crash, in the last task noted (or before the first).

Reading such a log is a positive signal: the line is written by the job's shell once
the worker is gone, so the client need not wait for more polls. Its absence proves
nothing (a job killed as a whole leaves no line; NFS may show the log late): such a
chunk follows the rules for lost jobs.
"""

from __future__ import annotations

import re
import signal as signals
from dataclasses import dataclass

from .events import FINISHED, STARTED, TASK_MARK
from .work_dir import WorkDir

#: what job.sh writes once the worker ended (see WorkDir.write_job_script)
_ENDING = re.compile(rb"poolparty: the worker (was killed by signal|exited with status) (\d+)$",
                     re.MULTILINE)
_TASK = re.compile(re.escape(TASK_MARK) + rb"(\d+)$", re.MULTILINE)
#: why a process gets these signals, as the user should read it
_HINTS = {
    signals.SIGKILL: "as the out-of-memory killer or a scheduler's limit does",
    signals.SIGSEGV: "a segmentation fault: an invalid memory access, usually in C code",
    signals.SIGABRT: "an abort(): usually a failed assertion in C code",
    signals.SIGBUS: "a bus error: an invalid memory access, usually in C code",
}


@dataclass(frozen=True)
class Crash:
    """How a worker's process ended in the middle of its chunk."""

    #: the task it was running (input position); None: before its first task
    task: int | None
    signal: int | None = None
    status: int | None = None

    @property
    def how(self) -> str:
        """``was killed by signal 11 (SIGSEGV), why...`` or ``exited with status 1``."""
        if self.signal is None:
            return f"exited with status {self.status}"
        try:
            name = f" ({signals.Signals(self.signal).name})"
        except ValueError:
            name = ""
        hint = _HINTS.get(self.signal)
        return f"was killed by signal {self.signal}{name}" + (f", {hint}" if hint else "")

    @property
    def ending(self) -> str:
        """How the submission ended, for the list of submissions in an error."""
        where = "before its first task" if self.task is None else f"in task {self.task}"
        return f"its worker's process died {where}: it {self.how}"


def crash_in_log(log: bytes) -> Crash | None:
    """The crash a job's log records, or None (no record: finished, lost, or not yet)."""
    if STARTED not in log or FINISHED in log:
        return None
    endings = _ENDING.findall(log)
    if not endings:
        return None
    kind, number = endings[-1]
    tasks = _TASK.findall(log)
    task = int(tasks[-1]) if tasks else None
    if kind.startswith(b"was killed"):
        return Crash(task, signal=int(number))
    return Crash(task, status=int(number))


def newest_log(work_dir: WorkDir, chunk_id: int) -> bytes:
    """The log of the chunk's newest job, or b"" (none yet, or not readable)."""
    refs = work_dir.jobs_of_chunk(chunk_id)
    if not refs:
        return b""
    try:
        return (work_dir.logs_dir / refs[-1].log_name).read_bytes()
    except OSError:
        return b""

