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

Memory: everything here runs over blocks (of samples or of frames), so
beyond its inputs and results a long song costs a few megabytes of
temporaries, never a signal- or spectrogram-sized copy. The one big array is
the STFT magnitude (float32, about twice the signal).
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
_FEATURE_BLOCK = 1024  # frames per block for the per-frame spectral features (float64 temporaries: ~8 MB each)
_MEL_BLOCK = 4096  # frames per block of mel-sized work (BLAS rounds by block shape: keep it, keep the figures)
_SAMPLE_BLOCK = 1 << 20  # samples per block for whole-signal sums (levels, loudness)


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


def _padded(y: np.ndarray, lo: int, hi: int, pad: int, edge: bool = False) -> np.ndarray:
    """``np.pad(y, (pad, pad), mode)[lo:hi]`` (zeros, or ``edge`` values) without padding all of ``y``.

    A view of ``y`` when the range needs no padding; a small copy at the ends.
    """
    n = len(y)
    a, b = lo - pad, hi - pad  # the range in y's own indices
    if 0 <= a and b <= n:
        return y[a:b]
    inner = y[min(max(a, 0), n) : max(min(b, n), 0)]
    before, after = max(0, min(b, 0) - a), max(0, b - max(a, n))
    if edge:
        return np.concatenate([np.full(before, y[0], dtype=y.dtype), inner, np.full(after, y[-1], dtype=y.dtype)])
    return np.concatenate([np.zeros(before, dtype=y.dtype), inner, np.zeros(after, dtype=y.dtype)])


def _frame_blocks(n_samples: int, frame_length: int, hop_length: int, pad: int,
                  block: int = _FEATURE_BLOCK) -> tuple[int, list[tuple[int, int]]]:
    """Frame count of the ``pad``-padded signal and ``(first, stop)`` frame blocks over it."""
    n_frames = 1 + (n_samples + 2 * pad - frame_length) // hop_length
    return max(n_frames, 0), [(a, min(a + block, n_frames)) for a in range(0, max(n_frames, 0), block)]


