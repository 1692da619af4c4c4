"""Configuration: every Pool option from keywords, environment variables or files.

A cluster user sets the same partition, time limit and work_dir in every script; the
configuration lets them say it once. Each setting is resolved, highest priority first:

1. a keyword argument (``Pool(partition="short")``);
2. an environment variable ``POOLPARTY_<NAME>`` (``POOLPARTY_PARTITION=short``);
3. the project file: ``poolparty.toml`` (top-level keys), or the ``[tool.poolparty]``
   table of ``pyproject.toml``, in the current directory or the nearest parent that
   has one (``poolparty.toml`` wins when a directory has both; a ``pyproject.toml``
   without ``[tool.poolparty]`` is passed over, as ruff does);
4. the user file ``$XDG_CONFIG_HOME/poolparty/poolparty.toml`` (default
   ``~/.config/poolparty/poolparty.toml``): one place for a cluster account's defaults,
   shared by every project of that account;
5. the defaults below.

Everything is read again each time a Pool is created, so a changed file or variable
applies to the next Pool. An unknown key in a file or an unknown ``POOLPARTY_*``
variable is an error (a typo silently ignored would submit to the wrong partition).
Backend options (``partition``, ``queue``, ...) coming from a file or the environment
are ignored, with a debug log, by backends that don't take them: one file serves
``backend="local"`` on a laptop and SLURM on the cluster.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import backends
from .errors import InvalidInputError, InvalidOptionError
from .scheduler import Scheduler
from .settings import (
    BOOL,
    COUNT,
    ENV_PREFIX,
    PATH,
    POSITIVE_INT,
    PROGRAM,
    SECONDS,
    SECONDS_OR_ZERO,
    STRING_LIST,
    Expected,
    Kind,
    Setting,
    expect,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

log = logging.getLogger("poolparty")

#: ``POOLPARTY_*`` variables that are not settings but are allowed (used by the test suite)
NON_SETTING_VARIABLES = frozenset({"POOLPARTY_REQUIRE_SCHEDULERS", "POOLPARTY_DISRUPTIVE_TESTS",
                                   "POOLPARTY_TEST_BUDGET_MINUTES"})
PROJECT_FILE = "poolparty.toml"
PYPROJECT_FILE = "pyproject.toml"

KEYWORD = "keyword argument"
DEFAULT = "default"


class ConfigError(InvalidInputError):
    """A configuration file or ``POOLPARTY_*`` variable is unreadable, unknown or bad."""


def _backend(value: Any, base: Path | None = None) -> str:
    expect(value in backends.BACKENDS, f"one of {', '.join(backends.BACKENDS)}", value)
    return value


BACKEND = Kind(f"{', '.join(backends.BACKENDS[:-1])} or {backends.BACKENDS[-1]}",
               _backend, _backend)


SETTINGS: dict[str, Setting] = {setting.name: setting for setting in [
    Setting("backend", BACKEND, "auto", "where jobs run; auto: steps of the SLURM allocation "
            "the client runs in, else SLURM arrays if sbatch is on PATH, else SGE if its qsub "
            "is, else local processes"),
    Setting("use_allocation", BOOL, True, "inside a SLURM allocation (salloc, an sbatch "
            "script) backend auto runs the workers as its job steps; false: submits jobs"),
    Setting("processes", POSITIVE_INT, None, "the most workers (jobs) of a map at once (unset: "
            "local uses every core, 8 on a cluster)"),
    Setting("work_dir", PATH, None, "where maps keep their files (unset: ./.poolparty); on "
            "a cluster a disk the compute nodes share"),
    Setting("keep_work_dir", BOOL, False, "keep a map's directory after it succeeded"),
    Setting("reuse_results", BOOL, True, "use the results an earlier run of the same map "
            "(same function, code and tasks) left in the work_dir; false: compute all again"),
    Setting("python_path", PROGRAM, None, "the python the jobs run (unset: the caller's)"),
    Setting("polling_interval", SECONDS, 5.0, "seconds between two questions to the "
            "scheduler"),
    Setting("max_num_resubmissions", COUNT, 3, "how often a chunk whose worker died without "
            "its result is reopened for the other workers"),
    Setting("verbose", BOOL, False, "print what the pool does"),
    Setting("progress", BOOL, False, "show a tqdm progress bar"),
    Setting("relay_output", BOOL, True, "print what tasks print (stdout and stderr) on "
            "the caller's stdout as their results arrive"),
    Setting("submit_workers", BOOL, True, "submit the maps' workers to the scheduler; "
            "false: the maps wait for workers started by hand (poolparty worker MAP_DIR)"),
    Setting("idle_timeout", SECONDS_OR_ZERO, 10.0, "seconds a worker with nothing left to do "
            "waits for the pool's next map (warm workers); 0: it exits at once"),
    Setting("core_dumps", BOOL, False, "let a job's process that crashes write a core file "
            "(in the job's directory: the caller's)"),
    *backends.backend_settings(),  # each backend declares its own (its class's settings)
]}


@dataclass(frozen=True)
class Resolved:
    """A setting's effective value and where it came from."""

    value: Any
    source: str


