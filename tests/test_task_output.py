"""What tasks print reaches the caller's stdout as their chunks are gathered (as with
multiprocessing, whose workers share the terminal), unless relay_output=False; a kept
map keeps it, and ``poolparty status --output`` shows it."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import made_backend

import poolparty

OUTPUT_BACKENDS = ["local", "dummy-slurm-array", "dummy-slurm", "dummy-sge",
                   "real-slurm-array", "real-sge"]


def chatty(x):
    print(f"task {x} says hello")
    print(f"task {x} warns", file=sys.stderr)
    return x * 2


def own_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("task ")]


@pytest.mark.parametrize("param", OUTPUT_BACKENDS)
def test_what_tasks_print_reaches_the_callers_stdout(param, work_root, tmp_path, capsys):
    with made_backend(param, work_root, tmp_path) as made:
        assert made.make_pool().map(chatty, range(6), chunksize=2) == [0, 2, 4, 6, 8, 10]
    out = capsys.readouterr().out
    expected = [f"task {x} {word}" for x in range(6) for word in ("says hello", "warns")]
    assert sorted(own_lines(out)) == sorted(expected)  # each once: chunks arrive in any order
    for x in range(0, 6, 2):  # a chunk's lines stay together, in the order printed
        lines = own_lines(out)
        start = lines.index(f"task {x} says hello")
        assert lines[start:start + 4] == [f"task {x} says hello", f"task {x} warns",
                                          f"task {x + 1} says hello", f"task {x + 1} warns"]
    assert "poolparty-event" not in out and "poolparty worker" not in out


@pytest.mark.parametrize("param", ["local", "dummy-sge"])
def test_relay_output_false_prints_nothing(param, work_root, tmp_path, capsys):
    with made_backend(param, work_root, tmp_path) as made:
        assert made.make_pool(relay_output=False).map(chatty, range(3)) == [0, 2, 4]
    assert own_lines(capsys.readouterr().out) == []


def test_relay_output_comes_from_the_configuration_too(work_root, monkeypatch, capsys):
    monkeypatch.setenv("POOLPARTY_RELAY_OUTPUT", "0")
    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    assert pool.map(chatty, range(2)) == [0, 2]
    assert own_lines(capsys.readouterr().out) == []


def test_output_of_an_unfinished_line_is_relayed_and_events_are_not(work_root, capsys):
    def no_newline(x):
        print(f"task {x} no newline", end="")
        return x

    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    assert pool.map(no_newline, range(2), chunksize=1) == [0, 1]
    out = capsys.readouterr().out
    assert sorted(own_lines(out)) == ["task 0 no newline", "task 1 no newline"]
    assert "poolparty-event" not in out and "{" not in out


def test_the_note_of_each_task_starting_is_not_relayed(work_root, capsys):
    """The worker notes each task before it runs (to name a task that kills its
    process); the note follows what the task before it printed, even mid-line."""
    def half_lines(x):
        print(f"<{x}>", end="")
        return x

    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    assert pool.map(half_lines, range(3), chunksize=3) == [0, 1, 2]
    out = capsys.readouterr().out
    assert "poolparty-task" not in out and "poolparty: the worker" not in out
    assert [line for line in out.splitlines() if line.startswith("<")] == ["<0>", "<1>", "<2>"]


def test_the_output_of_a_chunk_whose_task_raised_is_relayed(work_root, capsys):
    def loud_failure(x):
        print(f"task {x} about to fail")
        raise ValueError(x)

    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2)
    with pytest.raises(ValueError):
        pool.map(loud_failure, [7])
    assert own_lines(capsys.readouterr().out) == ["task 7 about to fail"]


@pytest.mark.parametrize("param", ["local", "dummy-slurm-array", "real-slurm-array", "real-sge"])
def test_a_kept_map_keeps_the_output_and_status_shows_it(param, work_root, tmp_path, run_cli):
    with made_backend(param, work_root, tmp_path) as made:
        pool = made.make_pool(keep_work_dir=True, relay_output=False)
        assert pool.map(chatty, range(4), chunksize=2) == [0, 2, 4, 6]
    [map_dir] = [p for p in work_root.iterdir() if not p.name.startswith(".")]
    result = run_cli("status", "--output", map_dir)
    assert result.code == 0, result.err
    expected = [f"task {x} {word}" for x in range(4) for word in ("says hello", "warns")]
    assert own_lines(result.out) == expected  # in task order
    assert "poolparty-event" not in result.out


def test_status_output_of_a_map_that_printed_nothing_says_so(work_root, run_cli):
    pool = poolparty.Pool(backend="local", work_dir=work_root, keep_work_dir=True,
                          polling_interval=0.2)
    assert pool.map(abs, [-1]) == [1]
    [map_dir] = [p for p in work_root.iterdir() if not p.name.startswith(".")]
    result = run_cli("status", "--output", map_dir)
    assert result.code == 0 and "printed nothing" in result.out


def test_verbose_does_not_switch_on_a_progress_bar(work_root, capsys):
    pytest.importorskip("tqdm")
    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2,
                          verbose=True)
    assert pool.map(abs, range(-3, 0)) == [3, 2, 1]
    captured = capsys.readouterr()
    assert "task/s" not in captured.err and "it/s" not in captured.err
    assert "100%" not in captured.err


def test_progress_true_still_shows_the_bar(work_root, capsys):
    pytest.importorskip("tqdm")
    pool = poolparty.Pool(backend="local", work_dir=work_root, polling_interval=0.2,
                          verbose=True, progress=True)
    assert pool.map(abs, range(-3, 0)) == [3, 2, 1]
    assert "100%" in capsys.readouterr().err


def test_poolparty_run_keeps_printed_lines_out_of_records_on_stdout(tmp_path, run_cli):
    script = tmp_path / "chatty_script.py"
    script.write_text("def shout(x):\n    print(f'task {x} shouts')\n    return x\n\n"
                      "NUMBERS = [1, 2, 3]\n")
    result = run_cli("run", f"{script}:shout", "--args", "NUMBERS", "--backend", "local",
                     "--out", "-")
    assert result.code == 0, result.err
    assert [json.loads(line)["result"] for line in result.out.splitlines()] == [1, 2, 3]
    assert sorted(own_lines(result.err)) == ["task 1 shouts", "task 2 shouts", "task 3 shouts"]


def test_only_the_attempt_that_delivered_the_result_is_relayed(work_root, tmp_path, capsys):
    def slow(x):
        import time

        print(f"task {x} attempt starts", flush=True)
        time.sleep(3)
        print(f"task {x} attempt ends")
        return x

    with made_backend("dummy-slurm-array", work_root, tmp_path) as made:
        made.queue.inject(kill_after=(1.0, 1))  # the first attempt dies mid-task
        pool = made.make_pool(keep_work_dir=True)
        assert pool.map(slow, [5]) == [5]
    assert own_lines(capsys.readouterr().out) == ["task 5 attempt starts", "task 5 attempt ends"]
    [map_dir] = [p for p in work_root.iterdir() if not p.name.startswith(".")]
    import zipfile

    with zipfile.ZipFile(map_dir / "logs.zip") as logs:  # the dead worker's log is kept
        texts = [logs.read(name) for name in logs.namelist() if name[0].isdigit()]
    assert len(texts) == 2 and sum(b"attempt ends" in text for text in texts) == 1


def test_a_workers_output_is_cut_per_task_and_only_the_tasks_kept_are_relayed():
    from poolparty.events import TASK_MARK, output_of_tasks

    log = (b"poolparty worker: map m worker 0 on host\n"
           b"initializer says hi\n"
           + TASK_MARK + b"0\ntask 0 out\n"
           + b"unfinished" + TASK_MARK + b"1\ntask 1 out\n"
           + TASK_MARK + b"2\ntask 2 out, then its worker died\n")
    assert output_of_tasks(log, {0, 1}) == (b"initializer says hi\ntask 0 out\nunfinished\n"
                                            b"task 1 out\n")
    assert output_of_tasks(log, set()) == b"initializer says hi\n"


@pytest.mark.parametrize("param", OUTPUT_BACKENDS)
def test_workers_left_without_work_add_nothing_to_the_callers_stdout(param, work_root, tmp_path,
                                                                      capsys):
    # four workers for one task: those still queued or starting when the map ends are
    # cancelled, and SLURM writes that into their logs; the caller reads only the task
    with made_backend(param, work_root, tmp_path) as made:
        assert made.make_pool(processes=4).map(chatty, [7]) == [14]
    assert capsys.readouterr().out.splitlines() == ["task 7 says hello", "task 7 warns"]


def test_the_line_slurm_writes_when_it_cancels_a_job_is_not_relayed():
    from poolparty.local import Local
    from poolparty.slurm import SlurmBase

    output = (b"task 1 out\n"
              b"slurmstepd-node17: error: *** JOB 2940 ON node17 CANCELLED AT"
              b" 2026-12-06T00:22:53 ***\n"
              b"slurmstepd: error: *** STEP 2941.0 ON node3 CANCELLED AT 2026-12-06T00:22:54 ***\n"
              b"slurmstepd: error: *** JOB 2942 ON node3 CANCELLED AT 2026-12-06T00:22:55"
              b" DUE TO TIME LIMIT ***\n"
              b"my task says: *** JOB 1 ON x CANCELLED AT y ***\n")
    assert SlurmBase.without_own_lines(output) == (
        b"task 1 out\n"
        b"slurmstepd: error: *** JOB 2942 ON node3 CANCELLED AT 2026-12-06T00:22:55"
        b" DUE TO TIME LIMIT ***\n"  # why a task stopped: the user needs to read it
        b"my task says: *** JOB 1 ON x CANCELLED AT y ***\n")
    assert Local.without_own_lines(output) == output
