"""Benchmark: rounds of small maps on one pool (a notebook's cells), warm workers against
dask-jobqueue's workers, side by side in one run.

    bash benchmarks/peers_venv.sh       # once: benchmarks/.venv with dask-jobqueue
    benchmarks/.venv/bin/python benchmarks/rounds.py --scheduler slurm --repeat 3
    benchmarks/.venv/bin/python benchmarks/rounds.py --scheduler slurm --busy --repeat 3
    benchmarks/.venv/bin/python benchmarks/rounds.py --scheduler sge --repeat 3

What it measures: one client (a subprocess) makes its pool (or cluster) once, then runs
``--rounds`` rounds, each 50 small tasks (``x * x``) and waits for all results, with a
pause of ``--gap`` seconds between rounds (a user reading a cell's output; not timed).
Each round is timed from the call to the last result. Two kinds of round:

* ``map``: ``pool.map(f, range(50))`` / dask ``client.gather(client.map(f, range(50)))``;
* ``submit``: 50 ``Executor.submit`` then every ``result()`` / dask ``client.submit``.

Tools:

* ``poolparty``: ``Pool(8)`` (``Executor(8)``) with its defaults: warm workers
  (``idle_timeout`` 10 s);
* ``poolparty-cold``: the same with ``idle_timeout=0``, what every round cost before;
* ``dask-jobqueue``: ``SLURMCluster``/``SGECluster`` scaled to 8 one-core workers, kept
  for all rounds (its workers are warm by design: they stay until the cluster closes);
* ``mp.Pool``: ``multiprocessing.Pool(8)`` on this machine, no scheduler: a reference.

``--busy``: before each client starts, another user's jobs take BUSY_SLOTS (6) of the 8
slots for as long as the client runs, and BUSY_QUEUE (4) more of 20 s queue behind them:
the client's first jobs wait in the queue (about 40 s), and every later job it submits
finds only two slots free (a busy shared cluster). On a FIFO test scheduler a longer
queue would starve the cold client: its later rounds wait for a slot, not a queue.

The table shows medians over ``--repeat`` clients: the first round, and the median of
the later rounds (rounds 2..N).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

SLOTS = 8
TASKS = 50
TOOLS = ("poolparty", "poolparty-cold", "dask-jobqueue", "mp.Pool")
#: --busy: slots another user's jobs hold all along, and their jobs queued behind
BUSY_SLOTS = 6
BUSY_QUEUE = 4
BUSY_NOTE = f" (busy: {BUSY_SLOTS} slots held by others, {BUSY_QUEUE} jobs queued)"


def square(x: int) -> int:
    return x * x


def timed_rounds(run_round, rounds: int, gap: float) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.monotonic()
        results = run_round()
        times.append(time.monotonic() - start)
        if results != [x * x for x in range(TASKS)]:
            raise RuntimeError("wrong results")
        time.sleep(gap)
    return times


def child_poolparty(kind: str, scheduler: str, rounds: int, gap: float, cold: bool) -> list[float]:
    import poolparty

    backend = "slurm-array" if scheduler == "slurm" else "sge"
    options = {"idle_timeout": 0} if cold else {}
    if kind == "map":
        with poolparty.Pool(SLOTS, backend=backend, **options) as pool:
            return timed_rounds(lambda: pool.map(square, range(TASKS)), rounds, gap)
    with poolparty.Executor(SLOTS, backend=backend, **options) as executor:
        return timed_rounds(
            lambda: [f.result() for f in [executor.submit(square, x) for x in range(TASKS)]],
            rounds, gap)


def child_dask(kind: str, scheduler: str, rounds: int, gap: float, tag: str) -> list[float]:
    from dask.distributed import Client
    from dask_jobqueue import SGECluster, SLURMCluster

    common = dict(cores=1, processes=1, memory="500MB", walltime="00:30:00",
                  job_name=f"rounds-dask-{tag}", log_directory="dask-logs",
                  local_directory=tempfile.gettempdir())
    cluster = (SLURMCluster(queue="debug", **common) if scheduler == "slurm"
               else SGECluster(queue="all.q", **common))
    client = Client(cluster)
    cluster.scale(SLOTS)
    try:
        if kind == "map":
            return timed_rounds(
                lambda: client.gather(client.map(square, range(TASKS), pure=False)), rounds, gap)
        return timed_rounds(
            lambda: client.gather([client.submit(square, x, pure=False) for x in range(TASKS)]),
            rounds, gap)
    finally:
        client.close()
        cluster.close()


def child_mp(kind: str, rounds: int, gap: float) -> list[float]:
    import multiprocessing

    with multiprocessing.Pool(SLOTS) as pool:
        if kind == "map":
            return timed_rounds(lambda: pool.map(square, range(TASKS)), rounds, gap)
        return timed_rounds(
            lambda: [r.get() for r in [pool.apply_async(square, (x,)) for x in range(TASKS)]],
            rounds, gap)


def child(tool: str, kind: str, scheduler: str, rounds: int, gap: float, tag: str) -> None:
    if tool.startswith("poolparty"):
        times = child_poolparty(kind, scheduler, rounds, gap, tool == "poolparty-cold")
    elif tool == "dask-jobqueue":
        times = child_dask(kind, scheduler, rounds, gap, tag)
    else:
        times = child_mp(kind, rounds, gap)
    print(json.dumps(times), flush=True)


# ---------------------------------------------------------------------------- the parent
def busy_start(scheduler: str, tag: str) -> None:
    """Another user's jobs: BUSY_SLOTS jobs that run as long as the client, and
    BUSY_QUEUE of 20 s queued behind them (two start in the free slots, the rest wait):
    the client's first jobs wait in the queue, and its later ones find most slots taken."""
    name = f"rounds-busy-{tag}"
    for seconds in [3600] * BUSY_SLOTS + [20] * BUSY_QUEUE:
        if scheduler == "slurm":
            argv = ["sbatch", "--job-name", name, "--output=/dev/null", "--wrap",
                    f"sleep {seconds}"]
        else:
            argv = ["qsub", "-b", "y", "-N", name, "-o", "/dev/null", "-j", "y",
                    "sleep", str(seconds)]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)


