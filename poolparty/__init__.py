"""poolparty: multiprocessing.Pool's map and starmap on SLURM, Sun Grid Engine or locally.

    import poolparty
    pool = poolparty.Pool()             # SLURM arrays if sbatch is found, else local
    results = pool.map(lambda x: x * x, range(1000))

The names below, and the submodules (``poolparty.slurm.array.Pool``,
``poolparty.sun_grid_engine.Pool``, as pypoolparty's users write them), are imported on
first use: the worker (``python -m poolparty.worker``) starts once per job, thousands of
times, and should not pay for the client's imports.
"""

from __future__ import annotations

import importlib

from .errors import (
    AllocationEndedError,
    ChunksLostError,
    InvalidInputError,
    InvalidOptionError,
    PoolpartyError,
    PoolTerminated,
    RemoteError,
    RemoteTraceback,
    ResultsReusedWarning,
    SchedulerCommandError,
    SchedulerNotFoundError,
    TaskCrashedError,
    UnpicklableError,
)
from .version import __version__

_LAZY = {
    "AsyncResult": "pool",
    "Executor": "executor",
    "IMapIterator": "imap",
    "Pool": "pool",
    "Scheduler": "scheduler",
    "State": "scheduler",
    "map_report": "report",
}

__all__ = [
    "AllocationEndedError",
    "AsyncResult",
    "ChunksLostError",
    "Executor",
    "IMapIterator",
    "InvalidInputError",
    "InvalidOptionError",
    "Pool",
    "PoolTerminated",
    "PoolpartyError",
    "RemoteError",
    "RemoteTraceback",
    "ResultsReusedWarning",
    "Scheduler",
    "SchedulerCommandError",
    "SchedulerNotFoundError",
    "State",
    "TaskCrashedError",
    "UnpicklableError",
    "__version__",
    "map_report",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if not name.startswith("_"):
        try:  # a submodule, e.g. poolparty.slurm after only "import poolparty"
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise  # the submodule exists, but something it imports is missing
    raise AttributeError(f"module 'poolparty' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
