"""``poolparty exec``: parameters (plain, JSON lines, CSV, grid), placeholders, shell
injection, failures, retries, dry runs and shares, on local processes and a dummy SLURM."""

from __future__ import annotations

import io
import json
import sys

import pytest
from cli_helpers import nothing_written, read_jsonl

from poolparty.commands import shares

#: a program that prints its argv, one element per line, and can be told to fail
ECHO_ARGS = "import sys; print('\\n'.join(sys.argv[1:]))"
INJECTIONS = ["x; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "it's; touch PWNED",
              "a\" ; touch PWNED; \"", "| touch PWNED", "x && touch PWNED #"]



def results(tmp_path, name="results.jsonl") -> list[dict]:
    return [record["result"] for record in read_jsonl(tmp_path / name)]


# ---------------------------------------------------------------------------- injection
@pytest.mark.parametrize("backend", ["local", "slurm-array"])
def test_a_parameter_reaches_the_program_verbatim_and_runs_nothing(backend, run_cli,
                                                                   tmp_path, request):
    if backend != "local":
        request.getfixturevalue("dummy_slurm")
    (tmp_path / "params.txt").write_text("\n".join(INJECTIONS) + "\n")
    result = run_cli("exec", "--params", "params.txt", "--backend", backend, "--",
                     sys.executable, "-c", ECHO_ARGS, "--value={}", "{}")
    assert result.code == 0, result.err
    assert [r["stdout"] for r in results(tmp_path)] == [
        f"--value={value}\n{value}\n" for value in INJECTIONS]
    assert not list(tmp_path.rglob("PWNED"))


def test_with_shell_every_value_is_quoted_and_runs_nothing(run_cli, tmp_path):
    (tmp_path / "params.txt").write_text("\n".join(INJECTIONS) + "\n")
    result = run_cli("exec", "--params", "params.txt", "--backend", "local", "--shell", "--",
                     f"printf '%s|' {{}} x{{}}y | {sys.executable} -c "
                     f"'import sys; print(sys.stdin.read())'")
    assert result.code == 0, result.err
    assert [r["stdout"] for r in results(tmp_path)] == [
        f"{value}|x{value}y|\n" for value in INJECTIONS]
    assert not list(tmp_path.rglob("PWNED"))


@pytest.mark.parametrize("command", ["echo \\{}", "cat <<EOF\n{}\nEOF"])
def test_with_shell_a_placeholder_quoting_could_not_protect_is_refused(command, run_cli,
                                                                        tmp_path):
    (tmp_path / "params.txt").write_text("$(touch PWNED)\n")
    result = run_cli("exec", "--params", "params.txt", "--shell", "--backend", "local", "--",
                     command)
    assert result.code == 2 and "--shell: the placeholder {}" in result.err
    assert nothing_written(tmp_path) and not (tmp_path / "PWNED").exists()


def test_with_shell_a_dollar_brace_is_the_shells_variable(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("GREETING", "hello")
    result = run_cli("exec", "--grid", "x=1", "--shell", "--backend", "local", "--",
                     "echo ${GREETING} {x} {{literal}}")
    assert result.code == 0, result.err
    assert results(tmp_path)[0]["stdout"] == "hello 1 {literal}\n"


# ---------------------------------------------------------------------------- parameters
def test_json_lines_names_and_whole_line(run_cli, tmp_path):
    lines = ['{"x": 1, "name": "a b"}', '{"x": 2.5, "name": "c", "extra": [1]}']
    (tmp_path / "params.jsonl").write_text("\n".join(lines) + "\n\n")
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "local", "--",
                     sys.executable, "-c", ECHO_ARGS, "--x={x}", "{name}", "{}")
    assert result.code == 0, result.err
    assert [r["stdout"].splitlines() for r in results(tmp_path)] == [
        ["--x=1", "a b", lines[0]], ["--x=2.5", "c", lines[1]]]
    assert results(tmp_path)[1]["params"] == {"x": 2.5, "name": "c", "extra": [1]}


def test_csv_with_a_header(run_cli, tmp_path):
    (tmp_path / "params.csv").write_text('seed,label\n1,"a,b"\n2,c\n')
    result = run_cli("exec", "--params", "params.csv", "--backend", "local", "--",
                     sys.executable, "-c", ECHO_ARGS, "{seed}", "{label}", "{}")
    assert result.code == 0, result.err
    assert [r["stdout"].splitlines() for r in results(tmp_path)] == [
        ["1", "a,b", '1,"a,b"'], ["2", "c", "2,c"]]


