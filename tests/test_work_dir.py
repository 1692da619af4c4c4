"""The work_dir: atomic results, a torn archive salvaged, pickles only from private files."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest

from poolparty.work_dir import WorkDir, _salvage_zip, check_private


@pytest.fixture
def work_dir(tmp_path) -> WorkDir:
    return WorkDir.create(tmp_path / "root")


def test_two_work_dirs_created_in_the_same_second_differ(tmp_path):
    names = {WorkDir.create(tmp_path).map_id for _ in range(50)}
    assert len(names) == 50


def test_results_survive_a_client_killed_while_appending_to_the_archive(work_dir):
    work_dir.archive({0: b"first", 1: b"second"})
    archive = work_dir.path / "results.zip"
    data = archive.read_bytes()
    # a crash while appending: the central directory is overwritten, new data torn
    torn = data[: data.rfind(b"PK\x01\x02")] + b"PK\x03\x04garbage"
    archive.write_bytes(torn)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(archive)
    assert dict(work_dir.archived_results()) == {0: b"first", 1: b"second"}


def test_salvage_stops_at_a_member_cut_short():
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("0.pkl", b"x" * 1000)
        archive.writestr("1.pkl", b"y" * 1000)
    data = buffer.getvalue()
    second = data.find(b"PK\x03\x04", 10)
    assert [name for name, _ in _salvage_zip(data[: second + 40])] == ["0.pkl"]


def test_a_result_is_only_seen_once_renamed_into_place(work_dir):
    stray = work_dir.results_dir / ".3.pkl.abcd.tmp"  # a worker killed mid-write
    stray.write_bytes(b"half")
    assert work_dir.new_result_ids() == []
    work_dir.write_result(3, pickle.dumps([(True, 9)]))
    assert work_dir.new_result_ids() == [3]


def test_a_pickle_writable_by_others_is_never_loaded(work_dir):
    work_dir.write_inputs(pickle.dumps("f"), [pickle.dumps((0, [1]))], {"num_tasks": 1})
    os.chmod(work_dir.path / "function.pkl", 0o666)
    with pytest.raises(PermissionError, match="writable by others"):
        work_dir.read_function()


def test_a_work_dir_writable_by_others_is_refused(work_dir):
    os.chmod(work_dir.path, 0o777)
    with pytest.raises(PermissionError):
        check_private(work_dir.path)
