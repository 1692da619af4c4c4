"""Faults caused for real on the one-node test clusters (scripts/test_cluster.sh).

tests/test_faults.py injects faults through the dummy schedulers; here the real SLURM
and Sun Grid Engine are made to misbehave: an array element requeued, over its time
limit, a worker killed by a signal, the daemons killed and restarted, a job in
SGE's error state, a result file torn by a worker killed while writing it. Each test
ends with every correct result or a clear error, within explicit deadlines (and
pytest-timeout above them). Each job is a worker that pulls claims of tasks
(poolparty.claims): a fault is aimed at the job whose claim holds a task, and what ran
where is read from the claims the kept work_dir holds. tests/test_real_pull.py has the
faults the pull model is for (a held or cancelled worker, uneven tasks).

The tests skip with a message where no scheduler runs (they fail instead where
POOLPARTY_REQUIRE_SCHEDULERS names it, as in CI). Restarting a daemon disrupts
anything else using the cluster: those tests are marked ``disruptive`` and run only
when POOLPARTY_DISRUPTIVE_TESTS=1 (.ci/run sets it) on daemons scripts/test_cluster.sh
started (tests/cluster_gate.py); they take the daemons' pid files from the script's
markers, never from a configuration another cluster may share. Every test that stops a
daemon restarts it in a ``finally`` and waits until the cluster is healthy again before
it ends, and holds a lock file (``outage_lock``) so that two runs of this file never
stop daemons at once.
These tests expect to be the only ones stopping daemons: other runs restarting them
meanwhile stretch the timings (seen: a 60-95 s TIMEOUT taking 165 s).

A task records each of its attempts as a file in ``ran/`` (``<task>.<uuid>``): the
first attempt is the one that misbehaves, so a claim run again succeeds.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path
from typing import Callable

import cluster_gate
import conftest
import pytest
from conftest import (
    attempts_per_claim,
    claim_files,
    make_backend,
    qstat_jobs,
    release_test_allocation,
    squeue_jobs,
)

import poolparty

real_slurm = pytest.mark.real_slurm
real_sge = pytest.mark.real_sge

MAP_DEADLINE = 120  # seconds a small map may take, faults included (TIMEOUT excepted)


# ---------------------------------------------------------------------- task functions
def attempts(ran: str | Path, task: int) -> int:
    return sum(1 for name in os.listdir(ran) if name.split(".")[0] == str(task))


def record_attempt(ran: str, task: int) -> bool:
    """Note one attempt of ``task``; True when it is the first one."""
    first = attempts(ran, task) == 0
    Path(ran, f"{task}.{uuid.uuid4().hex}").touch()
    return first


def faulty(x: int, ran: str, victim: int = -1, fault: str = "", seconds: float = 1.0,
           always: bool = False, seconds_again: float | None = None):
    """Sleep ``seconds`` (``seconds_again`` on later attempts, if given) and return
    ``x * 10``; task ``victim`` misbehaves on its first attempt (or on every attempt if
    ``always``)."""
    first = record_attempt(ran, x)
    if not first and seconds_again is not None:
        seconds = seconds_again
    if x == victim and (first or always):
        print(f"task {x}: about to {fault}", file=sys.stderr, flush=True)
        if fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "exit100":  # SGE: a job exiting with 100 goes into error state
            os._exit(100)
        elif fault == "overrun":
            time.sleep(600)
        elif fault == "torn-result":
            os.fdopen = _dying_fdopen  # the next file the worker opens is its result
    time.sleep(seconds)
    return x * 10


_real_fdopen = os.fdopen


class _DyingFile:
    """Writes half of what it is given, then the process is killed (SIGKILL)."""

    def __init__(self, file) -> None:
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.file.close()

    def write(self, data: bytes) -> None:
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        os.fsync(self.file.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


def _dying_fdopen(descriptor, *args, **kwargs):
    return _DyingFile(_real_fdopen(descriptor, *args, **kwargs))


# ---------------------------------------------------------------------- helpers
def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = 0.2) -> object:
    """conftest's, looking less often: conditions here ask the real schedulers."""
    return conftest.wait_for(condition, timeout, what, interval)


def the_map_dir(work_root: Path, timeout: float = 30) -> Path:
    return conftest.the_map_dir(work_root, timeout, holding="jobs.jsonl")


def submissions(map_dir: Path) -> list[dict]:
    """jobs.jsonl: one record per sbatch/qsub, ``{"job_id", "chunks": {worker: [index,
    log]}}`` (keyed by worker id: each job is a worker)."""
    return [json.loads(line) for line in (map_dir / "jobs.jsonl").read_text().splitlines()]


