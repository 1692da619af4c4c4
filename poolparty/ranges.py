"""Index lists in the job-array syntax: ``0-2,5,7-8``.

Its own small module because the worker (through its events) needs it on every job
start, where importing the scheduler machinery would cost time on every node.
"""

from __future__ import annotations

from collections.abc import Iterable


def compress_ranges(numbers: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"``: the index syntax of job arrays."""
    sorted_numbers = sorted(set(numbers))
    parts: list[str] = []
    start = previous = None
    for number in sorted_numbers:
        if start is None:
            start = previous = number
        elif number == previous + 1:
            previous = number
        else:
            parts.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = previous = number
    if start is not None:
        parts.append(f"{start}" if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def expand_ranges(text: str) -> list[int]:
    """``"0-2,5,7-8:1"`` -> ``[0, 1, 2, 5, 7, 8]``; a ``%N`` throttle suffix is ignored."""
    numbers: list[int] = []
    text = text.strip().strip("[]").split("%")[0]
    for part in filter(None, text.split(",")):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        stop = int(last) if last else int(first)
        numbers.extend(range(int(first), stop + 1, int(step) if step else 1))
    return numbers


def contiguous_runs(numbers: Iterable[int], max_length: int) -> list[range]:
    """Sorted numbers cut into runs of consecutive ones, none longer than max_length:
    the job arrays of one submission round (SGE, PBS and LSF arrays are contiguous)."""
    runs: list[range] = []
    for number in sorted(set(numbers)):
        last = runs[-1] if runs else None
        if last is not None and number == last.stop and len(last) < max_length:
            runs[-1] = range(last.start, number + 1)
        else:
            runs.append(range(number, number + 1))
    return runs
