"""Warm workers: a worker with nothing left to do waits ``idle_timeout`` seconds for the
pool's next map, which then runs on it without a new submission; closing the pool,
leaving ``with``, Ctrl-C and the client's exit end them at once, not after the timeout.

The rest of the suite runs with ``idle_timeout=0`` (conftest): its tests assert that a
map's workers leave with it. Here the timeout is long (60 s), so a worker that is gone
within seconds was ended by the pool, not by its timeout.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REAL_QUEUES, left_behind, steps_named, wait_for

import poolparty
import poolparty.engine

IDLE = 60.0
#: far less than IDLE: workers gone this soon were ended by the pool
GONE_WITHIN = 20.0


def slow_square(x: int) -> int:
    time.sleep(0.1)
    return x * x


def say(x: int) -> int:
    print(f"task {x} says hello", flush=True)
    return x


class Submissions(list):
    """How many workers each submission of a pool asks for from now on, and the job
    names they carry (the maps' directories, which name them, are gone after)."""

    def __init__(self, pool: poolparty.Pool) -> None:
        super().__init__()
        self.names: set[str] = set()
        submit = pool.scheduler.submit

        def counting(work_dir, worker_ids, *steps):
            self.append(len(worker_ids))
            if hasattr(pool.scheduler, "job_name"):  # a cluster backend
                self.names.add(pool.scheduler.job_name(work_dir))
            return submit(work_dir, worker_ids, *steps)

        pool.scheduler.submit = counting  # type: ignore[method-assign]


def jobs_of(backend, names: set[str]) -> list[str]:
    """The jobs still queued or running of those names (a real scheduler), or of the
    test (local processes, the dummy's queue)."""
    if backend.name == "real-slurm-steps":
        return steps_named(backend.pool_options()["allocation"], names)
    if backend.name.startswith("real"):
        return REAL_QUEUES["sge" if backend.name.endswith("sge") else "slurm"][0](names)
    return backend.queued_jobs()


def lobbies(work_root: Path) -> list[Path]:
    return sorted(work_root.glob("pool-*")) if work_root.exists() else []


def test_later_maps_and_calls_run_on_the_first_maps_workers_without_a_submission(
        backend, work_root, capsys):
    pool = backend.make_pool(processes=2, idle_timeout=IDLE)
    submissions = Submissions(pool)
    assert pool.map(slow_square, range(20)) == [x * x for x in range(20)]
    assert submissions == [2]
    for round_ in range(1, 3):
        tasks = list(range(round_ * 10, round_ * 10 + 10))
        assert pool.map(say, tasks) == tasks
        assert pool.apply_async(slow_square, (round_,)).get(timeout=60) == round_ * round_
    assert submissions == [2], "a later map submitted workers while warm ones waited"
    printed = capsys.readouterr().out
    assert "task 25 says hello" in printed  # a warm worker's output is relayed too
    assert len(jobs_of(backend, submissions.names)) == 2  # still waiting in the lobby
    pool.close()
    pool.join()
    wait_for(lambda: jobs_of(backend, submissions.names) == [], GONE_WITHIN,
             "the warm workers to end")
    assert lobbies(work_root) == []
    assert left_behind(work_root) == []  # nothing left behind


def test_fewer_warm_workers_than_wanted_take_a_small_map_alone_and_a_long_one_gets_more(
        backend, work_root, monkeypatch):
    """Two warm workers, a pool of four: a map they finish within the grace submits
    nothing (no sbatch now and scancel at its end each round); one that still has work
    after the grace asks for the other two."""
    monkeypatch.setattr(poolparty.engine, "WARM_GRACE_SECONDS", 20.0)
    with backend.make_pool(processes=4, idle_timeout=IDLE) as pool:
        submissions = Submissions(pool)
        assert pool.map(slow_square, range(2), chunksize=1) == [0, 1]
        assert submissions == [2]
        assert pool.map(say, range(40)) == list(range(40))
        assert submissions == [2], "a small map submitted workers while warm ones took it"
        monkeypatch.setattr(poolparty.engine, "WARM_GRACE_SECONDS", 0.5)
        assert pool.map(slow_square, range(120), chunksize=1) == [x * x for x in range(120)]
        assert submissions == [2, 2]


def test_leaving_with_ends_the_warm_workers_at_once(backend, work_root):
    with backend.make_pool(processes=2, idle_timeout=IDLE) as pool:
        submissions = Submissions(pool)
        assert pool.map(slow_square, range(20)) == [x * x for x in range(20)]
        assert jobs_of(backend, submissions.names) != []
    wait_for(lambda: jobs_of(backend, submissions.names) == [], GONE_WITHIN,
             "the warm workers to end")
    assert lobbies(work_root) == []


def test_a_worker_waits_idle_timeout_then_leaves_by_itself(backend, work_root):
    pool = backend.make_pool(processes=2, idle_timeout=2)
    submissions = Submissions(pool)
    assert pool.map(slow_square, range(20)) == [x * x for x in range(20)]
    assert jobs_of(backend, submissions.names) != []
    wait_for(lambda: jobs_of(backend, submissions.names) == [], GONE_WITHIN,
             "the idle workers to leave")
    assert pool.map(slow_square, range(4)) == [0, 1, 4, 9]  # new workers, after the timeout
    assert len(submissions) == 2
    pool.close()


def test_a_warm_worker_never_runs_code_that_changed_since_it_loaded_it(
        backend, work_root, tmp_path, monkeypatch):
    """A fix and a rerun: the module the function comes from changed on disk. A warm
    worker that imported the old one must not run the new map (it would compute with
    the old code under the new code's name): it leaves, and a fresh worker runs it."""
    module_dir = tmp_path / "code"
    module_dir.mkdir()
    (module_dir / "wormhole.py").write_text("def shift(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(module_dir))
    import wormhole

    pool = backend.make_pool(processes=1, idle_timeout=IDLE)
    submissions = Submissions(pool)
    try:
        assert pool.map(wormhole.shift, range(5)) == [1, 2, 3, 4, 5]
        (module_dir / "wormhole.py").write_text("def shift(x):\n    return x + 100\n")
        os.utime(module_dir / "wormhole.py", (time.time() + 5, time.time() + 5))
        importlib.reload(wormhole)
        assert pool.map(wormhole.shift, range(5)) == [100, 101, 102, 103, 104]
        assert submissions == [1, 1]  # the warm worker left: a fresh one ran it
    finally:
        pool.terminate()
        sys.modules.pop("wormhole", None)


CLIENT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import poolparty

    out, how, options = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])

    def long_task(x):
        Path(out, f"started-{x}").touch()
        time.sleep(120)
        return x

    pool = poolparty.Pool(2, idle_timeout=60, **options)
    submit = pool.scheduler.submit

    def recording(work_dir, worker_ids, *steps):  # which jobs to look for, for the test
        Path(out, "names").write_text(pool.scheduler.job_name(work_dir))
        return submit(work_dir, worker_ids, *steps)

    pool.scheduler.submit = recording
    print(json.dumps(pool.map(abs, [-1, -2, -3, -4])), flush=True)
    Path(out, "first-map-done").touch()
    while not Path(out, "go").exists():  # the test looks at the waiting workers
        time.sleep(0.05)
    if how == "ctrl-c":
        pool.map(long_task, [10, 11], chunksize=1)
    # how == "exit": the script ends with the pool open and its workers waiting
