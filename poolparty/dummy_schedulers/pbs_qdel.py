"""Dummy ``qdel`` of PBS Professional / OpenPBS: delete jobs, arrays or subjobs.

``python -m poolparty.dummy_schedulers.pbs_qdel --queue DIR [-W force] JOBID ...``

A job id is ``1000``, ``1000[]`` (the whole array) or ``1000[3]`` (one subjob), with or
without ``.server``. As PBS's qdel (qdel(1B)), it prints nothing for the jobs it
deletes and ``qdel: Unknown Job Id 1000.server`` on stderr for one it does not know,
going on with the others and exiting non-zero.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from ._cli import ArgumentParser, CommandError, run_command
from ._jobs import cancel_tasks, select_tasks
from ._state import transaction
from .pbs_qsub import server_name

_JOB_ID = re.compile(r"(\d+)(?:\[(\d*)\])?(?:\.\S+)?")


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``[-W force] [-x] JOBID ...``."""
    parser = ArgumentParser("qdel")
    parser.add_argument("-W", dest="force", choices=["force", "suppress_email"], default=None)
    parser.add_argument("-x", dest="history", action="store_true")
    parser.add_argument("ids", nargs="+")
    return parser.parse_args(argv)


def delete(queue_dir: Path, args: argparse.Namespace) -> str:
    """Kill or dequeue the jobs named, saying which it does not know."""
    errors = []
    with transaction(queue_dir) as state:
        for text in args.ids:
            match = _JOB_ID.fullmatch(text)
            tasks = [] if match is None else select_tasks(
                state, int(match[1]), {int(match[2])} if match[2] else None)
            if not tasks:
                shown = text if "." in text else f"{text}.{server_name()}"
                errors.append(f"qdel: Unknown Job Id {shown}")
            cancel_tasks(queue_dir, state, tasks)
    if errors:
        raise CommandError("\n".join(errors))
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dummy qdel; returns the exit code."""
    return run_command("qdel", argv, parse, delete, scheduler="pbs")


if __name__ == "__main__":
    raise SystemExit(main())
