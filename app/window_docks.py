"""The window's docks: made (each with its objectName, so ``restoreState`` works), wired to the controller,
their plots built after the first paint, and stopped when the window closes.

Start-up is kept short: every dock exists before the first paint, but the
plots inside the docks are built after it: pyqtgraph is imported in small
steps on the GUI thread (see :class:`PlotPreloader`), then each plot dock
builds its plots, one per turn of the event loop, once it is visible and has
something to show (see ``StaveDock``).
Where the docks go is :mod:`app.window_layout`'s business.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import time
from typing import TYPE_CHECKING

from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QMenu

from app.runner import TaskRunnable

if TYPE_CHECKING:
    from app.controller import Controller

log = logging.getLogger(__name__)

PANELS_FALLBACK_MS = 1000  # build the plots this long after show even if the queue never painted
PRELOAD_STEP_S = 0.008  # the GUI thread's time per turn of the event loop while the plot modules load


def build_docks(window: QMainWindow, controller: Controller,
                view_menu: QMenu) -> tuple[dict, dict[str, Qt.DockWidgetArea]]:
    """The docks by class name, hidden, and the area each belongs in; empty if the panels cannot be imported."""
    try:
        from app import docks as panels
    except ImportError as exc:  # the window works without its panels
        log.warning("the dock panels are not available: %s", exc)
        return {}, {}
    made = {}
    areas: dict[str, Qt.DockWidgetArea] = {}
    right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
    window.setCorner(Qt.Corner.TopRightCorner, right)  # the right column takes the full height
    window.setCorner(Qt.Corner.BottomRightCorner, right)
    for cls, area in ((panels.HealthDock, right), (panels.InspectorDock, right), (panels.LogDock, bottom),
                      (panels.BreakersDock, right), (panels.CheckpointsDock, right),
                      (panels.ResourcesDock, bottom)):
        plots = cls in (panels.InspectorDock, panels.BreakersDock, panels.ResourcesDock)
        dock = made[cls.__name__] = cls(window, defer=True) if plots else cls(window)
        dock.hide()  # placed once the window is shown (see WindowLayout.arrange_docks)
        areas[cls.__name__] = area
        view_menu.addAction(dock.toggleViewAction())
    _wire_docks(made, controller)
    made["LogDock"].attach_logging("")
    return made, areas


def _wire_docks(made: dict, c: Controller) -> None:
    """The panels show the controller's data; their buttons call its slots."""
    health, breakers, checkpoints = made["HealthDock"], made["BreakersDock"], made["CheckpointsDock"]
    health.recheck_requested.connect(c.recheck_health)
    c.health_checked.connect(health.set_report)
    c.health_checking.connect(health.set_checking)
    c.breakers_changed.connect(breakers.set_snapshots)
    breakers.reset_requested.connect(c.reset_breaker)
    breakers.force_open_requested.connect(c.force_open_breaker)
    c.checkpoints_changed.connect(checkpoints.set_batches)
    checkpoints.resume_requested.connect(c.resume)
    checkpoints.discard_requested.connect(c.discard)
    checkpoints.rerun_from_requested.connect(c.rerun_from)


def close_docks(docks: dict) -> None:
    """Stop what the docks run (resource sampling, result loading, the log handler)."""
    for name, method in (("ResourcesDock", "stop"), ("InspectorDock", "shutdown"), ("LogDock", "detach_logging")):
        dock = docks.get(name)
        if dock is not None and callable(getattr(dock, method, None)):
            getattr(dock, method)()


def preload_plot_modules() -> None:
    """Import what the plots need, now, on the calling thread, which must be the GUI thread.

    The first time, what start-up created (modules, classes, functions: some 80,000 objects that
    live as long as the process) is moved out of the garbage collector's reach with
    :func:`gc.freeze`, before and after the import. Otherwise every full collection walks them
    all, holding the GIL for 30-80 ms in whichever thread triggers it while the GUI thread waits.
    Objects are still freed when their reference count drops; only cycles among them would never
    be collected, and start-up makes few of those.
    """
    first = "pyqtgraph" not in sys.modules
    if first:
        gc.freeze()
    import numpy  # noqa: F401
    import pyqtgraph  # noqa: F401

    if first:
        gc.freeze()


# What pyqtgraph imports that knows nothing of Qt (numpy is the longest single import): loaded on a pool thread
_PLAIN_MODULES = ("numpy", "numpy.typing", "decimal", "cProfile", "xml.etree.ElementTree", "pydoc",
                  "multiprocessing.connection", "importlib.resources", "colorama")
