"""``poolparty status`` and ``poolparty top``: read from the map's JSON-lines events while
it runs, after it ended and after its client died; bad lines, many writers and skewed
clocks don't fool it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import dummy_backend, local_worker_processes, the_map_dir, wait_for

import poolparty
from poolparty import cli
from poolparty.commands.status import CLEAR, STATES
from poolparty.events import MARK, WorkerEvents, marked_lines


def gated(x: int, gate: str) -> int:
    """Tasks below 2 return at once; the others wait until the test opens the gate."""
    while x >= 2 and not os.path.exists(gate):
        time.sleep(0.02)
    return x


def mixed_failures(x: int) -> int:
    if x % 5 == 0:
        raise KeyError(x)
    if x % 3 == 0:
        raise ValueError(f"bad value {x}\nsecond line")
    return x


def exits_once(x: int, markers: str) -> int:
    """The first run of each task ends its worker's process; a rerun returns."""
    marker = Path(markers) / str(x)
    if not marker.exists():
        marker.touch()
        os._exit(3)
    return x


def status_of(path: Path, capsys, *options: str) -> dict:
    assert cli.main(["status", str(path), "--json", *options]) == 0
    return json.loads(capsys.readouterr().out)


def text_status(path: Path, capsys, *options: str) -> str:
    assert cli.main(["status", str(path), *options]) == 0
    return capsys.readouterr().out


def status_in_subprocess(path: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "poolparty.cli", "status", str(path), "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def local_pool(work_root: Path, **options) -> poolparty.Pool:
    return poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2, **options)


# ---------------------------------------------------------------------- real maps
def test_a_running_map_shows_tasks_by_state_then_its_end(work_root, tmp_path, capsys):
    gate = tmp_path / "gate"
    pool = local_pool(work_root, processes=2, keep_work_dir=True)
    try:
        result = pool.starmap_async(gated, [(x, str(gate)) for x in range(6)], chunksize=1)
        map_dir = the_map_dir(work_root)
        running = wait_for(
            lambda: (lambda s: s if s["tasks"]["done"] == 2 and s["tasks"]["running"] == 2
                     and not any((map_dir / "results").iterdir())
                     else None)(status_of(map_dir, capsys)), 60,
            "2 done (their results gathered) and 2 running")
        assert running["state"] == "running"
        assert running["tasks"] == {"total": 6, "pending": 0, "queued": 2, "running": 2,
                                    "done": 2, "failed": 0, "lost": 0, "cancelled": 0}
        # a running worker costs one file, its job's log (its events are in it), and each
        # claim one small file; the results of the two gathered claims are archived
        per_claim = sorted(p.relative_to(map_dir).parts[0] for p in map_dir.rglob("*")
                           if p.is_file() and p.parent != map_dir)
        assert per_claim == ["claims"] * 4 + ["logs"] * 2
        assert sum(1 for p in map_dir.rglob("*") if p.is_file()) <= 6 + 10  # claims + 10
        assert running["client"]["running"] is True
        assert running["scheduler"]["asked"] is False
        assert running["eta"] is not None and running["throughput"] > 0
        assert status_in_subprocess(map_dir)["client"]["running"] is True  # its lock, seen
        assert "running: client pid" in text_status(map_dir, capsys)
    finally:
        gate.touch()
    assert result.get(timeout=60) == list(range(6))
    pool.close()
    pool.join()
    ended = status_of(map_dir, capsys)
    assert ended["state"] == "finished"
    assert ended["tasks"]["done"] == 6
    assert ended["client"]["running"] is False
    assert ended["workers"] == {"submitted": 2, "running": 0, "finished": 2, "lost": 0,
                                "mean_seconds": ended["workers"]["mean_seconds"],
                                "running_hosts": {}}
    assert ended["chunks"]["total"] == 6 and ended["chunks"]["claim_unit"] == 1
    assert not (map_dir / "events.jsonl").exists() and not list((map_dir / "logs").iterdir())
    with zipfile.ZipFile(map_dir / "logs.zip") as logs:
        assert "events.jsonl" in logs.namelist()


