"""Users of pypoolparty change one import: same constructor arguments, same map."""

from __future__ import annotations

import pytest

import poolparty.slurm
import poolparty.slurm.array
import poolparty.sun_grid_engine
from poolparty.dummy_schedulers import DummyQueue


def fail(x):
    raise ValueError(f"bad {x}")


@pytest.mark.parametrize("pool_class", [
    poolparty.slurm.array.Pool, poolparty.slurm.Pool, poolparty.sun_grid_engine.Pool,
])
def test_pypoolparty_arguments_work_and_failures_raise_instead_of_none(pool_class, tmp_path):
    queue = DummyQueue(tmp_path / "queue")
    commands = queue.commands()
    pool = pool_class(
        num_simultaneously_running_tasks=3, python_path=None, polling_interval=0.2,
        work_dir=str(tmp_path / "work"), keep_work_dir=False, verbose=False,
        slurm_call_timeout=10, max_num_resubmissions=2,
        **{f"{name}_path": argv[0] for name, argv in commands.items() if len(argv) == 1},
        commands=commands,
    )
    assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
    with pytest.raises(ValueError, match="bad 1"):
        pool.map(fail, [1])
    queue.shutdown(timeout=30)


def test_an_unknown_command_path_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="sbach"):
        poolparty.slurm.array.Pool(sbach_path="/usr/bin/sbatch")
