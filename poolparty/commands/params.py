"""The parameters of ``poolparty exec``: lines of a file, a grid, or their product.

A :class:`Parameter` has named values (``{name}`` in the command) and, when it came
from a line, that line (``{}``). Formats of ``--params``:

* plain: each non-empty line is one parameter, ``{}``, with no names;
* jsonl: each non-empty line is JSON; an object's keys are names; ``{}`` is the line;
* csv: a header names the columns; ``{}`` is the row written back as CSV.

``--grid a=1,2 b=1-5`` is the cartesian product of each name's values (``1-5`` is the
inclusive range 1..5); with ``--params`` every line is combined with every grid point.
A bad line or grid is a UsageError naming it, before anything is submitted.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import UsageError

FORMATS = ("plain", "jsonl", "csv")
_RANGE = re.compile(r"^(-?\d+)-(-?\d+)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Parameter:
    """One task's parameter: named values, the line it came from (or None), and where
    it came from for messages (``params.csv line 3``)."""

    values: dict[str, Any]
    line: str | None
    origin: str


def read_params(source: str, params_format: str | None) -> list[Parameter]:
    """The parameters of a file (``-``: stdin), in its format or the one its name says."""
    params_format = params_format or format_of(source)
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"can't read --params {name}: {error}") from error
    return PARSERS[params_format](text, name)


def format_of(source: str) -> str:
    suffix = Path(source).suffix.lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "plain")


def plain_params(text: str, name: str) -> list[Parameter]:
    return [Parameter({}, line, f"{name} line {number}")
            for number, line in enumerate(text.splitlines(), 1) if line]


def jsonl_params(text: str, name: str) -> list[Parameter]:
    params = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{name} line {number}: not JSON ({error.msg}): {line[:80]!r}"
                             ) from None
        values = value if isinstance(value, dict) else {}
        params.append(Parameter(values, line.strip(), f"{name} line {number}"))
    return params


def csv_params(text: str, name: str) -> list[Parameter]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or any(not column.strip() for column in header):
        raise UsageError(f"{name} line 1: a CSV file needs a header naming every column")
    if len(set(header)) != len(header):
        raise UsageError(f"{name} line 1: the header names a column twice: {header}")
    params = []
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise UsageError(f"{name} line {reader.line_num}: {len(row)} field(s), the "
                             f"header has {len(header)}")
        params.append(Parameter(dict(zip(header, row)), _csv_line(row),
                                f"{name} line {reader.line_num}"))
    return params


def _csv_line(row: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(row)
    return buffer.getvalue()


PARSERS: dict[str, Callable[[str, str], list[Parameter]]] = {
    "plain": plain_params, "jsonl": jsonl_params, "csv": csv_params,
}


# ---------------------------------------------------------------------------- the grid
def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["a=1,2", "b=1-3"]`` -> ``[("a", ["1", "2"]), ("b", ["1", "2", "3"])]``."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        name, equals, text = item.partition("=")
        if not equals or not _NAME.match(name):
            raise UsageError(f"--grid {item!r}: expected NAME=VALUES, e.g. seed=1-5 or "
                             f"mode=fast,slow")
        if any(name == known for known, _ in grid):
            raise UsageError(f"--grid names {name!r} twice")
        grid.append((name, grid_values(item, text)))
    return grid


def grid_values(item: str, text: str) -> list[str]:
    values: list[str] = []
    for part in text.split(","):
        if not part:
            raise UsageError(f"--grid {item!r}: an empty value (two commas, or a trailing one)")
        match = _RANGE.match(part)
        if match is None:
            values.append(part)
            continue
        first, last = int(match.group(1)), int(match.group(2))
        if last < first:
            raise UsageError(f"--grid {item!r}: the range {part!r} goes down")
        values.extend(str(number) for number in range(first, last + 1))
    return values


def combine(params: list[Parameter] | None, grid: list[tuple[str, list[str]]]
            ) -> list[Parameter]:
    """Every line with every grid point (lines outermost); either may be absent."""
    if params is None and not grid:
        raise UsageError("give the parameters: --params FILE (or - for stdin), --grid, or both")
    points = list(itertools.product(*(values for _, values in grid)))
    names = [name for name, _ in grid]
    if params is None:
        return [Parameter(dict(zip(names, point)), None, "--grid") for point in points]
    combined = []
    for parameter in params:
        clash = sorted(set(names) & set(parameter.values))
        if clash:
            raise UsageError(f"{parameter.origin}: {clash} named both there and in --grid")
        for point in points:
            combined.append(Parameter({**parameter.values, **dict(zip(names, point))},
                                      parameter.line, parameter.origin))
    return combined