""")


@pytest.mark.parametrize("how", ["exit", "ctrl-c"])
def test_the_clients_exit_and_ctrl_c_end_its_warm_workers(backend, work_root, tmp_path, how):
    if not backend.name.startswith("real"):
        pytest.skip("the client runs in another process: on the real schedulers")
    options = backend.pool_options(polling_interval=0.5)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = dict(os.environ)
    env.pop("POOLPARTY_IDLE_TIMEOUT", None)
    client = subprocess.Popen([sys.executable, str(script), str(tmp_path), how,
                               json.dumps({k: str(v) if isinstance(v, Path) else v
                                           for k, v in options.items()})],
                              stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: (tmp_path / "first-map-done").exists(), 120, "the first map")
        names = {(tmp_path / "names").read_text()}
        assert jobs_of(backend, names) != []  # waiting for the next map
        (tmp_path / "go").touch()
        if how == "ctrl-c":
            wait_for(lambda: list(tmp_path.glob("started-*")), 60, "a long task to start")
            client.send_signal(signal.SIGINT)
        client.wait(timeout=60)
    finally:
        client.kill()
    assert client.returncode != 0 if how == "ctrl-c" else client.returncode == 0
    wait_for(lambda: jobs_of(backend, names) == [], GONE_WITHIN, "every worker to end")
    assert lobbies(work_root) == []


RESUMED_CLIENT = textwrap.dedent("""
    import json, os, sys, time
    import poolparty

    RAN = sys.argv[1]

    def work(x):
        time.sleep(1.5)
        with open(os.path.join(RAN, f"{x}-{os.getpid()}"), "w"):
            pass
        return x * 10

    pool = poolparty.Pool(idle_timeout=60, **json.loads(sys.argv[2]))
    pool.map(abs, range(-8, 0))  # its workers wait in the lobby: the next map runs on them
    print(json.dumps(pool.map(work, range(12), chunksize=1)))
