"""Dummy ``qmgr -c 'list server'`` of PBS Professional / OpenPBS: the server's
attributes, for the limit a pool reads (``max_array_size``).

``python -m poolparty.dummy_schedulers.pbs_qmgr --queue DIR -c 'list server'``

Without it a dummy PBS would ask the real ``qmgr`` on PATH, or, with none, retry a
missing command for the whole call timeout. ``max_array_size`` is the queue's
(``DummyQueue(max_array_size=...)``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, CommandError, run_command
from ._state import read_state
from .pbs_qstat import PBS_VERSION
from .pbs_qsub import QUEUES, server_name


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``-c 'list server'`` (or ``print server``), the one directive known."""
    parser = ArgumentParser("qmgr")
    parser.add_argument("-c", dest="directive", required=True)
    args = parser.parse_args(argv)
    if " ".join(args.directive.split()) not in ("list server", "l s", "print server", "p s"):
        raise CommandError(f"qmgr: the dummy knows only -c 'list server', not "
                           f"{args.directive!r}")
    return args


def list_server(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the server's attributes as ``Server NAME`` and indented ``name = value``."""
    state = read_state(queue_dir)
    attributes = {
        "server_state": "Active",
        "server_host": server_name(),
        "scheduling": "True",
        "total_jobs": len(state["jobs"]),
        "default_queue": QUEUES[0],
        "max_array_size": state["config"]["max_array_size"],
        "pbs_version": PBS_VERSION,
    }
    return f"Server {server_name()}\n" + "".join(
        f"    {name} = {value}\n" for name, value in attributes.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qmgr; returns the exit code."""
    return run_command("qmgr", argv, parse, list_server, scheduler="pbs")


if __name__ == "__main__":
    raise SystemExit(main())
