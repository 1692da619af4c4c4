"""How a map's tasks are cut: stored in blocks, claimed by workers in chunks.

Workers pull chunks of tasks (poolparty.worker, poolparty.claims), and a chunk's size is
decided when it is claimed, from the durations the worker measured (``claim_size``):
one task first, then guided self-scheduling, never so small that claiming costs more
than a few percent. The tasks are stored in blocks (``block_size``), so a worker reads
a chunk with one seek and the client pickles at most MAX_BLOCKS pieces; a chunk is
whole blocks. A ``chunksize`` the caller gives is both the block and every claim.
"""

from __future__ import annotations

import math

from .errors import InvalidInputError

CHUNKS_PER_SLOT = 2
#: at most this many blocks per map: each is one pickle to write and one index entry
MAX_BLOCKS = 1024


def block_size(num_tasks: int, claim_unit: int | None) -> int:
    """How many tasks one stored block holds: the caller's chunksize, or as few as
    keep the map within MAX_BLOCKS blocks (1 for most maps: the first claims can then
    be single tasks)."""
    if claim_unit is not None:
        return claim_unit
    return max(1, math.ceil(num_tasks / MAX_BLOCKS))


def default_chunksize(num_tasks: int, max_running: int) -> int:
    """About CHUNKS_PER_SLOT chunks per slot that may run at once."""
    return max(1, math.ceil(num_tasks / (CHUNKS_PER_SLOT * max(1, max_running))))


def chunksize_for_num_chunks(num_tasks: int, num_chunks: int) -> int:
    """pypoolparty's ``num_chunks``: the tasks spread over at most that many chunks."""
    return max(1, math.ceil(num_tasks / num_chunks))


def check_chunksize(chunksize: object, name: str = "chunksize") -> int | None:
    """None (choose for me) or a positive int; anything else is an error now."""
    if chunksize is None:
        return None
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise InvalidInputError(
            f"{name} must be a positive int or None, not {chunksize!r}."
        )
    if chunksize <= 0:
        raise InvalidInputError(
            f"{name} must be at least 1, not {chunksize}; leave it None for a default."
        )
    return chunksize


def chunk_bounds(num_tasks: int, chunksize: int) -> list[range]:
    """The task positions of each chunk, in order."""
    starts = range(0, num_tasks, chunksize)
    return [range(start, min(start + chunksize, num_tasks)) for start in starts]



#: what claiming a chunk costs a worker on a shared filesystem (create its claim, read
#: the chunk, write the result), a conservative figure for NFS
CLAIM_SECONDS = 0.01
#: the share of a chunk's time its claim may cost
MAX_CLAIM_OVERHEAD = 0.03


def claim_size(remaining: int, workers: int, task_seconds: float | None,
               divisor: int = 2) -> int:
    """How many of the ``remaining`` tasks a worker claims next (guided self-scheduling,
    decided at claim time from measured durations).

    A worker that has measured nothing yet claims one task: a map whose first tasks are
    long must not hand them all to one worker in a big first chunk. After that it claims
    ``1 / (divisor * workers)`` of what is left, so the last claims are small and the
    tail does not straggle, but never so few tasks that claiming costs more than
    MAX_CLAIM_OVERHEAD of running them (trivial tasks are claimed in large chunks).
    """
    if remaining <= 0:
        return 0
    if task_seconds is None:
        return 1
    guided = math.ceil(remaining / (divisor * max(1, workers)))
    return max(1, min(remaining, max(guided, min_chunk_size(task_seconds))))


def min_chunk_size(task_seconds: float, claim_seconds: float = CLAIM_SECONDS,
                   max_overhead: float = MAX_CLAIM_OVERHEAD) -> int:
    """The fewest tasks a chunk must hold so that claiming it costs at most
    ``max_overhead`` of running its tasks, given their measured mean duration."""
    if task_seconds <= 0:
        return 1 << 40
    return max(1, math.ceil(claim_seconds / (max_overhead * task_seconds)))
