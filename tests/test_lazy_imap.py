"""imap over an input read lazily (poolparty.imap): on every backend, what a caller who
iterates a generator relies on beyond multiprocessing's semantics (test_pool_api.py has
those): an endless input taken in part leaves neither jobs nor files, and with warm
workers the segments run on the same workers, with no new submission per segment."""

from __future__ import annotations

import itertools

from conftest import wait_for
from test_warm_workers import GONE_WITHIN, Submissions, jobs_of, lobbies

import poolparty.imap


def double(x: int) -> int:
    return 2 * x


def test_an_endless_imap_taken_in_part_leaves_no_job_and_no_file(backend, work_root):
    with backend.make_pool(processes=4) as pool:
        submissions = Submissions(pool)
        taken = list(itertools.islice(pool.imap(double, itertools.count()), 100))
        assert taken == [2 * x for x in range(100)]
        # the pool goes on: the dropped iterator's segments do not stop its next map
        assert pool.map(double, range(5)) == [0, 2, 4, 6, 8]
    wait_for(lambda: not list(work_root.glob("map-*")), GONE_WITHIN,
             "the dropped imap's work_dirs to be removed")
    wait_for(lambda: not jobs_of(backend, submissions.names), GONE_WITHIN,
             "every worker to leave")


def test_segments_of_a_lazy_imap_run_on_the_same_warm_workers(backend, work_root):
    """Four segments (64 + 128 + 256 + 512 tasks): with warm workers the later ones
    run on the first one's workers; at most `processes` workers in all."""
    total = 64 + 128 + 256 + 512
    with backend.make_pool(processes=4, idle_timeout=60) as pool:
        submissions = Submissions(pool)
        results = list(pool.imap(double, (x for x in range(total))))
        assert results == [2 * x for x in range(total)]
        assert sum(submissions) <= 4, submissions
    wait_for(lambda: lobbies(work_root) == [] and not jobs_of(backend, submissions.names),
             GONE_WITHIN, "every worker to leave")
    assert poolparty.imap.FIRST_SEGMENT == 64  # the sizes the docstring counts
