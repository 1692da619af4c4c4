"""The test command is safe on a shared machine: no test stops, restarts or reconfigures a
scheduler unless enabled, and then only the daemons scripts/test_cluster.sh started.

The gate (tests/cluster_gate.py) is tested on marker files and pid files in tmp_path and
on ``sleep`` processes standing in for the daemons: never on the real ones.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cluster_gate
import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ENABLED = {cluster_gate.ENABLE_VARIABLE: "1"}
CI = {**ENABLED, "POOLPARTY_REQUIRE_SCHEDULERS": "slurm,sge"}


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch) -> Iterator[subprocess.Popen]:
    """A ``sleep`` standing in for slurm's only daemon, started by the "script": its pid
    file and its marker in tmp_path."""
    monkeypatch.setitem(cluster_gate.DAEMONS, "slurm", ("sleep",))
    process = start_sleep(tmp_path / "sleep.pid")
    write_marker(tmp_path / "markers", "sleep", process.pid, tmp_path / "sleep.pid")
    yield process
    process.kill()
    process.wait()


def start_sleep(pidfile: Path) -> subprocess.Popen:
    process = subprocess.Popen(["sleep", "300"])
    pidfile.write_text(f"{process.pid}\n")
    return process


def write_marker(marker_dir: Path, name: str, pid: int, pidfile: Path,
                 start_time: str | None = None) -> None:
    """What scripts/test_cluster.sh writes for a daemon it started."""
    marker_dir.mkdir(exist_ok=True)
    start_time = start_time or cluster_gate.process_start_time(pid)
    cluster_gate.marker_path(name, marker_dir).write_text(
        f"pid={pid}\nstart_time={start_time}\npidfile={pidfile}\n")


def verdict(tmp_path: Path, environ: dict, euid: int = 0):
    return cluster_gate.verdict("slurm", environ, euid, tmp_path / "markers")


def test_runs_when_enabled_on_the_daemons_the_script_started(daemon, tmp_path):
    assert verdict(tmp_path, ENABLED) is None
    assert verdict(tmp_path, CI) is None


@pytest.mark.parametrize("environ", [{}, {"POOLPARTY_REQUIRE_SCHEDULERS": "slurm,sge"},
                                     {cluster_gate.ENABLE_VARIABLE: "0"}])
def test_skips_saying_how_to_enable_unless_enabled_even_on_the_scripts_daemons(
        daemon, tmp_path, environ):
    outcome, why = verdict(tmp_path, environ)
    assert outcome == "skip"
    assert "POOLPARTY_DISRUPTIVE_TESTS=1" in why
    assert "sudo bash scripts/test_cluster.sh all" in why
    assert "python -m pytest -m disruptive" in why


def test_daemons_without_a_marker_are_not_touched_skip_or_fail_in_ci(daemon, tmp_path):
    cluster_gate.marker_path("sleep", tmp_path / "markers").unlink()
    outcome, why = verdict(tmp_path, ENABLED)
    assert outcome == "skip"
    assert "sleep was not started by scripts/test_cluster.sh" in why
    assert verdict(tmp_path, CI)[0] == "fail"


def test_a_daemon_restarted_by_someone_else_is_not_the_scripts(daemon, tmp_path):
    """Someone restarted it (another process in the pid file): not the script's any more."""
    other = start_sleep(tmp_path / "sleep.pid")
    try:
        outcome, why = verdict(tmp_path, ENABLED)
        assert outcome == "skip"
        assert f"names pid {other.pid}, not pid {daemon.pid}" in why
    finally:
        other.kill()
        other.wait()


def test_a_reused_pid_is_not_the_scripts_daemon(daemon, tmp_path):
    """The pid matches but the process started at another time: the script's daemon
    ended and an unrelated process got its pid."""
    write_marker(tmp_path / "markers", "sleep", daemon.pid, tmp_path / "sleep.pid",
                 start_time="1")
    outcome, why = verdict(tmp_path, ENABLED)
    assert outcome == "skip"
    assert "is not the process scripts/test_cluster.sh started" in why


def test_a_dead_daemon_is_not_touched(daemon, tmp_path):
    daemon.kill()
    daemon.wait()
    assert verdict(tmp_path, ENABLED)[0] == "skip"
    assert verdict(tmp_path, CI)[0] == "fail"


def test_needs_root(daemon, tmp_path):
    outcome, why = verdict(tmp_path, ENABLED, euid=1000)
    assert outcome == "skip"
    assert "needs root" in why
    assert verdict(tmp_path, CI, euid=1000)[0] == "fail"


def test_a_test_that_restarted_the_scripts_daemon_records_the_new_one(daemon, tmp_path):
    daemon.kill()
    daemon.wait()
    restarted = start_sleep(tmp_path / "sleep.pid")
    try:
        assert verdict(tmp_path, ENABLED) is not None
        cluster_gate.record_started("sleep", tmp_path / "markers")
        assert verdict(tmp_path, ENABLED) is None
        assert cluster_gate.read_marker("sleep", tmp_path / "markers").pid == restarted.pid
    finally:
        restarted.kill()
        restarted.wait()


def test_record_started_refuses_a_daemon_the_script_never_started(tmp_path):
    with pytest.raises(RuntimeError, match="not the test cluster's"):
        cluster_gate.record_started("slurmctld", tmp_path)


