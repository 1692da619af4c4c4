"""The records ``poolparty run``, ``exec`` and ``collect`` write: one per task.

::

    {"index": 3, "ok": true, "result": ...}
    {"index": 4, "ok": false, "error": {"type": "ValueError", "message": "...",
                                        "traceback": "..."}}

A file holds them in input order, as JSON lines or as one pickle (a list). A share file
of ``--bin`` starts with a header (a JSON line without ``index``, or the dict around the
pickled list) saying which share it is.
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable, TextIO

import cloudpickle

from ..ranges import compress_ranges
from ..work_dir import check_private
from . import UsageError

#: how many failed tasks are described one by one before "... and N more"
FAILURES_SHOWN = 10


def error_description(error: BaseException, traceback_text: str = "") -> dict[str, str]:
    """An exception as data: records must not need the exception's class to be read."""
    return {"type": type(error).__name__, "message": str(error), "traceback": traceback_text}


def describe_error(error: dict[str, str]) -> str:
    return f"{error['type']}: {error['message']}" if error["message"] else error["type"]


def capture_outcome(function: Callable[[Any], Any], item: tuple[int, Any]) -> tuple:
    """Runs on the node: one task's outcome as data, so that a failing task can't stop
    the map. ``(index, True, value)`` or ``(index, False, error description)``."""
    index, task = item
    try:
        return index, True, function(task)
    except (Exception, SystemExit) as error:  # noqa: BLE001 - a task's failure is its result
        return index, False, error_description(error, traceback.format_exc())


def make_record(index: int, outcome: tuple[bool, Any], is_success: Callable[[Any], bool]
                ) -> dict:
    ok, payload = outcome
    if not ok:
        return {"index": index, "ok": False, "error": payload}
    return {"index": index, "ok": bool(is_success(payload)), "result": payload}


# ---------------------------------------------------------------------------- writing
def output_format(path: str, explicit: str | None) -> str:
    """``--out-format``, else by extension: ``.pkl``/``.pickle`` pickle, else JSON lines."""
    if explicit:
        return explicit
    return "pickle" if Path(path).suffix in (".pkl", ".pickle") else "jsonl"


def json_line(record: dict) -> tuple[str, bool]:
    """One record as a JSON line, and whether its result could be written as JSON.

    numpy values become lists and numbers. A result JSON can't hold is written as
    ``"result": null`` plus ``"result_repr"``: the other results are not lost for it,
    and a warning says to use a ``.pkl`` output for exact values.
    """
    try:
        return json.dumps(record, default=_plain_json), True
    except (TypeError, ValueError):
        fallback = {**record, "result": None, "result_repr": repr(record.get("result"))}
        return json.dumps(fallback, default=_plain_json), False


def _plain_json(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_records(out: str, out_format: str, records: list[dict],
                  header: dict | None = None) -> None:
    """Write records to a file, complete or not at all (temporary name, then rename),
    or to stdout (``-``, JSON lines only)."""
    if out == "-":
        if out_format != "jsonl":
            raise UsageError("pickle can't go to stdout: give --out a file name")
        _write_json_lines(sys.stdout, records, header)
        return
    path = Path(out)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        # 0644 whatever the umask: others may read results, never write a pickle
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        if out_format == "pickle":
            document = records if header is None else {**header, "records": records}
            with os.fdopen(descriptor, "wb") as file:
                cloudpickle.dump(document, file)  # results may be of classes of the script
        else:
            with os.fdopen(descriptor, "w") as file:
                _write_json_lines(file, records, header)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UsageError(f"can't write {out}: {error.strerror or error}") from error


def _write_json_lines(file: TextIO, records: list[dict], header: dict | None) -> None:
    if header is not None:
        file.write(json.dumps(header) + "\n")
    not_json = []
    for record in records:
        line, exact = json_line(record)
        file.write(line + "\n")
        if not exact:
            not_json.append(record["index"])
    if not_json:
        print(f"warning: the results of task(s) {compress_ranges(not_json)} are not JSON "
              f"values: written as result_repr; use --out results.pkl for the values",
              file=sys.stderr)


def read_records(path: Path) -> tuple[dict | None, list[dict]]:
    """A file written by :func:`write_records`: its header (or None) and its records.

    A pickle runs code when loaded: one that another user could have written is refused.
    """
    if output_format(str(path), None) == "pickle":
        check_private(path)
        document = pickle.loads(path.read_bytes())
        if isinstance(document, dict):
            return {k: v for k, v in document.items() if k != "records"}, document["records"]
        return None, document
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if lines and "index" not in lines[0]:
        return lines[0], lines[1:]
    return None, lines


# ---------------------------------------------------------------------------- the summary
def report(records: Iterable[dict], describe_failure: Callable[[dict], str], out: str) -> int:
    """Say what happened on stderr; 1 when a task failed, naming the failed tasks."""
    records = list(records)
    failed = [record for record in records if not record["ok"]]
    print(f"{len(records)} task(s): {len(records) - len(failed)} succeeded, {len(failed)} "
          f"failed; records in {out}", file=sys.stderr)
    if not failed:
        return 0
    print(f"failed tasks: {compress_ranges(r['index'] for r in failed)}", file=sys.stderr)
    for record in failed[:FAILURES_SHOWN]:
        print(f"  task {record['index']}: {describe_failure(record)}", file=sys.stderr)
    if len(failed) > FAILURES_SHOWN:
        print(f"  ... and {len(failed) - FAILURES_SHOWN} more", file=sys.stderr)
    return 1


def describe_any_failure(record: dict) -> str:
    """One line for a failed record of run or exec (collect merges both kinds)."""
    if "error" in record:
        return describe_error(record["error"])
    result = record.get("result")
    if isinstance(result, dict) and "returncode" in result:
        return f"exit code {result['returncode']}: {stderr_tail(result.get('stderr', ''))}"
    return "failed"


def stderr_tail(text: str, max_lines: int = 3, max_chars: int = 300) -> str:
    """The end of a command's stderr, on one line: usually where it says why."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-max_lines:])
    return tail[-max_chars:] if tail else "(no stderr)"
