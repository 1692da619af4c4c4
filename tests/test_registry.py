"""The backend registry: every registered backend runs the shared suite, and adding one
is one module and one registry line (docs/adding_a_scheduler.rst)."""

from __future__ import annotations

import pytest
from conftest import BACKEND_PARAMS, made_backend

import poolparty
from poolparty import backends, config
from poolparty.local import Local
from poolparty.settings import COUNT, Setting


def suite_params_of(name: str) -> list[str]:
    """The shared suite's parameters that run backend ``name``: a cluster's on its dummy
    scheduler (and its real one), the others as themselves."""
    return [param for param in BACKEND_PARAMS
            if param == name or param.split("-", 1)[-1] == name]


def missing_from_suite(registry: dict[str, tuple[str, str]]) -> list[str]:
    """The registered backends the shared suite does not run; a cluster backend needs
    its dummy scheduler there (the faults a real one can't make on demand)."""
    return [name for name in registry
            if not suite_params_of(name)
            or (backends.backend_class(name).is_cluster
                and f"dummy-{name}" not in suite_params_of(name))]


def test_every_registered_backend_is_a_parameter_of_the_shared_suite():
    assert missing_from_suite(backends.REGISTRY) == []


@pytest.mark.parametrize("name", sorted(backends.REGISTRY))
def test_every_registered_backend_runs_a_map_of_the_shared_suite(name, work_root, tmp_path):
    param = suite_params_of(name)[0]
    with made_backend(param, work_root, tmp_path) as made:
        pool = made.make_pool()
        assert pool.scheduler.name == name
        assert pool.map(abs, [-1, -2, -3], chunksize=1) == [1, 2, 3]


def test_every_backend_option_a_file_may_set_is_a_setting():
    """A backend's declared settings reach the configuration, owned by that backend."""
    for name in backends.REGISTRY:
        scheduler_class = backends.backend_class(name)
        for setting in scheduler_class.settings:
            assert setting.name in backends.options_of_backend(scheduler_class)
            assert name in (config.SETTINGS[setting.name].backends or ())


class Niced(Local):
    """A backend added for this test: local processes with a setting of its own."""

    name = "niced"
    settings = (Setting("niceness", COUNT, 0, "how nice the jobs are"),)

    def __init__(self, max_workers: int | None = None, *, niceness: int = 0) -> None:
        super().__init__(max_workers)
        self.niceness = niceness


@pytest.fixture
def niced_registered(monkeypatch):
    """``niced`` added to the registry, one line, as a new backend would be."""
    monkeypatch.setitem(backends.REGISTRY, "niced", (__name__, "Niced"))


def test_an_added_backend_is_made_by_name_with_its_settings(niced_registered, tmp_path):
    pool = poolparty.Pool(backend="niced", niceness=3, work_dir=tmp_path / "pp",
                          polling_interval=0.2)
    assert isinstance(pool.scheduler, Niced) and pool.scheduler.niceness == 3
    assert pool.map(abs, [-4, 5]) == [4, 5]
    added = {setting.name: setting for setting in backends.backend_settings()}
    assert added["niceness"].backends == ("niced",)
    assert backends.default_capacity("niced") == Local.default_capacity()
    assert not backends.is_cluster("niced")


def test_an_added_backend_without_a_suite_parameter_is_reported(niced_registered):
    assert missing_from_suite(backends.REGISTRY) == ["niced"]


def test_an_option_of_another_backend_names_its_owner(niced_registered, tmp_path):
    with pytest.raises(poolparty.InvalidOptionError, match="an option of niced"):
        poolparty.Pool(backend="local", niceness=1, work_dir=tmp_path / "pp")
