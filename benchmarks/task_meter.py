"""Benchmark: what recording each task for the map's report costs a worker.

    python benchmarks/task_meter.py [--tasks 200000] [--repeat 5]

Runs the worker's own task loop (``poolparty.worker.run_tasks``) over trivial tasks
(``abs``), with the TaskMeter the worker uses since issue 18 and without it, interleaved,
and prints the CPU per task of each (minimum over the repeats: least disturbed by other
load) and the difference: the report's price per task. Events go to /dev/null, as a
job's log would take them. No scheduler needed.
"""

from __future__ import annotations

import argparse
import os
import time

from poolparty.events import MAX_TASKS_RECORDED, WorkerEvents
from poolparty.worker import TaskMeter, run_tasks


def per_task(tasks: list, meter: bool, events: WorkerEvents) -> float:
    """CPU seconds per task of one run of the loop, in claims of 2000 tasks."""
    start = time.process_time()
    for first in range(0, len(tasks), MAX_TASKS_RECORDED):
        claim = tasks[first:first + MAX_TASKS_RECORDED]
        recorder = TaskMeter(MAX_TASKS_RECORDED) if meter else None
        run_tasks(abs, claim, False, first, events, recorder)
        if recorder is not None:
            recorder.summary()
    return (time.process_time() - start) / len(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    arguments = parser.parse_args()
    tasks = list(range(-arguments.tasks // 2, arguments.tasks // 2))
    with open(os.devnull, "wb") as sink:
        events = WorkerEvents(0, sink.fileno())
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(arguments.repeat):
            for meter in (False, True):
                runs[meter].append(per_task(tasks, meter, events))
    without, with_meter = min(runs[False]), min(runs[True])
    print(f"{len(tasks)} trivial tasks, minimum of {arguments.repeat} runs, CPU per task:")
    print(f"  without the report's TaskMeter  {without * 1e6:6.2f} us")
    print(f"  with it (as workers run now)    {with_meter * 1e6:6.2f} us")
    print(f"  the report's price per task     {(with_meter - without) * 1e6:6.2f} us "
          f"({with_meter / without:.2f} times)")


if __name__ == "__main__":
    main()
