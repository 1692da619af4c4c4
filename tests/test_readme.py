"""README's two commands are the ones CI runs and the package provides."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_test_command_readme_gives():
    readme = (ROOT / "README.rst").read_text()
    assert '    pip install -e ".[test]" && python -m pytest\n' in readme
    assert "grep -m1 -E '^    pip install -e .*pytest' README.rst" in (ROOT / ".ci/run").read_text()


def test_the_demo_command_exists():
    from poolparty.cli import main

    readme = (ROOT / "README.rst").read_text()
    assert "    pip install . && poolparty demo\n" in readme
    assert main(["demo", "--backend", "local", "--tasks", "5"]) == 0
