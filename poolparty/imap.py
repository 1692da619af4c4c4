"""imap and imap_unordered: results as they arrive, the input read as workers need it.

A sized input (a list, a range: already in memory) is one map, as map's. Any other
iterable (a generator, perhaps endless) is read in segments, each one map of its own on
the same pool, growing from FIRST_SEGMENT to LARGEST_SEGMENT tasks (times the chunksize,
if one is given). The next segment is read only while the tasks read but not yet handed
to the caller are no more than half its size, so at most one and a half of the largest
segment is ever read ahead: memory stays bounded however long the input, and a caller
who stops iterating stops the reading (``islice(imap(f, count()), n)``).

With warm workers (idle_timeout > 0) two segments may run at once: the next one starts
once every task of the last one is claimed, while its tail runs, and counts that one's
workers as its own, so they move on to it through the lobby as they finish instead of
new jobs being submitted.
With ``idle_timeout=0`` (workers leave with their map) segments run one after another.

An exception raised by the input comes out of ``next()`` at its position, after the
results before it, and ends the iteration, as with multiprocessing.Pool.

Each segment is an ordinary map: its work_dir is named by its code and inputs, so a
segment is reused after a crash only where what it computes is the same.
"""

from __future__ import annotations

import multiprocessing
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from functools import partial
from typing import Any

from .engine import MapRun, raise_task_error
from .errors import PoolTerminated
from .maps import Maps, PreparedMap
from .waiting import WAIT_SLICE_SECONDS, cancelled_on_interrupt, wait_in_slices
from .work_dir import WorkDir

#: tasks in the first and the largest segment of an input read lazily
FIRST_SEGMENT = 64
LARGEST_SEGMENT = 4096


class Feed:
    """What the threads that read the input and run the segments share with the
    iterator: outcomes by task position, how far the caller has come, how it ends."""

    def __init__(self, ordered: bool) -> None:
        self.condition = threading.Condition()
        self.arrived: dict[int, tuple[Any, WorkDir]] = {}  # position -> (outcome, work_dir)
        #: imap_unordered: the positions arrived and not yet handed out, in arrival order
        self.arrival_order: deque[int] | None = None if ordered else deque()
        self.position = 0  # results handed to the caller
        self.length: int | None = None  # known once the input is read to its end
        self.input_error: tuple[int, BaseException] | None = None
        self.failure: BaseException | None = None  # a segment that could not finish
        self.runs: list[MapRun] = []  # the segments running
        self.given_up = False  # the caller dropped the iterator or was interrupted
        self.dropped = False  # the caller dropped the iterator

    def end(self, length: int, error: BaseException | None = None) -> None:
        """The input ended after ``length`` tasks; ``error``: by raising it, which the
        caller sees at that position."""
        with self.condition:
            if error is None:
                self.length = length
            else:
                self.input_error = (length, error)
                if self.arrival_order is not None:
                    self.arrival_order.append(length)
                self.length = length + 1
            self.condition.notify_all()

    def fail(self, error: BaseException) -> None:
        with self.condition:
            if self.failure is None:
                self.failure = error
            self.condition.notify_all()

    def give_up(self) -> list[MapRun]:
        """Stop reading the input; the segments running, to be stopped by the caller
        (Ctrl-C: they stop as any map does, their work_dirs kept for a rerun)."""
        with self.condition:
            self.given_up = True
            self.condition.notify_all()
            return list(self.runs)

    def drop(self) -> None:
        """The caller dropped the iterator (``islice`` took what it wanted): stop
        reading, and stop the segments running, leaving neither jobs nor files (no one
        will ask for their results). Not after an interrupt: those segments stopped
        as any map does, their work_dirs kept."""
        with self.condition:
            if self.given_up:
                return
            self.dropped = True
        for run in self.give_up():
            run.abandoned = True
            run.stop.set()

    def wait_for_room(self, read: int, size: int, at_once: int,
                      stopped: Callable[[], bool]) -> bool:
        """Wait until another segment of ``size`` tasks may be read (False: never):
        ``read`` tasks are read, and fewer than half a segment waits for the caller."""
        with self.condition:
            while True:
                if self.given_up or self.failure is not None or stopped():
                    return False
                if (read - self.position <= size // 2 and len(self.runs) < at_once
                        and all(run.all_claimed for run in self.runs)):
                    return True
                self.condition.wait(WAIT_SLICE_SECONDS)

    def run_segment(self, maps: Maps, prepared: PreparedMap, offset: int) -> None:
        """Drive one segment, its outcomes placed at their position in the whole input."""
        try:
            for tasks, outcomes in maps.chunk_outcomes(prepared):
                with self.condition:
                    for index, outcome in zip(tasks, outcomes):
                        self.arrived[offset + index] = (outcome, prepared.work_dir)
                        if self.arrival_order is not None:
                            self.arrival_order.append(offset + index)
                    self.condition.notify_all()
        except BaseException as error:  # noqa: BLE001 - raised to the iterating caller
            self.fail(error)
        finally:
            with self.condition:
                self.runs.remove(prepared.run)
                self.condition.notify_all()

    def start_segment(self, maps: Maps, prepared: PreparedMap, offset: int,
                      start_thread: Callable[[Callable[[], None]], None]) -> None:
        """Run a prepared segment; one prepared while the caller gave up stops at once
        (and leaves nothing if the iterator was dropped)."""
        with self.condition:
            self.runs.append(prepared.run)
            prepared.run.abandoned = self.dropped
            if self.given_up:
                prepared.run.stop.set()
        start_thread(partial(self.run_segment, maps, prepared, offset))


