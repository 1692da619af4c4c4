"""multiprocessing.Pool's behaviour where a caller's code depends on it.

Each test runs the same code on ``multiprocessing.Pool`` where it can, so what poolparty
promises is what multiprocessing does: the exception type a pickling failure raises, the
ResourceWarning of a pool left running, a repr telling the pool's state.
"""

from __future__ import annotations

import gc
import multiprocessing
import threading

import pytest
from conftest import made_backend, poolparty_context, wait_for

import poolparty


class RefusesPickling:
    """A task (or a callable) whose pickling raises a RuntimeError of its own."""

    def __reduce__(self):
        raise RuntimeError("this object stays here")

    def __call__(self, x):
        return x


def pickling_error(make_pool, func, tasks) -> BaseException:
    with pytest.raises(BaseException) as caught:
        with make_pool() as pool:
            pool.map(func, tasks)
    return caught.value


@pytest.fixture
def local_pool(work_root):
    return lambda **options: poolparty.Pool(2, backend="local", work_dir=work_root,
                                            polling_interval=0.2, **options)


@pytest.mark.parametrize("func, tasks, expected", [
    pytest.param(abs, [1, 2, RefusesPickling()], RuntimeError, id="task-reduce-raises"),
    pytest.param(id, [1, 2, threading.Lock()], TypeError, id="task-lock"),
    pytest.param(RefusesPickling(), [1, 2, 3], RuntimeError, id="function-reduce-raises"),
])
def test_a_pickling_error_reaches_the_caller_as_multiprocessing_raises_it(
        local_pool, work_root, func, tasks, expected):
    from_multiprocessing = pickling_error(lambda: multiprocessing.Pool(1), func, tasks)
    from_poolparty = pickling_error(local_pool, func, tasks)
    assert type(from_multiprocessing) is expected
    assert type(from_poolparty) is expected
    assert str(from_poolparty) == str(from_multiprocessing)
    context = poolparty_context(from_poolparty)
    assert "can't be pickled" in context
    assert ("task 2" if func in (abs, id) else "the function") in context
    assert not work_root.exists() or not any(work_root.glob("[!.]*/tasks.pkl"))


def test_except_runtime_error_catches_a_task_whose_reduce_raises(local_pool):
    try:
        local_pool().map(abs, [RefusesPickling()])
    except RuntimeError as error:
        assert "stays here" in str(error)
    else:
        raise AssertionError("no RuntimeError")


@pytest.mark.parametrize("backend_param", ["local", "dummy-slurm-array"])
def test_a_running_pool_collected_without_close_warns_as_multiprocessing(
        backend_param, work_root, tmp_path):
    with made_backend(backend_param, work_root, tmp_path) as backend:
        pool = backend.make_pool(processes=2)
        assert pool.map(abs, [-1, -2]) == [1, 2]
        with pytest.warns(ResourceWarning, match="unclosed running poolparty pool"):
            del pool
            gc.collect()


def test_a_running_pool_warns_as_soon_as_it_is_dropped(work_root):
    """pool.maps keeps no reference back to its pool: the warning (and the stop of its
    maps) come when the last reference goes, not at a later garbage collection."""
    pool = poolparty.Pool(2, backend="local", work_dir=work_root)
    assert pool.map(abs, [-1, -2]) == [1, 2]
    gc.disable()
    try:
        with pytest.warns(ResourceWarning, match="unclosed running poolparty pool"):
            del pool
    finally:
        gc.enable()


def test_multiprocessing_warns_the_same_way():
    pool = multiprocessing.Pool(1)
    pool.map(abs, [-1])
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()


@pytest.mark.parametrize("ending", ["close", "terminate", "with"])
def test_a_pool_closed_or_terminated_does_not_warn(local_pool, ending, recwarn):
    gc.collect()  # pools an earlier test left to the collector warn now, not below
    recwarn.clear()
    if ending == "with":
        with local_pool() as pool:
            pool.map(abs, [-1])
    else:
        pool = local_pool()
        pool.map(abs, [-1])
        getattr(pool, ending)()
        pool.join()
    del pool
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)
                and "poolparty" in str(w.message)]


def test_repr_tells_state_backend_and_capacity(local_pool):
    pool = local_pool()
    assert repr(pool) == "<poolparty.Pool state=RUN backend=local processes=2>"
    pool.close()
    assert "state=CLOSE" in repr(pool)
    pool.terminate()
    assert "state=TERMINATE" in repr(pool)


def test_a_local_pool_collected_leaves_no_thread_behind(local_pool):
    before = set(threading.enumerate())
    pool = local_pool()
    assert pool.map(abs, range(-4, 0), chunksize=1) == [4, 3, 2, 1]
    pool.close()
    pool.join()
    del pool
    gc.collect()
    wait_for(lambda: set(threading.enumerate()) <= before, 10, "the pool's threads to end")
