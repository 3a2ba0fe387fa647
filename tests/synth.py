"""Numpy audio synthesis for tests: clicks, drum patterns, cadences, melodies.

Every generator returns a mono ``float32`` array at ``sr`` (default 22050 Hz)
and is deterministic (noise takes a ``seed``). Ground truth comes from the
matching helpers (:func:`beat_times`, :func:`bar_count`, :func:`key_name`) so
a test never hard-codes what the audio contains.

Conventions: ``bpm`` counts the time signature's beat unit (quarter notes in
x/4, eighth notes in x/8); bar 1 starts at ``offset_s``; keys are named like
``"A minor"`` or ``"C# major"`` (flats such as ``"Eb"`` are accepted too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SR = 22050

PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#", "Cb": "B", "Fb": "E"}
# Scale degrees (semitones above the tonic) of the chord roots in I-IV-V-I.
_CADENCE_ROOTS = (0, 5, 7, 0)


# -- ground truth helpers ---------------------------------------------------

def beat_times(bpm: float, n_beats: int, offset_s: float = 0.0) -> np.ndarray:
    """Times (s) of ``n_beats`` evenly spaced beats starting at ``offset_s``."""
    return offset_s + np.arange(n_beats) * (60.0 / bpm)


def bar_count(duration_s: float, bpm: float, numerator: int = 4) -> int:
    """Whole bars of ``numerator`` beats that fit in ``duration_s``."""
    return int(np.floor(duration_s * bpm / 60.0 / numerator + 1e-9))


def key_name(tonic_pc: int, mode: str) -> str:
    """``key_name(9, "minor") == "A minor"``."""
    if mode not in ("major", "minor"):
        raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")
    return f"{PITCH_NAMES[tonic_pc % 12]} {mode}"


def all_keys() -> list[str]:
    """The 24 major and minor key names."""
    return [key_name(pc, mode) for mode in ("major", "minor") for pc in range(12)]


def parse_key(key: str) -> tuple[int, str]:
    """``"A minor"`` -> ``(9, "minor")``; accepts flats (``"Eb major"``)."""
    try:
        name, mode = key.split()
    except ValueError:
        raise ValueError(f"key must look like 'A minor', got {key!r}") from None
    name = _FLATS.get(name, name)
    if name not in PITCH_NAMES or mode not in ("major", "minor"):
        raise ValueError(f"unknown key {key!r}")
    return PITCH_NAMES.index(name), mode


def midi_to_hz(midi: float, tuning_cents: float = 0.0) -> float:
    """Equal-tempered frequency of a MIDI pitch, A4 = 440 Hz shifted by ``tuning_cents``."""
    return 440.0 * 2.0 ** ((midi - 69 + tuning_cents / 100.0) / 12.0)


# -- levels and assembly ----------------------------------------------------

def rms_dbfs(y: np.ndarray) -> float:
    """RMS level in dBFS (20*log10 of the RMS; a full-scale sine is -3.01)."""
    return float(20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-20))


def set_rms_dbfs(y: np.ndarray, dbfs: float) -> np.ndarray:
    """Scale ``y`` so its RMS is ``dbfs`` (20*log10 convention)."""
    rms = np.sqrt(np.mean(np.square(y, dtype=np.float64)))
    if rms == 0:
        return y.astype(np.float32)
    return (y * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def set_peak_dbfs(y: np.ndarray, dbfs: float = -1.0) -> np.ndarray:
    """Scale ``y`` so its sample peak is ``dbfs``."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak == 0:
        return y.astype(np.float32)
    return (y * (10 ** (dbfs / 20) / peak)).astype(np.float32)


def concat(*parts: np.ndarray) -> np.ndarray:
    """Signals one after another."""
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


def mix(*parts: np.ndarray) -> np.ndarray:
    """Sum of signals, shorter ones zero-padded at the end."""
    n = max(len(p) for p in parts)
    out = np.zeros(n, dtype=np.float64)
    for p in parts:
        out[: len(p)] += p
    return out.astype(np.float32)


def _place(out: np.ndarray, sound: np.ndarray, at_s: float, sr: int, gain: float = 1.0) -> None:
    """Add ``sound`` into ``out`` starting at ``at_s`` (clipped at the end)."""
    start = int(round(at_s * sr))
    if start >= len(out) or start < 0:
        return
    n = min(len(sound), len(out) - start)
    out[start : start + n] += gain * sound[:n]


# -- elementary signals -----------------------------------------------------

def silence(duration_s: float, sr: int = SR) -> np.ndarray:
    """Digital silence."""
    return np.zeros(int(round(duration_s * sr)), dtype=np.float32)


