"""Benchmark: poolparty's job script alone against the bare floor, no client.

    python benchmarks/job_only.py [--tasks 100] [--pairs 6]

Splits the chunksize=1 overhead in two: what the jobs cost (this benchmark: one
``sbatch --array`` of poolparty's ``job.sh`` over a prepared work_dir, against one of
``python -c pass``, both waited for by polling squeue) and what the client adds (the
difference to ``backends.py``). Pairs alternate in order. Needs real SLURM running:
``sudo bash scripts/test_cluster.sh slurm``.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import poolparty


def trivial(x):
    return x


def prepared_work_dir(root: Path, tasks: int) -> Path:
    """A kept work_dir of a chunksize=1 map (run locally once, so its inputs exist)."""
    pool = poolparty.Pool(backend="local", keep_work_dir=True, work_dir=root)
    pool.map(trivial, range(tasks), chunksize=1)
    (work_dir,) = root.iterdir()
    return work_dir


def clear_outputs(work_dir: Path) -> None:
    for folder in ("results", "logs", "events"):
        for path in (work_dir / folder).glob("*"):
            path.unlink()


def array_wall(tasks: int, options: list[str]) -> float:
    """Submit one array of ``tasks`` elements and wait until squeue no longer lists it."""
    start = time.monotonic()
    job = subprocess.run(["sbatch", "--parsable", f"--array=0-{tasks - 1}", *options],
                         capture_output=True, text=True, check=True).stdout.split(";")[0].strip()
    while True:
        listed = subprocess.run(["squeue", "--noheader", "--array", f"--jobs={job}"],
                                capture_output=True, text=True)
        if listed.returncode == 0 and not listed.stdout.strip():  # a failure is not "gone"
            return time.monotonic() - start
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=6)
    arguments = parser.parse_args()
    compileall.compile_dir(os.path.dirname(poolparty.__file__), quiet=1)
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as scratch:
        work_dir = prepared_work_dir(Path(scratch) / "work", arguments.tasks)
        floor = ["--output=/dev/null", f"--wrap={sys.executable} -c pass"]
        jobs = [f"--output={work_dir}/logs/%A_%a.log", str(work_dir / "job.sh"),
                "--array", "0", "SLURM_ARRAY_TASK_ID"]
        ratios = []
        for pair in range(arguments.pairs):
            clear_outputs(work_dir)
            if pair % 2:
                job_wall = array_wall(arguments.tasks, jobs)
                floor_wall = array_wall(arguments.tasks, floor)
            else:
                floor_wall = array_wall(arguments.tasks, floor)
                job_wall = array_wall(arguments.tasks, jobs)
            delivered = len(list((work_dir / "results").glob("*.pkl")))
            ratios.append(job_wall / floor_wall)
            print(f"floor {floor_wall:.2f} s, job.sh {job_wall:.2f} s, ratio "
                  f"{ratios[-1]:.2f}, results {delivered}/{arguments.tasks}", flush=True)
        print(f"median ratio {statistics.median(ratios):.3f} over {len(ratios)} pairs")


if __name__ == "__main__":
    main()
