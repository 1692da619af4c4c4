"""Benchmark: how fast results stream back, and how Executor batches submissions.

    python benchmarks/streaming.py [--backend slurm-array] [--tasks 40] [--submits 10000]

1. imap latency: each task returns the time it finished; the latency of a result is
   the time imap yielded it minus that (the result file is written right after). With
   default settings (polling_interval=5 s) the target is under one second.
2. Executor: --submits calls of Executor.submit from a plain loop; counts the scheduler
   submissions (a shim in front of sbatch/qsub) and the wall time to the last result.
Runs on the real scheduler of this machine (scripts/test_cluster.sh) or backend=local.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import poolparty


def finish_at_random(seed: int) -> float:
    time.sleep(random.Random(seed).uniform(0.2, 2.0))
    return time.time()


def counting_shim(directory: Path, command: str) -> tuple[dict, Path]:
    counter = directory / f"{command}.calls"
    shim = directory / command
    shim.write_text(f"#!/bin/sh\necho x >> {counter}\nexec {shutil.which(command)} \"$@\"\n")
    shim.chmod(0o755)
    return {command: [str(shim)]}, counter


def imap_latency(backend: str, tasks: int, scratch: Path) -> dict:
    pool = poolparty.Pool(backend=backend, work_dir=scratch / "imap")
    latencies = [time.time() - finished
                 for finished in pool.imap_unordered(finish_at_random, range(tasks), chunksize=1)]
    return {
        "benchmark": "imap latency", "backend": backend, "tasks": tasks,
        "median_s": round(statistics.median(latencies), 3), "max_s": round(max(latencies), 3),
    }


def executor_batching(backend: str, submits: int, scratch: Path) -> dict:
    command = "qsub" if backend == "sge" else "sbatch"
    commands, counter = ({}, None) if backend == "local" else counting_shim(scratch, command)
    start = time.monotonic()
    with poolparty.Executor(backend=backend, work_dir=scratch / "executor", **(
            {"commands": commands} if commands else {})) as executor:
        futures = [executor.submit(abs, -n) for n in range(submits)]
        submitted = time.monotonic() - start
        assert [f.result() for f in futures] == list(range(submits))
    wall = time.monotonic() - start
    calls = len(counter.read_text().splitlines()) if counter and counter.exists() else None
    return {
        "benchmark": "Executor.submit loop", "backend": backend, "submits": submits,
        "submit_loop_s": round(submitted, 3), "wall_s": round(wall, 2),
        "scheduler_submissions": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="slurm-array")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--submits", type=int, default=10_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as scratch:
        for row in (imap_latency(arguments.backend, arguments.tasks, Path(scratch)),
                    executor_batching(arguments.backend, arguments.submits, Path(scratch))):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
