"""The claim protocol (poolparty.claims): the claims' ranges tile the tasks exactly, each
claim runs once per attempt, none is lost, whatever the race between workers, the sizes
they ask for, and however stale their directory listings.

The races run in processes started together behind a barrier, each asking for random
sizes; the last test runs one across two caching views of one directory (bindfs, as
../shared/design.md describes "Two hosts' caches on one machine"), where a name created
on one view stays missing on the other for 30 s.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from poolparty import claims
from poolparty.claims import (
    CLAIMS,
    REQUEUE,
    RETRIES,
    ClaimBoard,
    Claimer,
    read_identity,
    read_record,
)

#: what a worker got: (claim number, attempt, start, stop)
Got = tuple[int, int, int, int]


def new_map(path: Path, num_tasks: int) -> ClaimBoard:
    path.mkdir(mode=0o700, exist_ok=True)
    board = ClaimBoard(path, num_tasks)
    board.create()
    return board


def sizes(*asked: int):
    """A size_for that asks for these sizes in turn (the last one from then on)."""
    asked_list = list(asked)
    return lambda remaining: asked_list.pop(0) if len(asked_list) > 1 else asked_list[0]


class RandomSizes:
    """A size_for asking for random sizes, which remembers what it was last asked and
    answered: the claim it gets must be exactly that."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.last: tuple[int, int] | None = None  # remaining, size asked

    def __call__(self, remaining: int) -> int:
        self.last = remaining, self.random.randint(1, 7)
        return self.last[1]


def one_task(remaining: int) -> int:
    return 1


def claim_all(claimer: Claimer, size_for=one_task) -> list[Got]:
    """What one worker claims until no work is open, in order."""
    claimed = []
    while (claim := claimer.claim_next(size_for)) is not None:
        claimed.append((claim.number, claim.attempt, claim.start, claim.stop))
    return claimed


def no_listing(directory: Path) -> list[str]:
    """A listing that lags behind everything: shows no claim at all."""
    return []


def racing_worker(map_dir: str, num_tasks: int, barrier, results, stale: bool,
                  seed: int) -> None:
    """One worker process: waits for the others, then claims random sizes until no work
    is open, checking that each first-attempt claim is the size it asked for."""
    claimer = Claimer(map_dir, num_tasks, listing=no_listing if stale else os.listdir)
    size_for, claimed = RandomSizes(seed), []
    barrier.wait()
    while (claim := claimer.claim_next(size_for)) is not None:
        if claim.attempt == 0:
            remaining, asked = size_for.last
            assert claim.start == num_tasks - remaining, (claim, size_for.last)
            assert claim.stop == claim.start + min(asked, remaining), (claim, size_for.last)
        claimed.append((claim.number, claim.attempt, claim.start, claim.stop))
    results.put((claimer.identity["worker"], claimed))


def race(map_dirs: list[Path], num_tasks: int, workers: int = 8,
         stale: bool = False) -> dict[str, list[Got]]:
    """``workers`` processes claiming at once, spread over ``map_dirs`` (views of one
    map): what each worker id claimed."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=racing_worker, args=(
        str(map_dirs[i % len(map_dirs)]), num_tasks, barrier, results, stale and i % 2,
        random.randrange(1 << 30))) for i in range(workers)]
    for process in processes:
        process.start()
    claimed = dict(gather(results, processes) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return claimed


def gather(results, processes: list) -> tuple[str, list[Got]]:
    """The next worker's outcome; a worker that died fails the test at once (it never
    sends one)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=0.5)
        except queue.Empty:
            died = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            assert not died, f"a worker died: exit codes {died}"
    raise AssertionError("the workers did not finish in 120 s")


def assert_named(claimed: dict[str, list[Got]], map_dir: Path) -> None:
    """Each claim file names the worker that got it, and the range it got."""
    for worker, got in claimed.items():
        for number, attempt, start, stop in got:
            path = (map_dir / CLAIMS / str(number) if attempt == 0
                    else map_dir / RETRIES / f"{number}.{attempt}")
            record = read_record(path)
            assert (record["worker"], record["start"], record["stop"]) == (worker, start, stop)


