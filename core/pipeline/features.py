"""Frame-level features from one STFT, and song-level levels (LUFS, peak, RMS).

:func:`compute_spectra` takes the one STFT of a song and its mel power
spectrogram; :func:`frame_features` derives every frame feature from those
(spectral shape, flatness, contrast, onset strength, chroma, MFCC) plus ZCR
and RMS from the samples on the same frame grid. Frames are centred: frame
``i`` sits at ``i * hop / sr`` seconds, so per-bar features are slices of
these arrays (:meth:`FrameFeatures.frames_between`).

The formulas are librosa's (same definitions, same defaults), written in
numpy: librosa's versions of these kernels import numba code that is
compiled on first use in every process (tens of seconds on a busy machine)
and cached on disk, where workers compiling at once can corrupt the cache
and crash. Only its pure-Python mel filter bank is used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal

from core.pipeline.tonal import chroma_filterbank, chroma_from_power

_ONSET_GAMMA = 1000.0  # onset compression: log(1 + GAMMA * mel / peak)
_LOW_BAND_HZ = 150.0  # kick drum and bass: the band that marks downbeats
_SILENCE_DBFS = -120.0  # floor for levels of silent signals
_BLOCK_FRAMES = 1024  # STFT frames transformed at once (bounds the temporary memory)
_FEATURE_BLOCK = 4096  # frames per block for the per-frame spectral features


@dataclass(frozen=True, eq=False)
class Spectra:
    """The one STFT of a song and what is derived from it directly."""

    magnitude: np.ndarray  # |STFT|, float32, shape (1 + n_fft // 2, n_frames)
    mel_power: np.ndarray  # mel power spectrogram, shape (n_mels, n_frames)
    mel_hz: np.ndarray  # centre frequency of each mel band
    sr: int
    n_fft: int
    hop_length: int

    @property
    def n_frames(self) -> int:
        return self.magnitude.shape[1]

    @property
    def fft_hz(self) -> np.ndarray:
        return np.arange(self.magnitude.shape[0]) * (self.sr / self.n_fft)


def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``abs(librosa.stft(y, n_fft, hop_length))``: periodic Hann window, centred frames, zero padding."""
    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    padded = np.pad(np.asarray(y, dtype=np.float32), (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    out = np.empty((1 + n_fft // 2, len(frames)), dtype=np.float32)
    for start in range(0, len(frames), _BLOCK_FRAMES):
        block = frames[start : start + _BLOCK_FRAMES] * window
        out[:, start : start + len(block)] = np.abs(scipy.fft.rfft(block, axis=1)).T
    return out


def compute_spectra(y: np.ndarray, sr: int, n_fft: int, hop_length: int, n_mels: int) -> Spectra:
    """One STFT and its mel power spectrogram (librosa's Slaney mel bank)."""
    from librosa.core.convert import mel_frequencies
    from librosa.filters import mel

    magnitude = stft_magnitude(y, n_fft, hop_length)
    mel_basis = mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float32)
    mel_power = np.empty((n_mels, magnitude.shape[1]), dtype=np.float32)
    for cols in _blocks(magnitude.shape[1]):
        mel_power[:, cols] = mel_basis @ np.square(magnitude[:, cols])
    mel_hz = mel_frequencies(n_mels=n_mels, fmin=0.0, fmax=sr / 2.0)
    return Spectra(magnitude, mel_power, mel_hz, int(sr), n_fft, hop_length)


def onset_envelope(mel_power: np.ndarray) -> np.ndarray:
    """Spectral flux of the log-compressed mel spectrogram, one value per frame.

    Compression is ``log(1 + 1000 * mel / peak)``: loud hits dominate, faint
    ones (a hi-hat, a reverb tail) count less than in librosa's 80 dB dB-flux.
    Unlike librosa the flux is not shifted: it stays on the frame whose
    window first holds the hit well, like every other frame feature (see
    :func:`onset_delay_frames` for hit times). The frame before the first
    counts as silence, so a hit at t=0 is an onset.
    """
    n = mel_power.shape[1]
    peak = float(mel_power.max()) if mel_power.size else 0.0
    if n == 0 or peak <= 0:
        return np.zeros(n)
    logm = np.log1p(_ONSET_GAMMA * mel_power / peak)
    return np.maximum(0.0, np.diff(logm, axis=1, prepend=0.0)).mean(axis=0)


def pick_onsets(env: np.ndarray, fps: float, delta: float = 0.07) -> np.ndarray:
    """Onset frames, by ``librosa.onset.onset_detect``'s peak picking (in numpy).

    A frame is an onset if it is the maximum of the preceding 30 ms, at
    least ``delta`` above the mean of the surrounding +-100 ms (on the
    envelope scaled to 0..1), and more than 30 ms after the previous onset.
    """
    x = np.asarray(env, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return np.zeros(0, dtype=int)
    x = x - x.min()
    if x.max() <= 0:
        return np.zeros(0, dtype=int)
    x = x / x.max()
    pre_max = int(0.03 * fps)
    pre_avg, post_avg = int(0.10 * fps), int(0.10 * fps) + 1
    wait = int(0.03 * fps)
    n = len(x)
    idx = np.arange(n)
    padded = np.pad(x, (pre_max, 0), constant_values=-np.inf)
    windowed_max = np.lib.stride_tricks.sliding_window_view(padded, pre_max + 1).max(axis=1)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    lo, hi = np.maximum(0, idx - pre_avg), np.minimum(n, idx + post_avg)
    windowed_mean = (csum[hi] - csum[lo]) / (hi - lo)
    onsets, last = [], -np.inf
    for c in np.flatnonzero((x >= windowed_max) & (x >= windowed_mean + delta)):
        if c - last > wait:
            onsets.append(int(c))
            last = c
    return np.asarray(onsets, dtype=int)


def onset_delay_frames(n_fft: int, hop_length: int) -> float:
    """How far (in frames) a hit lies, on average, after the centre of its strongest-flux frame.

    The flux of a hit peaks in the first centred frame that holds it beyond
    the last quarter of its window, i.e. with the hit between
    ``n_fft / 4 - hop`` and ``n_fft / 4`` samples after the frame centre.
    """
    return n_fft / (4.0 * hop_length) - 0.5


@dataclass(frozen=True, eq=False)
class FrameFeatures:
    """Frame-level features on a shared time grid; slice them, never recompute."""

    sr: int
    hop_length: int
    n_fft: int
    rms: np.ndarray  # linear RMS of each frame (time domain, frame = n_fft)
    centroid: np.ndarray  # Hz
    bandwidth: np.ndarray  # Hz
    rolloff: np.ndarray  # Hz (85 % of the energy below)
    flatness: np.ndarray  # 0..1
    contrast: np.ndarray  # dB, shape (n_bands + 1, n_frames)
    zcr: np.ndarray  # zero crossings per sample
    onset: np.ndarray  # onset strength (log-mel flux)
    low_band: np.ndarray  # magnitude of the band below 150 Hz (kick, bass), arbitrary units
    chroma: np.ndarray  # shape (12, n_frames), C first, each frame max-normalised
    mfcc: np.ndarray  # shape (n_mfcc, n_frames)

    @property
    def n_frames(self) -> int:
        return len(self.rms)

    @property
    def times(self) -> np.ndarray:
        """Centre time (s) of every frame."""
        return np.arange(self.n_frames) * (self.hop_length / self.sr)

    def frames_between(self, start_s: float, end_s: float) -> slice:
        """The frames whose centres fall in ``[start_s, end_s)``."""
        fps = self.sr / self.hop_length
        lo = min(self.n_frames, max(0, int(math.ceil(start_s * fps - 1e-9))))
        hi = min(self.n_frames, max(lo, int(math.ceil(end_s * fps - 1e-9))))
        return slice(lo, hi)


def _blocks(n: int) -> list[slice]:
    """Column slices of at most ``_FEATURE_BLOCK`` frames: per-frame work in bounded memory."""
    return [slice(a, min(a + _FEATURE_BLOCK, n)) for a in range(0, n, _FEATURE_BLOCK)] or [slice(0, 0)]


def frame_features(y: np.ndarray, spectra: Spectra, n_mfcc: int, tuning: float) -> FrameFeatures:
    """Every frame feature from ``spectra`` (plus ZCR and RMS from the samples).

    Per-frame features run over blocks of frames, so the temporaries of a
    long song stay small; the result is the same as in one pass.
    """
    S, sr, n_fft, hop = spectra.magnitude, spectra.sr, spectra.n_fft, spectra.hop_length
    n, freq, n_bands = spectra.n_frames, spectra.fft_hz, contrast_bands(spectra.sr)
    centroid, bandwidth, rolloff, flatness = (np.empty(n) for _ in range(4))
    peak, valley = np.empty((n_bands + 1, n)), np.empty((n_bands + 1, n))
    chroma = np.empty((12, n), dtype=np.float32)
    chroma_fb = chroma_filterbank(sr, n_fft, tuning)
    for cols in _blocks(n):
        block = S[:, cols]
        centroid[cols], bandwidth[cols], rolloff[cols] = spectral_shape(block, freq)
        flatness[cols] = spectral_flatness(block)
        peak[:, cols], valley[:, cols] = contrast_levels(block, freq, n_bands)
        chroma[:, cols] = chroma_from_power(np.square(block), sr, n_fft, tuning, chroma_fb)
    low = spectra.mel_hz < _LOW_BAND_HZ
    return FrameFeatures(
        sr=sr, hop_length=hop, n_fft=n_fft,
        rms=_fit(frame_rms(y, n_fft, hop), n),
        centroid=centroid, bandwidth=bandwidth, rolloff=rolloff, flatness=flatness,
        contrast=_db(peak) - _db(valley),
        zcr=_fit(zero_crossing_rate(y, n_fft, hop), n),
        onset=onset_envelope(spectra.mel_power),
        low_band=np.sqrt(spectra.mel_power[low].sum(axis=0, dtype=np.float64)),
        chroma=chroma,
        mfcc=mfcc(spectra.mel_power, n_mfcc),
    )


# -- spectral features (librosa's definitions) -------------------------------

def spectral_shape(S: np.ndarray, freq: np.ndarray,
                   roll_percent: float = 0.85) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, bandwidth (p=2) and roll-off per frame, as librosa defines them.

    One pass shares the per-frame normalisation that librosa's three
    functions would each redo. Silent frames get 0 for all three.
    """
    f = freq.astype(S.dtype)  # a float64 vector would make numpy copy S to float64
    total = S.sum(axis=0, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    centroid = (f @ S) / safe
    # sum S (f - c)^2 = sum S f^2 - c^2 sum S, for c the centroid
    spread = (np.square(f) @ S) / safe - np.square(centroid)
    bandwidth = np.sqrt(np.maximum(spread, 0.0))
    cumulative = np.cumsum(S, axis=0)
    below = (cumulative < roll_percent * cumulative[-1:, :]).sum(axis=0)  # cumsum is monotonic
    rolloff = freq[np.minimum(below, len(freq) - 1)].astype(np.float64)
    silent = total <= 0
    for a in (centroid, bandwidth, rolloff):
        a[silent] = 0.0
    return centroid, bandwidth, rolloff


def spectral_flatness(S: np.ndarray, amin: float = 1e-10) -> np.ndarray:
    """Geometric over arithmetic mean of the power spectrum, per frame (0..1)."""
    power = np.maximum(amin, np.square(S, dtype=np.float64))  # float64: the log-mean of tiny powers
    return np.exp(np.mean(np.log(power), axis=0)) / np.mean(power, axis=0)


def contrast_bands(sr: int, fmin: float = 200.0, wanted: int = 6) -> int:
    """How many octave bands above ``fmin`` fit below Nyquist (librosa's rule)."""
    fit = int(math.floor(math.log2((sr / 2.0) / fmin) - 1e-9)) + 1
    return max(1, min(wanted, fit))


def _db(x: np.ndarray, amin: float = 1e-10, top_db: float | None = 80.0) -> np.ndarray:
    """librosa's ``power_to_db`` with ``ref=1``."""
    d = 10.0 * np.log10(np.maximum(amin, x))
    return np.maximum(d, d.max() - top_db) if top_db is not None and d.size else d


def spectral_contrast(S: np.ndarray, freq: np.ndarray, n_bands: int = 6) -> np.ndarray:
    """Peak-minus-valley level (dB) in octave bands, librosa's ``spectral_contrast``."""
    peak, valley = contrast_levels(S, freq, n_bands)
    return _db(peak) - _db(valley)


def contrast_levels(S: np.ndarray, freq: np.ndarray, n_bands: int = 6, fmin: float = 200.0,
                    quantile: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Mean magnitude of the top and bottom ``quantile`` of each octave band, per frame."""
    octa = np.zeros(n_bands + 2)
    octa[1:] = fmin * (2.0 ** np.arange(0, n_bands + 1))
    valley = np.zeros((n_bands + 1, S.shape[1]))
    peak = np.zeros_like(valley)
    for k, (f_low, f_high) in enumerate(zip(octa[:-1], octa[1:])):
        band = (freq >= f_low) & (freq <= f_high)
        idx = np.flatnonzero(band)
        if k > 0:
            band[idx[0] - 1] = True
        if k == n_bands:
            band[idx[-1] + 1 :] = True
        sub = S[band]
        if k < n_bands:
            sub = sub[:-1]
        m = max(1, int(np.rint(quantile * np.sum(band))))
        ordered = np.sort(sub, axis=0)
        valley[k] = ordered[:m].mean(axis=0)
        peak[k] = ordered[-m:].mean(axis=0)
    return peak, valley


def mfcc(mel_power: np.ndarray, n_mfcc: int) -> np.ndarray:
    """MFCCs: orthonormal DCT-II of the mel spectrogram in dB (80 dB range), as librosa."""
    return scipy.fft.dct(_db(mel_power), axis=0, type=2, norm="ortho")[:n_mfcc]


def frame_rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of each centred frame (zero padded), as ``librosa.feature.rms(y=...)``."""
    energy = np.pad(np.asarray(y, dtype=np.float64), (frame_length // 2, frame_length // 2))
    np.square(energy, out=energy)
    np.cumsum(energy, out=energy)  # in place: one signal-sized array in all
    starts = np.arange(1 + (len(energy) - frame_length) // hop_length) * hop_length
    before = np.where(starts > 0, energy[np.maximum(starts - 1, 0)], 0.0)
    return np.sqrt(np.maximum(0.0, energy[starts + frame_length - 1] - before) / frame_length)


def zero_crossing_rate(y: np.ndarray, frame_length: int, hop_length: int, threshold: float = 1e-10) -> np.ndarray:
    """Zero crossings per sample in each centred frame, as ``librosa.feature.zero_crossing_rate``."""
    half = frame_length // 2
    padded = np.pad(np.asarray(y), (half, half), mode="edge")
    negative = padded < -threshold  # librosa counts |x| <= threshold as 0, and 0 as positive
    del padded
    crossings = np.zeros(len(negative), dtype=np.int32)
    np.cumsum(negative[1:] != negative[:-1], out=crossings[1:])
    n_frames = 1 + (len(negative) - frame_length) // hop_length
    if n_frames < 1:
        return np.zeros(0)
    starts = np.arange(n_frames) * hop_length
    return (crossings[starts + frame_length - 1] - crossings[starts]) / frame_length


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Trim or edge-pad a time-domain frame feature to the STFT's frame count."""
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)), mode="edge") if len(x) else np.zeros(n)


# -- song-level levels -------------------------------------------------------

@dataclass(frozen=True)
class Levels:
    """Integrated loudness (BS.1770), sample peak and RMS of a whole song."""

    loudness_lufs: float | None
    loudness_note: str  # why loudness is None, else ""
    peak_dbfs: float
    rms_dbfs: float


def _dbfs(x: float) -> float:
    return 20.0 * math.log10(x) if x > 0 else _SILENCE_DBFS


def measure_levels(y: np.ndarray, sr: int) -> Levels:
    """LUFS with pyloudnorm at the signal's own rate; peak and RMS in dBFS.

    RMS uses ``20*log10(rms)`` (a full-scale sine reads -3.01 dBFS). Inputs
    shorter than BS.1770's 400 ms gating block, or silent (all blocks gated),
    get ``loudness_lufs=None`` and a note saying why.
    """
    import pyloudnorm

    x = np.asarray(y)  # float32 is fine for pyloudnorm and halves its copies of a long song
    peak = _dbfs(float(np.max(np.abs(x)))) if x.size else _SILENCE_DBFS
    rms = _dbfs(float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))) if x.size else _SILENCE_DBFS
    if len(x) < 0.4 * sr:  # pyloudnorm's own limit
        return Levels(None, f"shorter than the 400 ms BS.1770 gating block ({len(x) / sr * 1000:.0f} ms)", peak, rms)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # pyloudnorm warns about clipping; peak_dbfs reports it
        lufs = float(pyloudnorm.Meter(sr).integrated_loudness(x))
    if not math.isfinite(lufs):
        return Levels(None, "silent: every 400 ms block is below the -70 LUFS gate", peak, rms)
    return Levels(lufs, "", peak, rms)