""")


def test_a_client_killed_while_warm_workers_run_its_map_resumes_without_rerunning(
        backend, work_root, tmp_path):
    """kill -9 of the client while its map runs on warm workers (guests of its lobby),
    then the same script again: every result; a task that finished never runs again;
    the dead client's lobby is removed and its workers leave (no job left)."""
    if not backend.name.startswith("real"):
        pytest.skip("the client runs in another process: on the real schedulers")
    script = tmp_path / "client.py"
    script.write_text(RESUMED_CLIENT)
    ran = tmp_path / "ran"
    ran.mkdir()
    options = {k: str(v) if isinstance(v, Path) else v
               for k, v in backend.pool_options(processes=4).items()}
    env = dict(os.environ)
    env.pop("POOLPARTY_IDLE_TIMEOUT", None)
    argv = [sys.executable, str(script), str(ran), json.dumps(options)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=tmp_path, env=env)
    try:
        wait_for(lambda: len(os.listdir(ran)) >= 3, 120, "three tasks to finish")
        assert first.poll() is None, "the first client ended before it could be killed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    finished_before_kill = {int(name.split("-")[0]) for name in os.listdir(ran)}
    old_lobbies = lobbies(work_root)
    assert len(old_lobbies) == 1
    # the jobs to look for at the end: the killed map's, and the first map's (warm)
    names = {f"poolparty-{path.name}" for path in work_root.glob("map-*")}
    names |= {f"poolparty-{path.name.split('.')[0]}"
              for path in (old_lobbies[0] / "workers").iterdir()
              if not path.name.startswith(".")}
    assert len(names) == 2 and jobs_of(backend, names)

    second = subprocess.run(argv, stdout=subprocess.PIPE, cwd=tmp_path, timeout=240,
                            check=True, env=env)
    results = second.stdout.decode().splitlines()[-1]  # after the tasks' output relayed
    assert json.loads(results) == [x * 10 for x in range(12)], second.stdout
    runs: dict[int, int] = {}
    for name in os.listdir(ran):
        runs[int(name.split("-")[0])] = runs.get(int(name.split("-")[0]), 0) + 1
    assert all(runs[x] == 1 for x in finished_before_kill), runs
    assert sorted(runs) == list(range(12))
    assert not old_lobbies[0].exists()  # removed by the second client's pool
    wait_for(lambda: lobbies(work_root) == [] and not jobs_of(backend, names), GONE_WITHIN,
             "every worker to leave")