def assert_tiled(claimed: dict[str, list[Got]], num_tasks: int, map_dir: Path) -> None:
    """The first-attempt claims are numbered 0, 1, 2, ... each once, and their ranges
    tile [0, num_tasks): no gap, no overlap; each claim file names its claimer."""
    chain = sorted(entry for got in claimed.values() for entry in got if entry[1] == 0)
    assert [number for number, *_ in chain] == list(range(len(chain)))
    stops = [0] + [stop for *_, stop in chain]
    assert [(start, stop) for _, _, start, stop in chain] == list(zip(stops, stops[1:]))
    assert stops[-1] == num_tasks and all(stop > start for start, stop in zip(stops, stops[1:]))
    assert_named(claimed, map_dir)


def retries_got(claimed: dict[str, list[Got]]) -> Counter:
    return Counter(entry for got in claimed.values() for entry in got if entry[1] > 0)


def test_a_single_worker_covers_every_task_once_in_order_with_the_sizes_it_asked(tmp_path):
    board = new_map(tmp_path / "map", 20)
    asked = []
    claimer = Claimer(tmp_path / "map", 20, environ={"SLURM_JOB_ID": "17", "OTHER": "x"})
    ask = sizes(1, 1, 2, 3, 5, 100)
    claimed = claim_all(claimer, lambda remaining: asked.append(remaining) or ask(remaining))
    assert claimed == [(0, 0, 0, 1), (1, 0, 1, 2), (2, 0, 2, 4), (3, 0, 4, 7), (4, 0, 7, 12),
                       (5, 0, 12, 20)]
    assert asked == [20, 19, 18, 16, 13, 8]  # what was left each time; the last capped
    assert claimer.claim_next(sizes(1)) is None
    assert Claimer(tmp_path / "map", 20).claim_next(sizes(1)) is None
    identity = read_identity(tmp_path / "map" / CLAIMS / "3")
    assert identity["job"] == {"SLURM_JOB_ID": "17"}
    assert identity["pid"] == os.getpid() and identity["host"] == os.uname().nodename
    assert identity["worker"] == claimer.identity["worker"] and identity["time"] <= time.time()
    assert board.covered() == range(20) and board.all_covered()
    assert sorted(os.listdir(board.claims_dir)) == sorted(str(n) for n in range(6))  # no tmp


def test_the_board_covers_what_the_listed_chain_covers(tmp_path):
    board = new_map(tmp_path / "map", 10)
    claimer = Claimer(tmp_path / "map", 10)
    assert board.covered() == range(0) and not board.all_covered()
    claimer.claim_next(sizes(4))
    assert board.covered() == range(4)
    assert ClaimBoard(tmp_path / "map", 10, listing=no_listing).covered() == range(0)
    claim_all(claimer, sizes(4))
    assert board.covered() == range(10) and board.all_covered()


def test_racing_workers_tile_the_tasks_exactly(tmp_path):
    new_map(tmp_path / "map", 200)
    claimed = race([tmp_path / "map"], 200)
    assert_tiled(claimed, 200, tmp_path / "map")
    assert retries_got(claimed) == Counter()


