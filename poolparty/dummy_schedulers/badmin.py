"""Dummy ``badmin``: only ``badmin showconf mbd``, for the limit a pool reads
(MAX_JOB_ARRAY_SIZE).

``python -m poolparty.dummy_schedulers.badmin --queue DIR showconf mbd``

Without it a dummy LSF would ask the real ``badmin`` on PATH: a real cluster's
configuration, or, with none, a missing command retried for the whole call timeout.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, run_command
from ._state import read_state
from .bsub import MAX_JOB_ARRAY_SIZE


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``showconf mbd``, the one subcommand the dummy knows."""
    parser = ArgumentParser("badmin")
    parser.add_argument("subcommand", choices=["showconf"])
    parser.add_argument("daemon", choices=["mbd"])
    return parser.parse_args(argv)


def show_config(queue_dir: Path, args: argparse.Namespace) -> str:
    """mbatchd's parameters as LSF prints them: a dated header, then ``NAME = value``."""
    config = read_state(queue_dir)["config"]
    settings = {"LSB_SHAREDIR": queue_dir / "work", "MAX_JOB_NUM": config["max_job_count"],
                "MAX_JOB_ARRAY_SIZE": config.get("max_job_array_size", MAX_JOB_ARRAY_SIZE),
                "MBD_SLEEP_TIME": 10}
    stamp = time.strftime("%a %b %d %H:%M:%S %Y")
    return (f"MBD configuration at {stamp}\n"
            + "".join(f"    {key} = {value}\n" for key, value in settings.items()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy badmin; returns the exit code."""
    return run_command("badmin", argv, parse, show_config, scheduler="lsf")


if __name__ == "__main__":
    raise SystemExit(main())
