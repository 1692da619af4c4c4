"""A map's report (poolparty.report) checked against maps whose work the test controls:
tasks that sleep or spin known times, allocate known memory, raise, or lose their
worker. Numbers are checked from below (a task that sleeps 0.3 s can't take less), never
against a hoped-for upper time. The real SLURM: tests/test_real_report.py; the page in a
browser: tests/test_report_browser.py."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from conftest import made_backend

import poolparty
from poolparty.map_status import NoMapError
from poolparty.report import KEPT_REPORTS, REPORTS_DIR, map_report, memory_hint, nice_size


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def spin_for(cpu_seconds: float) -> float:
    """Burn this much CPU time (whatever else the machine does)."""
    start = time.process_time()
    while time.process_time() - start < cpu_seconds:
        pass
    return cpu_seconds


def hold_memory(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touched: resident, not only reserved
    return len(block)


def raise_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


@pytest.fixture
def local(work_root, tmp_path):
    with made_backend("local", work_root, tmp_path) as backend:
        yield backend


def test_the_timeline_holds_every_claim_and_task_as_they_ran(local, work_root):
    sleeps = [0.3, 0.1, 0.3, 0.1, 0.3, 0.1]
    with local.make_pool(processes=2) as pool:
        assert pool.map(sleep_for, sleeps, chunksize=2) == sleeps
        report = pool.report()
    assert report.state == "finished" and report.num_tasks == 6
    assert sorted((c.first, c.tasks) for c in report.claims) == [(0, 2), (2, 2), (4, 2)]
    assert {c.worker for c in report.claims} <= {w.worker for w in report.workers}
    assert [t.index for t in report.tasks] == list(range(6))
    for task in report.tasks:
        assert task.seconds >= sleeps[task.index] and task.ok
        assert task.cpu < task.seconds  # sleeping burns (almost) no CPU
    assert {t.index for t in report.slowest[:3]} == {0, 2, 4}
    # two workers ran three claims of 0.4 s: one ran two in a row
    assert report.wall_seconds >= 0.8
    assert report.core_hours_reserved * 3600 >= sum(sleeps)
    assert report.cpu_efficiency < 0.5
    assert report.failures == {} and report.task_errors == {}
    assert all(w.ending == "finished" and w.started is not None for w in report.workers
               if w.claims)


def test_cpu_time_and_efficiency_count_the_tasks_cpu(local):
    with local.make_pool(processes=1) as pool:
        pool.map(spin_for, [0.3, 0.3], chunksize=1)
        report = pool.report()
    assert all(task.cpu >= 0.3 for task in report.tasks)
    assert report.core_hours_used * 3600 >= 0.6
    assert report.core_hours_used <= report.core_hours_reserved


def test_tasks_that_raised_are_counted_by_type(local):
    with local.make_pool(processes=1) as pool:
        with pytest.raises(ValueError):
            pool.map(raise_on_three, range(6), chunksize=6)
        report = pool.report()
    assert report.task_errors == {"ValueError": 1}
    assert [t.ok for t in report.tasks] == [True, True, True, False, True, True]
    assert report.claims[0].failed == 1


def test_memory_peak_and_a_hint_when_far_more_was_asked(work_root, tmp_path):
    with made_backend("dummy-slurm-array", work_root, tmp_path) as slurm:
        with slurm.make_pool(processes=1, memory="4G") as pool:
            pool.map(hold_memory, [200], chunksize=1)
            report = pool.report()
    assert report.memory_asked == "4G"
    assert report.peak_memory >= 200 * 2**20
    assert report.memory_hint.startswith("asked 4G, peak ")
    assert report.memory_hint.endswith(" would do")
    assert "memory peak" in report.text() and "would do" in report.text()


def test_memory_hints():
    assert memory_hint(8 * 2**30, "8G", int(1.2 * 2**30)) == "asked 8G, peak 1.2G: 2.0G would do"
    assert memory_hint(2 * 2**30, "2G", int(1.2 * 2**30)) is None  # about right: no hint
    assert memory_hint(2**30, "1G", 3 * 2**30).startswith("asked 1G, peak 3.0G")  # too little
    assert memory_hint(None, None, 2**30) is None
    assert nice_size(100 * 2**20) == 256 * 2**20 and nice_size(5 * 2**30) == 6 * 2**30


def test_workers_lost_are_counted_by_how_they_ended(work_root, tmp_path):
    with made_backend("dummy-slurm-array", work_root, tmp_path) as slurm:
        slurm.queue.inject(kill_after=(0.5, 1))
        with slurm.make_pool(processes=1, max_num_resubmissions=2) as pool:
            assert pool.map(sleep_for, [1.0, 0.1], chunksize=1) == [1.0, 0.1]
            report = pool.report()
    assert sum(report.failures.values()) == 1
    lost = [w for w in report.workers if w.ending not in ("finished", "never started")]
    assert len(lost) == 1 and lost[0].ending in report.failures
    assert sorted(t.index for t in report.tasks) == [0, 1]  # the rerun's, not the lost one's


def test_a_removed_maps_events_are_kept_for_its_report_and_only_the_last_ten(local,
                                                                             work_root,
                                                                             run_cli):
    with local.make_pool(processes=1) as pool:
        for start in range(KEPT_REPORTS + 2):
            pool.map(abs, range(start, start + 3))
        last = pool.report()
    saved = sorted((work_root / REPORTS_DIR).iterdir())
    assert len(saved) == KEPT_REPORTS
    assert all(path.stat().st_mode & 0o077 == 0 for path in saved)  # private
    assert f"{last.map_id}.jsonl.gz" in [path.name for path in saved]
    assert gzip.decompress(saved[0].read_bytes()).startswith(b'{"event": "map_started"')
    done = run_cli("report", work_root, "--json")
    assert done.code == 0
    data = json.loads(done.out)
    assert data["map_id"] == last.map_id and len(data["claims"]) == len(last.claims)
    assert poolparty.map_report(work_root).map_id == last.map_id


def test_the_command_prints_the_report_and_writes_the_page(local, work_root, run_cli, tmp_path):
    local.make_pool(processes=2, keep_work_dir=True).map(sleep_for, [0.1] * 4, chunksize=1)
    page = tmp_path / "report.html"
    done = run_cli("report", work_root, "--html", page)
    assert done.code == 0
    assert done.out.startswith("map map-") and "4 claim(s)" in done.out
    assert "core-seconds" in done.out and "queue wait" in done.out  # a short map
    assert page.read_text().count("<rect class=\"claim ") == 4
    assert page.stat().st_mode & 0o077 == 0


def test_no_map_is_a_clear_error(run_cli, tmp_path):
    done = run_cli("report", tmp_path)
    assert done.code == 2 and "no poolparty map" in done.err
    with pytest.raises(NoMapError, match="no map yet"):
        poolparty.Pool(backend="local", work_dir=tmp_path).report()


def test_a_report_renders_itself_in_a_notebook(local):
    with local.make_pool(processes=1) as pool:
        pool.map(abs, range(3))
        report = pool.report()
    html = report._repr_html_()
    assert html.startswith("<div") and html.count("<rect class=\"claim ") == len(report.claims)
    assert map_report is not None