def stft_magnitude(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``abs(librosa.stft(y, n_fft, hop_length))``: periodic Hann window, centred frames, zero padding.

    Frames are cut from ``y`` block by block: only the result and one block of
    frames are held (no padded copy of the signal).
    """
    window = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    x = np.asarray(y, dtype=np.float32)
    half = n_fft // 2
    if len(x) + 2 * half < n_fft:
        raise ValueError(f"stft_magnitude: {len(x)} samples are too few for one frame of n_fft={n_fft}")
    n_frames, blocks = _frame_blocks(len(x), n_fft, hop_length, half, _BLOCK_FRAMES)
    out = np.empty((1 + n_fft // 2, n_frames), dtype=np.float32)
    for start, stop in blocks:
        seg = _padded(x, start * hop_length, (stop - 1) * hop_length + n_fft, half)
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop_length] * window
        out[:, start:stop] = np.abs(scipy.fft.rfft(frames, axis=1)).T
    return out


def compute_spectra(y: np.ndarray, sr: int, n_fft: int, hop_length: int, n_mels: int) -> Spectra:
    """One STFT and its mel power spectrogram (librosa's Slaney mel bank)."""
    return spectra_from_magnitude(stft_magnitude(y, n_fft, hop_length), sr, n_fft, hop_length, n_mels)


def spectra_from_magnitude(magnitude: np.ndarray, sr: int, n_fft: int, hop_length: int, n_mels: int) -> Spectra:
    """:func:`compute_spectra` for an STFT magnitude already taken (the samples may be gone by now)."""
    from librosa.core.convert import mel_frequencies
    from librosa.filters import mel

    mel_basis = mel(sr=sr, n_fft=n_fft, n_mels=n_mels, dtype=np.float32)
    mel_power = np.empty((n_mels, magnitude.shape[1]), dtype=np.float32)
    for cols in _blocks(magnitude.shape[1], _MEL_BLOCK):
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
    out, prev = None, None
    for cols in _blocks(n, _MEL_BLOCK):  # blockwise: the values of one pass, to float32 rounding
        logm = np.log1p(_ONSET_GAMMA * mel_power[:, cols] / peak)
        flux = np.diff(logm, axis=1, prepend=0.0 if prev is None else prev)
        prev = logm[:, -1:]
        np.maximum(0.0, flux, out=flux)
        mean = flux.mean(axis=0)
        if out is None:
            out = np.empty(n, dtype=mean.dtype)
        out[cols] = mean
    return out


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


def _blocks(n: int, size: int = _FEATURE_BLOCK) -> list[slice]:
    """Column slices of at most ``size`` frames: per-frame work in bounded memory."""
    return [slice(a, min(a + size, n)) for a in range(0, n, size)] or [slice(0, 0)]


def frame_features(y: np.ndarray | None, spectra: Spectra, n_mfcc: int, tuning: float, *,
                   rms: np.ndarray | None = None, zcr: np.ndarray | None = None) -> FrameFeatures:
    """Every frame feature from ``spectra`` (plus ZCR and RMS from the samples).

    Per-frame features run over blocks of frames, so the temporaries of a
    long song stay small; the result is the same as in one pass. ``rms`` and
    ``zcr`` may be given already computed (:func:`frame_rms`,
    :func:`zero_crossing_rate` on the same grid); ``y`` is only read for those not given.
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
    if (rms is None or zcr is None) and y is None:
        raise ValueError("frame_features needs the samples y unless rms and zcr are given")
    return FrameFeatures(
        sr=sr, hop_length=hop, n_fft=n_fft,
        rms=_fit(frame_rms(y, n_fft, hop) if rms is None else np.asarray(rms), n),
        centroid=centroid, bandwidth=bandwidth, rolloff=rolloff, flatness=flatness,
        contrast=_db(peak) - _db(valley),
        zcr=_fit(zero_crossing_rate(y, n_fft, hop) if zcr is None else np.asarray(zcr), n),
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


def mfcc(mel_power: np.ndarray, n_mfcc: int, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    """MFCCs: orthonormal DCT-II of the mel spectrogram in dB (80 dB range), as librosa.

    The dB scale is built in one array (in place); the DCT runs over blocks of
    frames and keeps only the ``n_mfcc`` rows wanted.
    """
    db = np.maximum(amin, mel_power)  # == _db(mel_power), without its temporaries
    np.log10(db, out=db)
    db *= 10.0
    if db.size:
        np.maximum(db, db.max() - top_db, out=db)
    n = db.shape[1]
    first = scipy.fft.dct(db[:, :0], axis=0, type=2, norm="ortho")  # the output dtype, for any input
    out = np.empty((min(n_mfcc, db.shape[0]), n), dtype=first.dtype)
    for cols in _blocks(n):
        out[:, cols] = scipy.fft.dct(db[:, cols], axis=0, type=2, norm="ortho")[:n_mfcc]
    return out


def frame_rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """RMS of each centred frame (zero padded), as ``librosa.feature.rms(y=...)``.

    Blocks of frames, each from a running sum of squares (float64) over its
    own samples: memory stays bounded however long ``y`` is.
    """
    x = np.asarray(y)
    half = frame_length // 2
    n_frames, blocks = _frame_blocks(len(x), frame_length, hop_length, half)
    out = np.empty(n_frames)
    for a, b in blocks:
        seg = _padded(x, a * hop_length, (b - 1) * hop_length + frame_length, half)
        energy = np.square(seg, dtype=np.float64)
        np.cumsum(energy, out=energy)
        starts = np.arange(b - a) * hop_length
        before = np.where(starts > 0, energy[np.maximum(starts - 1, 0)], 0.0)
        out[a:b] = np.sqrt(np.maximum(0.0, energy[starts + frame_length - 1] - before) / frame_length)
    return out


def zero_crossing_rate(y: np.ndarray, frame_length: int, hop_length: int, threshold: float = 1e-10) -> np.ndarray:
    """Zero crossings per sample in each centred frame, as ``librosa.feature.zero_crossing_rate``.

    Counted over blocks of frames (edge padding, as librosa), in bounded memory.
    """
    x = np.asarray(y)
    if x.size == 0:
        raise ValueError("zero_crossing_rate: y is empty")
    half = frame_length // 2
    n_frames, blocks = _frame_blocks(len(x), frame_length, hop_length, half)
    if n_frames < 1:
        return np.zeros(0)
    out = np.empty(n_frames)
    for a, b in blocks:
        negative = _padded(x, a * hop_length, (b - 1) * hop_length + frame_length, half, edge=True) < -threshold
        # librosa counts |x| <= threshold as 0, and 0 as positive
        crossings = np.zeros(len(negative), dtype=np.int32)
        np.cumsum(negative[1:] != negative[:-1], out=crossings[1:])
        starts = np.arange(b - a) * hop_length
        out[a:b] = (crossings[starts + frame_length - 1] - crossings[starts]) / frame_length
    return out


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
    x = np.asarray(y)
    peak = rms = _SILENCE_DBFS
    if x.size:  # over blocks: no signal-sized temporaries
        top, energy = 0.0, 0.0
        for a in range(0, len(x), _SAMPLE_BLOCK):
            block = x[a : a + _SAMPLE_BLOCK]
            top = max(top, float(block.max()), -float(block.min()))
            energy += float(np.square(block, dtype=np.float64).sum())
        peak, rms = _dbfs(top), _dbfs(math.sqrt(energy / x.size))
    if len(x) < 0.4 * sr:  # pyloudnorm's own limit
        return Levels(None, f"shorter than the 400 ms BS.1770 gating block ({len(x) / sr * 1000:.0f} ms)", peak, rms)
    lufs = bs1770_loudness(x, sr)
    if not math.isfinite(lufs):
        return Levels(None, "silent: every 400 ms block is below the -70 LUFS gate", peak, rms)
    return Levels(lufs, "", peak, rms)


def bs1770_loudness(y: np.ndarray, sr: int) -> float:
    """Integrated loudness (LUFS) of mono ``y``: ``pyloudnorm.Meter(sr).integrated_loudness(y)``, streamed.

    The same K-weighting filters (run over blocks with their state carried
    over), the same 400 ms blocks with 75 % overlap and the same gating, so
    the same figure; but only a block of filtered signal is held at a time
    (pyloudnorm filters a float64 copy of the whole signal). -inf for
    silence; ValueError (as pyloudnorm) when ``y`` is shorter than one block.
    """
    from pyloudnorm.iirfilter import IIRfilter

    x = np.asarray(y)
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"bs1770_loudness: expected 1-D float audio, got {x.dtype} {x.shape}")
    block_s, step = 0.400, 1.0 - 0.75  # pyloudnorm's defaults, in its arithmetic
    n = len(x)
    if n < block_s * sr:
        raise ValueError("Audio must have length greater than the block size.")
    # BS.1770 K-weighting, as pyloudnorm's Meter builds it: a high shelf, then a high pass
    stages = [IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")]
    coeffs = [(f.b, f.a, f.passband_gain) for f in stages]
    states = [np.zeros(max(len(b), len(a)) - 1) for b, a, _ in coeffs]
    n_blocks = int(np.round(((n / sr - block_s) / (block_s * step)))) + 1
    bounds = [(int(block_s * (j * step) * sr), int(block_s * (j * step + 1) * sr)) for j in range(n_blocks)]
    z = np.zeros(n_blocks)
    kept = np.zeros(0, dtype=x.dtype)  # filtered samples from ``kept_from`` on
    kept_from, j = 0, 0
    for a in range(0, n, _SAMPLE_BLOCK):
        chunk = x[a : a + _SAMPLE_BLOCK]
        for k, (b, a_, gain) in enumerate(coeffs):
            filtered, states[k] = scipy.signal.lfilter(b, a_, chunk, zi=states[k])
            chunk = (gain * filtered).astype(x.dtype, copy=False)  # pyloudnorm writes back into its copy
        kept = np.concatenate([kept, chunk])
        end = a + len(chunk)
        while j < n_blocks and (bounds[j][1] <= end or end == n):
            lo, hi = bounds[j]
            z[j] = (1.0 / (block_s * sr)) * np.sum(np.square(kept[lo - kept_from : min(hi, n) - kept_from]))
            j += 1
        drop = (bounds[j][0] if j < n_blocks else end) - kept_from
        kept, kept_from = kept[drop:], kept_from + drop
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # means of no blocks, as in pyloudnorm
        level = -0.691 + 10.0 * np.log10(z)
        absolute = level >= -70.0
        relative = -0.691 + 10.0 * np.log10(np.mean(z[absolute])) - 10.0
        gated = float(np.nan_to_num(np.mean(z[(level > relative) & (level > -70.0)])))
        return float(-0.691 + 10.0 * np.log10(gated))
