"""The pipeline configuration every stage reads.

``PipelineConfig`` validates itself on creation and reports every problem at
once, each naming its field. ``fingerprint(stage)`` hashes only the fields
that change a stage's output (and its upstream stages'), so resume can tell
which artifacts are still valid after a settings change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

STAGES: tuple[str, ...] = ("ingest", "preprocess", "separate", "analyze", "transcribe", "segment", "export")
SEPARATION_BACKENDS: frozenset[str] = frozenset({"auto", "demucs", "hpss"})
TRANSCRIPTION_BACKENDS: frozenset[str] = frozenset({"auto", "basic_pitch", "pyin"})
TIME_SIGNATURE_DENOMINATORS: frozenset[int] = frozenset({1, 2, 4, 8, 16, 32})
CONFIG_VERSION = 1
_FINGERPRINT_VERSION = 1

# Fields each stage reads itself; upstream stages' fields are added by _STAGE_DEPENDS.
_STAGE_OWN_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "ingest": ("min_duration_s", "silence_threshold_dbfs"),
    "preprocess": ("analysis_sr", "trim_silence", "normalize_loudness", "target_lufs", "needs_native_audio"),
    "separate": ("separate", "separation_backend", "demucs_model"),
    "analyze": ("hop_length", "n_fft", "n_mfcc"),
    "transcribe": ("transcribe", "transcription_backend"),
    "segment": ("time_signature_numerator", "time_signature_denominator"),
    "export": ("keep_stems", "export_bar_audio"),
})
_STAGE_DEPENDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "ingest": (),
    "preprocess": ("ingest",),
    "separate": ("preprocess",),
    "analyze": ("preprocess", "separate"),
    "transcribe": ("separate",),
    "segment": ("analyze",),
    "export": ("segment", "transcribe"),
})


class ConfigError(ValueError):
    """An invalid configuration. ``problems`` lists every ``"field: message"``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        self.fields = [p.split(":", 1)[0] for p in self.problems]
        super().__init__("invalid pipeline config:\n  - " + "\n  - ".join(self.problems))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _default_timeouts() -> dict[str, float]:
    return {stage: 0.0 for stage in STAGES}


