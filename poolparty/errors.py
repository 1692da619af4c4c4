"""The exceptions poolparty raises.

A caller sees three kinds of failure, and each has its own branch so it can be caught
on its own::

    PoolpartyError                   base of everything raised by poolparty itself
    ├── InvalidInputError            bad arguments, detected before anything is submitted
    │   ├── InvalidOptionError       an unknown option, or a value of the wrong type
    │   │                            (also a TypeError, as an unexpected keyword is)
    │   ├── UnpicklableError         the cause carrying poolparty's note on a pickling
    │   │                            error before Python 3.11 (see below)
    │   └── SchedulerNotFoundError   the requested scheduler's commands are not installed
    ├── SchedulerCommandError        sbatch/squeue/qsub/... failed (after retries); carries
    │                                argv, exit code, stdout and stderr
    ├── ChunksLostError              jobs kept dying without a result past the resubmission
    │                                limit; names the tasks and shows their stderr tail
    ├── TaskCrashedError             a task ended its worker's process (sys.exit, os._exit,
    │                                a signal such as a segfault); names the task and how
    └── PoolTerminated               the pool was terminated while the map ran

An exception raised by the user's function inside a task is *not* wrapped: the caller gets
the same type and message, with a :class:`RemoteTraceback` holding the remote traceback
attached as ``__cause__``, as ``multiprocessing.pool`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


class PoolpartyError(Exception):
    """Base class of the errors raised by poolparty itself."""


class InvalidInputError(PoolpartyError, ValueError):
    """An argument cannot work; raised before anything is submitted."""


class InvalidOptionError(InvalidInputError, TypeError):
    """An option the pool or its backend doesn't take, or a value it can't use: the
    message names the option, the value and the fix. Also a TypeError, which is what
    an unexpected keyword argument has always been."""


class UnpicklableError(InvalidInputError, TypeError):
    """What poolparty says about a function or task that can't be pickled.

    A pickling error itself reaches the caller with its own type, as with
    ``multiprocessing.Pool`` (a ``RuntimeError`` from ``__reduce__`` is caught by
    ``except RuntimeError``); poolparty's context is a note on it, or before Python
    3.11, where exceptions have no notes, an UnpicklableError set as its ``__cause__``.
    """


class SchedulerNotFoundError(InvalidInputError):
    """The scheduler's command line tools are not installed here."""


class SchedulerCommandError(PoolpartyError):
    """A scheduler command failed, after retrying for as long as allowed.

    The message repeats the command, its exit code and its stderr, because that text
    (e.g. ``invalid partition specified``) is usually the explanation the user needs.
    """

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        reason: str = "",
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.reason = reason
        status = "timed out" if returncode is None else f"exited with {returncode}"
        message = f"command {self.argv!r} {status}"
        if reason:
            message += f" ({reason})"
        if stderr.strip():
            message += f"\nstderr:\n{stderr.strip()}"
        if stdout.strip():
            message += f"\nstdout:\n{stdout.strip()[:2000]}"
        super().__init__(message)

    def __reduce__(self):
        return (
            self.__class__,
            (self.argv, self.returncode, self.stdout, self.stderr, self.reason),
        )


class ChunksLostError(PoolpartyError):
    """Jobs died without writing a result more often than max_num_resubmissions allows."""

    def __init__(self, lost: dict[int, tuple[range, str]], work_dir: str | os.PathLike,
                 endings: dict[int, list[str]] | None = None, waited: float = 0.0) -> None:
        self.lost = lost
        self.work_dir = str(work_dir)
        #: how each submission of each lost chunk ended, as the pool saw it
        self.endings = endings or {}
        #: seconds waited after the last submission for a result still on its way
        self.waited = waited
        lines = [
            f"{len(lost)} chunk(s) of this map died without a result more often than "
            f"max_num_resubmissions allows."
        ]
        for chunk_id, (tasks, stderr_tail) in sorted(lost.items())[:10]:
            lines.append(f"chunk {chunk_id} (tasks {tasks.start}..{tasks.stop - 1}):")
            lines.extend(describe_submissions(self.endings.get(chunk_id, [])))
            if waited > 0:
                lines.append(f"  then no result came in the {waited:.0f} s waited after that, "
                             "in case one was still on its way")
            lines.extend(describe_log_tail(stderr_tail))
        if len(lost) > 10:
            lines.append(f"... and {len(lost) - 10} more chunk(s)")
        lines.append(f"The work_dir is kept for inspection: {self.work_dir}")
        super().__init__("\n".join(lines))

    @property
    def task_indices(self) -> list[int]:
        """The input positions of every task that has no result."""
        return [i for chunk_id in sorted(self.lost) for i in self.lost[chunk_id][0]]

    def __reduce__(self):
        return (self.__class__, (self.lost, self.work_dir, self.endings, self.waited))


class TaskCrashedError(PoolpartyError):
    """A task ended its worker's process instead of returning or raising: it called
    ``sys.exit`` or ``os._exit``, or a signal killed it (a segfault in C code, the
    out-of-memory killer).

    Not a lost job: the worker notes each task it starts in its job's log, and the job's
    shell notes how the worker ended. A process that died is rerun once, as the cause may
    have been the node; the same task ending it again is raised at once. ``sys.exit`` is
    raised without a rerun: the task called it. ``signal`` or ``status`` say how the
    process ended (None for ``sys.exit``, whose code is in the message).
    """

    def __init__(self, task_index: int, how: str, signal: int | None = None,
                 status: int | None = None, log_tail: str = "", work_dir: str = "",
                 endings: Sequence[str] = ()) -> None:
        self.task_index = task_index
        self.how = how
        self.signal = signal
        self.status = status
        self.log_tail = log_tail
        self.work_dir = str(work_dir)
        #: how each submission of the task's chunk ended
        self.endings = list(endings)
        lines = [f"task {task_index} {how}"]
        lines.extend(describe_submissions(self.endings))
        if log_tail or work_dir:
            lines.extend(describe_log_tail(log_tail))
        if work_dir:
            lines.append(f"The work_dir is kept for inspection: {self.work_dir}")
        super().__init__("\n".join(lines))

    @property
    def task_indices(self) -> list[int]:
        """``[task_index]``: the tasks without a result, as ChunksLostError has them."""
        return [self.task_index]

    def __reduce__(self):
        return (self.__class__, (self.task_index, self.how, self.signal, self.status,
                                 self.log_tail, self.work_dir, self.endings))


def describe_submissions(endings: Sequence[str]) -> list[str]:
    return [f"  submission {attempt}: {ending}" for attempt, ending in enumerate(endings, 1)]


def describe_log_tail(tail: str) -> list[str]:
    """The end of a job's log, indented, for an error message."""
    tail = tail.strip() or "(the job wrote no output)"
    return ["  the end of its last log:", *("    " + line for line in tail.splitlines()[-15:])]


class AllocationEndedError(PoolpartyError):
    """The SLURM allocation a pool runs its workers in (backend ``slurm-steps``) ended:
    the tasks it did not finish can't run there."""


class PoolTerminated(PoolpartyError):
    """The pool was terminated (or its ``with`` block left) while this map ran."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a compute node, as text.

    It is attached as ``__cause__`` to the re-raised exception so that Python prints the
    remote traceback above the local one.
    """

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return self.tb


class RemoteError(Exception):
    """Stands in for a task's exception that could not be pickled on the node."""


class ResultsReusedWarning(UserWarning):
    """A map used results an earlier run of the same map left in the work_dir (same
    function, same code of the user's own, same tasks): the warning says how many and
    from where. ``Pool(reuse_results=False)`` computes everything again instead."""
