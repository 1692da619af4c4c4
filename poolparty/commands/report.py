"""``poolparty report [MAP] [--json] [--html FILE]``: where a map's time went.

Reads a map's events afterwards, offline (poolparty.report): its wall time, core-hours
used and reserved, CPU efficiency, idle and queue time, slowest tasks, failures by
class, and its memory peak against the request with a sizing hint. ``MAP`` is a map's
work_dir or a work_dir root (its most recent map, kept or saved; default: the configured
root). A map that succeeded removed its work_dir, but its client kept its events in the
root's ``reports/`` (the 10 most recent maps). ``--html FILE`` writes one self-contained
page (a timeline of the workers and their claims, a histogram of task durations, the
failures) that needs no network to view.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from . import more_help, plain_text


def register(subcommands: Any) -> None:
    """Add ``report`` to the ``poolparty`` command line."""
    parser = subcommands.add_parser(
        "report", help="where a map's time went: timeline, efficiency, cost",
        description=plain_text(__doc__.split("\n\n", 1)[1]),
        epilog=more_help("poolparty.report"))
    parser.add_argument("map", nargs="?", default=None,
                        help="a map's work_dir, or a work_dir root (its most recent map)")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--html", metavar="FILE", default=None,
                        help="also write the report as one self-contained HTML page")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    from ..report import map_report

    report = map_report(arguments.map)
    if arguments.html:
        path = Path(arguments.html)
        path.write_text(report.html(), encoding="utf-8")
        os.chmod(path, 0o600)  # host names, paths and timings of one's own work
    if arguments.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(report.text())
        if arguments.html:
            print(f"page written to {arguments.html}")
    return 0
