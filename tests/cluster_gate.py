"""Which scheduler daemons a test may stop, restart or reconfigure: only the test cluster's.

Tests marked ``disruptive`` (tests/test_real_faults.py: slurmd, slurmctld and sge_execd
stopped and restarted, all.q disabled) disturb everybody using the scheduler. They run
only when both hold:

* ``POOLPARTY_DISRUPTIVE_TESTS=1`` (.ci/run sets it): nobody gets them by just running
  the test command;
* every daemon of that scheduler is the very process scripts/test_cluster.sh started.
  The script writes a marker for each daemon it starts, ``MARKER_DIR/<daemon>.started``
  (``pid=``, ``start_time=`` from /proc, ``pidfile=``); a daemon counts as the script's
  only while its pid file names that pid and that process started at that time (a
  reused pid does not). A site's own SLURM or SGE on the same machine has no marker.

A test that restarts a daemon records the new process (:func:`record_started`): it
replaced the script's daemon by the same daemon.

Otherwise the test skips and says how to enable it; under POOLPARTY_REQUIRE_SCHEDULERS
(CI) an enabled test fails instead of skipping, so CI never silently skips it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: where scripts/test_cluster.sh records the daemons it started (MARKER_DIR in the script)
MARKER_DIR = Path("/var/lib/poolparty-test-cluster")
#: the daemons a disruptive test of each scheduler may touch: all must be the script's
DAEMONS = {"slurm": ("slurmctld", "slurmd"), "sge": ("sge_qmaster", "sge_execd")}
ENABLE_VARIABLE = "POOLPARTY_DISRUPTIVE_TESTS"
HOW_TO_ENABLE = ("to run them: sudo bash scripts/test_cluster.sh all, then (as root) "
                 f"{ENABLE_VARIABLE}=1 python -m pytest -m disruptive")


@dataclass(frozen=True)
class StartedDaemon:
    """One daemon as scripts/test_cluster.sh recorded it."""

    name: str
    pid: int
    start_time: str
    pidfile: Path


def marker_path(name: str, marker_dir: Path = MARKER_DIR) -> Path:
    return marker_dir / f"{name}.started"


def read_marker(name: str, marker_dir: Path = MARKER_DIR) -> StartedDaemon | None:
    """The recorded daemon ``name``, or None when there is no (readable) marker."""
    try:
        text = marker_path(name, marker_dir).read_text()
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return StartedDaemon(name, int(fields["pid"]), fields["start_time"],
                             Path(fields["pidfile"]))
    except (KeyError, ValueError):
        return None


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, /proc/PID/stat field 22):
    with the pid, it names one process, never a later one that got the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces
    return stat.rsplit(")", 1)[1].split()[19]


def pid_in(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def why_not_started_by_script(names: Iterable[str], marker_dir: Path = MARKER_DIR) -> str | None:
    """Why one of these daemons is not (or no longer) the one the script started; None
    when all are."""
    for name in names:
        started = read_marker(name, marker_dir)
        if started is None:
            return (f"{name} was not started by scripts/test_cluster.sh "
                    f"(no {marker_path(name, marker_dir)})")
        live = pid_in(started.pidfile)
        if live != started.pid:
            return (f"{name}'s pid file {started.pidfile} names pid {live}, not pid "
                    f"{started.pid} that scripts/test_cluster.sh started")
        if process_start_time(live) != started.start_time:
            return (f"{name} (pid {live}) is not the process scripts/test_cluster.sh "
                    f"started (it ended; the pid is another process's now)")
    return None


def record_started(name: str, marker_dir: Path = MARKER_DIR) -> None:
    """After a test restarted the script's daemon ``name``: the new process (in the
    same pid file) is the script's daemon from now on."""
    started = read_marker(name, marker_dir)
    if started is None:
        raise RuntimeError(f"no marker for {name} in {marker_dir}: it is not the test cluster's")
    pid = pid_in(started.pidfile)
    start_time = process_start_time(pid) if pid is not None else None
    if start_time is None:
        raise RuntimeError(f"{name} does not run (pid file {started.pidfile})")
    path = marker_path(name, marker_dir)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(f"pid={pid}\nstart_time={start_time}\npidfile={started.pidfile}\n")
    temporary.replace(path)


def verdict(scheduler: str, environ: Mapping[str, str], euid: int,
            marker_dir: Path = MARKER_DIR) -> tuple[str, str] | None:
    """None when a disruptive test of ``scheduler`` may run here, else ``("skip" or
    "fail", why)``."""
    what = f"stops or reconfigures the {scheduler} daemons"
    if environ.get(ENABLE_VARIABLE) != "1":
        return "skip", f"{what}: runs only when {ENABLE_VARIABLE}=1; {HOW_TO_ENABLE}"
    required = scheduler in environ.get("POOLPARTY_REQUIRE_SCHEDULERS", "").split(",")
    outcome = "fail" if required else "skip"
    if euid != 0:
        return outcome, f"{what}: needs root; {HOW_TO_ENABLE}"
    reason = why_not_started_by_script(DAEMONS[scheduler], marker_dir)
    if reason is not None:
        return outcome, (f"{what}, and touches only daemons scripts/test_cluster.sh started: "
                         f"{reason}; {HOW_TO_ENABLE}")
    return None
