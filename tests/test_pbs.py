"""The PBS Professional / OpenPBS backend: its parsers on output from real PBS servers
(tests/data/pbs/, sources in its README), the qsub it plans, the resources it takes,
the states it reads, and how it is told from SGE and Torque. The shared suite runs it
on its dummy (``dummy-pbs``)."""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import pytest
from conftest import made_backend, wait_for
from test_escalation import attempts, client_log, needs_memory, needs_time

import poolparty
from poolparty import pbs
from poolparty.dummy_schedulers import DummyQueue
from poolparty.errors import InvalidInputError, SchedulerCommandError
from poolparty.escalation import Steps
from poolparty.pbs import Pbs
from poolparty.scheduler import QueuedJob, State
from poolparty.work_dir import WorkDir

DATA = Path(__file__).parent / "data" / "pbs"


def prepared_work_dir(tmp_path: Path) -> WorkDir:
    """A fresh map's work_dir: a plan needs its paths only."""
    work_dir = WorkDir.create(tmp_path / "work")
    work_dir.release()
    return work_dir


def scheduler(tmp_path: Path, **options) -> Pbs:
    return Pbs(commands=DummyQueue(tmp_path / "queue").commands("pbs"), **options)


def records(**jobs: dict) -> str:
    """qstat's JSON around these records, as the Reference Guide shows it (no ``-t``
    capture with subjobs was found in public material)."""
    return json.dumps({"timestamp": 1665476097, "pbs_version": "22.05.11",
                       "pbs_server": "pbs", "Jobs": jobs})


# ------------------------------------------------------------------ parsers
def test_a_finished_job_has_left_the_queue():
    assert pbs.parse_qstat_json((DATA / "qstat_f_F_json_finished.json").read_text()) == []


def test_a_queue_without_jobs_has_no_jobs_object():
    assert pbs.parse_qstat_json((DATA / "qstat_f_F_json_unreachable.json").read_text()) == []


def test_the_finished_jobs_record_is_read_as_a_state_once_it_runs():
    text = (DATA / "qstat_f_F_json_finished.json").read_text()
    (record,) = pbs.qstat_records(text).values()
    assert pbs.state_of({**record, "job_state": "R"}) is State.RUNNING
    assert record["Hold_Types"] == "n" and record["array"] == "True"


def test_subjobs_are_read_one_each_and_the_arrays_own_record_left_out():
    text = records(**{
        "1234[].pbs": {"job_state": "B", "array": "True", "Job_Name": "poolparty-m"},
        "1234[3].pbs": {"job_state": "R", "Job_Name": "poolparty-m"},
        "1234[4].pbs": {"job_state": "Q", "Job_Name": "poolparty-m"},
        "1234[5].pbs": {"job_state": "X", "Job_Name": "poolparty-m"},
        "1235.pbs": {"job_state": "H", "Hold_Types": "s", "Job_Name": "poolparty-m"},
    })
    assert pbs.parse_qstat_json(text) == [
        QueuedJob("1234[]", 3, State.RUNNING), QueuedJob("1234[]", 4, State.PENDING),
        QueuedJob("1235", None, State.ERROR)]


@pytest.mark.parametrize("entry, state", [
    ({"job_state": "Q"}, State.PENDING),
    ({"job_state": "W"}, State.PENDING),  # waiting for its start time: not an error
    ({"job_state": "T"}, State.PENDING),
    ({"job_state": "H", "Hold_Types": "u"}, State.PENDING),  # the user's own hold
    ({"job_state": "H", "Hold_Types": "s"}, State.ERROR),  # held by PBS: won't run alone
    ({"job_state": "H", "Hold_Types": "us"}, State.ERROR),
    ({"job_state": "R"}, State.RUNNING),
    ({"job_state": "E"}, State.RUNNING),
    ({"job_state": "S"}, State.RUNNING),  # suspended: goes on where it stopped
    ({"job_state": "U"}, State.RUNNING),
    ({"job_state": "F"}, None),
    ({"job_state": "X"}, None),
])
def test_pbs_job_states(entry, state):
    assert pbs.state_of(entry) is state


