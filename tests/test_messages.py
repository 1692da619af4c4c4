"""Errors in the user's words: a bad option names the option, its value and the fix;
the command line reports poolparty's errors in a line or two with exit code 2; its
--help is plain text; a map whose first submission is refused leaves no directory."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import made_backend

import poolparty
from poolparty import cli


# ---------------------------------------------------------------------- unknown options
def test_a_misspelt_option_names_itself_the_backend_and_the_close_match():
    with pytest.raises(poolparty.InvalidInputError) as caught:
        poolparty.Pool(backend="slurm-array", partiton="short")
    message = str(caught.value)
    assert isinstance(caught.value, TypeError)  # what an unexpected keyword always was
    assert "'partiton'" in message and "'slurm-array'" in message
    assert "did you mean 'partition'?" in message
    assert "Valid options:" in message and "sbatch_args" in message and "processes" in message
    assert "__init__" not in message and "SlurmBase" not in message


@pytest.mark.parametrize("backend, option, owners", [
    ("local", "partition", "slurm-array, slurm"),
    ("sge", "memory", "slurm-array, slurm"),
    ("slurm-array", "queue", "sge"),
])
def test_an_option_of_another_backend_says_whose_it_is(backend, option, owners):
    with pytest.raises(TypeError) as caught:
        poolparty.Pool(backend=backend, **{option: "x"})
    message = str(caught.value)
    assert f"'{option}'" in message and f"'{backend}'" in message
    assert f"it is an option of {owners}" in message


def test_a_misspelt_pool_option_suggests_the_pool_option():
    with pytest.raises(TypeError, match=r"did you mean 'polling_interval'\?"):
        poolparty.Pool(backend="local", poling_interval=1)


# ---------------------------------------------------------------------- values
@pytest.mark.parametrize("backend, option, value, expected", [
    ("local", "processes", "4", "processes must be an int >= 1, not '4' (str)"),
    ("local", "processes", 0, "processes must be an int >= 1, not 0 (int)"),
    ("local", "processes", 2.0, "processes must be an int >= 1, not 2.0 (float)"),
    ("local", "polling_interval", "5", "polling_interval must be a number > 0, not '5' (str)"),
    ("local", "polling_interval", 0, "polling_interval must be a number > 0, not 0 (int)"),
    ("local", "max_num_resubmissions", "3", "max_num_resubmissions must be an int >= 0, not '3'"),
    ("local", "keep_work_dir", "yes", "keep_work_dir must be true or false, not 'yes' (str)"),
    ("local", "verbose", "no", "verbose must be true or false, not 'no' (str)"),
    ("local", "work_dir", 5, "work_dir must be a string, not 5 (int)"),
    ("local", "backend", "slurm_array", "unknown backend 'slurm_array' (did you mean "
                                        "'slurm-array'?); choose one of auto, local"),
    ("local", "backend", 5,
     "backend must be one of auto, local, slurm-steps, slurm-array, slurm, sge, pbs, lsf, "
     "not 5"),
    ("slurm-array", "cpus_per_task", "2", "cpus_per_task must be an int >= 1, not '2' (str)"),
    ("slurm-array", "call_timeout", "x", "call_timeout must be a number > 0, not 'x' (str)"),
    ("slurm-array", "sbatch_args", "--qos=long", "sbatch_args must be a list of strings"),
    ("sge", "parallel_environment", "smp", "parallel_environment must be [name, slots]"),
])
def test_a_value_of_the_wrong_type_names_the_option_the_value_and_what_it_must_be(
        backend, option, value, expected):
    with pytest.raises(poolparty.InvalidInputError) as caught:
        poolparty.Pool(**{"backend": backend, option: value})
    assert expected in str(caught.value)


def test_a_number_given_as_text_says_how_to_write_it():
    with pytest.raises(poolparty.InvalidInputError, match=r"processes=4\b"):
        poolparty.Pool(backend="local", processes="4")


def test_values_of_the_right_type_are_taken():
    from pathlib import Path

    pool = poolparty.Pool(backend="local", processes=2, polling_interval=1,
                          work_dir=Path("somewhere"), keep_work_dir=False, verbose=False)
    pool.terminate()


def test_a_bad_value_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("POOLPARTY_PROCESSES", "four")
    with pytest.raises(poolparty.InvalidInputError, match="POOLPARTY_PROCESSES"):
        poolparty.Pool(backend="local")


# ---------------------------------------------------------------------- the command line
def test_demo_with_a_scheduler_refusing_the_job_says_so_in_a_line_and_exits_2(
        run_cli, dummy_slurm, monkeypatch):
    monkeypatch.setenv("POOLPARTY_PARTITION", "nosuchpartition")
    result = run_cli("demo", "--backend", "slurm-array", "--tasks", "3")
    assert result.code == 2
    assert "invalid partition" in result.err
    assert "Traceback" not in result.err
    assert result.err.startswith("poolparty demo: error: ")


def test_demo_with_a_bad_setting_exits_2_without_a_traceback(run_cli, monkeypatch):
    monkeypatch.setenv("POOLPARTY_PROCESSES", "four")
    result = run_cli("demo", "--backend", "local", "--tasks", "3")
    assert result.code == 2
    assert "POOLPARTY_PROCESSES" in result.err and "Traceback" not in result.err


def test_demo_without_the_scheduler_installed_exits_2(run_cli, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = run_cli("demo", "--backend", "sge")
    assert result.code == 2
    assert "backend='local'" in result.err and "Traceback" not in result.err


def subcommand_helps() -> dict[str, str]:
    """The --help text of the command line and of each of its subcommands."""
    parser = cli.build_parser()
    helps = {"poolparty": parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                helps[name] = subparser.format_help()
    return helps


def test_every_help_is_plain_text_without_references_to_files_not_installed():
    helps = subcommand_helps()
    assert {"demo", "run", "collect", "exec", "status", "top", "config"} <= set(helps)
    for name, text in helps.items():
        for markup in ("``", ".. ", ":ref:", ":doc:", "docs/", ".rst"):
            assert markup not in text, f"{name} --help shows {markup!r}:\n{text}"


def test_help_runs_as_a_program():
    done = subprocess.run([sys.executable, "-m", "poolparty.cli", "run", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "SCRIPT.py:FUNC" in done.stdout
    assert "``" not in done.stdout


# ---------------------------------------------------------------------- refused submission
@pytest.mark.parametrize("param", ["dummy-slurm-array", "dummy-slurm", "dummy-sge",
                                   "real-slurm-array", "real-sge"])
def test_a_refused_first_submission_leaves_no_map_directory(param, work_root, tmp_path):
    with made_backend(param, work_root, tmp_path) as made:
        if param.endswith("sge"):
            pool, says = made.make_pool(queue="nosuch.q"), "(?i)queue"
        else:
            pool, says = made.make_pool(partition="nosuchpartition"), "(?i)invalid partition"
        with pytest.raises(poolparty.SchedulerCommandError, match=says):
            pool.map(abs, range(3))
        pool.terminate()
        assert [p.name for p in work_root.iterdir()] == []
        assert made.queued_jobs() == []


def test_a_failure_after_jobs_were_submitted_keeps_the_map_directory(work_root, tmp_path):
    with made_backend("dummy-slurm-array", work_root, tmp_path) as made:
        def fail(x):
            raise ValueError(x)

        with pytest.raises(ValueError):
            made.make_pool().map(fail, range(2))
        assert len([p for p in work_root.iterdir() if not p.name.startswith(".")]) == 1


def test_ctrl_c_in_a_command_exits_130_without_a_traceback(run_cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(poolparty.Pool, "map", interrupted)
    result = run_cli("demo", "--backend", "local", "--tasks", "3")
    assert result.code == 130
    assert "interrupted" in result.err and "Traceback" not in result.err
