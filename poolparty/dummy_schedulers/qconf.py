"""Dummy ``qconf``: only ``qconf -sconf``, for the limit a pool reads (max_aj_tasks).

``python -m poolparty.dummy_schedulers.qconf --queue DIR -sconf``

Without it a dummy SGE would ask the real ``qconf`` on PATH: a real cluster's
configuration, or, with none, a missing command retried for the whole call timeout.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, run_command
from ._state import read_state

#: SGE's default for the number of tasks in one array job
MAX_AJ_TASKS = 75000


def parse(argv: list[str]) -> argparse.Namespace:
    """Accept ``-sconf``, the one option the dummy knows."""
    parser = ArgumentParser("qconf")
    parser.add_argument("-sconf", action="store_true", required=True)
    return parser.parse_args(argv)


def show_config(queue_dir: Path, args: argparse.Namespace) -> str:
    """Print the global configuration in qconf's ``key   value`` layout."""
    max_aj_tasks = read_state(queue_dir)["config"].get("max_aj_tasks", MAX_AJ_TASKS)
    settings = {"execd_spool_dir": queue_dir / "spool", "max_aj_instances": 2000,
                "max_aj_tasks": max_aj_tasks, "max_u_jobs": 0}
    return "#global:\n" + "".join(f"{key:<28} {value}\n" for key, value in settings.items())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qconf; returns the exit code."""
    return run_command("qconf", argv, parse, show_config)


if __name__ == "__main__":
    raise SystemExit(main())
