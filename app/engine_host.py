"""The controller's engine and the two thread pools that do its slow work, never the global pool nor the GUI thread.

* ``serial`` (one thread): the engine's life (open, close) and what must
  happen in order: scans, preparing a run, retry/re-run resets. A Start
  pressed while a folder is still being scanned runs after the scan, on the
  batch it filled.
* ``pool``: a run's supervisors (one ``SupervisorRunnable`` per worker),
  the health check and the store reads behind the panels.

Tasks go through :meth:`EngineHost.submit`: their result or error comes back
on the GUI thread, and is dropped once the host is closing.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, QThreadPool

from app.runner import TaskRunnable
from core.engine import supervisors_for
from core.engine.store import store_path

if TYPE_CHECKING:  # the engine (pebble, multiprocessing, asyncio) is imported when a folder is first opened
    from app.engine_recipe import EngineRecipe
    from core.engine import events as ev
    from core.engine.batch import Engine, EngineOptions


class EngineHost:
    """Opens, hands out and closes the engine of one output folder at a time; owns the pools that use it."""

    def __init__(self, recipe: EngineRecipe, bus: ev.EventBus, options: Callable[[], EngineOptions], workers: int,
                 parent: QObject):
        self.recipe = recipe
        self.bus = bus
        self._options = options  # read each time an engine is opened: new run settings apply to the next engine
        self.pool = QThreadPool(parent)
        self.pool.setObjectName("stave-supervisors")
        self.set_workers(workers)
        self.serial = QThreadPool(parent)
        self.serial.setObjectName("stave-engine")
        self.serial.setMaxThreadCount(1)
        self.tasks: set[QObject] = set()  # signals of tasks in flight
        self.closing = False  # set once: results of tasks still in flight are dropped
        self._engine_lock = threading.Lock()
        self._engine: Engine | None = None

    def set_workers(self, workers: int) -> None:
        """One thread per supervisor (one more than there are workers), plus two for the health check and the
        panels' reads."""
        self.pool.setMaxThreadCount(supervisors_for(workers) + 2)

    def submit(self, pool: QThreadPool, fn: Callable, *args, done: Callable | None,
               failed: Callable[[BaseException], None]) -> None:
        """Run ``fn(*args)`` on ``pool``; ``done(result)`` or ``failed(exc)`` on the GUI thread (unless closing)."""
        task = TaskRunnable(fn, *args)
        signals = task.signals
        self.tasks.add(signals)

        def finish(handler, value):
            self.tasks.discard(signals)
            if not self.closing and handler is not None:
                handler(value)

        signals.finished.connect(lambda value: finish(done, value))
        signals.errored.connect(lambda exc: finish(failed, exc))
        pool.start(task)

    @property
    def busy(self) -> bool:
        """Tasks are in flight (scans, opening, health check, panel reads)."""
        return bool(self.tasks)

    @property
    def engine(self) -> Engine | None:
        with self._engine_lock:
            return self._engine

    def engine_for(self, out_dir: str, create: bool) -> Engine | None:
        """The open engine of ``out_dir`` (serial pool only); opened on first use."""
        with self._engine_lock:
            if self._engine is not None and self._engine.out_dir == out_dir:
                return self._engine
        self.close_engine()  # another folder's
        if not create and not store_path(out_dir).is_file():
            return None
        from core.engine.batch import Engine  # off the GUI thread: only the pools open engines

        engine = Engine(out_dir, self.recipe.pipeline(), self._options(), bus=self.bus,
                        executor=self.recipe.executor, create=create)
        for name in engine.store.breakers():  # show the breakers this folder remembers
            engine.breakers.get(name)
        with self._engine_lock:
            self._engine = engine
        return engine

    def close_engine(self) -> None:
        """Serial pool only (or once both pools are done)."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()


__all__ = ["EngineHost"]
