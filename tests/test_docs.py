"""The Sphinx site in docs/ builds without a single warning, as CI builds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx", reason="pip install -e '.[test]' to build the docs")
    # -n: every cross-reference must resolve; -W --keep-going: fail on any warning, but
    # report them all; -E: no cached environment; -q: only warnings and errors.
    command = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-E", "-q",
        "-b", "html", "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, (
        f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr}{done.stdout}"
    )
    assert (tmp_path / "html" / "index.html").exists()
    assert (tmp_path / "html" / "api.html").exists()
