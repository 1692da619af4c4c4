"""The exceptions poolparty raises.

A caller sees three kinds of failure, and each has its own branch so it can be caught
on its own::

    PoolpartyError                   base of everything raised by poolparty itself
    ├── InvalidInputError            bad arguments, detected before anything is submitted
    │   ├── UnpicklableError         a function or task can't be pickled (also a TypeError)
    │   └── SchedulerNotFoundError   the requested scheduler's commands are not installed
    ├── SchedulerCommandError        sbatch/squeue/qsub/... failed (after retries); carries
    │                                argv, exit code, stdout and stderr
    ├── ChunksLostError              jobs kept dying without a result past the resubmission
    │                                limit; names the tasks and shows their stderr tail
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


class UnpicklableError(InvalidInputError, TypeError):
    """A function or task can't be pickled; raised before anything is submitted."""


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
                 endings: dict[int, list[str]] | None = None) -> None:
        self.lost = lost
        self.work_dir = str(work_dir)
        #: how each submission of each lost chunk ended, as the pool saw it
        self.endings = endings or {}
        lines = [
            f"{len(lost)} chunk(s) of this map died without a result more often than "
            f"max_num_resubmissions allows."
        ]
        for chunk_id, (tasks, stderr_tail) in sorted(lost.items())[:10]:
            lines.append(f"chunk {chunk_id} (tasks {tasks.start}..{tasks.stop - 1}):")
            for attempt, ending in enumerate(self.endings.get(chunk_id, []), 1):
                lines.append(f"  submission {attempt}: {ending}")
            lines.append("  the end of its last log:")
            tail = stderr_tail.strip() or "(the job wrote no output)"
            lines.extend("    " + line for line in tail.splitlines()[-15:])
        if len(lost) > 10:
            lines.append(f"... and {len(lost) - 10} more chunk(s)")
        lines.append(f"The work_dir is kept for inspection: {self.work_dir}")
        super().__init__("\n".join(lines))

    @property
    def task_indices(self) -> list[int]:
        """The input positions of every task that has no result."""
        return [i for chunk_id in sorted(self.lost) for i in self.lost[chunk_id][0]]

    def __reduce__(self):
        return (self.__class__, (self.lost, self.work_dir, self.endings))


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
