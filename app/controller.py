"""The window's controller: one output folder's engine, its batches and the panels' data.

Everything slow runs on the controller's own thread pools, never the global
one and never the GUI thread:

* ``_serial`` (one thread): the engine's life (open, close) and what must
  happen in order: scans, preparing a run, retry/re-run resets. A Start
  pressed while a folder is still being scanned runs after the scan, on the
  batch it filled.
* ``_pool``: a run's supervisors (one ``SupervisorRunnable`` per worker),
  the health check and the store reads behind the panels.

Engine events reach the GUI through the ``EngineBridge``; the controller
feeds them to its :class:`QueueModel` and re-emits what the window shows. A
burst larger than ``EVENTS_PER_TURN`` (10,000 files queued at once) is fed in
slices, one per turn of the event loop, so the window keeps painting.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QThreadPool, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices

from app.bridge import EngineBridge
from app.queue_model import QueueModel, RowState
from app.runner import BatchSlot, CheckpointReader, ScanOutcome, SupervisorRunnable, TaskRunnable, scan_into
from core.engine import events as ev
from core.engine.store import store_path
from core.engine.store_rows import BatchStatus, JobRow, JobStatus, StageRow
from core.pipeline.config import PipelineConfig
from core.resilience.cancel import CancelToken
from core.resilience.health import HealthReport, default_registry
from core.settings import Settings, SettingsStore

if TYPE_CHECKING:  # the engine (pebble, multiprocessing, asyncio) is imported when a folder is first opened
    from core.engine.batch import BatchRun, BatchSummary, Engine, EngineOptions, Pipeline
    from core.engine.executor import StageExecutor

log = logging.getLogger(__name__)

EVENTS_PER_TURN = 2000  # engine events applied to the queue per turn of the event loop
CHECKPOINTS_MIN_MS, CHECKPOINTS_MAX_MS = 1000, 10000  # between two reads for the Checkpoints panel


def default_output_dir() -> str:
    return os.path.join(os.path.expanduser("~"), "Stave-output")


def default_pipeline() -> Pipeline:
    """The real analysis pipeline (imported on first use: it is heavy)."""
    from core.pipeline.stages import build_pipeline

    return build_pipeline()


def default_health(out_dir: str) -> HealthReport:
    """The health report, made in a child process (`stave health --json`).

    The checks import librosa, numba and friends to prove they work; doing that in
    the window's own process would cost it seconds of start-up and memory it never
    needs. If the child cannot run, the checks run here instead.
    """
    import json
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-m", "core.cli", "health", "--json", "--out", out_dir],
                              capture_output=True, text=True, timeout=120)
        return HealthReport.from_dict(json.loads(done.stdout))
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        log.warning("health check in a child process failed (%s); checking in this process", exc)
        return default_registry(out_dir=out_dir).run_all()


def default_preflight(paths: list[str], out_dir: str, config: PipelineConfig, workers: int):
    """A few seconds of checks before a run (files, disk, memory): core.engine.preflight."""
    from core.engine.preflight import preflight

    return preflight(paths, out_dir, config, workers=workers)


@dataclass(frozen=True)
class EngineRecipe:
    """How the controller builds engines and checks health (tests swap in a small pipeline)."""

    pipeline: Callable[[], Pipeline] = default_pipeline
    config: Callable[[Settings], Any] = lambda settings: settings.pipeline
    executor: StageExecutor | None = None  # None: each engine owns a process pool
    health: Callable[[str], HealthReport] = default_health
    preflight: Callable[[list[str], str, PipelineConfig, int], Any] | None = default_preflight


@dataclass(frozen=True)
class ControlState:
    """What the window's actions may do now."""

    out_dir: str
    scanning: bool = False
    running: bool = False
    stopping: bool = False
    queued: int = 0
    retryable: int = 0  # failed, quarantined or cancelled rows
    degraded: int = 0
    error: str = ""  # why the output folder cannot be used

    @property
    def can_start(self) -> bool:
        return not self.running and not self.error and (self.queued > 0 or self.scanning)

    @property
    def can_pause(self) -> bool:
        return self.running and not self.stopping

    @property
    def can_cancel(self) -> bool:
        return (self.running and not self.stopping) or self.scanning

    @property
    def can_change_folder(self) -> bool:
        return not self.running and not self.scanning


@dataclass(frozen=True)
class JobInfo:
    """One job as the details pane shows it."""

    job: JobRow
    stages: list[StageRow]
    stage_order: tuple[str, ...]
    song_dir: str


