"""The transitions of a worker's record (engine.WorkerStatus) and of a claim's
(engine.ChunkStatus), each as the poll loop relies on it: the loop only applies them
and decides what to do."""

from __future__ import annotations

from poolparty.crashes import Crash
from poolparty.endings import MAX_FREE_REOPENINGS, Ending
from poolparty.engine import (
    MISSING_POLLS_BEFORE_LOST,
    RECHECK_SECONDS,
    STUCK_AFTER_SECONDS,
    ChunkStatus,
    MapRun,
    WorkerStatus,
)
from poolparty.scheduler import State


def crash(task: int | None) -> Crash:
    return Crash(task=task, signal=9, status=None)


def held_claim(worker: int = 0) -> ChunkStatus:
    return ChunkStatus(range(0, 3), worker=worker)


def test_one_miss_is_not_an_ending_two_in_a_row_are():
    worker = WorkerStatus()
    assert MISSING_POLLS_BEFORE_LOST == 2
    assert worker.missed() is False  # a job just submitted may not show yet
    assert worker.missed() is True


def test_being_seen_between_two_misses_starts_the_count_again():
    worker = WorkerStatus()
    worker.missed()
    worker.seen(State.PENDING, now=1.0)
    assert worker.missed() is False


def test_running_is_timed_from_when_it_was_first_seen_running():
    worker = WorkerStatus()
    worker.seen(State.PENDING, now=1.0)
    assert worker.running_since is None
    worker.seen(State.RUNNING, now=10.0)
    worker.seen(State.RUNNING, now=20.0)  # still the same job: the clock is not reset
    assert worker.running_since == 10.0
    assert not worker.shown_running_longer_than(STUCK_AFTER_SECONDS, now=10.0 + STUCK_AFTER_SECONDS)
    assert worker.shown_running_longer_than(STUCK_AFTER_SECONDS, now=11.0 + STUCK_AFTER_SECONDS)


def test_never_seen_running_is_never_running_too_long():
    worker = WorkerStatus()
    worker.seen(State.PENDING, now=0.0)
    assert not worker.shown_running_longer_than(0.0, now=1e9)


def test_a_worker_that_left_the_queue_says_whether_it_was_seen_running():
    before, running = WorkerStatus(), WorkerStatus()
    running.seen(State.RUNNING, now=0.0)
    assert before.left_queue() == ("its job left the queue without a result before it was "
                                   "seen running")
    assert running.left_queue() == "its job left the queue without a result while running"
    assert before.live and running.live


def test_a_lost_claim_notes_how_and_waits_for_another_worker():
    claim = held_claim(worker=3)
    assert claim.held
    claim.lost("its job left the queue while running", "the log's end")
    assert not claim.held and claim.worker is None
    assert (claim.last_worker, claim.last_log) == (3, "the log's end")
    assert claim.endings == ["its job left the queue while running"]
    claim.reopened()
    assert claim.attempt == 1 and claim.worker is None


def test_a_done_claim_is_not_held():
    claim = held_claim()
    claim.done = True
    assert not claim.held


def test_the_same_task_crashing_twice_is_told_another_task_is_not():
    claim = held_claim()
    assert claim.crashed(crash(1)) is False  # first time: worth running once more
    claim.reopened()
    claim.worker = 5
    assert claim.crashed(crash(2)) is False  # another task of the claim
    claim.reopened()
    claim.worker = 6
    assert claim.crashed(crash(1)) is True
    assert len(claim.endings) == 3 and len(claim.crashes) == 3


def test_a_claim_is_out_of_attempts_once_attempted_one_more_time_than_the_limit():
    claim = held_claim()
    assert claim.out_of_attempts(0)  # max_num_resubmissions=0: the first attempt was all
    assert not claim.out_of_attempts(1)
    claim.reopened()
    assert claim.out_of_attempts(1)


def poll_interval_with(*workers: WorkerStatus, polling_interval: float = 30.0) -> float:
    run = object.__new__(MapRun)  # only the fields _poll_interval reads
    run.polling_interval = polling_interval
    run.workers = dict(enumerate(workers))
    return run._poll_interval()


def test_a_running_worker_missing_from_one_poll_is_looked_for_again_within_a_second():
    """A worker scancelled mid-map holds a claim the others could be running: a second
    query about a second later, not a whole polling interval, decides it is lost."""
    quiet, vanished = WorkerStatus(), WorkerStatus()
    quiet.seen(State.RUNNING, now=0.0)
    vanished.seen(State.RUNNING, now=0.0)
    assert poll_interval_with(quiet, vanished) == 30.0
    vanished.missed()
    assert poll_interval_with(quiet, vanished) == RECHECK_SECONDS <= 1.0
    assert poll_interval_with(quiet, vanished, polling_interval=0.5) == 0.5


def test_a_worker_never_shown_running_gets_the_whole_interval_to_appear():
    just_submitted = WorkerStatus()
    just_submitted.missed()  # the scheduler may not list it yet
    assert poll_interval_with(just_submitted) == 30.0
    gone = WorkerStatus()
    gone.seen(State.RUNNING, now=0.0)
    gone.missed()
    gone.ending = "its job left the queue without a result while running"
    assert poll_interval_with(gone) == 30.0  # no longer looked for


def test_a_worker_that_claimed_work_between_two_polls_is_looked_for_again_within_a_second():
    """Scancelled 2 s after it started, before any poll showed it running: its claim
    says it ran, so missing from a poll it is not a job the scheduler has yet to list."""
    claimed = WorkerStatus(ran=True)  # as _read_claims marks the worker a claim names
    claimed.missed()
    assert poll_interval_with(claimed) == RECHECK_SECONDS
    assert "while running" in claimed.left_queue()


def test_claims_lost_to_preemption_or_a_failed_node_do_not_count_against_the_limit():
    """max_num_resubmissions=1: a claim preempted three times still has its retry (the
    preemptions say nothing about the chunk); a time limit counts; so many preemptions
    that the node must be flapping end it too."""
    claim = held_claim()
    for _ in range(3):
        claim.lost("preempted", ending_class=Ending.PREEMPTED)
        claim.reopened()
        assert not claim.out_of_attempts(1)
    claim.lost("time limit", ending_class=Ending.TIME_LIMIT)
    claim.reopened()
    assert claim.out_of_attempts(1)
    flapping = held_claim()
    for _ in range(MAX_FREE_REOPENINGS + 1):
        flapping.lost("node failed", ending_class=Ending.NODE_FAILURE)
        flapping.reopened()
    assert flapping.out_of_attempts(100)
