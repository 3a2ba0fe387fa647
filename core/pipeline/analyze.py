"""Song analysis: arrays in, data out.

``analyze_audio(y, sr, config)`` computes one STFT and derives everything
from it (spectral features, onset envelopes, chroma, MFCC, tuning), tracks
tempo, beats and bars, estimates the key and measures loudness. The frame
features stay in the result so that :func:`bar_features` gets per-bar rows by
slicing frames at bar boundaries, never by analysing chunks again.

No file I/O here: the stage wrapper loads the preprocessed audio and writes
``AnalysisResult.to_summary_dict()`` (JSON-safe) and ``bar_features(result)``
(one flat dict per bar, ready for ``pyarrow.Table.from_pylist``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.pipeline.features import compute_spectra  # noqa: F401  (still importable from here: tests patch it)
from core.pipeline.features import (FrameFeatures, Levels, frame_features, frame_rms, measure_levels,
                                    onset_delay_frames, pick_onsets, spectra_from_magnitude, stft_magnitude,
                                    zero_crossing_rate)
from core.pipeline.rhythm import Bar, TempoAlternative, analyze_rhythm
from core.pipeline.tonal import (PITCH_NAMES, PROFILES, KeyEstimate, estimate_key, estimate_tuning,
                                 key_profile_from_chroma)
from core.resilience.errors import ErrorKind, InputError

_DENOMINATORS = (1, 2, 4, 8, 16, 32)
_CHECK_BLOCK = 1 << 20  # samples checked for NaN/inf at once (no signal-sized mask)


@dataclass(frozen=True)
class AnalysisConfig:
    """Analysis settings; validates itself. ``tempo_min``/``tempo_max`` bound the beat tempo (BPM)."""

    hop_length: int = 512
    n_fft: int = 2048
    n_mels: int = 128
    n_mfcc: int = 20
    beats_per_bar: int = 4  # time signature numerator
    beat_unit: int = 4  # time signature denominator
    tempo_min: float = 50.0
    tempo_max: float = 200.0
    key_profile: str = "temperley"

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"AnalysisConfig.{name} {rule}, got {getattr(self, name)!r}")

        need(isinstance(self.hop_length, int) and self.hop_length > 0, "hop_length", "must be a positive integer")
        need(isinstance(self.n_fft, int) and self.n_fft >= 64, "n_fft", "must be an integer >= 64")
        need(self.hop_length <= self.n_fft, "hop_length", f"must not exceed n_fft ({self.n_fft})")
        need(isinstance(self.n_mels, int) and 12 <= self.n_mels <= 512, "n_mels", "must be an integer in 12..512")
        need(isinstance(self.n_mfcc, int) and 1 <= self.n_mfcc <= self.n_mels, "n_mfcc",
             f"must be an integer in 1..n_mels ({self.n_mels})")
        need(isinstance(self.beats_per_bar, int) and 1 <= self.beats_per_bar <= 64, "beats_per_bar",
             "must be an integer in 1..64")
        need(self.beat_unit in _DENOMINATORS, "beat_unit", f"must be one of {_DENOMINATORS}")
        need(isinstance(self.tempo_min, (int, float)) and 10 <= self.tempo_min, "tempo_min",
             "must be a number >= 10 BPM")
        need(isinstance(self.tempo_max, (int, float)) and self.tempo_max <= 400, "tempo_max",
             "must be a number <= 400 BPM")
        need(self.tempo_max >= 1.5 * self.tempo_min, "tempo_max",
             f"must be at least 1.5 x tempo_min ({self.tempo_min})")
        need(self.key_profile in PROFILES, "key_profile", f"must be one of {sorted(PROFILES)}")

    @property
    def time_signature(self) -> str:
        return f"{self.beats_per_bar}/{self.beat_unit}"


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """Everything the analysis found; ``frames`` keeps the frame features for per-bar slicing."""

    duration_s: float
    sample_rate: int
    config: AnalysisConfig
    tempo_bpm: float
    tempo_confidence: float
    tempo_alternatives: tuple[TempoAlternative, ...]
    beat_times: np.ndarray
    downbeat_times: np.ndarray
    bars: tuple[Bar, ...]
    key: KeyEstimate
    levels: Levels
    tuning: float  # fractions of a semitone from A440
    onset_times: np.ndarray
    frames: FrameFeatures = field(repr=False)

    @property
    def tuning_cents(self) -> float:
        return 100.0 * self.tuning

    @property
    def onset_rate(self) -> float:
        """Detected onsets per second."""
        return len(self.onset_times) / self.duration_s if self.duration_s > 0 else 0.0

    def to_summary_dict(self) -> dict:
        """Song-level results as plain JSON-safe values (floats, ints, str, None, lists)."""
        f = self.frames
        return {
            "duration_s": _num(self.duration_s),
            "sample_rate": int(self.sample_rate),
            "time_signature": self.config.time_signature,
            "tempo_bpm": _num(self.tempo_bpm) if self.tempo_bpm > 0 else None,  # no pulse: null, never a 0 BPM
            "tempo_confidence": _num(self.tempo_confidence),
            "tempo_alternatives": [a.to_dict() for a in self.tempo_alternatives],
            "beats": len(self.beat_times),
            "beat_times": _list(self.beat_times, 4),
            "downbeat_times": _list(self.downbeat_times, 4),
            "bars": len(self.bars),
            "key": self.key.key,
            "key_score": _num(self.key.score),
            "key_confidence": _num(self.key.confidence),
            "key_runner_up": self.key.runner_up,
            "key_runner_up_score": _num(self.key.runner_up_score),
            "loudness_lufs": _num(self.levels.loudness_lufs),
            "loudness_note": self.levels.loudness_note,
            "peak_dbfs": _num(self.levels.peak_dbfs),
            "rms_dbfs": _num(self.levels.rms_dbfs),
            "spectral_centroid_mean": _mean(f.centroid),
            "spectral_bandwidth_mean": _mean(f.bandwidth),
            "spectral_rolloff_mean": _mean(f.rolloff),
            "spectral_flatness_mean": _mean(f.flatness),
            "spectral_contrast_mean": _mean(f.contrast),
            "zcr_mean": _mean(f.zcr),
            "onset_strength_mean": _mean(f.onset),
            "onset_rate": _num(self.onset_rate),
            "tuning_cents": _num(self.tuning_cents),
            "mfcc_mean": _list(f.mfcc.mean(axis=1) if f.n_frames else np.zeros(len(f.mfcc))),
            "mfcc_std": _list(f.mfcc.std(axis=1) if f.n_frames else np.zeros(len(f.mfcc))),
            "chroma_mean": _list(f.chroma.mean(axis=1) if f.n_frames else np.zeros(12)),
        }


def _num(x: float | None, digits: int | None = None) -> float | None:
    """A plain float, or None for None/NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _list(a: np.ndarray, digits: int | None = None) -> list:
    return [_num(v, digits) for v in np.asarray(a, dtype=float).ravel()]


