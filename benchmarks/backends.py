"""Benchmark: poolparty's maps against the bare floor, on this machine's real scheduler.

    python benchmarks/backends.py --backend slurm-array|slurm|sge [--sizes 100 1000]
                                  [--cpu-tasks 100000] [--repeat 3] [--floor-poll 0.5]
                                  [--settings default chunksize=1]
                                  [--function main|importable] [--floor-throttle 8]

For each size N it measures
  * the bare floor: one array of N ``python -c pass`` jobs (``sbatch --array=0-(N-1)``
    or ``qsub -t 1-N``), waited for by polling the queue by hand every ``--floor-poll`` s
    (a failed query counts as "still there");
  * with ``--floor-throttle K`` (SLURM only), also the same array throttled to K jobs at
    once (``--array=0-(N-1)%K``), as the pool throttles its own when given
    ``processes=K`` (the maps here are given none): what the throttle costs SLURM;
  * poolparty with default settings and with ``chunksize=1``.

The task function is ``trivial`` from this script (``main``: pickled by value, as a
lambda or a notebook's function is, so each job imports cloudpickle to load it) or the
builtin ``abs`` (``importable``: pickled by reference). It reports wall time, the ratio to
the floor, the number of queue queries (counted by a shim in front of squeue / qstat), the
peak number of files in the work_dir (sampled every 20 ms) and the client's CPU seconds
(this process, threads included; sbatch/squeue children reported apart). Finally the
client's CPU per task for a map of ``--cpu-tasks`` tasks. Pairs run in alternating order;
medians are printed. poolparty is byte-compiled first, as a wheel install leaves it.
Needs the scheduler running: ``sudo bash scripts/test_cluster.sh all``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import poolparty


def trivial(x):
    return x


def bare_floor(size: int, scheduler: str, poll: float, throttle: int = 0) -> float:
    """Submit N do-nothing jobs as one array and wait, polling by hand every ``poll``
    seconds, until they left. Polling often loads the controller (each squeue of a
    1000-element array packs 1000 records), which slows the very jobs it waits for."""
    start = time.monotonic()
    if scheduler == "sge":
        job = subprocess.run(
            ["qsub", "-terse", "-t", f"1-{size}", "-o", "/dev/null", "-j", "y", "-b", "y",
             sys.executable, "-c", "pass"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().split(".")[0]
        while still_listed(["qstat", "-xml"], f"<JB_job_number>{job}</JB_job_number>"):
            time.sleep(poll)
    else:
        job = subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{size - 1}{f'%{throttle}' if throttle else ''}",
             "--output=/dev/null",
             f"--wrap={sys.executable} -c pass"],
            capture_output=True, text=True, check=True,
        ).stdout.strip().split(";")[0]
        while still_listed(["squeue", "--noheader", "--array", f"--jobs={job}"], ""):
            time.sleep(poll)
    return time.monotonic() - start


def still_listed(argv: list[str], marker: str) -> bool:
    """Whether the queue still lists the job. A failed query (a busy controller times
    out, and prints nothing) is not "gone": it would end the floor early."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        return True
    return marker in done.stdout if marker else bool(done.stdout.strip())


