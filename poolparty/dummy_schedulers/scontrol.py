"""Dummy ``scontrol``: only ``scontrol show config``, for the limits a pool reads.

``python -m poolparty.dummy_schedulers.scontrol --queue DIR show config``
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from . import _clusters
from ._cli import ArgumentParser, CommandError, run_command
from ._state import read_state


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``show config``, the one subcommand the dummy knows."""
    parser = ArgumentParser("scontrol")
    _clusters.add_option(parser)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    args.cluster_names = _clusters.named("scontrol", args) or [_clusters.CLUSTERS[0]]
    if args.command != ["show", "config"]:
        given = " ".join(args.command)
        raise CommandError(f"scontrol: error: the dummy only supports 'show config', not {given!r}")
    return args


def show_config(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the configuration in scontrol's ``Key = value`` layout."""
    config = read_state(queue_dir)["config"]
    settings = {
        "AccountingStorageType": "accounting_storage/none",
        "ClusterName": args.cluster_names[0],
        "MaxArraySize": config["max_array_size"],
        "MaxJobCount": config["max_job_count"],
        "SLURM_VERSION": "23.02.7",
        "SchedulerType": "sched/builtin",
    }
    header = f"Configuration data as of {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    lines = "".join(f"{key:<23} = {value}\n" for key, value in settings.items())
    return f"{header}{lines}\nSlurmctld(primary) at {socket.gethostname()} is UP\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy scontrol; returns the exit code."""
    return run_command("scontrol", argv, parse, show_config)


if __name__ == "__main__":
    raise SystemExit(main())
