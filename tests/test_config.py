"""Configuration: keywords > POOLPARTY_* variables > project file > user file > defaults."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

import poolparty
import poolparty.slurm.array
import poolparty.sun_grid_engine
from poolparty import cli, config
from poolparty.config import ConfigError

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.rst"


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty project directory, with a home of our own and no POOLPARTY_*
    settings from the caller's environment: the user's real config must not leak in."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for variable in list(os.environ):
        if variable.startswith("POOLPARTY_") and variable not in config.NON_SETTING_VARIABLES:
            monkeypatch.delenv(variable)
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def user_file(text: str) -> Path:
    return write(Path.home() / ".config" / "poolparty" / "poolparty.toml", text)


def effective(name: str) -> tuple:
    item = config.resolve()[name]
    return item.value, item.source


def fake_commands(*names: str) -> dict[str, list[str]]:
    """Scheduler commands that exist (nothing is submitted in these tests)."""
    return {name: [sys.executable] for name in names}


SLURM_COMMANDS = fake_commands("sbatch", "squeue", "scancel", "scontrol")
SGE_COMMANDS = fake_commands("qsub", "qstat", "qdel", "qconf")


# ---------------------------------------------------------------------------- precedence
def test_without_configuration_everything_is_a_default():
    resolved = config.resolve()
    assert {item.source for item in resolved.values()} == {"default"}
    assert resolved["polling_interval"].value == 5.0
    assert resolved["max_num_resubmissions"].value == 3
    assert resolved["backend"].value == "auto"


def test_each_level_beats_the_one_below(project, monkeypatch):
    user = user_file("polling_interval = 1\n")
    assert effective("polling_interval") == (1.0, str(user))

    project_file = write(project / "poolparty.toml", "polling_interval = 2\n")
    assert effective("polling_interval") == (2.0, str(project_file))

    monkeypatch.setenv("POOLPARTY_POLLING_INTERVAL", "3")
    assert effective("polling_interval") == (3.0, "POOLPARTY_POLLING_INTERVAL environment variable")

    keyword = config.resolve({"polling_interval": 4})["polling_interval"]
    assert (keyword.value, keyword.source) == (4, "keyword argument")


def test_levels_merge_key_by_key(project, monkeypatch):
    user = user_file('partition = "user-partition"\ntime = "1:00:00"\n')
    project_file = write(project / "poolparty.toml", 'partition = "project-partition"\n')
    monkeypatch.setenv("POOLPARTY_MEMORY", "2G")
    assert effective("time") == ("1:00:00", str(user))
    assert effective("partition") == ("project-partition", str(project_file))
    assert effective("memory") == ("2G", "POOLPARTY_MEMORY environment variable")


def test_the_user_file_follows_xdg_config_home(tmp_path, monkeypatch):
    path = write(tmp_path / "xdg" / "poolparty" / "poolparty.toml", "verbose = true\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert effective("verbose") == (True, str(path))


def test_a_keyword_of_none_is_not_given():
    write(Path("poolparty.toml"), "max_num_resubmissions = 5\n")
    assert config.resolve({"max_num_resubmissions": None})["max_num_resubmissions"].value == 5


# ---------------------------------------------------------------------------- files
def test_pyproject_tool_poolparty_applies_in_subdirectories(project, monkeypatch):
    pyproject = write(project / "pyproject.toml",
                      '[project]\nname = "x"\n\n[tool.poolparty]\nmax_num_resubmissions = 7\n')
    deep = project / "src" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert effective("max_num_resubmissions") == (7, f"{pyproject} [tool.poolparty]")


def test_a_pyproject_without_the_table_is_passed_over(project, monkeypatch):
    found = write(project / "poolparty.toml", 'queue = "all.q"\n')
    write(project / "sub" / "pyproject.toml", '[project]\nname = "sub"\n')
    monkeypatch.chdir(project / "sub")
    assert effective("queue") == ("all.q", str(found))


def test_poolparty_toml_wins_over_pyproject_in_the_same_directory(project):
    write(project / "pyproject.toml", '[tool.poolparty]\nqueue = "from-pyproject"\n')
    found = write(project / "poolparty.toml", 'queue = "from-poolparty-toml"\n')
    assert effective("queue") == ("from-poolparty-toml", str(found))


def test_a_relative_work_dir_in_a_file_is_relative_to_the_file(project, monkeypatch):
    write(project / "poolparty.toml", 'work_dir = "runs"\n')
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    assert effective("work_dir")[0] == str(project / "runs")


def test_every_kind_of_value_from_a_file(project):
    write(project / "poolparty.toml", """
        backend = "local"
        processes = 4
        keep_work_dir = true
        polling_interval = 0.5
        gpus = "a100:2"
        sbatch_args = ["--qos=long", "--export=A,B"]
        resources = { h_vmem = "2G", h_rt = "1:00:00" }
        parallel_environment = ["smp", 4]
        call_timeout = 30
    """)
    values = {name: item.value for name, item in config.resolve().items()}
    assert values["backend"] == "local"
    assert values["processes"] == 4
    assert values["keep_work_dir"] is True
    assert values["polling_interval"] == 0.5
    assert values["gpus"] == "a100:2"
    assert values["sbatch_args"] == ["--qos=long", "--export=A,B"]
    assert values["resources"] == {"h_vmem": "2G", "h_rt": "1:00:00"}
    assert values["parallel_environment"] == ("smp", 4)
    assert values["call_timeout"] == 30.0


# ---------------------------------------------------------------------------- environment
@pytest.mark.parametrize("variable, text, name, expected", [
    ("POOLPARTY_VERBOSE", "yes", "verbose", True),
    ("POOLPARTY_VERBOSE", "TRUE", "verbose", True),
    ("POOLPARTY_VERBOSE", "0", "verbose", False),
    ("POOLPARTY_PROCESSES", " 4 ", "processes", 4),
    ("POOLPARTY_POLLING_INTERVAL", "0.5", "polling_interval", 0.5),
    ("POOLPARTY_MAX_NUM_RESUBMISSIONS", "0", "max_num_resubmissions", 0),
    ("POOLPARTY_SBATCH_ARGS", "--qos=long, --exclusive", "sbatch_args",
     ["--qos=long", "--exclusive"]),
    ("POOLPARTY_SBATCH_ARGS", '["--export=A,B"]', "sbatch_args", ["--export=A,B"]),
    ("POOLPARTY_RESOURCES", "h_vmem=2G,h_rt=1:00:00", "resources",
     {"h_vmem": "2G", "h_rt": "1:00:00"}),
    ("POOLPARTY_RESOURCES", '{"h_vmem": "2G"}', "resources", {"h_vmem": "2G"}),
    ("POOLPARTY_PARALLEL_ENVIRONMENT", "smp,4", "parallel_environment", ("smp", 4)),
    ("POOLPARTY_PARALLEL_ENVIRONMENT", '["mpi", 8]', "parallel_environment", ("mpi", 8)),
    ("POOLPARTY_GPUS", "2", "gpus", 2),
    ("POOLPARTY_GPUS", "a100:2", "gpus", "a100:2"),
    ("POOLPARTY_BACKEND", "sge", "backend", "sge"),
    ("POOLPARTY_VERBOSE", "", "verbose", False),  # empty is unset
])
def test_environment_values_are_converted_by_the_settings_type(
        monkeypatch, variable, text, name, expected):
    monkeypatch.setenv(variable, text)
    assert config.resolve()[name].value == expected


def test_a_path_from_the_environment_expands_the_home_directory(monkeypatch):
    monkeypatch.setenv("POOLPARTY_WORK_DIR", "~/runs")
    assert effective("work_dir")[0] == str(Path.home() / "runs")


@pytest.mark.parametrize("variable, text, message", [
    ("POOLPARTY_VERBOSE", "maybe", "1/0, true/false or yes/no"),
    ("POOLPARTY_PROCESSES", "0", "int >= 1"),
    ("POOLPARTY_PROCESSES", "four", "expected an int"),
    ("POOLPARTY_POLLING_INTERVAL", "-1", "number > 0"),
    ("POOLPARTY_SBATCH_ARGS", "[1, 2]", "JSON list"),
    ("POOLPARTY_SBATCH_ARGS", "[oops", "not valid JSON"),
    ("POOLPARTY_RESOURCES", "h_vmem", "key=value"),
    ("POOLPARTY_PARALLEL_ENVIRONMENT", "smp", "name,slots"),
    ("POOLPARTY_BACKEND", "condor", "one of auto, local"),
])
def test_a_bad_environment_value_names_the_variable_and_the_format(
        monkeypatch, variable, text, message):
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        config.resolve()
    assert f"{variable} environment variable" in str(error.value)


def test_an_unknown_environment_variable_is_an_error_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("POOLPARTY_PARTITON", "short")
    with pytest.raises(ConfigError) as error:
        config.resolve()
    message = str(error.value)
    assert "POOLPARTY_PARTITON" in message and "the environment" in message
    assert "did you mean POOLPARTY_PARTITION?" in message
    assert "POOLPARTY_QUEUE" in message  # the known names are listed


def test_the_test_suites_variable_is_allowed(monkeypatch):
    monkeypatch.setenv("POOLPARTY_REQUIRE_SCHEDULERS", "slurm,sge")
    assert "POOLPARTY_REQUIRE_SCHEDULERS" in config.NON_SETTING_VARIABLES
    config.resolve()


# ---------------------------------------------------------------------------- bad files
def test_an_unknown_key_in_a_file_names_it_the_file_and_a_suggestion(project):
    path = write(project / "poolparty.toml", "polling_intervall = 1\n")
    with pytest.raises(ConfigError) as error:
        config.resolve()
    message = str(error.value)
    assert "polling_intervall" in message and str(path) in message
    assert "did you mean polling_interval?" in message
    assert "max_num_resubmissions" in message


def test_an_unknown_key_in_pyproject_names_the_table(project):
    path = write(project / "pyproject.toml", "[tool.poolparty.slurm]\npartition = 'x'\n")
    with pytest.raises(ConfigError, match=re.escape(f"slurm in {path} [tool.poolparty]")):
        config.resolve()


def test_an_unknown_key_in_the_user_file_is_an_error_too():
    path = user_file("quue = 'all.q'\n")
    with pytest.raises(ConfigError, match=re.escape(f"quue in {path} (did you mean queue?)")):
        config.resolve()


@pytest.mark.parametrize("text, message", [
    ('processes = "4"', "processes: expected an int >= 1, got '4'"),
    ("max_num_resubmissions = -1", "max_num_resubmissions: expected an int >= 0"),
    ('keep_work_dir = "yes"', "keep_work_dir: expected true or false"),
    ("partition = 5", "partition: expected a string"),
    ('sbatch_args = "--qos=long"', "sbatch_args: expected a list of strings"),
    ('parallel_environment = ["smp"]', "parallel_environment: expected [name, slots]"),
    ('backend = "condor"', "backend: expected one of"),
])
def test_a_bad_value_in_a_file_names_the_file_and_the_key(project, text, message):
    path = write(project / "poolparty.toml", text + "\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        config.resolve()


def test_a_tool_poolparty_that_is_no_table_is_an_error(project):
    write(project / "pyproject.toml", "[tool]\npoolparty = 5\n")
    with pytest.raises(ConfigError, match="tool.poolparty must be a table"):
        config.resolve()


def test_malformed_toml_is_an_error_naming_the_file_and_line(project):
    path = write(project / "poolparty.toml", 'partition = "short"\nprocesses = \n')
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*line 2"):
        config.resolve()
    with pytest.raises(ConfigError, match="line 2"):  # a Pool raises it as well
        poolparty.Pool(backend="local")


def test_a_config_error_is_an_invalid_input_error():
    assert issubclass(ConfigError, poolparty.InvalidInputError)


# ---------------------------------------------------------------------------- pools
def test_backend_options_in_a_file_do_not_break_the_local_backend(project, monkeypatch):
    write(project / "poolparty.toml", """
        partition = "short"
        sbatch_args = ["--qos=long"]
        queue = "all.q"
        resources = { h_vmem = "2G" }
        call_timeout = 30
        polling_interval = 0.2
    """)
    monkeypatch.setenv("POOLPARTY_TIME", "1:00:00")
    with poolparty.Pool(2, backend="local") as pool:
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]


def test_a_backend_keyword_the_backend_does_not_take_is_still_a_type_error(project):
    write(project / "poolparty.toml", 'partition = "short"\n')
    with pytest.raises(TypeError):
        poolparty.Pool(backend="local", partition="gpu")


def test_file_and_environment_options_reach_the_slurm_backend(project, monkeypatch):
    write(project / "poolparty.toml", """
        partition = "short"
        sbatch_args = ["--qos=long"]
        queue = "all.q"
        call_timeout = 30
    """)
    monkeypatch.setenv("POOLPARTY_TIME", "1:00:00")
    pool = poolparty.Pool(backend="slurm-array", commands=SLURM_COMMANDS)
    arguments = pool.scheduler.resource_args
    assert {"--partition=short", "--time=1:00:00", "--qos=long"} <= set(arguments)
    assert pool.scheduler.call_timeout == 30.0


def test_a_keyword_beats_the_file_for_a_backend_option(project):
    write(project / "poolparty.toml", 'partition = "short"\ntime = "1:00:00"\n')
    pool = poolparty.Pool(backend="slurm", commands=SLURM_COMMANDS, partition="long",
                          time=None)  # None: no time limit, whatever the file says
    assert pool.scheduler.resource_args == ["--partition=long"]


def test_the_backend_itself_can_come_from_a_file(project):
    write(project / "poolparty.toml", 'backend = "local"\nprocesses = 2\n')
    pool = poolparty.Pool()
    assert pool.scheduler.name == "local"
    assert pool.scheduler.default_max_running == 2


def test_a_local_map_uses_the_work_dir_and_options_of_the_file(project):
    write(project / "poolparty.toml", """
        work_dir = "runs"
        keep_work_dir = true
        max_num_resubmissions = 5
        polling_interval = 0.2
    """)
    pool = poolparty.Pool(2, backend="local")
    assert pool.map(abs, [-1, -2]) == [1, 2]
    kept = list((project / "runs").glob("map-*"))
    assert len(kept) == 1, "the map ran in the file's work_dir and was kept"
    assert pool.maps.settings.max_num_resubmissions == 5
    assert pool.maps.settings.polling_interval == 0.2


def test_a_work_dir_keyword_beats_the_file(project, tmp_path):
    write(project / "poolparty.toml", 'work_dir = "runs"\nkeep_work_dir = true\n')
    pool = poolparty.Pool(2, backend="local", work_dir=tmp_path / "explicit",
                          polling_interval=0.2)
    assert pool.map(abs, [-1]) == [1]
    assert len(list((tmp_path / "explicit").glob("map-*"))) == 1
    assert not (project / "runs").exists()


def test_the_executor_gets_the_configuration(project):
    write(project / "poolparty.toml", 'work_dir = "runs"\nkeep_work_dir = true\n'
                                      "polling_interval = 0.2\n")
    with poolparty.Executor(2, backend="local") as executor:
        assert executor.submit(abs, -3).result(timeout=120) == 3
    assert len(list((project / "runs").glob("map-*"))) == 1


def test_pypoolparty_pools_get_the_configuration(project):
    write(project / "poolparty.toml", """
        partition = "short"
        queue = "all.q"
        processes = 3
        polling_interval = 0.3
        max_num_resubmissions = 6
    """)
    slurm = poolparty.slurm.array.Pool(commands=SLURM_COMMANDS)
    assert "--partition=short" in slurm.scheduler.resource_args
    assert slurm.scheduler.max_running == 3
    settings = slurm.maps.settings
    assert (settings.polling_interval, settings.max_num_resubmissions) == (0.3, 6)
    sge = poolparty.sun_grid_engine.Pool(num_simultaneously_running_tasks=2,
                                         commands=SGE_COMMANDS)
    assert sge.scheduler.resource_args == ["-q", "all.q"]
    assert sge.scheduler.max_running == 2  # the argument beats the file


def test_pypoolparty_defaults_are_unchanged_without_configuration():
    pool = poolparty.slurm.array.Pool(commands=SLURM_COMMANDS)
    assert pool.scheduler.call_timeout == 60.0
    settings = pool.maps.settings
    assert (settings.polling_interval, settings.max_num_resubmissions) == (5.0, 3)
    assert pool.scheduler.max_running is None


# ---------------------------------------------------------------------------- the command
def test_poolparty_config_prints_values_and_sources(project, monkeypatch, capsys):
    path = write(project / "poolparty.toml", 'partition = "short"\n')
    monkeypatch.setenv("POOLPARTY_VERBOSE", "yes")
    assert cli.main(["config"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert lines["partition"].split(None, 2)[1:] == ['"short"', str(path)]
    assert lines["verbose"].split(None, 2)[1:] == ["true", "POOLPARTY_VERBOSE environment variable"]
    assert lines["polling_interval"].split(None, 2)[1:] == ["5.0", "default"]
    assert lines["processes"].split(None, 2)[1:] == ["-", "default"]


def test_poolparty_config_json(project, capsys):
    path = write(project / "pyproject.toml",
                 "[tool.poolparty]\nparallel_environment = ['smp', 4]\n")
    assert cli.main(["config", "--json"]) == 0
    settings = json.loads(capsys.readouterr().out)
    assert set(settings) == set(config.SETTINGS)
    assert settings["parallel_environment"] == {
        "value": ["smp", 4], "source": f"{path} [tool.poolparty]",
        "variable": "POOLPARTY_PARALLEL_ENVIRONMENT",
        "type": config.SETTINGS["parallel_environment"].kind.label,
    }


def test_poolparty_config_with_a_bad_configuration_exits_2(project, capsys):
    write(project / "poolparty.toml", "partiton = 'short'\n")
    assert cli.main(["config"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("poolparty config: error: unknown setting partiton")
    assert "did you mean partition?" in error


# ---------------------------------------------------------------------------- the docs
def test_the_docs_name_every_setting_and_its_variable():
    text = DOCS.read_text()
    for setting in config.SETTINGS.values():
        assert f"``{setting.name}``" in text and setting.variable in text, setting.name


def test_the_docs_toml_examples_are_valid_configurations(project):
    blocks = re.findall(r"\.\. code-block:: toml\n\n((?:    .*\n|\n)+)", DOCS.read_text())
    assert blocks
    for block in blocks:
        text = "\n".join(line[4:] for line in block.splitlines())
        write(project / ("pyproject.toml" if "[tool.poolparty]" in text else "poolparty.toml"),
              text)
        config.resolve()
        for path in (project / "pyproject.toml", project / "poolparty.toml"):
            path.unlink(missing_ok=True)
