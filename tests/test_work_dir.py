"""The work_dir: atomic results, a torn archive salvaged, pickles only from private files."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import zipfile

import pytest

from poolparty.work_dir import WorkDir, _salvage_zip, check_private


@pytest.fixture
def work_dir(tmp_path) -> WorkDir:
    return WorkDir.create(tmp_path / "root")


def test_two_work_dirs_created_in_the_same_second_differ(tmp_path):
    names = {WorkDir.create(tmp_path).map_id for _ in range(50)}
    assert len(names) == 50


def test_results_survive_a_client_killed_before_closing_its_archive(tmp_path):
    script = (
        "import os, random, sys\n"
        "from poolparty.work_dir import WorkDir\n"
        "work_dir = WorkDir.create(sys.argv[1], 'map-same')\n"
        "work_dir.archive({0: b'first'})\n"
        "work_dir.archive({1: random.Random(1).randbytes(100_000)})  # stored, not deflated\n"
        "os._exit(0)  # killed: no central directory written\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(tmp_path / "map-same" / "results.zip")
    resumed = WorkDir.create(tmp_path, "map-same")
    assert resumed.resumed
    assert resumed.archived_results() == {0: b"first", 1: random.Random(1).randbytes(100_000)}
    resumed.archive({2: b"third"})
    resumed.close_archives()
    with zipfile.ZipFile(tmp_path / "map-same" / "results.zip") as archive:
        assert sorted(archive.namelist()) == ["0.pkl", "1.pkl", "2.pkl"]


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_results_survive_a_client_killed_while_writing_a_member(tmp_path, method):
    """zipfile writes a member's header with sizes 0 first and fixes it when the member
    is closed: a client killed in between leaves a header that lies. The complete
    members before it are kept (an empty one too) and the map is taken over; the torn
    one is neither read as an empty result nor crashes the takeover."""
    script = (
        "import os, random, sys, zipfile\n"
        "from poolparty.work_dir import WorkDir\n"
        "work_dir = WorkDir.create(sys.argv[1], 'map-same')\n"
        "work_dir.archive({0: b'first'}, logs={'0/empty.log': b''})\n"
        "archive = work_dir._zips['results.zip']\n"
        "member = zipfile.ZipInfo('1.pkl')\n"
        "member.compress_type = int(sys.argv[2])\n"
        "with archive.open(member, 'w') as dest:\n"
        "    dest.write(random.Random(1).randbytes(100_000))\n"
        "    archive.fp.flush()\n"
        "    os._exit(0)  # killed before the header is rewritten\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(method)], check=True)
    resumed = WorkDir.create(tmp_path, "map-same")
    assert resumed.resumed
    assert resumed.archived_results() == {0: b"first"}
    assert resumed.archived_logs("0/empty.log") == [b""]
    resumed.archive({1: b"second"})
    resumed.close_archives()
    with zipfile.ZipFile(tmp_path / "map-same" / "results.zip") as archive:
        assert sorted(archive.namelist()) == ["0.pkl", "1.pkl"]
        assert archive.read("1.pkl") == b"second"


def test_a_work_dir_held_by_a_live_client_is_not_shared(tmp_path):
    first = WorkDir.create(tmp_path, "map-same")
    second = WorkDir.create(tmp_path, "map-same")
    assert (first.map_id, second.map_id) == ("map-same", "map-same-2")
    first.release()
    assert WorkDir.create(tmp_path, "map-same").resumed


def test_a_directory_its_creator_left_half_made_is_taken_over_whole(tmp_path):
    """A directory is now made whole before it gets its name, but one an older poolparty
    left half made (its lock file, without results/ and logs/) is completed."""
    (tmp_path / "same-map").mkdir(mode=0o700)
    (tmp_path / "same-map" / "client.lock").touch(mode=0o600)
    work_dir = WorkDir.create(tmp_path, identity="same-map")
    assert work_dir.resumed and work_dir.path == tmp_path / "same-map"
    assert work_dir.new_result_ids() == [] and work_dir.logs_dir.is_dir()
    work_dir.release()


def test_results_that_do_not_shrink_are_stored_and_the_rest_deflated(work_dir):
    noise, floats = random.Random(2).randbytes(1 << 20), pickle.dumps([0.5] * 100_000)
    work_dir.archive({0: noise, 1: floats})
    work_dir.close_archives()
    with zipfile.ZipFile(work_dir.path / "results.zip") as archive:
        stored = {info.filename: info for info in archive.infolist()}
        assert archive.read("0.pkl") == noise and archive.read("1.pkl") == floats
    assert stored["0.pkl"].compress_type == zipfile.ZIP_STORED
    assert stored["1.pkl"].compress_size < len(floats) / 10


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


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make a directory another user owns")
def test_a_map_directory_someone_else_made_is_never_resumed(tmp_path):
    planted = tmp_path / "map-abc"
    planted.mkdir(mode=0o700)
    (planted / "function.pkl").write_bytes(b"not ours")
    os.chown(planted, 12345, 12345)
    work_dir = WorkDir.create(tmp_path, "map-abc")
    assert work_dir.path == tmp_path / "map-abc-2"
    assert not work_dir.resumed
    work_dir.remove()


def test_a_map_run_again_after_it_archived_its_claims_gets_them_back(tmp_path):
    """A map that ended keeps its claims in logs.zip only; run again (tasks it left
    undone), its workers need that chain: the resuming client puts it back first."""
    import poolparty

    poolparty.Pool(backend="local", keep_work_dir=True, work_dir=tmp_path).map(
        abs, range(-6, 0), chunksize=2)
    (map_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("map-")]
    assert not (map_dir / "claims").exists()
    resumed = WorkDir.create(tmp_path, map_dir.name)
    assert resumed.resumed
    claims = map_dir / "claims"
    assert sorted(os.listdir(claims)) == ["0", "1", "2"]
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in claims.iterdir())
    check_private(claims)
    resumed.release()
