"""A work_dir whose path holds characters a scheduler reads in its output paths.

sbatch expands ``%`` patterns (``%u``, ``%j``) in ``--output`` and reads none of them
once the path holds a backslash; qsub expands ``$HOME``, ``$USER``, ``$JOB_ID`` ... in
``-o``, reads ``host:path`` and splits at commas. Each path must either work (escaped)
or be refused when the pool is made, naming the characters, with nothing submitted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ALL_CLUSTER_PARAMS, job_names_under, made_backend

import poolparty
from poolparty.errors import InvalidInputError

#: directory name -> the backends that must refuse it (the others must run it)
NAMES = {
    "pct%u": (),
    "pct%%j": (),
    "pct%": (),
    "pct%J": ("lsf",),
    "dollar$HOME": ("sge",),
    "dollar$JOB_ID": ("sge",),
    "dollar$x": ("sge",),
    "a space": (),
    "comma,x": ("sge",),
    "colon:x": ("sge", "pbs"),
    "back\\slash": ("slurm", "slurm-array"),
    "new\nline": ("sge", "pbs"),
    "quote'\"": (),
    "unicodé": (),
}


def square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("param", ["local", *ALL_CLUSTER_PARAMS])
def test_a_work_dir_path_works_or_is_refused_before_anything_is_submitted(
        param: str, name: str, tmp_path: Path) -> None:
    backend_name = param.split("-", 1)[1] if param != "local" else "local"
    work_root = tmp_path / name / "pp"
    with made_backend(param, work_root, tmp_path) as backend:
        if backend_name in NAMES[name]:
            with pytest.raises(InvalidInputError) as raised:
                backend.make_pool(processes=2)
            assert "work_dir" in str(raised.value)
            assert not job_names_under(work_root)
            assert backend.queued_jobs() == []
            return
        with backend.make_pool(processes=2, max_num_resubmissions=0) as pool:
            assert pool.map(square, range(6), chunksize=3) == [x * x for x in range(6)]


@pytest.mark.parametrize("name, characters", [
    ("dollar$HOME", "'$'"), ("comma,x", "','"), ("colon:x", "':'")])
def test_sge_names_the_characters_it_refuses(name: str, characters: str, tmp_path: Path
                                             ) -> None:
    with made_backend("dummy-sge", tmp_path / name, tmp_path) as backend:
        with pytest.raises(InvalidInputError, match=f"holds {re.escape(characters)}.*work_dir="):
            backend.make_pool()


def test_a_current_directory_sge_cannot_take_is_refused_for_the_default_work_dir(
        tmp_path: Path, monkeypatch) -> None:
    """Without work_dir= the root is ./.poolparty, checked when a map starts too: the
    directory may change after the pool was made."""
    with made_backend("dummy-sge", tmp_path / "pp", tmp_path) as backend:
        options = backend.pool_options()
        del options["work_dir"]
        bad = tmp_path / "x$HOME"
        bad.mkdir()
        with poolparty.Pool(**options) as pool:
            monkeypatch.chdir(bad)
            with pytest.raises(InvalidInputError, match=r"'\$'"):
                pool.map(square, range(2))
        assert not (bad / ".poolparty").exists()
        assert backend.queued_jobs() == []


@pytest.mark.parametrize("param", ["dummy-sge", "real-sge"])
def test_sge_refuses_a_current_directory_its_wd_would_misread(param: str, tmp_path: Path,
                                                              monkeypatch) -> None:
    """The jobs start in the current directory (qsub -wd), where $HOME is replaced."""
    work_root = tmp_path / "pp"
    with made_backend(param, work_root, tmp_path) as backend:
        bad = tmp_path / "cwd$HOME"
        bad.mkdir()
        monkeypatch.chdir(bad)
        with pytest.raises(InvalidInputError, match=r"current directory .*'\$'"):
            with backend.make_pool(max_num_resubmissions=0) as pool:
                pool.map(square, range(2))
        assert not job_names_under(work_root)
        assert backend.queued_jobs() == []