def claim_attempts(map_dir: Path) -> dict[int, list[dict]]:
    """Each claim's attempts, oldest first, as their workers recorded them
    (poolparty.claims): ``claims/<c>`` is attempt 0, ``retries/<c>.<a>`` attempt a."""
    found: dict[int, dict[int, dict]] = {}
    for name, blob in claim_files(map_dir).items():
        directory, _, entry = name.partition("/")
        number, dot, attempt = entry.partition(".")
        if directory == "claims" and entry.isdigit():
            found.setdefault(int(entry), {})[0] = json.loads(blob)
        elif directory == "retries" and dot and number.isdigit() and attempt.isdigit():
            found.setdefault(int(number), {})[int(attempt)] = json.loads(blob)
    return {number: [by_attempt[a] for a in sorted(by_attempt)]
            for number, by_attempt in sorted(found.items())}


def claim_of_task(map_dir: Path, task: int) -> int:
    """The number of the claim whose range holds ``task``."""
    for number, runs in claim_attempts(map_dir).items():
        if runs[0]["start"] <= task < runs[0]["stop"]:
            return number
    raise AssertionError(f"no claim holds task {task}")


def reopened_claims(map_dir: Path) -> Counter:
    """How often the client reopened each claim for the other workers (``requeue/``)."""
    names = [name.partition("/")[2].partition(".") for name in claim_files(map_dir)
             if name.startswith("requeue/")]
    return Counter(int(number) for number, dot, attempt in names
                   if dot and number.isdigit() and attempt.isdigit())


def job_of_claim(record: dict) -> str:
    """The scheduler's name of the job whose worker made a claim record: ``JOB_INDEX``
    (a SLURM array element), ``JOB`` (a SLURM job) or ``JOB.TASK`` (SGE)."""
    job = record["job"]
    if "SLURM_ARRAY_JOB_ID" in job:
        return f"{job['SLURM_ARRAY_JOB_ID']}_{job['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in job:
        return job["SLURM_JOB_ID"]
    return f"{job['JOB_ID']}.{job['SGE_TASK_ID']}"


def claim_holder(map_dir: Path, task: int) -> str | None:
    """The job running ``task``'s claim (its newest attempt), once its claim is readable."""
    try:
        runs = claim_attempts(map_dir)
        number = claim_of_task(map_dir, task)
    except (AssertionError, OSError, ValueError):  # not claimed, or being written
        return None
    return job_of_claim(runs[number][-1])


def journal(map_dir: Path) -> list[dict]:
    """The map's events (poolparty.events): the journal archived in logs.zip once the map
    ended, and the worker events folded into it."""
    with zipfile.ZipFile(map_dir / "logs.zip") as archive:
        blobs = [archive.read(info) for info in archive.infolist()
                 if info.filename == "events.jsonl"]
    return [json.loads(line) for blob in blobs for line in blob.splitlines() if line.strip()]


def reopen_reasons(map_dir: Path) -> dict[int, list[str]]:
    """Why the client reopened each claim, from its ``resubmit`` events."""
    reasons: dict[int, list[str]] = {}
    for event in journal(map_dir):
        if event["event"] == "resubmit":
            reasons.setdefault(event["chunk"], []).append(event["reason"])
    return reasons


def client_log(map_dir: Path) -> str:
    return (map_dir / "client.log.jsonl").read_text()


def counting_shims(tmp_path: Path, names: list[str]) -> tuple[dict, Path]:
    """``commands=`` whose tools append their name to a file, then run the real tool."""
    calls = tmp_path / "calls.txt"
    calls.touch()
    commands = {}
    for name in names:
        shim = tmp_path / f"counting-{name}"
        shim.write_text(f'#!/bin/sh\necho {name} >> "{calls}"\nexec {name} "$@"\n')
        shim.chmod(0o755)
        commands[name] = [str(shim)]
    return commands, calls


def call_count(calls: Path, name: str) -> int:
    return calls.read_text().split().count(name)


