"""Work off the GUI thread: runnables whose results come back as signals (the superqt pattern).

A runnable's signals live on a small ``QObject`` created with it, on the GUI
thread; ``run()`` executes on a pool thread and turns every outcome, an
exception included, into a signal. Receivers therefore run on the GUI thread
and workers never touch widgets. Owners keep the ``signals`` object alive
until its last signal has been handled (see ``Controller._submit``).

The functions at the end are what the controller runs on its pools (scans,
store reads for the panels); they take the engine explicitly and touch no Qt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Signal

from core.engine.batch import AddResult, Engine
from core.engine.store_rows import JobRow, JobStatus
from core.resilience.cancel import CancelToken

log = logging.getLogger(__name__)


class TaskSignals(QObject):
    finished = Signal(object)
    """The task's return value."""

    errored = Signal(object)
    """The exception the task raised (never re-raised on the pool thread)."""


class TaskRunnable(QRunnable):
    """Runs ``fn(*args)`` once on a pool thread; ``signals.finished(result)`` or ``signals.errored(exc)``."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = ""):
        super().__init__()
        self.signals = TaskSignals()
        self.name = name or getattr(fn, "__name__", "task")
        self._fn = fn
        self._args = args

    def run(self) -> None:
        try:
            result = self._fn(*self._args)
        except Exception as exc:  # everything becomes a signal: a pool thread has nobody to raise to
            log.exception("background task %s failed", self.name)
            self.signals.errored.emit(exc)
            return
        self.signals.finished.emit(result)


class SupervisorSignals(QObject):
    left = Signal(int)
    """The batch id: this supervisor left the run (queue empty, paused or cancelled)."""

    errored = Signal(object)
    """An exception that escaped ``BatchRun.work()`` (a bug in the engine; the run goes on without it)."""


class SupervisorRunnable(QRunnable):
    """One supervisor thread of a batch run: ``run()`` calls ``batch_run.work()``.

    The controller starts as many as there are workers on its own pool; the
    last one out finishes the batch (inside ``work()``).
    """

    def __init__(self, batch_run: Any):
        super().__init__()
        self.signals = SupervisorSignals()
        self._batch_run = batch_run

    def run(self) -> None:
        try:
            self._batch_run.work()
        except Exception as exc:
            log.exception("a supervisor of batch %s failed", self._batch_run.batch_id)
            self.signals.errored.emit(exc)
        finally:
            self.signals.left.emit(self._batch_run.batch_id)


# --- work the controller runs on its pools ------------------------------------------------


class BatchSlot:
    """Which batch newly added files go into; the first scan that creates the batch fills it in.

    Consecutive scans share one slot, and the serial pool runs them in order,
    so two folders dropped one after the other land in the same batch.
    """

    def __init__(self, batch_id: int | None = None):
        self.batch_id = batch_id


@dataclass(frozen=True)
class ScanOutcome:
    result: AddResult
    skipped_rows: list[JobRow]  # skipped files are recorded as jobs but announce no JobQueued


def scan_into(engine: Engine, slot: BatchSlot, paths: list[str], config: Any, cancel: CancelToken) -> ScanOutcome:
    """Scan ``paths`` and queue what was found into ``slot``'s batch (creating it when empty)."""
    result = engine.add_paths(paths, config, batch_id=slot.batch_id, cancel=cancel)
    slot.batch_id = result.batch_id
    skipped = engine.store.jobs(result.batch_id, JobStatus.SKIPPED) if result.skipped else []
    return ScanOutcome(result, skipped)


def read_checkpoints(engine: Engine, limit: int = 20) -> list[dict]:
    """The newest ``limit`` batches of the store, as the Checkpoints panel takes them (newest first)."""
    store = engine.store
    out = []
    for batch in reversed(store.list_batches()[-limit:]):
        stages: dict[int, dict[str, str]] = {}
        for row in store.batch_stages(batch.id):
            stages.setdefault(row.job_id, {})[row.stage] = row.status.value
        jobs = [{"job_id": j.id, "path": j.input_path, "status": j.status.value, "stages": stages.get(j.id, {})}
                for j in store.jobs(batch.id)]
        out.append({"batch_id": batch.id, "status": batch.status.value, "created_at": batch.created_at,
                    "counts": store.counts(batch.id), "jobs": jobs})
    return out
