"""Tempo, beats, downbeats and bars from onset envelopes.

1. Periodicity: the autocorrelation of the onset envelope (unbiased, so long
   lags are not penalised), lightly smoothed against frame quantisation.
2. Metrical level, with no tempo prior inside ``[tempo_min, tempo_max]``:
   start from the strongest periodicity in range and step down one level at
   a time (1/2, else 1/3; 1/4 on the first step) while the faster level is
   still a clear peak (>= ``LEVEL_RATIO`` of the level it divides). A click
   or a backbeat at 180 BPM keeps its beat even though the bar-level lag is
   stronger; a groove at 60-95 BPM does not drop to its eighth-note hi-hats,
   bass line or chords.
3. Beats: Ellis's dynamic-programming tracker (the algorithm of
   ``librosa.beat.beat_track``, in numpy with a fractional period, which
   also spares every worker process librosa's numba compile of it); beats
   missing at either end are restored while the onset envelope shows a
   clear hit one period further (a quiet intro counts, a noise tail not).
4. Tempo refined from the beats (a line fitted to beat time vs beat index,
   skipped beats counted), since librosa's tempo is quantised to whole
   frame lags.
5. Downbeats: the beat phase (mod ``beats_per_bar``) whose beats carry the
   most accent (by default: low-band level, i.e. kick and bass, frame RMS,
   and how much the harmony changes at the beat, each relative to its mean
   over the beats); bars are groups of ``beats_per_bar`` beats from each
   downbeat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_PERIODICITY = 0.08  # weaker autocorrelation peaks (noise, free-time music) mean "no pulse"
LEVEL_RATIO = 0.5  # a faster metrical level must reach this share of the level it divides
HARMONY_WEIGHT = 3.0  # a chord change (cosine distance ~0.3-0.6 between beats) counts about one accent curve
PHASE_TIE = 0.95  # phases scoring within 5 % of the best count as tied: the earliest wins
_EDGE_WINDOW = 0.15  # fraction of a period searched around a predicted edge beat
_EDGE_CONTRAST = 5.0  # an edge hit must stand this many times above the median envelope around it
_TRIM_STRENGTH = 0.1  # end beats weaker than this share of the median beat are dropped


@dataclass(frozen=True)
class TempoAlternative:
    """The half or double of the reported tempo and how plausible it is (0..1)."""

    bpm: float
    relation: str  # "half" or "double"
    score: float

    def to_dict(self) -> dict:
        return {"bpm": float(self.bpm), "relation": self.relation, "score": float(self.score)}


@dataclass(frozen=True)
class Bar:
    """One bar: ``[start_s, end_s)`` and how many tracked beats it holds."""

    index: int
    start_s: float
    end_s: float
    n_beats: int


@dataclass(frozen=True, eq=False)
class Rhythm:
    """What :func:`analyze_rhythm` found; beat and downbeat times in seconds."""

    tempo_bpm: float  # 0.0 when there is no pulse
    tempo_confidence: float  # 0..1
    alternatives: tuple[TempoAlternative, ...]
    beat_times: np.ndarray
    downbeat_times: np.ndarray
    bars: tuple[Bar, ...]

    @classmethod
    def none(cls) -> "Rhythm":
        """No pulse found (silence, a single sustained tone, noise)."""
        empty = np.zeros(0)
        return cls(0.0, 0.0, (), empty, empty, ())


def periodicity(onset: np.ndarray, max_lag: int) -> np.ndarray:
    """Normalised, unbiased autocorrelation of ``onset`` for lags ``0..max_lag``."""
    x = np.asarray(onset, float) - float(np.mean(onset))
    n = len(x)
    max_lag = min(max_lag, n - 1)
    if n < 4 or max_lag < 2:
        return np.zeros(max(max_lag + 1, 1))
    size = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.fft.rfft(x, size)
    ac = np.fft.irfft(spec * np.conj(spec), size)[: max_lag + 1]
    ac /= n - np.arange(max_lag + 1)
    # 3-tap smoothing (ac is symmetric around lag 0) spreads a period that
    # falls between two frame lags back into one peak.
    padded = np.concatenate([ac[1:2], ac, ac[-1:]])
    smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    if smooth[0] <= 0:
        return np.zeros(max_lag + 1)
    return smooth / smooth[0]


def _peaks(ac: np.ndarray) -> np.ndarray:
    """Indices of positive local maxima of ``ac`` (excluding lag 0 and the last lag)."""
    if len(ac) < 3:
        return np.zeros(0, dtype=int)
    mid = ac[1:-1]
    is_peak = (mid >= ac[:-2]) & (mid > ac[2:]) & (mid > 0)
    return np.flatnonzero(is_peak) + 1


def _refine(ac: np.ndarray, i: int) -> float:
    """Fractional position of the peak at ``i`` by parabolic interpolation."""
    if 0 < i < len(ac) - 1:
        a, b, c = ac[i - 1], ac[i], ac[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return i + float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return float(i)


def choose_beat_lag(ac: np.ndarray, lag_min: float, lag_max: float, ratio: float = LEVEL_RATIO) -> float | None:
    """The beat period in frames (fractional), or None when nothing in range is periodic.

    From the strongest periodicity in range, step down one metrical level at a
    time (a half, else a third; a quarter too on the first step, from a bar)
    while the faster level is a clear peak beside the level it divides (at
    least ``ratio`` of it). Judging each level against the one above, not
    against the strongest, keeps an eighth-note bass line or eighth-note
    chords (clear, but weaker than the beat) from doubling a slow song's tempo.
    """
    peaks = _peaks(ac)
    in_range = peaks[(peaks >= lag_min * 0.97) & (peaks <= lag_max * 1.03)]
    if in_range.size == 0:
        return None
    best = int(in_range[np.argmax(ac[in_range])])
    if ac[best] < MIN_PERIODICITY:
        return None
    divisors: tuple[int, ...] = (2, 3, 4)
    while True:
        for k in divisors:
            target = best / k
            if target < lag_min * 0.97:
                continue
            # strictly faster peaks only: at a few frames per beat the window around best/k reaches best itself
            near = peaks[(peaks < best) & (np.abs(peaks - target) <= max(1.5, 0.04 * target))]
            if near.size and ac[near].max() >= ratio * ac[best]:
                best = int(near[np.argmax(ac[near])])
                break
        else:
            return _refine(ac, best)
        divisors = (2, 3)


def track_beats(onset: np.ndarray, period: float, tightness: float = 100.0) -> np.ndarray:
    """Beat frames by dynamic programming (Ellis 2007), for a period in frames.

    Each frame's score is its smoothed onset strength plus the best score of
    a predecessor half to two periods back, minus ``tightness`` times the
    squared log-ratio of that interval to ``period``. The path is read back
    from the last strong local maximum; beats in silence at either end are trimmed.
    """
    n = len(onset)
    std = float(np.std(onset, ddof=1)) if n > 1 else 0.0
    if n < 3 or std <= 0 or period < 1:
        return np.zeros(0, dtype=int)
    half = int(np.ceil(period))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * 32.0 / period) ** 2)
    local = np.convolve(onset / std, kernel, mode="same")
    # a predecessor lies half a period to two periods back
    offsets = np.arange(max(1, int(round(period / 2))), int(np.floor(2 * period)) + 1)
    penalty = -tightness * np.log(offsets / period) ** 2
    cum = np.empty(n)
    back = np.full(n, -1, dtype=int)
    step = int(offsets[0])  # frames this close together never depend on each other: do them as one block
    for i0 in range(0, n, step):
        rows = np.arange(i0, min(i0 + step, n))
        prev = rows[:, None] - offsets[None, :]
        scores = np.where(prev >= 0, cum[np.maximum(prev, 0)] + penalty, -np.inf)
        j = np.argmax(scores, axis=1)
        best = scores[np.arange(len(rows)), j]
        linked = np.isfinite(best)
        cum[rows] = local[rows] + np.where(linked, best, 0.0)
        back[rows] = np.where(linked, prev[np.arange(len(rows)), j], -1)
    started = np.flatnonzero(local >= 0.01 * float(local.max()))
    back[: started[0] if started.size else n] = -1  # no beat path starts before the first real onset
    is_max = np.zeros(n, dtype=bool)
    is_max[1:-1] = (cum[1:-1] > cum[:-2]) & (cum[1:-1] >= cum[2:])
    is_max[-1] = n > 1 and cum[-1] > cum[-2]
    maxima = np.flatnonzero(is_max)
    if maxima.size == 0:
        return np.zeros(0, dtype=int)
    tail = int(maxima[cum[maxima] >= 0.5 * np.median(cum[maxima])][-1])
    path = []
    while tail >= 0:
        path.append(tail)
        tail = int(back[tail])
    beats = np.array(path[::-1], dtype=int)
    # Trim beats placed in silence at either end. (librosa cuts at half the RMS
    # of the smoothed beat strengths, which also drops a quiet intro or coda.)
    keep = np.flatnonzero(local[beats] > _TRIM_STRENGTH * float(np.median(local[beats])))
    return beats[keep[0] : keep[-1] + 1] if keep.size else np.zeros(0, dtype=int)


def _value_near(env: np.ndarray, frame: float, radius: int = 2) -> float:
    i = int(round(frame))
    lo, hi = max(0, i - radius), min(len(env), i + radius + 1)
    return float(env[lo:hi].max()) if hi > lo else 0.0


def beat_strengths(env: np.ndarray, beat_frames: np.ndarray) -> np.ndarray:
    """The envelope's maximum within two frames of each beat frame."""
    return np.array([_value_near(env, f) for f in beat_frames])


