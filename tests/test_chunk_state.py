"""The transitions of one chunk's record (engine.ChunkStatus), each as the poll loop
relies on it: the loop only applies them and decides what to do."""

from __future__ import annotations

from poolparty.crashes import Crash
from poolparty.engine import MISSING_POLLS_BEFORE_LOST, STUCK_AFTER_SECONDS, ChunkStatus
from poolparty.scheduler import State


def submitted_chunk() -> ChunkStatus:
    chunk = ChunkStatus(range(0, 3))
    chunk.submitted()
    return chunk


def crash(task: int | None) -> Crash:
    return Crash(task=task, signal=9, status=None)


def test_a_chunk_is_outstanding_from_its_submission_until_its_result():
    chunk = ChunkStatus(range(0, 3))
    assert not chunk.outstanding  # not submitted yet: nothing to look for in the queue
    chunk.submitted()
    assert chunk.outstanding and chunk.submissions == 1 and not chunk.resubmitted
    chunk.done = True
    assert not chunk.outstanding


def test_one_miss_is_not_a_loss_two_in_a_row_are():
    chunk = submitted_chunk()
    assert MISSING_POLLS_BEFORE_LOST == 2
    assert chunk.missed() is False  # a job just submitted may not show yet
    assert chunk.missed() is True


def test_being_seen_between_two_misses_starts_the_count_again():
    chunk = submitted_chunk()
    chunk.missed()
    chunk.seen(State.PENDING, now=1.0)
    assert chunk.missed() is False


def test_a_resubmission_forgets_what_was_seen_of_the_previous_job():
    chunk = submitted_chunk()
    chunk.seen(State.RUNNING, now=5.0)
    chunk.missed()
    chunk.submitted()
    assert chunk.resubmitted and chunk.submissions == 2
    assert (chunk.missing_polls, chunk.last_seen, chunk.running_since) == (0, None, None)
    assert chunk.missed() is False


def test_running_is_timed_from_when_it_was_first_seen_running():
    chunk = submitted_chunk()
    chunk.seen(State.PENDING, now=1.0)
    assert chunk.running_since is None
    chunk.seen(State.RUNNING, now=10.0)
    chunk.seen(State.RUNNING, now=20.0)  # still the same job: the clock is not reset
    assert chunk.running_since == 10.0
    assert not chunk.shown_running_longer_than(STUCK_AFTER_SECONDS, now=10.0 + STUCK_AFTER_SECONDS)
    assert chunk.shown_running_longer_than(STUCK_AFTER_SECONDS, now=11.0 + STUCK_AFTER_SECONDS)


def test_never_seen_running_is_never_running_too_long():
    chunk = submitted_chunk()
    chunk.seen(State.PENDING, now=0.0)
    assert not chunk.shown_running_longer_than(0.0, now=1e9)


def test_a_lost_job_says_whether_it_was_seen_running():
    before = submitted_chunk()
    before.lost()
    running = submitted_chunk()
    running.seen(State.RUNNING, now=0.0)
    running.lost()
    assert before.endings == ["its job left the queue without a result before it was seen running"]
    assert running.endings == ["its job left the queue without a result while running"]


def test_each_submission_ends_once_in_the_list_the_user_sees():
    chunk = submitted_chunk()
    chunk.in_error()
    chunk.lost()  # the resubmission failed: the same submission is seen gone again
    assert chunk.endings == ["the scheduler put its job in an error state"]
    chunk.submitted()
    chunk.stuck()
    assert len(chunk.endings) == 2 and "no worker ever started" in chunk.endings[1]


def test_an_adopted_chunk_counts_as_submitted_once():
    chunk = ChunkStatus(range(0, 3))
    chunk.adopted()  # resume: its job, from an earlier client, still runs
    assert chunk.outstanding and chunk.submissions == 1 and not chunk.resubmitted


def test_a_crash_is_noted_once_and_the_same_task_crashing_again_is_told():
    chunk = submitted_chunk()
    assert chunk.crashed(crash(1)) is False  # first time: worth running once more
    assert chunk.crashed(crash(1)) is False  # the same submission seen again: not again
    assert len(chunk.crashes) == 1 and len(chunk.endings) == 1
    chunk.submitted()
    assert chunk.crashed(crash(1)) is True


def test_another_task_crashing_is_not_the_same_crash_again():
    chunk = submitted_chunk()
    chunk.crashed(crash(0))
    chunk.submitted()
    assert chunk.crashed(crash(2)) is False


def test_a_chunk_is_out_of_resubmissions_once_submitted_one_more_time_than_the_limit():
    chunk = submitted_chunk()
    assert chunk.out_of_resubmissions(0)  # max_num_resubmissions=0: the first job was all
    assert not chunk.out_of_resubmissions(1)
    chunk.submitted()
    assert chunk.out_of_resubmissions(1)