def cancel_named(scheduler: str, name: str) -> None:
    if scheduler == "slurm":
        subprocess.run(["scancel", "--name", name], capture_output=True, timeout=60)
    else:
        subprocess.run(["qdel", name], capture_output=True, timeout=60)


def run_client(python: str, tool: str, kind: str, scheduler: str, rounds: int, gap: float,
               busy: bool, timeout: float) -> list[float] | None:
    tag = uuid.uuid4().hex[:8]
    if busy:
        busy_start(scheduler, tag)
        time.sleep(3)  # the first of them running, the rest queued
    with tempfile.TemporaryDirectory(prefix="rounds-") as directory:
        argv = [python, __file__, "--child", tool, "--kind", kind, "--scheduler", scheduler,
                "--rounds", str(rounds), "--gap", str(gap), "--tag", tag]
        try:
            done = subprocess.run(argv, cwd=directory, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"{tool} {kind}: timed out", file=sys.stderr)
            return None
        finally:
            cancel_named(scheduler, f"rounds-dask-{tag}")
            if busy:
                cancel_named(scheduler, f"rounds-busy-{tag}")
        if done.returncode != 0:
            print(f"{tool} {kind} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return None
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", choices=["slurm", "sge"], default="slurm")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--kinds", nargs="+", default=["map", "submit"], choices=["map", "submit"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--child")
    parser.add_argument("--kind", default="map")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.kind, args.scheduler, args.rounds, args.gap, args.tag)
        return
    print(f"# rounds of {TASKS} tasks, {args.rounds} rounds per client, gap {args.gap} s, "
          f"{args.scheduler}{BUSY_NOTE if args.busy else ''}, "
          f"{args.repeat} client(s) per tool, {time.strftime('%Y-%m-%d %H:%M')}")
    results: dict[tuple[str, str], list[list[float]]] = {}
    for repeat in range(args.repeat):
        for kind in args.kinds:
            order = args.tools[repeat % len(args.tools):] + args.tools[:repeat % len(args.tools)]
            for tool in order:
                times = run_client(sys.executable, tool, kind, args.scheduler, args.rounds,
                                   args.gap, args.busy, args.timeout)
                print(f"# {tool} {kind}: {None if times is None else [round(t, 3) for t in times]}",
                      flush=True)
                if times is not None:
                    results.setdefault((tool, kind), []).append(times)
    print(f"{'tool':16} {'kind':7} {'clients':>7} {'first s':>8} {'later s (median)':>17} "
          f"{'later max s':>11}")
    for kind in args.kinds:
        for tool in args.tools:
            runs = results.get((tool, kind), [])
            if not runs:
                print(f"{tool:16} {kind:7} {0:>7} {'failed':>8}")
                continue
            first = statistics.median(run[0] for run in runs)
            later = [t for run in runs for t in run[1:]]
            print(f"{tool:16} {kind:7} {len(runs):>7} {first:>8.2f} "
                  f"{statistics.median(later):>17.3f} {max(later):>11.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
