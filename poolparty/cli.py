"""The ``poolparty`` command line.

    poolparty demo [--backend B] [--tasks N]     a real map, the quickest installation check
    poolparty run SCRIPT.py:FUNC --args NAME     map a script's function (also: collect)
    poolparty exec --params FILE -- CMD {}       map a command over parameters
    poolparty status|top [WORK_DIR]              how far a map has got, what failed
    poolparty report [WORK_DIR] [--html FILE]    where a finished map's time went
    poolparty config                             the effective settings and their sources
    poolparty doctor [--import MODULE]           check that maps can run on this cluster
    poolparty worker MAP_DIR                     join a map by hand and run its tasks

Each subcommand but ``demo`` lives in its own module of ``poolparty.commands``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

from .backends import BACKENDS
from .commands import UsageError, plain_text
from .errors import PoolpartyError
from .pool import Pool

#: the modules of poolparty.commands that add subcommands, in the order ``--help`` lists them
SUBCOMMAND_MODULES = ("run", "exec", "status", "report", "config", "doctor", "worker")


def _square(x: int) -> int:
    return x * x


def demo(arguments: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="poolparty: %(message)s")
    pool = Pool(backend=arguments.backend)
    start = time.monotonic()
    results = pool.map(_square, range(arguments.tasks))
    elapsed = time.monotonic() - start
    expected = [x * x for x in range(arguments.tasks)]
    print(f"map of {arguments.tasks} tasks on {pool.scheduler.name}: {elapsed:.1f} s, "
          f"results {'correct' if results == expected else 'WRONG'}: {results[:5]} ...")
    return 0 if results == expected else 1


def build_parser() -> argparse.ArgumentParser:
    """The parser of the command line and of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="poolparty", description=plain_text(__doc__.split("\n\n")[0]),
        epilog="poolparty SUBCOMMAND --help describes each; the library: "
               "python -m pydoc poolparty")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="run a real map on the best backend found",
        description="Square N numbers in a real map on the best backend found here (or "
                    "--backend) and say how long it took and whether the results are right: "
                    "the quickest check that an installation works. Exit 0 when they are.")
    demo_parser.add_argument("--backend", default=None, choices=BACKENDS,
                             help="default: the configured backend, else auto")
    demo_parser.add_argument("--tasks", type=int, default=100)
    demo_parser.set_defaults(run=demo)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"poolparty.commands.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand. Bad input, a setting that can't work, a scheduler missing or
    refusing the jobs: the problem on stderr, without a traceback, and exit code 2."""
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (UsageError, PoolpartyError) as error:
        print(f"poolparty {arguments.command}: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)
    except KeyboardInterrupt:  # the pool cancelled the map's jobs on its way out
        print(f"poolparty {arguments.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