# ---------------------------------------------------------------- the suite itself
#: what a test does to a scheduler that disturbs others using it
DISRUPTIVE_CALLS = re.compile(
    r"stop_daemon\(|start_daemon\(|restore_slurm\(|restore_sge_execd\(|_pidfile\(\)|"
    r"EXECD_PIDFILE|gridengine-(exec|master)|\"qmod\"|\"qconf\", \"-[kmMaAdD]|"
    r"\"scontrol\", \"(update|reconfigure|setdebug|shutdown|takeover)|"
    r"os\.kill\(pid|pkill|killall|systemctl")


def scheduler_tests() -> Iterator[tuple[str, str, ast.FunctionDef]]:
    for module in sorted(TESTS.glob("test_*.py")):
        if module.name == Path(__file__).name:
            continue
        source = module.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                yield module.name, ast.get_source_segment(source, node), node


def is_marked_disruptive(node: ast.FunctionDef) -> bool:
    return any("pytest.mark.disruptive(" in ast.unparse(d) or ast.unparse(d).startswith(
        "disruptive(") for d in node.decorator_list)


def test_every_test_that_stops_restarts_or_reconfigures_a_scheduler_is_marked_disruptive():
    unmarked = [f"{module}::{node.name}" for module, source, node in scheduler_tests()
                if DISRUPTIVE_CALLS.search(source) and not is_marked_disruptive(node)]
    assert not unmarked


def test_the_disruptive_tests_are_found_where_they_are():
    """The check above sees the tests that stop daemons (it would pass on no test)."""
    marked = {node.name for _, _, node in scheduler_tests() if is_marked_disruptive(node)}
    assert "test_slurm_map_survives_slurmctld_killed_and_restarted" in marked
    assert "test_sge_map_survives_execd_stopped_and_restarted" in marked


def test_the_test_command_skips_them_saying_how_to_enable(tmp_path):
    """What ``python -m pytest`` does with them here, without POOLPARTY_DISRUPTIVE_TESTS:
    every disruptive test skips, whatever runs on this machine."""
    env = {k: v for k, v in os.environ.items() if k != cluster_gate.ENABLE_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "disruptive", "-rs", "-q", "-p", "no:cacheprovider",
         str(TESTS / "test_real_faults.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    # (in two xdist processes the deselected ones are not counted in the summary)
    assert re.fullmatch(r"=* ?\d+ skipped(, \d+ deselected)? in .*", summary), summary
    assert "runs only when POOLPARTY_DISRUPTIVE_TESTS=1" in done.stdout


def test_ci_enables_them():
    assert f"export {cluster_gate.ENABLE_VARIABLE}=1" in (ROOT / ".ci/run").read_text()


def test_the_script_records_what_it_started_where_the_gate_looks():
    script = (ROOT / "scripts/test_cluster.sh").read_text()
    assert f"MARKER_DIR={cluster_gate.MARKER_DIR}\n" in script
    for name in (*cluster_gate.DAEMONS["slurm"], *cluster_gate.DAEMONS["sge"]):
        assert re.search(rf"mark_started {name} |started\+=\({name}\)", script), name


def script_functions(*names: str) -> str:
    """These shell functions of scripts/test_cluster.sh, to run them on their own."""
    script = (ROOT / "scripts/test_cluster.sh").read_text()
    return "\n".join(re.search(rf"^{name}\(\) {{.*?^}}$", script, re.S | re.M).group(0)
                     for name in names)


def run_script_function(call: str, marker_dir: Path) -> subprocess.CompletedProcess:
    code = "\n".join([
        "set -euo pipefail",
        'log() { echo "$*"; }', 'warn() { echo "WARNING: $*" >&2; }',
        'die() { echo "ERROR: $*" >&2; exit 1; }',
        f"MARKER_DIR={marker_dir}",
        script_functions("pid_alive", "proc_start_time", "mark_started", "check_marker"),
        call])
    return subprocess.run(["bash", "-c", code], capture_output=True, text=True, timeout=60)


def test_the_scripts_record_of_a_daemon_it_started_opens_the_gate(daemon, tmp_path):
    markers = tmp_path / "script-markers"
    done = run_script_function(f"mark_started sleep {tmp_path / 'sleep.pid'}", markers)
    assert done.returncode == 0, done.stderr
    assert cluster_gate.verdict("slurm", ENABLED, 0, markers) is None


def test_rerunning_the_script_keeps_the_record_of_its_own_daemon_only(daemon, tmp_path):
    """Run again while the daemon runs: the record stays. A daemon found running that is
    another process (somebody else started it) loses the record and is left alone."""
    markers = tmp_path / "script-markers"
    pidfile = tmp_path / "sleep.pid"
    run_script_function(f"mark_started sleep {pidfile}", markers)
    done = run_script_function(f"check_marker sleep {pidfile}", markers)
    assert (done.returncode, done.stderr) == (0, "")
    assert cluster_gate.verdict("slurm", ENABLED, 0, markers) is None

    other = start_sleep(pidfile)
    try:
        done = run_script_function(f"check_marker sleep {pidfile}", markers)
        assert done.returncode == 0, done.stderr
        assert "has no record" in done.stderr
        assert not cluster_gate.marker_path("sleep", markers).exists()
        assert cluster_gate.verdict("slurm", ENABLED, 0, markers)[0] == "skip"
    finally:
        other.kill()
        other.wait()


def test_the_variable_that_enables_them_is_no_pool_setting(monkeypatch):
    """Set for a whole test run (CI), it must not make every pool fail as an unknown
    POOLPARTY_* setting would, here or in the CLI's subprocesses."""
    from poolparty import config

    monkeypatch.setenv(cluster_gate.ENABLE_VARIABLE, "1")
    config.resolve()
    monkeypatch.setenv("POOLPARTY_NO_SUCH_SETTING", "1")
    with pytest.raises(config.ConfigError):
        config.resolve()