class Controller(QObject):
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
        self._pool = QThreadPool(self)
        self._pool.setObjectName("stave-supervisors")
        self._pool.setMaxThreadCount(self.settings.run.workers + 2)
        self._serial = QThreadPool(self)
        self._serial.setObjectName("stave-engine")
        self._serial.setMaxThreadCount(1)
        self._tasks: set[QObject] = set()  # signals of tasks in flight
        self._supervisor_signals: set[QObject] = set()
        self._engine_lock = threading.Lock()
        self._engine: Engine | None = None
        self._adopted: Engine | None = None
        self._error = ""
        self._slot = BatchSlot()
        self._run: BatchRun | None = None
        self._starting = False
        self._supervisors = 0
        self._stop: str | None = None  # "pause" or "cancel" once asked for
        self._scans: set[CancelToken] = set()
        self._reopen_after_run = False
        self._health_running = False
        self.last_health: HealthReport | None = None
        self._offer: tuple[int, dict] | None = None  # the resume offer still open
        self._checkpoints_busy = False
        self._checkpoints = CheckpointReader()  # used by one pool task at a time (_checkpoints_busy)
        self._closing = False
        self._last_state: ControlState | None = None
        self._tick = QTimer(self, interval=1000)
        self._tick.timeout.connect(self._on_tick)
        self._checkpoints_timer = QTimer(self, interval=CHECKPOINTS_MIN_MS, singleShot=True)
        self._checkpoints_timer.timeout.connect(self.refresh_checkpoints)
        self._backlog: deque = deque()  # events of a large burst not applied yet (oldest first)
        self._drain_timer = QTimer(self, interval=0)
        self._drain_timer.timeout.connect(self._drain_events)
        self.bridge.events_arrived.connect(self._on_events)
        self.bridge.progress_changed.connect(self.progress_changed)
        self.bridge.breaker_changed.connect(self._emit_breakers)

    # -- plumbing ----------------------------------------------------------------------
    def _submit(self, pool: QThreadPool, fn: Callable, *args, done: Callable | None = None,
                failed: Callable | None = None) -> None:
        task = TaskRunnable(fn, *args)
        signals = task.signals
        self._tasks.add(signals)

        def finish(handler, value):
            self._tasks.discard(signals)
            if not self._closing and handler is not None:
                handler(value)

        signals.finished.connect(lambda value: finish(done, value))
        signals.errored.connect(lambda exc: finish(failed or self._report, exc))
        pool.start(task)

    def _report(self, exc: BaseException) -> None:
        self.error_occurred.emit(str(exc) or type(exc).__name__)

    def _options(self) -> EngineOptions:
        from core.engine.batch import EngineOptions

        run = self.settings.run
        return EngineOptions(workers=run.workers, max_crashes=run.max_crashes, keep_work_files=run.keep_work_files,
                             retry=run.retry, breaker=run.breaker, timeouts=run.timeouts)

    def _engine_for(self, out_dir: str, create: bool) -> Engine | None:
        """The open engine of ``out_dir`` (serial pool only); opened on first use."""
        with self._engine_lock:
            if self._engine is not None and self._engine.out_dir == out_dir:
                return self._engine
        self._close_engine()  # another folder's
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

    def _close_engine(self) -> None:
        """Serial pool only."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    @property
    def engine(self) -> Engine | None:
        with self._engine_lock:
            return self._engine

    @property
    def active(self) -> bool:
        """A run is being prepared, runs or is stopping."""
        return self._starting or self._run is not None

    def thread_pools(self) -> tuple[QThreadPool, QThreadPool]:
        """The controller's own pools: (supervisors and panels, the serial engine pool)."""
        return self._pool, self._serial

    @property
    def busy(self) -> bool:
        """Background work other than a run is in flight (scans, opening, health check, panel reads)."""
        return bool(self._tasks)

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
        self._submit(self._serial, self._open_job, out_dir, done=self._on_opened, failed=self._on_open_failed)
        self.recheck_health()
        self._emit_state()

    def _open_job(self, out_dir: str) -> tuple | None:
        engine = self._engine_for(out_dir, create=False)
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
        self._submit(self._serial, self._close_engine)
        self.output_dir_changed.emit(path)
        self.open()
        return True

    def apply_settings(self, settings: Settings) -> None:
        """Settings the dialog saved: a new folder is opened; new run options apply from the next run."""
        old, self.settings = self.settings, settings
        self._pool.setMaxThreadCount(settings.run.workers + 2)
        if settings.output_dir and os.path.abspath(settings.output_dir) != self.out_dir:
            self.set_output_dir(settings.output_dir)
        elif settings.run != old.run:
            if self.active:
                self._reopen_after_run = True
            else:
                self._submit(self._serial, self._close_engine)

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
        self._submit(self._serial, self._scan_job, self.out_dir, self._slot, paths, token,
                     done=lambda outcome: self._on_scanned(token, run_after, outcome),
                     failed=lambda exc: self._on_scan_failed(token, exc))
        self.message_posted.emit(f"Scanning {len(paths)} item(s)…")
        self._emit_state()

    def _scan_job(self, out_dir: str, slot: BatchSlot, paths: list[str], token: CancelToken) -> ScanOutcome:
        engine = self._engine_for(out_dir, create=True)
        return scan_into(engine, slot, paths, self.recipe.config(self.settings), token)

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

    # -- running ---------------------------------------------------------------------------
    def start(self, check: bool = True) -> None:
        """Run the current batch (after any scan still in progress); ``check``: preflight first (settings)."""
        if self.active or self._closing or self._error:
            return
        self._starting, self._stop = True, None
        preflight = self.recipe.preflight if check and self.settings.run.preflight else None
        self._submit(self._serial, self._prepare_run, self.out_dir, self._slot, preflight,
                     done=self._on_run_ready, failed=self._on_run_failed)
        self._emit_state()

    def _prepare_run(self, out_dir: str, slot: BatchSlot, preflight: Callable | None) -> tuple:
        """(run or None, preflight report or None); no run when the preflight found disk or memory blockers."""
        if slot.batch_id is None:
            return None, None
        engine = self._engine_for(out_dir, create=True)
        config, report = self.recipe.config(self.settings), None
        if preflight is not None and isinstance(config, PipelineConfig):
            paths = [j.input_path for j in engine.store.jobs(slot.batch_id, JobStatus.PENDING)]
            report = preflight(paths, out_dir, config, self.settings.run.workers) if paths else None
            if report is not None and any(p.area != "files" for p in report.blockers):
                return None, report
        return engine.start(slot.batch_id), report

    def _on_run_ready(self, prepared: tuple) -> None:
        self._starting = False
        run, report = prepared
        if report is not None and run is None:
            self.preflight_blocked.emit(report.format_text())
        elif report is not None and report.blockers:
            self.message_posted.emit(f"Preflight: {len(report.blocked_paths)} file(s) will fail "
                                     "(see each one's reason); the others are analysed")
        if run is None:
            self._emit_state()
            return
        self._offer = None
        self._run = run
        if self._stop == "pause":
            run.pause("paused by you")
        elif self._stop == "cancel":
            run.cancel()
        self._supervisors = self.settings.run.workers
        for _ in range(self._supervisors):
            supervisor = SupervisorRunnable(run)
            signals = supervisor.signals
            self._supervisor_signals.add(signals)
            signals.left.connect(lambda _batch_id, s=signals: self._on_supervisor_left(s))
            signals.errored.connect(self._report)
            self._pool.start(supervisor)
        self._tick.start()
        self.batch_started.emit(run.batch_id)
        self._emit_state()

    def _on_run_failed(self, exc: BaseException) -> None:
        self._starting = False
        self.error_occurred.emit(f"The batch could not start: {exc}")
        self._emit_state()

    def _on_supervisor_left(self, signals: QObject) -> None:
        self._supervisor_signals.discard(signals)
        self._supervisors -= 1
        if self._supervisors > 0 or self._run is None or self._closing:
            return
        run = self._run
        self._submit(self._pool, run.summary, done=self._on_run_ended,
                     failed=lambda exc: self._on_run_ended(None, exc))

    def _on_run_ended(self, summary: BatchSummary | None, exc: BaseException | None = None) -> None:
        self._run = None
        self._tick.stop()
        stop, self._stop = self._stop, None
        if exc is not None:
            self._report(exc)
        self.queue.tick()
        self._emit_breakers()
        if self._reopen_after_run:
            self._reopen_after_run = False
            self._submit(self._serial, self._close_engine)
        if summary is None:
            self._emit_state()
            return
        leftover = summary.counts.get(JobStatus.PENDING.value, 0)
        if summary.status is BatchStatus.PAUSED and not summary.pause_reason and leftover and stop is None:
            self.start()  # files added while it ran: run them too
            return
        if summary.status in (BatchStatus.FINISHED, BatchStatus.CANCELLED):
            self._slot = BatchSlot()
        self.batch_finished.emit(summary)
        self.refresh_checkpoints()
        self._emit_state()

    def pause(self) -> None:
        """Stop after the running stages are interrupted; the batch can be resumed."""
        if not self.active:
            return
        self._stop = self._stop or "pause"
        if self._run is not None:
            self._run.pause("paused by you")
        self._emit_state()

    def cancel(self) -> None:
        """Stop scanning and the run; jobs not finished are marked cancelled."""
        for token in list(self._scans):
            token.cancel("cancelled by you")
        if self.active:
            self._stop = "cancel"
            if self._run is not None:
                self._run.cancel()
        self._emit_state()

    def cancel_job(self, job_id: int) -> None:
        if self._run is not None:
            self._run.cancel_job(job_id)
            return
        row = self.queue.job_row(job_id)
        if row is not None and row.state is RowState.QUEUED:
            self._change_batch(lambda engine: engine.store.mark_job_cancelled(job_id), run=False)

    def resume(self, batch_id: int) -> None:
        """Make ``batch_id`` the current batch and run what is left of it."""
        if self.active:
            return
        self._slot = BatchSlot(batch_id)
        if self.queue.batch_id == batch_id:
            self.start()
        else:
            self._change_batch(lambda engine: None, batch_id, run=True)

    def discard(self, batch_id: int) -> None:
        """Give up an unfinished batch: its waiting jobs and the batch are marked cancelled."""
        if self._run is not None and self._run.batch_id == batch_id:
            return

        def discard_in(engine: Engine) -> None:
            for job in engine.store.jobs(batch_id, (JobStatus.PENDING, JobStatus.RUNNING)):
                engine.store.mark_job_cancelled(job.id)
            engine.store.set_batch_status(batch_id, BatchStatus.CANCELLED, notes="discarded")

        if self._slot.batch_id == batch_id:
            self._slot = BatchSlot()
        if self._offer is not None and self._offer[0] == batch_id:
            self._offer = None
        self._change_batch(discard_in, batch_id, run=False, show=self.queue.batch_id == batch_id)

    def retry_failed(self) -> None:
        """Failed, quarantined and cancelled jobs of the shown batch run again."""
        batch_id = self.queue.batch_id
        self._change_batch(lambda engine: engine.retry_failed(batch_id), batch_id)

    def rerun_degraded(self) -> None:
        """Degraded jobs of the shown batch run again from their first degraded stage."""
        batch_id = self.queue.batch_id
        self._change_batch(lambda engine: engine.rerun_degraded(batch_id), batch_id)

    def rerun_from(self, job_ids: list, stage: str) -> None:
        """The given jobs run again from ``stage`` (their batch is shown and run)."""
        ids = [int(j) for j in job_ids]
        if ids:
            self._change_batch(lambda engine: engine.rerun_from(ids, stage), None, job_of_batch=ids[0])

    def _change_batch(self, change: Callable[[Engine], Any], batch_id: int | None = None, *, run: bool = True,
                      show: bool = True, job_of_batch: int | None = None) -> None:
        """``change(engine)`` on the serial pool, then show the batch's rows again and run it when asked."""
        batch_id = self.queue.batch_id if batch_id is None and job_of_batch is None else batch_id
        if (batch_id is None and job_of_batch is None) or self._closing:
            return
        if run and self._run is not None and batch_id is not None and self._run.batch_id != batch_id:
            self.error_occurred.emit("Another batch is running; wait for it or pause it first.")
            return
        out_dir = self.out_dir

        def job() -> tuple[int, list[JobRow]]:
            engine = self._engine_for(out_dir, create=False)
            if engine is None:
                raise RuntimeError(f"{out_dir} holds no batches")
            target = batch_id if batch_id is not None else engine.store.job(job_of_batch).batch_id
            change(engine)
            self._checkpoints.forget(target)
            return target, engine.store.jobs(target)

        def done(found: tuple[int, list[JobRow]]) -> None:
            target, jobs = found
            if show or target == self.queue.batch_id:
                self.queue.load_batch(target, jobs)
            pending = any(j.status is JobStatus.PENDING for j in jobs)
            if run and pending and not self.active:
                self._slot = BatchSlot(target)
                self.start()
            self.refresh_checkpoints_soon()
            self._emit_state()

        self._submit(self._serial, job, done=done)

    # -- events from the engine ----------------------------------------------------------
    def _on_events(self, events: list) -> None:
        if self._closing:
            return
        if not self._backlog and len(events) <= EVENTS_PER_TURN:
            self._apply_events(events)
            return
        self._backlog.extend(events)  # in order, after what is still waiting
        self._drain_events()

    def _drain_events(self) -> None:
        """Apply the next slice of a large burst; the timer calls again while some is left."""
        backlog = self._backlog
        chunk = [backlog.popleft() for _ in range(min(EVENTS_PER_TURN, len(backlog)))]
        if backlog and not self._closing:
            self._drain_timer.start()
        else:
            self._drain_timer.stop()
        if chunk and not self._closing:
            self._apply_events(chunk)

    def _apply_events(self, events: list) -> None:
        self.queue.apply_events(events)
        ended = [e.job_id for e in events if isinstance(e, (ev.JobFinished, ev.JobFailed))]
        engine = self.engine
        if ended and engine is not None:
            # read the rows off the GUI thread: the store's lock may be held by a supervisor's commit
            self._submit(self._pool, lambda: [engine.store.job(i) for i in ended], done=self.queue.update_jobs,
                         failed=lambda exc: log.debug("could not refresh jobs %s: %s", ended, exc))
        changed = sorted({e.job_id for e in events if hasattr(e, "job_id")})
        if changed:
            self.jobs_updated.emit(changed)
        if any(isinstance(e, (ev.JobFinished, ev.JobFailed, ev.JobSkipped, ev.BatchFinished)) for e in events):
            self.refresh_checkpoints_soon()
        self._emit_state()

    def _on_tick(self) -> None:
        self.queue.tick()
        self._emit_breakers()

    # -- panels --------------------------------------------------------------------------
    def recheck_health(self) -> None:
        if self._health_running or self._closing:
            return
        self._health_running = True
        self.health_checking.emit(True)

        def done(report):
            self._health_running = False
            self.last_health = report
            self.health_checking.emit(False)
            self.health_checked.emit(report)

        def failed(exc):
            self._health_running = False
            self.health_checking.emit(False)
            self.error_occurred.emit(f"The health check failed: {exc}")

        self._submit(self._pool, self.recipe.health, self.out_dir, done=done, failed=failed)

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
        """Refresh the Checkpoints panel soon: within a second, or ten times as long as the last read took
        (a batch of 10,000 jobs takes a few hundred milliseconds to read), at most ten seconds."""
        if not self._checkpoints_timer.isActive():
            self._checkpoints_timer.start()

    def refresh_checkpoints(self) -> None:
        engine = self.engine
        if engine is None or self._closing:
            return
        if self._checkpoints_busy:
            self.refresh_checkpoints_soon()
            return
        self._checkpoints_busy = True

        def read() -> tuple[list, float]:
            started = time.monotonic()
            return self._checkpoints(engine), time.monotonic() - started

        def done(result):
            batches, took_s = result
            self._checkpoints_busy = False
            self._checkpoints_timer.setInterval(
                int(min(CHECKPOINTS_MAX_MS, max(CHECKPOINTS_MIN_MS, 10000 * took_s))))
            self.checkpoints_changed.emit(batches)

        def failed(exc):
            self._checkpoints_busy = False
            log.debug("checkpoints not read: %s", exc)

        self._submit(self._pool, read, done=done, failed=failed)

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
        self._closing = True
        self._tick.stop()
        self._checkpoints_timer.stop()
        self._drain_timer.stop()
        self._backlog.clear()
        for token in list(self._scans):
            token.cancel("closing")
        self._pause_current("closing")
        stopped = self._serial.waitForDone(timeout_ms)
        self._pause_current("closing")  # one prepared meanwhile
        stopped = self._pool.waitForDone(timeout_ms) and stopped
        engine = self.engine
        run = engine.current_run if engine is not None else None
        if stopped and run is not None and not run.finished.is_set():
            run.work()  # prepared, never started: returns at once and records the batch as paused
        self.bridge.stop()
        self._unsubscribe_bridge()
        try:
            self._close_engine()
        except Exception as exc:
            log.warning("the engine did not close cleanly: %s", exc)
            stopped = False
        self._tasks.clear()
        self._supervisor_signals.clear()
        return stopped

    def _pause_current(self, reason: str) -> None:
        engine = self.engine
        run = engine.current_run if engine is not None else None
        if run is not None and not run.finished.is_set():
            run.pause(reason)


__all__ = ["Controller", "ControlState", "EngineRecipe", "JobInfo", "default_output_dir"]
