"""The window's controller: one output folder's engine, its batches and the panels' data.

The controller is the one object the window talks to: the signals it listens
to, the current batch and the queue model live here. The work is shared out:

* :mod:`app.engine_host` — the engine's life and the controller's two thread
  pools (which work runs on which is told there); never the global pool,
  never the GUI thread;
* :mod:`app.batch_control` — start, pause, cancel, resume, discard, retry
  and re-run (methods of this class, with the supervisors of a run);
* :mod:`app.event_feed` — engine events, fed to the queue a slice per turn
  of the event loop;
* :mod:`app.health_check` and :mod:`app.checkpoints_poller` — the Health
  and Checkpoints panels' data;
* :mod:`app.engine_recipe` — how engines are built (tests swap in a small
  pipeline).

This module keeps opening a folder, the settings, the add-files flow (scans
off the GUI thread), applying events to the queue, the breakers and shutdown.
Engine events reach the GUI through the ``EngineBridge``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, QThreadPool, QUrl, Signal
from PySide6.QtGui import QDesktopServices

from app.batch_control import BatchControl
from app.bridge import EngineBridge
from app.checkpoints_poller import CheckpointsPoller
from app.control_state import ControlState, JobInfo
from app.engine_host import EngineHost
from app.engine_recipe import EngineRecipe, default_output_dir, engine_options, run_workers
from app.event_feed import EventFeed
from app.health_check import HealthCheck
from app.queue_model import QueueModel, RowState
from app.runner import BatchSlot, ScanOutcome, scan_into
from core.engine import events as ev
from core.resilience.cancel import CancelToken
from core.resilience.health import HealthReport
from core.settings import Settings, SettingsStore

if TYPE_CHECKING:  # the engine (pebble, multiprocessing, asyncio) is imported when a folder is first opened
    from core.engine.batch import Engine

log = logging.getLogger(__name__)


class Controller(QObject, BatchControl):
    """What the window talks to: signals for everything it shows, slots for everything it asks (see the module)."""

    batch_started = Signal(int)
    """The batch id: its run started (supervisors are on the pool)."""
    batch_finished = Signal(object)
    """A ``BatchSummary``: the run ended (finished, paused or cancelled)."""
    paths_scanned = Signal(object)
    """An ``AddResult``: dropped paths were scanned and queued."""
    resume_offered = Signal(int, dict)
    """(batch id, {status: n}): the folder holds an unfinished batch."""
    engine_opened = Signal(str)
    """The output folder whose engine is now open."""
    output_dir_changed = Signal(str)
    """The new output folder."""
    state_changed = Signal(object)
    """A ``ControlState``: what the actions may do now."""
    progress_changed = Signal(object)
    """The newest ``Progress`` event of the running batch."""
    # Lists travel as ``object``: a ``Signal(list)`` converts every element to a QVariant and back
    # (75 ms for the checkpoints of a 10,000-job batch); ``object`` hands the list itself over.
    jobs_updated = Signal(object)
    """A list of job ids whose rows changed (to refresh a details view)."""
    health_checking = Signal(bool)
    """True while a health check runs."""
    health_checked = Signal(object)
    """A ``HealthReport``."""
    breakers_changed = Signal(object)
    """``[BreakerSnapshot]``, sorted by name."""
    checkpoints_changed = Signal(object)
    """A list of batches as the Checkpoints panel takes them (see ``app.runner.read_checkpoints``)."""
    preflight_blocked = Signal(str)
    """The preflight report as text: the run did not start (the disk or memory would not do)."""
    error_occurred = Signal(str)
    """A readable message (shown in place, never as a pop-up)."""
    message_posted = Signal(str)
    """A transient status message."""

    def __init__(self, settings_store: SettingsStore | None = None, recipe: EngineRecipe | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.settings_store = settings_store or SettingsStore()
        loaded = self.settings_store.load()
        self.settings: Settings = loaded.settings
        self.load_warnings = list(loaded.warnings)
        self.recipe = recipe or EngineRecipe()
        self.out_dir = os.path.abspath(os.path.expanduser(self.settings.output_dir or default_output_dir()))
        self.queue = QueueModel(self)
        self.bridge = EngineBridge(parent=self)
        self.bus = ev.EventBus()
        self._unsubscribe_bridge = self.bus.subscribe(self.bridge.post)
        self._host = EngineHost(self.recipe, self.bus, lambda: engine_options(self.settings.run),
                                run_workers(self.settings.run), parent=self)
        self._adopted: Engine | None = None
        self._error = ""
        self._slot = BatchSlot()
        self._scans: set[CancelToken] = set()
        self._offer: tuple[int, dict] | None = None  # the resume offer still open
        self._last_state: ControlState | None = None
        self._init_batch_control()
        self._health = HealthCheck(self._host, self.recipe.health, parent=self)
        self._health.checking.connect(self.health_checking)
        self._health.checked.connect(self.health_checked)
        self._health.failed.connect(self.error_occurred)
        self._checkpoints = CheckpointsPoller(self._host, parent=self)
        self._checkpoints.changed.connect(self.checkpoints_changed)
        self._feed = EventFeed(self._apply_events, parent=self)
        self.bridge.events_arrived.connect(self._feed.feed)
        self.bridge.progress_changed.connect(self.progress_changed)
        self.bridge.breaker_changed.connect(self._emit_breakers)

    # -- plumbing ----------------------------------------------------------------------
    def _submit(self, pool: QThreadPool, fn: Callable, *args, done: Callable | None = None,
                failed: Callable | None = None) -> None:
        self._host.submit(pool, fn, *args, done=done, failed=failed or self._report)

    def _report(self, exc: BaseException) -> None:
        self.error_occurred.emit(str(exc) or type(exc).__name__)

    @property
    def _closing(self) -> bool:
        return self._host.closing

    @property
    def engine(self) -> Engine | None:
        return self._host.engine

    @property
    def last_health(self) -> HealthReport | None:
        return self._health.last_report

    def thread_pools(self) -> tuple[QThreadPool, QThreadPool]:
        """The controller's own pools: (supervisors and panels, the serial engine pool)."""
        return self._host.pool, self._host.serial

    @property
    def busy(self) -> bool:
        """Background work other than a run is in flight (scans, opening, health check, panel reads)."""
        return self._host.busy

    def state(self) -> ControlState:
        counts = self.queue.counts()
        return ControlState(
            out_dir=self.out_dir, scanning=bool(self._scans), running=self.active,
            stopping=self._stop is not None and self.active, queued=counts[RowState.QUEUED.value],
            retryable=sum(counts[s.value] for s in (RowState.FAILED, RowState.QUARANTINED, RowState.CANCELLED)),
            degraded=counts[RowState.DEGRADED.value], error=self._error)

    def _emit_state(self) -> None:
        state = self.state()
        if state != self._last_state:
            self._last_state = state
            self.state_changed.emit(state)

    # -- opening a folder ------------------------------------------------------------------
    def open(self) -> None:
        """Look at the output folder: load its latest batch, offer to resume an unfinished one; check health."""
        out_dir = self.out_dir
        self._error = ""
        self._submit(self._host.serial, self._open_job, out_dir, done=self._on_opened, failed=self._on_open_failed)
        self.recheck_health()
        self._emit_state()

    def _open_job(self, out_dir: str) -> tuple | None:
        engine = self._host.engine_for(out_dir, create=False)
        if engine is None:
            return None
        batch = engine.store.latest_unfinished_batch()
        unfinished = batch is not None
        if batch is None:
            batches = engine.store.list_batches()
            batch = batches[-1] if batches else None
        if batch is None:
            return engine, None, [], False, {}
        return engine, batch.id, engine.store.jobs(batch.id), unfinished, engine.store.counts(batch.id)

    def _on_opened(self, found: tuple | None) -> None:
        if found is None:  # no store yet: it is made with the first batch
            self._emit_state()
            return
        engine, batch_id, jobs, unfinished, counts = found
        self._adopt(engine)
        if batch_id is not None:
            self.queue.load_batch(batch_id, jobs)
        if unfinished:
            self._slot = BatchSlot(batch_id)
            self._offer = (batch_id, {k: v for k, v in counts.items() if v})
            self.resume_offered.emit(*self._offer)
        self.refresh_checkpoints()
        self._emit_state()

    def _on_open_failed(self, exc: BaseException) -> None:
        self._error = str(exc)
        self.error_occurred.emit(f"The output folder {self.out_dir} cannot be used: {exc}")
        self._emit_state()

    def _adopt(self, engine: Engine) -> None:
        if engine is self._adopted:
            return
        self._adopted = engine
        self.queue.set_stages(engine.pipeline.stage_names)
        self.engine_opened.emit(engine.out_dir)
        self._emit_breakers()

    def set_output_dir(self, path: str) -> bool:
        """Use another output folder (not while a batch runs or files are scanned)."""
        path = os.path.abspath(os.path.expanduser(path))
        if path == self.out_dir:
            return True
        if not self.state().can_change_folder:
            self.error_occurred.emit("The output folder cannot change while a batch runs; pause it first.")
            return False
        self.out_dir = path
        self._save_settings(self.settings.remember_output_dir(path))
        self._slot = BatchSlot()
        self.queue.clear()
        self._submit(self._host.serial, self._host.close_engine)
        self.output_dir_changed.emit(path)
        self.open()
        return True

    def apply_settings(self, settings: Settings) -> None:
        """Settings the dialog saved: a new folder is opened; new run options apply from the next run."""
        old, self.settings = self.settings, settings
        self._host.set_workers(run_workers(settings.run))
        if settings.output_dir and os.path.abspath(settings.output_dir) != self.out_dir:
            self.set_output_dir(settings.output_dir)
        elif settings.run != old.run:
            if self.active:
                self._reopen_after_run = True
            else:
                self._submit(self._host.serial, self._host.close_engine)

    def _save_settings(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.settings_store.save(settings)
        except OSError as exc:
            self.error_occurred.emit(f"The settings could not be saved: {exc}")

    # -- queueing ------------------------------------------------------------------------
    def add_paths(self, paths: list[str]) -> None:
        """Scan files and folders off the GUI thread and queue what they hold into the current batch."""
        paths = [os.fspath(p) for p in paths if p]
        if not paths or self._closing:
            return
        token = CancelToken()
        self._scans.add(token)
        run_after = self.active
        self._submit(self._host.serial, self._scan_job, self.out_dir, self._slot, paths, token,
                     done=lambda outcome: self._on_scanned(token, run_after, outcome),
                     failed=lambda exc: self._on_scan_failed(token, exc))
        self.message_posted.emit(f"Scanning {len(paths)} item(s)…")
        self._emit_state()

    def _scan_job(self, out_dir: str, slot: BatchSlot, paths: list[str], token: CancelToken) -> ScanOutcome:
        engine = self._host.engine_for(out_dir, create=True)
        config = self.recipe.config(self.settings)
        engine.start_workers(config)  # files were dropped: the workers' start overlaps the scan and the person's Start
        return scan_into(engine, slot, paths, config, token)

    def _on_scanned(self, token: CancelToken, run_after: bool, outcome: ScanOutcome) -> None:
        self._scans.discard(token)
        result = outcome.result
        if self.engine is not None:
            self._adopt(self.engine)
        if not self.active:
            self._slot = BatchSlot(result.batch_id)
        if outcome.skipped_rows:
            self.queue.add_jobs(result.batch_id, outcome.skipped_rows)
        n, skipped = len(result.job_ids), len(result.skipped)
        self.message_posted.emit(f"{n} file(s) queued" + (f", {skipped} skipped" if skipped else ""))
        self.paths_scanned.emit(result)
        if run_after and not self._scans and not self.active and n:
            self.start()  # it was running when these were dropped: they join the run
        self.refresh_checkpoints_soon()
        self._emit_state()

    def _on_scan_failed(self, token: CancelToken, exc: BaseException) -> None:
        self._scans.discard(token)
        if not token.is_set():
            self.error_occurred.emit(f"The files could not be queued: {exc}")
        self._emit_state()

    # -- events from the engine ----------------------------------------------------------
    def _apply_events(self, events: list) -> None:
        self.queue.apply_events(events)
        ended = [e.job_id for e in events if isinstance(e, (ev.JobFinished, ev.JobFailed))]
        engine = self.engine
        if ended and engine is not None:
            # read the rows off the GUI thread: the store's lock may be held by a supervisor's commit
            self._submit(self._host.pool, lambda: [engine.store.job(i) for i in ended], done=self.queue.update_jobs,
                         failed=lambda exc: log.debug("could not refresh jobs %s: %s", ended, exc))
        changed = sorted({e.job_id for e in events if hasattr(e, "job_id")})
        if changed:
            self.jobs_updated.emit(changed)
        if any(isinstance(e, (ev.JobFinished, ev.JobFailed, ev.JobSkipped, ev.JobCancelled, ev.BatchFinished))
               for e in events):
            self.refresh_checkpoints_soon()
        self._emit_state()

    # -- panels --------------------------------------------------------------------------
    def recheck_health(self) -> None:
        self._health.run(self.out_dir)

    def announce(self) -> None:
        """Emit the current state again, for a window connected after :meth:`open`."""
        if self.last_health is not None:
            self.health_checked.emit(self.last_health)
        if self._offer is not None and not self.active:
            self.resume_offered.emit(*self._offer)
        self._emit_breakers()
        self.refresh_checkpoints()
        self._last_state = None
        self._emit_state()

    def _emit_breakers(self, *_):
        engine = self.engine
        if engine is not None:
            self.breakers_changed.emit(engine.breakers.snapshots())

    def reset_breaker(self, name: str) -> None:
        if self.engine is not None:
            self.engine.breakers.get(name).reset()
            self._emit_breakers()

    def force_open_breaker(self, name: str) -> None:
        if self.engine is not None:
            self.engine.breakers.get(name).force_open()
            self._emit_breakers()

    def refresh_checkpoints_soon(self) -> None:
        """Refresh the Checkpoints panel soon (see :class:`app.checkpoints_poller.CheckpointsPoller`)."""
        self._checkpoints.refresh_soon()

    def refresh_checkpoints(self) -> None:
        self._checkpoints.refresh()

    def job_info(self, job_id: int) -> JobInfo | None:
        """The job and its stages from the store (two small reads), or None."""
        engine = self.engine
        if engine is None:
            return None
        try:
            job = engine.store.job(job_id)
            stages = engine.store.stages(job_id)
        except Exception as exc:  # closed store, unknown job
            log.debug("no details for job %s: %s", job_id, exc)
            return None
        return JobInfo(job, stages, engine.pipeline.stage_names, os.path.join(engine.out_dir, job.song_id))

    def open_output_folder(self) -> bool:
        os.makedirs(self.out_dir, exist_ok=True)
        return QDesktopServices.openUrl(QUrl.fromLocalFile(self.out_dir))

    # -- the end ---------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Pause the run (it stays resumable), wait for both pools and close the engine. True if all stopped."""
        if self._closing:
            return True
        self._host.closing = True
        self._tick.stop()
        self._checkpoints.stop()
        self._feed.stop()
        for token in list(self._scans):
            token.cancel("closing")
        self._pause_current("closing")
        stopped = self._host.serial.waitForDone(timeout_ms)
        self._pause_current("closing")  # one prepared meanwhile
        stopped = self._host.pool.waitForDone(timeout_ms) and stopped
        engine = self.engine
        run = engine.current_run if engine is not None else None
        if stopped and run is not None and not run.finished.is_set():
            run.work()  # prepared, never started: returns at once and records the batch as paused
        self.bridge.stop()
        self._unsubscribe_bridge()
        try:
            self._host.close_engine()
        except Exception as exc:
            log.warning("the engine did not close cleanly: %s", exc)
            stopped = False
        self._host.tasks.clear()
        self._supervisors.clear()
        return stopped

    def _pause_current(self, reason: str) -> None:
        engine = self.engine
        run = engine.current_run if engine is not None else None
        if run is not None and not run.finished.is_set():
            run.pause(reason)


__all__ = ["Controller", "ControlState", "EngineRecipe", "JobInfo", "default_output_dir"]
