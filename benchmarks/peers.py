"""Benchmark: poolparty against the peers a user would pick instead, side by side in one run.

    bash benchmarks/peers_venv.sh       # once: benchmarks/.venv with dask-jobqueue, submitit
    benchmarks/.venv/bin/python benchmarks/peers.py --scheduler slurm \\
        --workloads uneven pareto trivial --repeat 3
    benchmarks/.venv/bin/python benchmarks/peers.py --scheduler sge \\
        --workloads uneven trivial100 --tools poolparty dask-jobqueue --repeat 3

What it measures: the wall time of one map, from the moment the tool is first touched
(dask-jobqueue: the cluster object is made, so its start-up is included) until every result
is back in the client, on this machine's real scheduler (8 job slots on 2 real cores). The
tasks sleep rather than compute, so that the figures measure scheduling and load balance,
not the two cores. Workloads:

* ``uneven``: 400 tasks, the first 8 sleep 4 s, the other 392 sleep 0.05 s (total work
  51.6 s, 6.45 s on 8 slots): a few long tasks first among many short ones;
* ``pareto``: 400 tasks with heavy-tailed random durations (Pareto, alpha 1.5, seed 14),
  scaled to a total of 50 s;
* ``trivial``: 1000 tasks that return at once; ``trivial100``: 100 of them; ``million``:
  1,000,000 of them (*cpu* shows the client's CPU per task);
* ``mib50``: 50 tasks that return at once, each a result of 1 MiB;
* ``sec40``: 40 tasks of 1 s; ``sec40-scancel``, ``sec40-requeue``, ``sec40-hold``: the same,
  and once one of the run's jobs has run for 2 s, that job is cancelled (``scancel`` /
  ``qdel``), requeued (``scontrol requeue``) or requeued and held (``scontrol requeuehold``;
  it stays pending) from outside, as a cluster's bad day does (requeue and hold: SLURM only).

Tools, each with its default settings except what the cluster needs:

* ``poolparty``: ``Pool(backend="slurm-array" | "sge").map``;
* ``dask-jobqueue``: ``SLURMCluster`` / ``SGECluster`` of 8 workers of one core, one
  process each, ``client.map`` then ``client.gather``; tasks start as soon as the first
  worker connects (the map does not wait for all 8). *startup* is the time until the
  scheduler is up and the client connected, before any worker job runs;
* ``submitit`` (SLURM only): ``AutoExecutor.map_array``, one array job per task, as
  submitit does it;
* ``mp.Pool``: ``multiprocessing.Pool(8).map`` on this machine, no scheduler: a reference.

Every run is a subprocess of the venv's python (``--child``), in a fresh temporary
directory, under a timeout (``--timeout``): a hung peer is interrupted, its jobs cancelled
by name, and the run counted as failed. Runs are interleaved (every tool once per round,
the order rotated each round), ``--repeat`` rounds; the table shows medians. *first* is
when the first task started (each task reports its start time); *ideal* is total work / 8
slots; *order* the soonest a scheduler that starts the tasks in their order without knowing
their durations can end (``in_order_bound``); *vs ideal* and *vs poolparty* are ratios of
median walls. *busy* is the most jobs of others found queued when a run started (other
users' jobs slow a run down). *cpu us/task* is the client process's CPU time per task.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable
from xml.etree import ElementTree

SLOTS = 8
#: a runner's results and its start-up time (dask-jobqueue's), or None
Outcome = tuple[list, float | None]
TOOLS = ("poolparty", "dask-jobqueue", "submitit", "mp.Pool")


def uneven() -> list[float]:
    """A few long tasks first among many short ones: contiguous chunks put them together."""
    return [4.0] * 8 + [0.05] * 392


def pareto() -> list[float]:
    """Heavy-tailed random durations, seeded, scaled to 50 s of work in all."""
    rng = random.Random(14)
    raw = [rng.paretovariate(1.5) for _ in range(400)]
    return [round(50.0 * value / sum(raw), 4) for value in raw]


WORKLOADS: dict[str, Callable[[], list[float]]] = {
    "uneven": uneven,
    "pareto": pareto,
    "trivial": lambda: [0.0] * 1000,
    "trivial100": lambda: [0.0] * 100,
    "million": lambda: [0.0] * 1_000_000,
    "mib50": lambda: [0.0] * 50,
    "sec40": lambda: [1.0] * 40,
}
#: the faults a sec40 run can have, by the suffix of its name: how each scheduler makes it
FAULTS = {
    "scancel": {"slurm": ["scancel"], "sge": ["qdel"]},
    "requeue": {"slurm": ["scontrol", "requeue"]},
    "hold": {"slurm": ["scontrol", "requeuehold"]},
}
WORKLOADS.update({f"sec40-{fault}": WORKLOADS["sec40"] for fault in FAULTS})
#: the workloads whose tasks return 1 MiB each
BIG_RESULTS = {"mib50"}


def work(seconds: float) -> tuple[float, float, int]:
    """The task: sleep, then say when it started and in which process (for *first*)."""
    started = time.time()
    if seconds:
        time.sleep(seconds)
    return seconds, started, os.getpid()


def work_big(seconds: float) -> tuple[float, float, int, bytes]:
    """``work``, and a result of 1 MiB."""
    return (*work(seconds), os.urandom(1 << 20))


# ---------------------------------------------------------------- one run, in the child


def run_poolparty(task: Callable, durations: list[float], scheduler: str, tag: str) -> Outcome:
    import poolparty

    pool = poolparty.Pool(backend="slurm-array" if scheduler == "slurm" else "sge")
    return pool.map(task, durations), None


def run_dask(task: Callable, durations: list[float], scheduler: str, tag: str) -> Outcome:
    from dask.distributed import Client
    from dask_jobqueue import SGECluster, SLURMCluster

    start = time.monotonic()
    common = dict(cores=1, processes=1, memory="500MB", walltime="00:30:00",
                  job_name=f"peers-dask-{tag}", log_directory="dask-logs",
                  local_directory=tempfile.gettempdir())
    if scheduler == "slurm":
        cluster = SLURMCluster(queue="debug", **common)
    else:
        cluster = SGECluster(queue="all.q", **common)
    client = Client(cluster)
    startup = time.monotonic() - start
    cluster.scale(SLOTS)
    try:
        return client.gather(client.map(task, durations, pure=False)), startup
    finally:
        # Closing cancels the worker jobs; the wall time stops before (the results are back).
        ended = time.monotonic()
        client.close()
        cluster.close()
        print(json.dumps({"teardown": time.monotonic() - ended}), file=sys.stderr)


def run_submitit(task: Callable, durations: list[float], scheduler: str, tag: str) -> Outcome:
    import submitit

    if scheduler != "slurm":
        raise RuntimeError("submitit drives SLURM only")
    executor = submitit.AutoExecutor(folder="submitit", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=30, cpus_per_task=1,
                               name=f"peers-submitit-{tag}")
    jobs = executor.map_array(task, durations)
    return [job.result() for job in jobs], None


def run_mp_pool(task: Callable, durations: list[float], scheduler: str, tag: str) -> Outcome:
    import multiprocessing

    with multiprocessing.Pool(SLOTS) as pool:
        return pool.map(task, durations), None


RUNNERS = {"poolparty": run_poolparty, "dask-jobqueue": run_dask, "submitit": run_submitit,
           "mp.Pool": run_mp_pool}


def child(tool: str, workload: str, scheduler: str, tag: str) -> None:
    """Time one map and print one JSON line: wall, startup, first task start."""
    durations = WORKLOADS[workload]()
    task = work_big if workload in BIG_RESULTS else work
    wall_clock_start, start, cpu_start = time.time(), time.monotonic(), time.process_time()
    results, startup = RUNNERS[tool](task, durations, scheduler, tag)
    wall, cpu = time.monotonic() - start, time.process_time() - cpu_start
    if [result[0] for result in results] != durations or (
            task is work_big and {len(result[3]) for result in results} != {1 << 20}):
        raise RuntimeError(f"{tool} returned wrong results for {workload}")
    first = min(result[1] for result in results) - wall_clock_start
    print(json.dumps({"wall": wall, "startup": startup, "first": first, "cpu": cpu,
                      "processes": len({result[2] for result in results})}))


# ---------------------------------------------------------------- the parent


def jobs_queued(scheduler: str) -> int:
    """How many jobs (array tasks counted apart) are queued now: others' jobs slow a run."""
    command = ["squeue", "-h", "-r"] if scheduler == "slurm" else ["qstat", "-u", "*"]
    try:
        output = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return -1
    lines = [line for line in output.splitlines() if line.strip()]
    return len(lines) if scheduler == "slurm" else max(0, len(lines) - 2)


