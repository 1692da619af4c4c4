"""Raised resources for a claim whose job hit its time limit or ran out of memory.

Run again as it was, such a claim dies the same way; run by a worker given more time (or
more memory) it may finish. A reopened claim carries how often each was raised for it
(its :class:`Steps`), and only a worker submitted with at least those steps takes it:
the pool submits one for it, with the time (memory) of the pool's jobs times the
factor per step (1.5 by default), never above the partition's limit nor the user's
``max_memory``. Workers the pool started with its own resources leave such a claim
alone. Each raise counts against ``max_num_resubmissions`` as any loss does, which
bounds how far it goes (1.5 ** 3 = 3.4 times, by default).

Imports nothing of poolparty beyond the standard library: the worker imports it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: by how much each step raises the time, or the memory, by default
DEFAULT_FACTOR = 1.5


@dataclass(frozen=True)
class Steps:
    """How often a claim's time and memory were raised (0, 0: the pool's own)."""

    time: int = 0
    memory: int = 0

    def __bool__(self) -> bool:
        return bool(self.time or self.memory)

    def covers(self, needed: Steps) -> bool:
        """Whether a worker with these steps may run a claim that needs ``needed``."""
        return self.time >= needed.time and self.memory >= needed.memory

    def __str__(self) -> str:
        return f"{self.time},{self.memory}"

    @classmethod
    def parse(cls, text: object) -> Steps:
        """From ``"t,m"`` or ``[t, m]`` (a requeue record); anything else is no step."""
        if isinstance(text, str):
            text = text.split(",")
        try:
            time_steps, memory_steps = (int(part) for part in text)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            return cls()
        return cls(max(0, time_steps), max(0, memory_steps))


#: no step: the pool's own resources
OWN = Steps()


_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(B?)\s*", re.IGNORECASE)
_UNITS = {"": None, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}


def memory_bytes(text: object, bare_unit: int) -> int | None:
    """Bytes in a memory size as schedulers write it (``2G``, ``1500M``, ``512k``); a
    bare number counts in ``bare_unit`` (SLURM: megabytes, SGE: bytes). None when it
    is not such a size."""
    match = _MEMORY.fullmatch(str(text))
    if match is None:
        return None
    unit = _UNITS[match.group(2).upper()] or bare_unit
    return int(float(match.group(1)) * unit)


def scaled_memory(text: str, factor: float, bare_unit: int, cap: str | None = None) -> str:
    """``text`` times ``factor``, in whole megabytes rounded up (``3072M``), at most
    ``cap``; unchanged when it can't be read."""
    size = memory_bytes(text, bare_unit)
    if size is None:
        return text
    size = math.ceil(size * factor)
    limit = None if cap is None else memory_bytes(cap, bare_unit)
    if limit is not None:
        size = min(size, max(limit, memory_bytes(text, bare_unit) or 0))
    return f"{math.ceil(size / 2**20)}M"


def clock_time(seconds: float) -> str:
    """``hours:minutes:seconds``, read alike by SLURM's --time and SGE's h_rt."""
    seconds = math.ceil(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def duration_seconds(text: str) -> float | None:
    """SLURM's time formats in seconds: ``minutes``, ``minutes:seconds``,
    ``hours:minutes:seconds``, ``days-hours[:minutes[:seconds]]``; None when unreadable
    (then no deadline is kept: SLURM refuses such a time at submission anyway)."""
    text = str(text).strip()
    days = 0
    if "-" in text:
        head, _, text = text.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
    parts = text.split(":")
    if not all(part.isdigit() for part in parts) or len(parts) > 3:
        return None
    numbers = [int(part) for part in parts]
    if days:
        numbers += [0] * (3 - len(numbers))  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = numbers
    elif len(numbers) == 1:
        hours, minutes, seconds = 0, numbers[0], 0
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = numbers
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
