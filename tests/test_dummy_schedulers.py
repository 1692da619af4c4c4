"""The dummy SLURM and SGE schedulers: real jobs, real-looking output, injected faults.

Commands go through ``DummyQueue.commands()`` as subprocesses, the way the pool
calls them. Nothing sleeps and hopes: waits poll with a deadline.
"""

from __future__ import annotations

import getpass
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from poolparty.dummy_schedulers import DummyQueue
from poolparty.dummy_schedulers import squeue as squeue_module
from poolparty.sun_grid_engine import job_lists

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

DATA = Path(__file__).parent / "data"

# Records its environment and its start and end times, and waits for the file
# $GATE to appear, if set.
RECORDING_SCRIPT = """#!/bin/sh
task="$SLURM_ARRAY_TASK_ID$SGE_TASK_ID"
env > "$OUT/env.$task"
echo "start $(date +%s.%N)" > "$OUT/times.$task"
while [ -n "$GATE" ] && [ ! -e "$GATE" ]; do sleep 0.01; done
sleep 0.2
echo "end $(date +%s.%N)" >> "$OUT/times.$task"
echo "done $*"
"""
SLURM_TIMEOUT = "squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation\n"
SGE_TIMEOUT = ("error: failed receiving gdi request response for mid=1 "
               "(got syncron message receive timeout error).\n")


