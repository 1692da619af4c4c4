"""A client killed mid-map (kill -9, a dead kernel) and the same map called again:
it re-attaches, nothing that finished runs again, queued jobs are left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ARRAY_BACKEND_PARAMS, made_backend

CLIENT = textwrap.dedent('''
    import json, os, sys, time
    import poolparty

    RAN = sys.argv[1]

    def work(x):
        time.sleep(1.5)
        with open(os.path.join(RAN, f"{x}-{os.getpid()}"), "w"):
            pass
        return x * 10

    options = json.loads(sys.argv[2])
    pool = poolparty.Pool(**options)
    print(json.dumps(pool.map(work, range(12), chunksize=1)))
''')


def runs_per_task(ran: Path) -> Counter:
    return Counter(int(name.split("-")[0]) for name in os.listdir(ran))


@pytest.fixture(params=ARRAY_BACKEND_PARAMS)
def backend(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


def test_a_killed_client_resumes_without_rerunning_finished_tasks(backend, tmp_path):
    kill_and_resume(backend, tmp_path)


def kill_and_resume(backend, tmp_path: Path,
                    launch: Callable[[list[str]], list[str]] = list) -> None:
    """Run the map in a client, SIGKILL it once three tasks finished, run it again: every
    result, nothing that finished ran again (on a cluster, nothing at all ran twice: its
    workers went on pulling tasks without the client). tests/test_real_pull.py runs
    this on every real backend, tests/test_real_views.py with the client's command
    wrapped by ``launch`` so that it sees the work_dir through another cache."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    ran = tmp_path / "ran"
    ran.mkdir()
    options = json.dumps({k: str(v) if isinstance(v, Path) else v
                          for k, v in backend.pool_options(processes=4).items()})
    argv = launch([sys.executable, str(script), str(ran), options])

    first = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(os.listdir(ran)) < 3:
        assert time.monotonic() < deadline, "no task finished in time"
        assert first.poll() is None, "the first client ended before it could be killed"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished_before_kill = set(runs_per_task(ran))

    second = subprocess.run(argv, stdout=subprocess.PIPE, cwd=tmp_path, timeout=240, check=True)
    assert json.loads(second.stdout) == [x * 10 for x in range(12)]
    runs = runs_per_task(ran)
    assert all(runs[x] == 1 for x in finished_before_kill), runs
    if backend.name != "local":  # queued and running jobs were left alone, not rerun
        assert set(runs.values()) == {1}, runs


@pytest.mark.parametrize("param", ["dummy-slurm-array", "dummy-sge"])
def test_a_job_in_an_error_state_when_the_client_comes_back_is_cancelled(param, work_root,
                                                                        tmp_path):
    """A job that went into an error state while no client watched would stay queued
    (held) for ever: the client that resumes the map cancels it, and finishes the map."""
    with made_backend(param, work_root, tmp_path) as backend:
        backend.queue.inject(error_state=1)
        script = tmp_path / "client.py"
        script.write_text(CLIENT)
        ran = tmp_path / "ran"
        ran.mkdir()

        def argv(**options) -> list[str]:
            options = {k: str(v) if isinstance(v, Path) else v
                       for k, v in backend.pool_options(processes=4, **options).items()}
            return [sys.executable, str(script), str(ran), json.dumps(options)]

        # the first client never polls, so never sees the error state
        first = subprocess.Popen(argv(polling_interval=600), stdout=subprocess.PIPE,
                                 cwd=tmp_path)
        deadline = time.monotonic() + 120
        while len(os.listdir(ran)) < 3:
            assert time.monotonic() < deadline, "no task finished in time"
            time.sleep(0.05)
        assert any(job["state"] != "RUNNING" for job in backend.queue.jobs())
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = subprocess.run(argv(), stdout=subprocess.PIPE, cwd=tmp_path, timeout=240,
                                check=True)
        assert json.loads(second.stdout) == [x * 10 for x in range(12)]
        assert backend.queued_jobs() == []