def _mean(a: np.ndarray) -> float | None:
    return _num(np.mean(a)) if np.size(a) else None


def _check_input(y: np.ndarray, sr: int) -> np.ndarray:
    if not isinstance(sr, (int, np.integer)) or sr < 1000:
        raise InputError(f"sample rate must be an integer >= 1000 Hz, got {sr!r}", kind=ErrorKind.INPUT_UNSUPPORTED)
    a = np.asarray(y)
    if a.ndim != 1:
        raise InputError(f"analysis needs mono audio (1-D), got shape {a.shape}", kind=ErrorKind.INPUT_UNSUPPORTED)
    if a.size == 0:
        raise InputError("no samples to analyse", kind=ErrorKind.INPUT_EMPTY)
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not all(np.isfinite(a[i : i + _CHECK_BLOCK]).all() for i in range(0, a.size, _CHECK_BLOCK)):
        raise InputError("audio holds NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)
    return a


def analyze_audio(y: np.ndarray, sr: int, config: AnalysisConfig | None = None) -> AnalysisResult:
    """Analyse mono audio ``y`` at ``sr``: one STFT, every feature derived from it.

    Raises :class:`InputError` for empty, non-mono or non-finite input.
    Silence is not an error: it gives tempo 0, no beats and no key.

    Memory: everything read from the samples comes first, then the STFT, then
    ``y`` is let go. A caller that hands over its only reference (e.g.
    ``analyze_audio(np.load(path), sr)``) so frees the signal before the
    work on the spectrogram, and the peak is the samples plus their STFT
    magnitude (about 3x the float32 signal) plus bounded per-block temporaries.
    """
    config = config or AnalysisConfig()
    y = _check_input(y, sr)
    n_fft, hop = config.n_fft, config.hop_length
    duration = len(y) / sr
    levels = measure_levels(y, sr)
    if len(y) < n_fft:  # a snippet shorter than one window: pad it to one full frame
        y = np.pad(y, (0, n_fft - len(y)))
    rms, zcr = frame_rms(y, n_fft, hop), zero_crossing_rate(y, n_fft, hop)
    magnitude = stft_magnitude(y, n_fft, hop)
    del y  # the samples are done with (freed here if the caller passed its only reference)
    spectra = spectra_from_magnitude(magnitude, sr, n_fft, hop, config.n_mels)
    del magnitude
    tuning = estimate_tuning(spectra.magnitude, sr, n_fft)
    frames = frame_features(None, spectra, config.n_mfcc, tuning, rms=rms, zcr=zcr)
    del spectra  # the frame features are all that is needed from here on
    fps = sr / hop
    delay = onset_delay_frames(n_fft, hop)
    rhythm = analyze_rhythm(frames.onset, (frames.low_band, frames.rms), fps, config.beats_per_bar,
                            config.tempo_min, config.tempo_max, duration, delay, chroma=frames.chroma)
    key = estimate_key(key_profile_from_chroma(frames.chroma, frames.rms), config.key_profile)
    onset_times = (pick_onsets(frames.onset, fps) + delay) / fps
    return AnalysisResult(
        duration_s=duration, sample_rate=int(sr), config=config,
        tempo_bpm=rhythm.tempo_bpm, tempo_confidence=rhythm.tempo_confidence,
        tempo_alternatives=rhythm.alternatives, beat_times=rhythm.beat_times,
        downbeat_times=rhythm.downbeat_times, bars=rhythm.bars, key=key, levels=levels,
        tuning=tuning, onset_times=onset_times, frames=frames,
    )


# -- per-bar rows -------------------------------------------------------------

CHROMA_COLUMNS = tuple(f"chroma_{p}" for p in PITCH_NAMES)


def bar_features(source: AnalysisResult | FrameFeatures, bars: Sequence[Bar | tuple[int, float, float]] | None = None,
                 beat_times: np.ndarray | None = None) -> list[dict]:
    """One row per bar, every value a mean over the frames inside the bar.

    ``source`` is an :class:`AnalysisResult` (its bars and beats are used
    unless given) or bare :class:`FrameFeatures` plus ``bars`` as ``Bar`` or
    ``(index, start_s, end_s)``. Columns: ``bar, start_s, end_s, duration_s,
    beats, frames, rms_mean, rms_db, centroid_mean, bandwidth_mean,
    rolloff_mean, flatness_mean, contrast_mean, zcr_mean, onset_strength_mean,
    chroma_C..chroma_B, mfcc_0..mfcc_{n-1}``. A bar with no frame gets NaN values.
    """
    if isinstance(source, AnalysisResult):
        frames = source.frames
        bars = source.bars if bars is None else bars
        beat_times = source.beat_times if beat_times is None else beat_times
    else:
        frames = source
        if bars is None:
            raise ValueError("bar_features needs bars when given bare FrameFeatures")
    beats = np.asarray(beat_times if beat_times is not None else [], dtype=float)
    rows = []
    for bar in bars:
        index, start, end = (bar.index, bar.start_s, bar.end_s) if isinstance(bar, Bar) else bar
        sl = frames.frames_between(start, end)
        rows.append(_bar_row(frames, int(index), float(start), float(end), sl, beats))
    return rows


def _bar_row(f: FrameFeatures, index: int, start: float, end: float, sl: slice, beats: np.ndarray) -> dict:
    n = sl.stop - sl.start

    def mean(a: np.ndarray) -> float:
        return float(a[..., sl].mean()) if n else math.nan

    rms = f.rms[sl]
    power = float(np.mean(np.square(rms))) if n else math.nan
    row = {
        "bar": index,
        "start_s": start,
        "end_s": end,
        "duration_s": end - start,
        "beats": int(np.count_nonzero((beats >= start) & (beats < end))),
        "frames": int(n),
        "rms_mean": mean(f.rms),
        "rms_db": 10.0 * math.log10(power) if n and power > 0 else (-120.0 if n else math.nan),
        "centroid_mean": mean(f.centroid),
        "bandwidth_mean": mean(f.bandwidth),
        "rolloff_mean": mean(f.rolloff),
        "flatness_mean": mean(f.flatness),
        "contrast_mean": mean(f.contrast),
        "zcr_mean": mean(f.zcr),
        "onset_strength_mean": mean(f.onset),
    }
    chroma = f.chroma[:, sl].mean(axis=1) if n else np.full(12, math.nan)
    row.update({name: float(v) for name, v in zip(CHROMA_COLUMNS, chroma)})
    mfcc = f.mfcc[:, sl].mean(axis=1) if n else np.full(len(f.mfcc), math.nan)
    row.update({f"mfcc_{i}": float(v) for i, v in enumerate(mfcc)})
    return row
