"""SLURM job arrays: one ``sbatch --array=...%N`` per submission round.

Array indices must stay below the cluster's MaxArraySize (read from
``scontrol show config``, not assumed), so chunk ids are cut into blocks of that size:
block ``b`` is one array whose index ``i`` runs chunk ``b * MaxArraySize + i``.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .. import scheduler
from ..escalation import OWN, Steps
from ..ranges import compress_ranges
from ..scheduler import Submission
from ..work_dir import WorkDir
from . import SlurmBase, output_option, parse_max_array_size

log = logging.getLogger("poolparty")


class SlurmArray(SlurmBase):
    """Chunks run as elements of SLURM job arrays, at most ``max_running`` at once."""

    name = "slurm-array"

    @classmethod
    def found_here(cls) -> bool:
        """sbatch on PATH: SLURM, and its arrays are the fast way to use it."""
        if shutil.which("sbatch") is None:
            return False
        log.info("sbatch found: running on SLURM job arrays")
        return True

    @property
    def max_array_size(self) -> int:
        """The cluster's MaxArraySize, asked once; 1001 (SLURM's default) if unknown."""
        return self.limit_read_once("MaxArraySize", "scontrol", ["show", "config"],
                                    parse_max_array_size, 1001)

    def limits(self) -> dict[str, str]:
        return {"largest job array (MaxArraySize)": str(self.max_array_size),
                **super().limits()}

    def plan(self, work_dir: WorkDir, chunk_ids: Sequence[int], steps: Steps = OWN
             ) -> list[Submission]:
        """One array per block of MaxArraySize chunk ids."""
        blocks: dict[int, list[int]] = defaultdict(list)
        for chunk_id in chunk_ids:
            block, index = divmod(chunk_id, self.max_array_size)
            blocks[block].append(index)
        throttle = f"%{self.max_running}" if self.max_running else ""
        plan = []
        for block, indices in sorted(blocks.items()):
            base = block * self.max_array_size
            options = [
                f"--array={compress_ranges(indices)}{throttle}",
                output_option(work_dir, "%A_%a.log"),
            ]
            script_args = ["--array", str(base), "SLURM_ARRAY_TASK_ID"]
            plan.append(self.sbatch(work_dir, options, script_args,
                                    {base + i: i for i in indices}, "{job_id}_{index}.log",
                                    steps))
        return plan


def __getattr__(name: str) -> Any:
    """``Pool``: pypoolparty's ``slurm.array.Pool``, same constructor: change the import
    only (:class:`poolparty.predecessor.SlurmArrayPool`)."""
    return scheduler.predecessor_attribute(__name__, name)
