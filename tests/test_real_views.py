"""Maps across two caching views of one work_dir, as a login node and compute nodes that
mount one NFS export (issue 14): the jobs see the work_dir through view b, the client
through view a (in its own mount namespace, at the same path), and each view has its own
kernel caches, so a name looked up and missed on one view stays missing there for 30 s
after the other view creates it (../shared/design.md, "Two hosts' caches on one machine").

The same maps as tests/test_real_pull.py and tests/test_resume.py, on every real backend:
uneven work, a worker cancelled mid-map, a killed client resumed. What the map left is read
in the backing directory, which no cache stands in front of.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest
import pytest
from conftest import REAL_PARAMS, made_backend
from test_real_faults import (
    attempts,
    claim_attempts,
    claim_holder,
    claim_of_task,
    job_of_claim,
    reopened_claims,
    run,
    wait_for,
)
from test_resume import kill_and_resume

pytestmark = pytest.mark.timeout(240)

#: a map across the views may wait out a lookup cached as missing (30 s) now and then
MAP_DEADLINE = 150

CLIENT = textwrap.dedent('''
    import json, os, sys, time, uuid
    import poolparty

    RAN, OPTIONS = sys.argv[1], json.loads(sys.argv[2])
    NUM_TASKS, VICTIM = int(sys.argv[3]), int(sys.argv[4])

    def work(x):
        """Tasks 0..3 take 2 s, the others 0.1 s; task VICTIM runs 600 s on its first attempt."""
        first = not any(name.split(".")[0] == str(x) for name in os.listdir(RAN))
        open(os.path.join(RAN, f"{x}.{uuid.uuid4().hex}"), "w").close()
        if x == VICTIM and first:
            time.sleep(600)
        time.sleep(2 if x < 4 else 0.1)
        return x * 10

    CHUNKSIZE = OPTIONS.pop("chunksize", None)
    with poolparty.Pool(**OPTIONS) as pool:
        print(json.dumps(pool.map(work, range(NUM_TASKS), chunksize=CHUNKSIZE)))
''')


@pytest.fixture
def split(two_views, tmp_path):
    """(the path both sides use, the backing directory, a launcher that runs a command
    with that path showing view a): the jobs, started by the daemons in this mount
    namespace, see view b there."""
    backing, view_a, view_b = two_views
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o700)
    subprocess.run(["mount", "--bind", str(view_b), str(shared)], check=True, timeout=60)

    def on_view_a(argv: list[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
                str(view_a), str(shared), *argv]

    try:
        yield shared, backing, on_view_a
    finally:
        subprocess.run(["umount", "-l", str(shared)], capture_output=True, timeout=60)


@pytest.fixture(params=REAL_PARAMS)
def real(request, split, tmp_path):
    shared, _, _ = split
    with made_backend(request.param, shared, tmp_path) as made:
        yield made


def start_client(real, split, tmp_path: Path, num_tasks: int, victim: int = -1,
                 **options) -> tuple[subprocess.Popen, Path]:
    """The client, on view a, running CLIENT's map; its ``ran`` directory (off the views)."""
    _, _, on_view_a = split
    script, ran = tmp_path / "client.py", tmp_path / "ran"
    script.write_text(CLIENT)
    ran.mkdir()
    settings = {k: str(v) if isinstance(v, Path) else v
                for k, v in real.pool_options(keep_work_dir=True, **options).items()}
    argv = on_view_a([sys.executable, str(script), str(ran), json.dumps(settings),
                      str(num_tasks), str(victim)])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path, text=True), ran


def results_of(client: subprocess.Popen) -> list:
    try:
        out, err = client.communicate(timeout=MAP_DEADLINE)
    except subprocess.TimeoutExpired:
        client.kill()
        out, err = client.communicate()
        raise AssertionError(f"the map did not end in {MAP_DEADLINE} s: {err[-3000:]}") from None
    assert client.returncode == 0, err[-3000:]
    return json.loads(out)


def map_dir_in(backing: Path) -> Path:
    return conftest.the_map_dir(backing, 60, holding="jobs.jsonl")


def test_uneven_work_across_two_views(real, split, tmp_path):
    """Four workers on view b, the client on view a: every result in order, every task
    run once, and the long tasks spread over the workers."""
    _, backing, _ = split
    client, ran = start_client(real, split, tmp_path, 48, processes=4)
    assert results_of(client) == [x * 10 for x in range(48)]
    assert all(attempts(ran, x) == 1 for x in range(48))
    map_dir = map_dir_in(backing)
    runs = claim_attempts(map_dir)
    holders = {job_of_claim(runs[claim_of_task(map_dir, x)][-1]) for x in range(4)}
    assert len(holders) > 1, holders
    assert reopened_claims(map_dir) == {}


def test_a_worker_cancelled_across_two_views(real, split, tmp_path):
    """scancel / qdel of the worker stuck in task 0: its claim is reopened for the others
    although the client sees the claims through another cache."""
    _, backing, _ = split
    client, ran = start_client(real, split, tmp_path, 12, victim=0, processes=3, chunksize=1)
    map_dir = map_dir_in(backing)
    job = wait_for(lambda: attempts(ran, 0) == 1 and claim_holder(map_dir, 0), 60,
                   "a worker to run task 0")
    run(["qdel" if real.name.endswith("sge") else "scancel", job])
    assert results_of(client) == [x * 10 for x in range(12)]
    assert attempts(ran, 0) == 2
    assert reopened_claims(map_dir) == {claim_of_task(map_dir, 0): 1}
    wait_for(lambda: not real.queued_jobs(), 30, "the map's jobs to leave the queue")


def test_a_killed_client_resumes_across_two_views(real, split, tmp_path):
    """SIGKILL of the client on view a mid-map, the same map run again there: every
    result, nothing ran twice."""
    _, _, on_view_a = split
    kill_and_resume(real, tmp_path, launch=on_view_a)
