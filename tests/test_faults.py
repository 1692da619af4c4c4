"""The cluster's bad days: jobs dying, error states, failing commands, Ctrl-C.

Each test ends with every correct result or a clear error, never a hang (pytest-timeout
bounds them all). The dummy scheduler stands in for what a real one can't be made to do
on demand; jobs killed mid-map and Ctrl-C also run on the real SLURM.
"""

from __future__ import annotations

import _thread
import logging
import os
import pickle
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import the_map_dir, wait_for

import poolparty
from poolparty.events import CHUNK_STARTED, FINISHED


def slow_identity(x):
    time.sleep(1.5)
    return x


def test_jobs_killed_mid_map_are_resubmitted_and_every_result_comes_back(cluster_backend):
    pool = cluster_backend.make_pool(max_num_resubmissions=3)
    with ThreadPoolExecutor(1) as thread:
        mapped = thread.submit(pool.map, slow_identity, range(16), chunksize=2)
        wait_for(lambda: cluster_backend.running_count() >= 2, 60, "two running jobs")
        killed = cluster_backend.kill_running(2)
        assert len(killed) == 2
        assert mapped.result(timeout=120) == list(range(16))


def test_ctrl_c_cancels_every_job_of_the_map_and_keeps_the_work_dir(backend, work_root):
    pool = backend.make_pool()

    def interrupt_once_running():
        wait_for(lambda: backend.running_count() >= 1, 60, "a running job")
        _thread.interrupt_main()

    threading.Thread(target=interrupt_once_running, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        pool.map(slow_identity, range(40), chunksize=1)
    wait_for(lambda: backend.running_count() == 0 and backend.queued_jobs() == [], 30,
             "the queue to empty")
    (map_dir,) = work_root.iterdir()
    assert (map_dir / "tasks.pkl").exists()


def test_jobs_in_an_error_state_are_cancelled_and_resubmitted(dummy):
    dummy.queue.inject(error_state=2)
    assert dummy.make_pool().map(abs, range(-6, 0), chunksize=1) == [6, 5, 4, 3, 2, 1]
    assert dummy.queue.history().get(dummy.command["cancel"], 0) >= 1


def test_jobs_vanishing_without_output_are_resubmitted(dummy):
    dummy.queue.inject(vanish=3)
    assert dummy.make_pool().map(abs, range(-6, 0), chunksize=1) == [6, 5, 4, 3, 2, 1]


def test_jobs_that_always_die_end_in_an_error_naming_the_tasks(dummy, work_root):
    dummy.queue.inject(vanish=1000)
    with pytest.raises(poolparty.ChunksLostError) as caught:
        dummy.make_pool(max_num_resubmissions=1).map(abs, range(4), chunksize=2)
    assert caught.value.task_indices == [0, 1, 2, 3]
    (map_dir,) = work_root.iterdir()
    assert str(map_dir) in str(caught.value)
    assert dummy.queue.history()[dummy.command["submit"]] >= 2  # first submission + one more


def python_failing_worker(tmp_path: Path) -> Path:
    """A python that runs anything but the worker, which dies before it starts (as a
    job's process can on a broken node): a lost job, not a task's crash."""
    bad_python = tmp_path / "python"
    bad_python.write_text(
        "#!/bin/sh\n"
        "case \"$2\" in poolparty.worker) echo 'node says: segfault' >&2; exit 139;; esac\n"
        f"exec {__import__('sys').executable} \"$@\"\n"
    )
    bad_python.chmod(0o755)
    return bad_python


def test_a_job_crashing_shows_its_stderr_tail_in_the_error(dummy, tmp_path):
    bad_python = python_failing_worker(tmp_path)
    with pytest.raises(poolparty.ChunksLostError, match="node says: segfault") as caught:
        dummy.make_pool(python_path=str(bad_python), max_num_resubmissions=1).map(abs, [1])
    message = str(caught.value)
    assert "the worker was killed by signal 11" in message  # from job.sh: how it ended
    assert "submission 1: its job left the queue without a result" in message
    assert "submission 2: its job left the queue without a result" in message


def print_then_die(x):
    print(f"task {x} prints, then its process dies", flush=True)
    os._exit(3)


def test_the_tail_in_the_error_is_the_jobs_output_without_the_workers_events(dummy):
    with pytest.raises(poolparty.TaskCrashedError) as caught:
        dummy.make_pool(max_num_resubmissions=0).map(print_then_die, [1])
    message = str(caught.value)
    assert "task 1 prints, then its process dies" in message
    assert "the worker exited with status 3" in message
    assert "poolparty-event" not in message and CHUNK_STARTED not in message
    assert "poolparty-task" not in message


@pytest.mark.parametrize("fault", [
    {"fail": {"query": 3}},
    {"empty": {"query": 1}},
    {"fail": {"submit": 1}},
    {"hang": {"query": (4, 1)}},
    {"fail": {"cancel": 2}, "error_state": 1},
])
def test_failing_scheduler_commands_are_retried_and_the_map_completes(dummy, fault):
    dummy.queue.inject(**{
        kind: {dummy.command[role]: value for role, value in setting.items()}
        if isinstance(setting, dict) else setting
        for kind, setting in fault.items()
    })
    pool = dummy.make_pool(call_timeout=6, polling_interval=0.3)
    assert pool.map(slow_identity, range(4), chunksize=1) == [0, 1, 2, 3]


def test_a_map_asks_squeue_at_most_once_per_polling_interval(dummy):
    pool = dummy.make_pool(polling_interval=1.0)
    start = time.monotonic()
    assert pool.map(slow_identity, range(16), chunksize=1) == list(range(16))
    elapsed = time.monotonic() - start
    assert dummy.queue.history().get(dummy.command["query"], 0) <= elapsed / 1.0 + 1


def test_a_result_that_arrives_from_a_job_thought_lost_is_used(dummy, work_root):
    """NFS may show a result late: a duplicate from the resubmitted job is harmless."""
    dummy.queue.inject(empty={dummy.command["query"]: 4})
    pool = dummy.make_pool(keep_work_dir=True, polling_interval=0.2)
    assert pool.map(slow_identity, range(3), chunksize=1) == [0, 1, 2]
    (map_dir,) = work_root.iterdir()
    with zipfile.ZipFile(map_dir / "results.zip") as results:
        assert sorted(results.namelist()) == ["0.pkl", "1.pkl", "2.pkl"]


def test_a_map_larger_than_max_array_size_is_split_into_several_arrays(tmp_path, work_root):
    from poolparty.dummy_schedulers import DummyQueue

    queue = DummyQueue(tmp_path / "small_arrays", max_array_size=5)
    pool = poolparty.Pool(backend="slurm-array", commands=queue.commands(),
                          work_dir=work_root, polling_interval=0.2, processes=12)
    assert pool.map(abs, range(-12, 0), chunksize=1) == list(range(12, 0, -1))
    assert queue.history()["sbatch"] == 3  # indices 0-4 in each: workers 0-4, 5-9, 10-11


def jobs_with_work_left(queue, work_root: Path) -> int:
    """Queued per-job SLURM jobs whose worker has not finished: pending ones, and running
    ones whose log lacks the worker's "finished" event. A job that delivered its result
    may stay listed a moment while it exits, and one gathered already has its log
    archived: neither holds a slot for work."""
    logs_dirs = [d / "logs" for d in work_root.glob("[!.]*")]
    count = 0
    for job in queue.jobs():
        if job["state"] == "PENDING":
            count += 1
            continue
        for logs_dir in logs_dirs:
            try:
                log = (logs_dir / f"{job['job_id']}.log").read_bytes()
            except OSError:
                continue
            count += FINISHED not in log
    return count


def test_per_job_slurm_keeps_at_most_processes_jobs_in_the_queue(tmp_path, work_root):
    from conftest import dummy_backend

    backend = dummy_backend("slurm", work_root, tmp_path / "queue")
    most_queued, done = 0, threading.Event()

    def watch():
        nonlocal most_queued
        while not done.is_set():
            if work_root.exists():
                most_queued = max(most_queued, jobs_with_work_left(backend.queue, work_root))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        pool = backend.make_pool(processes=2)
        assert pool.map(slow_identity, range(6), chunksize=1) == list(range(6))
    finally:
        done.set()
        watcher.join()
        backend.queue.shutdown(timeout=30)
    assert most_queued == 2
    assert backend.queue.history()["sbatch"] == 2  # two workers pulled the six tasks


def test_a_job_listed_running_whose_worker_never_starts_is_resubmitted(dummy, monkeypatch):
    """SGE can lose a task on its way to the node and list it as running for ever: a
    chunk shown running with no worker started, past a limit, is cancelled and resubmitted
    instead of the map waiting for ever."""
    from poolparty import engine

    monkeypatch.setattr(engine, "STUCK_AFTER_SECONDS", 1.0)
    dummy.queue.inject(stuck=1)
    assert dummy.make_pool(processes=1).map(abs, range(-3, 3), chunksize=1) == [3, 2, 1, 0, 1, 2]
    assert dummy.queue.history()[dummy.command["submit"]] >= 2  # a worker in its place
    assert dummy.queued_jobs() == []  # the stuck job was cancelled


def test_a_job_that_stays_stuck_ends_in_an_error_saying_so(dummy, monkeypatch):
    from poolparty import engine

    monkeypatch.setattr(engine, "STUCK_AFTER_SECONDS", 0.5)
    dummy.queue.inject(stuck=1000)
    with pytest.raises(poolparty.ChunksLostError, match="no worker ever started"):
        dummy.make_pool(max_num_resubmissions=1).map(abs, [1])
    assert dummy.queued_jobs() == []


def test_a_result_late_past_the_resubmission_limit_is_still_used(dummy, work_root,
                                                                 monkeypatch, caplog):
    """On NFS a directory listing can miss a new file for up to a minute: a chunk whose
    jobs all seemed to die gets that long for its result before the map fails."""
    from poolparty import engine
    from poolparty.map_files import MapFiles

    monkeypatch.setattr(engine, "LATE_RESULT_SECONDS", 300.0)
    dummy.queue.inject(vanish=1000)
    pool = dummy.make_pool(max_num_resubmissions=1)
    with caplog.at_level(logging.WARNING, logger="poolparty"), ThreadPoolExecutor(1) as thread:
        # one task: once its attempts are spent, no other work could want a worker
        mapped = thread.submit(pool.map, abs, [-5])
        wait_for(lambda: "may still be on its way" in caplog.text, 60, "the wait for late results")
        submissions = dummy.queue.history()[dummy.command["submit"]]
        # what the worker wrote, seen only now
        MapFiles(the_map_dir(work_root)).write_result(0, pickle.dumps((0, [(True, 5)])))
        assert mapped.result(timeout=60) == [5]
    # while waiting, nothing more was submitted
    assert dummy.queue.history()[dummy.command["submit"]] == submissions


def test_without_a_late_result_the_map_fails_once_the_wait_is_over(dummy, monkeypatch):
    from poolparty import engine

    monkeypatch.setattr(engine, "LATE_RESULT_SECONDS", 1.0)
    dummy.queue.inject(vanish=1000)
    started = time.monotonic()
    with pytest.raises(poolparty.ChunksLostError) as caught:
        dummy.make_pool(max_num_resubmissions=1).map(abs, [1])
    assert time.monotonic() - started >= 1.0
    message = str(caught.value)
    assert "submission 2: its job left the queue without a result" in message
    assert "no result came in the 1 s waited after that" in message
    assert caught.value.task_indices == [0]


def test_local_maps_give_up_without_waiting_for_late_results(work_root, monkeypatch,
                                                            tmp_path):
    """Local workers write on the client's own host: nothing can arrive late."""
    from conftest import local_backend

    from poolparty import engine

    monkeypatch.setattr(engine, "LATE_RESULT_SECONDS", 300.0)
    started = time.monotonic()
    pool = local_backend(work_root).make_pool(max_num_resubmissions=0,
                                              python_path=str(python_failing_worker(tmp_path)))
    with pytest.raises(poolparty.ChunksLostError) as caught:
        pool.map(abs, [1])
    assert time.monotonic() - started < 60
    assert "waited after that" not in str(caught.value)


def hang_on_first_attempt(folder: str) -> str:
    """The first run marks that it started, then hangs until killed; a rerun returns."""
    started = Path(folder, "started")
    if not started.exists():
        started.touch()
        time.sleep(600)
    return "rerun"


def test_a_claim_listed_only_after_its_worker_was_lost_is_run_again(dummy, tmp_path,
                                                                    monkeypatch):
    """On NFS a listing can show a claim a minute late: the worker that made it may be
    taken for gone, holding nothing, before the client reads it. That claim is reopened
    when it shows, instead of being left to a dead worker while the map waits for ever."""
    from poolparty import claims, engine

    hidden = threading.Event()
    hidden.set()

    def late_listing(directory: Path) -> list[str]:
        return [] if hidden.is_set() and directory.name == claims.CLAIMS else (
            claims.list_names(directory))

    monkeypatch.setattr(engine, "ClaimBoard",
                        lambda path, n: claims.ClaimBoard(path, n, listing=late_listing))
    pool = dummy.make_pool(processes=1)
    submit = dummy.command["submit"]
    with ThreadPoolExecutor(1) as thread:
        mapped = thread.submit(pool.map, hang_on_first_attempt, [str(tmp_path)])
        wait_for(lambda: (tmp_path / "started").exists(), 60, "the first attempt")
        assert dummy.kill_running(1)
        # taken for gone holding nothing: the task looks unclaimed, a worker replaces it
        wait_for(lambda: dummy.queue.history().get(submit, 0) >= 2, 60, "a replacement")
        hidden.clear()
        assert mapped.result(timeout=120) == ["rerun"]


def refusing_second_sbatch(backend, tmp_path: Path, message: str, **options) -> dict:
    """Pool options whose sbatch refuses its second call, for good, with ``message``."""
    import shlex
    import sys

    options = backend.pool_options(**options)
    sbatch = tmp_path / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\n"
        f"calls={tmp_path}/calls\n"
        "n=$(cat $calls 2>/dev/null || echo 0); n=$((n + 1)); echo $n > $calls\n"
        f"if [ $n -eq 2 ]; then echo {shlex.quote('sbatch: error: ' + message)} >&2; exit 1; fi\n"
        f"exec {sys.executable} -m poolparty.dummy_schedulers.sbatch --queue {tmp_path / 'queue'}"
        " \"$@\"\n")
    sbatch.chmod(0o755)
    options["commands"] = {**options["commands"], "sbatch": [str(sbatch)]}
    return options