def test_an_unknown_state_is_logged_once_and_left_alone(caplog):
    with caplog.at_level(logging.WARNING, logger="poolparty"):
        assert pbs.state_of({"job_state": "Z"}) is State.RUNNING
        assert pbs.state_of({"job_state": "Z"}) is State.RUNNING
    assert len([r for r in caplog.records if "'Z'" in r.getMessage()]) == 1


def test_a_job_environment_with_unescaped_backslashes_is_still_read():
    text = records(**{"7.pbs": {"job_state": "R", "Variable_List": {"A": "C:\\path"}}})
    broken = text.replace("C:\\\\path", "C:\\path")
    assert pbs.parse_qstat_json(broken) == [QueuedJob("7", None, State.RUNNING)]


def test_torn_json_is_an_unreadable_answer(tmp_path, monkeypatch):
    backend = scheduler(tmp_path)
    monkeypatch.setattr(backend, "run", lambda name, arguments: '{"Jobs": {"1.pbs": ')
    with pytest.raises(SchedulerCommandError, match="unreadable output"):
        backend.query(prepared_work_dir(tmp_path))


@pytest.mark.parametrize("name, size", [
    ("qmgr_list_server_limits.txt", pbs.DEFAULT_MAX_ARRAY_SIZE),
    ("qmgr_list_server_max_array_size_0.txt", pbs.DEFAULT_MAX_ARRAY_SIZE),
])
def test_max_array_size_from_qmgr(name, size):
    assert pbs.parse_max_array_size((DATA / name).read_text()) == size


def test_max_array_size_when_set():
    assert pbs.parse_max_array_size("Server pbs\n    max_array_size = 250\n") == 250


@pytest.mark.parametrize("name", ["qstat_connection_refused.stderr", "qstat_no_route.stderr"])
def test_an_unreachable_server_is_retried(tmp_path, name):
    error = SchedulerCommandError(["qstat"], 255, "", (DATA / name).read_text())
    assert scheduler(tmp_path).is_transient(error)


def test_an_unknown_queue_is_not_retried(tmp_path):
    assert not scheduler(tmp_path).is_transient(
        SchedulerCommandError(["qsub"], 1, "", "qsub: Unknown queue\n"))


def test_qdel_forces_only_what_it_could_not_delete():
    stderr = ("qdel: Unknown Job Id 1234[3].pbs\n"
              "qdel: Server could not connect to MOM 1234[4].pbs\n"
              "qdel: Job has finished 1235.pbs\n"
              "qdel: Request invalid for state of job 1236\n")
    assert pbs.refused_job_ids(stderr) == ["1234[4]", "1236"]


# ------------------------------------------------------------------ found here
@pytest.mark.parametrize("said, found", [
    ("pbs_version = 22.05.11\n", True),
    ("pbs_version = PBSPro_11.1.0.111761\n", True),
    ("Version: 6.1.3\nCommit: 2dcd5d3\n", False),  # Torque
    ("error: ERROR! invalid option argument \"--version\"\n", False),  # SGE
    ("", False),
])
def test_pbs_is_told_apart_by_qstat_version(said, found):
    assert pbs.is_pbs_professional(said) is found


def fake_commands(directory: Path, scripts: dict[str, str]) -> str:
    directory.mkdir()
    for name, body in scripts.items():
        (directory / name).write_text(f"#!/bin/sh\n{body}\n")
        (directory / name).chmod(0o755)
    return str(directory)


@pytest.mark.parametrize("qstat, found", [
    ("echo 'pbs_version = 22.05.11'", True),
    ("echo 'Version: 6.1.3'", False),
    ("echo 'SGE 8.1.9'; echo usage", False),
])
def test_found_here_only_for_a_pbs_qstat(tmp_path, monkeypatch, qstat, found):
    monkeypatch.setenv("PATH", fake_commands(tmp_path / "bin", {"qsub": "exit 0",
                                                                 "qstat": qstat}))
    assert Pbs.found_here() is found