def test_a_requeued_claim_goes_first_to_exactly_one_worker_with_its_range(tmp_path):
    board = new_map(tmp_path / "map", 100)
    first = Claimer(tmp_path / "map", 100)
    claimed = {first.identity["worker"]: claim_some(first, 5, sizes(3))}
    assert board.claims()[2].stop == 9 and board.attempts(2) == 1
    board.requeue(2, 1, reason="its worker was lost")
    assert board.unclaimed_requeues() == [2] and board.attempts(2) == 2
    retry = first.claim_next(sizes(3))  # before the chain is extended past claim 4
    assert (retry.number, retry.attempt, retry.start, retry.stop) == (2, 1, 6, 9)
    claimed[first.identity["worker"]].append((2, 1, 6, 9))
    assert board.unclaimed_requeues() == [] and first.next_number == 5

    board.requeue(2, 2)
    board.requeue(4, 1)
    assert board.unclaimed_requeues() == [2, 4] and board.unclaimed_requeues(done={2}) == [4]
    raced = race([tmp_path / "map"], 100, workers=6)
    assert retries_got(raced) == Counter({(2, 2, 6, 9): 1, (4, 1, 12, 15): 1})
    for got in raced.values():  # each worker took the retries it won first
        attempts = [attempt for _, attempt, *_ in got]
        assert attempts == sorted(attempts, reverse=True)
    claimed.update(raced)
    assert_tiled(claimed, 100, tmp_path / "map")
    assert board.unclaimed_requeues() == [] and board.attempts(2) == 3
    assert [(info.attempt, info.start, info.stop) for info in board.claims_of(2)] == [
        (0, 6, 9), (1, 6, 9), (2, 6, 9)]
    assert board.claims()[2].attempt == 2
    with pytest.raises(FileExistsError):  # a name is never reused
        board.requeue(2, 2)
    assert sorted(os.listdir(board.requeue_dir)) == ["2.1", "2.2", "4.1"]


def test_a_worker_lists_requeue_only_when_its_mtime_changed(tmp_path):
    """Checking for reopened claims before each claim costs a stat, not a listing."""
    board = new_map(tmp_path / "map", 100)
    listed = Counter()

    def counting(directory: Path) -> list[str]:
        listed[directory.name] += 1
        return os.listdir(directory)

    long_ago = time.time() - 100
    os.utime(board.requeue_dir, (long_ago, long_ago))
    worker = Claimer(tmp_path / "map", 100, listing=counting)
    claim_some(worker, 5, one_task)
    assert listed[REQUEUE] == 1  # once, at its first claim
    board.requeue(2, 1)
    assert claim_some(worker, 2, one_task) == [(2, 1, 2, 3), (5, 0, 5, 6)]
    assert listed[REQUEUE] > 1


def claim_some(claimer: Claimer, count: int, size_for) -> list[Got]:
    """Up to ``count`` claims by one worker."""
    got = []
    for _ in range(count):
        claim = claimer.claim_next(size_for)
        if claim is None:
            break
        got.append((claim.number, claim.attempt, claim.start, claim.stop))
    return got


def test_a_stale_listing_never_causes_a_double_claim(tmp_path):
    """Workers whose listings show nothing, or an old snapshot, claim among fresh ones:
    their links still find every claim they did not see."""
    board = new_map(tmp_path / "map", 120)
    fresh = Claimer(tmp_path / "map", 120)
    claimed = {fresh.identity["worker"]: claim_some(fresh, 10, sizes(2))}
    old = snapshot_listing(board)  # before the others claimed
    workers = [fresh, Claimer(tmp_path / "map", 120, listing=no_listing),
               Claimer(tmp_path / "map", 120, listing=old), Claimer(tmp_path / "map", 120)]
    while any([claim_in_turn(worker, claimed) for worker in workers]):  # one each, in turn
        pass
    assert_tiled(claimed, 120, tmp_path / "map")
    assert len(claimed) == len(workers)  # the stale ones claimed too

    board.requeue(7, 1)
    old = snapshot_listing(board)  # shows the requeue, not who claims it
    late = [Claimer(tmp_path / "map", 120, listing=old) for _ in range(3)]
    claimed = {worker.identity["worker"]: claim_all(worker) for worker in late}
    assert retries_got(claimed) == Counter({(7, 1, 14, 16): 1})
    assert_named(claimed, tmp_path / "map")


def snapshot_listing(board: ClaimBoard):
    """A listing frozen now: what a lagging directory cache would keep showing."""
    frozen = {path: os.listdir(path)
              for path in (board.claims_dir, board.requeue_dir, board.retries_dir)}
    return lambda directory: frozen[directory]


