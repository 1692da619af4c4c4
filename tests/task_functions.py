"""Task functions several test modules map: one definition each.

Module functions, so they are pickled by reference; the tests folder is on the
client's import path, which the workers are given, so the nodes import them too.
"""

from __future__ import annotations

import os
import signal
import time


class TaskFailed(RuntimeError):
    """What a failing task raises: a type of the tests' own, so a test that expects it
    can't be passed by some other error."""


def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise TaskFailed(f"three is bad: {x}")
    return x


def slow_abs(x):
    """abs, slow enough for a pool polling every 0.2 s to see the job run a few times."""
    time.sleep(1.5)
    return abs(x)


def underscore_exit_on_three(x):
    """Ends its worker's process at task 3 the way a C library's exit() would."""
    if x == 3:
        print(f"task {x} is about to os._exit(1)", flush=True)
        os._exit(1)
    return x * 10


def segfault_on_three(x):
    """Kills its worker's process with SIGSEGV at task 3, as a crashing extension does."""
    if x == 3:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x * 10
