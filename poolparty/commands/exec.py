"""``poolparty exec --params FILE|- [--grid a=1,2 b=1-5] -- ./a.out --x {x} {}``.

Runs a command once per parameter, on the nodes. A task succeeds when the command
exits 0; otherwise it is failed with its exit code and the tail of its stderr (after
``--retries`` more attempts), and exec exits 1 naming the failed tasks. Each task's
record keeps its command, exit code, attempts, stdout and stderr: all in the one
``--out`` file, not one file per task (clusters count inodes). Output is decoded as
UTF-8 with ``surrogateescape``: ``text.encode("utf-8", "surrogateescape")`` gives back
the exact bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

from . import UsageError, common, more_help, plain_text
from .params import FORMATS, Parameter, combine, parse_grid, read_params
from .template import CommandTemplate

DESCRIPTION = plain_text(__doc__.split("\n\n")[1])


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "exec", help="run a command once per parameter", description=DESCRIPTION,
        epilog=more_help(__name__))
    common.add_trailing_arguments(
        parser, "command_argv", "COMMAND", "after --: the command and its arguments; {name} "
        "is a parameter's value, {} its line, {{ and }} are braces")
    parser.add_argument("--params", metavar="FILE", help="parameter lines; - reads stdin")
    parser.add_argument("--format", choices=FORMATS,
                        help="of --params (default: csv for .csv, jsonl for .jsonl, else "
                             "plain)")
    parser.add_argument("--grid", nargs="+", default=[], metavar="NAME=VALUES",
                        help="a cartesian product: a=1,2 b=1-5 (ranges inclusive)")
    parser.add_argument("--shell", action="store_true",
                        help="run the command with /bin/sh -c; values are passed as variables, "
                             "never as shell text; a placeholder where the shell would evaluate it "
                             "(arithmetic, eval, the command name) is refused")
    parser.add_argument("--retries", type=int, default=0, metavar="N",
                        help="run a failing command up to N more times (on the node)")
    common.add_pool_options(parser)
    common.add_output_options(parser, key_help="with --bin: share by the hash of these "
                              "parameter names (e.g. seed or seed,mode) instead of position")
    parser.set_defaults(run=run)


def run(arguments: argparse.Namespace) -> int:
    if arguments.retries < 0:
        raise UsageError(f"--retries {arguments.retries}: give a number >= 0")
    template = CommandTemplate.parse(arguments.command_argv, arguments.shell)
    parameters = combine(
        read_params(arguments.params, arguments.format) if arguments.params else None,
        parse_grid(arguments.grid))
    for parameter in parameters:
        template.check(parameter)
    runner = CommandRunner(template, arguments.retries, os.getcwd())
    task_set = common.TaskSet(
        function=runner, tasks=parameters,
        describe_task=template.describe,
        key_of=names_key(arguments.bin_key) if arguments.bin_key else None,
        is_success=lambda result: result["returncode"] == 0)
    return common.run_task_set(arguments, task_set)


@dataclass(frozen=True)
class CommandRunner:
    """Runs on the node: one parameter's command, retried, its output kept.

    In the client's working directory, as the user expects of ``./a.out``, with stdin
    closed: nobody is there to type.
    """

    template: CommandTemplate
    retries: int
    cwd: str

    def __call__(self, parameter: Parameter) -> dict[str, Any]:
        argv = self.template.argv(parameter)
        environment = {**os.environ, **self.template.environment(parameter)}
        attempt = 1
        returncode, stdout, stderr = run_once(argv, self.cwd, environment)
        while returncode != 0 and attempt <= self.retries:
            attempt += 1
            returncode, stdout, stderr = run_once(argv, self.cwd, environment)
        return {
            "command": argv[2] if self.template.shell else argv, "params": parameter.values,
            "line": parameter.line, "returncode": returncode, "attempts": attempt,
            "stdout": stdout, "stderr": stderr,
        }


def run_once(argv: list[str], cwd: str, environment: dict[str, str]) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; a program that can't be started fails as in a shell
    (127 not found, 126 not executable) instead of failing the whole chunk."""
    try:
        done = subprocess.run(argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
                              capture_output=True)
    except FileNotFoundError as error:
        return 127, "", f"{argv[0]}: command not found ({error.strerror})\n"
    except (PermissionError, OSError) as error:
        return 126, "", f"{argv[0]}: can't be run ({error})\n"
    return done.returncode, _text(done.stdout), _text(done.stderr)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="surrogateescape")


def names_key(text: str) -> Callable[[Parameter], list]:
    """``--bin-key seed,mode`` -> the values of those names of a parameter."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise UsageError(f"--bin-key {text!r}: expected parameter names, e.g. seed or seed,mode")

    def key_of(parameter: Parameter) -> list:
        missing = [name for name in names if name not in parameter.values]
        if missing:
            raise UsageError(f"--bin-key: {parameter.origin} has no {', '.join(missing)}")
        return [parameter.values[name] for name in names]

    return key_of
