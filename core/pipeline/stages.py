"""Stave's stage graph: ingest -> preprocess -> separate -> analyze -> transcribe -> segment -> export.

Bump a stage's version whenever its output would change: finished stages of
an older version are run again on resume instead of being trusted.
"""

from __future__ import annotations

from typing import Any, Mapping

from core.engine.batch import Pipeline
from core.engine.stagegraph import BackendPlan, StageSpec
from core.pipeline import WORKER_PRELOAD, WORKER_WARM_START
from core.pipeline.config import PipelineConfig

_FNS = "core.pipeline.stage_fns"

# Backend names double as breaker names for the external tools.
DEMUCS, HPSS = "demucs", "hpss"
BASIC_PITCH, PYIN = "basic_pitch", "pyin"


def _plan(setting: str, tool: str, tool_label: str, builtin: str, builtin_label: str):
    """External ``tool`` with ``builtin`` as its fallback; ``builtin`` alone (degraded) when the tool cannot run."""

    def plan(config: Mapping[str, Any], availability: Mapping[str, Any]) -> BackendPlan:
        if config.get(setting, "auto") == builtin:  # chosen on purpose: not degraded
            return BackendPlan(primary=builtin)
        ok, why = availability.get(tool, (False, f"{tool_label} availability unknown"))
        if ok:
            return BackendPlan(primary=tool, fallback=builtin)
        return BackendPlan(primary=builtin, degraded_reason=f"{tool_label} cannot run ({why}); used {builtin_label}")

    return plan


_separation_plan = _plan("separation_backend", DEMUCS, "Demucs", HPSS, "harmonic/percussive separation")
_transcription_plan = _plan("transcription_backend", BASIC_PITCH, "Basic Pitch", PYIN, "monophonic pYIN")


STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "1", f"{_FNS}:ingest_stage"),
    StageSpec("preprocess", "1", f"{_FNS}:preprocess_stage"),
    StageSpec("separate", "1", f"{_FNS}:separate_stage", plan=_separation_plan, breakers={DEMUCS: DEMUCS},
              enabled=lambda c: bool(c.get("separate")), skip_reason="stem separation is switched off"),
    StageSpec("analyze", "3", f"{_FNS}:analyze_stage"),  # 2: keys spelled as key signatures; 3: metrical level step by step, downbeats hear chord changes
    StageSpec("transcribe", "1", f"{_FNS}:transcribe_stage", plan=_transcription_plan,
              breakers={BASIC_PITCH: BASIC_PITCH},
              enabled=lambda c: bool(c.get("transcribe")), skip_reason="transcription is switched off"),
    StageSpec("segment", "1", f"{_FNS}:segment_stage"),
    StageSpec("export", "1", f"{_FNS}:export_stage"),
)


def availability() -> dict[str, tuple[bool, str]]:
    """Which optional engines can run here (cheap: no heavy imports)."""
    from core.pipeline.separate import demucs_available
    from core.pipeline.transcribe import basic_pitch_available

    return {DEMUCS: demucs_available(), BASIC_PITCH: basic_pitch_available()}


def _config_to_dict(config: PipelineConfig | Mapping[str, Any]) -> dict:
    if isinstance(config, PipelineConfig):
        return config.to_dict()
    return PipelineConfig.from_dict(config)[0].to_dict()


def _fingerprint(config: Mapping[str, Any], stage: str) -> str:
    return PipelineConfig.from_dict(config)[0].fingerprint(stage)


def build_pipeline() -> Pipeline:
    return Pipeline(STAGES, config_to_dict=_config_to_dict, fingerprint=_fingerprint, availability=availability,
                    warm_up="core.pipeline.warmup:warm",
                    preload=WORKER_PRELOAD, warm_start=WORKER_WARM_START)
