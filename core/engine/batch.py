"""Batches: queue files, run them with supervisor threads, pause, resume, cancel.

``Engine`` owns one output folder: its checkpoint store, its breakers and the
worker pool. ``BatchRun`` is one run of one batch; its ``work()`` is the
supervisor loop, called from ``supervisors_for(workers)`` threads: one more than there are workers (a
``ThreadPoolExecutor`` in the CLI via ``Engine.run``, ``QRunnable``s on the
window's ``QThreadPool``). The last supervisor to leave finishes the run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from core.engine import events as ev
from core.engine import EXTRA_SUPERVISORS, supervisors_for
from core.engine.discard import TRASH_DIRNAME, Discarder
from core.engine.executor import ProcessExecutor, StageExecutor
from core.engine.folder_lock import FolderLock
from core.engine.runner import JobOutcome, JobRunner, RunnerDeps
from core.engine.scan import ScanResult, display_path, scan
from core.engine.stagegraph import StageSpec
from core.engine.store import SqliteBreakerStore, Store
from core.engine.store_rows import BatchStatus, JobSpec, JobStatus
from core.resilience.breaker import BreakerConfig
from core.resilience.breaker_registry import BreakerRegistry
from core.resilience.cancel import CancelToken
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import ErrorKind, WorkersUnavailable, classify
from core.resilience.retry import RetryConfig
from core.resilience.timeouts import AdaptiveTimeout, AdaptiveTimeoutConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How the engine runs (the pipeline's own settings travel with each batch)."""

    workers: int = 2
    max_crashes: int = 2
    keep_work_files: bool = False
    # jobs in flight beyond one per worker (0: each worker's supervisor waits for it; see EXTRA_SUPERVISORS)
    extra_supervisors: int = EXTRA_SUPERVISORS
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    timeouts: AdaptiveTimeoutConfig = field(default_factory=AdaptiveTimeoutConfig)

    def __post_init__(self):
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers: must be a whole number >= 1, got {self.workers!r}")
        if not isinstance(self.extra_supervisors, int) or self.extra_supervisors < 0:
            raise ValueError(f"extra_supervisors: must be a whole number >= 0, got {self.extra_supervisors!r}")
        if not isinstance(self.max_crashes, int) or self.max_crashes < 1:
            raise ValueError(f"max_crashes: must be a whole number >= 1, got {self.max_crashes!r}")


@dataclass(frozen=True)
class AddResult:
    batch_id: int
    job_ids: list[int]
    skipped: list[tuple[str, str]]  # (path, reason), recorded as skipped jobs
    duplicates: list[tuple[str, str]]  # (path, same content as)


@dataclass
class BatchSummary:
    batch_id: int
    status: BatchStatus
    counts: dict[str, int]
    failed: list[dict]  # {path, stage, kind, reason, suggestion}
    degraded: list[dict]  # {path, reasons}
    elapsed_s: float
    pause_reason: str = ""
    skipped: list[dict] = field(default_factory=list)  # {path, reason}


class Pipeline:
    """A stage graph plus how to fingerprint configs and probe backends (the real one: core.pipeline.stages)."""

    def __init__(self, stages: Sequence[StageSpec], config_to_dict: Callable[[Any], dict],
                 fingerprint: Callable[[Mapping[str, Any], str], str],
                 availability: Callable[[], Mapping[str, Any]] = dict, warm_up: str = "",
                 preload: Sequence[str] = (), warm_start: str = ""):
        self.stages = tuple(stages)
        self.config_to_dict = config_to_dict
        self.fingerprint = fingerprint
        self.availability = availability
        self.warm_up = warm_up  # "module:function(config)" each supervisor runs in a worker before its first job
        self.preload = tuple(preload)  # modules every worker imports when it starts
        # "module:function(config)" every worker calls as it starts, after its imports: quick, never blocking
        self.warm_start = warm_start

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)


