"""Bad input: a clear error naming the problem and the fix, before anything is submitted."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import made_backend, poolparty_context

import poolparty


def test_a_function_that_cannot_be_pickled_is_refused_before_submitting(backend, work_root):
    lock = threading.Lock()
    with pytest.raises(TypeError) as caught:  # as multiprocessing.Pool raises it
        backend.make_pool().map(lambda x: (lock, x), range(3))
    assert "can't be pickled" in poolparty_context(caught.value)
    assert backend.queued_jobs() == []


def test_a_task_that_cannot_be_pickled_is_named(backend):
    tasks = [1, 2, threading.Lock()]
    with pytest.raises(TypeError) as caught:
        backend.make_pool().map(id, tasks)
    assert "task 2" in poolparty_context(caught.value)
    assert backend.queued_jobs() == []


def test_a_non_iterable_is_a_type_error(backend):
    with pytest.raises(TypeError, match="not iterable"):
        backend.make_pool().map(abs, 5)


@pytest.mark.parametrize("chunksize", [0, -1, 1.5, "2"])
def test_a_bad_chunksize_is_refused(backend, chunksize):
    with pytest.raises(poolparty.InvalidInputError, match="chunksize"):
        backend.make_pool().map(abs, [1], chunksize=chunksize)


def test_a_generator_raising_midway_raises_in_the_caller_before_submitting(backend, work_root):
    def tasks():
        yield 1
        raise RuntimeError("the input broke")

    with pytest.raises(RuntimeError, match="the input broke"):
        backend.make_pool().map(abs, tasks())
    assert not work_root.exists() or list(work_root.iterdir()) == []


def test_a_work_dir_that_is_not_writable_is_refused(backend, tmp_path):
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o500)
    if os.access(read_only, os.W_OK):  # root writes anywhere but in /proc
        read_only = "/proc"
    with pytest.raises(poolparty.InvalidInputError, match="not writable"):
        backend.make_pool(work_dir=read_only).map(abs, [1])
    assert backend.queued_jobs() == []


def test_a_work_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(poolparty.InvalidInputError, match="can't be created"):
        poolparty.Pool(backend="local", work_dir=tmp_path / "file" / "sub").map(abs, [1])


def test_a_python_path_that_does_not_exist_is_refused():
    with pytest.raises(poolparty.InvalidInputError, match="python_path"):
        poolparty.Pool(backend="local", python_path="/no/such/python3")


def test_a_python_that_cannot_import_poolparty_is_refused(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'No module named poolparty' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(poolparty.InvalidInputError, match="can't import poolparty"):
        poolparty.Pool(backend="local", python_path=str(fake))


def test_slurm_without_sbatch_says_how_to_run_locally(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(poolparty.SchedulerNotFoundError, match="backend='local'"):
        poolparty.Pool(backend="slurm-array")


def test_unknown_keyword_arguments_are_a_type_error():
    with pytest.raises(TypeError, match="partitoin"):
        poolparty.Pool(backend="slurm-array", partitoin="gpu")
    with pytest.raises(TypeError):
        poolparty.Pool(backend="local", partition="gpu")


def test_an_unknown_backend_is_refused():
    with pytest.raises(poolparty.InvalidInputError, match="unknown backend"):
        poolparty.Pool(backend="condor")


def test_max_num_resubmissions_must_be_bounded():
    with pytest.raises(poolparty.InvalidInputError, match="max_num_resubmissions"):
        poolparty.Pool(backend="local", max_num_resubmissions=-1)


#: how each scheduler refuses a queue it doesn't have (SLURM: a partition)
QUEUE_REFUSED = {"sge": "unknown queue", "pbs": "unknown queue", "lsf": "no such queue"}


def test_the_scheduler_rejecting_the_job_raises_with_its_stderr(cluster_backend, work_root):
    scheduler = cluster_backend.name.split("-", 1)[1]
    if scheduler in QUEUE_REFUSED:
        pool, says = cluster_backend.make_pool(queue="no-such-queue"), QUEUE_REFUSED[scheduler]
    else:
        pool, says = cluster_backend.make_pool(partition="no-such-partition"), "invalid partition"
    with pytest.raises(poolparty.SchedulerCommandError, match=f"(?i){says}") as caught:
        pool.map(abs, range(3))
    assert caught.value.returncode not in (0, None)
    assert cluster_backend.queued_jobs() == []


@pytest.mark.parametrize("backend", ["dummy-slurm-array", "dummy-slurm"])
@pytest.mark.parametrize("argument", ["--output=mine.log", "--error=mine.err", "-e",
                                      "-omine.log", "--job-name=mine", "--open-mode=append"])
def test_extra_sbatch_arguments_may_not_move_the_output_or_rename_the_job(
        backend, argument, work_root, tmp_path):
    with made_backend(backend, work_root, tmp_path) as slurm:
        with pytest.raises(poolparty.InvalidInputError, match="poolparty sets .* itself"):
            slurm.make_pool(sbatch_args=["--qos=long", argument])
        assert slurm.queued_jobs() == []


def test_extra_qsub_arguments_may_not_move_the_output_or_rename_the_job(work_root, tmp_path):
    with made_backend("dummy-sge", work_root, tmp_path) as sge:
        for arguments in (["-o", "mine.log"], ["-e", "mine.err"], ["-j", "n"], ["-N", "mine"]):
            with pytest.raises(poolparty.InvalidInputError, match="poolparty sets .* itself"):
                sge.make_pool(qsub_args=arguments)
        sge.make_pool(qsub_args=["-ot", "5", "-js", "1"])  # options that merely start alike


NO_ROOM_SCRIPT = """
import resource, signal, sys
import poolparty
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    poolparty.Pool(backend="local", work_dir=sys.argv[1]).map(len, ["x" * 50_000] * 10)
except poolparty.InvalidInputError as error:
    print(error)
    sys.exit(3)
