"""Fixtures of the window tests: user folders and QSettings in tmp dirs, a small real pipeline, tiny WAVs.

Every controller made through ``make_controller`` is shut down at the end of
its test, and the test fails if one of its thread pools is still running.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PySide6.QtCore import QSettings

from app.controller import Controller, EngineRecipe
from app.main import keep_bools_alive
from core.engine.executor import ProcessExecutor
from core.resilience.health import HealthReport, HealthResult, HealthStatus
from core.resilience.retry import RetryConfig
from core.settings import RunSettings, Settings, SettingsStore
from tests.core.engine import teststages


keep_bools_alive()  # PySide6 6.12 takes a reference from True on every signal (see app.main)


@pytest.fixture(autouse=True)
def user_dirs_in_tmp(tmp_path, monkeypatch):
    """STAVE_*_DIR and QSettings point into the test's tmp dir: nothing touches the real user folders."""
    for name in ("CONFIG", "CACHE", "LOG", "DATA"):
        monkeypatch.setenv(f"STAVE_{name}_DIR", str(tmp_path / "user" / name.lower()))
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield


@pytest.fixture(scope="session")
def executor():
    """One warm worker pool for every window test (engines given an executor do not shut it down)."""
    ex = ProcessExecutor(max_workers=2, grace_s=2.0)
    yield ex
    ex.shutdown()


def health_report(missing: tuple[str, ...] = ()) -> HealthReport:
    results = [HealthResult("python", HealthStatus.OK, version="3.11", required=True)]
    results += [HealthResult(name, HealthStatus.MISSING, details=f"{name} was not found", required=True,
                             install_hint=f"sudo apt install {name}") for name in missing]
    return HealthReport(results=tuple(results), created_at=0.0)


@pytest.fixture
def recipe(executor):
    return EngineRecipe(pipeline=teststages.pipeline, config=lambda settings: {}, executor=executor,
                        health=lambda out_dir: health_report())


def write_settings(path, out_dir, workers: int = 2) -> SettingsStore:
    store = SettingsStore(path)
    retry = RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02)
    store.save(Settings(output_dir=str(out_dir), run=RunSettings(workers=workers, retry=retry)))
    return store


@pytest.fixture
def make_controller(qtbot, tmp_path, recipe):
    made: list[Controller] = []

    def make(out_dir=None, *, workers: int = 2, recipe_=None, open_: bool = True) -> Controller:
        store = write_settings(tmp_path / f"settings{len(made)}.json", out_dir or tmp_path / "out", workers)
        controller = Controller(store, recipe_ or recipe)
        made.append(controller)
        if open_:
            controller.open()
            qtbot.waitUntil(lambda: not controller.busy, timeout=10000)
        return controller

    yield make
    for controller in made:
        assert controller.shutdown(20000), "a pool did not stop"
        for pool in controller.thread_pools():
            assert pool.activeThreadCount() == 0, f"{pool.objectName()} still runs a thread"


def wav(folder, name: str, seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    path = folder / name
    sf.write(path, (rng.standard_normal(800) * 0.1).astype(np.float32), 8000)
    return path
