"""SLURM's ``-M/--clusters`` for the dummy: one local cluster and one more it can reach.

A job submitted with ``--clusters`` lives on the first cluster named (SLURM picks the
one where it starts earliest). As with SLURM, ``squeue`` and ``scancel`` see only the
local cluster's jobs unless given ``--clusters`` too, and then print a
``CLUSTER: name`` line before each cluster's jobs; ``sbatch --parsable`` answers
``ID;cluster``. All jobs run on this machine whatever their cluster.
"""

from __future__ import annotations

import argparse

from ._cli import ArgumentParser, CommandError
from ._jobs import Job

#: the dummy's own cluster (scontrol's ClusterName) first, then the one more it reaches
CLUSTERS = ("dummy", "dummy-other")


def add_option(parser: ArgumentParser) -> None:
    parser.add_argument("-M", "--clusters", default=None)


def named(command: str, args: argparse.Namespace) -> list[str] | None:
    """The clusters ``--clusters`` names, checked as SLURM does; None without it."""
    if args.clusters is None:
        return None
    names = args.clusters.split(",")
    for name in names:
        if name not in CLUSTERS:
            raise CommandError(
                f"{command}: error: '{name}' can't be reached now, or it is an invalid "
                "entry for --cluster.  Use 'sacctmgr list clusters' to see available "
                "clusters.")
    return names


def cluster_of(job: Job) -> str:
    return str(job.get("cluster", CLUSTERS[0]))
