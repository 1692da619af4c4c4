"""Load on the real schedulers: a big map, many maps at once, big results.

Each ends with every result correct and in order; nothing collides and nothing
crosses from one map to another, whether the maps share a process or a directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import left_behind, make_backend


@pytest.fixture(params=["real-slurm-array", "real-sge"])
def real(request, work_root: Path, tmp_path: Path):
    return make_backend(request.param, work_root, tmp_path)


@pytest.fixture
def real_slurm(work_root: Path, tmp_path: Path):
    return make_backend("real-slurm-array", work_root, tmp_path)


def test_a_map_of_100000_tasks(real_slurm, work_root):
    results = real_slurm.make_pool().map(lambda x: 2 * x + 1, range(100_000))
    assert results == [2 * x + 1 for x in range(100_000)]
    assert left_behind(work_root) == []


def tagged_square(tag_and_x):
    tag, x = tag_and_x
    return tag, x * x


def test_ten_maps_at_once_from_threads_of_one_pool(real, work_root):
    """Ten concurrent maps, two of them identical (same function, same tasks): each gets
    its own work_dir and exactly its own results."""
    pool = real.make_pool()
    tags = ["m0", "m0"] + [f"m{i}" for i in range(2, 10)]
    with ThreadPoolExecutor(len(tags)) as threads:
        futures = [threads.submit(pool.map, tagged_square, [(tag, x) for x in range(30)], 15)
                   for tag in tags]
        for tag, future in zip(tags, futures):
            assert future.result(timeout=240) == [(tag, x * x) for x in range(30)]
    assert left_behind(work_root) == []
    assert real.queued_jobs() == []


TWO_PROCESS_SCRIPT = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
import poolparty

def tagged(tag_and_x):
    tag, x = tag_and_x
    return tag, x + 1000

backend, work_root, name = sys.argv[1:]
pool = poolparty.Pool(backend=backend, work_dir=work_root, polling_interval=0.5)
tags = ["shared"] + [f"{name}-{i}" for i in range(4)]  # "shared" is the same map in both
with ThreadPoolExecutor(len(tags)) as threads:
    futures = {tag: threads.submit(pool.map, tagged, [(tag, x) for x in range(25)], 13)
               for tag in tags}
    print(json.dumps({tag: future.result() for tag, future in futures.items()}))
"""


def test_maps_from_two_processes_in_the_same_directory(real, work_root, tmp_path):
    script = tmp_path / "maps.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    backend_name = real.name.removeprefix("real-")
    processes = [
        subprocess.Popen([sys.executable, str(script), backend_name, str(work_root), name],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path)
        for name in ("a", "b")
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for name, (process, (out, err)) in zip(("a", "b"), zip(processes, outputs)):
        assert process.returncode == 0, err
        results = json.loads(out)
        assert set(results) == {"shared"} | {f"{name}-{i}" for i in range(4)}
        for tag, values in results.items():
            assert values == [[tag, x + 1000] for x in range(25)]
    assert left_behind(work_root) == []


def one_megabyte(x):
    return bytes([x % 256]) * 2**20


def test_tasks_returning_one_megabyte_each(real, work_root):
    results = real.make_pool(keep_work_dir=True).map(one_megabyte, range(40))
    assert [len(r) for r in results] == [2**20] * 40
    assert all(r[:1] == bytes([x]) and r[-1:] == bytes([x]) for x, r in enumerate(results))
    (map_dir,) = work_root.iterdir()
    assert len([p for p in map_dir.rglob("*") if p.is_file()]) <= 10