def claim_in_turn(worker: Claimer, claimed: dict) -> bool:
    """One claim by ``worker`` (of 3 tasks), noted in ``claimed``; False when it found
    no work."""
    got = claim_some(worker, 1, sizes(3))
    if got:
        claimed.setdefault(worker.identity["worker"], []).extend(got)
    return bool(got)


def test_racing_workers_with_stale_listings_tile_the_tasks_exactly(tmp_path):
    new_map(tmp_path / "map", 200)
    claimed = race([tmp_path / "map"], 200, stale=True)
    assert_tiled(claimed, 200, tmp_path / "map")


def dying_worker(map_dir: str, num_tasks: int) -> None:
    """A worker killed after writing its temporary claim file, before linking it."""
    claims.os.link = lambda source, target: os.kill(os.getpid(), signal.SIGKILL)
    Claimer(map_dir, num_tasks).claim_next(sizes(5))


def test_a_worker_dying_before_its_link_leaves_no_gap_in_the_chain(tmp_path):
    """The claim appears whole or not at all: the next worker claims the same number,
    and the chain goes on from there."""
    board = new_map(tmp_path / "map", 10)
    process = multiprocessing.get_context("spawn").Process(
        target=dying_worker, args=(str(tmp_path / "map"), 10))
    process.start()
    process.join(timeout=60)
    assert process.exitcode == -signal.SIGKILL
    (left,) = os.listdir(board.claims_dir)
    assert left.startswith(".") and left.endswith(".0.tmp")  # only its temporary file
    assert board.covered() == range(0) and board.claims() == {}
    assert claim_all(Claimer(tmp_path / "map", 10), sizes(4)) == [
        (0, 0, 0, 4), (1, 0, 4, 8), (2, 0, 8, 10)]
    assert board.covered() == range(10)


def test_a_claim_runs_only_if_it_reads_back_as_this_workers(tmp_path, monkeypatch):
    """The check after the link: a claim file that names another worker (a link wrongly
    reported as made) is not run, and its stop is where the chain goes on; one that
    can't be read back ends the worker, so that the client reopens it as a lost
    worker's instead of nobody running it."""
    new_map(tmp_path / "map", 6)
    another = {"worker": "another", "start": 0, "stop": 6, "attempt": 0}
    monkeypatch.setattr(claims, "read_record", lambda path: another)
    assert Claimer(tmp_path / "map", 6).claim_next(sizes(2)) is None
    new_map(tmp_path / "other map", 6)
    monkeypatch.setattr(claims, "read_record", lambda path: None)
    with pytest.raises(OSError, match="can't be read back"):
        Claimer(tmp_path / "other map", 6).claim_next(sizes(2))


def test_a_claim_found_taken_is_read_until_it_shows(tmp_path, monkeypatch):
    """A kernel that cached the name as missing shows the claim another worker linked
    only when that entry expires: the worker waits for it rather than guess its stop."""
    new_map(tmp_path / "map", 6)
    Claimer(tmp_path / "map", 6).claim_next(sizes(2))
    waits = []
    unreadable_for(monkeypatch, {"0"}, reads=3)
    monkeypatch.setattr(claims.time, "sleep", waits.append)
    claim = Claimer(tmp_path / "map", 6).claim_next(sizes(3))
    assert (claim.number, claim.start, claim.stop) == (1, 2, 5)
    assert waits == [0.01]  # the listing's highest claim was 0 too: no jump


def test_a_claim_not_readable_yet_is_jumped_over_by_a_later_listed_one(tmp_path, monkeypatch):
    new_map(tmp_path / "map", 20)
    claim_some(Claimer(tmp_path / "map", 20), 3, sizes(2))
    unreadable_for(monkeypatch, {"0"}, reads=1000)
    monkeypatch.setattr(claims.time, "sleep", pytest.fail)
    claim = Claimer(tmp_path / "map", 20).claim_next(sizes(3))
    assert (claim.number, claim.start, claim.stop) == (3, 6, 9)


