"""Subcommands of the ``poolparty`` command line, one module each.

Each module has ``register(subcommands)``, which adds its parser to the argparse
sub-parsers and sets ``run=<function(arguments) -> exit code>`` as its default.
Bad input is reported by raising :class:`UsageError`: the command line prints its
message and exits with code 2, before anything is submitted.
"""

from __future__ import annotations

import re


class UsageError(Exception):
    """Bad input to a subcommand: a message saying what is wrong and what to do; exit 2."""

    exit_code = 2


def plain_text(rst: str) -> str:
    """A docstring's reStructuredText as ``--help`` shows it: ``code`` and roles
    (:ref:`text <target>`) as their plain text, directives (``.. note::``) dropped."""
    text = re.sub(r":[a-z:]+:`([^`<]*?)\s*(<[^`>]*>)?`", r"\1", rst)
    text = re.sub(r"``(.*?)``", r"\1", text, flags=re.DOTALL)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(".. "))


def more_help(module: str) -> str:
    """The epilog pointing to a command's full text, which an installed poolparty has
    (its module's documentation), unlike the docs/ pages of the source tree."""
    return f"More: python -m pydoc {module}"
