"""The backend registry: every ``backend="..."`` name, and what is known by name.

One table says which module and class each name is; a backend's module is imported only
when that backend is chosen or asked about (``Pool(backend="local")`` imports no
cluster's module for it). Everything else a front end needs to know about a backend
(its settings, its extra-arguments option, its query command, whether it is a cluster,
how it is found on this machine, how many jobs it runs when not told) is declared by
the backend's class (see :class:`~poolparty.scheduler.Scheduler`) and asked for here.

Adding a scheduler is one module and one line of :data:`REGISTRY` (see
docs/adding_a_scheduler.rst).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
from collections.abc import Sequence

from .errors import InvalidOptionError
from .scheduler import Scheduler
from .settings import Setting

log = logging.getLogger("poolparty")

#: backend name -> (module, class); the order is the one shown to users, and the order
#: in which ``backend="auto"`` looks for a scheduler
REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("poolparty.local", "Local"),
    "slurm-steps": ("poolparty.slurm.steps", "SlurmSteps"),
    "slurm-array": ("poolparty.slurm.array", "SlurmArray"),
    "slurm": ("poolparty.slurm", "SlurmJobs"),
    "sge": ("poolparty.sun_grid_engine", "SunGridEngine"),
    "pbs": ("poolparty.pbs", "Pbs"),
    "lsf": ("poolparty.lsf", "Lsf"),
}
#: the backend ``auto`` falls back on when no scheduler is found here
FALLBACK = "local"
#: every name ``backend=`` takes
BACKENDS = ("auto", *REGISTRY)


def backend_class(name: str) -> type[Scheduler]:
    """The Scheduler class of a backend's name (its module imported now)."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(str(name), BACKENDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidOptionError(f"unknown backend {name!r}{hint}; choose one of "
                                 f"{', '.join(BACKENDS)}, or pass a Scheduler object.")
    module, class_name = REGISTRY[name]
    return getattr(importlib.import_module(module), class_name)


#: the backend that runs workers in the allocation the client runs in (use_allocation)
IN_ALLOCATION = "slurm-steps"


def detect_backend(use_allocation: bool = True) -> str:
    """The best scheduler installed here, in :data:`REGISTRY`'s order; the choice is
    logged (each class's ``found_here`` says what it found). ``use_allocation``
    False: never the steps of the allocation the client runs in."""
    for name in REGISTRY:
        if name in (FALLBACK, *(() if use_allocation else (IN_ALLOCATION,))):
            continue
        if backend_class(name).found_here():
            return name
    log.info("no batch scheduler found (no sbatch, no SGE qsub on PATH): "
             "running on local processes")
    return FALLBACK


def chosen(backend: str, use_allocation: bool = True) -> str:
    """A backend's name, ``auto`` replaced by the one detected here."""
    return detect_backend(use_allocation) if backend == "auto" else backend


def make_scheduler(backend: str | Scheduler, processes: int | None, options: dict,
                   common_options: Sequence[str] = ()) -> Scheduler:
    """Turn ``backend=`` into a Scheduler; an option it doesn't take is an
    InvalidOptionError (a TypeError) naming it, the backend and the valid ones
    (``common_options``, those every backend takes, first)."""
    if isinstance(backend, Scheduler):
        check_backend_keywords(f"a {type(backend).__name__} object", [], options,
                               common_options)
        return backend
    backend = chosen(backend)
    scheduler_class = backend_class(backend)
    check_backend_keywords(backend, options_of_backend(scheduler_class), options,
                           common_options)
    return scheduler_class(processes, **options)  # type: ignore[call-arg]


def options_of_backend(scheduler_class: type[Scheduler]) -> list[str]:
    """The keyword options a backend's constructor takes (all but the first argument,
    the limit of running jobs), following ``**options`` up to the parent class."""
    names: list[str] = []
    for klass in scheduler_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[2:]
        names += [p.name for p in parameters
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def check_backend_keywords(backend: str, accepted: Sequence[str], keywords: dict,
                           common_options: Sequence[str] = ()) -> None:
    """Refuse a keyword the backend doesn't take, saying what was meant: a close match
    among the valid options, or the backends whose option it is."""
    unknown = [name for name in keywords if name not in accepted]
    if not unknown:
        return
    name = unknown[0]
    valid = [*common_options, *accepted]
    owners = owners_of_settings()
    if name in owners:
        hint = f"; it is an option of {', '.join(owners[name])}"
    else:
        close = difflib.get_close_matches(name, [*valid, *owners], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if close and close[0] not in valid:
            hint += f" (an option of {', '.join(owners[close[0]])})"
    shown = backend if backend.startswith("a ") else f"backend {backend!r}"
    first = f"Pool() got an unknown option {name!r} for {shown}{hint}"
    raise InvalidOptionError(f"{first}{'' if first.endswith('?') else '.'} "
                             f"Valid options: {', '.join(valid)}.")


def backend_settings() -> list[Setting]:
    """Every backend's declared settings, once each, with the backends that take it
    (for the configuration layer: a file may set a backend's option)."""
    owners = owners_of_settings()
    settings: dict[str, Setting] = {}
    for name in REGISTRY:
        for setting in backend_class(name).settings:
            settings.setdefault(setting.name,
                                dataclasses.replace(setting, backends=owners[setting.name]))
    return list(settings.values())


def owners_of_settings() -> dict[str, tuple[str, ...]]:
    """Each backend setting's name -> the backends that declare it."""
    owners: dict[str, tuple[str, ...]] = {}
    for name in REGISTRY:
        for setting in backend_class(name).settings:
            owners[setting.name] = (*owners.get(setting.name, ()), name)
    return owners


def default_capacity(backend: str | Scheduler | None) -> int:
    """How many jobs a backend runs at once when not told (joblib's n_jobs=-1). A name
    that is no backend gets the Scheduler's default: it is judged when the pool is
    made."""
    if isinstance(backend, Scheduler):
        return backend.default_max_running
    if backend == "auto":
        backend = detect_backend()
    if backend not in REGISTRY:
        return Scheduler.default_max_running
    return backend_class(backend).default_capacity()


def is_cluster(backend: str | None) -> bool:
    """Whether the backend's jobs wait in a scheduler's queue on other hosts (a status
    may then ask that queue)."""
    return backend in REGISTRY and backend_class(backend).is_cluster


def extra_arguments_option(backend: str) -> str | None:
    """The option that takes more arguments for the backend's submit tool
    (``sbatch_args``), None when it has none."""
    return backend_class(backend).extra_arguments_option