def cancel_leftovers(scheduler: str, directory: Path, tag: str, queued_before: int) -> None:
    """Cancel, by name, any job a run left behind (its poolparty maps, its peers' jobs), and
    wait until the queue is back to what it held before the run: the next run must not share
    the slots with this one's ending jobs (a map returns when its results are back, its jobs
    may still be listed)."""
    names = [f"peers-dask-{tag}", f"peers-submitit-{tag}"]
    names += [f"poolparty-{path.name}" for path in (directory / ".poolparty").glob("*")]
    for name in names:
        command = ["scancel", f"--name={name}"] if scheduler == "slurm" else ["qdel", name]
        subprocess.run(command, capture_output=True, timeout=60)
    deadline = time.monotonic() + 60
    while jobs_queued(scheduler) > queued_before and time.monotonic() < deadline:
        time.sleep(0.5)


def running_jobs(scheduler: str, names: set[str]) -> list[str]:
    """The jobs (array elements apart) named one of ``names`` that are running now."""
    if scheduler == "slurm":
        command = ["squeue", "-h", "-r", "-t", "RUNNING", "-o", "%i|%j"]
        lines = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        return [job for job, _, name in (line.partition("|") for line in lines.splitlines())
                if name in names]
    xml = subprocess.run(["qstat", "-u", "*", "-s", "r", "-xml"], capture_output=True,
                         text=True, timeout=30).stdout
    found = []
    for job in ElementTree.fromstring(xml).iter("job_list"):
        if job.findtext("JB_name") in names:
            task = job.findtext("tasks")
            found.append(f"{job.findtext('JB_job_number')}" + (f".{task}" if task else ""))
    return found


