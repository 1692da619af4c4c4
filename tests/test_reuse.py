"""Results of an earlier run are reused only when they are right, and identical maps
never interfere.

1. Fix-and-rerun: a map whose task raised keeps its results; running it again reuses
   them only when the code that would run now is the code that produced them (the
   function, and the user's own modules it may use), and says so. ``reuse_results=False``
   asks for a fresh run.
2. Identical calls, one after another or at once, from one pool or several, each get
   their own directory or a clean one: cleanup of one never removes what another uses,
   and a map that succeeded leaves nothing behind, however soon its process exits.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import operator
import os
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
from collections import Counter
from pathlib import Path

import pytest
from cli_helpers import read_jsonl
from conftest import ARRAY_BACKEND_PARAMS, left_behind, made_backend

import poolparty
from poolparty.errors import ResultsReusedWarning

TASKS = list(range(6))

#: the module a user edits between two runs; {factor} and {fails} are filled in
MODULE = textwrap.dedent('''
    import os, time

    MARKS = {marks!r}

    def work(x):
        open(os.path.join(MARKS, f"{{x}}-{{os.getpid()}}-{{time.monotonic_ns()}}"), "w").close()
        if x == 3 and os.path.exists(os.path.join(MARKS, "..", "broken")):
            deadline = time.monotonic() + 120  # the others finish first: their results count
            while len(set(n.split("-")[0] for n in os.listdir(MARKS))) < 6:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            raise ValueError("task 3 is broken")
        return x * {factor}

    class Task:
        def __init__(self, x):
            self.x = x

        def value(self):
            return work(self.x)
''')


@pytest.fixture(params=ARRAY_BACKEND_PARAMS)
def backend(request, work_root, tmp_path):
    with made_backend(request.param, work_root, tmp_path) as made:
        yield made


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own, importable by the client and the jobs, that the test
    can rewrite: ``write(factor)`` (re)writes it and returns it freshly imported."""
    code = tmp_path / "code"
    code.mkdir()
    marks = tmp_path / "marks"
    marks.mkdir()
    name = f"userlib_{uuid.uuid4().hex[:8]}"
    monkeypatch.syspath_prepend(str(code))

    def write(factor: int):
        path = code / f"{name}.py"
        path.write_text(MODULE.format(marks=str(marks), factor=factor))
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        return importlib.import_module(name)

    write.marks = marks  # type: ignore[attr-defined]
    write.broken = tmp_path / "broken"  # type: ignore[attr-defined]
    yield write
    sys.modules.pop(name, None)


def runs_per_task(marks: Path) -> Counter:
    return Counter(int(name.split("-")[0]) for name in os.listdir(marks))


def fail_once(pool, function, user_module) -> None:
    """Run the map with task 3 broken: it raises, the others' results are kept."""
    user_module.broken.touch()
    with pytest.raises(ValueError, match="task 3 is broken"):
        pool.map(function, TASKS, chunksize=1)
    user_module.broken.unlink()


def map_dirs(work_root: Path) -> list[str]:
    """What is left in the root, but for the saved events of maps that succeeded."""
    return left_behind(work_root) if work_root.exists() else []


# ---------------------------------------------------------------------------- item 1
def test_a_rerun_after_the_users_module_changed_computes_with_the_new_code(
        backend, user_module):
    module = user_module(10)
    pool = backend.make_pool()
    try:
        fail_once(pool, module.work, user_module)
        module = user_module(100)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResultsReusedWarning)  # nothing may be reused
            assert pool.map(module.work, TASKS, chunksize=1) == [x * 100 for x in TASKS]
    finally:
        pool.terminate()


@pytest.mark.parametrize("how", ["a lambda calling it", "tasks of its class"])
def test_code_reached_only_through_the_function_or_the_tasks_counts_too(
        how, user_module, work_root):
    module = user_module(10)
    name = module.__name__

    def arguments():
        mod = sys.modules[name]
        if how == "a lambda calling it":
            return (lambda x: mod.work(x)), TASKS
        return operator.methodcaller("value"), [mod.Task(x) for x in TASKS]

    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    try:
        user_module.broken.touch()
        function, tasks = arguments()
        with pytest.raises(ValueError, match="task 3 is broken"):
            pool.map(function, tasks, chunksize=1)
        user_module.broken.unlink()
        user_module(100)
        function, tasks = arguments()
        assert pool.map(function, tasks, chunksize=1) == [x * 100 for x in TASKS]
    finally:
        pool.terminate()