def test_errors_are_grouped_by_type_with_their_first_task_ids(work_root, capsys):
    with pytest.raises(KeyError):  # task 0's: the first in order
        local_pool(work_root).map(mixed_failures, range(20), chunksize=20)
    map_dir = the_map_dir(work_root)
    status = status_of(map_dir, capsys)
    assert status["state"] == "failed"
    assert status["tasks"]["failed"] == 9 and status["tasks"]["done"] == 11
    assert status["errors"] == [
        {"type": "ValueError", "count": 5, "first_tasks": [3, 6, 9, 12, 18],
         "message": "bad value 3"},
        {"type": "KeyError", "count": 4, "first_tasks": [0, 5, 10, 15], "message": "0"},
    ]
    text = text_status(map_dir, capsys)
    assert "ValueError x5 (tasks 3, 6, 9, 12, 18): bad value 3" in text
    assert "KeyError x4 (tasks 0, 5, 10, 15)" in text


def test_reopened_chunks_are_counted_with_their_reasons(work_root, tmp_path, capsys):
    """A claim whose worker died is reopened for the others: status says which, why,
    and that its worker was lost."""
    backend = dummy_backend("slurm-array", work_root, tmp_path / "queue")
    (tmp_path / "markers").mkdir()
    try:
        pool = backend.make_pool(keep_work_dir=True, processes=1)
        assert pool.starmap(exits_once, [(7, str(tmp_path / "markers"))]) == [7]
    finally:
        backend.queue.shutdown(timeout=30)
    map_dir = the_map_dir(work_root)
    status = status_of(map_dir, capsys)
    [reopened] = status["chunks"]["reopened"]
    assert (reopened["chunk"], reopened["attempt"]) == (0, 1) and reopened["reason"]
    assert status["chunks"]["resubmit_reasons"] == {reopened["reason"]: 1}
    assert (status["chunks"]["resubmitted"], status["chunks"]["lost"]) == (1, 0)
    assert (status["workers"]["lost"], status["workers"]["finished"]) == (1, 1)
    assert status["tasks"]["done"] == 1 and status["state"] == "finished"
    assert f"resubmits  1 chunk(s) reopened for other workers ({reopened['reason']} x1)" in (
        text_status(map_dir, capsys))


CLIENT = textwrap.dedent('''
    import json, sys
    import poolparty
    from test_status import gated

    gate, options = sys.argv[1], json.loads(sys.argv[2])
    pool = poolparty.Pool(**options)
    print(json.dumps(pool.starmap(gated, [(x, gate) for x in range(2, 6)], chunksize=1)))
''')


def client_command(tmp_path: Path, options: dict) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a client script mapping ``gated`` (imported from here)."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    return [sys.executable, str(script), str(tmp_path / "gate"), json.dumps(options)], env


def kill_when_running(command: tuple[list[str], dict[str, str]], work_root: Path, capsys,
                      running: int) -> Path:
    """Start the client, SIGKILL it once ``running`` tasks run: its workers live on."""
    argv, env = command
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    try:
        map_dir = the_map_dir(work_root)
        wait_for(lambda: status_of(map_dir, capsys)["tasks"]["running"] >= running, 60,
                 f"{running} running task(s)")
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    return map_dir


def test_a_map_whose_client_died_says_so_and_resumes(work_root, tmp_path, capsys):
    options = {"backend": "local", "processes": 2, "work_dir": work_root,
               "polling_interval": 0.2, "keep_work_dir": True}
    command = client_command(tmp_path, options)
    map_dir = kill_when_running(command, work_root, capsys, running=2)
    status = status_of(map_dir, capsys)
    assert status["state"] == "interrupted"
    assert status["client"]["running"] is False
    assert status["tasks"]["running"] == 2 and status["tasks"]["queued"] == 2
    assert status["workers"]["running"] == 2
    assert status["eta"] is None
    assert "interrupted: the client pid" in text_status(map_dir, capsys)

    (tmp_path / "gate").touch()  # the orphaned workers pull the rest; nobody gathers them
    wait_for(lambda: not [p for p in local_worker_processes() if str(work_root) in p], 60,
             "the orphaned workers to end")
    orphaned = status_of(map_dir, capsys)
    assert orphaned["tasks"]["done"] == 4 and orphaned["workers"]["finished"] == 2

    argv, env = command
    resumed = subprocess.run(argv, stdout=subprocess.PIPE, env=env, timeout=120, check=True)
    assert json.loads(resumed.stdout) == [2, 3, 4, 5]
    status = status_of(map_dir, capsys)
    assert status["state"] == "finished"
    assert status["tasks"]["done"] == 4 and status["tasks"]["total"] == 4