def run(argv: list[str], timeout: float = 30, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout


#: how each daemon a test may restart is started (as scripts/test_cluster.sh does)
DAEMON_START = {
    "slurmctld": ["slurmctld"],
    "slurmd": ["slurmd", "-N", "localhost"],
    "sge_execd": ["/etc/init.d/gridengine-exec", "start"],
}


def daemon_pidfile(name: str) -> Path:
    """The pid file of the test cluster's daemon ``name``, as scripts/test_cluster.sh
    recorded it (the gate let the test run, so the record exists)."""
    started = cluster_gate.read_marker(name)
    if started is None:
        pytest.fail(f"no record of {name} by scripts/test_cluster.sh: not touching it")
    return started.pidfile


def start_daemon(name: str) -> None:
    """Start the test cluster's daemon ``name`` again, detached from this test, and
    record the new process as the test cluster's (tests/cluster_gate.py)."""
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}  # the script's config
    subprocess.run(DAEMON_START[name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, start_new_session=True, timeout=60, check=False,
                   env=env)
    wait_for(lambda: pid_alive(daemon_pidfile(name), name), 30, f"{name} to start")
    cluster_gate.record_started(name)


def pid_alive(pidfile: Path, name: str) -> int | None:
    """The pid in ``pidfile`` if that process runs and is ``name``."""
    try:
        pid = int(pidfile.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == name[:15] else None


def stop_daemon(pidfile: Path, name: str, timeout: float = 30) -> None:
    """SIGTERM (what ``pkill -x NAME`` sends) to the daemon of this pid file only."""
    pid = pid_alive(pidfile, name)
    if pid is None:
        pytest.fail(f"{name} is not running (pid file {pidfile})")
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout, f"{name} (pid {pid}) to exit")


# ---------------------------------------------------------------------- SLURM daemons
def slurmctld_pidfile() -> Path:
    return daemon_pidfile("slurmctld")


def slurmd_pidfile() -> Path:
    return daemon_pidfile("slurmd")


SLURM_HEALTHY = {"idle", "mixed", "allocated", "completing"}


def slurm_node_state() -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)
    return done.stdout.strip() if done.returncode == 0 else f"(sinfo failed: {done.stderr.strip()})"


def restore_slurm(timeout: float = 90) -> None:
    """Start whichever daemon is down (as scripts/test_cluster.sh does) and wait until
    the node takes jobs: ``sinfo`` says idle, mixed or allocated."""
    if pid_alive(slurmctld_pidfile(), "slurmctld") is None:
        start_daemon("slurmctld")
    if pid_alive(slurmd_pidfile(), "slurmd") is None:
        start_daemon("slurmd")
    resumed = False

    def healthy() -> bool:
        nonlocal resumed
        state = slurm_node_state()
        if state.rstrip("*") in ("down", "drained", "draining") and not resumed:
            subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"],
                           capture_output=True, timeout=20)
            resumed = True
        return state in SLURM_HEALTHY and pid_alive(slurmd_pidfile(), "slurmd") is not None

    wait_for(healthy, timeout, f"SLURM to be healthy again (sinfo: {slurm_node_state()!r})", 0.5)


# ---------------------------------------------------------------------- SGE daemons
def execd_pidfile() -> Path:
    return daemon_pidfile("sge_execd")


