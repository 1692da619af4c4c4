"""``poolparty run SCRIPT.py:FUNC --args NAME [-- script args]`` and ``poolparty collect``.

``run`` loads the script as a module (its ``if __name__ == "__main__":`` block does not
run), with ``sys.argv`` set to the script's path and the arguments after ``--``, then
maps FUNC over the iterable NAME of the script: a tuple item is called as
``FUNC(*item)``, anything else as ``FUNC(item)``. Every task's outcome is written to
``--out``; the command exits 1 naming the failed tasks.

The script's module is pickled *by value* (``cloudpickle.register_pickle_by_value``):
the nodes get FUNC and what it uses from the script without importing (and so re-running)
the script there. Modules the script imports are pickled by reference; the script's
directory is put on ``sys.path`` as Python does for a script, and the worker adds it on
the node, so a helper module beside the script imports there too.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.machinery
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import cloudpickle

from . import UsageError, common, more_help, plain_text, shares
from .records import output_format

DESCRIPTION = plain_text(__doc__.split("\n\n")[1])


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "run", help="map a function of a script over its inputs", description=DESCRIPTION,
        epilog=more_help(__name__))
    parser.add_argument("target", metavar="SCRIPT.py:FUNC", help="the script and its function")
    common.add_trailing_arguments(parser, "script_args", "SCRIPT_ARG",
                                  "after --: the script's arguments, its sys.argv[1:]")
    parser.add_argument("--args", required=True, metavar="NAME",
                        help="the iterable of the script the function is mapped over")
    common.add_pool_options(parser)
    common.add_output_options(parser, key_help="with --bin: share by the hash of these "
                              "argument positions (e.g. 0 or 0,2) instead of by position")
    parser.set_defaults(run=run)

    collect_parser = subcommands.add_parser(
        "collect", help="merge the share files of --bin into one output",
        description="Merge DIR/share-<i>-of-<n>.jsonl (or .pkl) into one output in input "
                    "order; exit 1 naming missing shares and tasks, or failed tasks.")
    collect_parser.add_argument("directory", metavar="DIR")
    collect_parser.add_argument("--out", default=common.DEFAULT_OUT, metavar="FILE",
                                help=f"the merged records (default {common.DEFAULT_OUT})")
    collect_parser.add_argument("--out-format", choices=("jsonl", "pickle"))
    collect_parser.set_defaults(run=collect)


def run(arguments: argparse.Namespace) -> int:
    script, function_name = split_target(arguments.target)
    module = load_script(script, arguments.script_args)
    function = attribute(module, function_name, script, "function")
    if not callable(function):
        raise UsageError(f"{function_name} in {script} is not a function but "
                         f"{type(function).__name__}")
    tasks = script_tasks(module, arguments.args, script)
    call = _Call(function)
    task_set = common.TaskSet(
        function=call, tasks=tasks, describe_task=call.describe,
        key_of=positions_key(arguments.bin_key) if arguments.bin_key else None)
    return common.run_task_set(arguments, task_set)


def collect(arguments: argparse.Namespace) -> int:
    out_format = output_format(arguments.out, arguments.out_format)
    return shares.collect(Path(arguments.directory), arguments.out, out_format)


# ---------------------------------------------------------------------------- the script
def split_target(target: str) -> tuple[Path, str]:
    path_text, colon, name = target.rpartition(":")
    if not colon or not path_text or not name.isidentifier():
        raise UsageError(f"{target!r}: expected SCRIPT.py:FUNC, e.g. analysis.py:simulate")
    path = Path(path_text).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"no script {path_text!r}")
    return path, name


def load_script(path: Path, script_args: list[str]) -> ModuleType:
    """Run the script as a module with its own argv; its ``__main__`` block does not run.

    An exception or sys.exit while loading is bad input: nothing has been submitted.
    """
    name = "poolparty_script_" + re.sub(r"\W", "_", path.stem)
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # as python does: its helpers import
    saved_argv = sys.argv
    sys.argv = [str(path), *script_args]
    try:
        loader.exec_module(module)
    except SystemExit as exit_:
        del sys.modules[name]
        raise UsageError(f"{path} exited while loading (exit code {exit_.code})") from None
    except Exception as error:
        del sys.modules[name]
        traceback.print_exc()
        raise UsageError(f"{path} raised while loading: {type(error).__name__}: {error}"
                         ) from error
    finally:
        sys.argv = saved_argv
    cloudpickle.register_pickle_by_value(module)
    return module


def attribute(module: ModuleType, name: str, script: Path, what: str) -> Any:
    if hasattr(module, name):
        return getattr(module, name)
    public = [n for n in vars(module) if not n.startswith("_")]
    close = difflib.get_close_matches(name, public, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"{script} has no {what} {name!r}{hint}")


def script_tasks(module: ModuleType, name: str, script: Path) -> list:
    """The items of the script's iterable NAME (a str would be mapped letter by letter:
    refused as the mistake it is)."""
    iterable = attribute(module, name, script, "iterable")
    if isinstance(iterable, (str, bytes)):
        raise UsageError(f"{name} in {script} is a {type(iterable).__name__}, not an iterable "
                         f"of arguments; wrap it in a list for a single task")
    try:
        return list(iterable)
    except TypeError as error:
        raise UsageError(f"{name} in {script} is not iterable "
                         f"({type(iterable).__name__})") from error


class _Call:
    """The task function: ``func(*item)`` for a tuple item, ``func(item)`` otherwise.

    A class (picklable by reference) holding the user's function (pickled by value).
    """

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, item: Any) -> Any:
        return self.function(*item) if isinstance(item, tuple) else self.function(item)

    def describe(self, item: Any) -> str:
        """The call as the user would write it, e.g. ``simulate(3, 0.5)``."""
        arguments = item if isinstance(item, tuple) else (item,)
        text = ", ".join(repr(argument) for argument in arguments)
        name = getattr(self.function, "__name__", "FUNC")
        return f"{name}({text})" if len(text) < 200 else f"{name}({text[:200]} ...)"


def positions_key(text: str) -> Callable[[Any], list]:
    """``--bin-key 0,2`` -> the values at those positions of a tuple item; 0 is a
    scalar item itself."""
    try:
        positions = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--bin-key {text!r}: expected argument positions, e.g. 0 or 0,2"
                         ) from None
    if any(position < 0 for position in positions):
        raise UsageError(f"--bin-key {text!r}: positions start at 0")

    def key_of(item: Any) -> list:
        arguments = item if isinstance(item, tuple) else (item,)
        if max(positions) >= len(arguments):
            raise UsageError(f"--bin-key {text!r}: the task {item!r:.80} has only "
                             f"{len(arguments)} argument(s)")
        return [arguments[position] for position in positions]

    return key_of
