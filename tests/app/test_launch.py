"""Start-up stays light: the window paints before numpy, pyqtgraph and the engine are imported.

The first test launches a fresh interpreter (so ``sys.modules`` starts empty),
builds the real ``MainWindow`` over a ``Controller`` offscreen and notes which
modules are loaded at the window's first paint; then it waits for the plot
modules to load (pyqtgraph on the GUI thread, in steps: PySide6's lazily made
types are not thread-safe) and for a plot dock brought to the front to fill
in. The others check, in this process, when the plot docks build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from app.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[2]
DOCKS = {"HealthDock", "InspectorDock", "LogDock", "BreakersDock", "CheckpointsDock", "ResourcesDock"}
NOT_AT_FIRST_PAINT = ("numpy", "pyqtgraph", "librosa", "numba", "scipy", "scipy.signal", "pebble",
                      "multiprocessing", "asyncio", "core.engine.batch", "core.engine.executor", "soundfile")

CHILD = r"""
import gc, json, sys, threading, time
from pathlib import Path

from app.main import keep_bools_alive
keep_bools_alive()
from PySide6.QtCore import QTimer, qInstallMessageHandler
from PySide6.QtWidgets import QApplication, QDockWidget, QToolBar

import app.window_docks as window_docks
from app.controller import Controller, EngineRecipe
from app.main_window import MainWindow
from core.resilience.health import HealthReport
from core.settings import Settings, SettingsStore

qInstallMessageHandler(lambda *args: None)  # offscreen chatter
work = Path(sys.argv[1])
store = SettingsStore(work / "settings.json")
store.save(Settings(output_dir=str(work / "out")))
facts = {"imported": sorted(sys.modules)}
import_plots = window_docks.preload_plot_modules


def watched_import():
    facts["pyqtgraph_before_import"] = "pyqtgraph" in sys.modules
    facts["import_thread"] = "main" if threading.current_thread() is threading.main_thread() else "other"
    import_plots()


window_docks.preload_plot_modules = watched_import
app = QApplication([sys.argv[0]])
controller = Controller(store, EngineRecipe(health=lambda out_dir: HealthReport(results=(), created_at=0.0)))
window = MainWindow(controller)


def painted():
    facts["at_paint"] = sorted(sys.modules)
    facts["docks_at_paint"] = sorted(d.objectName() for d in window.findChildren(QDockWidget))
    facts["queue_visible"] = window.view.isVisible()
    facts["toolbar_visible"] = window.findChild(QToolBar, "mainToolBar").isVisible()
    facts["plots_built_at_paint"] = {n: d.built for n, d in window.docks.items()}


window.view.first_painted.connect(painted)
window.show()
controller.open()
deadline = time.monotonic() + 30
while time.monotonic() < deadline and not all(d.build_allowed for d in window.docks.values()):
    app.processEvents()
    time.sleep(0.005)
facts["allowed"] = all(d.build_allowed for d in window.docks.values())
facts["pyqtgraph_after"] = "pyqtgraph" in sys.modules
facts["frozen"] = gc.get_freeze_count()
facts["preload_steps"] = window._panels._preload.steps
facts["built_when_allowed"] = {n: d.built for n, d in window.docks.items()}
resources = window.docks["ResourcesDock"]
resources.raise_()
while time.monotonic() < deadline and not resources.built:
    app.processEvents()
    time.sleep(0.005)