def test_a_cluster_map_whose_client_died_is_looked_up_in_the_scheduler(
        work_root, tmp_path, capsys):
    backend = dummy_backend("slurm-array", work_root, tmp_path / "queue", slots=2)
    try:
        command = client_command(tmp_path, backend.pool_options(processes=2))
        map_dir = kill_when_running(command, work_root, capsys, running=2)
        scheduler = status_of(map_dir, capsys)["scheduler"]
        assert scheduler["asked"] is True and scheduler["error"] is None, scheduler
        # a worker per slot, each holding one task's claim
        assert scheduler["states"] == {"pending": 0, "running": 2, "error": 0}, scheduler
        assert scheduler["unfinished_not_queued"] == 0, scheduler
        assert status_of(map_dir, capsys, "--no-query")["scheduler"]["asked"] is False
    finally:
        (tmp_path / "gate").touch()
        backend.queue.shutdown(timeout=30)


# ---------------------------------------------------------------------- written events
T0 = 1_700_000_000.0


def client_line(kind: str, n: int, t: float, **fields) -> str:
    return json.dumps({"event": kind, "t": t, "src": "client1", "n": n, **fields})


def worker_line(kind: str, src: str, n: int, t: float, **fields) -> str:
    return json.dumps({"event": kind, "t": t, "src": src, "n": n, **fields})


def write_claims(path: Path, claims: dict[int, tuple[int, int, int]]) -> None:
    """Claim files as workers link them: ``{claim: (start, stop, worker id)}``."""
    for directory in ("claims", "requeue", "retries"):
        (path / directory).mkdir(mode=0o700, exist_ok=True)
    for number, (start, stop, worker) in claims.items():
        (path / "claims" / str(number)).write_text(json.dumps(
            {"start": start, "stop": stop, "attempt": 0, "worker": f"w{worker}",
             "host": f"node{worker}", "pid": 1, "job": {}, "worker_number": worker,
             "time": T0}) + "\n")


def fake_map(root: Path, journal: list[str], workers: dict[str, list[str]] | None = None,
             tail: str = "", backend: str = "local", commands: dict | None = None,
             tasks: int = 4, claims: dict[int, tuple[int, int, int]] | None = None) -> Path:
    """A work_dir as a client and its workers leave it: by default 4 tasks, claimed in
    two chunks of 2 by workers 0 and 1."""
    path = root / "map-fake"
    (path / "logs").mkdir(parents=True)
    (path / "results").mkdir()
    (path / "map.json").write_text(json.dumps({"num_tasks": tasks, "block": 1,
                                               "claim_unit": None, "backend": backend}))
    write_claims(path, {0: (0, 2, 0), 1: (2, 4, 1)} if claims is None else claims)
    started = client_line("map_started", -1, T0, tasks=tasks, block=1, backend=backend,
                          host="elsewhere", pid=1, commands=commands or {})
    (path / "events.jsonl").write_text("\n".join([started, *journal]) + "\n" + tail)
    for name, lines in (workers or {}).items():  # a job's log: its output, and marked events
        (path / "logs" / name).write_text("".join(
            f"output of the task\n{MARK.decode()}{line}\n" for line in lines))
    return path


def test_a_map_written_before_workers_pulled_claims_shows_what_can_be_read(tmp_path, capsys):
    """Events naming fixed chunks, no claim files: its state and errors, no crash."""
    path = fake_map(tmp_path, [
        client_line("submitted", 0, T0 + 1, chunks="0-1", jobs=[]),
        worker_line("chunk_started", "wA", 0, T0 + 2, chunk=0, host="nodeA"),
        client_line("gathered", 1, T0 + 5, chunks="0-1", tasks=4,
                    errors=[[1, "ValueError", "bad"]]),
        client_line("map_ended", 2, T0 + 6, how="stopped"),
    ], claims={})
    status = status_of(path, capsys)
    assert status["state"] == "stopped" and status["tasks"]["total"] == 4
    assert status["errors"][0]["first_tasks"] == [1]
    assert status["skipped_lines"]["unreadable"] == 2  # submitted and chunk_started
    assert "state      stopped" in text_status(path, capsys)