def inject_fault(fault: str, scheduler: str, directory: Path, tag: str, done: threading.Event,
                 record: dict) -> None:
    """Once one of this run's jobs has been seen running for 2 s, make ``fault`` happen to
    it; what was done, and when, goes into ``record``."""
    started, seen = time.monotonic(), {}
    while not done.wait(0.2):
        names = {f"peers-dask-{tag}", f"peers-submitit-{tag}"}
        names |= {f"poolparty-{path.name}" for path in (directory / ".poolparty").glob("*")}
        now = time.monotonic()
        for job in running_jobs(scheduler, names):
            seen.setdefault(job, now)
        ripe = [job for job, since in seen.items() if now - since >= 2.0]
        if ripe:
            command = [*FAULTS[fault][scheduler], ripe[0]]
            done_fault = subprocess.run(command, capture_output=True, text=True, timeout=60)
            record["fault"] = {"command": " ".join(command), "at": round(now - started, 2),
                               "rc": done_fault.returncode}
            return


def run_once(python: str, tool: str, workload: str, scheduler: str, timeout: float) -> dict:
    """One map of one tool in its own subprocess and directory; a failure is recorded."""
    tag = uuid.uuid4().hex[:8]
    busy = jobs_queued(scheduler)
    record: dict = {"tool": tool, "workload": workload, "busy": busy}
    fault = workload.partition("-")[2]
    with tempfile.TemporaryDirectory(prefix=f"peers-{tool}-") as name:
        directory = Path(name)
        command = [python, str(Path(__file__).resolve()), "--child", tool, workload, scheduler, tag]
        process = subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        done = threading.Event()
        injector = threading.Thread(target=inject_fault, daemon=True,
                                    args=(fault, scheduler, directory, tag, done, record))
        if fault:
            injector.start()
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stdout, stderr = interrupt(process)
            stderr = f"{stderr}\ntimed out after {timeout:.0f} s"
        done.set()
        if fault:
            injector.join()
        cancel_leftovers(scheduler, directory, tag, busy)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if process.returncode == 0 and lines:
        return {**record, **json.loads(lines[-1])}
    return {**record, "error": (stderr.strip().splitlines() or ["no output"])[-1][:200],
            "stderr": stderr[-3000:]}


