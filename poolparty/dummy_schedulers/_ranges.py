"""Index ranges as SLURM (``0-9,12,15-20:2``) and SGE (``1-10:3``) write them.

Both schedulers share the ``FIRST-LAST:STEP`` item syntax; they differ only
in how a list of items is printed back, so parsing is shared here and each
printer is a few lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


def parse_range(text: str) -> tuple[int, int, int]:
    """Parse one ``N``, ``N-M`` or ``N-M:S`` item into ``(first, last, step)``.

    Raises ValueError on anything else, so callers can word the error the way
    their real command does.
    """
    match = _ITEM.fullmatch(text.strip())
    if not match:
        raise ValueError(f"invalid range {text!r}")
    first = int(match[1])
    last = int(match[2]) if match[2] else first
    step = int(match[3]) if match[3] else 1
    if last < first or step < 1:
        raise ValueError(f"invalid range {text!r}")
    return first, last, step


def expand(first: int, last: int, step: int) -> list[int]:
    """List the indices of one range item."""
    return list(range(first, last + 1, step))


def parse_range_list(text: str) -> list[int]:
    """Expand a comma-separated list of range items into sorted unique indices."""
    indices: set[int] = set()
    for item in text.split(","):
        indices.update(expand(*parse_range(item)))
    return sorted(indices)


def runs(indices: Iterable[int], step: int = 1) -> list[tuple[int, int]]:
    """Group sorted indices into maximal ``(first, last)`` runs spaced by ``step``."""
    result: list[tuple[int, int]] = []
    for index in sorted(indices):
        if result and index == result[-1][1] + step:
            result[-1] = (result[-1][0], index)
        else:
            result.append((index, index))
    return result


def sge_range_string(indices: Sequence[int], step: int) -> str:
    """Print task ids the way SGE's ``qstat`` does: ``1-7:2,12,14,15``.

    SGE writes a two-element run as ``a,b`` rather than ``a-b:step``.
    """
    parts = []
    for first, last in runs(indices, step):
        if first == last:
            parts.append(str(first))
        elif first + step == last:
            parts.append(f"{first},{last}")
        else:
            parts.append(f"{first}-{last}:{step}")
    return ",".join(parts)


def slurm_range_string(indices: Sequence[int]) -> str:
    """Print array indices the way SLURM's ``squeue`` does: ``0-9,12``."""
    return ",".join(
        str(first) if first == last else f"{first}-{last}"
        for first, last in runs(indices)
    )