def test_a_truncated_last_line_and_a_garbage_line_are_skipped_and_counted(tmp_path, capsys):
    path = fake_map(tmp_path, [
        client_line("submitted", 0, T0 + 1, workers="0-1", jobs=[]),
        "this is not JSON",
        client_line("gathered", 1, T0 + 5, chunks="0", tasks=2, errors=[]),
        client_line("a_kind_from_the_future", 2, T0 + 6, anything=[1, 2]),
        client_line("lost", 3, T0 + 7, chunks="", a_field_from_the_future={"x": 1}),
    ], tail='{"event": "gathered", "t": 1700000010, "chu', claims={0: (0, 2, 0)})
    status = status_of(path, capsys)
    assert status["skipped_lines"] == {"truncated": 1, "unreadable": 1}
    assert status["tasks"]["done"] == 2 and status["tasks"]["queued"] == 2
    assert "1 line(s) cut short and 1 unreadable" in text_status(path, capsys)


def test_the_files_of_two_workers_are_read(tmp_path, capsys):
    """Worker 0 runs claim 0 (task 1 raised already), worker 1 finished claim 1: its
    result waits for the client. Workers 2 and 3 were submitted, one started idle."""
    path = fake_map(tmp_path, [client_line("submitted", 0, T0 + 1, workers="0-3", jobs=[])],
                    workers={
                        "0-nodeA-11.log": [
                            worker_line("chunk_started", "wA", 0, T0 + 2, worker=0, host="nodeA"),
                            worker_line("task_failed", "wA", 1, T0 + 3, worker=0, task=1,
                                        type="OSError", message="disk full"),
                        ],
                        "1-nodeB-22.log": [
                            worker_line("chunk_started", "wB", 0, T0 + 2, worker=1, host="nodeB"),
                            worker_line("chunk_finished", "wB", 1, T0 + 4, worker=1, ok=2,
                                        failed=0, seconds=1.5),
                        ],
                        "2-nodeA-33.log": [
                            worker_line("chunk_started", "wC", 0, T0 + 2, worker=2, host="nodeA"),
                        ],
                    })
    (path / "results" / "1.pkl").write_bytes(b"not read: status opens no pickle")
    status = status_of(path, capsys)
    assert status["tasks"] == {"total": 4, "pending": 0, "queued": 0, "running": 1,
                               "done": 2, "failed": 1, "lost": 0, "cancelled": 0}
    assert status["workers"] == {"submitted": 4, "running": 2, "finished": 1, "lost": 0,
                                 "mean_seconds": 1.5, "running_hosts": {"nodeA": 2}}
    assert status["chunks"]["total"] == 2 and status["chunks"]["claim_unit"] is None
    assert status["errors"][0]["first_tasks"] == [1]
    assert "workers    4 submitted: 2 running, 1 finished, 1.5 s each on average, 0 lost" in (
        text_status(path, capsys))


def test_a_reopened_claim_waits_queued_and_its_worker_is_lost(tmp_path, capsys):
    """Worker 0 died holding claim 0; the client reopened it; nobody claimed it again
    yet. An error worker 0 reported for it is void: the task runs again."""
    path = fake_map(tmp_path, [
        client_line("submitted", 0, T0, workers="0-1", jobs=[]),
        client_line("resubmit", 1, T0 + 5, chunk=0, attempt=1,
                    reason="its job left the queue while running"),
    ], workers={"0-nodeA-1.log": [
        worker_line("chunk_started", "wA", 0, T0 + 1, worker=0, host="nodeA"),
        worker_line("task_failed", "wA", 1, T0 + 2, worker=0, task=0, type="OSError",
                    message="node failing"),
    ]})
    (path / "requeue" / "0.1").write_text(json.dumps(
        {"claim": 0, "attempt": 1, "start": 0, "stop": 2, "time": T0 + 5,
         "reason": "its job left the queue while running"}) + "\n")
    status = status_of(path, capsys)
    assert status["tasks"]["queued"] == 2 and status["tasks"]["running"] == 2
    assert status["errors"] == [] and status["workers"]["lost"] == 1
    assert status["workers"]["running"] == 0
    assert status["chunks"]["reopened"] == [
        {"chunk": 0, "attempt": 1, "reason": "its job left the queue while running"}]


def test_lines_folded_twice_count_once(tmp_path, capsys):
    """A client killed between folding a worker file and deleting it leaves both."""
    lines = [worker_line("chunk_started", "wA", 0, T0 + 2, worker=0, host="nodeA"),
             worker_line("chunk_finished", "wA", 1, T0 + 4, worker=0, ok=2, failed=0,
                         seconds=1)]
    path = fake_map(tmp_path, [client_line("submitted", 0, T0 + 1, workers="0-1", jobs=[]),
                               *lines], workers={"0-nodeA-11.log": lines})
    assert status_of(path, capsys)["workers"]["finished"] == 1


