"""Benchmark: the CPU one job start costs, against ``python -c pass``.

    python benchmarks/job_start.py [--runs 40]

With one job per task, what the worker spends before and after the user's function is
paid once per task; on a node with more slots than cores it is wall time. This runs,
each ``--runs`` times and interleaved, with bytecode compiled (as a wheel install has):

- ``python -c pass``: the bare floor's job;
- ``python -c "import cloudpickle"``: what unpickling a function defined in ``__main__``
  or a notebook needs at least, since cloudpickle's reconstructors live in that module;
- the worker on a chunk of one task, for a function importable on the node (pickled by
  reference: cloudpickle is not imported) and for a lambda (pickled by value).

It prints the CPU time (user + system, of the child) in milliseconds: the minimum, which
is least disturbed by other load, and the median. No scheduler needed.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import poolparty


def prepared_chunk(root: Path, function) -> Path:
    """A kept work_dir of a one-task map, run locally once so its inputs exist."""
    root.mkdir(mode=0o700)
    poolparty.Pool(backend="local", keep_work_dir=True, work_dir=root).map(
        function, [7], chunksize=1)
    (work_dir,) = root.iterdir()
    return work_dir


def reopen(work_dir: Path) -> None:
    """Make the kept map's one task open again, as in a map just submitted: empty
    claim directories, no result (the worker of a finished map finds nothing to do)."""
    for name in ("claims", "requeue", "retries"):
        shutil.rmtree(work_dir / name, ignore_errors=True)
        (work_dir / name).mkdir(mode=0o700)
    for result in (work_dir / "results").iterdir():
        result.unlink()


def child_cpu_ms(argv: list[str], environment: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=environment, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    arguments = parser.parse_args()
    compileall.compile_dir(Path(poolparty.__file__).parent, quiet=1)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as temporary:
        by_reference = prepared_chunk(Path(temporary, "ref"), abs)
        by_value = prepared_chunk(Path(temporary, "value"), lambda x: x)
        worker = [sys.executable, "-m", "poolparty.worker"]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import cloudpickle": [sys.executable, "-c", "import cloudpickle"],
            "worker, importable function": [*worker, str(by_reference), "0"],
            "worker, lambda (by value)": [*worker, str(by_value), "0"],
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(arguments.runs):
            for name, argv in cases.items():
                if argv[1:3] == ["-m", "poolparty.worker"]:
                    reopen(Path(argv[3]))
                samples[name].append(child_cpu_ms(argv, environment))
    floor = min(samples["python -c pass"])
    python = sys.version.split()[0]
    print(f"CPU per job start, ms, over {arguments.runs} interleaved runs (python {python})")
    print(f"{'':30s} {'min':>7s} {'median':>7s} {'min - floor':>12s}")
    for name, values in samples.items():
        print(f"{name:30s} {min(values):7.1f} {statistics.median(values):7.1f} "
              f"{min(values) - floor:12.1f}")


if __name__ == "__main__":
    main()
