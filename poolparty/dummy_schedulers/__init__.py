"""Dummy SLURM and Sun Grid Engine schedulers that really run jobs, locally.

``DummyQueue(path)`` is one fake queue; ``DummyQueue.commands()`` gives the
argv prefixes of its ``sbatch``, ``squeue``, ``scancel``, ``scontrol``,
``qsub``, ``qstat``, ``qdel`` and ``qconf``.  See docs/dummy_schedulers.rst.
"""

from .queue import DummyQueue

__all__ = ["DummyQueue"]
