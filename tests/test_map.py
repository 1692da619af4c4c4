"""What a user relies on, on every backend: results in order, errors, files left."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import left_behind

import poolparty


def square_plus(x, offset=0):
    return x * x + offset


class Boom(ValueError):
    pass


def explode_on_seven(x):
    if x == 7:
        raise Boom(f"task {x} exploded")
    return x


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def test_map_of_a_lambda_returns_results_in_input_order(backend):
    pool = backend.make_pool()
    offset = 3  # captured by the closure: cloudpickle carries it to the jobs
    assert pool.map(lambda x: x * x + offset, range(200)) == [x * x + 3 for x in range(200)]


def test_tasks_run_in_the_callers_current_directory(backend, tmp_path, monkeypatch):
    """As with multiprocessing: a task's relative paths mean what they mean to the caller
    (PBS starts jobs in the home directory; its jobs change to the caller's first)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with backend.make_pool(processes=1) as pool:
        assert pool.map(lambda _: os.getcwd(), range(2)) == [str(here)] * 2


def test_starmap_unpacks_argument_tuples(backend):
    pool = backend.make_pool()
    assert pool.starmap(square_plus, [(1, 1), (2, 0), (3, 10)], chunksize=1) == [2, 4, 19]


def test_success_removes_the_work_dir(backend, work_root):
    backend.make_pool().map(abs, [-1, -2], chunksize=1)
    assert left_behind(work_root) == []


def test_keep_work_dir_leaves_about_ten_files_with_results_and_logs_archived(backend, work_root):
    backend.make_pool(keep_work_dir=True).map(print, range(30), chunksize=1)
    assert backend.queued_jobs() == []  # nothing left to write into it
    (map_dir,) = work_root.iterdir()
    names = sorted(str(path.relative_to(map_dir)) for path in files_under(map_dir))
    assert len(names) <= 10, names
    with zipfile.ZipFile(map_dir / "results.zip") as results:
        assert len(results.namelist()) == 30
    with zipfile.ZipFile(map_dir / "logs.zip") as logs:
        printed = b"".join(logs.read(name) for name in logs.namelist())
    assert b"\n29\n" in printed  # the tasks' stdout is kept


def test_a_raising_task_raises_its_exception_with_the_remote_traceback(backend, work_root):
    pool = backend.make_pool()
    with pytest.raises(Boom, match="task 7 exploded") as caught:
        pool.map(explode_on_seven, range(10), chunksize=2)
    assert isinstance(caught.value.__cause__, poolparty.RemoteTraceback)
    assert "explode_on_seven" in str(caught.value.__cause__)
    (map_dir,) = work_root.iterdir()  # kept, for inspection and to resume
    assert (map_dir / "function.pkl").exists()


def test_an_empty_iterable_returns_an_empty_list_and_submits_nothing(backend, work_root):
    assert backend.make_pool().map(abs, []) == []
    assert not work_root.exists() or list(work_root.iterdir()) == []
    assert backend.queued_jobs() == []


def test_work_dir_is_private_whatever_the_umask(backend, work_root):
    old = os.umask(0)
    try:
        backend.make_pool(keep_work_dir=True).map(abs, [1, 2], chunksize=1)
    finally:
        os.umask(old)
    (map_dir,) = work_root.iterdir()
    assert map_dir.stat().st_mode & 0o777 == 0o700
    for path in files_under(map_dir):
        assert path.stat().st_mode & 0o077 == 0, path


def digest_of_secret(_):
    import hashlib

    return hashlib.sha256(os.environ.get("MY_SERVICE_TOKEN", "").encode()).hexdigest()


def test_environment_values_reach_the_jobs_but_no_file(backend, work_root, monkeypatch):
    """Environment variables can hold tokens: the scheduler carries them to the job, and
    nothing poolparty writes (scripts, logs, archives, metadata) contains them."""
    secret = "tok-" + os.urandom(8).hex()
    monkeypatch.setenv("MY_SERVICE_TOKEN", secret)
    pool = backend.make_pool(keep_work_dir=True)
    import hashlib

    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert pool.map(digest_of_secret, range(3), chunksize=1) == [digest] * 3
    (map_dir,) = work_root.iterdir()
    for path in files_under(map_dir):
        assert secret.encode() not in path.read_bytes(), path
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    assert secret.encode() not in archive.read(name), (path, name)


def test_two_maps_started_at_once_do_not_collide(backend, work_root):
    from concurrent.futures import ThreadPoolExecutor

    pool = backend.make_pool()
    with ThreadPoolExecutor(2) as threads:
        first = threads.submit(pool.map, lambda x: ("a", x), range(20))
        second = threads.submit(pool.map, lambda x: ("b", x), range(20))
        assert first.result() == [("a", x) for x in range(20)]
        assert second.result() == [("b", x) for x in range(20)]


def test_results_only_cloudpickle_can_carry_come_back(backend):
    """Results go back with plain pickle when it can, cloudpickle when it must."""
    results = backend.make_pool().map(lambda x: (lambda: x * 10), range(4), chunksize=2)
    assert [make() for make in results] == [0, 10, 20, 30]


def test_a_node_missing_a_module_the_function_needs_raises_it_without_resubmitting(
        backend, tmp_path, monkeypatch):
    """The node's python can't import the function's module: the caller gets that
    ModuleNotFoundError at once (with the node's traceback), not a resubmission loop."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "node_lacks_this.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(code))
    import node_lacks_this

    blocker = tmp_path / "blocker"  # the node's python: that module can't be imported
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nsys.modules['node_lacks_this'] = None\n")
    node_python = tmp_path / "node-python"
    node_python.write_text(f"#!/bin/sh\nPYTHONPATH={blocker} exec {sys.executable} \"$@\"\n")
    node_python.chmod(0o755)
    pool = backend.make_pool(python_path=str(node_python))
    with pytest.raises(ModuleNotFoundError, match="node_lacks_this") as caught:
        pool.map(node_lacks_this.double, range(4), chunksize=2)
    assert "node_lacks_this" in str(caught.value.__cause__)  # the node's own traceback
    if backend.queue is not None:
        # one submission per chunk at most (per-job SLURM submits each): none resubmitted
        assert backend.queue.history()[backend.command["submit"]] <= 2
