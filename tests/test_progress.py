"""progress=True shows a tqdm bar (tqdm.auto: terminal or notebook) that reaches the total."""

from __future__ import annotations

import pytest

import poolparty

tqdm = pytest.importorskip("tqdm", reason="progress bars need tqdm: pip install tqdm")


def test_progress_bar_counts_every_task(tmp_path, capsys):
    pool = poolparty.Pool(backend="local", work_dir=tmp_path, progress=True, polling_interval=0.2)
    assert pool.map(abs, range(-30, 0), chunksize=4) == list(range(30, 0, -1))
    shown = capsys.readouterr().err
    assert "30/30" in shown and "task" in shown


def test_no_bar_unless_asked(tmp_path, capsys):
    poolparty.Pool(backend="local", work_dir=tmp_path, polling_interval=0.2).map(abs, [1, 2])
    assert "task/s" not in capsys.readouterr().err
