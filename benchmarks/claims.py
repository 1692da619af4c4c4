"""Benchmark: what one claim costs a pull-based worker (poolparty.claims), alone and racing.

    python benchmarks/claims.py [--claims 2000] [--workers 1 8] [--views]

Workers (separate processes) claim one task at a time (the worst case: every claim is
contended) until the map's tasks are covered. Reported per setting: wall time per claim
(total wall / claims, so with 8 racing workers it is the throughput of the shared
directory), and the worker CPU per claim. ``--views`` (root, bindfs and fuse3 installed)
also runs the race with half the workers on each of two bindfs views of one directory
with 30 s kernel caches, the stand-in for two NFS clients (../shared/design.md).
The figure feeds ``chunking.CLAIM_SECONDS``, the claim cost the claim sizes assume.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from poolparty.claims import ClaimBoard, Claimer

CACHING = "entry_timeout=30,negative_timeout=30,attr_timeout=30"


def drain(map_dir: str, num_tasks: int, results: multiprocessing.Queue) -> None:
    """One worker: claim single tasks until none is left; report claims and CPU."""
    claimer = Claimer(map_dir, num_tasks)
    count = 0
    while claimer.claim_next(lambda remaining: 1) is not None:
        count += 1
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results.put((count, usage.ru_utime + usage.ru_stime))


def race(map_dirs: list[str], num_tasks: int, workers: int) -> tuple[float, float]:
    """Wall seconds per claim, worker CPU seconds per claim."""
    ClaimBoard(map_dirs[0], num_tasks).create()
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [multiprocessing.Process(target=drain,
                                         args=(map_dirs[i % len(map_dirs)], num_tasks, results))
                 for i in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    reports = [results.get(timeout=600) for _ in processes]
    wall = time.perf_counter() - started
    for process in processes:
        process.join()
    claims = sum(count for count, _ in reports)
    assert claims == num_tasks, (claims, num_tasks)
    return wall / claims, sum(cpu for _, cpu in reports) / claims


def mounted_views(root: Path) -> list[Path]:
    backing, views = root / "backing", [root / "a", root / "b"]
    for directory in (backing, *views):
        directory.mkdir(mode=0o700, parents=True)
    for view in views:
        subprocess.run(["bindfs", "-o", CACHING, str(backing), str(view)], check=True)
    return views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--views", action="store_true")
    args = parser.parse_args()
    print(f"{args.claims} claims of one task each; ms per claim (wall = directory throughput)")
    print(f"{'setting':<34}{'wall ms':>9}{'cpu ms':>9}")
    root = Path(tempfile.mkdtemp(prefix="pp-claims-"))
    try:
        settings = [(f"local fs, {n} worker(s)", [root / f"local{n}"], n) for n in args.workers]
        if args.views:
            views = mounted_views(root / "views")
            settings += [(f"two bindfs views, {n} worker(s)",
                          [view / f"map{n}" for view in views], n)
                         for n in args.workers if n > 1]
        for name, dirs, workers in settings:
            dirs[0].mkdir(mode=0o700)
            wall, cpu = race([str(d) for d in dirs], args.claims, workers)
            print(f"{name:<34}{wall * 1e3:>9.3f}{cpu * 1e3:>9.3f}", flush=True)
    finally:
        for view in ("a", "b"):
            if os.path.ismount(root / "views" / view):
                subprocess.run(["fusermount3", "-u", "-z", str(root / "views" / view)])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
