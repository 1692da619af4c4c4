"""Workers started by hand (``poolparty worker MAP_DIR``) join a map and drain it; with
``submit_workers=False`` they are the only workers. Their claims carry a heartbeat: one
killed mid-claim gives its claim back to the others once the heartbeat stops."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import the_map_dir, wait_for

import poolparty


def hand_worker(map_dir: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "poolparty.cli", "worker", str(map_dir),
                             *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def square_slowly(x: int) -> int:
    time.sleep(0.05)
    return x * x


def hang_first_time(x: int, folder: str) -> int:
    """Task 0 hangs on its first attempt (until its worker is killed)."""
    marker = Path(folder, "started")
    if x == 0 and not marker.exists():
        marker.touch()
        time.sleep(600)
    return x + 100


def test_a_map_that_submits_no_worker_is_run_by_workers_started_by_hand(work_root, caplog):
    pool = poolparty.Pool(backend="local", submit_workers=False, work_dir=work_root,
                          polling_interval=0.2)
    with caplog.at_level(logging.WARNING, logger="poolparty"), ThreadPoolExecutor(1) as thread, \
            pool:
        mapped = thread.submit(pool.map, square_slowly, range(40))
        map_dir = the_map_dir(work_root, holding="map.json")
        wait_for(lambda: "no worker is submitted" in caplog.text, 30, "the hint to the user")
        assert f"poolparty worker {map_dir}" in caplog.text
        workers = [hand_worker(map_dir) for _ in range(2)]
        assert mapped.result(timeout=120) == [x * x for x in range(40)]
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        assert "no work left" in err
    assert not map_dir.exists()  # a map that succeeded removes its work_dir


def test_a_hand_worker_killed_mid_claim_gives_it_back_once_its_heartbeat_stops(
        work_root, tmp_path, monkeypatch):
    from poolparty import engine

    monkeypatch.setattr(engine, "HEARTBEAT_TIMEOUT_SECONDS", 2.0)
    pool = poolparty.Pool(backend="local", submit_workers=False, work_dir=work_root,
                          polling_interval=0.2)
    with ThreadPoolExecutor(1) as thread, pool:  # a failed assert ends the map (terminate)
        mapped = thread.submit(pool.map, lambda x: hang_first_time(x, str(tmp_path)), range(3),
                               chunksize=1)
        map_dir = the_map_dir(work_root, holding="map.json")
        first = hand_worker(map_dir, "--heartbeat", "0.2")
        try:
            wait_for(lambda: (tmp_path / "started").exists(), 60, "task 0 to start")
            # longer than the timeout: beating every 0.2 s, its claim stays its own
            time.sleep(3 * engine.HEARTBEAT_TIMEOUT_SECONDS / 2)
            assert os.listdir(map_dir / "requeue") == []
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate()
        wait_for(lambda: os.listdir(map_dir / "requeue"), 30, "the claim given back")
        second = hand_worker(map_dir)
        assert mapped.result(timeout=120) == [100, 101, 102]
        assert second.wait(timeout=60) == 0


def test_a_directory_that_is_no_map_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "poolparty.cli", "worker", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "is not a map's directory" in done.stderr


@pytest.mark.parametrize("heartbeat", ["0", "-1", "soon"])
def test_a_bad_heartbeat_is_refused(tmp_path, heartbeat):
    (tmp_path / "map.json").write_text("{}")
    done = subprocess.run([sys.executable, "-m", "poolparty.cli", "worker", str(tmp_path),
                           "--heartbeat", heartbeat], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "heartbeat" in done.stderr


def submit_hand_job(param: str, map_dir: Path, log: Path) -> str:
    """A job the pool knows nothing of, running ``poolparty worker`` on the map: its
    scheduler's job id."""
    worker = [sys.executable, "-m", "poolparty.cli", "worker", str(map_dir), "--heartbeat", "0.5"]
    if param.endswith("sge"):
        argv = ["qsub", "-terse", "-b", "y", "-V", "-cwd", "-j", "y", "-o", str(log),
                "-N", "pp-hand-worker", *worker]
    else:
        argv = ["sbatch", "--parsable", "--job-name=pp-hand-worker", f"--output={log}",
                "--wrap", " ".join(worker)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip().split(".")[0]


@pytest.mark.parametrize("param", [pytest.param("real-slurm-array", marks=pytest.mark.real_slurm),
                                   pytest.param("real-sge", marks=pytest.mark.real_sge)])
@pytest.mark.timeout(240)
def test_jobs_the_pool_does_not_know_run_its_map_and_one_cancelled_gives_its_claim_back(
        param, work_root, tmp_path, monkeypatch):
    """On a real scheduler: with submit_workers=False the pool submits nothing, and two
    jobs submitted by hand run the map; the first, cancelled mid-claim, stops its
    heartbeat, and its claim goes to the second."""
    import functools

    from conftest import made_backend

    from poolparty import engine

    monkeypatch.setattr(engine, "HEARTBEAT_TIMEOUT_SECONDS", 3.0)
    cancel = ["qdel"] if param.endswith("sge") else ["scancel"]
    with made_backend(param, work_root, tmp_path) as backend:
        pool = backend.make_pool(submit_workers=False)
        with ThreadPoolExecutor(1) as thread, pool:
            mapped = thread.submit(pool.map, functools.partial(hang_first_time,
                                                               folder=str(tmp_path)),
                                   range(3), chunksize=1)
            map_dir = the_map_dir(work_root, holding="map.json")
            first = submit_hand_job(param, map_dir, tmp_path / "first.log")
            wait_for(lambda: (tmp_path / "started").exists(), 120, "task 0 to start")
            assert backend.queued_jobs() == []  # the pool submitted nothing
            subprocess.run([*cancel, first], check=True, timeout=30, capture_output=True)
            wait_for(lambda: os.listdir(map_dir / "requeue"), 60, "the claim given back")
            submit_hand_job(param, map_dir, tmp_path / "second.log")
            assert mapped.result(timeout=120) == [100, 101, 102]


def wait_at_gate(x: int, gate: str, ran: str) -> int:
    Path(ran, f"{x}-{os.getpid()}").touch()
    while not Path(gate).exists():
        time.sleep(0.05)
    return x


def test_a_worker_leaves_a_map_directory_made_anew_under_it(work_root, tmp_path):
    """A map that succeeded is removed, and the same map called again makes a directory
    of the same name: a worker of the first that still runs (cancelled, not yet dead)
    must not claim in the second by its path. Here its map.json is written anew while
    the worker runs its first claim (one task): it runs no other."""
    gate, ran = tmp_path / "gate", tmp_path / "ran"
    ran.mkdir()
    task = functools.partial(wait_at_gate, gate=str(gate), ran=str(ran))
    pool = poolparty.Pool(backend="local", submit_workers=False, work_dir=work_root,
                          polling_interval=0.2)
    with ThreadPoolExecutor(1) as thread, pool:
        mapped = thread.submit(pool.map, task, range(6))
        map_dir = the_map_dir(work_root, holding="map.json")
        first = hand_worker(map_dir)
        wait_for(lambda: len(os.listdir(ran)) == 1, 60, "the first worker's first task")
        made_anew = map_dir / "map.json.new"
        made_anew.write_bytes((map_dir / "map.json").read_bytes())
        os.chmod(made_anew, 0o600)
        os.replace(made_anew, map_dir / "map.json")
        gate.touch()
        out, err = first.communicate(timeout=60)
        assert "made anew" in err
        assert len(os.listdir(ran)) == 1  # it left after its claim
        second = hand_worker(map_dir)
        assert mapped.result(timeout=120) == list(range(6))
        second.communicate(timeout=60)
    first_pid = str(first.pid)
    assert [name for name in os.listdir(ran) if name.endswith(first_pid)] != []