def beat_period(beats: np.ndarray) -> float:
    """The beat period (in the units of ``beats``) from a line through (beat index, beat position).

    Indices count skipped beats (an interval of two median periods is two
    beats); beats more than a fifth of a period off the first fit are
    dropped before the second fit. 0.0 when it cannot be told.
    """
    beats = np.asarray(beats, dtype=float)
    if len(beats) < 2:
        return 0.0
    ibi = np.diff(beats)
    med = float(np.median(ibi))
    if med <= 0:
        return 0.0
    if len(beats) == 2:
        return med
    idx = np.concatenate([[0], np.cumsum(np.maximum(1, np.round(ibi / med)))])
    period, offset = np.polyfit(idx, beats, 1)
    keep = np.abs(beats - (offset + period * idx)) < 0.2 * period
    if keep.sum() >= 3 and not keep.all():
        period, offset = np.polyfit(idx[keep], beats[keep], 1)
    return float(period) if period > 0 else 0.0


def extend_beats(beats: np.ndarray, period: float, onset: np.ndarray) -> np.ndarray:
    """Restore beats (frames) the tracker left out at either end.

    One period before the first (after the last) beat, a beat is added while
    the envelope has a clear hit there: a local peak within 15 % of a period
    that stands ``_EDGE_CONTRAST`` times above the median of the envelope
    over that period. A quiet intro or coda passes (its hits stand out from
    the silence between them); noise or a reverb tail does not.
    """
    if len(beats) == 0 or period <= 0:
        return beats
    radius = max(1, int(round(_EDGE_WINDOW * period)))
    half = max(radius + 1, int(round(period / 2)))
    out = [int(b) for b in beats]

    def hit_near(f: float) -> int | None:
        i = int(round(f))
        lo, hi = max(0, i - radius), min(len(onset), i + radius + 1)
        if hi <= lo:
            return None
        j = lo + int(np.argmax(onset[lo:hi]))
        background = float(np.median(onset[max(0, i - half) : i + half + 1]))
        peak = onset[j] >= onset[max(0, j - 1)] and onset[j] >= onset[min(len(onset) - 1, j + 1)]
        return j if peak and onset[j] > 0 and onset[j] >= _EDGE_CONTRAST * background else None

    while (f := out[0] - period) > -radius:
        hit = hit_near(max(f, 0.0))
        if hit is None or hit >= out[0] - 0.5 * period:
            break
        out.insert(0, hit)
    while (f := out[-1] + period) < len(onset):
        hit = hit_near(f)
        if hit is None or hit <= out[-1] + 0.5 * period:
            break
        out.append(hit)
    return np.asarray(out)