class Engine:
    def __init__(self, out_dir: str | os.PathLike, pipeline: Pipeline, options: EngineOptions | None = None, *,
                 bus: ev.EventBus | None = None, clock: Clock = SYSTEM_CLOCK,
                 executor: StageExecutor | None = None, create: bool = True):
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        self.pipeline = pipeline
        self.options = options or EngineOptions()
        self.bus = bus or ev.EventBus()
        self.clock = clock
        if create:
            os.makedirs(self.out_dir, exist_ok=True)
        self.store = Store.open(self.out_dir, create=create, clock=clock)
        self._folder_lock = FolderLock(self.out_dir)
        try:
            self._folder_lock.acquire()
        except BaseException:
            self.store.close()
            raise
        breaker_config = self.options.breaker
        longest_attempt = self.options.timeouts.ceiling_s + 60.0
        if breaker_config.half_open_max_wait_s < longest_attempt:
            # a probe may legitimately run as long as the longest stage attempt: don't call it hung before that
            breaker_config = dataclasses.replace(breaker_config, half_open_max_wait_s=longest_attempt)
        self.breakers = BreakerRegistry(clock, store=SqliteBreakerStore(self.store), default_config=breaker_config)
        self.breakers.add_listener(self._on_breaker)
        self._executor = executor
        self._own_executor = executor is None
        self._lock = threading.Lock()
        self._run: BatchRun | None = None

    # -- plumbing -----------------------------------------------------------------
    @property
    def executor(self) -> StageExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessExecutor(self.options.workers, preload=self.pipeline.preload)
            return self._executor

    def start_workers(self, config: Any = None) -> None:
        """Start the worker pool now, in the background, so its imports (and, with ``config``, the first calls
        of that config's stages) overlap whatever comes next."""
        if config is not None:
            self._set_warm_start(self.pipeline.config_to_dict(config))
        start = getattr(self.executor, "start", None)
        if start is not None:
            start()

    def _set_warm_start(self, config: Mapping[str, Any]) -> None:
        """Workers started from now on (replacements included) warm up for ``config`` as they start."""
        if not self.pipeline.warm_start:
            return
        setter = getattr(self.executor, "set_warm_start", None)
        if setter is not None:
            setter((self.pipeline.warm_start, dict(config)))

    def _on_breaker(self, name, old, new, snapshot) -> None:
        self.bus.publish(ev.BreakerChanged(name, getattr(old, "value", str(old)), getattr(new, "value", str(new)),
                                           snapshot.to_dict() if hasattr(snapshot, "to_dict") else {}))

    def close(self) -> None:
        run = self._run
        if run is not None and not run.finished.is_set():
            run.pause("Stave was closed while the batch ran")
            if not run.started:  # no supervisor ever came for it: this thread ends the run (saved as paused)
                run.work()
            run.finished.wait(30)
        if self._own_executor and self._executor is not None:
            self._executor.shutdown()
        self.store.checkpoint()
        self.store.close()
        self._folder_lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- queueing -----------------------------------------------------------------
    def add_paths(self, paths: Iterable[str | os.PathLike], config: Any, *, batch_id: int | None = None,
                  cancel: CancelToken | None = None) -> AddResult:
        """Scan files and folders and queue every audio file found (slow for big folders: not on a GUI thread)."""
        paths = [os.fspath(p) for p in paths]
        return self.add_scanned(scan(paths, exclude=[self.out_dir], cancel=cancel), paths, config,
                                batch_id=batch_id)

    def add_scanned(self, result: ScanResult, paths: Sequence[str], config: Any, *,
                    batch_id: int | None = None) -> AddResult:
        """Queue what ``scan`` found (``paths``: what the person asked for, kept with the batch)."""
        if batch_id is None:
            batch_id = self.store.create_batch({"pipeline": self.pipeline.config_to_dict(config)}, paths)
        specs = [JobSpec(input_path=f.path, song_id=_provisional_id(f.path), size_bytes=f.size, mtime=f.mtime)
                 for f in result.files]
        job_ids = self.store.add_jobs(batch_id, specs)
        skipped = [(s.path, s.reason) for s in result.skipped]
        skipped += [(p, f"same content as {display_path(orig)}") for p, orig in result.duplicates]
        if skipped:
            skip_ids = self.store.add_jobs(batch_id, [JobSpec(input_path=p, song_id=_provisional_id(p))
                                                      for p, _ in skipped])
            for job_id, (_, reason) in zip(skip_ids, skipped):
                self.store.mark_job_skipped(job_id, reason)
        for job_id, spec in zip(job_ids, specs):
            self.bus.publish(ev.JobQueued(batch_id, job_id, spec.input_path, spec.song_id))
        return AddResult(batch_id, job_ids, skipped, list(result.duplicates))

    # -- running ------------------------------------------------------------------
    def start(self, batch_id: int) -> "BatchRun":
        """Prepare a run of ``batch_id`` (after a crash: jobs left running go back to pending)."""
        with self._lock:
            if self._run is not None and not self._run.finished.is_set():
                raise RuntimeError(f"batch {self._run.batch_id} is still running in {self.out_dir}")
            batch = self.store.get_batch(batch_id)
            recovered = self.store.recover_interrupted(batch_id)
            self._sweep_temps(batch_id)
            discarder = self._sweep_work_folders()
            config = dict(batch.config.get("pipeline") or {})
            availability = dict(self.pipeline.availability())
            deps = RunnerDeps(
                store=self.store, out_dir=self.out_dir, stages=self.pipeline.stages, config=config,
                # once per stage: the batch's config does not change while it runs
                fingerprint=functools.cache(lambda stage: self.pipeline.fingerprint(config, stage)),
                executor=None, breakers=self.breakers, retry=self.options.retry,  # executor set below
                timeouts=AdaptiveTimeout(self.options.timeouts), bus=self.bus, availability=availability,
                max_crashes=self.options.max_crashes, keep_work_files=self.options.keep_work_files,
                clock=self.clock, discard=discarder.discard)
            # A batch left "running" with no job running was killed between two jobs: that is a resume too.
            resumed = (batch.status is not BatchStatus.RUNNING or recovered.jobs > 0
                       or self.store.batch_started(batch_id))
            run = self._run = BatchRun(self, batch_id, deps, resumed=resumed, discarder=discarder)
        self._set_warm_start(config)  # (takes the lock itself)
        return run

    def _sweep_work_folders(self) -> Discarder:
        """The run's discarder, with what a crash left to delete already queued: the trash, and the work
        folders of jobs that finished cleanly (killed between recording the job and removing its folder)."""
        discarder = Discarder(os.path.join(self.out_dir, ".stave", TRASH_DIRNAME))
        discarder.sweep()
        if self.options.keep_work_files:
            return discarder
        work = os.path.join(self.out_dir, ".stave", "work")
        try:
            with os.scandir(work) as entries:
                folders = {int(m.group(1)): e.path for e in entries
                           if (m := _WORK_DIR.fullmatch(e.name)) and e.is_dir(follow_symlinks=False)}
        except OSError:
            return discarder
        for job_id, path in sorted(folders.items()):
            try:
                job = self.store.job(job_id)
            except KeyError:
                continue  # not ours to judge
            if job.status is JobStatus.DONE and not job.degraded:  # degraded jobs keep theirs for a re-run
                discarder.discard(path)
        return discarder

    def _sweep_temps(self, batch_id: int) -> None:
        """Remove what writes killed mid-way left (``.name.<hex>.tmp.ext``): we hold the folder's lock,
        so no write of ours is in progress. Only our own folders are swept, never the person's files."""
        from core.fsutil import TEMP_PATTERN
        from core.resilience.cleanup import remove_stale_temps

        folders = [(self.out_dir, False), (os.path.join(self.out_dir, ".stave", "work"), True),
                   (os.path.join(self.out_dir, ".stave", "datasets"), False)]
        song_dirs = {j.song_id for j in self.store.jobs(batch_id) if j.song_id}
        with os.scandir(self.out_dir) as entries:  # song folders: "<name>-<8 hex of the content hash>"
            song_dirs |= {e.name for e in entries if e.is_dir(follow_symlinks=False) and _SONG_DIR.match(e.name)}
        folders += [(os.path.join(self.out_dir, name), True) for name in sorted(song_dirs)]
        for folder, recursive in folders:
            if os.path.isdir(folder):
                swept = remove_stale_temps(folder, TEMP_PATTERN, older_than_s=0, recursive=recursive)
                for path in swept.removed:
                    log.info("removed %s, left by an interrupted write", path)

    def run(self, batch_id: int, *, workers: int | None = None) -> BatchSummary:
        """Run ``batch_id`` to its end (or until paused/cancelled) with supervisor threads; blocking."""
        run = self.start(batch_id)
        n = supervisors_for(workers or self.options.workers, self.options.extra_supervisors)
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="stave-supervisor") as pool:
            for _ in range(n):
                pool.submit(run.work)
        run.finished.wait()
        return run.summary()

    @property
    def current_run(self) -> "BatchRun | None":
        return self._run

    # -- control ------------------------------------------------------------------
    def pause(self, reason: str = "paused") -> None:
        if self._run is not None:
            self._run.pause(reason)

    def cancel(self) -> None:
        if self._run is not None:
            self._run.cancel()

    def cancel_job(self, job_id: int) -> None:
        if self._run is not None:
            self._run.cancel_job(job_id)

    def retry_failed(self, batch_id: int) -> int:
        """Failed and quarantined jobs go back to the queue (crash counts cleared)."""
        jobs = self.store.jobs(batch_id, (JobStatus.FAILED, JobStatus.QUARANTINED, JobStatus.CANCELLED))
        for job in jobs:
            self.store.reset_job(job.id, clear_crashes=True)
        return len(jobs)

    def rerun_degraded(self, batch_id: int) -> int:
        """Degraded jobs run again from their first degraded stage (do it once the dependency is healthy)."""
        names = self.pipeline.stage_names
        n = 0
        for job in self.store.jobs(batch_id, JobStatus.DONE):
            if not job.degraded:
                continue
            first = next((r.stage for r in sorted(self.store.stages(job.id), key=lambda r: names.index(r.stage)
                                                  if r.stage in names else len(names)) if r.degraded), None)
            self.store.reset_stages_from(job.id, first or names[0], stage_order=names)
            n += 1
        return n

    def rerun_from(self, job_ids: Iterable[int], stage: str) -> int:
        return self.store.reset_stages_from(list(job_ids), stage, stage_order=self.pipeline.stage_names)

    def summary(self, batch_id: int, elapsed_s: float = 0.0, pause_reason: str = "") -> BatchSummary:
        batch = self.store.get_batch(batch_id)
        failed, degraded, skipped = [], [], []
        for job in self.store.jobs(batch_id, (JobStatus.FAILED, JobStatus.QUARANTINED, JobStatus.DONE,
                                              JobStatus.SKIPPED)):
            if job.status is JobStatus.SKIPPED:
                skipped.append({"path": job.input_path, "reason": job.error_reason})
                continue
            if job.status is JobStatus.DONE:
                if job.degraded:
                    degraded.append({"path": job.input_path, "reasons": list(job.degraded_reasons)})
                continue
            failed.append({"path": job.input_path, "stage": job.error_stage, "status": job.status.value,
                           "kind": job.error_kind.value if job.error_kind else "", "reason": job.error_reason,
                           "suggestion": job.error_suggestion})
        return BatchSummary(batch_id, batch.status, self.store.counts(batch_id), failed, degraded, elapsed_s,
                            pause_reason, skipped)


