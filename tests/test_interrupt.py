"""Ctrl-C while waiting for results cancels the jobs and gives control back in seconds.

A client script runs in a subprocess: it starts a map of long tasks (each touches
``started-<i>``, sleeps a minute, then touches ``finished-<i>``) and waits for it one way
or another. Once a task has started, the test sends SIGINT, as a terminal's Ctrl-C does,
and checks what a user relies on: the client stops within seconds (not when the tasks
end), with KeyboardInterrupt; no task ever finishes; no job of the map is left queued
or running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import made_backend, wait_for

import poolparty

TASK_SECONDS = 60
#: from SIGINT to the client's exit: far less than the tasks take
EXIT_DEADLINE = 30

CLIENT = textwrap.dedent("""
    import concurrent.futures, json, sys
    import poolparty

    out, way, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    tasks = [(out, i) for i in range(4)]

    def long_task(arg):
        import time
        from pathlib import Path
        out, i = arg
        Path(out, f"started-{i}").touch()
        time.sleep(TASK_SECONDS)
        Path(out, f"finished-{i}").touch()
        return i

    def with_pool():
        pool = poolparty.Pool(2, **options)
        if way == "map":
            return pool.map(long_task, tasks, chunksize=1)
        if way == "map_async.get":
            return pool.map_async(long_task, tasks, chunksize=1).get()
        if way == "AsyncResult.wait":
            return pool.map_async(long_task, tasks, chunksize=1).wait()
        if way == "imap":
            return list(pool.imap(long_task, tasks, chunksize=1))
        if way == "imap_unordered":
            return list(pool.imap_unordered(long_task, tasks, chunksize=1))
        if way == "apply":
            return pool.apply(long_task, (tasks[0],))
        raise ValueError(way)

    def with_executor(executor):
        futures = [executor.submit(long_task, task) for task in tasks]
        if way.endswith("result"):
            return futures[0].result()
        if way.endswith("as_completed"):
            return [f.result() for f in concurrent.futures.as_completed(futures)]
        if way.endswith("wait"):
            return concurrent.futures.wait(futures)
        raise ValueError(way)

    def with_joblib():
        import joblib
        import poolparty.joblib_backend
        backend_options = dict(options, pool_backend=options.pop("backend"))
        with joblib.parallel_backend("poolparty", **backend_options):
            return joblib.Parallel(n_jobs=2, batch_size=1)(
                joblib.delayed(long_task)(task) for task in tasks)

    try:
        if way == "Executor.map":
            with poolparty.Executor(2, **options) as executor:
                print(list(executor.map(long_task, tasks)))
        elif way.startswith("Executor."):
            with poolparty.Executor(2, **options) as executor:
                print(with_executor(executor))
        elif way.startswith("unclosed Executor."):
            print(with_executor(poolparty.Executor(2, **options)))
        elif way == "joblib":
            print(with_joblib())
        elif way == "with Pool.imap":
            with poolparty.Pool(2, **options) as pool:
                print(list(pool.imap(long_task, tasks, chunksize=1)))
        else:
            print(with_pool())
    except KeyboardInterrupt:
        print("KeyboardInterrupt reached the caller", flush=True)
        raise
""").replace("TASK_SECONDS", str(TASK_SECONDS))

POOL_WAYS = ["map", "map_async.get", "AsyncResult.wait", "imap", "imap_unordered", "apply"]
EXECUTOR_WAYS = ["Executor.result", "Executor.as_completed", "Executor.wait", "Executor.map",
                 "unclosed Executor.as_completed"]
ALL_WAYS = [*POOL_WAYS, "with Pool.imap", *EXECUTOR_WAYS, "joblib"]
#: on the real schedulers, a few ways (each takes a job start or two)
REAL_WAYS = ["map", "imap", "Executor.as_completed"]

CASES = [
    *[pytest.param("local", way, id=f"local-{way}") for way in ALL_WAYS],
    *[pytest.param("dummy-slurm-array", way, id=f"dummy-slurm-array-{way}") for way in ALL_WAYS],
    *[pytest.param(backend, way, id=f"{backend}-{way}",
                   marks=getattr(pytest.mark, "real_sge" if "sge" in backend else "real_slurm"))
      for backend in ("real-slurm-array", "real-sge") for way in REAL_WAYS],
]


def client_options(backend, work_root: Path) -> dict:
    """The client's Pool options: those of the test's backend, as JSON."""
    options = backend.pool_options()
    options["work_dir"] = str(options["work_dir"])
    return options


def interrupt_once_started(client: subprocess.Popen, out: Path, tmp_path: Path) -> float:
    """SIGINT to the client once a task started; how long the client took to stop then
    (the deadline plus a bit if it didn't)."""
    wait_for(lambda: list(out.glob("started-*")) or client.poll() is not None, 180,
             "a task to start")
    assert client.poll() is None, (tmp_path / "client.err").read_text()[-3000:]
    client.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    try:
        client.wait(timeout=EXIT_DEADLINE)
    except subprocess.TimeoutExpired:
        client.kill()
    return time.monotonic() - interrupted


def start_client(tmp_path: Path, way: str, options: dict, out: Path) -> subprocess.Popen:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    source_root = str(Path(poolparty.__file__).parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [source_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen(
        [sys.executable, str(script), str(out), way, json.dumps(options)],
        stdout=open(tmp_path / "client.out", "w"), stderr=open(tmp_path / "client.err", "w"),
        env=env, cwd=tmp_path,
    )


@pytest.mark.parametrize("backend_param, way", CASES)
def test_ctrl_c_cancels_the_jobs_and_returns_within_seconds(backend_param, way, work_root,
                                                            tmp_path):
    out = tmp_path / "tasks"
    out.mkdir()
    with made_backend(backend_param, work_root, tmp_path) as backend:
        client = start_client(tmp_path, way, client_options(backend, work_root), out)
        took = interrupt_once_started(client, out, tmp_path)
        stdout = (tmp_path / "client.out").read_text()
        stderr = (tmp_path / "client.err").read_text()
        assert took < EXIT_DEADLINE, f"the client took {took:.0f} s to stop\n{stderr[-3000:]}"
        assert "KeyboardInterrupt reached the caller" in stdout, stderr[-3000:]
        assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr[-3000:]
        wait_for(lambda: backend.queued_jobs() == [], 15, "the map's jobs to be gone")
    assert list(out.glob("finished-*")) == []


def test_ctrl_c_returns_within_seconds_even_when_the_scheduler_hangs(work_root, tmp_path):
    """scancel hangs for 13 s: the client gives up waiting for it after 10 s, once (not
    once in the wait, once leaving ``with Pool`` and once at exit), and says so; the
    cancel goes on and the jobs go when it is done."""
    out = tmp_path / "tasks"
    out.mkdir()
    with made_backend("dummy-slurm-array", work_root, tmp_path) as backend:
        backend.queue.inject(hang={"scancel": (13, 1)})
        options = dict(client_options(backend, work_root), call_timeout=120)
        client = start_client(tmp_path, "with Pool.imap", options, out)
        took = interrupt_once_started(client, out, tmp_path)
        stderr = (tmp_path / "client.err").read_text()
        assert took < 20, f"the client took {took:.0f} s to stop\n{stderr[-3000:]}"
        assert stderr.rstrip().endswith("KeyboardInterrupt"), stderr[-3000:]
        assert "did not cancel its jobs within 10 s" in stderr
        wait_for(lambda: backend.queued_jobs() == [], 90, "the map's jobs to be gone")
    assert list(out.glob("finished-*")) == []
