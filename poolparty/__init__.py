"""poolparty: multiprocessing.Pool's map and starmap on SLURM, Sun Grid Engine or locally.

    import poolparty
    pool = poolparty.Pool()             # SLURM arrays if sbatch is found, else local
    results = pool.map(lambda x: x * x, range(1000))
"""

from .errors import (
    ChunksLostError,
    PoolTerminated,
    InvalidInputError,
    PoolpartyError,
    RemoteTraceback,
    SchedulerCommandError,
    SchedulerNotFoundError,
)
from .errors import UnpicklableError
from .executor import Executor
from .pool import AsyncResult, IMapIterator, Pool
from .scheduler import Scheduler, State
from .version import __version__

__all__ = [
    "ChunksLostError",
    "Executor",
    "InvalidInputError",
    "AsyncResult",
    "IMapIterator",
    "Pool",
    "PoolTerminated",
    "PoolpartyError",
    "RemoteTraceback",
    "Scheduler",
    "SchedulerCommandError",
    "SchedulerNotFoundError",
    "State",
    "UnpicklableError",
    "__version__",
]
