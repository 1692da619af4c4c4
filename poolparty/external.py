"""``backend="external"``: the pool submits nothing; workers started by hand run the maps.

For work that should go only where you put it: ``poolparty worker MAP_DIR`` started in
an allocation you already hold (``srun`` in ``salloc``), on another partition, on a
workstation that sees the shared file system (see poolparty.commands.worker). The map
waits in its work_dir until such workers claim its tasks; each map logs its directory
and the command to run. Their claims carry a heartbeat, since no scheduler tells the
client whether they still run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar

from .scheduler import Scheduler, State

if TYPE_CHECKING:
    from .work_dir import WorkDir


class External(Scheduler):
    """No scheduler: nothing to submit, nothing queued, nothing to cancel."""

    name = "external"
    default_max_running = 1  # for the default chunk sizes: the workers are unknown
    submits_workers: ClassVar[bool] = False

    def __init__(self, max_running: int | None = None) -> None:
        if max_running is not None:
            self.default_max_running = max_running

    def submit(self, work_dir: WorkDir, chunk_ids: Sequence[int]) -> None:
        raise AssertionError("the external backend submits nothing")

    def query(self, work_dir: WorkDir) -> dict[int, State]:
        return {}

    def cancel(self, work_dir: WorkDir, chunk_ids: Iterable[int]) -> None:
        pass