def sge_execd_up() -> bool:
    """execd runs and reports a load to the qmaster (as scripts/test_cluster.sh checks)."""
    if pid_alive(execd_pidfile(), "sge_execd") is None:
        return False
    host = socket.gethostname()
    done = subprocess.run(["qhost", "-h", host], capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[0] == host:
            return fields[6] != "-"
    return False


def restore_sge_execd(timeout: float = 90) -> None:
    if pid_alive(execd_pidfile(), "sge_execd") is None:
        execd_pidfile().unlink(missing_ok=True)
        start_daemon("sge_execd")
    wait_for(sge_execd_up, timeout, "sge_execd to report a load to the qmaster (qhost)", 0.5)


# ---------------------------------------------------------------------- fixtures
@pytest.fixture
def outage_lock():
    """Held by every test that stops a daemon, across processes: two runs of this file
    at once would otherwise cut each other's outages short or stack them."""
    path = Path(tempfile.gettempdir()) / "poolparty-test-daemon-outage.lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        def locked() -> bool:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
        wait_for(locked, 150, f"another test run's daemon outage to end ({path})", 0.5)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@pytest.fixture
def ran(tmp_path: Path) -> Path:
    path = tmp_path / "ran"
    path.mkdir()
    return path


@pytest.fixture
def slurm(work_root, tmp_path):
    return make_backend("real-slurm-array", work_root, tmp_path)


@pytest.fixture
def sge(work_root, tmp_path):
    return make_backend("real-sge", work_root, tmp_path)


def this_maps_jobs(queue_lines: Callable[[set], list[str]], map_dir: Path) -> list[str]:
    return queue_lines({f"poolparty-{map_dir.name}"})


def running_slurm_elements(map_dir: Path) -> list[str]:
    return [line.split("|")[0] for line in this_maps_jobs(squeue_jobs, map_dir)
            if line.endswith("|RUNNING")]


# ====================================================================== SLURM
@real_slurm
@pytest.mark.timeout(300)
def test_slurm_requeued_worker_loses_its_claim_at_once_and_job_over_its_time_limit_is_replaced(
        slurm, work_root, ran, tmp_path):
    """The two slow SLURM faults share one map, so that their waits overlap.

    ``scontrol requeue`` kills a running element and puts it back PENDING; SLURM lets
    it start again only once its credential expired (EligibleTime = requeue + ~121 s,
    ``AuthInfo=cred_expire``). The claim it held goes back to the other workers at once:
    another job runs it, long before the requeued element could, and the element, still
    pending when the map ends, is cancelled.

    A job over its ``--time`` ends as TIMEOUT: its claim is reopened and run by another
    worker. SLURM's smallest limit is one minute and slurmctld checks limits every 30 s:
    the TIMEOUT comes 60-95 s after the start.
    """
    pool = slurm.make_pool(keep_work_dir=True, time="1")
    overrun, requeued = 0, 1
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=overrun, fault="overrun", seconds=3),
            range(4), chunksize=1)
        map_dir = the_map_dir(work_root)
        element = wait_for(lambda: attempts(ran, requeued) == 1
                           and claim_holder(map_dir, requeued) in running_slurm_elements(map_dir)
                           and claim_holder(map_dir, requeued), 60,
                           f"the job running task {requeued}")
        run(["scontrol", "requeue", element])
        assert result.get(timeout=240) == [0, 10, 20, 30]
    assert attempts(ran, requeued) == 2  # killed by the requeue, then ran again
    assert attempts(ran, overrun) == 2  # timed out, then ran again
    runs = claim_attempts(map_dir)
    for task in (overrun, requeued):
        number = claim_of_task(map_dir, task)
        assert len(runs[number]) == 2 and reopened_claims(map_dir)[number] == 1
        assert job_of_claim(runs[number][1]) != job_of_claim(runs[number][0])
    assert "requeued" in " ".join(reopen_reasons(map_dir)[claim_of_task(map_dir, requeued)])
    # told by slurmstepd's line in the job's log (poolparty.endings)
    assert "time limit" in " ".join(reopen_reasons(map_dir)[claim_of_task(map_dir, overrun)])
    log_text = client_log(map_dir)
    assert "its job reached its time limit" in log_text
    # run again in a job given 1.5 times the time (poolparty.escalation)
    assert "reopened for a worker with 90 s of time" in log_text
    wait_for(lambda: not this_maps_jobs(squeue_jobs, map_dir), 10,
             f"the requeued element {element} to be cancelled")


@real_slurm
@pytest.mark.timeout(150)
def test_slurm_worker_preempted_by_a_higher_partition_does_not_use_up_the_resubmissions(
        slurm, work_root, ran):
    """The pool's one worker holds all 8 CPUs of the partition "debug"; a job of
    "urgent" (a higher PriorityTier, PreemptMode=REQUEUE) preempts it: slurmstepd says
    ``DUE TO PREEMPTION``, its claim is reopened without counting against
    max_num_resubmissions=0, and another worker runs it."""
    release_test_allocation()  # all 8 CPUs for the pool's worker
    pool = slurm.make_pool(keep_work_dir=True, processes=1, cpus_per_task=8,
                           max_num_resubmissions=0)
    victim = 0
    with pool:
        result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=4), [victim])
        map_dir = the_map_dir(work_root)
        wait_for(lambda: attempts(ran, victim) == 1
                 and claim_holder(map_dir, victim) in running_slurm_elements(map_dir),
                 60, "the worker running the task")
        run(["sbatch", "--partition=urgent", "--output=/dev/null", "--job-name=pp-urgent",
             "--wrap=sleep 1"])
        assert result.get(timeout=MAP_DEADLINE) == [0]
    assert attempts(ran, victim) == 2
    assert "preempted" in " ".join(reopen_reasons(map_dir)[claim_of_task(map_dir, victim)])
    wait_for(lambda: not this_maps_jobs(squeue_jobs, map_dir), 15,
             "the requeued worker to be cancelled")


