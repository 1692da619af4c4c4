"""Helpers of the CLI tests: the CLI run in-process, and a dummy SLURM/SGE on PATH.

conftest.py makes fixtures of them (``run_cli``, ``dummy_slurm``). The dummy
scheduler's commands are put on PATH as small wrapper scripts, so the
command line finds ``sbatch`` as it would on a login node: nothing poolparty-specific
tells it where the queue is.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from poolparty import cli
from poolparty.dummy_schedulers import DummyQueue


@dataclass
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


def cli_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> CliRunner:
    """``run_cli("run", "script.py:f", ...)`` -> exit code, stdout, stderr; in tmp_path,
    with poolparty's configuration isolated and quick polling."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("POOLPARTY_POLLING_INTERVAL", "0.2")
    monkeypatch.setenv("POOLPARTY_CALL_TIMEOUT", "10")

    def run(*argv: str) -> CliResult:
        code = cli.main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@contextlib.contextmanager
def dummy_scheduler_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            scheduler: str | None = None) -> Iterator[DummyQueue]:
    """A dummy SLURM (and SGE), or the dummy ``scheduler`` ("pbs", "lsf"), whose
    commands are on PATH; shut down after the test."""
    queue = DummyQueue(tmp_path / "queue")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, argv in queue.commands(scheduler).items():
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    try:
        yield queue
    finally:
        queue.shutdown(timeout=30)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def nothing_written(directory: Path) -> bool:
    """No work_dir, no records: what bad input must leave behind."""
    return not (directory / ".poolparty").exists() and not (directory / "results.jsonl").exists()
