"""Runs one job through its stages, with the policies around each attempt.

Policy order around a stage attempt, outermost first (DESIGN.md):
fallback -> retry -> circuit breaker -> timeout -> worker process.

A stage whose artifacts from an earlier run still verify (same stage version,
same config fingerprint, every file present with its recorded hash) is not run
again; once one stage runs, every later stage of the job runs too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from core.engine import events as ev
from core.engine.executor import StageExecutor
from core.engine.stagegraph import BackendPlan, StageContext, StageOutput, StageSpec, run_stage_in_worker
from core.engine.store import WORK_PREFIX, Store
from core.engine.store_manifest import verify_manifest
from core.engine.store_rows import JobRow, JobStatus
from core.fsutil import sha256_file
from core.resilience.breaker_registry import BreakerRegistry
from core.resilience.cancel import CancelToken
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import ErrorInfo, ErrorKind, Severity, StaveError, classify
from core.resilience.fallback import Fallback
from core.resilience.retry import RetryConfig, RetryPolicy
from core.resilience.timeouts import AdaptiveTimeout

log = logging.getLogger(__name__)


class Quarantined(StaveError):
    """This file crashed or hung its worker too often: it is set aside, not retried."""

    kind = ErrorKind.WORKER_CRASH
    retryable = False


def engine_classify(exc: BaseException) -> ErrorInfo:
    """``classify``, honouring an exception's own ``retryable = False`` (open breakers, quarantine)."""
    info = classify(exc)
    if getattr(exc, "retryable", None) is False and info.retryable:
        info = dataclasses.replace(info, retryable=False)
    return info


@dataclass
class JobOutcome:
    job_id: int
    status: JobStatus  # DONE, FAILED, QUARANTINED, or PENDING when cancelled/paused
    error: ErrorInfo | None = None
    stage: str | None = None
    degraded_reasons: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    audio_s: float = 0.0
    ran_stages: tuple[str, ...] = ()  # stages actually run (not skipped as still valid)
    fatal: bool = False  # the batch cannot go on (e.g. disk full)


@dataclass
class RunnerDeps:
    """What a JobRunner needs; built once per batch run."""

    store: Store
    out_dir: str
    stages: Sequence[StageSpec]
    config: Mapping[str, Any]  # the batch's PipelineConfig.to_dict()
    fingerprint: Callable[[str], str]  # stage name -> config fingerprint
    executor: StageExecutor
    breakers: BreakerRegistry
    retry: RetryConfig
    timeouts: AdaptiveTimeout
    bus: ev.EventBus
    availability: Mapping[str, Any] = field(default_factory=dict)
    max_crashes: int = 2
    keep_work_files: bool = False
    clock: Clock = SYSTEM_CLOCK
    # removes a finished job's work folder; the engine's moves it aside and deletes it in the background
    discard: Callable[[str], None] | None = None