facts["resources_built"] = resources.built
facts["resources_curve"] = resources.cpu_curve is not None if resources.built else False
window.close()
print(json.dumps(facts))
"""


def launch(tmp_path: Path) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(ROOT)}
    for name in ("CONFIG", "CACHE", "LOG", "DATA"):
        env[f"STAVE_{name}_DIR"] = str(tmp_path / "user" / name.lower())
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_window_paints_before_the_heavy_modules_load(tmp_path):
    facts = launch(tmp_path)
    assert "at_paint" in facts, "the queue never painted"
    loaded = set(facts["at_paint"])
    assert not loaded & set(NOT_AT_FIRST_PAINT), f"imported before the first paint: {loaded & set(NOT_AT_FIRST_PAINT)}"
    assert not set(facts["imported"]) & set(NOT_AT_FIRST_PAINT)  # importing app.main_window alone stays light
    # and the window was whole at that moment: queue, toolbar and every dock (restoreState needs their names)
    assert facts["queue_visible"] and facts["toolbar_visible"]
    assert DOCKS <= set(facts["docks_at_paint"])
    assert not any(facts["plots_built_at_paint"][n] for n in ("InspectorDock", "BreakersDock", "ResourcesDock"))
    # after the paint: the plot modules were imported, start-up objects frozen for the GC
    assert facts["allowed"] and facts["pyqtgraph_after"] and facts["frozen"] > 0
    # pyqtgraph on the GUI thread (never a pool thread: PySide6 makes its types lazily, not thread-safely),
    # after the Qt types were made over several turns of the event loop
    assert facts["import_thread"] == "main" and not facts["pyqtgraph_before_import"]
    assert facts["preload_steps"] > 1
    # a dock behind a tab or showing its empty state builds nothing yet; brought to the front, it does
    assert not facts["built_when_allowed"]["ResourcesDock"] and not facts["built_when_allowed"]["InspectorDock"]
    assert facts["resources_built"] and facts["resources_curve"]


def test_plot_docks_build_when_shown_with_content(qtbot, make_controller):
    controller = make_controller()
    window = MainWindow(controller)
    qtbot.addWidget(window)
    window.show()
    docks = window.docks
    qtbot.waitUntil(lambda: all(d.build_allowed for d in docks.values()), timeout=20000)
    inspector, resources = docks["InspectorDock"], docks["ResourcesDock"]
    assert not resources.on_screen and not resources.built  # a tab behind the Log
    assert inspector.is_empty and not inspector.built  # nothing to plot yet
    resources.raise_()
    qtbot.waitUntil(lambda: resources.built, timeout=5000)
    x, _ = resources.cpu_curve.getData()
    qtbot.waitUntil(lambda: resources.last is not None, timeout=5000)
    assert x is not None and len(x) >= 1  # what was sampled before the plots existed is drawn
    assert not inspector.built


def test_deferred_plots_are_built_when_data_needs_them(qtbot, clock):
    from app.docks import BreakersDock, InspectorDock
    from core.resilience.breaker import BreakerSnapshot, BreakerState

    inspector = InspectorDock(defer=True)
    qtbot.addWidget(inspector)
    assert not inspector.built and not inspector.build_allowed and not hasattr(inspector, "wave_curve")
    inspector.ensure_built()  # what a loaded song does before it is shown
    assert inspector.built and inspector.wave_curve.getData() == (None, None)

    breakers = BreakersDock(clock=clock, defer=True)
    qtbot.addWidget(breakers)
    snap = BreakerSnapshot(name="demucs", state=BreakerState.OPEN, failure_count=3, success_count=0,
                           consecutive_failures=3, failure_rate=1.0, calls_in_window=3, opened_at_wall=None,
                           next_probe_in_s=30.0, disabled=False, forced=False)
    breakers.set_snapshots([snap])
    assert breakers.names() == ["demucs"] and breakers.state_text("demucs") == "open"  # the table at once
    assert breakers.strips is None and not breakers.built  # the strip waits
    clock.advance(1.0)
    breakers.tick()
    x, y = breakers.history("demucs")  # needs the strip: built now, from the history kept meanwhile
    assert breakers.built and breakers.strips is not None
    assert list(x) == [-1.0, 0.0] and list(y) == [2.0, 2.0]


def test_the_checkpoint_reader_reads_again_only_what_changed(tmp_path, executor):
    from app.runner import CheckpointReader
    from core.engine.batch import Engine
    from tests.app.conftest import wav
    from tests.core.engine import teststages

    for i in range(3):
        wav(tmp_path / "in", f"take{i}.wav", seed=i)
    with Engine(tmp_path / "out", teststages.pipeline(), executor=executor) as engine:
        engine.add_paths([tmp_path / "in"], {})
        reader = CheckpointReader()
        [first] = reader(engine)
        [again] = reader(engine)
        assert again["jobs"] is first["jobs"]  # not being run, same status and counts: not read again
        jobs = first["jobs"]
        assert [j["status"] for j in jobs] == ["pending"] * 3 and all(j["stages"] == {} for j in jobs)
        changed = jobs[0]["job_id"]
        engine.store.skip_stage(changed, "ingest", "a stage changed, no job changed status")
        assert reader(engine)[0]["jobs"] is jobs  # the reader cannot see that by itself...
        reader.forget(first["batch_id"])  # ...so whoever changes a batch says so
        [fresh] = reader(engine)
        assert fresh["jobs"] is not jobs and fresh["jobs"][0]["stages"] == {"ingest": "skipped"}
        assert fresh["jobs"][1] is jobs[1] and fresh["jobs"][2] is jobs[2]  # unchanged jobs keep their dict
        engine.store.mark_job_cancelled(jobs[1]["job_id"])  # a new status: the counts change
        [cancelled] = reader(engine)
        assert cancelled["counts"]["cancelled"] == 1 and cancelled["jobs"][1]["status"] == "cancelled"
        run = engine.start(first["batch_id"])  # prepared: now the engine's current run
        try:
            [live] = reader(engine)
            assert reader(engine)[0]["jobs"] is not live["jobs"]  # the batch being run is read every time
        finally:
            run.pause("test over")
            run.work()  # never started: returns at once, the batch recorded as paused
