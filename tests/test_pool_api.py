"""poolparty.Pool against multiprocessing.Pool: the same calls must behave the same.

Every test runs on multiprocessing.Pool and on poolparty's Pool over local processes,
the dummy schedulers and the real ones: results, order, errors, timeouts, callbacks,
the life cycle (close/join/terminate, the with block) and initializers.
"""

from __future__ import annotations

import itertools
import multiprocessing
import time

import pytest
from conftest import make_backend
from task_functions import TaskFailed, fail_on_three, square

import poolparty.imap

INIT_VALUE = None


def initialize(value):
    global INIT_VALUE
    INIT_VALUE = value


def read_initialized(x):
    return (INIT_VALUE, x)


def add(a, b=0, *, c=0):
    return a + b + c


def slow_square(x):
    time.sleep(3)
    return x * x


def tasks_that_break():
    yield 1
    yield 2
    raise OSError("the input file vanished")


@pytest.fixture(params=["multiprocessing", "local", "dummy-slurm-array", "dummy-sge",
                        "real-slurm-array", "real-sge"])
def make_pool(request, work_root, tmp_path):
    """A factory of pools: multiprocessing's, or poolparty's on one backend."""
    if request.param == "multiprocessing":
        def make_mp(processes=2, **kwargs):
            return multiprocessing.Pool(processes, **kwargs)
        yield make_mp
        return
    backend = make_backend(request.param, work_root, tmp_path)

    def make(processes=None, **kwargs):
        return backend.make_pool(processes=processes, **kwargs)
    yield make
    if backend.queue is not None:
        backend.queue.shutdown(timeout=30)


def test_apply_calls_with_args_and_keywords(make_pool):
    with make_pool() as pool:
        assert pool.apply(add, (1, 2), {"c": 3}) == 6


def test_apply_async_result_and_callback(make_pool):
    called = []
    with make_pool() as pool:
        result = pool.apply_async(square, (7,), callback=called.append)
        assert result.get(timeout=120) == 49
        assert result.ready() and result.successful()
    assert called == [49]


def test_apply_async_error_reaches_get_and_error_callback(make_pool):
    errors = []
    with make_pool() as pool:
        result = pool.apply_async(fail_on_three, (3,), error_callback=errors.append)
        with pytest.raises(TaskFailed, match="three is bad"):
            result.get(timeout=120)
        assert not result.successful()
    assert len(errors) == 1 and isinstance(errors[0], TaskFailed)


def test_map_async_and_starmap_async(make_pool):
    with make_pool() as pool:
        squares = pool.map_async(square, range(10))
        sums = pool.starmap_async(add, [(1, 2), (3, 4)])
        assert squares.get(timeout=120) == [x * x for x in range(10)]
        assert sums.get(timeout=120) == [3, 7]


def test_get_with_a_timeout_raises_multiprocessing_timeout_error(make_pool):
    with make_pool() as pool:
        result = pool.apply_async(slow_square, (2,))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        assert result.get(timeout=120) == 4


def test_imap_yields_in_order_and_imap_unordered_yields_everything(make_pool):
    with make_pool() as pool:
        assert list(pool.imap(square, range(12), chunksize=2)) == [x * x for x in range(12)]
        assert sorted(pool.imap_unordered(square, range(12))) == [x * x for x in range(12)]


def test_imap_raises_a_task_error_at_its_position_and_goes_on(make_pool):
    with make_pool() as pool:
        iterator = pool.imap(fail_on_three, range(6), chunksize=1)
        seen = [next(iterator) for _ in range(3)]
        with pytest.raises(TaskFailed):
            next(iterator)
        seen += list(iterator)
    assert seen == [0, 1, 2, 4, 5]


def test_imap_next_with_a_timeout(make_pool):
    with make_pool() as pool:
        iterator = pool.imap(slow_square, [3])
        with pytest.raises(multiprocessing.TimeoutError):
            iterator.next(timeout=0.05)
        assert iterator.next(timeout=120) == 9


def test_an_exception_raised_by_the_iterable_itself_reaches_the_caller(make_pool):
    with make_pool() as pool, pytest.raises(OSError, match="vanished"):
        pool.map(square, tasks_that_break())


@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
def test_an_input_that_raises_mid_way_raises_from_next_after_the_results_before_it(
        make_pool, ordered):
    """As multiprocessing: imap() itself returns; the input's exception comes out of
    next() (for imap at its position, after every result before it), once, and the
    iteration ends after the results read before it."""
    with make_pool() as pool:
        call = pool.imap if ordered else pool.imap_unordered
        iterator = call(square, tasks_that_break())
        seen, errors = [], []
        while True:
            try:
                seen.append(next(iterator))
            except StopIteration:
                break
            except OSError as error:
                errors.append(str(error))
                if ordered:
                    assert seen == [1, 4]
        assert sorted(seen) == [1, 4] and errors == ["the input file vanished"]


def test_imap_of_an_endless_input_yields_in_order(make_pool):
    if make_pool.__name__ == "make_mp":
        pytest.skip("multiprocessing reads an endless input without bound")
    with make_pool(idle_timeout=10) as pool:  # the segments run on the same workers
        taken = list(itertools.islice(pool.imap(square, itertools.count()), 300))
        assert taken == [x * x for x in range(300)]
        assert sorted(itertools.islice(pool.imap_unordered(square, itertools.count()), 5)
                      ) == [x * x for x in range(5)]


def test_imap_reads_its_input_a_bounded_distance_ahead(make_pool):
    """After ten results of a long input, at most one and a half of the largest segment
    was read beyond them (multiprocessing reads it all)."""
    if make_pool.__name__ == "make_mp":
        pytest.skip("multiprocessing reads the whole input ahead")
    read = []

    def counted():
        for x in range(100_000):
            read.append(x)
            yield x

    with make_pool() as pool:
        iterator = pool.imap(square, counted())
        assert [next(iterator) for _ in range(10)] == [x * x for x in range(10)]
        assert len(read) <= 10 + 1.5 * poolparty.imap.LARGEST_SEGMENT


def test_a_closed_pool_refuses_work_and_join_needs_close_first(make_pool):
    pool = make_pool()
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    pool.join()


def test_leaving_the_with_block_terminates_the_pool(make_pool):
    with make_pool() as pool:
        assert pool.map(square, [1, 2]) == [1, 4]
    with pytest.raises(ValueError, match="Pool not running"):
        pool.map(square, [1])


def test_close_then_join_waits_for_background_work(make_pool):
    pool = make_pool()
    result = pool.map_async(square, range(5))
    pool.close()
    pool.join()
    assert result.ready() and result.get() == [0, 1, 4, 9, 16]


def test_the_initializer_runs_in_each_worker_before_its_tasks(make_pool):
    with make_pool(initializer=initialize, initargs=("ready",)) as pool:
        assert pool.map(read_initialized, range(4)) == [("ready", x) for x in range(4)]


def test_empty_inputs(make_pool):
    with make_pool() as pool:
        assert pool.map(square, []) == []
        assert list(pool.imap(square, [])) == []
        assert pool.map_async(square, []).get(timeout=60) == []


def test_bad_processes_argument(make_pool):
    with pytest.raises(ValueError):
        make_pool(processes=0)


def test_a_pool_cannot_be_pickled(make_pool):
    import pickle

    with make_pool() as pool, pytest.raises(NotImplementedError):
        pickle.dumps(pool)
