"""``poolparty worker MAP_DIR``: a worker started by hand joins a map and drains it.

Run it anywhere that sees the map's directory on a shared file system: a login node, a
job on another partition, ``srun`` inside an allocation you hold, a workstation. It
claims the map's tasks as the workers the pool submits do (``poolparty.claims``: no
connection to the client), runs them and writes their results, until no work is open,
then exits 0. What its tasks print goes to its own terminal (or job log), not to the
client.

No scheduler knows such a worker, so while it runs a claim it touches the claim's file
every ``--heartbeat`` seconds (default 10); the client gives a claim whose heartbeat
stopped for ``HEARTBEAT_TIMEOUT_SECONDS`` (60 s) back to the other workers: a worker
killed mid-claim loses nothing.

With ``Pool(submit_workers=False)`` the pool submits no worker at all: its maps wait for
workers started this way (the client logs each map's directory to give them).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from . import UsageError, more_help, plain_text

#: how often a worker started by hand touches the claim it runs
DEFAULT_HEARTBEAT_SECONDS = 10.0


def register(subcommands: Any) -> None:
    """Add ``worker`` to the ``poolparty`` command line."""
    parser = subcommands.add_parser(
        "worker", help="join a map's work_dir by hand and run its tasks",
        description=plain_text(__doc__.split("\n\n")[1]), epilog=more_help(__name__))
    parser.add_argument("map_dir", type=Path,
                        help="the map's directory (map-...), as the client logs it")
    parser.add_argument("--heartbeat", type=float, default=DEFAULT_HEARTBEAT_SECONDS,
                        metavar="SECONDS", help="how often to touch the claim it runs "
                        f"(default {DEFAULT_HEARTBEAT_SECONDS:.0f})")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from ..map_files import MapFiles
    from ..worker import Heartbeat, run_worker

    map_dir = arguments.map_dir
    if not (map_dir / "map.json").is_file():
        raise UsageError(f"{map_dir} is not a map's directory (no map.json): give the "
                         f"map-... directory the client logged, as this machine sees it")
    if not arguments.heartbeat > 0:
        raise UsageError(f"--heartbeat must be a positive number of seconds, "
                         f"not {arguments.heartbeat}")
    work_dir = MapFiles(map_dir)
    print(f"poolparty worker: map {work_dir.map_id}, started by hand on "
          f"{os.uname().nodename} (pid {os.getpid()})", file=sys.stderr, flush=True)
    heartbeat = Heartbeat(arguments.heartbeat)
    try:
        claims = run_worker(work_dir, None, heartbeat=heartbeat)
    finally:
        heartbeat.stop()
    print(f"poolparty worker: no work left after {claims} claim(s)", file=sys.stderr)
    return 0
