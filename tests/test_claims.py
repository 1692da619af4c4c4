"""The claim protocol (poolparty.claims): every chunk runs once, none is lost, whatever
the race between workers and however stale their directory listings.

The races run in processes started together behind a barrier; the last test runs one
across two caching views of one directory (bindfs, as ../shared/design.md describes
"Two hosts' caches on one machine"), where a name created on one view stays missing
on the other for 30 s.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolparty import claims
from poolparty.claims import CLAIMS, ClaimBoard, Claimer, read_identity

REQUIRED_VARIABLES = ("CI", "POOLPARTY_REQUIRE_SCHEDULERS")
HOW_TO_ENABLE = "install bindfs and fuse3 and run as root to test claims across two caching views"
CACHING = "entry_timeout=30,negative_timeout=30,attr_timeout=30"


def new_map(path: Path, chunk_count: int) -> ClaimBoard:
    path.mkdir(mode=0o700, exist_ok=True)
    board = ClaimBoard(path, chunk_count)
    board.create()
    return board


def claim_all(claimer: Claimer) -> list[tuple[int, int]]:
    """What one worker claims until no work is open: (chunk, attempt) in order."""
    claimed = []
    while (claim := claimer.claim_next()) is not None:
        claimed.append((claim.chunk, claim.attempt))
    return claimed


def no_listing(directory: Path) -> list[str]:
    """A listing that lags behind everything: shows no claim at all."""
    return []


def racing_worker(map_dir: str, chunk_count: int, barrier, results, stale: bool) -> None:
    """One worker process: waits for the others, then claims until no work is open."""
    claimer = Claimer(map_dir, chunk_count, listing=no_listing if stale else os.listdir)
    barrier.wait()
    results.put((claimer.identity["worker"], claim_all(claimer)))


def race(map_dirs: list[Path], chunk_count: int, workers: int = 8,
         stale: bool = False) -> dict[str, list[tuple[int, int]]]:
    """``workers`` processes claiming at once, spread over ``map_dirs`` (views of one
    map): what each worker id claimed."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=racing_worker, args=(
        str(map_dirs[i % len(map_dirs)]), chunk_count, barrier, results, stale and i % 2))
        for i in range(workers)]
    for process in processes:
        process.start()
    claimed = dict(gather(results, processes) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    return claimed


def gather(results, processes: list) -> tuple[str, list[tuple[int, int]]]:
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


def assert_each_once(claimed: dict[str, list[tuple[int, int]]], expected: set,
                     claims_dir: Path) -> None:
    """Every expected (chunk, attempt) claimed by exactly one worker, whose id its
    claim file names."""
    counts = Counter(entry for entries in claimed.values() for entry in entries)
    assert set(counts) == expected, "lost: " + str(sorted(expected - set(counts)))
    assert [entry for entry, count in counts.items() if count > 1] == []
    for worker, entries in claimed.items():
        for chunk, attempt in entries:
            assert read_identity(claims_dir / f"{chunk}.{attempt}")["worker"] == worker


def test_a_single_worker_claims_every_chunk_in_order_then_none(tmp_path):
    new_map(tmp_path / "map", 5)
    claimer = Claimer(tmp_path / "map", 5, environ={"SLURM_JOB_ID": "17", "OTHER": "x"})
    assert claim_all(claimer) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0)]
    assert claimer.claim_next() is None
    assert Claimer(tmp_path / "map", 5).claim_next() is None
    identity = read_identity(tmp_path / "map" / CLAIMS / "3.0")
    assert identity["job"] == {"SLURM_JOB_ID": "17"}
    assert identity["pid"] == os.getpid() and identity["host"] == os.uname().nodename
    assert identity["worker"] == claimer.identity["worker"] and identity["time"] <= time.time()


def test_racing_workers_claim_each_chunk_exactly_once(tmp_path):
    new_map(tmp_path / "map", 200)
    claimed = race([tmp_path / "map"], 200)
    assert_each_once(claimed, {(chunk, 0) for chunk in range(200)}, tmp_path / "map" / CLAIMS)


