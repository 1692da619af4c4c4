"""Parsers and argv builders, on output captured from the real schedulers (tests/data/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from poolparty.ranges import compress_ranges, contiguous_runs, expand_ranges
from poolparty.scheduler import State
from poolparty.slurm import parse_max_array_size, parse_squeue
from poolparty.sun_grid_engine import (
    is_sun_grid_engine,
    job_lists,
    parse_max_aj_tasks,
    parse_qstat_xml,
    state_of,
)

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("numbers, text", [
    ([], ""), ([4], "4"), ([0, 1, 2, 5, 7, 8], "0-2,5,7-8"), ([3, 1, 2], "1-3"),
])
def test_ranges_compress_and_expand_back(numbers, text):
    assert compress_ranges(numbers) == text
    assert expand_ranges(text) == sorted(numbers)


def test_expand_understands_throttles_brackets_and_sge_steps():
    assert expand_ranges("[4-7%4]") == [4, 5, 6, 7]
    assert expand_ranges("9-20:5") == [9, 14, 19]


def test_squeue_of_an_array_one_line_per_element():
    jobs = parse_squeue((DATA / "slurm_squeue_array.txt").read_text())
    assert len(jobs) == 20
    assert {j.job_id for j in jobs} == {"607"}
    assert sorted(j.index for j in jobs) == list(range(20))
    states = {j.index: j.state for j in jobs}
    assert [states[i] for i in range(4)] == [State.RUNNING] * 4
    assert states[10] is State.PENDING


def test_squeue_of_an_unsplit_array_is_expanded():
    jobs = parse_squeue((DATA / "slurm_squeue_array_unexpanded.txt").read_text())
    assert sorted(j.index for j in jobs) == list(range(20))


def test_a_held_job_is_pending_not_an_error():
    """scontrol hold then release must not make the pool resubmit the job."""
    jobs = parse_squeue((DATA / "slurm_squeue_held.txt").read_text())
    assert all(j.state in (State.PENDING, State.RUNNING) for j in jobs)


@pytest.mark.parametrize("line, state", [
    ("12|PENDING|launch failed requeued held", State.ERROR),
    ("12_3|FAILED|NonZeroExitCode", State.ERROR),
    ("12_3|TIMEOUT|None", State.ERROR),
    ("12_3|COMPLETING|None", State.RUNNING),
    ("12_3|REQUEUED|BeginTime", State.PENDING),
    ("12_3|SUSPENDED|None", State.RUNNING),  # holds its claim: not taken for requeued
    ("12_3|SOME_NEW_STATE|None", State.RUNNING),
])
def test_states_map_onto_the_small_enum(line, state):
    (job,) = parse_squeue(line)
    assert job.state is state


def test_max_array_size_is_read_from_scontrol_show_config():
    assert parse_max_array_size((DATA / "slurm_scontrol_show_config.txt").read_text()) == 1001
    assert parse_max_array_size("MaxArraySize            = 50000\n") == 50000
    assert parse_max_array_size("garbage") == 1001




def test_qstat_xml_lists_running_tasks_and_expands_pending_ranges():
    jobs = parse_qstat_xml((DATA / "sge_qstat_xml.txt").read_text(), "pp-capture")
    by_task = {j.index: j.state for j in jobs}
    assert sorted(by_task) == list(range(5, 21))
    assert [by_task[t] for t in (5, 6, 7, 8)] == [State.RUNNING] * 4
    assert by_task[20] is State.PENDING
    assert parse_qstat_xml((DATA / "sge_qstat_xml.txt").read_text(), "other-name") == []


@pytest.mark.parametrize("captured", ["sge_qstat_xml.txt", "sge_qstat_xml_error.txt"])
def test_qstat_xml_is_read_as_the_qstat_package_reads_it(captured, tmp_path):
    """Our reader of real ``qstat -xml`` output agrees, job for job and field for field,
    with the PyPI package ``qstat`` (called through its public ``qstat.qstat``)."""
    qstat = pytest.importorskip("qstat")
    fake_qstat = tmp_path / "qstat"
    fake_qstat.write_text(f"#!/bin/sh\ncat '{DATA / captured}'\n")
    fake_qstat.chmod(0o755)
    queued, pending = qstat.qstat(qstat_path=str(fake_qstat))
    theirs = [{key: value or "" for key, value in job.items() if not key.startswith("@")}
              for job in [*queued, *pending]]
    ours = job_lists((DATA / captured).read_text())
    assert ours == theirs and len(ours) >= 2


def test_qstat_xml_shows_real_eqw_jobs_as_errors():
    text = (DATA / "sge_qstat_xml_error.txt").read_text()
    assert [j.state for j in parse_qstat_xml(text, "pp-badwd")] == [State.ERROR]
    assert [j.state for j in parse_qstat_xml(text, "pp-badout")] == [State.ERROR]


@pytest.mark.parametrize("code, state", [
    ("qw", State.PENDING), ("hqw", State.PENDING), ("r", State.RUNNING), ("t", State.RUNNING),
    ("Rr", State.RUNNING), ("Eqw", State.ERROR), ("dr", State.ERROR), ("dt", State.ERROR),
    ("s", State.RUNNING), ("rs", State.RUNNING), ("S", State.RUNNING), ("T", State.RUNNING),
    ("dS", State.ERROR),  # a suspended job still holds its claim; not a requeued one
])
def test_sge_state_codes(code, state):
    assert state_of(code) is state


def test_max_aj_tasks_is_read_from_the_global_configuration():
    assert parse_max_aj_tasks((DATA / "sge_qconf_sconf.txt").read_text()) == 75000
    assert parse_max_aj_tasks("max_aj_tasks                 0\n") > 10**8  # 0: unlimited


def test_chunks_are_cut_into_contiguous_arrays_no_longer_than_the_limit():
    assert contiguous_runs([0, 1, 2, 5, 6, 9], 10) == [range(3), range(5, 7), range(9, 10)]
    assert contiguous_runs(range(5), 2) == [range(2), range(2, 4), range(4, 5)]


def test_sge_is_told_apart_from_pbs_by_qstat_help():
    assert is_sun_grid_engine("SGE 8.1.9\nusage: qstat [options]\n")
    assert is_sun_grid_engine("GE 2011.11p1\nusage: qstat\n")
    assert not is_sun_grid_engine("usage: \n  qstat [-f [-1]] [-W site_specific] ... (PBS)\n")
    assert not is_sun_grid_engine("")
