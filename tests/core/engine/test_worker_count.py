"""How many worker processes a run starts: what was asked, at most one per usable core and one per job."""

from __future__ import annotations

import os

import pytest

from core.engine import supervisors_for, usable_cpus, workers_to_run


@pytest.fixture
def cores(monkeypatch):
    def set_cores(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)

    return set_cores


def test_usable_cpus_follow_the_affinity_a_container_or_taskset_gives(cores):
    cores(3)
    assert usable_cpus() == 3
    cores(0)  # never zero, whatever the platform says
    assert usable_cpus() == 1


@pytest.mark.parametrize("asked, n_cores, jobs, expected", [
    (1000, 2, None, 2),  # more than the cores: one per core
    (2, 8, None, 2),  # fewer than the cores: as asked
    (8, 8, 3, 3),  # three files: three workers
    (4, 2, 1, 1),
    (0, 4, None, 1),  # never fewer than one
    (2, 2, 0, 2),  # jobs unknown (0): the cores decide
])
def test_workers_to_run(cores, asked, n_cores, jobs, expected):
    cores(n_cores)
    assert workers_to_run(asked, jobs) == expected
    assert supervisors_for(expected) == expected + 1  # and the run's threads follow