@pytest.fixture
def queue(tmp_path: Path):
    queue = DummyQueue(tmp_path / "queue", slots=4)
    yield queue
    queue.shutdown()


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("OUT", str(out))  # the submitter's environment reaches the tasks
    path = tmp_path / "job.sh"
    path.write_text(RECORDING_SCRIPT)
    return path


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Jobs of the recording script submitted from now on wait until the test ends."""
    path = tmp_path / "gate"
    monkeypatch.setenv("GATE", str(path))
    yield path
    path.touch()


def run(queue: DummyQueue, command: str, *args: object) -> subprocess.CompletedProcess[str]:
    argv = queue.commands()[command] + [str(arg) for arg in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def submit(queue: DummyQueue, command: str, *args: object) -> str:
    done = run(queue, command, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def states(queue: DummyQueue) -> dict[str, str]:
    return {job["id"]: job["state"] for job in queue.jobs()}


def running(queue: DummyQueue) -> int:
    return list(states(queue).values()).count("RUNNING")


def environment(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def live_processes() -> dict[int, int]:
    """Process group of every live process. Zombies count as dead: an init that
    does not reap (as in some containers) leaves orphans behind as zombies."""
    groups = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if fields[0] != "Z":
            groups[int(stat.parent.name)] = int(fields[2])
    return groups


def live_members_of_group(pgid: int) -> list[int]:
    return [pid for pid, group in live_processes().items() if group == pgid]


def max_overlap(times_files: list[Path]) -> int:
    """The largest number of tasks that were running at the same moment."""
    events = []
    for path in times_files:
        start, end = (float(line.split()[1]) for line in path.read_text().splitlines())
        events += [(start, 1), (end, -1)]
    now = peak = 0
    for _, change in sorted(events):
        now += change
        peak = max(peak, now)
    return peak


def test_slurm_array_runs_every_task_with_its_environment_within_its_throttle(
    queue, script, tmp_path
):
    (tmp_path / "log").mkdir()
    job_id = submit(queue, "sbatch", "--parsable", "--job-name=arr",
                    f"--output={tmp_path}/log/%A_%a.log", "--array=0-4%2", "--partition=debug",
                    "--time=1:00", "--mem=1G", "--cpus-per-task=1", "--export=ALL",
                    script, "x", "y")
    queue.wait_until_empty(timeout=10)

    out = tmp_path / "out"
    for index in range(5):
        env = environment(out / f"env.{index}")
        assert env["SLURM_ARRAY_JOB_ID"] == job_id
        assert env["SLURM_ARRAY_TASK_ID"] == str(index)
        assert env["SLURM_JOB_ID"] == str(int(job_id) + index)
        assert env["SLURM_JOB_NAME"] == "arr"
        assert (tmp_path / "log" / f"{job_id}_{index}.log").read_text() == "done x y\n"
    assert max_overlap(sorted(out.glob("times.*"))) == 2


def test_output_files_get_stdout_and_stderr_and_start_fresh(queue, tmp_path):
    script = tmp_path / "talk.sh"
    script.write_text("#!/bin/sh\necho out\necho err >&2\n")
    (tmp_path / "plain.log").write_text("old content\n")
    submit(queue, "sbatch", "--output=%x.log", "-J", "plain", f"--chdir={tmp_path}", script)
    script.unlink()  # sbatch keeps its own copy
    queue.wait_until_empty()
    assert (tmp_path / "plain.log").read_text() == "out\nerr\n"


def test_sge_array_runs_every_task_with_its_environment_within_its_throttle(
    queue, script, tmp_path
):
    array_id = submit(queue, "qsub", "-terse", "-N", "sg",
                      "-o", f"{tmp_path}/$JOB_NAME.$JOB_ID.$TASK_ID", "-j", "y",
                      "-t", "1-5:2", "-tc", "2", "-q", "all.q", "-l", "h_vmem=1G",
                      "-pe", "smp", "1", "-wd", tmp_path, "-V", "-S", "/bin/sh", "-b", "n",
                      script, "z")
    job_id, _, task_range = array_id.partition(".")
    assert task_range == "1-5:2"
    queue.wait_until_empty(timeout=10)

    out = tmp_path / "out"
    for index in (1, 3, 5):
        env = environment(out / f"env.{index}")
        assert (env["JOB_ID"], env["SGE_TASK_ID"], env["JOB_NAME"]) == (job_id, str(index), "sg")
        assert (tmp_path / f"sg.{job_id}.{index}").read_text() == "done z\n"
    assert not (out / "env.2").exists()
    assert max_overlap(sorted(out.glob("times.*"))) == 2


def test_sge_plain_job_has_an_undefined_task_id(queue, script, tmp_path):
    job_id = submit(queue, "qsub", "-terse", "-N", "one", "-o", f"{tmp_path}/one.log", "-j", "y",
                    "-wd", tmp_path, script)
    queue.wait_until_empty()
    assert environment(tmp_path / "out" / "env.undefined")["JOB_ID"] == job_id


def test_squeue_shows_running_and_pending_tasks_with_their_reasons(tmp_path, script, gate):
    queue = DummyQueue(tmp_path / "q2", slots=2)
    try:
        output = f"--output={tmp_path}/%j.log"
        plain = submit(queue, "sbatch", "--parsable", "--job-name=a", output, script)
        array = submit(queue, "sbatch", "--parsable", "--job-name=b", output, "--array=0-3%1",
                       script)
        wait_for(lambda: running(queue) == 2)
        last = submit(queue, "sbatch", "--parsable", "--job-name=c", output, script)

        listing = submit(queue, "squeue", "--noheader", "--array", "--me", "--name=a,b,c",
                         "--format=%i|%T|%r")
        assert listing.splitlines() == [  # pending first, as the real squeue sorts
            f"{array}_1|PENDING|JobArrayTaskLimit",
            f"{array}_2|PENDING|JobArrayTaskLimit",
            f"{array}_3|PENDING|JobArrayTaskLimit",
            f"{last}|PENDING|Resources",
            f"{plain}|RUNNING|None",
            f"{array}_0|RUNNING|None",
        ]
        assert submit(queue, "squeue", "-h", "-r", "--name=c", "-o", "%i %j %t") == f"{last} c PD"
        collapsed = submit(queue, "squeue", "--format=%i|%T").splitlines()
        assert collapsed[0] == "JOBID|STATE"
        assert f"{array}_[1-3%1]|PENDING" in collapsed
    finally:
        queue.shutdown()


@pytest.mark.skipif(not (DATA / "slurm_squeue_array.txt").exists(), reason="no captured squeue")
def test_squeue_output_matches_the_captured_real_one(tmp_path, script, gate):
    queue = DummyQueue(tmp_path / "q2", slots=8)
    try:
        array = submit(queue, "sbatch", "--parsable", f"--output={tmp_path}/%j.log",
                       "--array=0-19%4", script)
        wait_for(lambda: running(queue) == 4)
        for flags, captured in [(["--array"], "slurm_squeue_array.txt"),
                                ([], "slurm_squeue_array_unexpanded.txt")]:
            ours = submit(queue, "squeue", "--noheader", *flags, "--me", "--format=%i|%T|%r")
            real = (DATA / captured).read_text().replace("607_", f"{array}_")
            assert sorted(ours.splitlines()) == sorted(real.splitlines())
    finally:
        queue.shutdown()


def test_qstat_xml_parses_like_real_sge(tmp_path, script, gate):
    queue = DummyQueue(tmp_path / "q2", slots=2)
    try:
        queue.inject(error_state=1)
        broken = submit(queue, "qsub", "-terse", "-N", "bad", "-o", f"{tmp_path}/bad.log",
                        "-j", "y", script)
        array = submit(queue, "qsub", "-terse", "-N", "arr", "-o", f"{tmp_path}/arr.log",
                       "-j", "y", "-t", "1-6", "-tc", "2", script).split(".")[0]
        wait_for(lambda: running(queue) == 2)

        jobs = job_lists(submit(queue, "qstat", "-xml"))
        running_jobs = [job for job in jobs if job["state"] == "r"]
        pending = [job for job in jobs if job["state"] != "r"]
        assert [(job["JB_job_number"], job["state"], job["tasks"]) for job in running_jobs] == [
            (array, "r", "1"), (array, "r", "2")]
        assert running_jobs[0]["JB_name"] == "arr" and running_jobs[0]["slots"] == "1"
        assert running_jobs[0]["queue_name"].startswith("all.q@")
        assert [(job["JB_job_number"], job["state"], job.get("tasks")) for job in pending] == [
            (broken, "Eqw", None), (array, "qw", "3-6:1")]
        assert pending[0]["queue_name"] == "" and "JB_submission_time" in pending[0]
    finally:
        queue.shutdown()

    assert job_lists(submit(queue, "qstat", "-xml")) == []


@pytest.mark.skipif(not (DATA / "sge_qstat_xml.txt").exists(), reason="no captured qstat -xml")
def test_qstat_xml_matches_the_captured_real_one(tmp_path, script, gate):
    queue = DummyQueue(tmp_path / "q2", slots=4)
    try:
        submit(queue, "qsub", "-terse", "-N", "pp-capture", "-o", f"{tmp_path}/x.log", "-j", "y",
               "-t", "5-20", script)
        wait_for(lambda: running(queue) == 4)
        ours = submit(queue, "qstat", "-xml") + "\n"
    finally:
        queue.shutdown()

    def normalized(xml: str) -> str:
        """Without what differs between two runs: ids, times, owner, host."""
        for pattern, replacement in [(r"<JB_job_number>\d+<", "<JB_job_number>N<"),
                                     (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", "TIME"),
                                     (r"<JB_owner>[^<]*<", "<JB_owner>OWNER<"),
                                     (r"all\.q@[^<]*<", "all.q@HOST<")]:
            xml = re.sub(pattern, replacement, xml)
        return xml

    assert normalized(ours) == normalized((DATA / "sge_qstat_xml.txt").read_text())


def test_scancel_kills_a_running_job_and_its_children(queue, tmp_path):
    script = tmp_path / "long.sh"
    script.write_text(f"#!/bin/sh\nsleep 30 &\nwait\ntouch {tmp_path}/finished\n")
    job_id = submit(queue, "sbatch", "--parsable", f"--output={tmp_path}/long.log",
                    "--array=0-1", script)
    wait_for(lambda: running(queue) == 2)
    pids = [job["pid"] for job in queue.jobs()]

    assert submit(queue, "scancel", f"{job_id}_0") == ""
    assert list(states(queue)) == [f"{job_id}_1"]
    assert submit(queue, "scancel", "--name=long.sh", job_id) == ""
    assert queue.jobs() == []
    queue.wait_until_empty()
    for pid in pids:
        assert live_members_of_group(pid) == []  # the shell and its sleep are gone
    assert not (tmp_path / "finished").exists()

    assert run(queue, "scancel", job_id).returncode == 0  # finished: fine
    unknown = run(queue, "scancel", "99999")
    assert (unknown.returncode, unknown.stderr) == (
        1, "scancel: error: Kill job error on job id 99999: Invalid job id specified\n")


def test_qdel_deletes_running_and_pending_tasks(queue, tmp_path):
    script = tmp_path / "long.sh"
    script.write_text("#!/bin/sh\nsleep 30\n")
    array = submit(queue, "qsub", "-terse", "-o", f"{tmp_path}/q.log", "-j", "y",
                   "-t", "1-3", "-tc", "1", script).split(".")[0]
    wait_for(lambda: running(queue) == 1)

    user = getpass.getuser()
    assert submit(queue, "qdel", f"{array}.1-2").splitlines() == [
        f"{user} has registered the job-array task {array}.1 for deletion",
        f"{user} has deleted job-array task {array}.2",
    ]
    assert f"job-array task {array}.3" in submit(queue, "qdel", "-t", "3", array)
    queue.wait_until_empty()
    missing = run(queue, "qdel", array)
    assert (missing.returncode, missing.stderr) == (1, f'denied: job "{array}" does not exist\n')


def test_submissions_the_real_schedulers_refuse_are_refused(tmp_path):
    queue = DummyQueue(tmp_path / "queue", max_array_size=10)
    script = tmp_path / "ok.sh"
    script.write_text("#!/bin/sh\n")
    refusals = [
        (("sbatch", "--partition=gpu", script),
         ("sbatch: error: invalid partition specified: gpu\n"
          "sbatch: error: Batch job submission failed: Invalid partition name specified\n")),
        (("sbatch", "--array=0-10", script),
         "sbatch: error: Batch job submission failed: Invalid job array specification\n"),
        (("qsub", "-o", "x", "-j", "y", "-q", "long.q", script),
         ('Unable to run job: Job was rejected because job requests unknown queue "long.q".\n'
          "Exiting.\n")),
    ]
    for args, stderr in refusals:
        done = run(queue, *args)
        assert (done.returncode, done.stderr, done.stdout) == (1, stderr, "")
    for args in [("sbatch", "--bogus", script), ("squeue", "--bogus"), ("qsub", "-bogus", script),
                 ("qdel", "-x", "1"), ("qsub", "-o", "x", "-j", "y", "-t", "0-3", script)]:
        done = run(queue, *args)
        assert done.returncode == 1 and done.stderr, args
    assert queue.jobs() == []
    assert "\nMaxArraySize            = 10\n" in submit(queue, "scontrol", "show", "config")


def test_failing_commands_exit_1_with_a_timeout_message(queue):
    queue.inject(fail={"squeue": 2, "qstat": 1})
    for _ in range(2):
        done = run(queue, "squeue", "-h")
        assert (done.returncode, done.stdout, done.stderr) == (1, "", SLURM_TIMEOUT)
    assert run(queue, "squeue", "-h").returncode == 0
    done = run(queue, "qstat", "-xml")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", SGE_TIMEOUT)
    assert run(queue, "qstat", "-xml").returncode == 0
    assert queue.history() == {"squeue": 3, "qstat": 2}


def test_empty_answers_print_nothing_even_with_jobs_queued(queue, tmp_path, script, gate):
    submit(queue, "sbatch", f"--output={tmp_path}/x.log", script)
    queue.inject(empty={"squeue": 1})
    assert run(queue, "squeue", "-h").stdout == ""
    assert run(queue, "squeue", "-h").stdout != ""


def test_hanging_commands_answer_late(queue, capsys):
    queue.inject(hang={"squeue": (0.5, 1)})
    for expected_seconds in (0.5, 0.0):  # in-process, to time the hang alone
        started = time.monotonic()
        assert squeue_module.main(["--queue", str(queue.path), "-h"]) == 0
        assert expected_seconds <= time.monotonic() - started < expected_seconds + 0.3
    assert queue.history() == {"squeue": 2}


def test_tasks_in_error_state_stay_until_cancelled(queue, tmp_path, script):
    queue.inject(error_state=1)
    job_id = submit(queue, "sbatch", "--parsable", f"--output={tmp_path}/e.log", script)
    wait_for(lambda: states(queue) == {job_id: "ERROR"})
    listing = submit(queue, "squeue", "-h", "--format=%i|%T|%r")
    assert listing == f"{job_id}|PENDING|launch failed requeued held"
    with pytest.raises(TimeoutError):
        queue.wait_until_empty(timeout=0.2)
    wait_for(lambda: queue.runner_pid() is None)  # nothing to run: no process waits with it
    submit(queue, "scancel", job_id)
    queue.wait_until_empty()
    assert not (tmp_path / "e.log").exists()


def test_sge_jobs_that_cannot_start_go_to_eqw(queue, tmp_path, script):
    job_id = submit(queue, "qsub", "-terse", "-o", f"{tmp_path}/x.log", "-j", "y",
                    "-wd", tmp_path / "missing", script)
    wait_for(lambda: states(queue) == {job_id: "ERROR"})
    assert "<state>Eqw</state>" in submit(queue, "qstat", "-xml")


def test_vanishing_tasks_leave_no_output(queue, tmp_path, script):
    queue.inject(vanish=2)
    submit(queue, "sbatch", f"--output={tmp_path}/%a.log", "--array=0-2", script)
    queue.wait_until_empty()
    assert [path.name for path in tmp_path.glob("*.log")] == ["2.log"]
    assert [path.name for path in (tmp_path / "out").glob("env.*")] == ["env.2"]


def test_killed_tasks_vanish_without_writing_more(queue, tmp_path):
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\necho started\nsleep 30\ntouch {tmp_path}/finished\n")
    queue.inject(kill_after=(0.2, 1))
    submit(queue, "sbatch", f"--output={tmp_path}/a.log", script)
    submit(queue, "sbatch", f"--output={tmp_path}/b.log", script)
    wait_for(lambda: len(queue.jobs()) == 1)  # the first dies after 0.2 s
    wait_for(lambda: running(queue) == 1)
    assert len(queue.kill_running(5)) == 1
    queue.wait_until_empty()
    assert (tmp_path / "a.log").read_text() == "started\n"
    assert not (tmp_path / "finished").exists()


def test_the_runner_stops_when_the_queue_drains_and_comes_back(queue, tmp_path, script):
    submit(queue, "sbatch", f"--output={tmp_path}/1.log", script)
    first_runner = queue.runner_pid()
    queue.wait_until_empty()
    assert queue.runner_pid() is None
    assert first_runner is not None and first_runner not in live_processes()
    submit(queue, "sbatch", f"--output={tmp_path}/2.log", script)
    queue.wait_until_empty()
    assert (tmp_path / "2.log").exists()
    assert queue.history() == {"sbatch": 2}


def test_queues_are_independent(tmp_path, script, gate):
    first, second = DummyQueue(tmp_path / "a"), DummyQueue(tmp_path / "b")
    submit(first, "sbatch", f"--output={tmp_path}/x.log", script)
    try:
        assert len(first.jobs()) == 1 and second.jobs() == []
        assert submit(second, "squeue", "-h") == ""
    finally:
        first.shutdown()
