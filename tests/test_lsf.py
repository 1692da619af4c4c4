"""The IBM LSF backend without an LSF: its parsers on output of real clusters
(tests/data/lsf, sources in its README), the bsub command lines it builds, the resources
it refuses, the states it reads, and how it is recognised. The shared suite runs it on
the dummy LSF (``dummy-lsf``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_detect import fake_commands

import poolparty
from poolparty import lsf
from poolparty.dummy_schedulers import DummyQueue
from poolparty.dummy_schedulers._state import transaction
from poolparty.escalation import Steps
from poolparty.lsf import Lsf, parse_bjobs_json, state_of
from poolparty.scheduler import QueuedJob, State
from poolparty.work_dir import WorkDir

DATA = Path(__file__).parent / "data" / "lsf"


def test_the_job_id_is_read_from_what_bsub_printed():
    assert lsf.job_id_in((DATA / "bsub_submitted.txt").read_text()) == "473713"
    busy = "LSF is processing your request. Please wait ...\n"
    assert lsf.job_id_in(busy + "Job <1234> is submitted to queue <normal>.\n") == "1234"
    with pytest.raises(ValueError, match="no job id"):
        lsf.job_id_in("Request aborted by esub. Job not submitted.\n")


def test_finished_jobs_have_left_the_queue():
    text = (DATA / "bjobs_json_finished.json").read_text()
    assert parse_bjobs_json(text, "RoddyTest_testScript") == []


def test_a_record_without_a_job_id_is_skipped_and_a_held_job_waits():
    text = (DATA / "bjobs_json_psusp.json").read_text()
    assert parse_bjobs_json(text, "hold_job") == []
    assert state_of("PSUSP") is State.PENDING


def test_array_elements_are_read_with_their_index_and_state():
    text = (DATA / "bjobs_json_array.json").read_text()
    assert parse_bjobs_json(text, "poolparty-capture") == [
        QueuedJob("5120", 1, State.RUNNING),
        QueuedJob("5120", 2, State.RUNNING),  # suspended by the system: goes on later
        QueuedJob("5120", 3, State.PENDING),  # held by its user
        QueuedJob("5120", 4, State.PENDING),
        QueuedJob("5121", None, State.ERROR),  # a ZOMBI: JOBINDEX 0, no array
    ]
    assert parse_bjobs_json(text, "poolparty-other") == []


@pytest.mark.parametrize(("code", "state"), [
    ("PEND", State.PENDING), ("PSUSP", State.PENDING), ("RUN", State.RUNNING),
    ("USUSP", State.RUNNING), ("SSUSP", State.RUNNING), ("UNKWN", State.RUNNING),
    ("ZOMBI", State.ERROR), ("DONE", None), ("EXIT", None),
])
def test_lsf_states(code, state):
    assert state_of(code) is state


def test_an_unknown_state_is_logged_once_and_left_alone(caplog):
    with caplog.at_level(logging.WARNING, logger="poolparty"):
        assert state_of("NEWSTATE") is State.RUNNING
        assert state_of("NEWSTATE") is State.RUNNING
    assert caplog.text.count("NEWSTATE") == 1


def test_max_job_array_size_is_read_from_badmin_showconf():
    assert lsf.parse_max_job_array_size((DATA / "badmin_showconf_mbd.txt").read_text()) == 10000
    assert lsf.parse_max_job_array_size("MBD configuration at Mon Dec  7\n") == 1000


@pytest.fixture
def work_dir(tmp_path) -> WorkDir:
    return WorkDir.create(tmp_path / "work")


def backend(**options) -> Lsf:
    """An Lsf whose MAX_JOB_ARRAY_SIZE is known (no badmin is asked)."""
    scheduler = Lsf(**options)
    scheduler.limits_read = {"MAX_JOB_ARRAY_SIZE": 1000}
    return scheduler


def test_the_plan_is_one_array_per_run_of_chunks_with_a_throttle(work_dir):
    scheduler = backend(max_running=3, queue="normal", time="1:30", memory="4G", cpus=2,
                        gpus=1, bsub_args=["-P", "proj"])
    (submission,) = scheduler.plan(work_dir, [4, 5, 6])
    name = f"poolparty-{work_dir.map_id}"
    assert list(submission.argv) == [
        "bsub", "-J", f"{name}[1-3]%3", "-o", f"{work_dir.logs_dir}/%J.%I.log",
        "-q", "normal", "-W", "1:30", "-M", "4096MB", "-n", "2",
        "-R", "rusage[mem=4096MB] span[hosts=1]", "-gpu", "num=1", "-P", "proj",
        "/bin/sh", str(work_dir.script_path), "--array", "3", "LSB_JOBINDEX",
    ]
    assert dict(submission.chunks) == {4: 1, 5: 2, 6: 3}
    assert submission.record("77")[5] == (2, "77.2.log")


def test_without_processes_there_is_no_throttle_and_arrays_are_cut(work_dir):
    scheduler = backend()
    scheduler.limits_read = {"MAX_JOB_ARRAY_SIZE": 2}
    plan = scheduler.plan(work_dir, [0, 1, 2, 7])
    names = [submission.argv[submission.argv.index("-J") + 1] for submission in plan]
    name = f"poolparty-{work_dir.map_id}"
    assert names == [f"{name}[1-2]", f"{name}[1-1]", f"{name}[1-1]"]
    assert [dict(submission.chunks) for submission in plan] == [{0: 1, 1: 2}, {2: 1}, {7: 1}]


def test_raised_workers_ask_for_more_time_and_memory(work_dir):
    scheduler = backend(time="60", memory="1000MB", time_escalation=2, memory_escalation=2)
    assert scheduler.time_limit_seconds == 3600
    (submission,) = scheduler.plan(work_dir, [0], Steps(time=1, memory=1))
    argv = list(submission.argv)
    assert argv[argv.index("-W") + 1] == "2:00"
    assert argv[argv.index("-M") + 1] == "2000MB"
    assert argv[argv.index("/bin/sh") + 2:] == ["--steps", "1,1", "--time-limit", "7200",
                                                "--array", "-1", "LSB_JOBINDEX"]
    assert scheduler.raises(poolparty.endings.Ending.TIME_LIMIT)


@pytest.mark.parametrize(("resources", "words"), [
    ({"memroy": "2G"}, "LSF takes time .* cpus .* queue"),
    ({"time": "soon"}, r"time='soon' is not something bsub takes: -W is \[hour:\]minute"),
    ({"memory": "4000"}, "give it a unit"),
    ({"memory": "lots"}, "-M is a size with a unit"),
    ({"cpus": 0}, "-n takes a whole number"),
    ({"gpus": "two"}, "-gpu takes a number of GPUs"),
    ({"queue": "a queue"}, "-q takes a queue's name"),
])
def test_resources_per_map_are_checked_in_lsfs_words(resources, words):
    with pytest.raises(poolparty.InvalidInputError, match=words):
        backend().with_resources(resources)


def test_resources_per_map_by_lsfs_letters(work_dir):
    changed = backend(time="10").with_resources({"W": "2:00", "M": "2GB", "n": 4, "q": "long"})
    assert (changed.time_limit_seconds, changed.asked_memory, changed.cpus, changed.queue) == (
        7200, "2048MB", 4, "long")


@pytest.mark.parametrize("argument", ["-o", "-e", "-J", "-oo", "-eo"])
def test_bsub_args_may_not_move_the_output_or_rename_the_job(argument):
    with pytest.raises(poolparty.InvalidInputError, match="poolparty sets .* itself"):
        backend(bsub_args=["-P", "proj", argument, "x"])


def test_a_work_dir_bsub_would_rewrite_is_refused(tmp_path):
    with pytest.raises(poolparty.InvalidInputError, match="'%J'"):
        backend().check_work_dir(tmp_path / "run%J")
    with pytest.raises(poolparty.InvalidInputError, match="'%I'"):
        backend().check_work_dir(tmp_path / "%Index")
    backend().check_work_dir(tmp_path / "100%")  # no other % is bsub's


@pytest.mark.parametrize(("scripts", "found"), [
    ({"bsub": "exit 0", "bjobs": "exit 0",
      "lsid": "echo 'IBM Spectrum LSF Standard 10.1.0.13, Jan 10 2023'"}, True),
    ({"bsub": "echo 'IBM Spectrum LSF 10.1.0.0 build 403338' >&2", "bjobs": "exit 0"}, True),
    ({"bsub": "echo 'openlava project 4.0' >&2", "bjobs": "exit 0"}, False),
    ({"bsub": "exit 0"}, False),
])
def test_lsf_is_found_by_what_lsid_or_bsub_says(tmp_path, monkeypatch, caplog, scripts, found):
    monkeypatch.setenv("PATH", fake_commands(tmp_path / "bin", scripts))
    with caplog.at_level(logging.INFO, logger="poolparty"):
        assert Lsf.found_here() is found
    assert caplog.records or not found


def run_dummy(module, queue: DummyQueue, *arguments: str):
    """A dummy LSF command run in-process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = module.main(["--queue", str(queue.path), *arguments])
    return code, out.getvalue(), err.getvalue()