def downbeat_phase(accents: np.ndarray, beats_per_bar: int) -> int:
    """Index (0..beats_per_bar-1) of the first downbeat: the most accented phase, earliest on ties."""
    if beats_per_bar <= 1 or len(accents) == 0:
        return 0
    scores = np.array([accents[p::beats_per_bar].mean() if p < len(accents) else -np.inf
                       for p in range(beats_per_bar)])
    best = float(scores.max())
    return int(np.flatnonzero(scores >= PHASE_TIE * best)[0]) if best > 0 else 0


def make_bars(beat_times: np.ndarray, phase: int, beats_per_bar: int, period_s: float,
              duration_s: float) -> tuple[Bar, ...]:
    """Bars of ``beats_per_bar`` beats from each downbeat.

    A bar ends at the next downbeat; the last one a bar's length after its
    downbeat (clipped to the audio). Beats before the first downbeat (a
    pickup) belong to no bar; a final bar with fewer than half its beats is dropped.
    """
    bars: list[Bar] = []
    n = len(beat_times)
    for d in range(phase, n, beats_per_bar):
        n_beats = min(beats_per_bar, n - d)
        if n_beats * 2 < beats_per_bar:
            break
        start = float(beat_times[d])
        if d + beats_per_bar < n:
            end = float(beat_times[d + beats_per_bar])
        else:
            end = min(start + beats_per_bar * period_s, duration_s)
        bars.append(Bar(len(bars), start, end, n_beats))
    return tuple(bars)


