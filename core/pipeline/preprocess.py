"""Turn decoded audio into the one signal every analysis reads.

mono mix -> one resample to ``analysis_sr`` (soxr) -> trim leading/trailing
silence -> optional loudness normalisation (ITU-R BS.1770, as pyloudnorm measures it).
Times found on the trimmed signal map back to the original file by adding
``trim_offset_s``; ``native`` (when kept) is the decoded audio unchanged, in
the original timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soxr

from core.resilience.errors import ErrorKind, InputError

if TYPE_CHECKING:
    from core.pipeline.config import PipelineConfig

TRIM_WINDOW_S = 0.01  # silence is judged on the RMS of 10 ms windows
_BS1770_BLOCK_S = 0.4


@dataclass(frozen=True, eq=False)
class PreprocessResult:
    y: np.ndarray  # mono float32 at ``sr``, trimmed and (optionally) gain-adjusted
    sr: int  # == config.analysis_sr
    trim_offset_s: float  # original time = time in ``y`` + trim_offset_s
    gain_db: float  # loudness gain applied to ``y`` (0 when not normalising)
    native: np.ndarray | None  # decoded (channels, frames) at native_sr, or None when not needed
    native_sr: int

    @property
    def duration_s(self) -> float:
        return len(self.y) / self.sr


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average ``(channels, frames)`` to a float32 ``(frames,)``; 1-D input passes through."""
    a = np.asarray(audio)
    if a.ndim == 1:
        return a.astype(np.float32, copy=False)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"audio: expected (channels, frames), got shape {a.shape}")
    if a.shape[0] == 1:
        return a[0].astype(np.float32, copy=False)
    return a.mean(axis=0, dtype=np.float32)


