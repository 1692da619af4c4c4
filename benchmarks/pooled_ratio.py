"""Pool the paired runs of several ``backends.py`` outputs into one figure.

    python benchmarks/pooled_ratio.py benchmarks/results/A.txt [B.txt ...]
                                      [--tasks 100] [--settings chunksize=1] [--function main]
                                      [--floor plain|throttled]

SLURM here is bimodal (100 bare jobs take about 5.5 s or about 10 s, depending on
whether rounds of jobs start on completion or at the backfill scheduler's pass once a
second), so single pairs range from 0.8 to 1.6 and sets of 30 disagree by a few
hundredths. This prints, per file and for all of them together, the number of pairs,
the median of the paired ratios (map wall / floor wall, each pair run back to back)
with a bootstrap 90% interval, and the ratio of the median walls. The bootstrap is
seeded, so the same files give the same interval. ``--floor throttled`` compares with
the floor run with an array throttle (``backends.py --floor-throttle``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

RESAMPLES = 5000


def paired_runs(path: Path, tasks: int, settings: str, function: str,
                floor: str = "plain") -> list[dict]:
    """The single runs of a file (not its summary lines), for one size and setting, as
    (wall, floor, ratio). Outputs older than ``--function`` mapped the by-value
    function: "main"."""
    suffix = "" if floor == "plain" else "throttled_"
    runs = []
    for line in path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        run = json.loads(line)
        if (f"ratio_to_{suffix}floor" in run and run.get("tasks") == tasks
                and run.get("settings") == settings and run.get("function", "main") == function):
            runs.append({"wall_s": run["wall_s"], "floor_s": run[f"{suffix}floor_s"],
                         "ratio_to_floor": run[f"ratio_to_{suffix}floor"]})
    return runs


def median_interval(ratios: list[float], seed: int = 1) -> tuple[float, float]:
    """Bootstrap 90% interval of the median: the 5th and 95th percentiles of the
    medians of resamples drawn with replacement."""
    chance = random.Random(seed)
    medians = sorted(statistics.median(chance.choices(ratios, k=len(ratios)))
                     for _ in range(RESAMPLES))
    return medians[int(0.05 * RESAMPLES)], medians[int(0.95 * RESAMPLES) - 1]


def summary(name: str, runs: list[dict]) -> str:
    ratios = [run["ratio_to_floor"] for run in runs]
    low, high = median_interval(ratios)
    walls = statistics.median(run["wall_s"] for run in runs)
    floors = statistics.median(run["floor_s"] for run in runs)
    return (f"| {name} | {len(runs)} | {statistics.median(ratios):.3f} | {low:.3f}-{high:.3f} "
            f"| {walls / floors:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--settings", default="chunksize=1")
    parser.add_argument("--function", default="main")
    parser.add_argument("--floor", default="plain", choices=["plain", "throttled"])
    arguments = parser.parse_args()
    print("| runs | pairs | median ratio | bootstrap 90% | ratio of median walls |")
    print("|---|---|---|---|---|")
    everything = []
    for path in arguments.files:
        runs = paired_runs(path, arguments.tasks, arguments.settings, arguments.function,
                           arguments.floor)
        if runs:
            print(summary(path.name, runs))
            everything += runs
    if len(arguments.files) > 1 and everything:
        print(summary("all together", everything))


if __name__ == "__main__":
    main()