_SONG_DIR = re.compile(r".+-[0-9a-f]{8}$")
_WORK_DIR = re.compile(r"job-([0-9]+)")
_DISCARD_DRAIN_S = 60.0  # at the end of a run; what is left then goes at the next run's start
_WARM_UP_TIMEOUT_S = 900.0  # a first compile on a slow machine, waiting for another process's compile


def _provisional_id(path: str) -> str:
    """Until ingest knows the content hash, a job is named after its file."""
    from core.fsutil import safe_stem

    return safe_stem(path) or "song"


class BatchRun:
    """One run of one batch. Thread-safe; ``work()`` may be called from several threads."""

    def __init__(self, engine: Engine, batch_id: int, deps: RunnerDeps, *, resumed: bool,
                 discarder: Discarder | None = None):
        self.engine = engine
        self.discarder = discarder
        self.batch_id = batch_id
        self.deps = deps
        self.resumed = resumed
        self.token = CancelToken()
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._queue: deque[int] = deque(j.id for j in engine.store.jobs(batch_id, JobStatus.PENDING))
        self._job_tokens: dict[int, CancelToken] = {}
        self._running: dict[int, str] = {}
        self._workers = 0
        self._started = False
        self._stop_status: BatchStatus | None = None
        self.pause_reason = ""
        self.t0 = engine.clock.monotonic()
        counts = engine.store.counts(batch_id)
        self.total = sum(counts.values())
        self.done = counts[JobStatus.DONE.value] + counts[JobStatus.SKIPPED.value]
        self.failed = counts[JobStatus.FAILED.value] + counts[JobStatus.QUARANTINED.value]
        self.audio_done = 0.0
        self._done_this_run = 0
        self._ended_this_run = 0  # jobs that finished or failed in this run (the datasets may change)
        from core.engine.datasets import BatchDatasets  # pyarrow loads when a run starts, not with the window

        self.datasets = BatchDatasets(engine.store, engine.out_dir, clock=engine.clock)
        self._unsub = engine.bus.subscribe(self._track_stage, ev.StageStarted)
        self._ready = threading.Event()  # the first supervisor has started the run
        self._finishing = False

    # -- control ------------------------------------------------------------------
    def pause(self, reason: str = "paused") -> None:
        self._stop(BatchStatus.PAUSED, reason)

    def cancel(self) -> None:
        self._stop(BatchStatus.CANCELLED, "cancelled")

    def _stop(self, status: BatchStatus, reason: str) -> None:
        with self._lock:
            if self._stop_status is None or status is BatchStatus.CANCELLED:  # cancel overrides a pause
                self._stop_status = status
                self.pause_reason = reason
        self.token.cancel(reason)

    def cancel_job(self, job_id: int) -> None:
        with self._lock:
            queued = job_id in self._queue
            if queued:
                self._queue.remove(job_id)
            token = self._job_tokens.get(job_id)
        if queued:
            self._cancelled(job_id)
        elif token is not None:
            token.cancel("job cancelled")

    def _cancelled(self, job_id: int, path: str | None = None) -> None:
        self.engine.store.mark_job_cancelled(job_id)
        if path is None:
            path = self.engine.store.job(job_id).input_path
        self.engine.bus.publish(ev.JobCancelled(job_id, path))

    @property
    def started(self) -> bool:
        """A supervisor has taken up this run."""
        with self._lock:
            return self._started

    @property
    def stopping(self) -> bool:
        return self.token.is_set()

    # -- the supervisor loop ----------------------------------------------------------
    def work(self) -> None:
        """Claim and run jobs until the queue is empty or the run is stopped."""
        with self._lock:
            if self._finishing:  # the run already ended: a late supervisor has nothing to do
                return
            self._workers += 1
            first = not self._started
            self._started = True
        try:
            if first:
                try:
                    self.engine.store.set_batch_status(self.batch_id, BatchStatus.RUNNING)
                    self.engine.bus.publish(ev.BatchStarted(self.batch_id, self.total, self.resumed))
                    if self.deps.executor is None:
                        self.deps.executor = self.engine.executor
                finally:
                    self._ready.set()  # never leave the other supervisors waiting
            else:
                self._ready.wait()
            self._warm_up()
            runner = JobRunner(self.deps)
            while not self.token.is_set():
                with self._lock:
                    if not self._queue:
                        break
                    job_id = self._queue.popleft()
                    token = CancelToken(parent=self.token)
                    self._job_tokens[job_id] = token
                    self._running[job_id] = ""
                try:
                    outcome = runner.run(self.engine.store.job(job_id), token)
                except Exception as exc:  # the engine itself failed (e.g. the store): stop cleanly, lose nothing
                    log.exception("the engine failed on job %s", job_id)
                    info = classify(exc)
                    self.pause(f"Stave could not record its progress: {info.reason}. {info.suggestion}")
                    outcome = JobOutcome(job_id, JobStatus.PENDING, info)
                self._account(job_id, token, outcome)
        except Exception:
            log.exception("a supervisor of batch %s failed", self.batch_id)
            self.pause("an internal error stopped the batch; see the log")
        finally:
            with self._lock:
                self._workers -= 1
                last = self._workers == 0 and not self._finishing
                if last:
                    self._finishing = True
            if last:
                try:
                    self._finish()
                finally:
                    self.finished.set()

    def _warm_up(self) -> None:
        """Warm one worker (imports, first calls, numba's compiled code) before this supervisor's first job.

        Every supervisor does this at once, so the workers warm in parallel; the
        warm-up itself serializes compiling through a lock in numba's cache folder
        (see core.pipeline.warmup), so no stage ever compiles concurrently.
        """
        if not self.engine.pipeline.warm_up or not self._queue or self.token.is_set():
            return
        from core.engine.stagegraph import resolve_and_call

        try:
            self.deps.executor.run(resolve_and_call, (self.engine.pipeline.warm_up, dict(self.deps.config)),
                                   timeout_s=_WARM_UP_TIMEOUT_S, cancel=self.token)
        except Exception as exc:
            info = classify(exc)
            if isinstance(exc, WorkersUnavailable):  # no worker can start: no file would get anywhere
                self.pause(f"{info.reason}. {info.suggestion}")
            elif info.kind is not ErrorKind.CANCELLED:  # otherwise not fatal: the stages will say what is wrong
                log.warning("worker warm-up failed: %s", info.reason)

    def _account(self, job_id: int, token: CancelToken, outcome: JobOutcome) -> None:
        token.detach()
        with self._lock:
            self._job_tokens.pop(job_id, None)
            self._running.pop(job_id, None)
            if outcome.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.QUARANTINED):
                self._ended_this_run += 1
            if outcome.status is JobStatus.DONE:
                self.done += 1
                self._done_this_run += 1
                self.audio_done += outcome.audio_s
            elif outcome.status in (JobStatus.FAILED, JobStatus.QUARANTINED):
                self.failed += 1
            cancelled = outcome.status is JobStatus.PENDING and token.is_set() and not self.token.is_set()
        if cancelled:  # this one job was cancelled
            self._cancelled(job_id)
        if outcome.fatal:
            self.pause(f"{outcome.error.reason}. {outcome.error.suggestion}")
        self.engine.bus.publish(self.progress())
        if outcome.status is JobStatus.DONE:
            self.datasets.song_finished(job_id)  # every 64 songs, this thread writes them into a part

    def _track_stage(self, e: ev.StageStarted) -> None:
        with self._lock:
            if e.job_id in self._running:
                self._running[e.job_id] = e.stage

    def progress(self) -> ev.Progress:
        with self._lock:
            elapsed = self.engine.clock.monotonic() - self.t0
            remaining = self.total - self.done - self.failed
            eta = (elapsed / self._done_this_run * remaining) if self._done_this_run else None
            return ev.Progress(self.batch_id, self.done, self.failed, self.total, self.audio_done, eta,
                               tuple(sorted(self._running.items())))

    def _finish(self) -> None:
        store = self.engine.store
        with self._lock:
            stop = self._stop_status
        self._unsub()
        counts: dict = {}
        status = BatchStatus.PAUSED
        try:
            pending = store.counts(self.batch_id)[JobStatus.PENDING.value]
            if stop is BatchStatus.CANCELLED:
                for job in store.jobs(self.batch_id, JobStatus.PENDING):
                    self._cancelled(job.id, job.input_path)
                status = BatchStatus.CANCELLED
            elif stop is BatchStatus.PAUSED or pending:
                status = BatchStatus.PAUSED
            else:
                status = BatchStatus.FINISHED
            store.set_batch_status(self.batch_id, status, notes=self.pause_reason or None)
            from core.engine.datasets import datasets_exist

            if self._ended_this_run or not datasets_exist(self.engine.out_dir):  # else nothing changed
                self.datasets.publish()
            store.checkpoint()
            counts = store.counts(self.batch_id)
        except Exception:
            log.exception("could not close batch %s cleanly in %s", self.batch_id, self.engine.out_dir)
        if self.discarder is not None and not self.discarder.drain(_DISCARD_DRAIN_S):
            log.warning("finished jobs' work folders are still being deleted; the rest goes at the next run")
        elapsed = self.engine.clock.monotonic() - self.t0
        if status is BatchStatus.PAUSED:
            self.engine.bus.publish(ev.BatchPaused(self.batch_id, self.pause_reason))
        self.engine.bus.publish(ev.BatchFinished(self.batch_id, status.value, counts, elapsed))

    def summary(self) -> BatchSummary:
        return self.engine.summary(self.batch_id, self.engine.clock.monotonic() - self.t0, self.pause_reason)
