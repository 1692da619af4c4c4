"""How much work a worker claims at a time (the claim unit of pull-based workers)."""

from __future__ import annotations

import heapq
import random

import pytest

from poolparty.chunking import CLAIM_SECONDS, MAX_CLAIM_OVERHEAD, claim_size, min_chunk_size


def simulate(durations: list[float], workers: int, claim_seconds: float = CLAIM_SECONDS
             ) -> tuple[float, list[int]]:
    """Workers that each claim the next tasks when free, sized by claim_size from the
    mean duration they measured so far: when the last one finishes, and the claims."""
    next_task, claims = 0, []
    measured: list[list[float]] = [[0.0, 0] for _ in range(workers)]  # seconds, tasks
    free = [(0.0, worker) for worker in range(workers)]
    finish = 0.0
    while next_task < len(durations):
        now, worker = heapq.heappop(free)
        seconds, count = measured[worker]
        mean = seconds / count if count else None
        size = claim_size(len(durations) - next_task, workers, mean)
        work = sum(durations[next_task:next_task + size])
        next_task += size
        claims.append(size)
        measured[worker] = [seconds + work, count + size]
        finish = max(finish, now + claim_seconds + work)
        heapq.heappush(free, (now + claim_seconds + work, worker))
    return finish, claims


def test_a_worker_that_measured_nothing_claims_one_task():
    assert claim_size(400, 8, None) == 1
    assert claim_size(0, 8, None) == 0


@pytest.mark.parametrize("remaining, workers, seconds", [
    (1, 8, 1.0), (7, 8, 0.001), (400, 8, 0.05), (10**6, 64, 1e-6), (10**6, 1, 10.0),
])
def test_a_claim_is_never_empty_nor_more_than_is_left(remaining, workers, seconds):
    assert 1 <= claim_size(remaining, workers, seconds) <= remaining


def test_claims_shrink_as_the_work_runs_out():
    sizes = [claim_size(left, 8, 1.0) for left in (400, 200, 100, 50, 10)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1


def test_a_few_long_tasks_first_are_balanced():
    """The issue's workload: 8 tasks of 4 s first, 392 of 0.05 s after, 8 workers.
    Equal contiguous chunks take 33 s; claims sized at claim time stay within 1.3 x the
    ideal (total work / workers)."""
    durations = [4.0] * 8 + [0.05] * 392
    ideal = sum(durations) / 8
    finish, _ = simulate(durations, 8)
    assert finish <= 1.3 * ideal


def test_heavy_tailed_random_work_is_balanced():
    rng = random.Random(7)
    durations = [rng.paretovariate(1.5) * 0.05 for _ in range(2000)]
    finish, _ = simulate(durations, 16)
    assert finish <= 1.3 * sum(durations) / 16 + max(durations)


def test_trivial_tasks_are_claimed_in_few_large_chunks():
    """A million tasks of a microsecond: claiming costs at most a few percent."""
    durations = [1e-6] * 10**6
    _, claims = simulate(durations, 8)
    assert claims[:8] == [1] * 8  # each worker's first claim measures
    assert len(claims) < 20


def test_min_chunk_size_keeps_claim_overhead_small():
    assert min_chunk_size(1.0) == 1
    size = min_chunk_size(0.001)
    assert CLAIM_SECONDS / (size * 0.001) <= MAX_CLAIM_OVERHEAD
    assert min_chunk_size(0.0) >= 10**9