@pytest.mark.parametrize("skew", [0.0, 3600.0, -86400.0])
def test_skewed_worker_clocks_do_not_change_throughput(tmp_path, capsys, skew):
    workers = {f"{w}-node{w}-1.log": [
        worker_line("chunk_started", f"w{w}", 0, T0 + 1 + skew, worker=w, host=f"node{w}"),
        worker_line("chunk_finished", f"w{w}", 1, T0 + 3 + skew, worker=w, ok=2, failed=0,
                    seconds=2.0),
    ] for w in (0, 1)}
    path = fake_map(tmp_path, [
        client_line("submitted", 0, T0, workers="0-1", jobs=[]),
        client_line("gathered", 1, T0 + 4, chunks="0-1", tasks=4, errors=[]),
        client_line("map_ended", 2, T0 + 4, how="finished"),
    ], workers=workers)
    status = status_of(path, capsys)
    assert (status["throughput"], status["elapsed"]) == (1.0, 4.0)
    assert status["workers"]["mean_seconds"] == 2.0


def test_a_failing_scheduler_query_is_shown_not_fatal(tmp_path, capsys):
    refuse = [sys.executable, "-c",
              "import sys; sys.stderr.write('squeue: error: Invalid user\\n'); sys.exit(1)"]
    path = fake_map(tmp_path, [client_line("submitted", 0, T0, workers="0-1", jobs=["7"])],
                    backend="slurm-array", commands={"squeue": refuse})
    status = status_of(path, capsys)
    assert status["state"] == "interrupted"  # no client holds its lock
    assert status["scheduler"]["asked"] is True
    assert status["scheduler"]["error"] == "squeue: exit status 1: squeue: error: Invalid user"
    assert "could not be asked" in text_status(path, capsys)
    missing = fake_map(tmp_path / "other", [], backend="sge",
                       commands={"qstat": [str(tmp_path / "no-qstat")]})
    assert "is not installed here" in status_of(missing, capsys)["scheduler"]["error"]


def test_json_output_shape(tmp_path, capsys):
    path = fake_map(tmp_path, [client_line("submitted", 0, T0, workers="0-1", jobs=[])])
    status = status_of(path, capsys)
    assert set(status) == {"work_dir", "map_id", "backend", "state", "ended", "client",
                           "tasks", "chunks", "elapsed", "throughput", "eta", "workers",
                           "errors", "skipped_lines", "scheduler"}
    assert set(status["tasks"]) == {"total", *STATES}
    assert set(status["client"]) == {"running", "host", "pid", "last_event_age"}
    assert set(status["chunks"]) == {"total", "claim_unit", "resubmitted",
                                     "resubmit_reasons", "reopened", "lost"}
    assert set(status["workers"]) == {"submitted", "running", "finished", "lost",
                                      "mean_seconds", "running_hosts"}
    assert set(status["scheduler"]) == {"asked", "why", "error", "states",
                                        "unfinished_not_queued"}
    assert status["map_id"] == "map-fake" and status["backend"] == "local"


