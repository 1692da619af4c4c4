"""``--bin I/N``: split the tasks into N shares and run some of them on this machine.

For machines without a scheduler: each of N machines runs ``--bin i/N`` (or a range,
``0-2,5/N``) on local processes and writes ``share-<i>-of-<N>.jsonl`` (or ``.pkl``);
``poolparty collect DIR`` merges the files into one output in input order and names
the shares and tasks still missing.

Which share a task belongs to must be the same on every machine and every Python:

* by position (the default): task k is in share ``k mod N``, round robin, so shares are
  equal in size and tasks appended to the input don't move the others;
* by key (``--bin-key``): ``int(sha256(canonical JSON of the chosen values)) mod N``.
  The canonical JSON is ``json.dumps(values, sort_keys=True, separators=(",", ":"),
  ensure_ascii=True, allow_nan=False)``: the same bytes everywhere, unlike Python's
  ``hash()``, which is salted per process for strings.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..ranges import compress_ranges
from . import UsageError
from .records import describe_any_failure, read_records, report, write_records

SHARE_FILE = re.compile(r"^share-(\d+)-of-(\d+)\.(jsonl|pkl)$")
SUFFIX = {"jsonl": ".jsonl", "pickle": ".pkl"}


@dataclass(frozen=True)
class Bins:
    """``--bin``: which shares of how many."""

    shares: frozenset[int]
    count: int


def parse_bin(text: str) -> Bins:
    """``"3/10"``, ``"0-2,5/10"`` -> Bins; a malformed one or a share >= N is a UsageError."""
    spec, slash, count_text = text.strip().rpartition("/")
    if not slash or not spec or not count_text.isdigit() or int(count_text) < 1:
        raise UsageError(f"--bin {text!r}: expected I/N with N >= 1, e.g. 3/10 or 0-2,5/10")
    count = int(count_text)
    chosen: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--bin {text!r}: {part!r} is not a share number or a range a-b")
        stop = int(last) if dash else int(first)
        if stop < int(first):
            raise UsageError(f"--bin {text!r}: the range {part!r} goes down")
        chosen.update(range(int(first), stop + 1))
    too_big = sorted(share for share in chosen if share >= count)
    if too_big:
        raise UsageError(f"--bin {text!r}: shares are numbered 0 to {count - 1}, "
                         f"not {compress_ranges(too_big)}")
    return Bins(frozenset(chosen), count)


def canonical_key(values: Sequence[Any]) -> bytes:
    """The bytes a key is hashed as: the same on every machine and Python version."""
    return json.dumps(list(values), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def share_of_key(values: Sequence[Any], count: int) -> int:
    return int.from_bytes(hashlib.sha256(canonical_key(values)).digest(), "big") % count


def assign(tasks: Sequence[Any], count: int, key_of: Callable[[Any], list] | None) -> list[int]:
    """The share of every task: by position, or by the hash of ``key_of(task)``."""
    if key_of is None:
        return [index % count for index in range(len(tasks))]
    shares = []
    for index, task in enumerate(tasks):
        values = key_of(task)
        try:
            shares.append(share_of_key(values, count))
        except (TypeError, ValueError) as error:
            raise UsageError(f"--bin-key: task {index} has key {values!r:.100}, which is not "
                             f"made of JSON values (str, int, float, bool, None, lists, "
                             f"dicts): {error}") from error
    return shares


def header(share: int, count: int, num_tasks: int, key: str | None) -> dict:
    return {"share": share, "of": count, "num_tasks": num_tasks, "bin_key": key}


def write_share(directory: Path, out_format: str, share_header: dict, records: list[dict]
                ) -> Path:
    """``DIR/share-<i>-of-<N>.<ext>``, written even when the share has no task, so
    collect knows the share was run."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"can't create {directory}: {error.strerror or error}") from error
    name = f"share-{share_header['share']}-of-{share_header['of']}{SUFFIX[out_format]}"
    write_records(str(directory / name), out_format, records, share_header)
    return directory / name


# ---------------------------------------------------------------------------- collect
def collect(directory: Path, out: str, out_format: str) -> int:
    """Merge the share files of DIR into one output in input order; exit 1 naming the
    missing shares and tasks (the records present are written all the same) or the
    failed tasks."""
    found = _share_files(directory)
    headers, records = _read_shares(found)
    count, num_tasks = _agreed(headers, "of"), _agreed(headers, "num_tasks")
    _agreed(headers, "bin_key")
    by_index = {record["index"]: record for record in records}
    merged = [by_index[index] for index in sorted(by_index)]
    write_records(out, out_format, merged)
    missing_shares = sorted(set(range(count)) - {h["share"] for h in headers})
    missing_tasks = sorted(set(range(num_tasks)) - set(by_index))
    status = report(merged, describe_any_failure, out)
    if missing_shares or missing_tasks:
        print(f"missing shares of {count}: {compress_ranges(missing_shares) or 'none'}; "
              f"missing tasks: {compress_ranges(missing_tasks) or 'none'}", file=sys.stderr)
        return 1
    return status


def _share_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory of share files")
    found = sorted(p for p in directory.iterdir() if SHARE_FILE.match(p.name))
    if not found:
        raise UsageError(f"no share-<i>-of-<n>.jsonl or .pkl file in {directory}")
    counts = {SHARE_FILE.match(p.name).group(2) for p in found}  # type: ignore[union-attr]
    if len(counts) > 1:
        raise UsageError(f"{directory} holds shares of different splits "
                         f"(of {', '.join(sorted(counts))}): collect one split at a time")
    return found


def _read_shares(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    headers, records = [], []
    for path in paths:
        try:
            share_header, share_records = read_records(path)
        except (OSError, ValueError, EOFError, KeyError) as error:
            raise UsageError(f"{path} is not a readable share file: {error}") from error
        if not share_header or "share" not in share_header:
            raise UsageError(f"{path} has no share header: not written by --bin")
        if any(h["share"] == share_header["share"] for h in headers):
            raise UsageError(f"share {share_header['share']} is in two files: keep one")
        headers.append(share_header)
        records.extend(share_records)
    return headers, records


def _agreed(headers: list[dict], field: str) -> Any:
    """A value every share must agree on, or they come from different inputs."""
    values = {h.get(field) for h in headers}
    if len(values) > 1:
        raise UsageError(f"the share files disagree on {field!r} ({sorted(values)}): they "
                         f"come from different inputs or splits")
    return values.pop()