def test_workers_queued_before_a_submission_failed_half_way_are_cancelled(tmp_path, work_root):
    """Per-job SLURM submits one sbatch per worker: when the second is refused, the map
    fails with the scheduler's message, and the job the first one queued is cancelled,
    not left to run for nobody."""
    from conftest import dummy_backend

    backend = dummy_backend("slurm", work_root, tmp_path / "queue")
    options = refusing_second_sbatch(
        backend, tmp_path, "Batch job submission failed: Invalid account or "
        "account/partition combination specified", processes=3)
    with pytest.raises(poolparty.SchedulerCommandError, match="Invalid account"):
        poolparty.Pool(**options).map(slow_identity, range(3), chunksize=1)
    assert (tmp_path / "calls").read_text().strip() == "2"  # the first was queued
    assert backend.queued_jobs() == []


def test_a_worker_that_claims_while_the_scheduler_answers_is_not_taken_for_requeued(
        work_root):
    """The scheduler's answer is a snapshot: a worker it shows pending may start and
    claim before the client reads the claims. Pending and holding a claim would mean
    requeued, but only for a claim read before the question was asked; here that
    mistake would reopen a claim under a live worker (with no attempt to spare: fail)."""
    from poolparty.local import Local

    class SlowAnswer(Local):
        """Jobs start only while a query is on its way: its answer shows them pending."""

        def __init__(self, max_workers: int) -> None:
            super().__init__(max_workers)
            self.held_back: list = []

        def submit(self, work_dir, chunk_ids, steps=None):
            with self._lock:
                for chunk_id in chunk_ids:
                    self._states[(work_dir.map_id, chunk_id)] = poolparty.State.PENDING
            self.held_back += [(work_dir, chunk_id) for chunk_id in chunk_ids]

        def query(self, work_dir):
            answer = super().query(work_dir)
            if self.held_back:
                for item in self.held_back:
                    self._queue.put(item)
                self._start_slots()
                self.held_back = []
                wait_for(lambda: os.listdir(work_dir.path / "claims"), 30, "a claim")
            return answer

    pool = poolparty.Pool(backend=SlowAnswer(2), work_dir=work_root, polling_interval=0.2,
                          max_num_resubmissions=0)
    assert pool.map(slow_identity, [1, 2], chunksize=1) == [1, 2]


def test_a_replacement_refused_while_workers_run_does_not_end_the_map(tmp_path, work_root):
    """A worker is lost and its replacement refused (the user's limit of queued jobs
    reached): the worker still running finishes the map instead of it failing."""
    from conftest import dummy_backend

    backend = dummy_backend("slurm-array", work_root, tmp_path / "queue")
    options = refusing_second_sbatch(
        backend, tmp_path, "Batch job submission failed: Job violates accounting/QOS policy"
        " (job submit limit, user's size and/or time limits)", processes=2)
    with ThreadPoolExecutor(1) as thread:
        mapped = thread.submit(poolparty.Pool(**options).map, slow_identity, range(4),
                               chunksize=1)
        wait_for(lambda: backend.running_count() >= 2, 20, "two running workers")
        assert len(backend.kill_running(1)) == 1
        assert mapped.result(timeout=120) == [0, 1, 2, 3]
    assert int((tmp_path / "calls").read_text()) >= 2  # the replacement was refused
