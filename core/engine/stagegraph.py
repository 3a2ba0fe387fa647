"""The contract between the engine and the stages it runs.

A stage is a plain function ``fn(ctx: StageContext) -> StageOutput`` that runs
inside a worker process. It reads what earlier stages wrote into the job's
work folder, writes its own artifacts atomically, and returns their manifest.
The engine never sees arrays: only paths and small JSON-safe facts cross the
process boundary.

``StageSpec`` describes a stage to the supervisor: its version (bump it
whenever its output would change), where its function lives (a
``"module:function"`` string, so spawn workers can import it), which
backends it can use (primary first, the built-in fallback last) and which
circuit breaker guards each backend.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from core.engine.store_manifest import Artifact, artifact_for
from core.resilience.errors import StaveError, classify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs, small and picklable."""

    job_id: int
    stage: str
    input_path: str
    out_dir: str  # the batch's output folder (OUT)
    work_dir: str  # OUT/.stave/work/job-<id>: intermediates of this job
    song_id: str  # OUT/<song_id> holds the song's final outputs (known after ingest)
    config: Mapping[str, Any]  # PipelineConfig.to_dict()
    backend: str = ""  # the backend chosen for this attempt ("" when the stage has one way only)
    degraded_reason: str = ""  # set when the chosen backend is a fallback
    facts: Mapping[str, Any] = field(default_factory=dict)  # facts earlier stages reported
    timeout_s: float | None = None  # this attempt's deadline: a stage running its own tool ends it before

    @property
    def song_dir(self) -> str:
        return os.path.join(self.out_dir, self.song_id)


@dataclass(frozen=True)
class StageOutput:
    """What a stage attempt returns: its artifacts (hashed) and small facts."""

    artifacts: tuple[Artifact, ...] = ()
    degraded: bool = False
    reason: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)  # JSON-safe: song_id, duration_s, ...
    skipped: bool = False  # the stage did not apply (e.g. transcription switched off)
    # seconds the stage ran in its worker (set there): its duration, without the wait for a free worker
    ran_s: float | None = None

    @classmethod
    def of(cls, ctx: StageContext, paths, **kw) -> "StageOutput":
        """Hash ``paths`` (absolute, inside ctx.out_dir) into the manifest."""
        return cls(artifacts=tuple(artifact_for(ctx.out_dir, p) for p in paths), **kw)


@dataclass(frozen=True)
class BackendPlan:
    """Which backends to try for one stage of one job, in order."""

    primary: str = ""
    fallback: str = ""  # "" = no fallback
    degraded_reason: str = ""  # why the primary is not the preferred backend (then the result is degraded)


@dataclass(frozen=True)
class StageSpec:
    name: str
    version: str
    fn: str  # "package.module:function", run in a worker
    plan: Callable[[Mapping[str, Any], Mapping[str, Any]], BackendPlan] | None = None
    """(config dict, availability) -> BackendPlan; None = a single way, no backend."""
    breakers: Mapping[str, str] = field(default_factory=dict)  # backend -> breaker name
    enabled: Callable[[Mapping[str, Any]], bool] | None = None  # None = always runs
    skip_reason: str = ""
    timeout_key: str = ""  # key in config["stage_timeouts"]; defaults to name

    def plan_for(self, config: Mapping[str, Any], availability: Mapping[str, Any]) -> BackendPlan:
        return self.plan(config, availability) if self.plan is not None else BackendPlan()

    def is_enabled(self, config: Mapping[str, Any]) -> bool:
        return self.enabled(config) if self.enabled is not None else True


def resolve(fn_path: str) -> Callable[[StageContext], StageOutput]:
    module, _, name = fn_path.partition(":")
    return getattr(importlib.import_module(module), name)


def run_stage_in_worker(fn_path: str, ctx: StageContext) -> StageOutput:
    """The function the worker pool runs: import the stage and call it.

    An exception that would not survive the trip back to the supervisor (one
    whose constructor takes other arguments than it keeps, such as urllib's
    HTTPError) would break the whole pool, and every task running in it, so it
    is replaced by a :class:`StaveError` carrying its classification.
    """
    t0 = time.perf_counter()
    try:
        out = resolve(fn_path)(ctx)
    except Exception as exc:
        if _survives_pickling(exc):
            raise
        log.warning("stage %s raised an exception that cannot cross processes", ctx.stage, exc_info=exc)
        info = classify(exc)
        raise StaveError(info.reason, suggestion=info.suggestion, kind=info.kind) from None
    if isinstance(out, StageOutput):
        out = dataclasses.replace(out, ran_s=time.perf_counter() - t0)
    return out


def _survives_pickling(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to round-trip is the answer
        return False
    return True


def resolve_and_call(fn_path: str, *args):
    """Call a ``"module:function"`` (used for worker warm-up)."""
    return resolve(fn_path)(*args)