def interrupt(process: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C first (the tools cancel their jobs on it), then kill the whole group."""
    for sig, grace in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return "", ""


def in_order_bound(durations: list[float], slots: int = SLOTS) -> float:
    """The soonest any scheduler that starts the tasks in their order, without knowing
    their durations, can finish: each task starts on the first slot to fall free (one task
    per claim, no overhead). A long task late in the order ends no sooner than its start
    plus its duration, however the work is balanced before it."""
    free = [0.0] * slots
    for seconds in durations:
        heapq.heapreplace(free, free[0] + seconds)
    return max(free)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(records: list[dict], workloads: list[str], tools: list[str]) -> str:
    """One row per workload and tool: medians of the successful runs, ratios of medians."""
    header = (f"{'workload':11} {'tool':14} {'ok':>5} {'wall s':>7} {'min-max':>11} "
              f"{'first s':>7}"
              f" {'startup':>7} {'ideal':>6} {'order':>6} {'vs ideal':>8} {'vs pp':>6}"
              f" {'busy':>4}"
              f" {'cpu us/task':>11}")
    rows = [header, "-" * len(header)]
    for workload in workloads:
        ideal = sum(WORKLOADS[workload]()) / SLOTS
        bound = in_order_bound(WORKLOADS[workload]())
        walls = {tool: [r["wall"] for r in records
                        if r["tool"] == tool and r["workload"] == workload and "wall" in r]
                 for tool in tools}
        reference = median(walls.get("poolparty", []))
        for tool in tools:
            mine = [r for r in records if r["tool"] == tool and r["workload"] == workload]
            ok = [r for r in mine if "wall" in r]
            wall = median(walls[tool])
            spread = f"{min(walls[tool]):.1f}-{max(walls[tool]):.1f}" if ok else "-"
            rows.append(
                f"{workload:11} {tool:14} {len(ok):>2}/{len(mine):<2} {fmt(wall, 2):>7} "
                f"{spread:>11} "
                f"{fmt(median([r['first'] for r in ok]), 2):>7} "
                f"{fmt(median([r['startup'] for r in ok if r['startup'] is not None]), 2):>7} "
                f"{fmt(ideal, 2):>6} {fmt(bound, 2):>6} "
                f"{fmt(wall / ideal if wall and ideal else None, 2):>8} "
                f"{fmt(wall / reference if wall and reference else None, 2):>6} "
                f"{max([r['busy'] for r in mine], default=0):>4} "
                f"{fmt(median([1e6 * r['cpu'] / len(WORKLOADS[workload]()) for r in ok]), 1):>11}"
            )
    return "\n".join(rows)


def describe_workloads(workloads: list[str]) -> None:
    for workload in workloads:
        durations = WORKLOADS[workload]()
        total = sum(durations)
        longest = max(durations)
        print(f"{workload}: {len(durations)} tasks, total work {total:.1f} s, "
              f"total / {SLOTS} slots = {total / SLOTS:.2f} s, longest task {longest:.2f} s "
              f"(task {durations.index(longest)}), in-order bound "
              f"{in_order_bound(durations):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", default="slurm", choices=["slurm", "sge"])
    parser.add_argument("--workloads", nargs="+", default=["uneven", "pareto", "trivial"],
                        choices=sorted(WORKLOADS))
    parser.add_argument("--tools", nargs="+", default=None, choices=TOOLS,
                        help="default: all that drive the scheduler (no submitit on SGE)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are shown")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    parser.add_argument("--python", default=sys.executable, help="the venv's python")
    parser.add_argument("--child", nargs=4, metavar=("TOOL", "WORKLOAD", "SCHEDULER", "TAG"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    tools = args.tools or [t for t in TOOLS if not (t == "submitit" and args.scheduler == "sge")]
    print(f"$ {' '.join([sys.executable, *sys.argv])}")
    print(time.strftime("%Y-%m-%d %H:%M:%S %Z"), f"scheduler {args.scheduler}, {SLOTS} slots")
    describe_workloads(args.workloads)
    records: list[dict] = []
    started = time.monotonic()
    for round_number in range(args.repeat):
        order = tools[round_number % len(tools):] + tools[:round_number % len(tools)]
        for workload in args.workloads:
            for tool in order:
                record = run_once(args.python, tool, workload, args.scheduler, args.timeout)
                records.append(record)
                shown = {k: v for k, v in record.items() if k != "stderr"}
                print(f"round {round_number + 1}: {json.dumps(shown)}", flush=True)
                if "stderr" in record:
                    print(f"  stderr tail:\n{record['stderr']}", flush=True)
    print(f"\nall runs took {time.monotonic() - started:.0f} s\n")
    print(table(records, args.workloads, tools))


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