def test_the_dummy_lsf_speaks_as_lsf(tmp_path):
    from poolparty.dummy_schedulers import badmin, bjobs, bkill, bsub

    queue = DummyQueue(tmp_path / "queue", slots=1)
    try:
        code, said, _ = run_dummy(bsub, queue, "-J", "pp[1-3]%1", "-o", str(tmp_path / "%J.%I"),
                                  "-W", "2", "-M", "100MB", "sleep", "30")
        assert code == 0 and said == "Job <1000> is submitted to queue <normal>.\n"
        with transaction(queue.path) as state:
            job = state["jobs"]["1000"]
            assert (job["time_limit"], job["memory_limit"]) == (120.0, 100 * 2**20)
        code, said, _ = run_dummy(bjobs, queue, "-json", "-o", lsf.BJOBS_FIELDS, "-J", "pp")
        records = parse_bjobs_json(said, "pp")
        assert code == 0 and [job.index for job in records] == [1, 2, 3]
        code, said, err = run_dummy(bkill, queue, "1000[2]", "999")
        assert said == "Job <1000[2]> is being terminated\n"
        assert "Job <999>: No matching job found" in err and code != 0
        assert run_dummy(badmin, queue, "showconf", "mbd")[1].startswith("MBD configuration at")
        assert "    MAX_JOB_ARRAY_SIZE = 1000\n" in run_dummy(badmin, queue, "showconf", "mbd")[1]
        code, said, _ = run_dummy(bsub, queue, "-J", "pp[1001]", "-o", "x", "true")
        assert code != 0
    finally:
        queue.shutdown()
    code, said, err = run_dummy(bjobs, queue, "-json", "-o", lsf.BJOBS_FIELDS, "-J", "pp")
    assert (code, said, err) == (0, "", "No unfinished job found\n")


def over_memory(x):
    hog = bytearray(300 * 2**20)
    hog[::4096] = b"x" * len(hog[::4096])
    import time
    time.sleep(5)
    return x


def test_a_job_over_its_memory_limit_is_killed_with_lsfs_words(tmp_path, work_root):
    queue = DummyQueue(tmp_path / "queue")
    try:
        pool = poolparty.Pool(backend="lsf", commands=queue.commands("lsf"), memory="100MB",
                              work_dir=work_root, polling_interval=0.2, call_timeout=10,
                              memory_escalation=1, max_num_resubmissions=0)
        with pytest.raises(poolparty.ChunksLostError, match="its job ran out of memory") as caught:
            pool.map(over_memory, [1])
        assert "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit." in str(
            caught.value)
    finally:
        queue.shutdown()
