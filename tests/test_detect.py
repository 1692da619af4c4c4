"""Pool() picks the best scheduler found here, and says which."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from poolparty.backends import detect_backend


def fake_commands(directory: Path, scripts: dict[str, str]) -> str:
    directory.mkdir()
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return str(directory)


@pytest.mark.parametrize("scripts, expected", [
    ({"sbatch": "exit 0", "squeue": "exit 0", "qsub": "exit 0"}, "slurm-array"),
    ({"qsub": "exit 0", "qstat": "echo 'SGE 8.1.9'; echo usage"}, "sge"),
    ({"qsub": "exit 0", "qstat": "echo 'usage: qstat [-f] (PBS Pro)'"}, "local"),
    ({}, "local"),
])
def test_detection_prefers_slurm_then_real_sge_then_local(tmp_path, monkeypatch, caplog,
                                                          scripts, expected):
    monkeypatch.setenv("PATH", fake_commands(tmp_path / "bin", scripts))
    with caplog.at_level(logging.INFO, logger="poolparty"):
        assert detect_backend() == expected
    assert caplog.records, "the choice is logged"
