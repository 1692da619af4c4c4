"""poolparty.Executor: a concurrent.futures.Executor whose calls are batched into jobs."""

from __future__ import annotations

import concurrent.futures
import time

import pytest
from conftest import ARRAY_BACKEND_PARAMS, made_backend, make_backend

import poolparty


def slow(x):
    time.sleep(4)
    return x


def divide(a, b):
    return a / b


@pytest.fixture(params=ARRAY_BACKEND_PARAMS)
def backend(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


def test_submit_map_wait_and_as_completed(backend):
    with backend.make_executor() as executor:
        futures = [executor.submit(pow, 2, n) for n in range(20)]
        done, not_done = concurrent.futures.wait(futures, timeout=120)
        assert not not_done
        assert [f.result() for f in futures] == [2**n for n in range(20)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(futures)) == sorted(
            2**n for n in range(20))
        assert list(executor.map(divide, [6, 8], [3, 2], timeout=120)) == [2, 4]
        assert executor.submit(lambda: "lambdas work").result(timeout=120) == "lambdas work"


def test_an_exception_in_a_call_reaches_its_future_only(backend):
    with backend.make_executor() as executor:
        bad, good = executor.submit(divide, 1, 0), executor.submit(divide, 4, 2)
        with pytest.raises(ZeroDivisionError):
            bad.result(timeout=120)
        assert isinstance(bad.exception().__cause__, poolparty.RemoteTraceback)
        assert good.result(timeout=120) == 2


def test_map_with_a_timeout_raises_timeout_error(backend):
    with backend.make_executor() as executor, pytest.raises(concurrent.futures.TimeoutError):
        list(executor.map(slow, [1], timeout=0.5))


def test_submit_after_shutdown_is_refused(backend):
    executor = backend.make_executor()
    executor.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(abs, 1)


def test_many_submissions_from_a_loop_become_a_handful_of_submissions(tmp_path, work_root):
    backend = make_backend("dummy-slurm-array", work_root, tmp_path)
    with backend.make_executor() as executor:
        futures = [executor.submit(abs, -n) for n in range(2000)]
        assert [f.result(timeout=120) for f in futures] == list(range(2000))
    assert backend.queue.history()["sbatch"] <= 5


def test_cancelling_every_future_of_a_running_job_cancels_the_job(tmp_path, work_root):
    backend = make_backend("dummy-slurm-array", work_root, tmp_path)
    with backend.make_executor() as executor:
        future = executor.submit(slow, 1)
        deadline = time.monotonic() + 60
        while backend.running_count() == 0:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        assert future.cancel()
        while backend.queued_jobs():
            assert time.monotonic() < deadline, "the job was not cancelled"
            time.sleep(0.05)
    assert future.cancelled()
    assert backend.queue.history().get("scancel", 0) >= 1


def test_shutdown_with_cancel_futures_leaves_no_job(tmp_path, work_root):
    backend = make_backend("dummy-sge", work_root, tmp_path)
    executor = backend.make_executor()
    futures = [executor.submit(slow, n) for n in range(4)]
    deadline = time.monotonic() + 60
    while backend.running_count() == 0:
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.05)
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in futures)
    assert backend.queued_jobs() == []
