"""Scheduler commands: retried with backoff while transient, within a time limit."""

from __future__ import annotations

import sys

import pytest

from poolparty.errors import SchedulerCommandError
from poolparty.scheduler import run_command

FLAKY = """
import pathlib, sys
counter = pathlib.Path(sys.argv[1])
calls = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(calls))
if calls <= int(sys.argv[2]):
    sys.stderr.write("slurm_load_jobs error: Socket timed out on send/recv operation\\n")
    sys.exit(1)
print("12345")
"""


def test_a_transient_failure_is_retried_with_growing_backoff(tmp_path):
    naps: list[float] = []
    out = run_command([sys.executable, "-c", FLAKY, str(tmp_path / "n"), "3"], timeout=60,
                      sleep=naps.append)
    assert out.strip() == "12345"
    assert naps == sorted(naps) and len(naps) == 3 and naps[0] < naps[-1]


def test_a_permanent_failure_is_raised_at_once_with_its_stderr(tmp_path):
    naps: list[float] = []
    with pytest.raises(SchedulerCommandError, match="Socket timed out") as caught:
        run_command([sys.executable, "-c", FLAKY, str(tmp_path / "n"), "99"], timeout=60,
                    is_transient=lambda error: False, sleep=naps.append)
    assert naps == [] and caught.value.returncode == 1


def test_a_hanging_command_gives_up_within_the_limit_saying_how_long_it_waited():
    with pytest.raises(SchedulerCommandError) as caught:
        run_command([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.5)
    message = str(caught.value)
    assert "no answer within" in message
    assert "within 0 s" not in message  # a half-second attempt is not "0 s"
