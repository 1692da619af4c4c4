"""``poolparty run``, ``--dry-run``, ``--bin`` and ``poolparty collect``, on local
processes and on a dummy SLURM found on PATH as a real one would be."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import nothing_written, read_jsonl

from poolparty.commands import shares

SCRIPT = textwrap.dedent("""
    import sys

    from helper import double  # a module beside the script

    SCALE = int(sys.argv[1]) if len(sys.argv) > 1 else 1

    def compute(x, y=0):
        if x in (4, 7):
            raise ValueError(f"bad {x}")
        return double(x + y) * SCALE

    ARGS = [1, 2, (3, 10), 4, 5, (6, 1), 7]
    NUMBERS = list(range(12))
    WORD = "abc"
    NOT_A_FUNCTION = 3

    class Pair:
        def __init__(self, x):
            self.x = x

    def pair(x):
        return Pair(x)

    def identity(x):
        return x

    def die(x):
        if x == 5:
            import os
            os._exit(1)  # the job dies without a result
        return x

    if __name__ == "__main__":
        open("MAIN_RAN", "w").close()
""")

#: compute over ARGS with the script argument 10
EXPECTED = {0: 20, 1: 40, 2: 260, 4: 100, 5: 140}



@pytest.fixture
def script(tmp_path: Path) -> Path:
    (tmp_path / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    return path


def check_compute_records(records: list[dict]) -> None:
    assert [r["index"] for r in records] == list(range(7))
    assert {r["index"]: r["result"] for r in records if r["ok"]} == EXPECTED
    failed = [r for r in records if not r["ok"]]
    assert [(r["index"], r["error"]["type"], r["error"]["message"]) for r in failed] == [
        (3, "ValueError", "bad 4"), (6, "ValueError", "bad 7")]
    # cloudpickle names by-value code "<dynamic-code>"; the line and function are right
    assert 'line 10, in compute' in failed[0]["error"]["traceback"]


@pytest.mark.parametrize("backend", ["local", "slurm-array"])
def test_every_task_runs_and_failures_are_listed(backend, script, run_cli, request, tmp_path):
    if backend != "local":
        request.getfixturevalue("dummy_slurm")
    result = run_cli("run", f"{script}:compute", "--args", "ARGS", "--backend", backend,
                     "--chunksize", "1", "--", "10")
    assert result.code == 1
    assert "failed tasks: 3,6" in result.err
    assert "task 3: ValueError: bad 4" in result.err
    check_compute_records(read_jsonl(tmp_path / "results.jsonl"))
    assert not (tmp_path / "MAIN_RAN").exists()  # the script's __main__ block never ran


def test_really_runs_on_the_dummy_slurm(script, run_cli, dummy_slurm, tmp_path):
    result = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--chunksize", "4",
                     "--out", "numbers.jsonl")
    assert result.code == 0, result.err
    assert [r["result"] for r in read_jsonl(tmp_path / "numbers.jsonl")] == list(range(12))
    assert dummy_slurm.history()["sbatch"] == 1  # auto found sbatch on PATH: one array


def test_all_succeed_exit_0_and_stdout_output(script, run_cli):
    result = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--backend", "local",
                     "--out", "-")
    assert result.code == 0
    assert [json.loads(line)["result"] for line in result.out.splitlines()] == list(range(12))


def test_pickle_output_keeps_objects_of_the_script(script, run_cli, tmp_path):
    result = run_cli("run", f"{script}:pair", "--args", "NUMBERS", "--backend", "local",
                     "--out", "pairs.pkl")
    assert result.code == 0
    records = pickle.loads((tmp_path / "pairs.pkl").read_bytes())
    assert [record["result"].x for record in records] == list(range(12))


def test_results_json_cannot_hold_are_written_as_repr_with_a_warning(script, run_cli,
                                                                     tmp_path):
    result = run_cli("run", f"{script}:pair", "--args", "NUMBERS", "--backend", "local")
    assert result.code == 0
    assert "not JSON values" in result.err and ".pkl" in result.err
    record = read_jsonl(tmp_path / "results.jsonl")[0]
    assert record["result"] is None and "Pair object" in record["result_repr"]


def test_a_crashed_chunk_fails_its_tasks_and_keeps_the_others(script, run_cli, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("POOLPARTY_MAX_NUM_RESUBMISSIONS", "0")
    result = run_cli("run", f"{script}:die", "--args", "NUMBERS", "--backend", "local",
                     "--chunksize", "1")
    assert result.code == 1
    records = read_jsonl(tmp_path / "results.jsonl")
    assert records[5]["error"]["type"] == "TaskCrashedError"
    assert "task 5 ended its worker's process" in records[5]["error"]["message"]
    assert "failed tasks: 5" in result.err
    # the map stops at the loss: tasks not run yet say so, those done are kept
    others = [r for r in records if r["index"] != 5]
    assert {r["error"]["type"] for r in others if not r["ok"]} <= {"NotRun"}
    assert all(r["result"] == r["index"] for r in others if r["ok"])


def test_from_a_shell_with_the_console_entry_point(script, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "poolparty.cli", "run", f"{script}:compute", "--args", "ARGS",
         "--backend", "local", "--work-dir", str(tmp_path / "w"), "--", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "failed tasks: 3,6" in done.stderr
    check_compute_records(read_jsonl(tmp_path / "results.jsonl"))


# ---------------------------------------------------------------------------- dry run
def test_dry_run_submits_nothing(script, run_cli, dummy_slurm, tmp_path):
    result = run_cli("run", f"{script}:compute", "--args", "ARGS", "--backend", "slurm-array",
                     "--processes", "2", "--scheduler-arg=--qos=long", "--dry-run", "--", "10")
    assert result.code == 0, result.err
    assert dummy_slurm.jobs() == [] and "sbatch" not in dummy_slurm.history()
    assert "first task: compute(1)" in result.out
    command = result.out.split("would run:\n")[1].strip()
    assert command.startswith("sbatch --parsable --job-name=poolparty-map-")
    assert "--array=" in command and "%2" in command and "--qos=long" in command
    work_dir = Path(result.out.split("work_dir: ")[1].splitlines()[0])
    assert (work_dir / "job.sh").exists() and str(work_dir / "job.sh") in command
    assert "DRY-RUN" not in (work_dir / "jobs.jsonl").read_text() if (
        work_dir / "jobs.jsonl").exists() else True
    assert not (tmp_path / "results.jsonl").exists()


def test_a_run_after_a_dry_run_uses_its_work_dir(script, run_cli, dummy_slurm, tmp_path):
    dry = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--dry-run")
    work_dir = Path(dry.out.split("work_dir: ")[1].splitlines()[0])
    real = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--keep-work-dir")
    assert real.code == 0, real.err
    assert work_dir.exists() and dummy_slurm.history()["sbatch"] == 1
    assert [r["result"] for r in read_jsonl(tmp_path / "results.jsonl")] == list(range(12))


def test_dry_run_on_local_prints_the_worker_commands(script, run_cli):
    result = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--backend", "local",
                     "--chunksize", "6", "--dry-run")
    assert result.code == 0
    commands = result.out.split("would run:\n")[1].splitlines()
    assert len(commands) == 2 and commands[0].strip().startswith("/bin/sh ")
    assert commands[1].strip().endswith("job.sh 1")


# ---------------------------------------------------------------------------- --bin
def test_shares_by_position_then_collect_names_the_missing_share(script, run_cli, tmp_path):
    common = ["run", f"{script}:compute", "--args", "ARGS", "--out", "shares"]
    first = run_cli(*common, "--bin", "0-1/3", "--", "10")
    assert first.code == 1  # task 3 (share 0) and task 6 (share 0) fail
    assert sorted(p.name for p in (tmp_path / "shares").iterdir()) == [
        "share-0-of-3.jsonl", "share-1-of-3.jsonl"]
    header, *records = read_jsonl(tmp_path / "shares" / "share-1-of-3.jsonl")
    assert header == {"share": 1, "of": 3, "num_tasks": 7, "bin_key": None}
    assert [r["index"] for r in records] == [1, 4]  # task k is in share k mod 3

    partial = run_cli("collect", "shares", "--out", "merged.jsonl")
    assert partial.code == 1
    assert "missing shares of 3: 2; missing tasks: 2,5" in partial.err

    assert run_cli(*common, "--bin", "2/3", "--", "10").code == 0
    merged = run_cli("collect", "shares", "--out", "merged.jsonl")
    assert merged.code == 1 and "failed tasks: 3,6" in merged.err  # complete, 2 failed
    check_compute_records(read_jsonl(tmp_path / "merged.jsonl"))


def test_collect_of_pickled_shares(script, run_cli, tmp_path):
    for share in ("0/2", "1/2"):
        args = ["--args", "NUMBERS", "--out", "s", "--out-format", "pickle", "--bin", share]
        assert run_cli("run", f"{script}:pair", *args).code == 0
    assert run_cli("collect", "s", "--out", "all.pkl").code == 0
    records = pickle.loads((tmp_path / "all.pkl").read_bytes())
    assert [record["result"].x for record in records] == list(range(12))


def test_the_share_of_a_key_is_a_fixed_sha256_of_canonical_json():
    values = ["seed-7", 3, 0.5, None, True]
    canonical = b'["seed-7",3,0.5,null,true]'
    assert shares.canonical_key(values) == canonical
    assert int(hashlib.sha256(canonical).hexdigest(), 16) % 10 == 2
    assert shares.share_of_key(values, 10) == 2
    assert shares.share_of_key([{"b": 1, "a": 2}], 7) == shares.share_of_key(
        [{"a": 2, "b": 1}], 7)  # key order does not matter


def test_shares_by_key_are_the_known_ones(script, run_cli, tmp_path):
    # sha256 of "[x]" mod 4, for x in 0..11: 3 2 3 2 0 2 2 3 2 2 2 2
    result = run_cli("run", f"{script}:identity", "--args", "NUMBERS", "--bin", "3/4",
                     "--bin-key", "0", "--out", "by-key")
    assert result.code == 0
    _, *records = read_jsonl(tmp_path / "by-key" / "share-3-of-4.jsonl")
    assert [r["index"] for r in records] == [0, 2, 7]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("arguments, message", [
    (["{script}:nope", "--args", "ARGS"], "has no function 'nope'"),
    (["{script}:compute", "--args", "NOPE"], "has no iterable 'NOPE'"),
    (["{script}:NOT_A_FUNCTION", "--args", "ARGS"], "is not a function"),
    (["{script}:compute", "--args", "WORD"], "is a str"),
    (["{script}:compute", "--args", "NOT_A_FUNCTION"], "is not iterable"),
    (["{script}", "--args", "ARGS"], "expected SCRIPT.py:FUNC"),
    (["missing.py:compute", "--args", "ARGS"], "no script"),
    (["{script}:compute", "--args", "ARGS", "--bin", "3"], "expected I/N"),
    (["{script}:compute", "--args", "ARGS", "--bin", "x/10"], "not a share number"),
    (["{script}:compute", "--args", "ARGS", "--bin", "10/10"], "numbered 0 to 9"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0-12/10"], "not 10-12"),
    (["{script}:compute", "--args", "ARGS", "--bin", "3-1/10"], "goes down"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0/0"], "N >= 1"),
    (["{script}:compute", "--args", "ARGS", "--bin-key", "0"], "give --bin too"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0/2", "--bin-key", "1"],
     "has only 1 argument"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0/2", "--bin-key", "a"],
     "expected argument positions"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0/2", "--backend", "sge"],
     "drop --backend sge"),
    (["{script}:compute", "--args", "ARGS", "--backend", "local", "--scheduler-arg=-x"],
     "takes none"),
    (["{script}:compute", "--args", "ARGS", "--out", "no/such/dir/r.jsonl"], "does not exist"),
    (["{script}:compute", "--args", "ARGS", "--out", "."], "is a directory"),
    (["{script}:compute", "--args", "ARGS", "--bin", "0/2", "--out", "{script}"],
     "a directory for the shares"),
    (["{script}:compute", "--args", "ARGS", "--chunksize", "0"], "chunksize"),
])
def test_bad_input_exits_2_with_a_message_and_submits_nothing(arguments, message, script,
                                                              run_cli, tmp_path):
    result = run_cli("run", *[a.format(script=script) for a in arguments])
    assert result.code == 2
    assert message in result.err and result.err.startswith("poolparty run: error:")
    assert nothing_written(tmp_path)


def test_a_script_that_raises_while_loading_is_bad_input(run_cli, tmp_path):
    (tmp_path / "broken.py").write_text("import sys\nraise RuntimeError(sys.argv[1])\n")
    result = run_cli("run", "broken.py:f", "--args", "X", "--", "argument-seen")
    assert result.code == 2
    assert "raised while loading: RuntimeError: argument-seen" in result.err
    assert nothing_written(tmp_path)


def test_bad_input_on_a_cluster_submits_nothing(script, run_cli, dummy_slurm, tmp_path):
    result = run_cli("run", f"{script}:compute", "--args", "NOPE", "--backend", "slurm")
    assert result.code == 2 and dummy_slurm.history() == {}
    assert nothing_written(tmp_path)


def test_collect_of_a_directory_without_shares_is_bad_input(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("collect", "empty")
    assert result.code == 2 and "no share-" in result.err