@real_slurm
@pytest.mark.timeout(150)
def test_slurm_suspended_worker_keeps_its_claim_and_finishes_it(slurm, work_root, ran):
    """``scontrol suspend`` (preemption by suspension) stops a worker mid-task; resumed,
    it goes on where it stopped. Shown SUSPENDED meanwhile, it is not taken for a
    requeued job: its claim is not reopened and nothing runs twice."""
    pool = slurm.make_pool(keep_work_dir=True, polling_interval=0.5)
    victim = 1
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), seconds=4), range(4), chunksize=1)
        map_dir = the_map_dir(work_root)
        element = wait_for(lambda: attempts(ran, victim) == 1
                           and claim_holder(map_dir, victim) in running_slurm_elements(map_dir)
                           and claim_holder(map_dir, victim), 60,
                           f"the job running task {victim}")
        run(["scontrol", "suspend", element])
        try:
            wait_for(lambda: "SUSPENDED" in run(["squeue", "-h", "-o", "%T", "-j", element]),
                     10, f"{element} suspended")
            time.sleep(3)  # several polls see it suspended
        finally:
            run(["scontrol", "resume", element])
        assert result.get(timeout=MAP_DEADLINE) == [0, 10, 20, 30]
    assert [attempts(ran, task) for task in range(4)] == [1, 1, 1, 1]
    assert reopened_claims(map_dir) == Counter()


@real_slurm
@pytest.mark.timeout(150)
def test_slurm_worker_killed_by_a_signal_once_is_resubmitted(slurm, work_root, ran):
    pool = slurm.make_pool(keep_work_dir=True)
    victim = 3
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=victim, fault="sigkill"), range(6),
            chunksize=1)
        assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in range(6)]
        map_dir = the_map_dir(work_root)
    assert attempts(ran, victim) == 2
    assert attempts_per_claim(map_dir)[claim_of_task(map_dir, victim)] == 2
    assert reopened_claims(map_dir) == Counter({claim_of_task(map_dir, victim): 1})


@real_slurm
@pytest.mark.timeout(150)
def test_slurm_worker_killed_by_a_signal_every_time_ends_in_task_crashed(slurm, work_root, ran):
    """The job's log says which task the worker ran and how it died: not a lost job, a
    crash, reported after one rerun (tests/test_real_crash.py has more)."""
    pool = slurm.make_pool(max_num_resubmissions=3)
    victim = 2
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=victim, fault="sigkill", always=True),
            range(4), chunksize=1)
        with pytest.raises(poolparty.TaskCrashedError) as caught:
            result.get(timeout=MAP_DEADLINE)
    error = caught.value
    assert error.task_index == victim and error.signal == signal.SIGKILL
    message = str(error)
    assert f"task {victim} ended its worker's process: it was killed by signal 9" in message
    assert f"task {victim}: about to sigkill" in message  # the job's log tail
    assert "poolparty worker: map" in message
    assert error.work_dir in message and Path(error.work_dir).is_dir()
    assert attempts(ran, victim) == 2  # one rerun, though max_num_resubmissions allows 3


@pytest.mark.disruptive("slurm")
@real_slurm
@pytest.mark.timeout(300)  # with up to 150 s waiting for outage_lock
def test_slurm_map_survives_slurmd_killed_and_restarted(
        outage_lock, slurm, work_root, ran, tmp_path):
    """While slurmd is away, running tasks go on; the jobs that end stay COMPLETING
    (their CPUs are not released) and nothing new starts. The pool waits, nothing is
    resubmitted, and the map completes once slurmd is back."""
    commands, calls = counting_shims(tmp_path, ["sbatch"])
    pool = slurm.make_pool(keep_work_dir=True, commands=commands)
    tasks = range(12)  # more than the node's 8 CPUs: some wait for slurmd to come back
    try:
        with pool:
            result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=2), tasks,
                                    chunksize=1)
            map_dir = the_map_dir(work_root)
            wait_for(lambda: len(os.listdir(ran)) >= 1, 60, "a task to start")
            stop_daemon(slurmd_pidfile(), "slurmd")
            time.sleep(5)  # the outage: the running tasks end meanwhile
            start_daemon("slurmd")
            assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
    finally:
        restore_slurm()
    assert slurm_node_state() in SLURM_HEALTHY
    assert call_count(calls, "sbatch") == 1, client_log(map_dir)
    assert all(attempts(ran, x) == 1 for x in tasks)


