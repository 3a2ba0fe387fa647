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
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QRunnable, Signal

from core.engine.store_rows import JobRow, JobStatus
from core.resilience.cancel import CancelToken

if TYPE_CHECKING:  # the functions below run on pool threads, after the controller opened an engine
    from core.engine.batch import AddResult, Engine

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
    return CheckpointReader(limit)(engine)


class CheckpointReader:
    """:func:`read_checkpoints` with a memory, for the panel that asks again every few seconds.

    A batch that is not running now (not the engine's current run: a batch queued and not started
    yet is "running" in the store too) and whose status, counts and creation time are as last read
    keeps the jobs read then (its rows are not read again), unless :meth:`forget` was called for it since:
    whoever changes a batch's stages says so (a re-run of pending jobs moves no job to another
    status). A job whose fields did not change keeps its dict. A batch of 10,000 jobs is then not
    re-read while another one runs, and what did not change costs no allocation (which the garbage
    collector would have to walk). Call it from one thread at a time; ``forget`` from any.
    """

    def __init__(self, limit: int = 20):
        self.limit = limit
        self._source: tuple[int, str] | None = None  # the engine the memory is about
        self._batches: dict[int, tuple[tuple, list[dict]]] = {}  # batch id -> (its key, its jobs)
        self._jobs: dict[int, dict] = {}  # job id -> the dict last returned
        self._stale: set[int] = set()  # batches changed since they were read
        self._lock = threading.Lock()  # guards _stale

    def forget(self, batch_id: int) -> None:
        """The batch changed: read its jobs again next time."""
        with self._lock:
            self._stale.add(batch_id)

    def __call__(self, engine: Engine) -> list[dict]:
        source = (id(engine), str(engine.out_dir))
        if source != self._source:
            self._source, self._batches, self._jobs = source, {}, {}
        with self._lock:
            stale, self._stale = self._stale, set()
        for batch_id in stale:
            self._batches.pop(batch_id, None)
        store, run = engine.store, engine.current_run
        live = run.batch_id if run is not None and not run.finished.is_set() else None
        out, batches, known = [], {}, {}
        for batch in reversed(store.list_batches()[-self.limit:]):
            status, counts = batch.status.value, store.counts(batch.id)
            key = (status, tuple(sorted(counts.items())), batch.created_at)
            cached = self._batches.get(batch.id)
            if cached is not None and cached[0] == key and batch.id != live:
                jobs = cached[1]
            else:
                jobs = self._read_jobs(store, batch.id)
            batches[batch.id] = (key, jobs)
            known.update((j["job_id"], j) for j in jobs)
            out.append({"batch_id": batch.id, "status": status, "created_at": batch.created_at,
                        "counts": counts, "jobs": jobs})
        self._batches, self._jobs = batches, known  # forget batches past the limit
        return out

    def _read_jobs(self, store, batch_id: int) -> list[dict]:
        stages: dict[int, dict[str, str]] = {}
        for row in store.batch_stages(batch_id):
            stages.setdefault(row.job_id, {})[row.stage] = row.status.value
        previous, jobs = self._jobs, []
        for j in store.jobs(batch_id):
            job = {"job_id": j.id, "path": j.input_path, "status": j.status.value, "stages": stages.get(j.id, {})}
            old = previous.get(j.id)
            jobs.append(old if old == job else job)
        return jobs