def test_a_requeued_chunk_goes_to_exactly_one_worker_per_attempt(tmp_path):
    board = new_map(tmp_path / "map", 10)
    claim_all(Claimer(tmp_path / "map", 10))
    assert board.unclaimed() == [] and board.attempts(3) == 1
    for attempt in (1, 2):
        board.requeue(3, attempt, reason="its worker was lost")
        assert board.unclaimed() == [3] and board.attempts(3) == attempt + 1
        claimed = race([tmp_path / "map"], 10, workers=6)
        assert_each_once(claimed, {(3, attempt)}, tmp_path / "map" / CLAIMS)
        assert board.unclaimed() == []
    assert [info.attempt for info in board.claims_of(3)] == [0, 1, 2]
    with pytest.raises(FileExistsError):  # a name is never reused
        board.requeue(3, 2)
    assert sorted(p.name for p in board.requeue_dir.iterdir()) == ["3.1", "3.2"]


def test_a_stale_listing_never_causes_a_double_claim(tmp_path):
    """Workers whose listings show nothing, or an old snapshot, claim among fresh ones:
    their exclusive creates still find every claim they did not see."""
    board = new_map(tmp_path / "map", 60)
    fresh = Claimer(tmp_path / "map", 60)
    claimed = {fresh.identity["worker"]: [(fresh.claim_next().chunk, 0) for _ in range(30)]}
    old = snapshot_listing(board)  # before the others claimed
    workers = [fresh, Claimer(tmp_path / "map", 60, listing=no_listing),
               Claimer(tmp_path / "map", 60, listing=old), Claimer(tmp_path / "map", 60)]
    while any([claim_in_turn(worker, claimed) for worker in workers]):  # one each, in turn
        pass
    assert_each_once(claimed, {(chunk, 0) for chunk in range(60)}, board.claims_dir)
    assert len(claimed) == len(workers)  # the stale ones claimed too

    board.requeue(7, 1)
    old = snapshot_listing(board)  # shows the requeue, not who claims it
    late = [Claimer(tmp_path / "map", 60, listing=old) for _ in range(3)]
    claimed = {worker.identity["worker"]: claim_all(worker) for worker in late}
    assert_each_once(claimed, {(7, 1)}, board.claims_dir)


def snapshot_listing(board: ClaimBoard):
    """A listing frozen now: what a lagging directory cache would keep showing."""
    frozen = {path: os.listdir(path) for path in (board.claims_dir, board.requeue_dir)}
    return lambda directory: frozen[directory]


def claim_in_turn(worker: Claimer, claimed: dict) -> bool:
    """One claim by ``worker``, noted in ``claimed``; False when it found no work."""
    claim = worker.claim_next()
    if claim is not None:
        claimed.setdefault(worker.identity["worker"], []).append((claim.chunk, claim.attempt))
    return claim is not None


def test_racing_workers_with_stale_listings_claim_each_chunk_exactly_once(tmp_path):
    new_map(tmp_path / "map", 200)
    claimed = race([tmp_path / "map"], 200, stale=True)
    assert_each_once(claimed, {(chunk, 0) for chunk in range(200)}, tmp_path / "map" / CLAIMS)


def test_a_claim_runs_only_if_it_reads_back_as_this_workers(tmp_path, monkeypatch):
    """The check after the create: a claim file that names another worker (a create
    wrongly reported as made) is not run; one that can't be read back ends the worker,
    so that the client reopens it as a lost worker's instead of nobody running it."""
    new_map(tmp_path / "map", 2)
    monkeypatch.setattr(claims, "read_identity", lambda path: {"worker": "another"})
    assert Claimer(tmp_path / "map", 2).claim_next() is None
    monkeypatch.setattr(claims, "read_identity", lambda path: None)
    with pytest.raises(OSError, match="can't be read back"):
        Claimer(tmp_path / "map", 3).claim_next()


