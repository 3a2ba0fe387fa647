"""Batch control: start, pause and cancel a run, and the changes that send jobs back to run (resume, discard,
retry, re-run), for :class:`app.controller.Controller`.

:class:`BatchControl` is a part of the controller, not an object of its own:
its methods and the run's state live on the controller, next to the
current batch (``_slot``), the resume offer and the scans they depend on.
A run is prepared on the serial pool (preflight, then ``Engine.start``);
:class:`RunSupervisors` then puts one ``SupervisorRunnable`` per worker on
the general pool, and when the last has left, the run's summary is read and
the run ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QThreadPool, QTimer

from app.engine_recipe import run_workers
from app.queue_model import RowState
from app.runner import BatchSlot, SupervisorRunnable
from core.engine import supervisors_for
from core.engine.store_rows import BatchStatus, JobRow, JobStatus
from core.pipeline.config import PipelineConfig

if TYPE_CHECKING:
    from app.checkpoints_poller import CheckpointsPoller
    from app.engine_host import EngineHost
    from app.engine_recipe import EngineRecipe
    from app.queue_model import QueueModel
    from core.engine.batch import BatchRun, BatchSummary, Engine
    from core.resilience.cancel import CancelToken
    from core.settings import Settings


class RunSupervisors:
    """The supervisor runnables of the run in progress; ``all_left()`` once the last has left it."""

    def __init__(self, pool: QThreadPool, errored: Callable[[BaseException], None]):
        self._pool = pool
        self._errored = errored
        self._signals: set[QObject] = set()  # kept alive until their supervisor has left
        self._count = 0
        self._all_left: Callable[[], None] = lambda: None

    def start(self, run: BatchRun, count: int, all_left: Callable[[], None]) -> None:
        self._count, self._all_left = count, all_left
        for _ in range(count):
            supervisor = SupervisorRunnable(run)
            signals = supervisor.signals
            self._signals.add(signals)
            signals.left.connect(lambda _batch_id, s=signals: self._left(s))
            signals.errored.connect(self._errored)
            self._pool.start(supervisor)

    def _left(self, signals: QObject) -> None:
        self._signals.discard(signals)
        self._count -= 1
        if self._count <= 0:
            self._all_left()

    def clear(self) -> None:
        self._signals.clear()


class BatchControl:
    """The controller's run control. The controller provides the attributes annotated here and calls
    :meth:`_init_batch_control` once; everything else a run needs is in this class."""

    # provided by the controller
    _host: EngineHost
    _checkpoints: CheckpointsPoller
    queue: QueueModel
    recipe: EngineRecipe
    settings: Settings
    out_dir: str
    _slot: BatchSlot  # the batch that scans fill and Start runs
    _offer: tuple[int, dict] | None  # the resume offer still open
    _error: str  # why the output folder cannot be used
    _scans: set[CancelToken]
    _closing: bool
    _submit: Callable[..., None]
    _report: Callable[[BaseException], None]
    _emit_state: Callable[[], None]
    _emit_breakers: Callable[..., None]
    refresh_checkpoints: Callable[[], None]
    refresh_checkpoints_soon: Callable[[], None]
    bridge: Any  # app.bridge.EventBridge
    batch_started: Any
    batch_finished: Any
    preflight_blocked: Any
    message_posted: Any
    error_occurred: Any

    def _init_batch_control(self) -> None:
        self._run: BatchRun | None = None
        self._starting = False
        self._stop: str | None = None  # "pause" or "cancel" once asked for
        self._reopen_after_run = False  # the run settings changed while it ran: a new engine for the next run
        self._supervisors = RunSupervisors(self._host.pool, self._report)
        self._tick = QTimer(self, interval=1000)  # while a run is on: elapsed times, breaker countdowns
        self._tick.timeout.connect(self._on_tick)

    @property
    def active(self) -> bool:
        """A run is being prepared, runs or is stopping."""
        return self._starting or self._run is not None

    # -- a run ---------------------------------------------------------------------------
    def start(self, check: bool = True) -> None:
        """Run the current batch (after any scan still in progress); ``check``: preflight first (settings)."""
        if self.active or self._closing or self._error:
            return
        self._starting, self._stop = True, None
        preflight = self.recipe.preflight if check and self.settings.run.preflight else None
        self._submit(self._host.serial, self._prepare_run, self.out_dir, self._slot, preflight,
                     done=self._on_run_ready, failed=self._on_run_failed)
        self._emit_state()

    def _prepare_run(self, out_dir: str, slot: BatchSlot, preflight: Callable | None) -> tuple:
        """(run or None, preflight report or None); no run when the preflight found disk or memory blockers."""
        if slot.batch_id is None:
            return None, None
        engine = self._host.engine_for(out_dir, create=True)
        config, report = self.recipe.config(self.settings), None
        if preflight is not None and isinstance(config, PipelineConfig):
            paths = [j.input_path for j in engine.store.jobs(slot.batch_id, JobStatus.PENDING)]
            report = preflight(paths, out_dir, config, run_workers(self.settings.run)) if paths else None
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
        self._supervisors.start(run, supervisors_for(run_workers(self.settings.run)), self._on_supervisors_left)
        self._tick.start()
        self.batch_started.emit(run.batch_id)
        self._emit_state()

    def _on_run_failed(self, exc: BaseException) -> None:
        self._starting = False
        self.error_occurred.emit(f"The batch could not start: {exc}")
        self._emit_state()

    def _on_supervisors_left(self) -> None:
        if self._run is None or self._closing:
            return
        run = self._run
        self._submit(self._host.pool, run.summary, done=self._on_run_ended,
                     failed=lambda exc: self._on_run_ended(None, exc))

    def _on_run_ended(self, summary: BatchSummary | None, exc: BaseException | None = None) -> None:
        self.bridge.flush()  # the run's last events (jobs back in the queue, say) reach the rows before anyone reads them
        self._run = None
        self._tick.stop()
        stop, self._stop = self._stop, None
        if exc is not None:
            self._report(exc)
        self.queue.tick()
        self._emit_breakers()
        if self._reopen_after_run:
            self._reopen_after_run = False
            self._submit(self._host.serial, self._host.close_engine)
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

    def _on_tick(self) -> None:
        self.queue.tick()
        self._emit_breakers()

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

    # -- changes to a batch ------------------------------------------------------------------
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
            engine = self._host.engine_for(out_dir, create=False)
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

        self._submit(self._host.serial, job, done=done)


__all__ = ["BatchControl", "RunSupervisors"]
