"""Subcommands of the ``poolparty`` command line, one module each.

Each module has ``register(subcommands)``, which adds its parser to the argparse
sub-parsers and sets ``run=<function(arguments) -> exit code>`` as its default.
Bad input is reported by raising :class:`UsageError`: the command line prints its
message and exits with code 2, before anything is submitted.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input to a subcommand: a message saying what is wrong and what to do; exit 2."""

    exit_code = 2
