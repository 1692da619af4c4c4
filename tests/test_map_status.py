"""poolparty.map_status from Python: a map's status read from its work_dir alone, on
every array backend (local, dummy and real schedulers), without a command line."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import ARRAY_BACKEND_PARAMS, Backend, made_backend, the_map_dir, wait_for

import poolparty
from poolparty.events import FINISHED, KINDS, STARTED, WorkerEvents
from poolparty.map_status import STATES, MapStatus, MapView, NoMapError, read_status


def gated(x: int, gate: str) -> int:
    """Tasks below 2 return at once; the others wait until the test opens the gate."""
    while x >= 2 and not os.path.exists(gate):
        time.sleep(0.02)
    return x


def odd_raises(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


@pytest.fixture(params=ARRAY_BACKEND_PARAMS)
def array_backend(request, work_root: Path, tmp_path: Path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


def backend_name(backend: Backend) -> str:
    """The pool's backend name of a test backend: dummy-sge -> sge."""
    return backend.name.split("-", 1)[1] if "-" in backend.name else backend.name


def status_when(map_dir: Path, condition: Callable[[MapStatus], object],
                what: str) -> MapStatus:
    """The map's status once ``condition`` holds for it."""
    def ready() -> MapStatus | None:
        status = read_status(map_dir)
        return status if condition(status) else None
    return wait_for(ready, 120, what)


def test_a_finished_map(array_backend, work_root):
    with array_backend.make_pool(keep_work_dir=True) as pool:
        assert pool.map(abs, range(-4, 0), chunksize=2) == [4, 3, 2, 1]
    calls = array_backend.queue.history() if array_backend.queue else None
    status = read_status(work_root)  # the root: its most recent map
    assert isinstance(status, MapStatus)
    assert (status.state, status.ended["how"]) == ("finished", "finished")
    assert status.backend == backend_name(array_backend)
    assert status.tasks == {"total": 4, **dict.fromkeys(STATES, 0), "done": 4}
    assert (status.chunks["total"], status.chunks["claim_unit"]) == (2, 2)
    workers = status.workers
    assert 1 <= workers["finished"] <= workers["submitted"] <= 2 and workers["running"] == 0
    assert status.errors == [] and status.client["running"] is False
    assert read_status(status.work_dir).map_id == status.map_id  # or the map's own dir
    as_json = json.loads(json.dumps(status.as_dict()))
    assert as_json["map_id"] == Path(status.work_dir).name == status.map_id
    assert "scheduler" not in as_json and "query_commands" not in as_json
    if calls is not None:  # only files were read: the scheduler was not asked
        assert array_backend.queue.history() == calls


def test_a_failed_map(array_backend, work_root):
    with pytest.raises(ValueError, match="odd 1"):
        array_backend.make_pool().map(odd_raises, range(6), chunksize=6)
    status = read_status(work_root)  # a map that failed keeps its work_dir
    assert status.state == "failed"
    assert (status.tasks["done"], status.tasks["failed"]) == (3, 3)
    assert status.errors == [{"type": "ValueError", "count": 3, "first_tasks": [1, 3, 5],
                              "message": "odd 1"}]


def test_a_map_in_progress(array_backend, work_root, tmp_path):
    gate = tmp_path / "gate"
    with array_backend.make_pool() as pool:
        result = pool.starmap_async(gated, [(x, str(gate)) for x in range(4)], chunksize=1)
        try:
            status = status_when(the_map_dir(work_root),
                                 lambda s: s.tasks["done"] == 2 and s.tasks["running"],
                                 "2 tasks done and one running")
            assert status.state == "running" and status.ended is None
            assert status.client["running"] is True
            assert status.tasks["total"] == 4 and status.tasks["failed"] == 0
            assert status.tasks["running"] + status.tasks["queued"] == 2
            running = status.workers["running"]
            assert running >= 1 and sum(status.workers["running_hosts"].values()) == running
            assert len(status.unfinished_workers) >= running
        finally:
            gate.touch()
        assert result.get(timeout=120) == [0, 1, 2, 3]


def test_no_map_is_a_no_map_error(tmp_path, monkeypatch):
    with pytest.raises(NoMapError, match="no work_dir"):
        read_status(tmp_path / "nope")
    with pytest.raises(NoMapError, match="no poolparty map in"):
        read_status(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NoMapError, match="is not a directory"):
        read_status(tmp_path / "a_file")
    monkeypatch.chdir(tmp_path)  # no path: ./.poolparty, which is not there
    with pytest.raises(poolparty.InvalidInputError, match="keep_work_dir"):
        read_status()


def test_every_kind_of_event_has_a_handler():
    assert set(MapView.handlers) == set(KINDS)


def test_a_workers_start_and_finish_are_found_in_its_log_by_their_marks(tmp_path):
    log = tmp_path / "job.log"
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    events = WorkerEvents(0, descriptor)
    events.started({})
    assert STARTED in log.read_bytes() and FINISHED not in log.read_bytes()
    events.finished(ok=1, failed=0)
    os.close(descriptor)
    assert FINISHED in log.read_bytes()