def analyze_rhythm(onset: np.ndarray, accent_curves: Sequence[np.ndarray], fps: float, beats_per_bar: int,
                   tempo_min: float, tempo_max: float, duration_s: float, delay_frames: float = 0.0,
                   chroma: np.ndarray | None = None) -> Rhythm:
    """Tempo, beats, downbeats and bars (see the module docstring).

    ``onset`` drives tempo and beats; ``accent_curves`` (frame-level, e.g.
    low-band level and RMS) decide which beat starts a bar, with the harmony
    changing at a beat (from ``chroma``, ``(12, frames)``, when given) as one
    more accent: chords change on the first beat of a bar far more often
    than on the third, where a kick on 1 and 3 cannot tell them apart. ``fps`` is the
    frame rate; a hit at frame ``f`` is reported at ``(f + delay_frames) / fps``
    seconds (see ``features.onset_delay_frames``).
    """
    if len(onset) < 4 or not np.any(onset > 0):
        return Rhythm.none()
    lag_min, lag_max = fps * 60.0 / tempo_max, fps * 60.0 / tempo_min
    ac = periodicity(onset, int(math.ceil(lag_max * 1.03)) + 2)
    lag = choose_beat_lag(ac, lag_min, lag_max)
    if lag is None:
        return Rhythm.none()
    frames = track_beats(onset, lag)
    period = beat_period(frames)
    if len(frames) < 2 or period <= 0:
        return Rhythm.none()
    frames = extend_beats(frames, period, onset)
    period = beat_period(frames)
    tempo = 60.0 * fps / period

    accents = sum((_relative(beat_strengths(c, frames)) for c in accent_curves), np.zeros(len(frames)))
    if chroma is not None:  # absolute, not relative to its mean: where the harmony never changes (drums, clicks)
        accents = accents + HARMONY_WEIGHT * harmonic_change(chroma, frames)  # its noise must stay small
    phase = downbeat_phase(accents, beats_per_bar)
    beats = np.clip((frames + delay_frames) / fps, 0.0, duration_s)
    bars = make_bars(beats, phase, beats_per_bar, period / fps, duration_s)
    downbeats = np.array([b.start_s for b in bars])
    confidence, alternatives = _tempo_confidence(ac, period, frames, beat_strengths(onset, frames), tempo)
    return Rhythm(float(tempo), confidence, alternatives, beats, downbeats, bars)


def harmonic_change(chroma: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per beat: how far the mean chroma from this beat to the next is from the previous beat's (cosine
    distance, 0..1; 0 for the first beat)."""
    n = chroma.shape[1]
    edges = np.r_[np.clip(frames, 0, n), n].astype(int)
    segments = np.array([chroma[:, a:max(a + 1, b)].mean(axis=1) if a < n else np.zeros(chroma.shape[0])
                         for a, b in zip(edges[:-1], edges[1:])])
    if len(segments) < 2:
        return np.zeros(len(frames))
    prev = np.vstack([segments[:1], segments[:-1]])
    norms = np.linalg.norm(segments, axis=1) * np.linalg.norm(prev, axis=1)
    change = 1.0 - np.einsum("ij,ij->i", segments, prev) / np.where(norms > 0, norms, 1.0)
    change[norms <= 0] = 0.0
    change[0] = 0.0
    return np.clip(change, 0.0, 1.0)


def _relative(x: np.ndarray) -> np.ndarray:
    m = float(np.mean(x)) if len(x) else 0.0
    return x / m if m > 0 else np.zeros_like(x)


def _ac_at(ac: np.ndarray, lag: float) -> float:
    """Largest autocorrelation within a frame (or 3 %) of ``lag``; 0 outside the computed lags."""
    r = max(1.0, 0.03 * lag)
    lo, hi = int(math.floor(lag - r)), int(math.ceil(lag + r))
    if lo < 1 or hi >= len(ac):
        return 0.0
    return float(ac[lo : hi + 1].max())


def _tempo_confidence(ac: np.ndarray, period: float, beat_frames: np.ndarray, strengths: np.ndarray,
                      tempo: float) -> tuple[float, tuple[TempoAlternative, ...]]:
    """Confidence = periodicity x regularity x (1 - the more plausible octave alternative).

    * periodicity: the autocorrelation at the beat lag (1 for a perfect pulse);
    * regularity: share of inter-beat intervals within 10 % of the period;
    * double plausible when the half lag is periodic too (ac(lag/2) / ac(lag));
    * half plausible when beats alternate strong/weak (|odd - even| / mean).
    """
    lag = period
    at_lag = _ac_at(ac, lag)
    periodic = float(np.clip(at_lag, 0.0, 1.0))
    ibi = np.diff(beat_frames)
    regular = float(np.mean(np.abs(ibi - period) < 0.1 * period)) if len(ibi) else 0.0
    double = float(np.clip(_ac_at(ac, lag / 2) / at_lag, 0.0, 1.0)) if at_lag > 0 and lag / 2 >= 2 else 0.0
    half = 0.0
    if len(strengths) >= 4 and strengths.mean() > 0:
        half = float(np.clip(abs(strengths[0::2].mean() - strengths[1::2].mean()) / strengths.mean(), 0.0, 1.0))
    confidence = periodic * regular * (1.0 - max(double, half))
    alternatives = (TempoAlternative(tempo / 2.0, "half", half), TempoAlternative(tempo * 2.0, "double", double))
    return float(np.clip(confidence, 0.0, 1.0)), alternatives