def noise(duration_s: float, sr: int = SR, rms_db: float = -20.0, seed: int = 0, color: str = "white") -> np.ndarray:
    """White or pink Gaussian noise at ``rms_db`` dBFS RMS."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s * sr))
    x = rng.standard_normal(n)
    if color == "pink":
        spec = np.fft.rfft(x)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n=n)
    elif color != "white":
        raise ValueError(f"color must be 'white' or 'pink', got {color!r}")
    return set_rms_dbfs(x, rms_db)


def sine(freq_hz: float, duration_s: float, sr: int = SR, rms_db: float = -20.0, phase: float = 0.0) -> np.ndarray:
    """A steady sine at ``rms_db`` dBFS RMS (peak is 3.01 dB higher)."""
    t = np.arange(int(round(duration_s * sr))) / sr
    amp = np.sqrt(2.0) * 10 ** (rms_db / 20)
    return (amp * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def tone(freq_hz: float, duration_s: float, sr: int = SR, n_harmonics: int = 6, rolloff: float = 0.6,
         attack_s: float = 0.01, release_s: float = 0.08) -> np.ndarray:
    """A harmonic tone (partials ``k*f`` at ``rolloff**(k-1)``) with a soft attack and release."""
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    y = np.zeros(n)
    for k in range(1, n_harmonics + 1):
        if k * freq_hz >= sr / 2:
            break
        y += rolloff ** (k - 1) * np.sin(2 * np.pi * k * freq_hz * t)
    env = np.ones(n)
    a, r = min(int(attack_s * sr), n), min(int(release_s * sr), n)
    if a:
        env[:a] = np.linspace(0, 1, a)
    if r:
        env[n - r :] *= np.linspace(1, 0, r)
    return (y * env).astype(np.float32)


# -- rhythm -----------------------------------------------------------------

def _click(sr: int, freq_hz: float) -> np.ndarray:
    t = np.arange(int(0.03 * sr)) / sr
    return (np.sin(2 * np.pi * freq_hz * t) * np.exp(-t / 0.005)).astype(np.float32)


def click_track(bpm: float, n_beats: int, sr: int = SR, accent_every: int = 0, offset_s: float = 0.0,
                tail_s: float = 0.5, freq_hz: float = 1000.0, gain: float = 0.5) -> np.ndarray:
    """A metronome: ``n_beats`` clicks at ``bpm``.

    ``accent_every=n`` makes every n-th click (from the first) louder and an
    octave higher, like a metronome marking the downbeat.
    """
    duration = offset_s + n_beats * 60.0 / bpm + tail_s
    out = np.zeros(int(round(duration * sr)), dtype=np.float64)
    plain, accent = _click(sr, freq_hz), _click(sr, 2 * freq_hz)
    for i, t in enumerate(beat_times(bpm, n_beats, offset_s)):
        if accent_every and i % accent_every == 0:
            _place(out, accent, t, sr, gain)
        else:
            _place(out, plain, t, sr, gain * (0.6 if accent_every else 1.0))
    return out.astype(np.float32)


def kick(sr: int = SR) -> np.ndarray:
    """A bass drum: a sine sweeping 150 -> 50 Hz with a fast decay."""
    t = np.arange(int(0.35 * sr)) / sr
    freq = 50 + 100 * np.exp(-t / 0.03)
    phase = 2 * np.pi * np.cumsum(freq) / sr
    return (np.sin(phase) * np.exp(-t / 0.09)).astype(np.float32)


def snare(sr: int = SR, seed: int = 1) -> np.ndarray:
    """A snare: a 190 Hz body plus a burst of noise."""
    t = np.arange(int(0.2 * sr)) / sr
    rng = np.random.default_rng(seed)
    body = 0.5 * np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.04)
    rattle = 0.5 * rng.standard_normal(len(t)) * np.exp(-t / 0.05)
    return (body + rattle).astype(np.float32)


def hihat(sr: int = SR, seed: int = 2) -> np.ndarray:
    """A closed hi-hat: a short burst of high-passed noise."""
    n = int(0.06 * sr)
    rng = np.random.default_rng(seed)
    x = np.diff(rng.standard_normal(n + 1))  # first difference ~ high-pass
    t = np.arange(n) / sr
    return (0.5 * x * np.exp(-t / 0.012)).astype(np.float32)


def default_pattern(numerator: int) -> dict[str, tuple[tuple[float, float], ...]]:
    """Rock-style hits per bar as ``(beat_position, velocity)``.

    Even meters: kick on beat 1 and a softer kick half way, snare on the
    even-numbered beats (2 and 4 in 4/4). Odd meters: kick on beat 1, snare
    on every other beat (a waltz in 3/4).
    """
    if numerator % 2 == 0 and numerator >= 4:
        kicks = ((0.0, 1.0), (numerator / 2, 0.7))
        snares = tuple((float(b), 0.8) for b in range(1, numerator, 2))
    else:
        kicks = ((0.0, 1.0),)
        snares = tuple((float(b), 0.8) for b in range(1, numerator))
    return {"kick": kicks, "snare": snares}


def drum_pattern(bpm: float, bars: int, numerator: int = 4, denominator: int = 4, sr: int = SR,
                 hihat_per_beat: int = 2, offset_s: float = 0.0, tail_s: float = 0.5,
                 bar_gains: Sequence[float] | None = None,
                 pattern: dict[str, Sequence[tuple[float, float]]] | None = None) -> np.ndarray:
    """``bars`` bars of a kick/snare/hi-hat groove in ``numerator/denominator`` at ``bpm``.

    ``bpm`` counts the beat unit (``denominator``). Hi-hats play
    ``hihat_per_beat`` times per beat (0 for none). ``bar_gains`` scales each
    bar (e.g. loud bars then quiet bars). ``pattern`` overrides
    :func:`default_pattern` with ``{"kick": [(beat, velocity)], "snare": [...]}``.
    """
    if bars < 1 or numerator < 1 or denominator not in (1, 2, 4, 8, 16):
        raise ValueError(f"bad meter or bar count: {bars} bars of {numerator}/{denominator}")
    if bar_gains is not None and len(bar_gains) != bars:
        raise ValueError(f"bar_gains has {len(bar_gains)} entries for {bars} bars")
    pattern = pattern or default_pattern(numerator)
    beat_s = 60.0 / bpm
    bar_s = numerator * beat_s
    out = np.zeros(int(round((offset_s + bars * bar_s + tail_s) * sr)), dtype=np.float64)
    sounds = {"kick": kick(sr), "snare": snare(sr), "hihat": hihat(sr)}
    for b in range(bars):
        g = 1.0 if bar_gains is None else float(bar_gains[b])
        t0 = offset_s + b * bar_s
        for name in ("kick", "snare"):
            for pos, vel in pattern.get(name, ()):
                _place(out, sounds[name], t0 + pos * beat_s, sr, g * vel)
        for i in range(numerator * hihat_per_beat):
            _place(out, sounds["hihat"], t0 + i * beat_s / hihat_per_beat, sr, g * 0.35)
    return (0.5 * out).astype(np.float32)


# -- harmony and melody -----------------------------------------------------

def triad(root_midi: int, quality: str) -> tuple[int, int, int]:
    """MIDI pitches of a root-position major or minor triad."""
    third = {"major": 4, "minor": 3}[quality]
    return (root_midi, root_midi + third, root_midi + 7)


def cadence_chords(key: str) -> list[tuple[int, ...]]:
    """I-IV-V-I (major) or i-iv-V-i (minor, harmonic V) as MIDI chords with a bass note.

    The tonic sits in octave 4 (C4..B4); each chord adds its root an octave
    below as a bass note.
    """
    tonic_pc, mode = parse_key(key)
    tonic = 60 + tonic_pc
    chords = []
    for degree in _CADENCE_ROOTS:
        root = tonic + degree
        if degree == 7:
            root -= 12  # keep the V chord in the same register
            quality = "major"
        else:
            quality = mode
        chords.append((root - 12,) + triad(root, quality))
    return chords


def chord_cadence(key: str, sr: int = SR, chord_s: float = 1.0, repeats: int = 2, tuning_cents: float = 0.0,
                  n_harmonics: int = 6, peak_db: float = -3.0) -> np.ndarray:
    """A cadence in ``key`` played ``repeats`` times, one chord per ``chord_s``.

    Additive synthesis: each note is a :func:`tone` with ``n_harmonics``
    partials; ``tuning_cents`` shifts every pitch away from A440.
    """
    parts = []
    for _ in range(repeats):
        for chord in cadence_chords(key):
            parts.append(mix(*(tone(midi_to_hz(m, tuning_cents), chord_s, sr, n_harmonics) for m in chord)))
    return set_peak_dbfs(concat(*parts), peak_db)


def melody(notes: Sequence[tuple[float, float, float]], sr: int = SR, n_harmonics: int = 4,
           tuning_cents: float = 0.0, tail_s: float = 0.2, peak_db: float = -3.0) -> np.ndarray:
    """Notes given as ``(midi_pitch, onset_s, dur_s)``, mixed into one signal."""
    if not notes:
        return silence(tail_s, sr)
    end = max(on + dur for _, on, dur in notes) + tail_s
    out = np.zeros(int(round(end * sr)), dtype=np.float64)
    for pitch, on, dur in notes:
        if dur <= 0 or on < 0:
            raise ValueError(f"bad note {(pitch, on, dur)}: onset must be >= 0 and duration > 0")
        _place(out, tone(midi_to_hz(pitch, tuning_cents), dur, sr, n_harmonics), on, sr)
    return set_peak_dbfs(out, peak_db)
