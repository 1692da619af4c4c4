"""A claim whose job reached its time limit, or ran out of memory, runs again in a job
given more of it (poolparty.escalation): on the dummies, which enforce ``--time``,
``--mem``, ``h_rt`` and ``h_vmem`` as the schedulers do (SLURM says why in the job's
log; SGE kills at h_rt without a word, and h_vmem is a limit of the address space)."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import pytest
from conftest import made_backend

from poolparty.claims import ClaimBoard, Claimer
from poolparty.errors import ChunksLostError
from poolparty.escalation import OWN, Steps, clock_time, memory_bytes, scaled_memory
from poolparty.slurm import parse_max_time
from poolparty.slurm.array import SlurmArray
from poolparty.sun_grid_engine import SunGridEngine


def needs_time(x: int, seconds: float, marks: str) -> int:
    """Runs ``seconds`` every time: too long for the pool's time limit."""
    (Path(marks) / f"{x}-{time.time_ns()}").touch()
    time.sleep(seconds)
    return 10 * x


def needs_memory(x: int, megabytes: int, marks: str) -> int:
    """Holds ``megabytes`` (resident: written, not just reserved) for a second."""
    (Path(marks) / f"{x}-{time.time_ns()}").touch()
    block = b"x" * (megabytes * 2**20)
    time.sleep(1.0)
    return 10 * x + len(block) // 2**40


def attempts(marks: Path, x: int) -> int:
    return len(list(marks.glob(f"{x}-*")))


def client_log(work_root: Path) -> str:
    (map_dir,) = [path for path in work_root.iterdir() if path.is_dir()]
    return (map_dir / "client.log.jsonl").read_text()


LIMITS = {  # a time limit of 2 s in each scheduler's words, and memory
    "slurm-array": ({"time": "0:02"}, {"memory": "200M"}),
    "slurm": ({"time": "0:02"}, {"memory": "200M"}),
    "sge": ({"resources": {"h_rt": "2"}}, {"resources": {"h_vmem": "400M"}}),
}
#: real SLURM's least time limit is a minute (tests/test_real_faults.py has it); SGE's
#: h_rt may be seconds, and both enforce memory (OverMemoryKill, h_vmem)
TIME_PARAMS = ["dummy-slurm-array", "dummy-slurm", "dummy-sge",
               pytest.param("real-sge", marks=pytest.mark.real_sge)]
MEMORY_PARAMS = [*TIME_PARAMS, pytest.param("real-slurm-array", marks=pytest.mark.real_slurm)]


@pytest.mark.parametrize("param", TIME_PARAMS)
def test_a_claim_over_its_time_limit_runs_again_with_more_time(param, work_root, tmp_path):
    """Each task needs 2.5 s and the jobs get 2: both claims are killed at their limit,
    then run by workers given twice the time (time_escalation=2), to their results.
    Real SGE kills up to a few seconds after h_rt: there the tasks need 5 s, and the
    raised workers get four times the time."""
    marks = tmp_path / "marks"
    marks.mkdir()
    seconds, factor = (5.0, 4) if param.startswith("real") else (2.5, 2)
    task = functools.partial(needs_time, seconds=seconds, marks=str(marks))
    with made_backend(param, work_root, tmp_path) as backend:
        pool = backend.make_pool(keep_work_dir=True, time_escalation=factor,
                                 max_num_resubmissions=1, **LIMITS[param.split("-", 1)[1]][0])
        with pool:
            assert pool.map(task, [1, 2], chunksize=1) == [10, 20]
    assert [attempts(marks, x) for x in (1, 2)] == [2, 2]
    log = client_log(work_root)
    assert log.count("its job reached its time limit") == 2, log
    assert f"reopened for a worker with {2 * factor} s of time" in log
    assert f"with {2 * factor} s of time" in log.split("submitted", 2)[-1]


@pytest.mark.parametrize("param", MEMORY_PARAMS)
def test_a_claim_out_of_memory_runs_again_with_more_memory(param, work_root, tmp_path):
    """The task holds 500 MB; the jobs get 200 MB (SLURM, resident) or 400 MB of
    address space (SGE): killed (SLURM) or a MemoryError under the limit (SGE), then
    run by a worker given twice the memory."""
    marks = tmp_path / "marks"
    marks.mkdir()
    name = param.split("-", 1)[1]
    megabytes = 300 if name.startswith("slurm") else 500
    task = functools.partial(needs_memory, megabytes=megabytes, marks=str(marks))
    with made_backend(param, work_root, tmp_path) as backend:
        pool = backend.make_pool(keep_work_dir=True, memory_escalation=2,
                                 max_num_resubmissions=1, **LIMITS[name][1])
        with pool:
            assert pool.map(task, [3]) == [30]
    assert attempts(marks, 3) == 2
    log = client_log(work_root)
    assert "its job ran out of memory" in log, log
    assert "reopened for a worker with " in log and " of memory" in log


def test_without_a_memory_to_raise_a_memory_error_is_the_tasks(work_root, tmp_path):
    """SGE's h_vmem with memory_escalation=1: the task's MemoryError reaches the caller
    as it is, at once, as any exception a task raises."""
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(needs_memory, megabytes=500, marks=str(marks))
    with made_backend("dummy-sge", work_root, tmp_path) as backend:
        pool = backend.make_pool(memory_escalation=1, **LIMITS["sge"][1])
        with pool, pytest.raises(MemoryError):
            pool.map(task, [3])
    assert attempts(marks, 3) == 1


