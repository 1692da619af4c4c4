"""Task functions several test modules map: one definition each.

Module functions, so they are pickled by reference; the tests folder is on the
client's import path, which the workers are given, so the nodes import them too.
"""

from __future__ import annotations

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
