"""``poolparty config [--json]``: the effective settings and where each came from.

With settings spread over keyword arguments, ``POOLPARTY_*`` variables, a project file
and a user file, "why does my job go to that partition?" needs one command to answer.
A bad configuration (unknown key, bad value, malformed TOML) is reported here exactly
as a Pool would raise it, with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import config
from . import UsageError


def register(subcommands: Any) -> None:
    """Add ``config`` to the ``poolparty`` command line."""
    parser = subcommands.add_parser(
        "config", help="print the effective settings and where each came from",
        description="Print every setting, its effective value and its source (default, "
                    "a config file, a POOLPARTY_* environment variable).",
    )
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: setting -> {value, source, variable, type}")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    try:
        files = config.config_files()
        resolved = config.resolve()
    except config.ConfigError as error:
        raise UsageError(str(error)) from error
    if arguments.json:
        print(json.dumps(as_json(resolved), indent=2))
    else:
        print(as_text(resolved, [config_file.label for config_file in files]))
    return 0


def as_json(resolved: dict[str, config.Resolved]) -> dict[str, dict[str, Any]]:
    """Machine-readable: value (tuples become lists), source, variable name and type."""
    return {
        name: {"value": item.value, "source": item.source,
               "variable": config.SETTINGS[name].variable,
               "type": config.SETTINGS[name].kind.label}
        for name, item in resolved.items()
    }


def as_text(resolved: dict[str, config.Resolved], file_labels: list[str]) -> str:
    """A table to read: one line per setting, then the files that were read."""
    rows = [(name, shown(item.value), item.source) for name, item in resolved.items()]
    name_width = max(len(row[0]) for row in rows)
    value_width = min(40, max(len(row[1]) for row in rows))
    lines = [f"{'setting':<{name_width}}  {'value':<{value_width}}  source"]
    lines += [f"{name:<{name_width}}  {value:<{value_width}}  {source}"
              for name, value, source in rows]
    lines.append("")
    lines.append("files read (lowest priority first): "
                 + ("; ".join(file_labels) if file_labels else "none found"))
    lines.append(f"user file: {config.user_config_path()}; project file: "
                 f"{config.PROJECT_FILE} or {config.PYPROJECT_FILE} [tool.poolparty] here "
                 f"or in the nearest parent directory")
    return "\n".join(lines)


def shown(value: Any) -> str:
    """A value as it would be written in poolparty.toml; unset is ``-``."""
    if value is None:
        return "-"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)
