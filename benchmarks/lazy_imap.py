"""Benchmark: ``islice(pool.imap(f, count()), N)``, an endless input taken in part, side
by side with multiprocessing.Pool in one run: wall time and the client's peak memory.

    benchmarks/.venv/bin/python benchmarks/lazy_imap.py --scheduler slurm

Each client is a subprocess of its own (its peak RSS is its own): it makes a pool of 8,
takes N results of ``imap(square, itertools.count())`` and reports the time to the N-th
result and its peak resident memory (``ru_maxrss``) less what it had before the call.
N is 10,000 and 100,000: memory that stays flat from one to the other is bounded.

Tools: ``poolparty`` (the given scheduler, warm workers: its defaults), ``poolparty-local``
(local processes), ``mp.Pool`` (``multiprocessing.Pool(8)``: its task thread reads the
endless input as fast as it can, so its memory grows with the time the map takes). Each
task is ``x * x`` with a payload of 1 KiB per result, so that memory held per result
shows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time

SLOTS = 8
TOOLS = ("poolparty", "poolparty-local", "mp.Pool")


def square_with_payload(x: int) -> tuple[int, bytes]:
    return x * x, b"." * 1024


def child(tool: str, scheduler: str, count: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if tool == "mp.Pool":
        import multiprocessing

        make = lambda: multiprocessing.Pool(SLOTS)  # noqa: E731
    else:
        import poolparty

        backend = "local" if tool == "poolparty-local" else (
            "slurm-array" if scheduler == "slurm" else "sge")
        make = lambda: poolparty.Pool(SLOTS, backend=backend)  # noqa: E731
    with make() as pool:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.monotonic()
        taken = 0
        for value, _ in itertools.islice(pool.imap(square_with_payload, itertools.count()),
                                         count):
            if value != taken * taken:
                raise RuntimeError("wrong result")
            taken += 1
        seconds = time.monotonic() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mib": (peak - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scheduler", choices=["slurm", "sge"], default="slurm")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--counts", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--child")
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scheduler, args.count)
        return
    print(f"islice(imap(f, count()), N) on {args.scheduler}, {SLOTS} slots; "
          f"peak = the client's peak RSS growth during the call")
    print(f"{'tool':<17}{'N':>9}{'seconds':>10}{'peak MiB':>10}")
    for count in args.counts:
        for tool in args.tools:
            done = subprocess.run(
                [sys.executable, __file__, "--child", tool, "--scheduler", args.scheduler,
                 "--count", str(count)], capture_output=True, text=True, timeout=args.timeout)
            if done.returncode != 0:
                print(f"{tool:<17}{count:>9}  failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{tool:<17}{count:>9}{report['seconds']:>10.2f}{report['peak_mib']:>10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