_QT_MODULES_OF_PYQTGRAPH = ("QtSvg", "QtOpenGL", "QtOpenGLWidgets", "QtTest")  # imported (one a step) beforehand


def _import_plain_modules() -> None:
    if "pyqtgraph" not in sys.modules:
        gc.freeze()  # start-up's objects (see preload_plot_modules)
    for name in _PLAIN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional one (colorama): pyqtgraph copes, and so does this
            pass


class PlotPreloader(QObject):
    """Imports pyqtgraph on the GUI thread, in steps of ``PRELOAD_STEP_S``, then emits ``done``.

    Never on another thread: PySide6 creates its Python types lazily, on their
    first use, and that is not thread-safe. Importing pyqtgraph (which reads
    every name of QtCore, QtGui and QtWidgets) on a pool thread while the GUI
    thread painted crashed the window with SIGSEGV now and then. So only
    modules that know nothing of Qt (numpy, some of the standard library) are
    imported on a pool thread; then the Qt types are made here a few dozen per
    turn of the event loop (0.05-0.2 s in all), and pyqtgraph's own import,
    one step of 0.07-0.13 s (the one stall left, once, just after start-up),
    finds them made.
    """

    done = Signal()

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._names = None
        self._stopped = False
        self._pool = QThreadPool(self)
        self._pool.setObjectName("stave-window-preload")
        self._pool.setMaxThreadCount(1)
        self._plain_signals = None
        self.steps = 0  # turns of the event loop taken so far

    def start(self) -> None:
        if "pyqtgraph" in sys.modules:
            QTimer.singleShot(0, self, self.done.emit)
        else:
            task = TaskRunnable(_import_plain_modules)
            self._plain_signals = task.signals  # kept until it has reported
            task.signals.finished.connect(self._begin)
            task.signals.errored.connect(self._begin)  # pyqtgraph's import below then says what is wrong
            self._pool.start(task)

    def stop(self) -> None:
        """Take no more steps; wait for the plain modules' import if it is in flight."""
        self._stopped = True
        self._pool.waitForDone()

    def _begin(self, *_: object) -> None:
        self._plain_signals = None
        self._names = iter([(module, name) for module in (QtCore, QtGui, QtWidgets) for name in dir(module)]
                           + [(None, f"PySide6.{name}") for name in _QT_MODULES_OF_PYQTGRAPH])
        QTimer.singleShot(0, self, self._step)

    def _step(self) -> None:
        if self._stopped:
            return
        self.steps += 1
        deadline = time.perf_counter() + PRELOAD_STEP_S
        for module, name in self._names:
            try:
                getattr(module, name) if module is not None else importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a name that cannot be read is pyqtgraph's import's business
                pass
            if time.perf_counter() > deadline:
                QTimer.singleShot(0, self, self._step)
                return
        try:
            preload_plot_modules()
        except Exception:  # noqa: BLE001 - the docks log what fails to build
            log.exception("the plot modules could not be imported")
        self.done.emit()


class PanelStarter(QObject):
    """Starts the docks' panels once: after the queue's first paint, or ``PANELS_FALLBACK_MS`` after show."""

    def __init__(self, docks: dict, parent: QObject | None = None):
        super().__init__(parent)
        self._docks = docks
        self._started = False
        self._closed = False
        self._preload = PlotPreloader(self)
        self._preload.done.connect(self._allow_builds)

    def start_soon(self) -> None:
        """The queue painted: start on the next turn of the event loop."""
        QTimer.singleShot(0, self, self.start)

    def window_shown(self) -> None:
        if not self._started:
            QTimer.singleShot(PANELS_FALLBACK_MS, self, self.start)

    def start(self) -> None:
        """Import the plot modules in small steps, then let the docks build their plots."""
        if self._started or self._closed or not self._docks:
            return
        self._started = True
        resources = self._docks.get("ResourcesDock")
        if resources is not None:
            resources.start()
        self._preload.start()

    def _allow_builds(self) -> None:
        if self._closed:
            return
        for dock in self._docks.values():
            dock.allow_build()

    def close(self) -> None:
        """The window closes: build nothing more."""
        self._closed = True
        self._preload.stop()


__all__ = ["PANELS_FALLBACK_MS", "PanelStarter", "PlotPreloader", "build_docks", "close_docks",
           "preload_plot_modules"]