@pytest.mark.disruptive("slurm")
@real_slurm
@pytest.mark.timeout(300)  # with up to 150 s waiting for outage_lock
def test_slurm_map_survives_slurmctld_killed_and_restarted(
        outage_lock, slurm, work_root, ran, tmp_path):
    """squeue fails while slurmctld is away: those polls are skipped, never taken as
    every job gone, so nothing is resubmitted."""
    commands, calls = counting_shims(tmp_path, ["sbatch"])
    pool = slurm.make_pool(keep_work_dir=True, commands=commands, call_timeout=3)
    tasks = range(8)
    try:
        with pool:
            result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=2.5), tasks,
                                    chunksize=1)
            map_dir = the_map_dir(work_root)
            wait_for(lambda: len(os.listdir(ran)) >= 1, 60, "a task to start")
            stop_daemon(slurmctld_pidfile(), "slurmctld")
            wait_for(lambda: "could not ask the scheduler" in client_log(map_dir), 30,
                     "a poll to fail while slurmctld is down")
            time.sleep(2)  # a few more failing polls
            start_daemon("slurmctld")
            assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
    finally:
        restore_slurm()
    assert slurm_node_state() in SLURM_HEALTHY
    assert call_count(calls, "sbatch") == 1, client_log(map_dir)
    assert all(attempts(ran, x) == 1 for x in tasks)


@pytest.mark.disruptive("slurm")
@real_slurm
@pytest.mark.timeout(300)  # with up to 150 s waiting for outage_lock
def test_slurm_map_survives_slurmctld_away_when_a_chunk_must_be_resubmitted(
        outage_lock, slurm, work_root, ran, tmp_path):
    """slurmctld goes away just as a lost worker must be replaced (it was killed by a
    signal: its log says so, so the first poll that misses it reopens its claim and
    submits a new worker): the sbatch can't reach slurmctld. It is tried again at a later
    poll, never fatal (this ended the map with SchedulerCommandError before commit
    e3aea2c), the other workers take the reopened claim meanwhile, and the map completes
    with the one crash not counted twice.

    The squeue shim stops slurmctld right after answering the first poll that misses
    the victim's job (named in its claim), so the outage starts exactly between that
    poll and the sbatch."""
    victim = 1
    stopped = tmp_path / "slurmctld-stopped"
    misses = tmp_path / "misses"
    shim = tmp_path / "squeue-stopping-slurmctld"
    shim.write_text(
        '#!/bin/sh\n'
        'out=$(squeue "$@"); rc=$?\n'
        f'idx=$(sed -n \'s/.*"SLURM_ARRAY_TASK_ID": "\\([0-9]*\\)".*/\\1/p\' '
        f'"{work_root}"/*/claims/{victim} 2>/dev/null)\n'
        f'if [ $rc -eq 0 ] && [ ! -e "{stopped}" ] && [ -n "$idx" ] \\\n'
        f'   && ! printf "%s\\n" "$out" | grep -q "_$idx|"; then\n'
        f'  echo miss >> "{misses}"\n'
        f'  if [ "$(wc -l < "{misses}")" -ge 1 ]; then\n'
        f'    touch "{stopped}"; pid=$(cat "{slurmctld_pidfile()}"); kill "$pid"\n'
        '    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done\n'
        '  fi\n'
        'fi\n'
        'printf "%s\\n" "$out"; exit $rc\n')
    shim.chmod(0o755)
    # call_timeout 9: each try gets 3 s, time for the shim to see slurmctld exit
    pool = slurm.make_pool(keep_work_dir=True, commands={"squeue": [str(shim)]},
                           call_timeout=9)
    try:
        with pool:
            result = pool.map_async(
                functools.partial(faulty, ran=str(ran), victim=victim, fault="sigkill",
                                  seconds=2), range(4), chunksize=1)
            map_dir = the_map_dir(work_root)
            wait_for(stopped.exists, 60, "a poll to miss the killed job")
            wait_for(lambda: pid_alive(slurmctld_pidfile(), "slurmctld") is None, 30,
                     "slurmctld to stop")
            time.sleep(12)  # the outage, longer than call_timeout
            start_daemon("slurmctld")
            assert result.get(timeout=MAP_DEADLINE) == [0, 10, 20, 30]
    finally:
        restore_slurm()
    assert (tmp_path / "misses").read_text().count("miss") == 1
    assert "could not submit" in client_log(map_dir)  # the outage did strike the sbatch
    assert attempts(ran, victim) == 2
    assert attempts_per_claim(map_dir)[claim_of_task(map_dir, victim)] == 2