def test_a_grid_alone_is_the_cartesian_product_in_order(run_cli, tmp_path):
    result = run_cli("exec", "--grid", "a=x,y", "b=1-3", "--backend", "local", "--",
                     "echo", "{a}{b}")
    assert result.code == 0, result.err
    assert [r["stdout"] for r in results(tmp_path)] == [
        f"{a}{b}\n" for a in "xy" for b in "123"]


def test_params_from_stdin_times_a_grid(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("p\nq\n"))
    result = run_cli("exec", "--params", "-", "--grid", "n=1,2", "--backend", "local", "--",
                     "echo", "{}-{n}")
    assert result.code == 0, result.err
    assert [r["stdout"] for r in results(tmp_path)] == ["p-1\n", "p-2\n", "q-1\n", "q-2\n"]


def test_runs_on_the_dummy_slurm_in_the_clients_directory(run_cli, dummy_slurm, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("hello\n")
    result = run_cli("exec", "--grid", "i=0-5", "--chunksize", "2", "--out", "out.jsonl",
                     "--", "cat", "data/in.txt")
    assert result.code == 0, result.err
    assert [r["stdout"] for r in results(tmp_path, "out.jsonl")] == ["hello\n"] * 6
    assert dummy_slurm.history()["sbatch"] == 1


# ---------------------------------------------------------------------------- failures
def test_failures_name_the_tasks_exit_codes_and_stderr(run_cli, tmp_path):
    program = ("import sys; n = int(sys.argv[1]); "
               "sys.stderr.write(f'line one\\nbroken on {n}\\n') if n % 3 == 1 else None; "
               "sys.exit(n if n % 3 == 1 else 0)")
    result = run_cli("exec", "--grid", "n=0-7", "--backend", "local", "--",
                     sys.executable, "-c", program, "{n}")
    assert result.code == 1
    assert "failed tasks: 1,4,7" in result.err
    assert "task 4: exit code 4: line one | broken on 4" in result.err
    records = read_jsonl(tmp_path / "results.jsonl")
    assert [r["index"] for r in records] == list(range(8))
    assert [r["result"]["returncode"] for r in records] == [0, 1, 0, 0, 4, 0, 0, 7]
    assert records[7]["result"]["stderr"] == "line one\nbroken on 7\n"


def test_a_missing_program_fails_with_127(run_cli, tmp_path):
    result = run_cli("exec", "--grid", "n=1", "--backend", "local", "--", "./no-such-program")
    assert result.code == 1 and "exit code 127" in result.err


def test_retries_rerun_a_failing_command_on_the_node(run_cli, tmp_path):
    program = ("import os, sys; p = sys.argv[1] + '.tried'; first = not os.path.exists(p); "
               "open(p, 'a').close(); sys.exit(1 if first or sys.argv[1] == 'never' else 0)")
    result = run_cli("exec", "--grid", "name=once,never", "--retries", "2", "--backend",
                     "local", "--", sys.executable, "-c", program, "{name}")
    assert result.code == 1 and "failed tasks: 1" in result.err
    assert [(r["returncode"], r["attempts"]) for r in results(tmp_path)] == [(0, 2), (1, 3)]


def test_output_that_is_not_utf8_is_kept_exactly(run_cli, tmp_path):
    program = "import sys; sys.stdout.buffer.write(bytes([0xff, 0x41]))"
    result = run_cli("exec", "--grid", "n=1", "--backend", "local", "--",
                     sys.executable, "-c", program)
    assert result.code == 0
    stdout = results(tmp_path)[0]["stdout"]
    assert stdout.encode("utf-8", "surrogateescape") == b"\xffA"


# ---------------------------------------------------------------------------- dry run, bins
def test_dry_run_submits_nothing_and_shows_the_first_command(run_cli, dummy_slurm, tmp_path):
    result = run_cli("exec", "--grid", "x=a b,c", "--backend", "sge", "--dry-run", "--",
                     "./a.out", "--x={x}")
    assert result.code == 0, result.err
    assert "first task: ./a.out '--x=a b'" in result.out  # shell-quoted, as it would run
    assert result.out.split("would run:\n")[1].startswith("  qsub -terse")
    assert dummy_slurm.jobs() == [] and "qsub" not in dummy_slurm.history()
    assert not (tmp_path / "results.jsonl").exists()


def test_shares_by_parameter_name_and_collect(run_cli, tmp_path):
    (tmp_path / "p.jsonl").write_text("".join(
        json.dumps({"seed": seed, "run": index}) + "\n" for index, seed in enumerate(
            ["a", "b", "c", "d", "e"])))
    expected = [shares.share_of_key([seed], 2) for seed in "abcde"]
    assert expected == [0, 1, 1, 1, 1]  # sha256('["a"]') ... mod 2: fixed forever
    common = ["exec", "--params", "p.jsonl", "--bin-key", "seed", "--out", "s"]
    assert run_cli(*common, "--bin", "1/2", "--", "echo", "{seed}").code == 0
    _, *records = read_jsonl(tmp_path / "s" / "share-1-of-2.jsonl")
    assert [r["index"] for r in records] == [1, 2, 3, 4]
    missing = run_cli("collect", "s", "--out", "all.jsonl")
    assert missing.code == 1 and "missing shares of 2: 0; missing tasks: 0" in missing.err
    assert run_cli(*common, "--bin", "0/2", "--", "echo", "{seed}").code == 0
    assert run_cli("collect", "s", "--out", "all.jsonl").code == 0
    assert [r["stdout"] for r in results(tmp_path, "all.jsonl")] == [f"{s}\n" for s in "abcde"]


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("files, arguments, message", [
    ({}, ["--", "echo"], "give the parameters"),
    ({}, ["--grid", "n=1"], "no command"),
    ({}, ["--grid", "n", "--", "echo"], "expected NAME=VALUES"),
    ({}, ["--grid", "n=1,,2", "--", "echo"], "empty value"),
    ({}, ["--grid", "n=5-1", "--", "echo"], "goes down"),
    ({}, ["--grid", "n=1", "n=2", "--", "echo"], "twice"),
    ({}, ["--grid", "n=1", "--", "echo", "{m}"], "no value for {m}"),
    ({}, ["--grid", "n=1", "--", "echo", "{}"], "grid point has none"),
    ({}, ["--params", "missing.txt", "--", "echo"], "can't read --params missing.txt"),
    ({"p.jsonl": '{"x": 1}\n{"x": \n'}, ["--params", "p.jsonl", "--", "echo", "{x}"],
     "p.jsonl line 2: not JSON"),
    ({"p.csv": "a,b\n1,2\n3\n"}, ["--params", "p.csv", "--", "echo", "{a}"],
     "p.csv line 3: 1 field(s), the header has 2"),
    ({"p.csv": "a,a\n1,2\n"}, ["--params", "p.csv", "--", "echo"], "column twice"),
    ({"p.jsonl": '{"n": 1}\n'}, ["--params", "p.jsonl", "--grid", "n=1", "--", "echo"],
     "named both there and in --grid"),
    ({"p.txt": "a\n"}, ["--params", "p.txt", "--", "echo", "{x}"],
     "p.txt line 1: no value for {x}"),
    ({"p.txt": "a\n"}, ["--params", "p.txt", "--retries", "-1", "--", "echo"], "--retries"),
    ({"p.txt": "a\n"}, ["--params", "p.txt", "--bin", "1/x", "--", "echo"], "expected I/N"),
    ({"p.txt": "a\n"}, ["--params", "p.txt", "--bin", "0/2", "--bin-key", "seed", "--",
                        "echo"], "p.txt line 1 has no seed"),
])
def test_bad_input_exits_2_naming_the_problem(files, arguments, message, run_cli, tmp_path):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_cli("exec", "--backend", "local", *arguments)
    assert result.code == 2
    assert message in result.err and result.err.startswith("poolparty exec: error:")
    assert nothing_written(tmp_path)


def test_bad_input_on_a_cluster_submits_nothing(run_cli, dummy_slurm, tmp_path):
    (tmp_path / "p.txt").write_text("fine\nalso fine\n")
    result = run_cli("exec", "--params", "p.txt", "--", "./a.out", "{unknown}")
    assert result.code == 2 and dummy_slurm.history() == {}