def worker_log(path: Path, worker_id: int = 3) -> tuple[WorkerEvents, int]:
    """A worker's events written into a job's log, as the worker writes them to stderr."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return WorkerEvents(worker_id, descriptor), descriptor


def test_a_worker_writes_marked_lines_into_its_jobs_log_naming_its_job_and_nothing_else(
        tmp_path):
    log = tmp_path / "job.log"
    events, descriptor = worker_log(log)
    os.write(descriptor, b"a line of the task's output\nan unfinished line")
    events.started({"SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1",
                    "SLURM_JOB_ID": "78", "API_TOKEN": "tok-secret"})
    events.task_failed(7, ValueError("first line\nsecond line"))
    events.finished(ok=1, failed=1)
    os.close(descriptor)
    text = log.read_text()
    assert text.startswith("a line of the task's output\nan unfinished linepoolparty-event: ")
    started, failed, finished = [json.loads(line) for line in marked_lines(log.read_bytes())]
    assert (started["job"], started["index"], started["pid"]) == ("77", "1", os.getpid())
    assert "tok-secret" not in text
    assert (failed["task"], failed["type"], failed["message"]) == (7, "ValueError", "first line")
    assert (finished["ok"], finished["failed"]) == (1, 1) and finished["seconds"] >= 0
    assert [e["n"] for e in (started, failed, finished)] == [0, 1, 2]


def test_a_worker_reports_its_first_failures_one_by_one_then_only_their_count(tmp_path, capsys):
    path = fake_map(tmp_path, [client_line("submitted", 0, T0, workers="0-1", jobs=[])],
                    tasks=400, claims={0: (0, 200, 0)})
    events, descriptor = worker_log(path / "logs" / "0.log", worker_id=0)
    events.started({})
    for task in range(150):
        events.task_failed(task, KeyError(task))
    assert len(marked_lines((path / "logs" / "0.log").read_bytes())) == 1 + 100
    events.finished(ok=50, failed=150)
    os.close(descriptor)
    tasks = status_of(path, capsys)["tasks"]
    assert (tasks["failed"], tasks["done"]) == (150, 50)


def test_a_worker_that_cannot_write_its_events_runs_on_and_warns_once(tmp_path, caplog):
    descriptor = os.open(tmp_path / "job.log", os.O_RDONLY | os.O_CREAT, 0o600)
    events = WorkerEvents(0, descriptor)
    events.started({})  # EBADF: the descriptor is not open for writing
    events.finished(ok=1, failed=0)
    os.close(descriptor)
    assert len(caplog.records) == 1 and "could not write events" in caplog.text


# ---------------------------------------------------------------------- command line
def test_a_missing_work_dir_is_a_clear_error_with_exit_code_2(tmp_path, capsys, monkeypatch):
    assert cli.main(["status", str(tmp_path / "nope")]) == 2
    assert "no work_dir" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # no ./.poolparty here
    assert cli.main(["status"]) == 2
    assert "keep_work_dir" in capsys.readouterr().err
    (tmp_path / ".poolparty").mkdir()
    assert cli.main(["top"]) == 2
    assert "no poolparty map" in capsys.readouterr().err


def test_without_work_dir_the_configured_root_is_looked_in(tmp_path, capsys, monkeypatch):
    fake_map(tmp_path / "elsewhere" / "x", []).rename(tmp_path / "elsewhere" / "map-there")
    monkeypatch.setenv("POOLPARTY_WORK_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map_id"] == "map-there"


def test_without_work_dir_the_most_recent_map_is_shown(tmp_path, capsys, monkeypatch):
    root = tmp_path / ".poolparty"
    older = fake_map(root / "a", [])
    older.rename(root / "map-older")
    newer = fake_map(root / "b", [])
    newer.rename(root / "map-newer")
    os.utime(root / "map-older" / "events.jsonl", (T0, T0))
    for path in (root / "map-older", root / "map-newer"):
        os.utime(path, (T0, T0))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map_id"] == "map-newer"


def test_top_redraws_until_its_iterations_are_done(tmp_path, capsys):
    path = fake_map(tmp_path, [client_line("submitted", 0, T0, workers="0-1", jobs=[])])
    assert cli.main(["top", str(path), "--iterations", "3", "--interval", "0.01"]) == 0
    output = capsys.readouterr().out
    assert output.count(CLEAR) == 3
    assert output.count("state      interrupted") == 3


def test_top_stops_when_the_map_has_ended(tmp_path, capsys):
    path = fake_map(tmp_path, [client_line("map_ended", 0, T0, how="cancelled",
                                           type="KeyboardInterrupt")])
    assert cli.main(["top", str(path), "--iterations", "50", "--interval", "0.01"]) == 0
    output = capsys.readouterr().out
    assert output.count(CLEAR) == 1
    assert "cancelled: KeyboardInterrupt" in output


def test_top_of_a_map_running_in_this_process(work_root, tmp_path, capsys):
    gate = tmp_path / "gate"
    pool = local_pool(work_root, processes=1)
    with ThreadPoolExecutor(1) as thread:
        mapped = thread.submit(pool.starmap, gated, [(2, str(gate))])
        try:
            map_dir = the_map_dir(work_root)
            wait_for(lambda: status_of(map_dir, capsys)["tasks"]["running"] == 1, 60,
                     "a running task")
            assert cli.main(["top", str(map_dir), "--iterations", "2",
                             "--interval", "0.01"]) == 0
            assert capsys.readouterr().out.count("running 1") == 2
        finally:
            gate.touch()
        assert mapped.result(timeout=60) == [2]