# ------------------------------------------------------------------ the plan
def test_a_run_of_workers_is_one_array_whose_indices_are_the_worker_ids(tmp_path):
    work_dir = prepared_work_dir(tmp_path)
    plan = scheduler(tmp_path).plan(work_dir, [0, 1, 2, 5, 6])
    assert [dict(s.chunks) for s in plan] == [{0: 0, 1: 1, 2: 2}, {5: 5, 6: 6}]
    first = plan[0].argv
    assert first[first.index("-J") + 1] == "0-2"
    assert first[first.index("-o") + 1] == f"{work_dir.logs_dir}/^array_index^.log"
    assert first[first.index("-N") + 1] == f"poolparty-{work_dir.map_id}"
    assert [first[first.index(flag) + 1] for flag in ("-j", "-k")] == ["oe", "od"]
    assert "-V" in first
    # PBS starts jobs in $HOME: the job changes to the client's directory first
    assert first[first.index("--") + 1:] == ("/bin/sh", "-c", pbs.IN_CLIENT_DIRECTORY, "sh",
                                             os.getcwd(), str(work_dir.script_path),
                                             "--array", "0", "PBS_ARRAY_INDEX")
    assert plan[1].record("1240[]") == {5: (5, "5.log"), 6: (6, "6.log")}


def test_a_single_worker_is_a_plain_job_told_its_id(tmp_path):
    """PBS refuses an array of one subjob."""
    work_dir = prepared_work_dir(tmp_path)
    (submission,) = scheduler(tmp_path).plan(work_dir, [7])
    assert "-J" not in submission.argv
    assert submission.argv[submission.argv.index("-o") + 1] == f"{work_dir.logs_dir}/7.log"
    assert submission.argv[-2:] == (str(work_dir.script_path), "7")
    assert submission.record("1241") == {7: (None, "7.log")}


def test_arrays_are_cut_to_max_array_size(tmp_path):
    backend = scheduler(tmp_path)
    backend.limits_read = {"max_array_size": 2}
    plan = backend.plan(prepared_work_dir(tmp_path), [0, 1, 2, 3, 4])
    assert [list(s.chunks) for s in plan] == [[0, 1], [2, 3], [4]]


def test_max_array_size_is_read_from_the_server_once(tmp_path):
    queue = DummyQueue(tmp_path / "queue", max_array_size=40)
    backend = Pbs(commands=queue.commands("pbs"))
    assert backend.max_array_size == 40 and backend.max_array_size == 40
    assert queue.history()["qmgr"] == 1


def test_resources_become_one_chunk_and_a_walltime(tmp_path):
    backend = scheduler(tmp_path, time="1:00:00", memory="4G", cpus_per_task=4, gpus=1,
                        queue="workq", account="proj1", resources={"place": "scatter"},
                        qsub_args=["-P", "physics"])
    assert backend.resource_args == [
        "-q", "workq", "-A", "proj1", "-l", "select=1:mem=4gb:ncpus=4:ngpus=1",
        "-l", "place=scatter", "-l", "walltime=1:00:00", "-P", "physics"]
    assert backend.time_limit_seconds == 3600 and backend.asked_memory == "4G"


def test_a_raised_job_asks_for_more_time_and_memory(tmp_path):
    backend = scheduler(tmp_path, time="600", memory="1gb")
    arguments = backend.resource_arguments(Steps(time=1, memory=1))
    assert "walltime=0:15:00" in arguments and "select=1:mem=1536mb" in arguments
    assert backend.worker_arguments(Steps(time=1)) == ["--steps", "1,0", "--time-limit", "900"]


@pytest.mark.parametrize("argument", [["-o", "mine.log"], ["-e", "err"], ["-j", "n"],
                                      ["-N", "mine"], ["-J", "1-4"], ["-k", "n"]])
def test_qsub_args_may_not_move_the_output_rename_or_split_the_job(tmp_path, argument):
    with pytest.raises(InvalidInputError, match="poolparty sets .* itself"):
        scheduler(tmp_path, qsub_args=argument)