class FileSampler(threading.Thread):
    """Samples the number of files under a directory; keeps the peak."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.peak, self.running = root, 0, True

    def run(self) -> None:
        while self.running:
            count = sum(len(files) for _, _, files in os.walk(self.root))
            self.peak = max(self.peak, count)
            time.sleep(0.02)


def query_shim(directory: Path, command: str) -> tuple[list[str], Path]:
    """A stand-in for squeue/qstat that counts its calls, then runs the real one."""
    counter = directory / f"{command}.calls"
    shim = directory / command
    shim.write_text(f"#!/bin/sh\necho x >> {counter}\nexec {shutil.which(command)} \"$@\"\n")
    shim.chmod(0o755)
    return [str(shim)], counter


FUNCTIONS = {"main": trivial, "importable": abs}


def run_map(backend: str, size: int, chunksize: int | None, polling_interval: float,
            sample_files: bool = True, function=trivial) -> dict:
    """One map, measured; the file sampler's own CPU is left out when it is off."""
    query = "qstat" if backend == "sge" else "squeue"
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as scratch:
        scratch_path = Path(scratch)
        shim, counter = query_shim(scratch_path, query)
        work_root = scratch_path / "work"
        pool = poolparty.Pool(backend=backend, work_dir=work_root,
                              commands={query: shim}, polling_interval=polling_interval)
        sampler = FileSampler(work_root)
        if sample_files:
            sampler.start()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        results = pool.map(function, range(size), chunksize=chunksize)
        wall = time.monotonic() - start
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler.running = False
        if sample_files:
            sampler.join()
        assert results == list(range(size))
        calls = len(counter.read_text().splitlines()) if counter.exists() else 0
        return {
            "wall_s": round(wall, 2),
            "queries": calls,
            "polls_allowed": int(wall / polling_interval) + 1,
            "peak_files": sampler.peak,
            "client_cpu_s": round(
                (self_after.ru_utime + self_after.ru_stime)
                - (self_before.ru_utime + self_before.ru_stime), 3),
            "children_cpu_s": round(
                (children_after.ru_utime + children_after.ru_stime)
                - (children_before.ru_utime + children_before.ru_stime), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="slurm-array", choices=["slurm-array", "slurm", "sge"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--cpu-tasks", type=int, default=100_000)
    parser.add_argument("--polling-interval", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is shown")
    parser.add_argument("--floor-poll", type=float, default=0.5,
                        help="seconds between the floor's queue queries")
    parser.add_argument("--settings", nargs="+", default=["default", "chunksize=1"],
                        choices=["default", "chunksize=1"])
    parser.add_argument("--function", default="main", choices=sorted(FUNCTIONS),
                        help="main: defined in this script (by value); importable: abs")
    parser.add_argument("--floor-throttle", type=int, default=0,
                        help="also time the floor with --array=...%%K (SLURM; 0: don't)")
    arguments = parser.parse_args()
    # As ``pip install`` of a wheel does: with PYTHONDONTWRITEBYTECODE set (and an editable
    # install) every job would otherwise compile poolparty's modules again at its start.
    compileall.compile_dir(os.path.dirname(poolparty.__file__), quiet=1)
    rows = []
    scheduler = "sge" if arguments.backend == "sge" else "slurm"
    for size in arguments.sizes:
        for label in arguments.settings:
            chunksize = 1 if label == "chunksize=1" else None
            runs = []
            for attempt in range(arguments.repeat):
                # Interleaved, in rotating order, so all see the same cluster and none
                # always runs right after another.
                measured = {}
                steps = {
                    "map": lambda: run_map(arguments.backend, size, chunksize,
                                           arguments.polling_interval,
                                           function=FUNCTIONS[arguments.function]),
                    "floor": lambda: bare_floor(size, scheduler, arguments.floor_poll),
                }
                if arguments.floor_throttle:
                    steps["throttled"] = lambda: bare_floor(size, scheduler, arguments.floor_poll,
                                                            arguments.floor_throttle)
                order = list(steps)
                for name in order[attempt % len(order):] + order[:attempt % len(order)]:
                    measured[name] = steps[name]()
                run, floor = measured["map"], measured["floor"]
                run.update(floor_s=round(floor, 2), ratio_to_floor=round(run["wall_s"] / floor, 2))
                if "throttled" in measured:
                    throttled = measured["throttled"]
                    run.update(throttled_floor_s=round(throttled, 2),
                               ratio_to_throttled_floor=round(run["wall_s"] / throttled, 2))
                runs.append(run)
                print(json.dumps({"tasks": size, "settings": label,
                                  "function": arguments.function, **run}), flush=True)
            # the table's row: the run whose ratio is the (upper) median; the summary line
            # gives the true medians: of the paired ratios, and of walls and floors apart
            middle = sorted(runs, key=lambda r: r["ratio_to_floor"])[len(runs) // 2]
            rows.append({"tasks": size, "settings": label + " (median)", **middle})
            median_wall = statistics.median(r["wall_s"] for r in runs)
            median_floor = statistics.median(r["floor_s"] for r in runs)
            print(json.dumps({
                "tasks": size, "settings": label, "function": arguments.function,
                "median_ratio": round(statistics.median(r["ratio_to_floor"] for r in runs), 3),
                "median_wall_s": median_wall, "median_floor_s": median_floor,
                "ratio_of_medians": round(median_wall / median_floor, 2),
            }), flush=True)
    if arguments.cpu_tasks:
        row = {"tasks": arguments.cpu_tasks, "settings": "default"}
        row.update(run_map(arguments.backend, arguments.cpu_tasks, None, arguments.polling_interval,
                           sample_files=False))
        row["client_cpu_us_per_task"] = round(1e6 * row["client_cpu_s"] / arguments.cpu_tasks, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{arguments.backend}:")
    print("| tasks | settings | wall s | floor s | ratio | queries | peak files | client CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['tasks']} | {row['settings']} | {row['wall_s']} | {row.get('floor_s', '')} "
              f"| {row.get('ratio_to_floor', '')} | {row['queries']} | {row['peak_files']} "
              f"| {row['client_cpu_s']} |")


if __name__ == "__main__":
    main()
