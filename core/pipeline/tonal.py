"""Tuning, chroma and key.

Tuning comes from the song's STFT, chroma from the same STFT with that
tuning, and the key from the mean chroma: the best of 24 correlations with a
rotated key profile (Temperley's by default; Krumhansl-Kessler and
Albrecht-Shanahan are there too). The runner-up is reported as well: a key
found from mean chroma drifts to the dominant or the relative key in music
that modulates, and the runner-up usually names the other candidate.

Keys are spelled as their key signatures write them (``"Bb major"``, not
``"A# major"``); pitch classes (``PITCH_NAMES``, the chroma columns) keep
sharps, as MIDI note names do.

Tuning and chroma follow librosa (``estimate_tuning``/``piptrack``,
``filters.chroma``/``chroma_stft``) in numpy, without the numba kernels
those import (see ``features``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Tonic of each key by pitch class, spelled from the side of the circle of
# fifths that needs at most 6 accidentals (Bb major: 2 flats, not A#
# major's 10 sharps; G# minor: 5 sharps, not Ab minor's 7 flats). Two keys
# need 6 either way: pitch class 6 major (F# or Gb) and 3 minor (D# or Eb).
# They take the tonic name of their parallel key (F# minor, Eb major), so a
# pitch class is named alike in both modes wherever the signatures allow it.
MAJOR_TONICS = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MINOR_TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")

# Probe-tone profiles, tonic first (C major / C minor).
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "krumhansl": (
        (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
        (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
    ),
    "temperley": (
        (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0),
        (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0),
    ),
    "albrecht": (
        (0.238, 0.006, 0.111, 0.006, 0.137, 0.094, 0.016, 0.214, 0.009, 0.080, 0.008, 0.081),
        (0.220, 0.006, 0.104, 0.123, 0.019, 0.103, 0.012, 0.214, 0.062, 0.022, 0.061, 0.052),
    ),
}

KEY_NAMES = tuple(f"{t} major" for t in MAJOR_TONICS) + tuple(f"{t} minor" for t in MINOR_TONICS)


def estimate_tuning(magnitude: np.ndarray, sr: int, n_fft: int, fmin: float = 150.0, fmax: float = 4000.0,
                    threshold: float = 0.1) -> float:
    """Deviation from A440 in fractions of a semitone, in ``[-0.5, 0.5)``.

    ``librosa.estimate_tuning``'s method on the song's existing STFT: spectral
    peaks between ``fmin`` and ``fmax`` above ``threshold`` x the frame
    maximum, refined by parabolic interpolation; the strongest half of them
    vote in a 1-cent histogram of their distance to the equal-tempered grid.
    0.0 when nothing is pitched.
    """
    S = np.asarray(magnitude)
    if S.ndim != 2 or S.shape[0] < 3 or not np.any(S > 0):
        return 0.0
    bin_hz = sr / n_fft
    lo = max(1, int(np.ceil(fmin / bin_hz)))
    hi = min(S.shape[0] - 1, int(np.ceil(fmax / bin_hz)))
    if hi <= lo:
        return 0.0
    cur, prev, nxt = S[lo:hi], S[lo - 1 : hi - 1], S[lo + 1 : hi + 1]
    floor = threshold * S.max(axis=0)
    rows, cols = np.nonzero((cur > prev) & (cur >= nxt) & (cur > floor))
    if rows.size == 0:
        return 0.0
    c = cur[rows, cols].astype(np.float64)
    p = prev[rows, cols].astype(np.float64)
    x = nxt[rows, cols].astype(np.float64)
    a, b = x + p - 2.0 * c, 0.5 * (x - p)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(b) < np.abs(a), -b / a, 0.0)
    pitch = (lo + rows + shift) * bin_hz
    mag = c + 0.5 * b * shift
    pitch = pitch[(mag >= np.median(mag)) & (pitch > 0)]
    if pitch.size == 0:
        return 0.0
    return pitch_tuning(pitch)


def pitch_tuning(freqs: np.ndarray, resolution: float = 0.01) -> float:
    """The most common deviation of ``freqs`` from the 12-tone A440 grid, in semitones."""
    residual = np.mod(12.0 * np.log2(np.asarray(freqs, dtype=np.float64) / (440.0 / 16)), 1.0)
    residual[residual >= 0.5] -= 1.0
    bins = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / resolution)) + 1)
    counts, edges = np.histogram(residual, bins)
    return float(edges[np.argmax(counts)])


def chroma_filterbank(sr: int, n_fft: int, tuning: float = 0.0, ctroct: float = 5.0,
                      octwidth: float = 2.0) -> np.ndarray:
    """librosa's ``filters.chroma`` (12 bins, C first, L2-normalised columns), shape (12, 1 + n_fft // 2).

    Each FFT bin spreads over the nearby pitch classes with a Gaussian as wide
    as the bin, weighted by a Gaussian over octaves centred on ``ctroct``.
    """
    n_chroma = 12
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / n_chroma)
    frqbins = n_chroma * np.log2(frequencies / (a440 / 16))
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidth = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    D = np.subtract.outer(frqbins, np.arange(n_chroma, dtype=float)).T
    half = np.round(n_chroma / 2)
    D = np.remainder(D + half + 10 * n_chroma, n_chroma) - half
    wts = np.exp(-0.5 * (2 * D / binwidth[None, :]) ** 2)
    norms = np.sqrt(np.sum(wts**2, axis=0, keepdims=True))
    wts = wts / np.where(norms < np.finfo(float).tiny, 1.0, norms)
    wts *= np.exp(-0.5 * (((frqbins / n_chroma - ctroct) / octwidth) ** 2))[None, :]
    wts = np.roll(wts, -3, axis=0)  # start at C, not A
    return np.ascontiguousarray(wts[:, : 1 + n_fft // 2], dtype=np.float32)


def chroma_from_power(power: np.ndarray, sr: int, n_fft: int, tuning: float,
                      filterbank: np.ndarray | None = None) -> np.ndarray:
    """``librosa.feature.chroma_stft(S=power, tuning=...)``: each frame scaled to a maximum of 1.

    ``filterbank`` is :func:`chroma_filterbank` for these settings, when the caller already has it.
    """
    fb = chroma_filterbank(sr, n_fft, tuning) if filterbank is None else filterbank
    raw = fb @ power
    peak = raw.max(axis=0, keepdims=True) if raw.size else raw
    return raw / np.where(peak < np.finfo(raw.dtype).tiny, 1.0, peak)


@dataclass(frozen=True)
class KeyEstimate:
    """The best key, its runner-up and all 24 correlations (``KEY_NAMES`` order)."""

    key: str | None
    score: float  # Pearson correlation of the best key, -1..1
    confidence: float  # (best - runner-up) / best, clipped to 0..1
    runner_up: str | None
    runner_up_score: float
    scores: tuple[float, ...]


def _key_templates(profile: str) -> np.ndarray:
    """24 x 12 matrix of rotated, z-scored profiles (majors then minors)."""
    try:
        major, minor = PROFILES[profile]
    except KeyError:
        raise ValueError(f"key_profile must be one of {sorted(PROFILES)}, got {profile!r}") from None
    rows = [np.roll(np.asarray(p, float), k) for p in (major, minor) for k in range(12)]
    t = np.array(rows)
    t -= t.mean(axis=1, keepdims=True)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def estimate_key(chroma_profile: np.ndarray, profile: str = "krumhansl") -> KeyEstimate:
    """Correlate a 12-bin chroma profile (C first) with the 24 key templates."""
    c = np.asarray(chroma_profile, dtype=float).reshape(12)
    templates = _key_templates(profile)
    c = c - c.mean()
    norm = np.linalg.norm(c)
    if not np.isfinite(norm) or norm < 1e-9:
        return KeyEstimate(None, 0.0, 0.0, None, 0.0, tuple(0.0 for _ in KEY_NAMES))
    r = templates @ (c / norm)
    order = np.argsort(r)[::-1]
    best, second = int(order[0]), int(order[1])
    gap = (r[best] - r[second]) / r[best] if r[best] > 0 else 0.0
    return KeyEstimate(
        key=KEY_NAMES[best],
        score=float(r[best]),
        confidence=float(np.clip(gap, 0.0, 1.0)),
        runner_up=KEY_NAMES[second],
        runner_up_score=float(r[second]),
        scores=tuple(float(v) for v in r),
    )


def key_profile_from_chroma(chroma: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean chroma over frames, weighted (e.g. by frame RMS) so near-silent frames count little."""
    if chroma.shape[-1] == 0:
        return np.zeros(12)
    if weights is None or not np.any(weights > 0):
        return chroma.mean(axis=1)
    w = np.asarray(weights, float)[: chroma.shape[1]]
    return (chroma[:, : len(w)] * w).sum(axis=1) / w.sum()