def test_an_unchanged_rerun_reuses_the_results_and_says_so(backend, user_module):
    module = user_module(10)
    pool = backend.make_pool()
    try:
        fail_once(pool, module.work, user_module)
        ran_before = runs_per_task(user_module.marks)
        with pytest.warns(ResultsReusedWarning) as caught:
            assert pool.map(module.work, TASKS, chunksize=1) == [x * 10 for x in TASKS]
    finally:
        pool.terminate()
    reused = [x for x in TASKS if x != 3 and ran_before[x]]
    message = str(caught[0].message)
    assert f"{len(reused)} of 6 task(s)" in message, message
    assert str(backend.pool_options()["work_dir"]) in message, message
    assert "reuse_results=False" in message, message
    runs = runs_per_task(user_module.marks)
    assert all(runs[x] == 1 for x in reused), runs
    assert runs[3] == 2, runs


def test_reuse_results_false_runs_every_task_again(user_module, work_root):
    module = user_module(10)
    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    try:
        fail_once(pool, module.work, user_module)
    finally:
        pool.terminate()
    fresh = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2,
                           reuse_results=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResultsReusedWarning)
            assert fresh.map(module.work, TASKS, chunksize=1) == [x * 10 for x in TASKS]
    finally:
        fresh.terminate()
    assert set(runs_per_task(user_module.marks).values()) == {2}
    assert map_dirs(work_root) == []  # the old directory went with the fresh run


def test_reuse_results_comes_from_the_environment_too(monkeypatch, work_root):
    monkeypatch.setenv("POOLPARTY_REUSE_RESULTS", "no")
    pool = poolparty.Pool(backend="local", work_dir=work_root)
    try:
        assert pool.maps.settings.reuse_results is False
    finally:
        pool.terminate()


# ---------------------------------------------------------------------------- item 2
def square(x):
    return x * x


EXPECTED = [x * x for x in range(8)]


def identical_calls(pool: poolparty.Pool, repeats: int) -> None:
    """The calls of the issue, each several times over: every result right."""
    for _ in range(repeats):
        assert list(pool.imap(square, range(8))) == EXPECTED
    for _ in range(repeats):
        assert sorted(pool.imap_unordered(square, range(8))) == EXPECTED
    for _ in range(repeats):
        assert pool.map(square, range(8)) == EXPECTED
    for _ in range(repeats):
        assert pool.map_async(square, range(8)).get(timeout=120) == EXPECTED


def test_identical_calls_in_sequence_never_interfere_and_leave_nothing(backend, work_root):
    repeats = {"local": 5}.get(backend.name.split("-")[0], 2)
    pool = backend.make_pool()
    try:
        identical_calls(pool, repeats)
        assert map_dirs(work_root) == []
    finally:
        pool.terminate()


def test_identical_executor_calls_never_interfere(backend, work_root):
    repeats = 3 if backend.name.startswith("real") else 5
    with backend.make_executor(batch_delay=0) as executor:
        for _ in range(repeats):
            futures = [executor.submit(square, x) for x in range(4)]
            assert [f.result(timeout=120) for f in futures] == EXPECTED[:4]
    assert map_dirs(work_root) == []


@pytest.mark.parametrize("pools", [1, 2])
def test_identical_calls_at_once_from_threads_never_interfere(pools, work_root):
    made = [poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
            for _ in range(pools)]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as threads:
            runs = [threads.submit(identical_calls, made[n % pools], 1) for n in range(4)]
            for run in runs:
                run.result(timeout=280)
        assert map_dirs(work_root) == []
    finally:
        for pool in made:
            pool.terminate()


