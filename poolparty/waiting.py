"""Waiting for results so that Ctrl-C still cancels the jobs waited for.

Every front end's waits (AsyncResult.get, imap's next, the Executor's futures) go
through ``cancelled_on_interrupt`` and ``wait_in_slices``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Callable

from .maps import stop_and_wait

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .engine import MapRun


#: how long a caller interrupted while waiting (Ctrl-C) waits for its maps to have
#: cancelled their jobs before it raises: the background threads that cancel them are
#: daemons, which die with the interpreter
CANCEL_WAIT_SECONDS = 10.0
#: longest single wait on a lock or event: a caller blocked in one does not see an
#: interrupt that is not a real signal (``_thread.interrupt_main``) until it wakes
WAIT_SLICE_SECONDS = 0.25


class cancelled_on_interrupt:
    """Every wait for results goes through this: Ctrl-C (KeyboardInterrupt, or another
    BaseException such as SystemExit from a signal handler) while waiting stops the maps
    waited on and waits, a few seconds at most, until their jobs are cancelled, then
    raises on. Without it the maps' background threads would die with the interpreter
    and leave the jobs running (and local workers would keep the process alive)."""

    def __init__(self, runs: Callable[[], Iterable[MapRun]]) -> None:
        self._runs = runs

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        if kind is not None and not issubclass(kind, Exception):
            stop_and_wait(self._runs(), CANCEL_WAIT_SECONDS)
        return False


def wait_in_slices(wait: Callable[[float], bool], timeout: float | None) -> bool:
    """``wait(seconds)`` again and again, at most WAIT_SLICE_SECONDS each, until it
    returns True (True) or ``timeout`` has passed (False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
        if wait(max(0.0, min(left, WAIT_SLICE_SECONDS))):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