@dataclass(frozen=True)
class ConfigFile:
    """A configuration file that was found, its table of settings and how to name it."""

    path: Path
    table: dict[str, Any]
    label: str


# ---------------------------------------------------------------------------- files
def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; a malformed one is a ConfigError naming the file and line."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: can't be read: {error}") from error


def user_config_path() -> Path:
    """``$XDG_CONFIG_HOME/poolparty/poolparty.toml``, default ``~/.config/...``."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "poolparty" / PROJECT_FILE


def _pyproject_table(path: Path) -> dict[str, Any] | None:
    """The ``[tool.poolparty]`` table of a pyproject.toml, None when it has none."""
    tool = read_toml(path).get("tool", {})
    table = tool.get("poolparty") if isinstance(tool, dict) else None
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: tool.poolparty must be a table, not {table!r}")
    return table


def project_config(start: Path) -> ConfigFile | None:
    """The project's file: in ``start`` or the nearest parent that has one."""
    for directory in [start, *start.parents]:
        candidate = directory / PROJECT_FILE
        pyproject = directory / PYPROJECT_FILE
        table = _pyproject_table(pyproject) if pyproject.is_file() else None
        if candidate.is_file():
            if table is not None:
                log.warning("%s is used; [tool.poolparty] of %s is ignored", candidate, pyproject)
            return ConfigFile(candidate, read_toml(candidate), str(candidate))
        if table is not None:
            return ConfigFile(pyproject, table, f"{pyproject} [tool.poolparty]")
    return None


def config_files(cwd: Path | None = None) -> list[ConfigFile]:
    """The files that apply here, lowest priority first (user file, project file)."""
    files = []
    user_path = user_config_path()
    if user_path.is_file():
        files.append(ConfigFile(user_path, read_toml(user_path), str(user_path)))
    project = project_config(Path(cwd or Path.cwd()).absolute())
    if project is not None and not (files and files[0].path.samefile(project.path)):
        files.append(project)
    return files