def test_a_removed_directory_is_never_taken_by_a_claimer_racing_its_removal(tmp_path):
    """The lowest level of the class: many threads claiming and removing the same
    identity at once; each claimer must end with its own live directory."""
    from poolparty.work_dir import WorkDir

    errors: list[BaseException] = []

    def claim_use_remove() -> None:
        try:
            for _ in range(30):
                work_dir = WorkDir.create(tmp_path, "map-same")
                (work_dir.path / "mine").write_text(str(threading.get_ident()))
                assert (work_dir.results_dir).is_dir()
                assert (work_dir.path / "mine").read_text() == str(threading.get_ident())
                work_dir.remove()
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=claim_use_remove) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert map_dirs(tmp_path) == []


SCRIPT = textwrap.dedent('''
    import sys
    import poolparty

    def square(x):
        return x * x

    pool = poolparty.Pool(backend="local", work_dir=sys.argv[1], polling_interval=0.2)
    for result in pool.{call}(square, range(8)):
        pass
''')


@pytest.mark.parametrize("call", ["imap", "imap_unordered"])
def test_a_script_ending_right_after_imap_leaves_no_map_directory(call, tmp_path, work_root):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(call=call))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(4):
        subprocess.run([sys.executable, str(script), str(work_root)], check=True, timeout=120,
                       cwd=tmp_path, env=environment)
        assert map_dirs(work_root) == []


def test_the_warning_names_installed_packages_whose_version_changed(user_module, work_root,
                                                                    monkeypatch):
    """Installed packages are not part of the identity (an upgrade does not make a new
    map), but reusing results made with another version is said."""
    module = user_module(10)
    fake = type(sys)("fakepkg_for_reuse")
    fake.__file__ = os.path.join(sys.prefix, "lib", "fakepkg_for_reuse", "__init__.py")
    fake.__version__ = "1.0"
    monkeypatch.setitem(sys.modules, "fakepkg_for_reuse", fake)
    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    try:
        fail_once(pool, module.work, user_module)
        fake.__version__ = "2.0"
        with pytest.warns(ResultsReusedWarning, match="fakepkg_for_reuse 1.0 -> 2.0"):
            assert pool.map(module.work, TASKS, chunksize=1) == [x * 10 for x in TASKS]
    finally:
        pool.terminate()


def test_the_command_line_asks_for_a_fresh_run_with_fresh(run_cli, dummy_slurm, tmp_path):
    (tmp_path / "script.py").write_text("NUMBERS = list(range(5))\n\n"
                                        "def identity(x):\n    return x\n")
    arguments = ["run", "script.py:identity", "--args", "NUMBERS", "--keep-work-dir"]
    for fresh, submissions, reuses in [([], 1, False), ([], 1, True), (["--fresh"], 2, False)]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_cli(*arguments, *fresh)
        assert result.code == 0, result.err
        assert dummy_slurm.history()["sbatch"] == submissions
        assert [r["result"] for r in read_jsonl(tmp_path / "results.jsonl")] == list(range(5))
        said = [str(w.message) for w in caught if w.category is ResultsReusedWarning]
        assert bool(said) == reuses, said
        assert all("--fresh" in message for message in said)


def test_only_the_users_own_modules_make_the_identity(tmp_path, monkeypatch):
    """Modules of the installation, of any site-packages (pip --user, a cluster's module
    system) and poolparty's own are not hashed; a module of the user's is, by its bytes."""
    from poolparty import code_identity

    def fake_module(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("X = 1\n")
        module = type(sys)(f"fake_{uuid.uuid4().hex[:8]}")
        module.__file__ = str(path)
        monkeypatch.setitem(sys.modules, module.__name__, module)

    mine = tmp_path / "project" / "mine.py"
    fake_module(mine)
    fake_module(tmp_path / ".local" / "lib" / "site-packages" / "theirs.py")
    files = code_identity.user_module_files()
    assert str(mine.resolve()) in files
    assert not [f for f in files if "site-packages" in f  # json, os: the standard library
                or f.startswith(os.path.realpath(sys.base_prefix))]
    assert not [f for f in files if f.startswith(str(Path(poolparty.__file__).parent))]
    before = code_identity.user_code_digest()
    mine.write_text("X = 2\n")
    assert code_identity.user_code_digest() != before
