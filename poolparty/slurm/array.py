"""SLURM job arrays: one ``sbatch --array=...%N`` per submission round.

Array indices must stay below the cluster's MaxArraySize (read from
``scontrol show config``, not assumed), so chunk ids are cut into blocks of that size:
block ``b`` is one array whose index ``i`` runs chunk ``b * MaxArraySize + i``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Sequence

from ..errors import SchedulerCommandError
from ..pool import Pool as _Pool
from ..scheduler import compress_ranges
from ..work_dir import WorkDir
from . import SlurmBase, parse_max_array_size

log = logging.getLogger("poolparty")


class SlurmArray(SlurmBase):
    """Chunks run as elements of SLURM job arrays, at most ``max_running`` at once."""

    name = "slurm-array"

    def __init__(self, max_running: int | None = None, **options: Any) -> None:
        super().__init__(max_running, **options)
        self._max_array_size: int | None = None

    @property
    def max_array_size(self) -> int:
        """The cluster's MaxArraySize, asked once; 1001 (SLURM's default) if unknown."""
        if self._max_array_size is None:
            try:
                text = self.run("scontrol", ["show", "config"])
                self._max_array_size = parse_max_array_size(text)
            except SchedulerCommandError as error:
                log.warning("could not read MaxArraySize, assuming 1001: %s", error)
                self._max_array_size = 1001
        return self._max_array_size

    def submit(self, work_dir: WorkDir, chunk_ids: Sequence[int]) -> None:
        blocks: dict[int, list[int]] = defaultdict(list)
        for chunk_id in chunk_ids:
            block, index = divmod(chunk_id, self.max_array_size)
            blocks[block].append(index)
        for block, indices in sorted(blocks.items()):
            base = block * self.max_array_size
            throttle = f"%{self.max_running}" if self.max_running else ""
            options = [
                f"--array={compress_ranges(indices)}{throttle}",
                f"--output={work_dir.logs_dir}/%A_%a.log",
            ]
            job_id = self.sbatch(work_dir, options, ["--array", str(base), "SLURM_ARRAY_TASK_ID"])
            work_dir.record_jobs(job_id, {base + i: (i, f"{job_id}_{i}.log") for i in indices})


class Pool(_Pool):
    """pypoolparty's ``slurm.array.Pool``, same constructor: change the import only.

    Differences on purpose: a failed task raises its exception instead of returning
    None, and the number of resubmissions is always bounded.
    """

    def __init__(
        self,
        num_simultaneously_running_tasks: int | None = None,
        python_path: str | None = None,
        polling_interval: float = 5.0,
        work_dir: str | None = None,
        keep_work_dir: bool = False,
        verbose: bool = False,
        slurm_call_timeout: float = 60.0,
        max_num_resubmissions: int | None = None,
        sbatch_path: str = "sbatch",
        squeue_path: str = "squeue",
        scancel_path: str = "scancel",
        **slurm_options: Any,
    ) -> None:
        commands = {"sbatch": [sbatch_path], "squeue": [squeue_path], "scancel": [scancel_path]}
        commands.update(slurm_options.pop("commands", {}))
        super().__init__(
            num_simultaneously_running_tasks,
            backend=SlurmArray(
                num_simultaneously_running_tasks, commands=commands,
                call_timeout=slurm_call_timeout, **slurm_options,
            ),
            python_path=python_path, polling_interval=polling_interval, work_dir=work_dir,
            keep_work_dir=keep_work_dir, verbose=verbose,
            max_num_resubmissions=3 if max_num_resubmissions is None else max_num_resubmissions,
        )
