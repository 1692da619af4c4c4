"""``poolparty doctor`` on the real test SLURM and SGE, run as a user runs it (the command
in a subprocess): a healthy cluster, a module the node's python lacks, and a work_dir the
node can't see (the client in a mount namespace of its own, with a tmpfs over the
work_dir's parent: the jobs, started by the scheduler's daemons, see the machine's own
directory there, which is empty)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_scheduler

#: the real backends, each with the scheduler it needs
BACKENDS = [pytest.param("slurm-array", "slurm", marks=pytest.mark.real_slurm, id="slurm"),
            pytest.param("sge", "sge", marks=pytest.mark.real_sge, id="sge")]


def doctor(*arguments: str, namespace_tmpfs: Path | None = None) -> tuple[int, dict]:
    """The command's exit code and its --json report."""
    argv = [sys.executable, "-m", "poolparty.cli", "doctor", "--json", *arguments]
    if namespace_tmpfs is not None:
        script = f"mount -t tmpfs tmpfs {namespace_tmpfs} && exec \"$@\""
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    report = json.loads(done.stdout)
    return done.returncode, {check["name"]: check for check in report["checks"]}


@pytest.mark.parametrize(("backend", "scheduler"), BACKENDS)
def test_a_healthy_cluster_passes_but_a_module_the_node_lacks(backend, scheduler, tmp_path):
    require_scheduler(scheduler)
    code, checks = doctor("--backend", backend, "--import", "json",
                          "--import", "no_such_module_xyz", "--work-dir", str(tmp_path))
    assert code == 1
    assert checks["import no_such_module_xyz"]["ok"] is False
    assert "No module named" in checks["import no_such_module_xyz"]["detail"]
    passed = ["scheduler", "limits", "job", "python", "packages", "import json", "work_dir",
              "cancel"]
    assert {name: checks[name]["ok"] for name in passed} == dict.fromkeys(passed, True)
    assert ("MaxArraySize" if scheduler == "slurm" else "max_aj_tasks") in \
        checks["limits"]["detail"]
    assert os.uname().nodename in checks["job"]["detail"]
    assert list(tmp_path.iterdir()) == []  # the doctor's directory is gone


@pytest.mark.parametrize(("backend", "scheduler"), BACKENDS)
def test_a_work_dir_the_node_cannot_see_fails_naming_the_fix(backend, scheduler, tmp_path):
    require_scheduler(scheduler)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare, to hide the work_dir from the jobs")
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    code, checks = doctor("--backend", backend, "--work-dir", str(hidden / "wd"),
                          namespace_tmpfs=hidden)
    assert code == 1
    failed = [check for check in checks.values() if check["ok"] is False]
    assert len(failed) == 1, checks
    # SLURM drops a job whose log can't be opened; SGE holds it in its error state
    assert "work_dir" in failed[0]["fix"]
    assert list(hidden.iterdir()) == []  # nothing reached the machine's own directory