@pytest.mark.disruptive("slurm")
@real_slurm
@pytest.mark.timeout(300)  # with up to 150 s waiting for outage_lock
def test_per_job_slurm_map_completes_while_slurmctld_is_away(
        outage_lock, work_root, ran, tmp_path):
    """backend="slurm" (one sbatch per worker): the workers pull their tasks from the
    work_dir, not from the scheduler. slurmctld goes away while two workers run: they go
    on claiming and delivering, the map completes during the outage (its failing polls
    are only logged; this ended the map with SchedulerCommandError before commit
    f30e69d), and nothing is submitted again."""
    backend = make_backend("real-slurm", work_root, tmp_path)
    commands, calls = counting_shims(tmp_path, ["sbatch"])
    pool = backend.make_pool(processes=2, keep_work_dir=True, commands=commands,
                             call_timeout=3)
    tasks = range(6)
    try:
        with pool:
            result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=3), tasks,
                                    chunksize=1)
            map_dir = the_map_dir(work_root)
            wait_for(lambda: len(os.listdir(ran)) >= 2, 60, "two tasks to start")
            stop_daemon(slurmctld_pidfile(), "slurmctld")
            assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
            assert pid_alive(slurmctld_pidfile(), "slurmctld") is None  # still away
    finally:
        restore_slurm()
    assert all(attempts(ran, x) == 1 for x in tasks)
    assert call_count(calls, "sbatch") == 2  # the two workers, nothing more
    assert reopened_claims(map_dir) == Counter()


@real_slurm
@pytest.mark.timeout(120)
def test_slurm_result_torn_by_a_worker_killed_mid_write_is_never_read(slurm, work_root, ran):
    """The worker writes its result under a temporary name and renames it: killed
    halfway through the write, it leaves a torn temporary file that the client never
    takes for a result; the claim is reopened and run again."""
    pool = slurm.make_pool(keep_work_dir=True)
    victim = 1
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=victim, fault="torn-result"),
            range(4), chunksize=1)
        assert result.get(timeout=MAP_DEADLINE) == [0, 10, 20, 30]
        map_dir = the_map_dir(work_root)
    claim = claim_of_task(map_dir, victim)
    torn = list((map_dir / "results").glob(f"{claim}.pkl.*"))
    assert len(torn) == 1, sorted(os.listdir(map_dir / "results"))
    assert torn[0].stat().st_size > 0
    with pytest.raises(Exception):  # noqa: B017 - any unpickling error: it is torn
        pickle.loads(torn[0].read_bytes())
    assert attempts(ran, victim) == 2
    assert attempts_per_claim(map_dir)[claim] == 2


@real_slurm
@pytest.mark.timeout(120)
def test_slurm_duplicate_job_of_a_chunk_done_meanwhile_is_cancelled(slurm, work_root, ran,
                                                                    tmp_path):
    """squeue answers empty twice (as when a job left the queue and its result is late on
    NFS): both workers are taken for lost, their claims reopened and new workers
    submitted, then the first workers deliver. Workers running the claims again are
    useless from then on and are cancelled, at the latest when the map returns."""
    calls = tmp_path / "squeue-calls"
    shim = tmp_path / "flaky-squeue"
    shim.write_text(
        f'#!/bin/sh\necho call >> "{calls}"\n'
        f'n=$(wc -l < "{calls}")\n'
        'if [ "$n" -eq 2 ] || [ "$n" -eq 3 ]; then exit 0; fi  # an empty answer\n'
        'exec squeue "$@"\n')
    shim.chmod(0o755)
    pool = slurm.make_pool(keep_work_dir=True, commands={"squeue": [str(shim)]})
    map_dir = None
    try:
        with pool:
            result = pool.map_async(
                functools.partial(faulty, ran=str(ran), seconds=4, seconds_again=60), range(2),
                chunksize=1)
            map_dir = the_map_dir(work_root)
            assert result.get(timeout=MAP_DEADLINE) == [0, 10]
        assert reopened_claims(map_dir) == Counter({0: 1, 1: 1})
        wait_for(lambda: not any(line.endswith(("|RUNNING", "|PENDING"))
                                 for line in this_maps_jobs(squeue_jobs, map_dir)),
                 8, "the duplicate jobs to be cancelled")
    finally:
        if map_dir is not None:
            run(["scancel", f"--name=poolparty-{map_dir.name}"], check=False)


# ====================================================================== Sun Grid Engine
def running_sge_tasks(map_dir: Path) -> list[str]:
    return [line.split("|")[0] for line in this_maps_jobs(qstat_jobs, map_dir)
            if line.split("|")[1] == "r"]


