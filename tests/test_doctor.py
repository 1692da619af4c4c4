"""``poolparty doctor`` on local processes and on the dummy schedulers (on PATH, as on a
login node): what a user reads on a cluster where maps work, and where one thing a map
needs is missing. The real SLURM and SGE: tests/test_real_doctor.py."""

from __future__ import annotations

import json

import pytest
from cli_helpers import dummy_scheduler_on_path
from conftest import DUMMY_ONLY_BACKENDS

#: each backend checked on its dummy scheduler, and the dummy that plays it
DUMMIES = [("slurm-array", None), ("slurm", None), ("sge", None),
           *((name, name) for name in DUMMY_ONLY_BACKENDS)]


def checks_of(output: str) -> dict[str, dict]:
    report = json.loads(output)
    return {check["name"]: check for check in report["checks"]} | {"ok": report["ok"]}


def test_on_local_processes_every_check_passes(run_cli, tmp_path):
    done = run_cli("doctor", "--backend", "local", "--import", "json",
                   "--work-dir", tmp_path / "wd")
    assert done.code == 0, done.out
    lines = done.out.splitlines()
    assert [line.split()[0] for line in lines[:-1] if not line.startswith(" ")] == ["ok"] * 8
    assert lines[-1] == "maps can run here"
    assert list((tmp_path / "wd").iterdir()) == []  # its own directory is gone


def test_a_module_the_node_lacks_fails_with_the_fix(run_cli, tmp_path):
    done = run_cli("doctor", "--backend", "local", "--import", "no_such_module_xyz",
                   "--import", "json", "--json", "--work-dir", tmp_path / "wd")
    assert done.code == 1
    checks = checks_of(done.out)
    assert checks["ok"] is False
    missing = checks["import no_such_module_xyz"]
    assert missing["ok"] is False
    assert "No module named 'no_such_module_xyz'" in missing["detail"]
    assert "--python-path" in missing["fix"]
    assert checks["import json"]["ok"] is True
    assert checks["cancel"]["ok"] is True  # the rest is still checked


def test_a_setting_the_pool_refuses_is_reported_not_raised(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("POOLPARTY_PYTHON_PATH", str(tmp_path / "no-python"))
    done = run_cli("doctor", "--backend", "local", "--work-dir", tmp_path / "wd")
    assert done.code == 1
    assert done.out.startswith("FAIL  settings")
    assert "no-python" in done.out


def test_a_missing_scheduler_says_so(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    done = run_cli("doctor", "--backend", "slurm-array", "--work-dir", tmp_path / "wd")
    assert done.code == 1
    assert done.out.startswith("FAIL  scheduler") and "sbatch" in done.out


@pytest.mark.parametrize(("backend", "dummy"), DUMMIES, ids=[name for name, _ in DUMMIES])
def test_on_each_dummy_scheduler_the_job_runs_and_is_cancelled(backend, dummy, run_cli,
                                                               tmp_path, monkeypatch):
    with dummy_scheduler_on_path(tmp_path, monkeypatch, dummy) as queue:
        done = run_cli("doctor", "--backend", backend, "--import", "json", "--json",
                       "--work-dir", tmp_path / "wd")
        assert queue.jobs() == []  # the cancelled job left the queue
    checks = checks_of(done.out)
    assert done.code == 0, done.out
    assert checks["job"]["ok"] and checks["work_dir"]["ok"]
    assert checks["limits"]["ok"] and checks["limits"]["detail"]
    cancel = checks["cancel"]
    assert cancel["ok"] is True and "left the queue" in cancel["detail"]
    assert "running" in cancel["detail"] or "pending" in cancel["detail"]