def test_a_claims_dir_writable_by_others_is_refused(tmp_path):
    board = new_map(tmp_path / "map", 3)
    assert board.claims_dir.stat().st_mode & 0o777 == 0o700
    os.chmod(board.claims_dir, 0o770)
    with pytest.raises(PermissionError, match="writable by others"):
        Claimer(tmp_path / "map", 3).claim_next()
    assert os.listdir(board.claims_dir) == []


def test_the_heartbeat_is_the_claims_age(tmp_path):
    board = new_map(tmp_path / "map", 2)
    claim = Claimer(tmp_path / "map", 2).claim_next()
    os.utime(claim.path, (time.time() - 100, time.time() - 100))
    (info,) = board.claims().values()
    assert (info.chunk, info.attempt) == (0, 0) and 99 < info.age < 110
    claim.touch()
    assert board.claims()[0].age < 5
    assert board.claims()[0].identity == claim.identity
    assert board.unclaimed() == [1] and board.unclaimed(done={1}) == []


# ---------------------------------------------------------------- two caching views
def caching_views_missing() -> str | None:
    """Why two bindfs views can't be mounted here; None when they can."""
    if shutil.which("bindfs") is None or shutil.which("fusermount3") is None:
        return "bindfs or fusermount3 is not installed"
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def unmount(path: Path) -> None:
    """Unmount a view; lazily if a process still uses it, so no mount outlives the test."""
    done = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=60)
    if done.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=60)


@pytest.fixture
def two_views(tmp_path) -> Iterator[tuple[Path, Path, Path]]:
    """Two bindfs views of one backing directory, each with its own kernel caches, as
    two hosts mounting one NFS export: (the backing directory, view a, view b).
    Skipped, saying how to enable it, where bindfs can't mount; a failure instead under
    CI (CI=true, or POOLPARTY_REQUIRE_SCHEDULERS set as .ci/run sets it)."""
    why = caching_views_missing()
    if why is not None:
        message = f"{why}: {HOW_TO_ENABLE}"
        if any(os.environ.get(name) not in (None, "", "false") for name in REQUIRED_VARIABLES):
            pytest.fail(message + " (required here: CI)")
        pytest.skip(message)
    backing, views = tmp_path / "backing", (tmp_path / "a", tmp_path / "b")
    for path in (backing, *views):
        path.mkdir(mode=0o700)
    mounted = []
    try:
        for view in views:
            subprocess.run(["bindfs", "-o", CACHING, str(backing), str(view)], check=True,
                           capture_output=True, timeout=60)
            mounted.append(view)
        yield backing, *views
    finally:
        for view in mounted:
            unmount(view)


def test_claims_hold_across_two_caching_views(two_views):
    """Workers on both views race; view b caches every claim name as missing first.
    What each worker claimed is checked in the backing directory: a view may not show
    a claim made on the other by name for 30 s (the client's board reads None then)."""
    backing, view_a, view_b = two_views
    board = new_map(view_a / "map", 200)
    truth = backing / "map" / CLAIMS
    on_b = Claimer(view_b / "map", 200, listing=no_listing)
    for chunk in range(200):
        assert not (view_b / "map" / CLAIMS / f"{chunk}.0").exists()
    first = Claimer(view_a / "map", 50)
    claimed = {first.identity["worker"]: claim_all(first)}
    assert not (view_b / "map" / CLAIMS / "0.0").exists()  # view b's cache is in play
    assert on_b.claim_next().chunk == 50  # 0..49 exist, though view b thinks them missing
    claimed[on_b.identity["worker"]] = [(50, 0)]
    claimed.update(race([view_a / "map", view_b / "map"], 200))
    assert_each_once(claimed, {(chunk, 0) for chunk in range(200)}, truth)
    assert sorted(board.claims()) == list(range(200)) and board.unclaimed() == []

    board.requeue(3, 1)  # by the client on view a, claimed by workers on both views
    claimed = race([view_a / "map", view_b / "map"], 200, workers=4)
    assert_each_once(claimed, {(3, 1)}, truth)
    assert board.attempts(3) == 2 and board.unclaimed() == []