@real_sge
@pytest.mark.timeout(180)
def test_sge_task_deleted_while_running_loses_its_claim_to_another_worker(sge, work_root, ran):
    pool = sge.make_pool(keep_work_dir=True)
    victim = 1
    with pool:
        result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=3), range(4),
                                chunksize=1)
        map_dir = the_map_dir(work_root)
        task = wait_for(lambda: attempts(ran, victim) == 1
                        and claim_holder(map_dir, victim) in running_sge_tasks(map_dir)
                        and claim_holder(map_dir, victim), 90, f"task {victim} to run")
        run(["qdel", task])
        assert result.get(timeout=MAP_DEADLINE) == [0, 10, 20, 30]
    assert attempts(ran, victim) == 2
    claim = claim_of_task(map_dir, victim)
    assert attempts_per_claim(map_dir) == Counter({0: 1, 1: 1, 2: 1, 3: 1, claim: 2})
    assert reopened_claims(map_dir) == Counter({claim: 1})
    assert job_of_claim(claim_attempts(map_dir)[claim][1]) != task
    wait_for(lambda: not this_maps_jobs(qstat_jobs, map_dir), 10, "the map's jobs to leave")


@real_sge
@pytest.mark.timeout(180)
def test_sge_job_in_error_state_is_deleted_and_resubmitted(sge, work_root, ran):
    """A job that exits with status 100 is put into error state (``Eqw``) by SGE
    itself: the pool deletes it and reopens its claim for the other workers."""
    pool = sge.make_pool(keep_work_dir=True)
    victim = 2
    with pool:
        result = pool.map_async(
            functools.partial(faulty, ran=str(ran), victim=victim, fault="exit100"), range(4),
            chunksize=1)
        assert result.get(timeout=MAP_DEADLINE) == [0, 10, 20, 30]
        map_dir = the_map_dir(work_root)
    assert attempts(ran, victim) == 2
    claim = claim_of_task(map_dir, victim)
    assert attempts_per_claim(map_dir) == Counter({0: 1, 1: 1, 2: 1, 3: 1, claim: 2})
    assert reopened_claims(map_dir) == Counter({claim: 1})
    assert "in an error state" in client_log(map_dir)
    first_job = submissions(map_dir)[0]["job_id"]
    wait_for(lambda: not any(line.startswith(f"{first_job}.") and "E" in line.split("|")[1]
                             for line in this_maps_jobs(qstat_jobs, map_dir)),
             30, f"the job in error state ({first_job}) to be deleted")


def sge_jobs_in_transfer() -> list[str]:
    """Tasks of every user that the qmaster is handing to an execd (state ``t``)."""
    lines = run(["qstat", "-u", "*"]).splitlines()[2:]
    return [line for line in lines if len(line.split()) > 4 and "t" in line.split()[4]]


@pytest.mark.disruptive("sge")
@real_sge
@pytest.mark.timeout(300)  # with up to 150 s waiting for outage_lock
def test_sge_map_survives_execd_stopped_and_restarted(
        outage_lock, sge, work_root, ran, tmp_path):
    """While sge_execd is away its jobs run on (their shepherds stay), the qmaster still
    lists them as running and nothing new starts. The pool waits, resubmits nothing,
    and the map completes once the execd is back.

    The queue instance is disabled around the restart, as an administrator would: a
    task the qmaster is handing over (``t``) while the execd shuts down can be lost by
    SGE and stay listed as ``t``/``r`` for minutes with nothing running (seen here:
    ``execd doesn't know this job`` only once the task was deleted), and the pool
    would wait for it; see docs/reliability.rst.
    """
    queue_instance = f"all.q@{socket.gethostname()}"
    commands, calls = counting_shims(tmp_path, ["qsub"])
    pool = sge.make_pool(keep_work_dir=True, commands=commands)
    tasks = range(12)  # more than the queue's 8 slots: some wait for the execd
    disabled = False
    try:
        with pool:
            result = pool.map_async(functools.partial(faulty, ran=str(ran), seconds=2), tasks,
                                    chunksize=1)
            map_dir = the_map_dir(work_root)
            wait_for(lambda: len(os.listdir(ran)) >= 1, 90, "a task to start")
            run(["qmod", "-d", queue_instance])
            disabled = True
            wait_for(lambda: not sge_jobs_in_transfer(), 60, "no task in transfer (t)")
            run(["/etc/init.d/gridengine-exec", "stop"], timeout=60, check=False)
            wait_for(lambda: pid_alive(execd_pidfile(), "sge_execd") is None, 45,
                     "sge_execd to stop")
            time.sleep(5)  # the outage: the running tasks end meanwhile
            restore_sge_execd()
            run(["qmod", "-e", queue_instance])
            disabled = False
            assert result.get(timeout=MAP_DEADLINE) == [x * 10 for x in tasks]
    finally:
        restore_sge_execd()
        if disabled:
            run(["qmod", "-e", queue_instance], check=False)
    assert call_count(calls, "qsub") == 1, client_log(map_dir)
    assert all(attempts(ran, x) == 1 for x in tasks)
