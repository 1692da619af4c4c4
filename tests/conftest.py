"""Fixtures: one test suite over every backend.

``backend`` is parametrized over local processes, the dummy SLURM (fast, can inject
faults) and the real SLURM of this machine. Real-scheduler tests skip with a message
when no scheduler runs here, unless POOLPARTY_REQUIRE_SCHEDULERS names it (CI sets it):
then a missing scheduler is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import poolparty
from poolparty import config
from poolparty.backends import REGISTRY
from poolparty.report import REPORTS_DIR

SLURM_COMMANDS = {"submit": "sbatch", "query": "squeue", "cancel": "scancel"}
SGE_COMMANDS = {"submit": "qsub", "query": "qstat", "cancel": "qdel"}
#: each backend's commands by their role (SLURM's for the others)
COMMANDS_OF_BACKEND = {
    "sge": SGE_COMMANDS,
    "pbs": {"submit": "qsub", "query": "qstat", "cancel": "qdel"},
    "lsf": {"submit": "bsub", "query": "bjobs", "cancel": "bkill"},
}
#: the dummy scheduler whose commands a backend calls (DummyQueue.commands), where its
#: commands' names alone don't say (PBS's qsub is not SGE's)
DUMMY_OF_BACKEND = {"pbs": "pbs", "lsf": "lsf"}
HOW_TO_ENABLE = "start one with: sudo bash scripts/test_cluster.sh {name}"


def scheduler_running(name: str) -> bool:
    probe = {"slurm": ["sinfo", "-h", "-o", "%T"], "sge": ["qstat", "-help"]}[name]
    if shutil.which(probe[0]) is None:
        return False
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    if name == "slurm":
        return done.returncode == 0 and any(
            s in done.stdout for s in ("idle", "mix", "alloc", "completing")
        )
    return done.returncode == 0 or "SGE" in done.stdout


def require_scheduler(name: str) -> None:
    """Skip (on a user's machine) or fail (in CI) when ``name`` is not running here.

    A scheduler restarting (the fault tests restart daemons) gets half a minute."""
    deadline = time.monotonic() + (30 if shutil.which("sinfo" if name == "slurm" else "qstat")
                                   else 0)
    while not scheduler_running(name):
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    else:
        return
    required = os.environ.get("POOLPARTY_REQUIRE_SCHEDULERS", "").split(",")
    message = f"no running {name} on this machine; " + HOW_TO_ENABLE.format(name=name)
    if name in required:
        pytest.fail(message + " (required here by POOLPARTY_REQUIRE_SCHEDULERS)")
    pytest.skip(message)


#: minutes after which the tests not yet started fail at once, so that a suite held up
#: (a cluster whose CPUs someone else holds) still reports before CI's limit ends it
TEST_BUDGET_MINUTES = float(os.environ.get("POOLPARTY_TEST_BUDGET_MINUTES", "50"))
_session_started = time.monotonic()


def over_budget() -> str | None:
    minutes = (time.monotonic() - _session_started) / 60
    if minutes <= TEST_BUDGET_MINUTES:
        return None
    return (f"not run: the tests have taken {minutes:.0f} min, more than their budget of "
            f"{TEST_BUDGET_MINUTES:.0f} (POOLPARTY_TEST_BUDGET_MINUTES); look at the slowest "
            "tests and failures above")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Past the budget, fail at once. A test marked ``disruptive("slurm")`` stops,
    restarts or reconfigures daemons that others may be using: it runs only where
    tests/cluster_gate.py allows it (enabled, and only on daemons scripts/test_cluster.sh
    started), before any fixture touches them."""
    late = over_budget()
    if late is not None:
        pytest.fail(late)
    mark = item.get_closest_marker("disruptive")
    if mark is None:
        return
    import cluster_gate

    found = cluster_gate.verdict(mark.args[0], os.environ, os.geteuid())
    if found is not None:
        outcome, why = found
        if outcome == "fail":
            pytest.fail(why + " (required here by POOLPARTY_REQUIRE_SCHEDULERS)")
        pytest.skip(why)


@dataclass
class Backend:
    """A way to build pools on one backend, and to look at its queue."""

    name: str
    pool_options: Callable[..., dict]
    queued_jobs: Callable[[], list[str]] = field(default=list)
    running_count: Callable[[], int] = field(default=lambda: 0)
    kill_running: Callable[[int], list[str]] | None = None
    queue: Any = None
    #: the scheduler's command for each role, to inject faults and count calls
    command: dict[str, str] = field(default_factory=lambda: dict(SLURM_COMMANDS))

    def make_pool(self, **options: Any) -> poolparty.Pool:
        return poolparty.Pool(**self.pool_options(**options))

    def make_executor(self, **options: Any) -> poolparty.Executor:
        return poolparty.Executor(**self.pool_options(**options))


@pytest.fixture(autouse=True)
def no_user_configuration(tmp_path_factory, monkeypatch) -> None:
    """Pools read ~/.config/poolparty and POOLPARTY_* settings: the tests must not
    depend on the configuration of whoever runs them."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg_config")))
    for name in list(os.environ):
        if name.startswith("POOLPARTY_") and name not in config.NON_SETTING_VARIABLES:
            monkeypatch.delenv(name)
    # Workers leave with their map, as the tests other than test_warm_workers.py assert
    # (files and jobs left behind, jobs cancelled); those set idle_timeout themselves.
    monkeypatch.setenv("POOLPARTY_IDLE_TIMEOUT", "0")


#: tests that use a real scheduler: run one after the other on one xdist worker (some
#: stop and restart the daemons, and the cluster's 8 slots are shared), while the
#: tests on local processes and dummy schedulers run beside them on the others
CLUSTER_FILES = ("test_real_", "test_allocation")
CLUSTER_MARKS = ("real_slurm", "real_sge", "disruptive")


def uses_a_real_scheduler(item: pytest.Item) -> bool:
    return (item.path.name.startswith(CLUSTER_FILES)
            or any(item.get_closest_marker(mark) for mark in CLUSTER_MARKS)
            or re.search(r"[\[-]real-", item.nodeid) is not None)


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the group marks
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if uses_a_real_scheduler(item):
            item.add_marker(pytest.mark.xdist_group("cluster"))


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = 0.05) -> object:
    """Poll ``condition`` until it returns something true, and return that; fail the
    test, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def poolparty_context(error: BaseException) -> str:
    """What poolparty added to an exception it let through with its own type (a pickling
    error): its notes (Python >= 3.11), or else the cause it attached."""
    return "\n".join(getattr(error, "__notes__", None) or [str(error.__cause__)])


def the_map_dir(work_root: Path, timeout: float = 60, holding: str | None = None) -> Path:
    """The one map's directory under work_root, once it exists (and holds ``holding``):
    not the short-lived hidden directory a pool makes to check that it may create
    directories in the root."""
    def found() -> Path | None:
        dirs = [p for p in work_root.glob("[!.]*") if p.is_dir() and p.name != REPORTS_DIR
                ] if work_root.exists() else []
        if len(dirs) == 1 and (holding is None or (dirs[0] / holding).exists()):
            return dirs[0]
        return None
    return wait_for(found, timeout, f"the map's directory under {work_root}")


@pytest.fixture(autouse=True)
def no_wait_for_late_results(monkeypatch) -> None:
    """A chunk lost more often than allowed fails its map at once, as the tests of the
    resubmission limit expect; test_faults.py tests the wait for a late result itself."""
    from poolparty import engine

    monkeypatch.setattr(engine, "LATE_RESULT_SECONDS", 0.0)


@pytest.fixture(autouse=True)
def quiet_poolparty_logger() -> Iterator[None]:
    """verbose=True sets the process-wide poolparty logger to INFO with a console
    handler: a test that asks for it must not make the tests after it verbose."""
    import logging

    logger = logging.getLogger("poolparty")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "pp"


def local_worker_processes() -> list[str]:
    """Worker processes of local maps still alive (children of this test process)."""
    done = subprocess.run(["ps", "-ww", "-eo", "pid,ppid,args"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines()
            if "poolparty.worker" in line and "ps -eo" not in line]


def local_backend(work_root: Path) -> Backend:
    def pool_options(**options: Any) -> dict:
        options.setdefault("polling_interval", 0.2)
        options.setdefault("work_dir", work_root)
        return dict(options, backend="local")

    def queued_jobs() -> list[str]:  # this test's workers only: others may run beside it
        return [line for line in local_worker_processes() if str(work_root) in line]

    return Backend("local", pool_options, queued_jobs, lambda: len(queued_jobs()))


def dummy_backend(backend_name: str, work_root: Path, queue_dir: Path, **queue_options) -> Backend:
    """A backend on a dummy scheduler: same code path as a cluster, runs jobs locally."""
    from poolparty.dummy_schedulers import DummyQueue

    queue = DummyQueue(queue_dir, **queue_options)

    def pool_options(**options: Any) -> dict:
        options.setdefault("polling_interval", 0.2)
        options.setdefault("call_timeout", 10)
        options.setdefault("work_dir", work_root)
        return dict(options, backend=backend_name,
                    commands=queue.commands(DUMMY_OF_BACKEND.get(backend_name)))

    def queued_jobs() -> list[str]:
        return [job["id"] for job in queue.jobs()]

    def running_count() -> int:
        return sum(1 for job in queue.jobs() if job["state"] == "RUNNING")

    command = COMMANDS_OF_BACKEND.get(backend_name, SLURM_COMMANDS)
    return Backend(f"dummy-{backend_name}", pool_options, queued_jobs, running_count,
                   queue.kill_running, queue, dict(command))


def left_behind(work_root: Path) -> list[str]:
    """What maps left in a work_dir root, but for the saved events of the maps that
    succeeded (``reports/``: at most KEPT_REPORTS small files, for their reports)."""
    from poolparty.report import KEPT_REPORTS

    saved = work_root / REPORTS_DIR
    if saved.is_dir():
        assert len(list(saved.iterdir())) <= KEPT_REPORTS
    return sorted(path.name for path in work_root.iterdir() if path.name != REPORTS_DIR)


def job_names_under(work_root: Path) -> set[str]:
    """The job names of the maps under work_root: a test only looks at its own jobs."""
    if not work_root.exists():
        return set()
    return {f"poolparty-{path.name}" for path in work_root.iterdir()}


def squeue_jobs(names: set[str]) -> list[str]:
    """``JOBID_INDEX|STATE`` of the real SLURM jobs with one of these names."""
    done = subprocess.run(
        ["squeue", "--noheader", "--array", "--format=%i|%T|%j"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    rows = [line.split("|") for line in done.stdout.splitlines()]
    return [f"{job}|{state}" for job, state, name in rows if name in names]


def qstat_jobs(names: set[str]) -> list[str]:
    """``JOB.TASK|STATE`` of the real SGE jobs with one of these names."""
    import qstat  # the PyPI package's own reader: independent of the parser under test

    queued, pending = qstat.qstat()
    return [f"{j['JB_job_number']}.{j.get('tasks', '')}|{j['state']}"
            for j in [*queued, *pending] if j.get("JB_name") in names]


REAL_QUEUES = {  # how to list jobs, how to cancel one, how a running job looks
    "slurm": (squeue_jobs, ["scancel"], "|RUNNING"),
    "sge": (qstat_jobs, ["qdel"], "|r"),
}


def real_backend(backend_name: str, work_root: Path) -> Backend:
    scheduler = "sge" if backend_name == "sge" else "slurm"
    require_scheduler(scheduler)
    list_jobs, cancel, running_mark = REAL_QUEUES[scheduler]

    def pool_options(**options: Any) -> dict:
        options.setdefault("polling_interval", 0.5)
        options.setdefault("work_dir", work_root)
        return dict(options, backend=backend_name)

    def queued_jobs() -> list[str]:
        return list_jobs(job_names_under(work_root))

    def running() -> list[str]:
        return [line.split("|")[0] for line in queued_jobs() if line.endswith(running_mark)]

    def kill_running(count: int) -> list[str]:
        victims = running()[:count]
        if victims:
            subprocess.run([*cancel, *victims], check=True, timeout=30, capture_output=True)
        return victims

    return Backend(f"real-{backend_name}", pool_options, queued_jobs, lambda: len(running()),
                   kill_running)


#: the test allocation's name; its comment names the pytest process that made it
TEST_ALLOCATION_NAME = "pp-test-steps"
#: minutes the test allocation may live at most: ended by SLURM even when the tests that
#: made it are killed (xdist workers may end without running atexit handlers; four such
#: leftovers once filled the test node, and every real test of a CI run waited for CPUs)
TEST_ALLOCATION_MINUTES = 60


def slurm_allocation_for_tests() -> str:
    """An allocation of 2 CPUs on the test SLURM for the steps backend, made with
    ``salloc --no-shell`` at its first use and kept for the session (made again when a
    test that restarts the daemons ended it, or its time ran out); cancelled when the
    session ends (pytest_sessionfinish). Leftovers of test processes that are gone are
    cancelled first. When none can be had within a minute, every test that needs one
    fails at once with the reason, instead of each waiting for CPUs."""
    global _allocation, _allocation_refused
    if _allocation_refused is not None:
        pytest.fail(_allocation_refused)
    if _allocation is not None:
        state = subprocess.run(["squeue", "--noheader", f"--jobs={_allocation}", "--format=%T"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
        if state == "RUNNING":
            return _allocation
        subprocess.run(["scancel", _allocation], capture_output=True, timeout=30)
    cancel_leftover_test_allocations()
    done = subprocess.run(["salloc", "--no-shell", "--ntasks=2", "--immediate=60",
                           f"--time={TEST_ALLOCATION_MINUTES}",
                           f"--job-name={TEST_ALLOCATION_NAME}",
                           f"--comment=pytest-{os.uname().nodename}-{os.getpid()}"],
                          capture_output=True, text=True, timeout=120)
    if "Granted job allocation" not in done.stderr:
        queue = subprocess.run(["squeue", "--all", "--format=%i %j %T %C %R"],
                               capture_output=True, text=True, timeout=30).stdout
        _allocation_refused = (f"no allocation of 2 CPUs for the steps backend's tests within "
                               f"60 s: {done.stderr.strip()}\nthe queue:\n{queue}")
        pytest.fail(_allocation_refused)
    _allocation = done.stderr.split("Granted job allocation")[1].split()[0]
    return _allocation


_allocation: str | None = None
_allocation_refused: str | None = None


def cancel_leftover_test_allocations() -> None:
    """Cancel test allocations whose pytest process (named in their comment) is gone."""
    listed = subprocess.run(["squeue", "--noheader", f"--name={TEST_ALLOCATION_NAME}",
                             "--format=%A %k"], capture_output=True, text=True, timeout=30).stdout
    here = f"pytest-{os.uname().nodename}-"
    for line in listed.splitlines():
        job, _, comment = line.partition(" ")
        owner = comment.strip().removeprefix(here)
        if comment.startswith(here) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            subprocess.run(["scancel", job], capture_output=True, timeout=30)


def release_test_allocation() -> None:
    """Give the test allocation's CPUs back (at the session's end, or for a test that
    needs all 8); the next test of the steps backend makes another."""
    global _allocation
    if _allocation is not None:
        subprocess.run(["scancel", _allocation], capture_output=True, timeout=30)
        _allocation = None


def pytest_sessionfinish(session, exitstatus) -> None:
    release_test_allocation()


def steps_backend(work_root: Path) -> Backend:
    """Workers as job steps of an allocation (poolparty.slurm.steps), on the real SLURM."""
    require_scheduler("slurm")
    allocation = slurm_allocation_for_tests()

    def pool_options(**options: Any) -> dict:
        options.setdefault("polling_interval", 0.5)
        options.setdefault("work_dir", work_root)
        return dict(options, backend="slurm-steps", allocation=allocation)

    def queued_jobs() -> list[str]:  # this test's workers: steps named by its maps
        return steps_named(allocation, job_names_under(work_root))

    return Backend("real-slurm-steps", pool_options, queued_jobs, lambda: len(queued_jobs()))


def steps_named(allocation: str, names: set[str]) -> list[str]:
    """``JOB.STEP|NAME`` of the steps of an allocation with one of these names."""
    text = subprocess.run(["squeue", "--noheader", "--steps", f"--jobs={allocation}",
                           "--format=%i|%j"], capture_output=True, text=True,
                          timeout=30).stdout
    return [line for line in text.splitlines() if line.split("|")[-1] in names]


#: the cluster backends tested on a real scheduler (and on their dummies)
REAL_BACKENDS = ["slurm-array", "slurm", "sge"]
#: the cluster backends tested on their dummies only (no PBS or LSF can be installed here)
DUMMY_ONLY_BACKENDS = [name for name in ("pbs", "lsf") if name in REGISTRY]
CLUSTER_BACKENDS = [*REAL_BACKENDS, *DUMMY_ONLY_BACKENDS]
ALL_CLUSTER_PARAMS = [*(f"dummy-{name}" for name in CLUSTER_BACKENDS),
                      *(f"real-{name}" for name in REAL_BACKENDS)]


def make_backend(param: str, work_root: Path, tmp_path: Path) -> Backend:
    if param == "local":
        return local_backend(work_root)
    if param == "real-slurm-steps":
        return steps_backend(work_root)
    kind, name = param.split("-", 1)
    if kind == "dummy":
        return dummy_backend(name, work_root, tmp_path / "queue")
    return real_backend(name, work_root)


#: every backend on its real scheduler, each marked with the scheduler it needs
REAL_PARAMS = [
    pytest.param("real-slurm-array", marks=pytest.mark.real_slurm),
    pytest.param("real-slurm", marks=pytest.mark.real_slurm),
    pytest.param("real-sge", marks=pytest.mark.real_sge),
]


#: the backends that run maps as job arrays (or locally): for tests of what arrays do
ARRAY_BACKEND_PARAMS = ["local", "dummy-slurm-array", "dummy-sge", "real-slurm-array", "real-sge"]


@contextlib.contextmanager
def made_backend(param: str, work_root: Path, tmp_path: Path) -> Iterator[Backend]:
    """A backend for one test; a dummy queue is shut down after it."""
    made = make_backend(param, work_root, tmp_path)
    try:
        yield made
    finally:
        if made.queue is not None:
            made.queue.shutdown(timeout=30)


#: the shared suite's backends: every registered one (tests/test_registry.py checks it)
BACKEND_PARAMS = ["local", *ALL_CLUSTER_PARAMS, "real-slurm-steps"]


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request, work_root: Path, tmp_path: Path):
    """Every backend: local, and each cluster backend on its dummy and real scheduler."""
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture(params=ALL_CLUSTER_PARAMS)
def cluster_backend(request, work_root: Path, tmp_path: Path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture(params=[f"dummy-{name}" for name in CLUSTER_BACKENDS])
def dummy(request, work_root: Path, tmp_path: Path):
    """Every cluster backend on its dummy scheduler, for faults a real one can't make."""
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch, capsys):
    """The command line run in-process (see tests/cli_helpers.py)."""
    from cli_helpers import cli_runner

    return cli_runner(tmp_path, monkeypatch, capsys)


@pytest.fixture
def dummy_slurm(tmp_path: Path, monkeypatch):
    """A dummy SLURM whose commands are on PATH, as on a login node."""
    from cli_helpers import dummy_scheduler_on_path

    with dummy_scheduler_on_path(tmp_path, monkeypatch) as queue:
        yield queue


def claim_files(map_dir: Path) -> dict[str, bytes]:
    """The claim files of a map (``claims/<c>``, ``retries/<c>.<a>``, ``requeue/<c>.<a>``
    by those names; poolparty.claims), from its directories, or from logs.zip once a map
    that succeeded archived them there."""
    names = ("claims", "retries", "requeue")
    if not (map_dir / "claims").is_dir():
        with zipfile.ZipFile(map_dir / "logs.zip") as logs:
            return {name: logs.read(name) for name in logs.namelist()
                    if name.partition("/")[0] in names}
    return {f"{d}/{entry}": (map_dir / d / entry).read_bytes() for d in names
            for entry in os.listdir(map_dir / d) if not entry.startswith(".")}


def attempts_per_claim(map_dir: Path) -> Counter:
    """How often each claim (chunk) was attempted: claims/<c> is the first attempt,
    each retries/<c>.<attempt> one more."""
    counts: Counter = Counter()
    for name in claim_files(map_dir):
        directory, _, entry = name.partition("/")
        number, dot, attempt = entry.partition(".")
        if directory == "claims" and entry.isdigit():
            counts[int(entry)] += 1
        elif directory == "retries" and dot and number.isdigit() and attempt.isdigit():
            counts[int(number)] += 1
    return counts


# ---------------------------------------------------------------- two caching views
#: Required (a failure, not a skip) where one of these is set: CI.
VIEWS_REQUIRED_BY = ("CI", "POOLPARTY_REQUIRE_SCHEDULERS")
HOW_TO_ENABLE_VIEWS = ("install bindfs and fuse3 and run as root to test across two caching "
                       "views of one directory")
#: a name looked up and missed on one view stays missing there for 30 s (as on NFS)
CACHING = "entry_timeout=30,negative_timeout=30,attr_timeout=30"


def caching_views_missing() -> str | None:
    """Why two bindfs views can't be mounted here; None when they can."""
    if shutil.which("bindfs") is None or shutil.which("fusermount3") is None:
        return "bindfs or fusermount3 is not installed"
    if os.geteuid() != 0:
        return "not root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def unmount(path: Path) -> None:
    """Unmount a view; lazily if a process still uses it, so no mount outlives the test."""
    done = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True, timeout=60)
    if done.returncode != 0:
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=60)


@pytest.fixture
def two_views(tmp_path) -> Iterator[tuple[Path, Path, Path]]:
    """Two bindfs views of one backing directory, each with its own kernel caches, as
    two hosts mounting one NFS export: (the backing directory, view a, view b).
    Skipped, saying how to enable it, where bindfs can't mount; a failure instead under
    CI (CI=true, or POOLPARTY_REQUIRE_SCHEDULERS set as .ci/run sets it)."""
    why = caching_views_missing()
    if why is not None:
        message = f"{why}: {HOW_TO_ENABLE_VIEWS}"
        if any(os.environ.get(name) not in (None, "", "false") for name in VIEWS_REQUIRED_BY):
            pytest.fail(message + " (required here: CI)")
        pytest.skip(message)
    backing, views = tmp_path / "backing", (tmp_path / "a", tmp_path / "b")
    for path in (backing, *views):
        path.mkdir(mode=0o700)
    mounted = []
    try:
        for view in views:
            subprocess.run(["bindfs", "-o", CACHING, str(backing), str(view)], check=True,
                           capture_output=True, timeout=60)
            mounted.append(view)
        yield backing, *views
    finally:
        for view in mounted:
            unmount(view)