class JobRunner:
    """Runs jobs one after another (one JobRunner per supervisor thread)."""

    def __init__(self, deps: RunnerDeps):
        self.d = deps
        self._crashes: dict[tuple[str, str], int] = {}  # (stage, backend) -> crashes or hangs, this job
        self._announced = False  # JobStarted published for the job this runner runs now

    # -- helpers ----------------------------------------------------------------
    def _announce(self, job: JobRow) -> None:
        """JobStarted, once per run of a job, when it really starts: a worker took its first stage (until then
        the job waits for one, and the window shows it queued), or it had nothing left to run."""
        if not self._announced:
            self._announced = True
            self.d.bus.publish(ev.JobStarted(job.id, job.input_path))

    def work_dir(self, job_id: int) -> str:
        return os.path.join(self.d.out_dir, ".stave", "work", f"job-{job_id}")

    def _still_valid(self, job_id: int, spec: StageSpec, fingerprint: str) -> bool:
        row = self.d.store.stage_row(job_id, spec.name)
        return (row is not None and row.status.completed and row.stage_version == spec.version
                and row.config_fingerprint == fingerprint and verify_manifest(self.d.out_dir, row.manifest))

    def _timeout_for(self, spec: StageSpec, backend: str, audio_s: float | None) -> float | None:
        fixed = float((self.d.config.get("stage_timeouts") or {}).get(spec.timeout_key or spec.name, 0) or 0)
        if fixed > 0:
            return fixed
        if not audio_s:  # unknown length (before ingest): history per audio second says nothing
            return self.d.timeouts.timeout_for(0.0, [])
        key = f"{spec.name}:{backend}" if backend else spec.name
        samples = [(r.elapsed_s, r.audio_s) for r in self.d.store.durations(key) if r.audio_s]
        return self.d.timeouts.timeout_for(audio_s, samples)

    def _stage_states(self, job_id: int) -> dict[str, dict]:
        out = {}
        for row in self.d.store.stages(job_id):
            out[row.stage] = {"status": row.status.value, "version": row.stage_version,
                              "degraded": row.degraded, "reason": row.degraded_reason or row.error_reason,
                              "elapsed_s": row.elapsed_s}
        return out

    # -- one stage ----------------------------------------------------------------
    def _attempts(self, job: JobRow, spec: StageSpec, ctx: StageContext, backend: str, cancel: CancelToken,
                  audio_s: float | None) -> tuple[StageOutput, float, str]:
        """retry -> breaker -> timeout -> worker, for one backend."""
        d = self.d
        breaker_name = spec.breakers.get(backend)
        breaker = d.breakers.get(breaker_name) if breaker_name else None
        ctx = dataclasses.replace(ctx, backend=backend)

        def once() -> tuple[StageOutput, float, str]:
            cancel.raise_if_cancelled()
            permit = breaker.acquire() if breaker is not None else None
            t0 = d.clock.monotonic()
            attempt_id = None
            try:
                timeout_s = self._timeout_for(spec, backend, audio_s)
                attempt_id = d.store.begin_stage_attempt(job.id, spec.name)
                attempt_no = d.store.stage_row(job.id, spec.name).attempts

                def started() -> None:  # a worker took it (it may have waited for one: a job more is in flight)
                    self._announce(job)
                    d.bus.publish(ev.StageStarted(job.id, spec.name, attempt_no, timeout_s))

                def waiting() -> None:  # every worker is busy with other jobs: say so, not "running" its last stage
                    if self._announced:  # (a job not yet started simply stays queued)
                        d.bus.publish(ev.StageWaiting(job.id, spec.name))

                t0 = d.clock.monotonic()
                out = d.executor.run(run_stage_in_worker, (spec.fn, dataclasses.replace(ctx, timeout_s=timeout_s)),
                                     timeout_s=timeout_s, cancel=cancel, on_start=started, on_wait=waiting)
            except BaseException as exc:
                elapsed = d.clock.monotonic() - t0
                info = engine_classify(exc)
                not_the_files = info.severity is Severity.FATAL  # e.g. no worker could start: the batch pauses
                if breaker is not None:
                    if info.counts_for_breaker and info.kind is not ErrorKind.CANCELLED and not not_the_files:
                        breaker.record_failure(permit, info, elapsed)
                    else:
                        breaker.release(permit)
                if attempt_id is not None:
                    d.store.fail_stage(job.id, spec.name, info, elapsed_s=elapsed, attempt_id=attempt_id)
                if info.kind in (ErrorKind.WORKER_CRASH, ErrorKind.TIMEOUT) and not not_the_files:
                    d.store.record_crash(job.id)  # the total, for people; the budget is per stage and backend
                    key = (spec.name, backend)
                    self._crashes[key] = self._crashes.get(key, 0) + 1
                    if self._crashes[key] >= d.max_crashes:
                        raise Quarantined(
                            f"{info.reason} ({self._crashes[key]} times on this file: set aside)", kind=info.kind,
                            suggestion="The file may be hostile to the decoder or too long for the timeout; "
                                       "check it, then use 'Retry failed' to try again.",
                        ) from exc
                raise
            elapsed = d.clock.monotonic() - t0
            if getattr(out, "ran_s", None) is not None:  # the worker's own figure: without waiting for a worker
                elapsed = out.ran_s
            if breaker is not None:
                breaker.record_success(permit, elapsed)
            return out, elapsed, str(attempt_id)

        def on_retry(attempt: int, delay: float, info: ErrorInfo) -> None:
            d.bus.publish(ev.StageRetrying(job.id, spec.name, attempt, delay, info.kind.value, info.reason))

        policy = RetryPolicy(d.retry, clock=d.clock, classifier=engine_classify, on_retry=on_retry)
        return policy.call(once, cancel=cancel)

    def _run_stage(self, job: JobRow, spec: StageSpec, ctx: StageContext, plan: BackendPlan, cancel: CancelToken,
                   audio_s: float | None) -> tuple[StageOutput, float, bool, str, str]:
        """The stage with its fallback: (output, elapsed, degraded, reason, backend used)."""
        if not plan.fallback or plan.fallback == plan.primary:
            ctx = dataclasses.replace(ctx, degraded_reason=plan.degraded_reason)
            out, elapsed, _ = self._attempts(job, spec, ctx, plan.primary, cancel, audio_s)
            reason = plan.degraded_reason or out.reason
            return out, elapsed, bool(plan.degraded_reason) or out.degraded, reason, plan.primary

        fb = Fallback(
            lambda: self._attempts(job, spec, ctx, plan.primary, cancel, audio_s),
            lambda: self._attempts(job, spec, ctx, plan.fallback, cancel, audio_s),
            classifier=engine_classify, primary_name=plan.primary, alternative_name=plan.fallback,
        )
        result = fb.call()
        out, elapsed, _ = result.value
        if result.degraded:
            reason = f"{plan.primary} failed ({result.error.reason}); used {plan.fallback}"
            return out, elapsed, True, reason, plan.fallback
        return out, elapsed, out.degraded, out.reason, plan.primary

    # -- one job ------------------------------------------------------------------
    def _input_changed(self, job: JobRow) -> bool:
        """The file at the job's path is not the one scanned (replaced or edited since)."""
        try:
            st = os.stat(job.input_path)
        except OSError:
            return False  # ingest says what is wrong with it
        return ((job.size_bytes is not None and st.st_size != job.size_bytes)
                or (job.mtime is not None and abs(st.st_mtime - job.mtime) > 1e-3))

    def run(self, job: JobRow, cancel: CancelToken) -> JobOutcome:
        d = self.d
        t_job = d.clock.monotonic()
        self._crashes = {}
        self._announced = False  # JobStarted waits until a worker takes one of its stages (see _announce)
        work_dir = self.work_dir(job.id)
        state = {"song_id": job.song_id, "audio_s": job.audio_duration_s, "stage": d.stages[0].name}
        degraded: list[str] = []
        ran: list[str] = []
        try:
            if self._input_changed(job):
                st = os.stat(job.input_path)
                with d.store.transaction():
                    d.store.reset_stages_from(job.id, d.stages[0].name, stage_order=[s.name for s in d.stages])
                    d.store.update_job_facts(job.id, size_bytes=st.st_size, mtime=st.st_mtime)
            donor = self._earlier_result(job)
            if donor is not None:
                return self._reuse(job, donor, t_job)
            d.store.mark_job_started(job.id)
            os.makedirs(work_dir, exist_ok=True)
            upstream_ran = False
            for spec in d.stages:
                state["stage"] = spec.name
                fingerprint = d.fingerprint(spec.name)
                if not upstream_ran and self._still_valid(job.id, spec, fingerprint):
                    row = d.store.stage_row(job.id, spec.name)
                    if row.degraded:
                        degraded.append(f"{spec.name}: {row.degraded_reason}")
                    self._announce(job)
                    d.bus.publish(ev.StageFinished(job.id, spec.name, row.elapsed_s or 0.0, skipped=True))
                    continue
                if not upstream_ran:
                    # From here on everything runs again: forget later stages' results now, so that an
                    # interruption can never leave them looking valid over new upstream outputs.
                    d.store.reset_stages_from(job.id, spec.name, stage_order=[s.name for s in d.stages],
                                              reset_jobs=False)
                    upstream_ran = True
                if not spec.is_enabled(d.config):
                    d.store.skip_stage(job.id, spec.name, spec.skip_reason or "switched off",
                                       stage_version=spec.version, fingerprint=fingerprint)
                    continue
                self._one_stage(job, spec, fingerprint, work_dir, state, degraded, cancel)
                ran.append(spec.name)
            d.store.mark_job_finished(job.id, degraded_reasons=degraded, audio_duration_s=state["audio_s"])
        except BaseException as exc:  # noqa: BLE001 - every failure is classified and recorded
            return self._job_failed(job, state["stage"], engine_classify(exc), exc, t_job, ran)
        if not d.keep_work_files and not degraded:
            # a degraded job keeps its intermediates, so "re-run degraded" redoes only what was degraded
            if d.discard is not None:
                d.discard(work_dir)
            else:
                shutil.rmtree(work_dir, ignore_errors=True)
        self._announce(job)  # (nothing ran: every stage was still valid)
        outcome = JobOutcome(job.id, JobStatus.DONE, degraded_reasons=tuple(degraded),
                             elapsed_s=d.clock.monotonic() - t_job, audio_s=state["audio_s"] or 0.0,
                             ran_stages=tuple(ran))
        d.bus.publish(ev.JobFinished(job.id, job.input_path, outcome.elapsed_s, bool(degraded), tuple(degraded)))
        return outcome

    def _earlier_result(self, job: JobRow) -> JobRow | None:
        """A finished job on the same unchanged file (an earlier batch, say: the same folder processed again)
        whose every stage ran at this version with this configuration and whose song files still verify: its
        results are this job's. Only for a job that never ran (a job run again on purpose, "re-run from" a
        stage, say, has run before)."""
        d = self.d
        if job.attempts or d.store.stages(job.id):
            return None
        donor = d.store.done_job_like(job)
        if donor is None:
            return None
        rows = {r.stage: r for r in d.store.stages(donor.id)}
        kept = []  # the song's files (the work folder's intermediates are gone once a job is done)
        for spec in d.stages:
            row = rows.get(spec.name)
            if (row is None or not row.status.completed or row.stage_version != spec.version
                    or row.config_fingerprint != d.fingerprint(spec.name)):
                return None
            kept += [a for a in row.manifest if not a.path.startswith(WORK_PREFIX)]
        if not kept or not os.path.isfile(os.path.join(d.out_dir, donor.song_id, "summary.json")):
            return None
        if not verify_manifest(d.out_dir, kept):
            return None
        if not donor.content_hash:
            return None
        try:  # the same bytes too (size and time can match a different file: a copy that kept the time)
            same = sha256_file(job.input_path) == donor.content_hash
        except OSError:
            return None  # ingest will say what is wrong with it
        return donor if same else None

    def _reuse(self, job: JobRow, donor: JobRow, t_job: float) -> JobOutcome:
        d = self.d
        d.store.adopt_results(job.id, donor)
        self._announce(job)
        for spec in d.stages:
            d.bus.publish(ev.StageFinished(job.id, spec.name, 0.0, skipped=True))
        outcome = JobOutcome(job.id, JobStatus.DONE, elapsed_s=d.clock.monotonic() - t_job,
                             audio_s=donor.audio_duration_s or 0.0, ran_stages=())
        d.bus.publish(ev.JobFinished(job.id, job.input_path, outcome.elapsed_s, False, (),
                                     reused_from_batch=donor.batch_id))
        return outcome

    def _one_stage(self, job: JobRow, spec: StageSpec, fingerprint: str, work_dir: str, state: dict,
                   degraded: list[str], cancel: CancelToken) -> None:
        d = self.d
        plan = spec.plan_for(d.config, d.availability)
        facts = {"audio_duration_s": state["audio_s"], "stages": self._stage_states(job.id)}
        ctx = StageContext(job_id=job.id, stage=spec.name, input_path=job.input_path, out_dir=d.out_dir,
                           work_dir=work_dir, song_id=state["song_id"], config=d.config, facts=facts)
        out, elapsed, is_degraded, reason, backend = self._run_stage(job, spec, ctx, plan, cancel, state["audio_s"])
        new_id = out.facts.get("song_id")
        audio_s = float(out.facts["audio_duration_s"]) if out.facts.get("audio_duration_s") else state["audio_s"]
        # The stage's done row, what it learnt about the file and its duration sample: one commit, all or nothing.
        with d.store.transaction():
            d.store.finish_stage(job.id, spec.name, manifest=out.artifacts, stage_version=spec.version,
                                 fingerprint=fingerprint, degraded=is_degraded, reason=reason, elapsed_s=elapsed)
            if new_id and new_id != state["song_id"]:
                d.store.update_job_facts(job.id, song_id=new_id, content_hash=out.facts.get("content_hash", ""),
                                         audio_duration_s=out.facts.get("audio_duration_s"))
            d.store.record_duration(f"{spec.name}:{backend}" if backend else spec.name, elapsed, audio_s)
        if new_id:
            state["song_id"] = new_id
        state["audio_s"] = audio_s
        if is_degraded:
            degraded.append(f"{spec.name}: {reason}")
            d.bus.publish(ev.StageDegraded(job.id, spec.name, reason))
        d.bus.publish(ev.StageFinished(job.id, spec.name, elapsed))

    def _job_failed(self, job: JobRow, stage: str, info: ErrorInfo, exc: BaseException, t_job: float,
                    ran: list[str]) -> JobOutcome:
        d = self.d
        elapsed = d.clock.monotonic() - t_job
        if info.kind is ErrorKind.CANCELLED or info.severity is Severity.FATAL:
            # Not the file's fault: the job goes back to pending and runs again on resume.
            d.store.reset_job(job.id)
            if info.kind is not ErrorKind.CANCELLED:
                d.bus.publish(ev.JobFailed(job.id, job.input_path, stage, info.kind.value, info.reason,
                                           info.suggestion))
            if self._announced or info.kind is not ErrorKind.CANCELLED:  # else it never left the queue visibly
                d.bus.publish(ev.JobQueued(job.batch_id, job.id, job.input_path, job.song_id,
                                           reason=f"interrupted at {stage}: {info.reason}"))
            return JobOutcome(job.id, JobStatus.PENDING, info, stage, elapsed_s=elapsed, ran_stages=tuple(ran),
                              fatal=info.severity is Severity.FATAL)
        quarantined = isinstance(exc, Quarantined)
        if quarantined:
            d.store.mark_job_quarantined(job.id, info, stage=stage)
        else:
            d.store.mark_job_failed(job.id, info, stage=stage)
        if info.kind is ErrorKind.BUG:
            log.error("bug in stage %s on %s", stage, job.input_path, exc_info=exc)
        else:
            log.warning("%s failed at %s: %s (%s)", job.input_path, stage, info.reason, info.kind.value)
        d.bus.publish(ev.JobFailed(job.id, job.input_path, stage, info.kind.value, info.reason, info.suggestion,
                                   quarantined))
        return JobOutcome(job.id, JobStatus.QUARANTINED if quarantined else JobStatus.FAILED, info, stage,
                          elapsed_s=elapsed, ran_stages=tuple(ran))
