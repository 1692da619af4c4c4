"""Workers started by hand (``poolparty worker MAP_DIR``) join a map and drain it; with
``submit_workers=False`` they are the only workers. Their claims carry a heartbeat: one
killed mid-claim gives its claim back to the others once the heartbeat stops."""

from __future__ import annotations

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