def resample(y: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Resample mono ``(frames,)`` or ``(channels, frames)`` float audio with soxr (HQ)."""
    if sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {sr} -> {target_sr}")
    y = np.asarray(y)
    if y.dtype != np.float32 and y.dtype != np.float64:
        y = y.astype(np.float32)
    if sr == target_sr:
        return y
    if y.ndim == 1:
        return soxr.resample(y, sr, target_sr, quality="HQ")
    return soxr.resample(y.T, sr, target_sr, quality="HQ").T  # soxr takes (frames, channels)


class MonoResampler:
    """The streaming twin of ``resample(to_mono(audio), sr, target_sr)``, equal to it sample for sample.

    Feed it float32 ``(frames, channels)`` blocks in order with :meth:`push`;
    :meth:`finish` returns the mono signal at ``target_sr``. Only the result
    (grown in place) and one block are held, never the decoded whole.
    ``expected_frames`` (at ``sr``) sizes the result up front; any estimate works.
    """

    def __init__(self, sr: int, target_sr: int, expected_frames: int = 0):
        if sr <= 0 or target_sr <= 0:
            raise ValueError(f"sample rates must be positive, got {sr} -> {target_sr}")
        self._stream = None if sr == target_sr else soxr.ResampleStream(sr, target_sr, 1, dtype="float32",
                                                                         quality="HQ")
        capacity = math.ceil(max(0, int(expected_frames)) * target_sr / sr) + 64
        self._out = np.empty(capacity, dtype=np.float32)
        self._n = 0
        self._done = False

    def push(self, block: np.ndarray) -> None:
        """Mix one ``(frames, channels)`` block to mono (as :func:`to_mono`) and resample it."""
        if self._done:
            raise RuntimeError("MonoResampler: push after finish")
        b = np.asarray(block)
        if b.ndim != 2 or b.shape[1] == 0:
            raise ValueError(f"block: expected (frames, channels), got shape {b.shape}")
        mono = to_mono(b.T)
        if self._stream is not None:
            mono = self._stream.resample_chunk(np.ascontiguousarray(mono), last=False)
        self._append(mono)

    def finish(self) -> np.ndarray:
        """The whole mono signal at ``target_sr`` (float32, 1-D); the resampler cannot be fed after this."""
        if not self._done:
            if self._stream is not None:
                self._append(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
            self._done = True
            self._out.resize(self._n, refcheck=False)  # a realloc: shrinking never copies
        return self._out

    def _append(self, chunk: np.ndarray) -> None:
        n = len(chunk)
        if self._n + n > len(self._out):
            grow = max(len(self._out) // 4, n, 1 << 16)
            self._out.resize(len(self._out) + grow, refcheck=False)
        self._out[self._n : self._n + n] = chunk
        self._n += n


def integrated_loudness(y: np.ndarray, sr: int) -> float:
    """BS.1770 integrated loudness in LUFS; -inf for silence or audio shorter than one 0.4 s block."""
    if len(y) <= int(_BS1770_BLOCK_S * sr):
        return -math.inf
    from core.pipeline.features import bs1770_loudness

    return bs1770_loudness(np.asarray(y), sr)  # pyloudnorm's figure, in bounded memory


def normalize_loudness(y: np.ndarray, sr: int, target_lufs: float) -> tuple[np.ndarray, float]:
    """Scale mono *y* to *target_lufs*; returns ``(y, gain_db)``. Silence is left alone.

    Samples may exceed 1.0 afterwards: analysis works on floats, so nothing is clipped.
    """
    loudness = integrated_loudness(y, sr)
    if not math.isfinite(loudness):
        return y, 0.0
    gain_db = float(target_lufs) - loudness
    return (y * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32, copy=False), gain_db


def trim_silence(y: np.ndarray, sr: int, threshold_dbfs: float) -> tuple[np.ndarray, float]:
    """Cut leading and trailing silence from mono *y*; returns ``(view, offset_s)``.

    A 10 ms window counts as sound when its RMS reaches *threshold_dbfs*. If
    nothing does, *y* comes back whole (offset 0): rejecting silence is ingest's job.
    """
    n = len(y)
    win = max(1, round(sr * TRIM_WINDOW_S))
    whole = n // win
    frames = y[: whole * win].reshape(whole, win)
    energy = np.einsum("ij,ij->i", frames, frames, dtype=np.float64) / win
    if n > whole * win:
        tail = np.asarray(y[whole * win :], dtype=np.float64)
        energy = np.append(energy, np.mean(tail * tail))
    loud = np.flatnonzero(energy >= 10.0 ** (threshold_dbfs / 10.0))
    if loud.size == 0:
        return y, 0.0
    start, end = int(loud[0]) * win, min(n, (int(loud[-1]) + 1) * win)
    return y[start:end], start / sr


def preprocess(audio: np.ndarray, sr: int, config: PipelineConfig) -> PreprocessResult:
    """Decoded ``(channels, frames)`` audio -> the mono analysis signal (see module doc)."""
    native = None
    if config.needs_native_audio:
        native = audio if np.ndim(audio) == 2 else np.asarray(audio)[np.newaxis, :]
    target = config.analysis_sr
    y = resample(to_mono(audio), sr, target)
    offset = 0.0
    if config.trim_silence:
        y, offset = trim_silence(y, target, config.silence_threshold_dbfs)
    if len(y) / target < config.min_duration_s:
        raise InputError(
            f"too short: {len(y) / target:.2f} s of sound above {config.silence_threshold_dbfs:g} dBFS "
            f"(the minimum is {config.min_duration_s:g} s)",
            kind=ErrorKind.INPUT_EMPTY,
        )
    gain_db = 0.0
    if config.normalize_loudness:
        y, gain_db = normalize_loudness(y, target, config.target_lufs)
    if native is not None and np.shares_memory(y, native):
        y = y.copy()  # y must never alias the native audio a later stage reads
    y = np.ascontiguousarray(y, dtype=np.float32)
    return PreprocessResult(y=y, sr=target, trim_offset_s=offset, gain_db=gain_db, native=native, native_sr=sr)


__all__ = [
    "MonoResampler",
    "PreprocessResult",
    "TRIM_WINDOW_S",
    "integrated_loudness",
    "normalize_loudness",
    "preprocess",
    "resample",
    "to_mono",
    "trim_silence",
]
