"""Telling how a job ended from its log (poolparty.endings): the lines SLURM's slurmstepd,
PBS's MoM, LSF's job report and the node's shell write, as captured on the test clusters
(tests/data/endings/, each file says how it was made) and as the SLURM sources and the
PBS and LSF manuals write them."""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

import pytest

from poolparty.endings import Ending, ending_in_log
from poolparty.errors import ChunksLostError
from poolparty.events import STARTED

DATA = Path(__file__).parent / "data" / "endings"

WRITTEN = [
    (b"slurmstepd: error: *** JOB 8 ON localhost CANCELLED AT 2026-12-06T20:41:02 DUE TO "
     b"TIME LIMIT ***\n", True, Ending.TIME_LIMIT),
    (b"slurmstepd: error: *** STEP 8.0 ON node7 CANCELLED AT 2026-12-06T20:41:02 DUE TO "
     b"TIME LIMIT ***\n", True, Ending.TIME_LIMIT),
    (b"slurmstepd: error: *** JOB 9 ON node7 CANCELLED AT 2026-12-06T20:41:02 DUE TO "
     b"PREEMPTION ***\n", True, Ending.PREEMPTED),
    (b"slurmstepd: error: *** JOB 9 ON node7 CANCELLED AT 2026-12-06T20:41:02 DUE TO "
     b"NODE FAILURE ***\n", True, Ending.NODE_FAILURE),
    (b"slurmstepd: error: *** JOB 10 ON node7 CANCELLED AT 2026-12-06T20:41:02 ***\n",
     True, Ending.CANCELLED),
    (b"slurmstepd: error: Detected 1 oom_kill event in StepId=11.batch. Some of the step "
     b"tasks have been OOM Killed.\n", True, Ending.OUT_OF_MEMORY),
    (b"slurmstepd: error: Exceeded job memory limit\n", True, Ending.OUT_OF_MEMORY),
    # PBS's MoM (PBS Professional; Torque writes the same without "=>> ")
    (b"=>> PBS: job killed: walltime 65 exceeded limit 60\n", True, Ending.TIME_LIMIT),
    (b"PBS: job killed: walltime 125 exceeded limit 120\n", True, Ending.TIME_LIMIT),
    (b"=>> PBS: job killed: mem 2097160kb exceeded limit 1048576kb\n", True,
     Ending.OUT_OF_MEMORY),
    (b"=>> PBS: job killed: vmem 4194304kb exceeded limit 2097152kb\n", True,
     Ending.OUT_OF_MEMORY),
    # LSF's job report (IBM's "Termination reasons displayed by bacct, bhist, and bjobs")
    (b"TERM_RUNLIMIT: job killed after reaching LSF run time limit.\nExited with exit code "
     b"140.\n", True, Ending.TIME_LIMIT),
    (b"TERM_MEMLIMIT: job killed after reaching LSF memory usage limit.\n", True,
     Ending.OUT_OF_MEMORY),
    (b"TERM_PREEMPT: job killed after preemption.\n", True, Ending.PREEMPTED),
    (b"TERM_OWNER: job killed by owner.\n", True, Ending.CANCELLED),
    (b"TERM_FORCE_ADMIN: job killed by root or LSF administrator without time for "
     b"cleanup.\n", True, Ending.CANCELLED),
    # a task that prints such a word mid-line says nothing of its job
    (b"my task read: TERM_RUNLIMIT is LSF's\n", True, None),
    (b"/usr/bin/python3: No module named poolparty\n", False, Ending.ENVIRONMENT),
    (b"job.sh: line 3: /opt/venv/bin/python: No such file or directory\n", False,
     Ending.ENVIRONMENT),
    # the same words printed by a task are a task's output, not the environment
    (b"/usr/bin/python3: No module named poolparty\n", True, None),
    (b"task 3 says hello\n", True, None),
    (b"", False, None),
]


@pytest.mark.parametrize(("log", "started", "expected"), WRITTEN)
def test_the_lines_schedulers_and_shells_write_are_told_apart(log, started, expected):
    assert ending_in_log(log, started) is expected


def test_only_the_last_cancel_line_counts():
    """A requeued job's log holds the first run's line, then the second run's."""
    log = (b"*** JOB 8 ON n1 CANCELLED AT 2026-12-06T20:00:00 DUE TO PREEMPTION ***\n"
           b"*** JOB 8 ON n1 CANCELLED AT 2026-12-06T20:05:00 DUE TO TIME LIMIT ***\n")
    assert ending_in_log(log, True) is Ending.TIME_LIMIT


@pytest.mark.parametrize("path", sorted(DATA.glob("*.log")), ids=lambda p: p.name)
def test_logs_captured_on_the_test_clusters(path):
    """Each file's first line names the class its log must be told as."""
    first, _, log = path.read_bytes().partition(b"\n")
    expected = first.decode().split("expected:", 1)[1].split()[0]
    assert ending_in_log(log, STARTED in log) is (
        None if expected == "none" else Ending[expected])


def ended_by_the_scheduler(x: int, reason: str, marks: str, times: int) -> int:
    """Write the line slurmstepd writes when it ends a job for ``reason``, then end the
    whole job as it would (its process group: no line of job.sh's), the first ``times``
    attempts of this task; then compute."""
    mark = Path(marks) / f"{x}-{len(list(Path(marks).glob(f'{x}-*')))}"
    mark.touch()
    if len(list(Path(marks).glob(f"{x}-*"))) <= times:
        print(f"slurmstepd: error: *** JOB 7 ON node7 CANCELLED AT 2026-12-06T20:41:02 "
              f"DUE TO {reason} ***", flush=True)
        os.killpg(0, signal.SIGKILL)
    return 10 * x


def test_a_preempted_worker_does_not_use_up_the_resubmissions(backend, tmp_path):
    """max_num_resubmissions=0 allows no lost claim, but a preemption is not the
    chunk's fault: preempted twice, the task still runs to its result."""
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(ended_by_the_scheduler, reason="PREEMPTION", marks=str(marks),
                             times=2)
    with backend.make_pool(max_num_resubmissions=0) as pool:
        assert pool.map(task, [3]) == [30]
    assert len(list(marks.iterdir())) == 3


def test_chunks_lost_error_names_the_time_limit(backend, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(ended_by_the_scheduler, reason="TIME LIMIT", marks=str(marks),
                             times=99)
    with backend.make_pool(max_num_resubmissions=1) as pool, \
            pytest.raises(ChunksLostError) as raised:
        pool.map(task, [3])
    assert str(raised.value).count("its job reached its time limit") == 2, str(raised.value)


def test_a_node_without_poolparty_fails_the_map_at_once_with_its_message(dummy, tmp_path):
    """No round of resubmissions when the node's python can't import poolparty: the
    error says so, with the node's own words, after the first workers."""
    python = tmp_path / "python-without-poolparty"
    python.write_text(  # the client's host has poolparty, the nodes' python has not
        "#!/bin/sh\n"
        "case \"$2\" in poolparty.worker) echo \"$0: No module named poolparty\" >&2; "
        "exit 1;; esac\n"
        f"exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    pool = dummy.make_pool(python_path=str(python), max_num_resubmissions=3, processes=2)
    submitted = []
    submit = pool.scheduler.submit
    pool.scheduler.submit = lambda work_dir, ids, *steps: (submitted.append(len(ids)),
                                                           submit(work_dir, ids, *steps))[1]
    with pool, pytest.raises(ChunksLostError) as raised:
        pool.map(abs, range(4))
    message = str(raised.value)
    assert "the node could not start the worker" in message
    assert "No module named poolparty" in message
    assert len(submitted) == 1, submitted