# ---------------------------------------------------------------------------- layers
def _unknown(what: str, name: str, where: str, known: Iterable[str]) -> ConfigError:
    """The error for a key that is no setting: a typo must not be silently ignored."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown {what} {name} in {where}{hint}. Known: {', '.join(known)}.")


def _file_layer(config_file: ConfigFile) -> dict[str, Resolved]:
    layer = {}
    for name, value in config_file.table.items():
        if name not in SETTINGS:
            raise _unknown("setting", name, config_file.label, SETTINGS)
        setting = SETTINGS[name]
        try:
            converted = setting.kind.from_toml(value, config_file.path.parent)
        except ValueError as error:
            raise ConfigError(f"{config_file.label}: {name}: {error}") from None
        layer[name] = Resolved(converted, config_file.label)
    return layer


def _environment_layer(environ: Mapping[str, str]) -> dict[str, Resolved]:
    by_variable = {setting.variable: setting for setting in SETTINGS.values()}
    layer = {}
    for variable, text in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable in NON_SETTING_VARIABLES:
            continue
        if variable not in by_variable:
            raise _unknown("variable", variable, "the environment",
                           [*by_variable, *sorted(NON_SETTING_VARIABLES)])
        text = text.strip()
        if not text:
            continue  # an empty variable is an unset one
        setting = by_variable[variable]
        source = f"{variable} environment variable"
        try:
            layer[setting.name] = Resolved(setting.kind.from_text(text), source)
        except ValueError as error:
            raise ConfigError(f"{source}: {error}") from None
    return layer


def resolve(keywords: Mapping[str, Any] | None = None, cwd: Path | None = None
            ) -> dict[str, Resolved]:
    """Every setting's effective value and source.

    ``keywords`` are the caller's arguments: those that are settings and not None win;
    the others are not looked at (the backend judges them).
    """
    resolved = {name: Resolved(setting.default, DEFAULT) for name, setting in SETTINGS.items()}
    for config_file in config_files(cwd):
        resolved.update(_file_layer(config_file))
    resolved.update(_environment_layer(os.environ))
    resolved.update({name: Resolved(check_keyword(name, value), KEYWORD)
                     for name, value in (keywords or {}).items()
                     if name in SETTINGS and value is not None})
    for name, item in resolved.items():
        if item.source != DEFAULT:
            log.debug("setting %s = %r (from %s)", name, item.value, item.source)
    return resolved


def check_keyword(name: str, value: Any) -> Any:
    """A keyword argument's value, checked as a file's would be (a ``str`` for a number
    is refused, not converted: in code it is a mistake); returned as given.

    Raises :class:`InvalidOptionError` naming the option, the value, what it must be
    and, for a number written as text, how to write it.
    """
    if name == "backend" and isinstance(value, (Scheduler, str)):
        return value  # a name is judged where backends are made (backends.backend_class)
    candidate = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(candidate, tuple) and SETTINGS[name].kind is STRING_LIST:
        candidate = list(candidate)
    try:
        SETTINGS[name].kind.from_toml(candidate, Path.cwd())
    except ValueError as error:
        what = error.what if isinstance(error, Expected) else str(error)
        message = f"{name} must be {what}, not {value!r} ({type(value).__name__})."
        raise InvalidOptionError(message + _how_to_write(name, value)) from None
    return value


def _how_to_write(name: str, value: Any) -> str:
    """For a value given as text that the setting would read from a variable (``"4"``),
    the keyword as it should be written (``processes=4``)."""
    if not isinstance(value, str):
        return ""
    try:
        converted = SETTINGS[name].kind.from_text(value)
        SETTINGS[name].kind.from_toml(converted, Path.cwd())
    except (ValueError, TypeError):
        return ""
    return f" Write {name}={converted!r}."


def scheduler_options(resolved: Mapping[str, Resolved], backend: str | None) -> dict[str, Any]:
    """The backend options that the environment and files give to ``backend``.

    Keyword arguments are not included: the caller passes them to the backend as they
    are, so one it doesn't know stays a TypeError. Options for other backends are
    ignored, with a debug log; with ``backend=None`` (a Scheduler object, already
    built) all are.
    """
    options = {}
    for name, item in resolved.items():
        setting = SETTINGS[name]
        if setting.backends is None or item.source in (DEFAULT, KEYWORD):
            continue
        if backend in setting.backends:
            options[name] = item.value
        else:
            log.debug("%s from %s ignored: backend %s does not take it", name, item.source,
                      backend or "(a Scheduler object)")
    return options


def pool_values(keywords: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Resolved]]:
    """:func:`resolve` for a Pool: the values of its own (not backend) options, and the
    resolution itself for :func:`scheduler_options`."""
    resolved = resolve(keywords)
    values = {name: item.value for name, item in resolved.items()
              if SETTINGS[name].backends is None}
    return values, resolved