def test_raising_stops_at_the_resubmission_limit_naming_the_class(work_root, tmp_path):
    """A task that never fits: raised once (max_num_resubmissions=1), then the map
    fails naming the time limit for both attempts."""
    marks = tmp_path / "marks"
    marks.mkdir()
    task = functools.partial(needs_time, seconds=60.0, marks=str(marks))
    with made_backend("dummy-slurm-array", work_root, tmp_path) as backend:
        pool = backend.make_pool(time="0:02", max_num_resubmissions=1)
        with pool, pytest.raises(ChunksLostError) as raised:
            pool.map(task, [5])
    assert str(raised.value).count("its job reached its time limit") == 2, str(raised.value)
    assert attempts(marks, 5) == 2


# ---------------------------------------------------------------- the pieces
def test_memory_sizes_in_each_schedulers_units():
    assert memory_bytes("2G", 2**20) == 2 * 2**30
    assert memory_bytes("1500", 2**20) == 1500 * 2**20  # SLURM: megabytes
    assert memory_bytes("1500", 1) == 1500  # SGE: bytes
    assert memory_bytes("512k", 1) == 512 * 2**10
    assert memory_bytes("lots", 1) is None
    assert scaled_memory("2G", 1.5, 2**20) == "3072M"
    assert scaled_memory("2G", 1.5 ** 3, 2**20, cap="4G") == "4096M"
    assert scaled_memory("8G", 1.5, 2**20, cap="4G") == "8192M"  # never below the asked
    assert clock_time(90) == "0:01:30" and clock_time(100000.2) == "27:46:41"


def test_slurm_raises_time_and_memory_up_to_the_partitions_limit_and_max_memory():
    slurm = SlurmArray(time="1:00:00", memory="2G", max_memory="4G")
    slurm.max_time_seconds = lambda: 7200.0  # type: ignore[method-assign]
    assert slurm.resource_arguments(OWN) == ["--time=1:00:00", "--mem=2G"]
    assert slurm.resource_arguments(Steps(1, 1)) == ["--time=1:30:00", "--mem=3072M"]
    assert slurm.resource_arguments(Steps(3, 3)) == ["--time=2:00:00", "--mem=4096M"]
    assert slurm.worker_arguments(Steps(1, 0)) == ["--steps", "1,0", "--time-limit", "5400"]
    assert slurm.worker_arguments(OWN) == []


def test_sge_raises_every_time_and_memory_resource_given():
    sge = SunGridEngine(resources={"h_rt": "0:10:00", "s_rt": "540", "h_vmem": "1G",
                                   "arch": "lx-amd64"})
    assert sge.resource_arguments(Steps(1, 1)) == [
        "-l", "h_rt=0:15:00", "-l", "s_rt=0:13:30", "-l", "h_vmem=1536M",
        "-l", "arch=lx-amd64"]


def test_nothing_to_raise_without_a_time_or_memory_asked_for():
    from poolparty.endings import Ending

    assert not SlurmArray().raises(Ending.TIME_LIMIT)
    assert not SlurmArray().raises(Ending.OUT_OF_MEMORY)
    assert SlurmArray(time="5").raises(Ending.TIME_LIMIT)
    assert not SlurmArray(time="5", time_escalation=1).raises(Ending.TIME_LIMIT)
    assert not SlurmArray(time="5").raises(Ending.PREEMPTED)


SHOW_PARTITION = """\
PartitionName=debug
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   Default=YES QoS=N/A
   MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED

PartitionName=long
   Default=NO QoS=N/A
   MaxNodes=UNLIMITED MaxTime=2-00:00:00 MinNodes=0
"""


def test_the_partitions_max_time_is_read_from_scontrol():
    assert parse_max_time(SHOW_PARTITION, "long") == 2 * 86400
    assert parse_max_time(SHOW_PARTITION, None) is None  # debug: UNLIMITED
    assert parse_max_time(SHOW_PARTITION, "gpu") is None


def test_a_claim_reopened_for_a_raised_worker_is_left_to_one(tmp_path):
    """The pool's own workers pass it by; a worker raised as often takes it."""
    board = ClaimBoard(tmp_path, 4)
    board.create()
    own = Claimer(tmp_path, 4)
    claim = own.claim_next(lambda remaining: 4)
    assert (claim.start, claim.stop) == (0, 4)
    board.claims()
    board.requeue(0, 1, "its job reached its time limit", Steps(1, 0))
    record = json.loads((tmp_path / "requeue" / "0.1").read_text())
    assert record["needs"] == [1, 0]
    assert own.claim_next(lambda remaining: 4) is None
    assert Claimer(tmp_path, 4, steps=Steps(0, 1)).claim_next(lambda remaining: 4) is None
    raised = Claimer(tmp_path, 4, steps=Steps(2, 0)).claim_next(lambda remaining: 4)
    assert (raised.number, raised.attempt, raised.start, raised.stop) == (0, 1, 0, 4)
