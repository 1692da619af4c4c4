"""Executor: a concurrent.futures.Executor whose calls run as batch jobs.

Code written for ``concurrent.futures`` submits one call at a time, often from a loop.
One job per call would flood the scheduler, so calls submitted close together are
gathered into one batch, and a batch is one map of the engine (its workers pull the
calls as any map's tasks). Each call's Future resolves as soon as the result file of
the chunk holding it arrives, so ``concurrent.futures.wait`` and ``as_completed`` work
as usual.

Futures stay cancellable while their call is queued or running: once every call of a
batch still without a result has been cancelled, the batch's workers are cancelled
(nothing else needs them).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor as _Executor
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from .engine import attach_remote_traceback
from .maps import PreparedMap
from .pool import CANCEL_WAIT_SECONDS, Pool


@dataclass
class _Call:
    future: Future
    function: Callable
    args: tuple
    kwargs: dict


@dataclass
class _Batch:
    calls: list[_Call]
    prepared: PreparedMap | None = None


class Executor(_Executor):
    """``concurrent.futures.Executor`` on poolparty: ``max_workers`` caps the jobs
    running at once; other keyword arguments are those of :class:`poolparty.Pool`.

    ``batch_delay`` is how long the executor waits for more calls after one arrives
    (a quiet gap; at most ``max_batch_wait`` seconds in all) before submitting.
    """

    def __init__(self, max_workers: int | None = None, *, batch_delay: float = 0.1,
                 max_batch_wait: float = 1.0, **pool_options: Any) -> None:
        self._pool = Pool(max_workers, **pool_options)
        self._batch_delay = batch_delay
        self._max_batch_wait = max_batch_wait
        self._waiting: list[_Call] = []
        self._condition = threading.Condition()
        self._shutdown = False
        self._batch_threads: list[threading.Thread] = []
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True,
                                            name="poolparty-executor")
        self._dispatcher.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` and return its Future.

        Calls submitted close together (until a quiet gap of ``batch_delay``, at most
        ``max_batch_wait`` in all) go to the scheduler as one map.
        """
        with self._condition:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            call = _Call(Future(), fn, args, kwargs)
            self._waiting.append(call)
            self._condition.notify_all()
            return call.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions. ``cancel_futures`` cancels every call without a result
        yet (their jobs are cancelled); ``wait`` waits for the rest to finish."""
        with self._condition:
            self._shutdown = True
            self._condition.notify_all()
        if cancel_futures:
            with self._condition:
                calls = list(self._waiting)
            for batch_call in calls:
                batch_call.future.cancel()
            for batch in list(self._batches):
                for call in batch.calls:
                    call.future.cancel()
        self._pool.close()
        if wait:
            self._dispatcher.join()
            for thread in list(self._batch_threads):
                thread.join()
            self._pool.join()

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> bool:
        """Leaving the ``with`` block waits for the calls, as in concurrent.futures,
        except on Ctrl-C (KeyboardInterrupt, or another BaseException): then every call
        is cancelled, its jobs with it, and the exception goes on within seconds."""
        if kind is not None and not issubclass(kind, Exception):
            self._cancel_everything()
            return False
        return bool(super().__exit__(kind, *rest))

    def _cancel_everything(self) -> None:
        """No more submissions, calls not yet submitted cancelled, every running map
        stopped; wait a few seconds at most for their jobs to be cancelled."""
        with self._condition:
            self._shutdown = True
            waiting, self._waiting = self._waiting, []
            self._condition.notify_all()
        for call in waiting:
            call.future.cancel()
        self._pool.close()
        self._pool.maps.stop_all(CANCEL_WAIT_SECONDS)

    # ------------------------------------------------------------------ batching
    @property
    def _batches(self) -> list[_Batch]:
        return [thread.batch for thread in self._batch_threads]

    def _dispatch(self) -> None:
        """Gather calls into batches and start a map for each."""
        while True:
            calls = self._next_batch()
            if calls is None:
                return
            live = [call for call in calls if not call.future.cancelled()]
            if live:
                batch = _Batch(live)
                thread = threading.Thread(target=self._run, args=(batch,), daemon=True,
                                          name="poolparty-batch")
                thread.batch = batch  # type: ignore[attr-defined]
                self._batch_threads.append(thread)
                thread.start()

    def _next_batch(self) -> list[_Call] | None:
        with self._condition:
            self._condition.wait_for(lambda: self._waiting or self._shutdown)
            if not self._waiting:
                return None
            first_arrival = time.monotonic()
            while not self._shutdown:
                count = len(self._waiting)
                left = self._max_batch_wait - (time.monotonic() - first_arrival)
                if left <= 0:
                    break
                self._condition.wait(min(self._batch_delay, left))
                if len(self._waiting) == count:  # a quiet gap: the loop has ended
                    break
            calls, self._waiting = self._waiting, []
            return calls

    def _run(self, batch: _Batch) -> None:
        """One batch = one map; resolve each Future as its chunk arrives."""
        try:
            batch.prepared = self._pool.maps.prepare_calls(
                [(c.function, c.args, c.kwargs) for c in batch.calls]
            )
            assert batch.prepared is not None
            for call in batch.calls:
                call.future.add_done_callback(lambda _: self._maybe_abandon(batch))
            for index, outcome in self._pool.maps.outcomes(batch.prepared):
                _resolve(batch.calls[index].future, outcome)
        except BaseException as error:  # noqa: BLE001 - the futures carry it to the caller
            for call in batch.calls:
                if not call.future.done() and call.future.set_running_or_notify_cancel():
                    call.future.set_exception(error)

    def _maybe_abandon(self, batch: _Batch) -> None:
        """A future of this batch was cancelled: its task is not needed any more; once no
        task of the batch is needed, its map ends and its workers are cancelled."""
        prepared = batch.prepared
        if prepared is None:
            return
        cancelled = [i for i, call in enumerate(batch.calls) if call.future.cancelled()]
        if cancelled:
            prepared.run.abandon(cancelled)


def _resolve(future: Future, outcome: tuple) -> None:
    if not future.set_running_or_notify_cancel():
        return  # cancelled meanwhile
    if outcome[0]:
        future.set_result(outcome[1])
    else:
        future.set_exception(attach_remote_traceback(outcome))
