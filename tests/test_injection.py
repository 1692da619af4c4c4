"""``poolparty exec --shell``: no parameter value ever runs as a command.

Every shell context a template may put a placeholder in, with hostile values: the
value comes through verbatim, or the template is refused before anything is
submitted. No ``pwn`` file may ever appear.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from cli_helpers import nothing_written, read_jsonl

from poolparty.commands.params import Parameter
from poolparty.commands.template import CommandTemplate

HOSTILE = [
    "$(touch pwn)", "`touch pwn`", "a[$(touch pwn)]", "'; touch pwn; '", '"; touch pwn; "',
    '"', "'", "a\nb", "*", "~", "-n", "", "x y", "\\", "$HOME", "${IFS}", "{x}", "%s",
    "x]; touch pwn; [", "1",
]
#: hostile values a --grid can give (no commas, none empty)
GRID_VALUES = ["$(touch pwn)", "`touch pwn`", "a[$(touch pwn)]", "*", "~", "-n", "x y", "1"]

#: (template, what it prints for a value): the value comes through as it is
ALLOWED = {
    "plain word": ("printf '%s|' {x}", "{v}|"),
    "inside a word": ("printf '%s|' a{x}b --opt={x}", "a{v}b|--opt={v}|"),
    "double quotes": ("printf '%s|' \"a {x} b\"", "a {v} b|"),
    "single quotes": ("printf '%s|' 'a {x} b'", "a {v} b|"),
    "default of an unset variable": ("printf '%s|' ${unset_var:-{x}}", "{v}|"),
    "quoted default": ("printf '%s|' \"${unset_var:-{x}}\"", "{v}|"),
    "quoted default in quotes": ("printf '%s|' \"${unset_var:-\"{x}\"}\"", "{v}|"),
    "command substitution": ("printf '%s|' \"$(printf %s {x})\"", "{v}|"),
    "case word": ("case {x} in *) printf '%s|' {x};; esac", "{v}|"),
    "for list": ("for a in {x}; do printf '%s|' \"$a\"; done", "{v}|"),
    "redirection": ("printf %s {x} > out.$$ && printf '%s|' \"$(cat -- out.$$)\"", "{v}|"),
    "pipeline": ("printf %s {x} | cat; printf '|'", "{v}|"),
}

#: templates refused whatever the values are
REFUSED = {
    "command name": "{x} a b",
    "command name after a keyword": "if true; then {x}; fi",
    "command name after command": "command {x} a",
    "assignment": "X={x}; echo \"$X\"",
    "assignment before a command": "X={x} env",
    "backticks": "echo `echo {x}`",
    "eval": "eval echo {x}",
    "eval in a substitution": "echo $(eval echo {x})",
    "dot": ". {x}",
    "trap": "trap {x} EXIT",
    "let": "let {x}",
    "read": "read {x} < /dev/null",
    "printf's format": "printf {x}",
    "printf -v": "printf -v {x} %s 1",
    "coproc": "coproc {x}",
    "test -v": "[ -v {x} ]",
    "two values in a test": "[ {x} {x} ]",
    "double brackets": "[[ {x} == a ]]",
    "arithmetic command": "(( {x} ))",
    "indirection": "echo ${!{x}}",
    "substring offset": "echo ${unset_var:{x}}",
    "array subscript": "echo ${a[{x}]}",
    "subscript assignment": "a[{x}]=1",
    "a bracket in a word": "echo a[{x}]",
    "here-document": "cat <<EOF\n{x}\nEOF",
    "here-string": "cat <<< {x}",
    "ansi-c quotes": "echo $'{x}'",
    "backslash": "echo \\{x}",
}


def write_params(tmp_path, values) -> None:
    (tmp_path / "params.jsonl").write_text(
        "".join(json.dumps({"x": value}) + "\n" for value in values))


def stdouts(tmp_path) -> list[str]:
    return [record["result"]["stdout"] for record in read_jsonl(tmp_path / "results.jsonl")]


def no_pwn(tmp_path) -> bool:
    return not list(tmp_path.rglob("pwn"))


@pytest.mark.parametrize("backend", ["local", "slurm-array"])
@pytest.mark.parametrize("context", ALLOWED)
def test_a_value_comes_through_verbatim_in_every_context_the_shell_template_accepts(
        context, backend, run_cli, tmp_path, request):
    if backend != "local":
        request.getfixturevalue("dummy_slurm")
    template, printed = ALLOWED[context]
    write_params(tmp_path, HOSTILE)
    result = run_cli("exec", "--params", "params.jsonl", "--backend", backend, "--shell",
                     "--", template)
    assert result.code == 0, result.err
    assert stdouts(tmp_path) == [printed.replace("{v}", value) for value in HOSTILE]
    assert no_pwn(tmp_path)


@pytest.mark.parametrize("backend", ["local", "slurm-array"])
def test_grid_values_come_through_verbatim(backend, run_cli, tmp_path, request):
    if backend != "local":
        request.getfixturevalue("dummy_slurm")
    result = run_cli("exec", "--grid", "x=" + ",".join(GRID_VALUES), "--backend", backend,
                     "--shell", "--", "printf '%s|' {x} \"{x}\" '{x}'")
    assert result.code == 0, result.err
    assert stdouts(tmp_path) == [f"{value}|{value}|{value}|" for value in GRID_VALUES]
    assert no_pwn(tmp_path)


@pytest.mark.parametrize("context", REFUSED)
def test_a_position_where_the_shell_evaluates_a_value_is_refused_before_submitting(
        context, run_cli, tmp_path, dummy_slurm):
    write_params(tmp_path, HOSTILE)
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "slurm-array",
                     "--shell", "--", REFUSED[context])
    assert result.code == 2, (result.out, result.err)
    assert "--shell: the placeholder {x}" in result.err
    assert nothing_written(tmp_path) and no_pwn(tmp_path)
    assert dummy_slurm.jobs() == []


@pytest.mark.parametrize("template", ["echo $(( {x} * 2 ))", "echo $(( $(echo {x}) * 2 ))"])
def test_arithmetic_takes_decimal_integers_and_refuses_any_other_value(
        template, run_cli, tmp_path, dummy_slurm):
    result = run_cli("exec", "--grid", "x=-3,0,7", "--backend", "slurm-array", "--shell",
                     "--", template)
    assert result.code == 0, result.err
    assert stdouts(tmp_path) == ["-6\n", "0\n", "14\n"]
    for value in HOSTILE + ["010", "1+1", "0x10"]:
        if value == "1":
            continue
        write_params(tmp_path, ["1", value])
        result = run_cli("exec", "--params", "params.jsonl", "--backend", "slurm-array",
                         "--shell", "--out", "refused.jsonl", "--", template)
        assert result.code == 2, value
        assert "params.jsonl line 2" in result.err and "integer" in result.err
        assert not (tmp_path / "refused.jsonl").exists() and no_pwn(tmp_path)


def test_the_reported_case_runs_nothing_on_local_processes(run_cli, tmp_path):
    write_params(tmp_path, ["$(touch pwnD)"])
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "local", "--shell",
                     "--", "echo $(( {x} ))")
    assert result.code == 2 and "integer" in result.err
    assert not (tmp_path / "pwnD").exists()


@pytest.mark.parametrize("value, problem", [("a\0b", "NUL"), ("a\ud800", "surrogate")])
def test_a_value_no_program_argument_can_hold_is_refused_before_submitting(
        value, problem, run_cli, tmp_path):
    write_params(tmp_path, [value])
    for shell in ([], ["--shell"]):
        result = run_cli("exec", "--params", "params.jsonl", "--backend", "local", *shell,
                         "--", "echo", "{x}")
        assert result.code == 2 and problem in result.err, result.err
        assert nothing_written(tmp_path)


SHELLS = [shell for shell in (["dash"], ["bash"], ["bash", "--posix"], ["ksh"], ["zsh"])
          if shutil.which(shell[0])]


@pytest.mark.parametrize("shell", SHELLS, ids=" ".join)
def test_every_accepted_context_is_verbatim_in_each_shell_sh_may_be(shell, tmp_path):
    """/bin/sh is dash here, bash on many clusters: the rendered command must hold in
    both (run directly, without a pool, so every shell is quick to try)."""
    for context, (template, printed) in ALLOWED.items():
        command = CommandTemplate.parse([template], shell=True)
        for value in HOSTILE:
            parameter = Parameter({"x": value}, None, "test")
            done = subprocess.run(
                [*shell, "-c", command.argv(parameter)[2]], cwd=tmp_path, capture_output=True,
                text=True, env={**os.environ, **command.environment(parameter)}, timeout=30)
            assert (done.returncode, done.stdout) == (0, printed.replace("{v}", value)), (
                context, value, done.stderr)
        assert no_pwn(tmp_path)


def test_the_dry_run_shows_the_values_beside_the_script(run_cli, tmp_path):
    write_params(tmp_path, ["$(touch pwn)"])
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "local", "--shell",
                     "--dry-run", "--", "echo {x}")
    assert result.code == 0, result.err
    assert "PP_VALUE_1='$(touch pwn)' /bin/sh -c 'echo \"${PP_VALUE_1}\"'" in result.out
    assert no_pwn(tmp_path)


@pytest.mark.real_slurm
def test_real_slurm_array_passes_hostile_values_verbatim(run_cli, tmp_path):
    from conftest import require_scheduler

    require_scheduler("slurm")
    write_params(tmp_path, HOSTILE)
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "slurm-array",
                     "--shell", "--", "printf '%s|' {x} \"a{x}\" '{x}' \"$(printf %s {x})\"")
    assert result.code == 0, result.err
    assert stdouts(tmp_path) == [f"{v}|a{v}|{v}|{v}|" for v in HOSTILE]
    write_params(tmp_path, ["$(touch pwnD)"])
    result = run_cli("exec", "--params", "params.jsonl", "--backend", "slurm-array",
                     "--shell", "--out", "refused.jsonl", "--", "echo $(( {x} ))")
    assert result.code == 2 and "integer" in result.err
    assert no_pwn(tmp_path) and not (tmp_path / "pwnD").exists()