def unreadable_for(monkeypatch, names: set[str], reads: int) -> None:
    """Claims of these names can't be read for that many reads: as a name this kernel
    cached as missing."""
    real, count = claims.read_record, Counter()

    def read_late(path: Path):
        count[path.name] += 1
        return real(path) if path.name not in names or count[path.name] > reads else None

    monkeypatch.setattr(claims, "read_record", read_late)


def test_a_claims_dir_writable_by_others_is_refused(tmp_path):
    board = new_map(tmp_path / "map", 3)
    for directory in (board.claims_dir, board.requeue_dir, board.retries_dir):
        assert directory.stat().st_mode & 0o777 == 0o700
    os.chmod(board.claims_dir, 0o770)
    with pytest.raises(PermissionError, match="writable by others"):
        Claimer(tmp_path / "map", 3).claim_next(sizes(1))
    assert os.listdir(board.claims_dir) == []


def test_the_heartbeat_is_the_claims_age(tmp_path):
    board = new_map(tmp_path / "map", 4)
    claim = Claimer(tmp_path / "map", 4).claim_next(sizes(3))
    os.utime(claim.path, (time.time() - 100, time.time() - 100))
    (info,) = board.claims().values()
    assert (info.number, info.attempt, info.start, info.stop) == (0, 0, 0, 3)
    assert 99 < info.age < 110
    claim.touch()
    assert board.claims()[0].age < 5
    assert board.claims()[0].identity == claim.identity
    assert board.covered() == range(3) and not board.all_covered()


# ---------------------------------------------------------------- two caching views
def test_claims_hold_across_two_caching_views(two_views):
    """Workers on both views race; view b caches every claim name as missing first.
    What each worker claimed is checked in the backing directory: a view may not show
    a claim made on the other by name for 30 s (the client's board reads None then)."""
    backing, view_a, view_b = two_views
    board = new_map(view_a / "map", 300)
    on_b = Claimer(view_b / "map", 300, listing=no_listing)
    for number in range(100):
        assert not (view_b / "map" / CLAIMS / str(number)).exists()
    first = Claimer(view_a / "map", 300)
    claimed = {first.identity["worker"]: claim_some(first, 50, sizes(1))}
    assert not (view_b / "map" / CLAIMS / "0").exists()  # view b's cache is in play
    # claims 0..49 exist, though view b thinks them missing: it follows the chain
    claimed[on_b.identity["worker"]] = claim_some(on_b, 1, sizes(2))
    assert claimed[on_b.identity["worker"]] == [(50, 0, 50, 52)]
    claimed.update(race([view_a / "map", view_b / "map"], 300))
    assert_tiled(claimed, 300, backing / "map")
    assert board.covered() == range(300) and board.all_covered()

    board.requeue(3, 1)  # by the client on view a, claimed by workers on both views
    claimed = race([view_a / "map", view_b / "map"], 300, workers=4)
    assert retries_got(claimed) == Counter({(3, 1, 3, 4): 1})
    assert_named(claimed, backing / "map")
    assert board.attempts(3) == 2 and board.unclaimed_requeues() == []


def test_a_worker_whose_time_left_fits_no_block_claims_nothing(tmp_path):
    """Near its job's time limit a worker's size_for says 0: it stops, and no claim of
    one task is forced on it (one that would cut a block, and the tasks after it)."""
    new_map(tmp_path / "map", 20)
    claimer = Claimer(tmp_path / "map", 20)
    assert claimer.claim_next(lambda remaining: 0) is None
    assert claimer.claim_next(lambda remaining: -5) is None
    assert os.listdir(tmp_path / "map" / CLAIMS) == []
    assert claim_all(claimer, sizes(5))[0] == (0, 0, 0, 5)
