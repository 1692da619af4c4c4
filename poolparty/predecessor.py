"""pypoolparty's pools: its users switch to poolparty by changing one import.

``poolparty.slurm.array.Pool``, ``poolparty.slurm.Pool`` and
``poolparty.sun_grid_engine.Pool`` are the classes below, with pypoolparty's constructor
arguments. They live here, in the API layer, not in the backend modules: a backend
depends on the seam only, and its module hands out its ``Pool`` from here when first
asked for it (:func:`poolparty.scheduler.predecessor_attribute`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from . import chunking, config
from .backends import check_backend_keywords, options_of_backend
from .pool import Pool, pool_options
from .scheduler import Scheduler
from .slurm import SlurmJobs
from .slurm.array import SlurmArray
from .sun_grid_engine import SunGridEngine


class PredecessorPool(Pool):
    """The constructor of pypoolparty's pools, so its users change one import.

    ``num_simultaneously_running_tasks`` is the most workers (jobs) at once;
    ``num_chunks`` cuts a map given no chunksize into at most that many chunks, which
    the workers claim;
    ``sbatch_path=``, ``qsub_path=``, ... name the scheduler's commands; pypoolparty's
    names of backend options are taken as :attr:`renamed_options` says. Differences on
    purpose: a task that raises raises in the caller instead of returning None, and
    resubmissions are always bounded (default 3).
    """

    backend_class: type[Scheduler]
    #: pypoolparty's name of a backend option -> poolparty's
    renamed_options: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        num_simultaneously_running_tasks: int | None = None,
        python_path: str | None = None,
        polling_interval: float | None = None,
        work_dir: str | None = None,
        keep_work_dir: bool | None = None,
        verbose: bool | None = None,
        slurm_call_timeout: float | None = None,
        max_num_resubmissions: int | None = None,
        num_chunks: int | None = None,
        **backend_options: Any,
    ) -> None:
        self._num_chunks = chunking.check_chunksize(num_chunks, "num_chunks")
        for old, new in self.renamed_options.items():
            if old in backend_options:
                if new in backend_options:
                    raise TypeError(f"give {old}= (pypoolparty's name) or {new}=, not both")
                backend_options[new] = backend_options.pop(old)
        commands = dict(backend_options.pop("commands", {}))
        for option in [name for name in backend_options if name.endswith("_path")]:
            commands[option.removesuffix("_path")] = [backend_options.pop(option)]
        if slurm_call_timeout is not None:
            backend_options.setdefault("call_timeout", slurm_call_timeout)
        # the backend is built here, so the configuration's share of it is applied here
        resolved = config.resolve({"processes": num_simultaneously_running_tasks,
                                   **backend_options})
        processes = resolved["processes"].value
        check_backend_keywords(self.backend_class.name, options_of_backend(self.backend_class),
                               backend_options, pool_options())
        options = {**config.scheduler_options(resolved, self.backend_class.name),
                   **backend_options}
        backend = self.backend_class(  # type: ignore[call-arg]
            processes, commands=commands, **options
        )
        super().__init__(
            processes, backend=backend, python_path=python_path,
            polling_interval=polling_interval, work_dir=work_dir, keep_work_dir=keep_work_dir,
            verbose=verbose, max_num_resubmissions=max_num_resubmissions,
        )

    def _default_chunksize(self, num_tasks: int) -> int | None:
        """pypoolparty's num_chunks, when given; else the Pool's default."""
        if self._num_chunks is None:
            return super()._default_chunksize(num_tasks)
        return chunking.chunksize_for_num_chunks(num_tasks, self._num_chunks)


class SlurmArrayPool(PredecessorPool):
    """pypoolparty's ``slurm.array.Pool``, same constructor: change the import only."""

    backend_class = SlurmArray


class SlurmJobsPool(PredecessorPool):
    """pypoolparty's ``slurm.Pool``: one sbatch per chunk (see :class:`SlurmJobs`)."""

    backend_class = SlurmJobs


class SunGridEnginePool(PredecessorPool):
    """pypoolparty's ``sun_grid_engine.Pool`` constructor: change the import only.

    ``queue_name`` is pypoolparty's name of ``queue`` (qsub's ``-q``)."""

    backend_class = SunGridEngine
    renamed_options = {"queue_name": "queue"}


#: the module whose ``Pool`` each class is, as pypoolparty's users import it
POOL_OF_MODULE: dict[str, type[PredecessorPool]] = {
    "poolparty.slurm.array": SlurmArrayPool,
    "poolparty.slurm": SlurmJobsPool,
    "poolparty.sun_grid_engine": SunGridEnginePool,
}
