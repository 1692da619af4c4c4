"""Benchmark: a map run by workers started by hand, none submitted by the pool, side by
side with dask's workers started by hand, in one run.

    benchmarks/.venv/bin/python benchmarks/hand_workers.py --repeat 3

Each tool maps ``nap`` (10 ms of sleep) over ``--tasks`` tasks with ``--workers``
workers that the benchmark starts as a user would by hand, and is timed from the call to
the last result, the start of the workers included:

* ``poolparty-hand``: ``Pool(submit_workers=False)``; ``map_async``, then
  ``poolparty worker MAP_DIR`` started ``--workers`` times on this host (a login node,
  a workstation);
* ``poolparty-srun``: the same workers started by one ``srun -n W poolparty worker
  MAP_DIR`` (a job step on the test SLURM, as in an allocation);
* ``dask-hand``: ``dask scheduler`` and ``--workers`` ``dask worker --nthreads 1``
  started by hand, ``client.gather(client.map(nap, tasks))`` (the scheduler's start
  is not timed: a dask user starts it once).

The map completing at all is the first result (no worker is submitted: without the
hand-started ones it would wait forever); the time says what joining costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ("poolparty-hand", "poolparty-srun", "dask-hand")


def nap(x: int) -> int:
    time.sleep(0.01)
    return x


def worker_command() -> list[str]:
    return [sys.executable, "-m", "poolparty.cli", "worker"]


def run_poolparty(tasks: int, workers: int, srun: bool, root: Path) -> float:
    import poolparty

    with poolparty.Pool(workers, backend="local", submit_workers=False,
                        work_dir=root) as pool:
        start = time.monotonic()
        result = pool.map_async(nap, range(tasks))
        map_dir = str(result._prepared.work_dir.path)  # the directory the client logs
        if srun:
            started = [subprocess.Popen(["srun", "--quiet", "-n", str(workers),
                                         *worker_command(), map_dir],
                                        stdout=subprocess.DEVNULL)]
        else:
            started = [subprocess.Popen([*worker_command(), map_dir],
                                        stdout=subprocess.DEVNULL)
                       for _ in range(workers)]
        values = result.get(timeout=300)
        seconds = time.monotonic() - start
        for process in started:
            process.wait(timeout=60)
    if values != list(range(tasks)):
        raise RuntimeError("wrong results")
    return seconds


def run_dask(tasks: int, workers: int, root: Path) -> float:
    from distributed import Client

    scheduler_file = root / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    scheduler = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started: list[subprocess.Popen] = []
    try:
        while not scheduler_file.exists():
            time.sleep(0.05)
        time.sleep(0.2)  # the file is written before the scheduler listens
        start = time.monotonic()
        started = [subprocess.Popen([str(bin_dir / "dask"), "worker", "--nthreads", "1",
                                     "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for _ in range(workers)]
        with Client(scheduler_file=str(scheduler_file)) as client:
            values = client.gather(client.map(nap, range(tasks)))
        seconds = time.monotonic() - start
    finally:
        for process in [*started, scheduler]:
            process.terminate()
            process.wait(timeout=30)
    if values != list(range(tasks)):
        raise RuntimeError("wrong results")
    return seconds


def child(tool: str, tasks: int, workers: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="pp-hand-", dir=os.getcwd()))
    try:
        if tool == "dask-hand":
            seconds = run_dask(tasks, workers, root)
        else:
            seconds = run_poolparty(tasks, workers, tool == "poolparty-srun", root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tasks, args.workers)
        return
    ideal = args.tasks * 0.01 / args.workers
    print(f"{args.tasks} tasks of 10 ms on {args.workers} workers started by hand "
          f"(ideal {ideal:.2f} s); medians of {args.repeat}, rounds interleaved")
    times: dict[str, list[float]] = {tool: [] for tool in args.tools}
    for _ in range(args.repeat):
        for tool in args.tools:
            done = subprocess.run([sys.executable, __file__, "--child", tool, "--tasks",
                                   str(args.tasks), "--workers", str(args.workers)],
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                print(f"{tool}: failed: {done.stderr.strip().splitlines()[-3:]}")
                continue
            times[tool].append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    base = statistics.median(times["poolparty-hand"]) if times.get("poolparty-hand") else None
    print(f"{'tool':<16}{'median s':>10}{'runs':>28}{'vs pp':>8}")
    for tool, values in times.items():
        if not values:
            continue
        median = statistics.median(values)
        runs = " ".join(f"{v:.2f}" for v in values)
        ratio = f"{median / base:.2f}" if base else "-"
        print(f"{tool:<16}{median:>10.2f}{runs:>28}{ratio:>8}")


if __name__ == "__main__":
    main()