"""


def test_no_room_while_writing_the_tasks_says_so_and_leaves_nothing(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "root"
    done = subprocess.run([sys.executable, "-c", NO_ROOM_SCRIPT, str(root)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "could not write the tasks" in done.stdout
    assert "Nothing was submitted" in done.stdout and "work_dir=" in done.stdout
    assert list(root.iterdir()) == []  # the half-written map's directory is gone


def test_a_function_returning_something_unpicklable_names_the_task(backend):
    def result(x):
        return threading.Lock() if x == 3 else x

    with pytest.raises(poolparty.RemoteError, match="task 3: its result could not be pickled"):
        backend.make_pool().map(result, range(5), chunksize=5)


class TwoArguments(Exception):
    """Unpickling calls TwoArguments(*args) with the one message: it raises TypeError."""

    def __init__(self, what, why):
        super().__init__(f"{what} failed: {why}")


def raise_two_arguments(x):
    if x == 2:
        raise TwoArguments("task 2", "no luck")
    return x


def test_an_exception_that_cannot_be_rebuilt_still_reaches_the_caller(backend):
    """multiprocessing hangs or fails oddly on such an exception; here the caller gets
    its type and message, and the map is not lost."""
    with pytest.raises(poolparty.RemoteError,
                       match="task 2 raised TwoArguments: task 2 failed: no luck"):
        backend.make_pool().map(raise_two_arguments, range(4), chunksize=2)


def rebuild_refuses():
    raise RuntimeError("this class can't be rebuilt in the client")


class RefusesToUnpickle:
    def __reduce__(self):
        return rebuild_refuses, ()


def test_a_result_that_does_not_unpickle_in_the_client_is_an_error_and_is_kept(work_root):
    pool = poolparty.Pool(backend="local", work_dir=work_root)
    with pytest.raises(poolparty.RemoteError,
                       match=r"task\(s\) 2..3 could not be unpickled here \(RuntimeError"):
        pool.map(lambda x: RefusesToUnpickle() if x == 3 else x, range(4), chunksize=2)
    (map_dir,) = [p for p in work_root.iterdir() if p.name.startswith("map-")]
    import zipfile

    with zipfile.ZipFile(map_dir / "results.zip") as results:  # kept, for another python
        assert sorted(results.namelist()) == ["0.pkl", "1.pkl"]
    assert pool.map(abs, [-1]) == [1]  # the pool still works


def test_a_work_dir_root_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(poolparty.InvalidInputError, match="writable by others"):
        poolparty.Pool(backend="local", work_dir=shared).map(abs, [1])
    assert list(shared.iterdir()) == []


def test_a_sticky_shared_root_like_tmp_is_accepted(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scratch.chmod(0o1777)  # others can't rename or remove what is ours
    assert poolparty.Pool(backend="local", work_dir=scratch).map(abs, [-1, 2]) == [1, 2]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory another user owns")
def test_a_work_dir_root_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 12345, 12345)
    with pytest.raises(poolparty.InvalidInputError, match="owned by uid 12345"):
        poolparty.Pool(backend="local", work_dir=theirs).map(abs, [1])