def read_lazily(feed: Feed, maps: Maps, func: Callable, iterable: Iterable,
                chunksize: int | None,
                start_thread: Callable[[Callable[[], None]], None],
                resources: dict | None = None) -> None:
    """The reading thread: segment after segment, as room is made (see the module's
    docstring). It holds no reference to the iterator: one dropped by its caller is
    collected, and the reading stops."""
    unit = chunksize or 1
    size, largest = FIRST_SEGMENT * unit, max(LARGEST_SEGMENT, 2 * maps.settings.capacity * unit)
    at_once = 2 if maps.keeps_workers_warm() else 1
    source = iter(iterable)
    read = 0
    try:
        while feed.wait_for_room(read, size, at_once, maps.stopped):
            batch, error = read_batch(source, size)
            if batch:
                try:
                    prepared = maps.prepare(func, batch, chunksize, group=feed,
                                            resources=resources)
                except Exception as bad_input:  # noqa: BLE001 - a task that can't be pickled
                    feed.end(read, bad_input)
                    return
                feed.start_segment(maps, prepared, read, start_thread)  # type: ignore[arg-type]
                read += len(batch)
            if error is not None or len(batch) < size:
                feed.end(read, error)
                return
            size = min(2 * size, largest)
        if maps.stopped():
            feed.fail(PoolTerminated("the pool was terminated while imap read its input"))
    except BaseException as error:  # noqa: BLE001 - raised to the iterating caller
        feed.fail(error)


def read_batch(source: Iterator, size: int) -> tuple[list, Exception | None]:
    """Up to ``size`` items, and the exception the input raised, if it did."""
    batch: list = []
    try:
        for _ in range(size):
            batch.append(next(source))
    except StopIteration:
        pass
    except Exception as error:  # noqa: BLE001 - raised to the caller at its position
        return batch, error
    return batch, None


def start_imap(maps: Maps, func: Callable, iterable: Iterable, chunksize: int | None,
               ordered: bool, start_thread: Callable[[Callable[[], None]], None],
               resources: dict | None = None) -> IMapIterator:
    """imap's work: a sized input is prepared here (a task that can't be pickled raises
    from imap() itself, as map's); any other is read by a thread of its own."""
    feed = Feed(ordered)
    if isinstance(iterable, Sized):
        prepared = maps.prepare(func, iterable, chunksize, resources=resources)
        feed.end(0 if prepared is None else prepared.num_tasks)
        if prepared is not None:
            feed.start_segment(maps, prepared, 0, start_thread)
    else:
        maps.check_map_arguments(func, chunksize, resources)
        start_thread(partial(read_lazily, feed, maps, func, iterable, chunksize,
                             start_thread, resources))
    return IMapIterator(feed, ordered)


class IMapIterator:
    """What imap and imap_unordered return: results as they arrive."""

    def __init__(self, feed: Feed, ordered: bool) -> None:
        self._feed = feed
        self._ordered = ordered
        # a dropped iterator stops the reading of its input
        self._finalizer = weakref.finalize(self, feed.drop)
        self._finalizer.atexit = False  # at exit the pool stops its maps as any

    def __iter__(self) -> IMapIterator:
        return self

    def next(self, timeout: float | None = None) -> Any:
        """The next result; Ctrl-C while waiting cancels the jobs of the segments
        running and stops the reading of the input."""
        feed = self._feed
        with cancelled_on_interrupt(feed.give_up), feed.condition:
            if not wait_in_slices(partial(feed.condition.wait_for, self._has_next), timeout):
                raise multiprocessing.TimeoutError
            if feed.length is not None and feed.position >= feed.length:
                raise StopIteration
            index = self._take_next_index()
            if feed.input_error is not None and index == feed.input_error[0]:
                feed.position += 1
                raise feed.input_error[1]
            if index not in feed.arrived:  # woken by a failure: nothing more comes
                feed.length = feed.position
                raise feed.failure  # type: ignore[misc]
            outcome, work_dir = feed.arrived.pop(index)
            feed.position += 1
        if outcome[0]:
            return outcome[1]
        raise_task_error(outcome, index, work_dir)

    __next__ = next

    def _take_next_index(self) -> int:
        """The position whose result next() hands out (imap_unordered: taken off the
        arrival queue)."""
        feed = self._feed
        if self._ordered:
            return feed.position
        if feed.arrival_order:
            return feed.arrival_order.popleft()
        return -1

    def _has_next(self) -> bool:
        feed = self._feed
        if feed.failure is not None or (feed.length is not None
                                        and feed.position >= feed.length):
            return True
        if self._ordered:
            return feed.position in feed.arrived or (
                feed.input_error is not None and feed.input_error[0] == feed.position)
        return bool(feed.arrival_order)