@dataclass(frozen=True)
class PipelineConfig:
    """What the stages do and with which parameters (see the field comments)."""

    analysis_sr: int = 22050  # Hz, the rate every analysis runs at
    hop_length: int = 512  # samples between analysis frames
    n_fft: int = 2048  # STFT window; a power of two is recommended
    n_mfcc: int = 20
    time_signature_numerator: int = 4  # beats per bar
    time_signature_denominator: int = 4  # note value of one beat
    min_duration_s: float = 2.0  # shorter input is rejected
    silence_threshold_dbfs: float = -60.0  # below this a file (or its edges) is silence
    normalize_loudness: bool = False
    target_lufs: float = -23.0
    trim_silence: bool = True
    separate: bool = False
    separation_backend: str = "auto"
    transcribe: bool = False
    transcription_backend: str = "auto"
    keep_stems: bool = False
    export_bar_audio: bool = False
    # seconds per stage; 0 = adaptive (from history) or none. Missing stages get 0.
    stage_timeouts: Mapping[str, float] = field(default_factory=_default_timeouts, hash=False)
    demucs_model: str = "htdemucs"
    demucs_executable: str | None = None  # an external `demucs` program; must exist
    ffmpeg_path: str | None = None  # an explicit ffmpeg; must exist

    def __post_init__(self) -> None:
        problems: list[str] = []
        self._check_ints(problems)
        self._check_floats(problems)
        self._check_flags(problems)
        self._check_choices(problems)
        self._check_timeouts(problems)
        self._check_paths(problems)
        if problems:
            raise ConfigError(problems)

    # --- validation ----------------------------------------------------------

    def _check_ints(self, problems: list[str]) -> None:
        limits = {
            "analysis_sr": (1, 384_000),
            "hop_length": (1, 1 << 20),
            "n_fft": (1, 1 << 20),
            "n_mfcc": (1, 128),
            "time_signature_numerator": (1, 64),
        }
        for name, (lo, hi) in limits.items():
            v = getattr(self, name)
            if not _is_int(v):
                problems.append(f"{name}: expected an integer, got {type(v).__name__} {v!r}")
            elif not lo <= v <= hi:
                problems.append(f"{name}: must be between {lo} and {hi}, got {v}")
        den = self.time_signature_denominator
        if not _is_int(den):
            problems.append(f"time_signature_denominator: expected an integer, got {type(den).__name__} {den!r}")
        elif den not in TIME_SIGNATURE_DENOMINATORS:
            problems.append(f"time_signature_denominator: must be one of {sorted(TIME_SIGNATURE_DENOMINATORS)}, got {den}")
        if _is_int(self.hop_length) and _is_int(self.n_fft) and self.hop_length > self.n_fft > 0:
            problems.append(f"hop_length: must not exceed n_fft ({self.n_fft}), got {self.hop_length}")

    def _check_floats(self, problems: list[str]) -> None:
        checks = {
            "min_duration_s": (lambda v: v >= 0, "must be >= 0"),
            "silence_threshold_dbfs": (lambda v: -200 <= v < 0, "must be below 0 dBFS (and above -200)"),
            "target_lufs": (lambda v: -70 <= v < 0, "must be between -70 and 0 LUFS"),
        }
        for name, (ok, msg) in checks.items():
            v = getattr(self, name)
            if not _is_number(v) or not math.isfinite(v):
                problems.append(f"{name}: expected a finite number, got {type(v).__name__} {v!r}")
            elif not ok(v):
                problems.append(f"{name}: {msg}, got {v}")
            else:
                object.__setattr__(self, name, float(v))

    def _check_flags(self, problems: list[str]) -> None:
        for name in ("normalize_loudness", "trim_silence", "separate", "transcribe", "keep_stems", "export_bar_audio"):
            v = getattr(self, name)
            if not isinstance(v, bool):
                problems.append(f"{name}: expected true or false, got {type(v).__name__} {v!r}")

    def _check_choices(self, problems: list[str]) -> None:
        for name, allowed in (
            ("separation_backend", SEPARATION_BACKENDS),
            ("transcription_backend", TRANSCRIPTION_BACKENDS),
        ):
            v = getattr(self, name)
            if not isinstance(v, str) or v not in allowed:
                problems.append(f"{name}: must be one of {sorted(allowed)}, got {v!r}")
        m = self.demucs_model
        if not isinstance(m, str) or not m or not all(c.isalnum() or c in "_-." for c in m):
            problems.append(f"demucs_model: expected a model name such as 'htdemucs', got {m!r}")

    def _check_timeouts(self, problems: list[str]) -> None:
        raw = self.stage_timeouts
        merged = _default_timeouts()
        if not isinstance(raw, Mapping):
            problems.append(f"stage_timeouts: expected a mapping of stage to seconds, got {type(raw).__name__}")
        else:
            for stage, seconds in raw.items():
                if stage not in merged:
                    problems.append(f"stage_timeouts: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
                elif not _is_number(seconds) or not math.isfinite(seconds) or seconds < 0:
                    problems.append(f"stage_timeouts: {stage} must be a number of seconds >= 0, got {seconds!r}")
                else:
                    merged[stage] = float(seconds)
        object.__setattr__(self, "stage_timeouts", MappingProxyType(merged))

    def _check_paths(self, problems: list[str]) -> None:
        for name in ("demucs_executable", "ffmpeg_path"):
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, (str, os.PathLike)) or not os.fspath(v):
                problems.append(f"{name}: expected a path or null, got {type(v).__name__} {v!r}")
                continue
            v = os.fspath(v)
            object.__setattr__(self, name, v)
            if not os.path.isfile(v):
                problems.append(f"{name}: no such file: {v}")

    # --- derived values --------------------------------------------------------

    @property
    def time_signature(self) -> tuple[int, int]:
        return (self.time_signature_numerator, self.time_signature_denominator)

    @property
    def needs_native_audio(self) -> bool:
        """Whether stages after preprocess need the decoded audio at its native rate."""
        return self.separate or self.export_bar_audio

    def timeout_for(self, stage: str) -> float:
        """Seconds allowed for *stage*; 0 means adaptive or none."""
        _check_stage(stage)
        return self.stage_timeouts[stage]

    def advisories(self) -> list[str]:
        """Valid but questionable choices, worth showing next to the settings."""
        notes = []
        if self.n_fft & (self.n_fft - 1):
            notes.append(f"n_fft: {self.n_fft} is not a power of two; FFTs are slower and librosa defaults assume one")
        if self.keep_stems and not self.separate:
            notes.append("keep_stems: has no effect while separate is off")
        return notes

    # --- persistence -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with ``config_version``."""
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["stage_timeouts"] = dict(self.stage_timeouts)
        d["config_version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> tuple["PipelineConfig", list[str]]:
        """Build a config from saved values; returns ``(config, warnings)``.

        Unknown keys are ignored with a warning; missing keys take defaults;
        wrong types and values raise :class:`ConfigError` naming each field.
        """
        if not isinstance(data, Mapping):
            raise ConfigError([f"config: expected a mapping, got {type(data).__name__}"])
        names = {f.name for f in dataclasses.fields(cls)}
        warnings: list[str] = []
        version = data.get("config_version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            warnings.append(f"config_version: saved by version {version!r}, reading as version {CONFIG_VERSION}")
        for key in sorted(str(k) for k in data if k not in names and k != "config_version"):
            warnings.append(f"{key}: unknown setting, ignored")
        return cls(**{k: v for k, v in data.items() if k in names}), warnings

    def __reduce__(self):  # MappingProxyType does not pickle; rebuild (and revalidate) instead
        return (_rebuild, (type(self), self.to_dict()))

    # --- fingerprints ----------------------------------------------------------

    def relevant_fields(self, stage: str | None = None) -> dict[str, Any]:
        """The values that change *stage*'s output (None: any stage's output)."""
        names = _fields_for(stage)
        values = {name: getattr(self, name) for name in names}
        # Settings that only matter when their switch is on.
        if not self.normalize_loudness:
            values.pop("target_lufs", None)
        if not self.separate:
            for name in ("separation_backend", "demucs_model"):
                values.pop(name, None)
        if not self.transcribe:
            values.pop("transcription_backend", None)
        return values

    def fingerprint(self, stage: str | None = None) -> str:
        """Stable SHA-256 (hex) of :meth:`relevant_fields` for *stage*."""
        payload = {"v": _FINGERPRINT_VERSION, "stage": stage, "fields": self.relevant_fields(stage)}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_stage(stage: str) -> None:
    if stage not in _STAGE_OWN_FIELDS:
        raise ValueError(f"stage: unknown stage {stage!r} (stages: {', '.join(STAGES)})")


def _fields_for(stage: str | None) -> set[str]:
    if stage is None:
        return {name for names in _STAGE_OWN_FIELDS.values() for name in names}
    _check_stage(stage)
    out: set[str] = set()
    todo = [stage]
    while todo:
        s = todo.pop()
        out.update(_STAGE_OWN_FIELDS[s])
        todo.extend(_STAGE_DEPENDS[s])
    return out


def _rebuild(cls: type[PipelineConfig], data: dict[str, Any]) -> PipelineConfig:
    return cls.from_dict(data)[0]


__all__ = [
    "CONFIG_VERSION",
    "ConfigError",
    "PipelineConfig",
    "SEPARATION_BACKENDS",
    "STAGES",
    "TIME_SIGNATURE_DENOMINATORS",
    "TRANSCRIPTION_BACKENDS",
]
