"""Benchmark: what the work_dir holds at its fullest, file by file kind.

    python benchmarks/peak_files.py [--backend slurm-array] [--tasks 100] [--chunksize N]
                                    [--runs 3]

Runs a map of trivial tasks, lists the map's files every 5 ms, and prints, for the
listing with the most files, how many there were of each kind: the map's own files by
name, and the per-chunk ones by folder (``logs/``, ``events/``, ``results/``). It says
where a peak above the issue's "chunks + 10" comes from. Needs the backend's scheduler
running (``sudo bash scripts/test_cluster.sh all``), or ``--backend local``.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
import threading
import time
from pathlib import Path

import poolparty


def trivial(x):
    return x


class Lister(threading.Thread):
    """Keeps the longest listing of the files under ``root``."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.fullest, self.running = root, [], True

    def run(self) -> None:
        while self.running:
            files = [os.path.relpath(os.path.join(folder, name), self.root)
                     for folder, _, names in os.walk(self.root) for name in names]
            if len(files) > len(self.fullest):
                self.fullest = files
            time.sleep(0.005)


def kind(relative_path: str) -> str:
    """``<map>/logs/1_2.log`` -> ``logs/``; ``<map>/map.json`` -> ``map.json``."""
    parts = relative_path.split(os.sep)
    return parts[1] + "/" if len(parts) > 2 else parts[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="slurm-array")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--chunksize", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    for _ in range(arguments.runs):
        with tempfile.TemporaryDirectory(dir=os.getcwd()) as scratch:
            root = Path(scratch) / "work"
            pool = poolparty.Pool(backend=arguments.backend, work_dir=root)
            lister = Lister(root)
            lister.start()
            results = pool.map(trivial, range(arguments.tasks), chunksize=arguments.chunksize)
            lister.running = False
            lister.join()
            assert results == list(range(arguments.tasks))
            kinds = collections.Counter(kind(path) for path in lister.fullest)
            per_chunk = {k: n for k, n in sorted(kinds.items()) if k.endswith("/")}
            own = sum(n for k, n in kinds.items() if not k.endswith("/"))
            print(f"peak {len(lister.fullest)} files: {own} of the map's own, "
                  f"per chunk {per_chunk}")


if __name__ == "__main__":
    main()