def test_a_colon_in_the_work_dir_is_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="host"):
        scheduler(tmp_path).check_work_dir(tmp_path / "a:b")


# ------------------------------------------------------------------ resources per map
def test_resources_per_map_on_top_of_the_pools(tmp_path):
    backend = scheduler(tmp_path, memory="2gb")
    changed = backend.with_resources({"time": "0:30:00", "cpus": 8, "queue": "long",
                                      "host": "node7"})
    assert changed.resource_args == ["-q", "long", "-l", "select=1:mem=2gb:ncpus=8",
                                     "-l", "host=node7", "-l", "walltime=0:30:00"]
    assert changed.time_limit_seconds == 1800
    assert backend.resource_args == ["-l", "select=1:mem=2gb"]


@pytest.mark.parametrize("resources, words", [
    ({"time": "soon"}, "-l walltime='soon' is not something qsub takes"),
    ({"memory": "lots"}, "-l mem='lots'"),
    ({"cpus": 0}, "-l ncpus=0"),
    ({"gpus": True}, "-l ngpus=True"),
    ({"partition": "gpu"}, "PBS has queues, not partitions"),
    ({"queue": "a b"}, "PBS takes -l name=value"),
    ({"my res": 1}, "PBS takes -l name=value"),
])
def test_bad_resources_are_refused_in_pbs_words(tmp_path, resources, words):
    with pytest.raises(InvalidInputError, match=words.replace("(", r"\(")):
        scheduler(tmp_path).with_resources(resources)


def test_the_pools_own_resources_are_checked_when_it_is_made(tmp_path):
    with pytest.raises(InvalidInputError, match="walltime"):
        poolparty.Pool(backend="pbs", time="tomorrow", work_dir=tmp_path / "w",
                       commands=DummyQueue(tmp_path / "queue").commands("pbs"))


# ------------------------------------------------------------------ on the dummy
def test_the_dummy_lists_subjobs_and_the_backend_reads_them(tmp_path):
    """A subjob PBS gave up starting is held (an error), one running is running, one
    waiting for a slot pending; qdel takes them all away."""
    queue = DummyQueue(tmp_path / "queue", slots=1)
    queue.inject(error_state=1, stuck=1)
    backend = Pbs(commands=queue.commands("pbs"))
    work_dir = prepared_work_dir(tmp_path)
    expected = {3: State.ERROR, 4: State.RUNNING, 5: State.PENDING}
    try:
        backend.submit(work_dir, [3, 4, 5])
        wait_for(lambda: backend.query(work_dir) == expected, 20, "the subjobs' states")
        backend.cancel(work_dir, [3, 4, 5])
        assert backend.query(work_dir) == {}
        assert queue.history()["qstat"] >= 2 and queue.history()["qdel"] == 1
    finally:
        queue.shutdown()


# ------------------------------------------------------------------ raised limits
def test_a_claim_over_its_walltime_runs_again_with_more_time(work_root, tmp_path):
    """The dummy kills at the walltime with MoM's line, as PBS does; the claims run
    again in jobs given twice the time."""
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(needs_time, seconds=2.5, marks=str(marks))
    with made_backend("dummy-pbs", work_root, tmp_path) as backend:
        with backend.make_pool(keep_work_dir=True, time_escalation=2, time="2",
                               max_num_resubmissions=1) as pool:
            assert pool.map(task, [1, 2], chunksize=1) == [10, 20]
    assert [attempts(marks, x) for x in (1, 2)] == [2, 2]
    log = client_log(work_root)
    assert log.count("its job reached its time limit") == 2, log
    assert "reopened for a worker with 4 s of time" in log


def test_a_claim_out_of_memory_runs_again_with_more_memory(work_root, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(needs_memory, megabytes=300, marks=str(marks))
    with made_backend("dummy-pbs", work_root, tmp_path) as backend:
        with backend.make_pool(keep_work_dir=True, memory_escalation=2, memory="200mb",
                               max_num_resubmissions=1) as pool:
            assert pool.map(task, [3]) == [30]
    assert attempts(marks, 3) == 2
    assert "its job ran out of memory" in client_log(work_root)
