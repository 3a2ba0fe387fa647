"""Shared by the benchmarks: a synthesized corpus, and the two ways of analysing it.

``make_corpus`` writes songs that look like music to a beat tracker and a key
finder (drums + chords + melody + noise, 44.1 kHz stereo 16-bit WAV, each at its
own tempo and key). ``stave_file`` runs Stave's stage functions on one file in
this process, exactly as the engine's workers call them; ``naive_file`` is the
librosa script such pipelines usually start as (see its docstring).

Run the benchmarks from the repository root (``python bench/throughput.py``):
they put the root on ``sys.path`` so ``core`` and ``tests.synth`` import.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# Numeric libraries in benchmark children use one thread: a core is a worker.
ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                  "NUMBA_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}

FILE_SR = 44100
STAVE_STAGES = ("ingest", "preprocess", "analyze", "segment", "export")  # separate/transcribe are off by default

# (bpm, key) of the corpus songs, cycled when more are asked for.
SONG_PLAN = ((96.0, "A minor"), (124.0, "C major"), (140.0, "E minor"), (82.0, "F# major"),
             (110.0, "D minor"), (132.0, "Bb major"), (100.0, "G major"), (118.0, "C# minor"))
_MAJOR, _MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)


@dataclass(frozen=True)
class Song:
    path: Path
    duration_s: float
    bpm: float
    key: str


# -- corpus --------------------------------------------------------------------------------
def synth_song(bpm: float, key: str, duration_s: float, sr: int = FILE_SR, seed: int = 0) -> np.ndarray:
    """A stereo ``(frames, 2)`` float32 song: drums, one chord per bar, an eighth-note melody, noise."""
    from tests import synth

    bar_s = 240.0 / bpm
    bars = max(1, int(np.ceil(duration_s / bar_s)))
    n = int(round(duration_s * sr))
    rng = np.random.default_rng(seed)
    drums = synth.drum_pattern(bpm, bars, sr=sr)
    chords = synth.chord_cadence(key, sr=sr, chord_s=bar_s, repeats=(bars + 3) // 4, n_harmonics=5)
    tonic, mode = synth.parse_key(key)
    scale = _MAJOR if mode == "major" else _MINOR
    notes, t = [], 0.0
    step = 30.0 / bpm  # eighth notes
    while t < duration_s:
        if rng.random() < 0.8:
            degree = int(rng.integers(0, 7))
            notes.append((72 + tonic + scale[degree] - (12 if tonic > 6 else 0), t, step * rng.choice([1, 1, 2])))
        t += step
    lead = synth.melody(notes, sr=sr, n_harmonics=4)

    def fit(x: np.ndarray) -> np.ndarray:
        return np.pad(x[:n], (0, max(0, n - len(x))))

    drums, chords, lead = fit(drums), fit(chords), fit(lead)
    hiss = fit(synth.noise(duration_s, sr, rms_db=-42.0, seed=seed + 100, color="pink"))
    left = 0.9 * drums + 0.40 * chords + 0.22 * lead + hiss
    right = 0.9 * drums + 0.28 * chords + 0.32 * lead + np.roll(hiss, sr // 10)
    stereo = np.stack([left, right], axis=1)
    return (stereo * (0.89 / max(1e-9, float(np.max(np.abs(stereo)))))).astype(np.float32)


def make_corpus(folder: str | os.PathLike, n_songs: int, duration_s: float) -> list[Song]:
    """Write ``n_songs`` synthesized songs to ``folder`` (reusing ones already there)."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    songs = []
    for i in range(n_songs):
        bpm, key = SONG_PLAN[i % len(SONG_PLAN)]
        path = folder / f"song{i:02d}_{int(bpm)}bpm_{key.replace(' ', '_').replace('#', 's')}_{duration_s:g}s.wav"
        if not path.exists():
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, synth_song(bpm, key, duration_s, seed=i), FILE_SR, subtype="PCM_16")
            os.replace(tmp, path)
        songs.append(Song(path, duration_s, bpm, key))
    return songs


def make_long_file(song: Path, dest: str | os.PathLike, minutes: float) -> Path:
    """``song`` repeated until ``minutes`` long, written block by block (never held whole in memory)."""
    import soundfile as sf

    dest = Path(dest)
    data, sr = sf.read(song, dtype="int16", always_2d=True)
    total = int(round(minutes * 60 * sr))
    with sf.SoundFile(dest, "w", samplerate=sr, channels=data.shape[1], subtype="PCM_16") as f:
        written = 0
        while written < total:
            block = data[: total - written]
            f.write(block)
            written += len(block)
    return dest


def audio_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files directly in ``folder`` (for ``--corpus``), sorted."""
    exts = {".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff", ".m4a"}
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts)


def duration_of(path: str | os.PathLike) -> float:
    import soundfile as sf

    return float(sf.info(str(path)).duration)


# -- Stave's stages in this process ----------------------------------------------------------
def stave_file(path: str | os.PathLike, out_dir: str, job_id: int, config: dict | None = None,
               on_stage: Callable[[str, float], None] | None = None) -> dict:
    """Run ingest -> preprocess -> analyze -> segment -> export on one file, in this process.

    The same calls the engine's workers make, minus the store, policies and
    process pool. ``on_stage(stage, seconds)`` is called after each stage.
    Returns the song's summary.json. The work folder is removed afterwards,
    as the engine does.
    """
    from core.engine.stagegraph import StageContext
    from core.pipeline import stage_fns
    from core.pipeline.config import PipelineConfig

    config = config if config is not None else PipelineConfig().to_dict()
    work_dir = os.path.join(out_dir, ".stave", "work", f"job-{job_id}")
    os.makedirs(work_dir, exist_ok=True)
    song_id = Path(path).stem
    states: dict[str, dict] = {}
    for stage in STAVE_STAGES:
        ctx = StageContext(job_id=job_id, stage=stage, input_path=os.fspath(path), out_dir=out_dir,
                           work_dir=work_dir, song_id=song_id, config=config, facts={"stages": states})
        t0 = time.perf_counter()
        out = getattr(stage_fns, f"{stage}_stage")(ctx)
        if on_stage is not None:
            on_stage(stage, time.perf_counter() - t0)
        song_id = out.facts.get("song_id", song_id)
        states[stage] = {"status": "done", "degraded": False, "reason": ""}
    shutil.rmtree(work_dir, ignore_errors=True)
    with open(os.path.join(out_dir, song_id, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def warm_up(side: str, folder: str | os.PathLike) -> None:
    """Run ``side`` ("stave" or "naive") once on a 4 s song: imports, numba's cache, first-call costs."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "warmup.wav"
    sf.write(path, synth_song(120.0, "C major", 4.0, seed=99), FILE_SR, subtype="PCM_16")
    if side == "stave":
        stave_file(path, os.fspath(folder), 0)
    else:
        naive_file(path, os.fspath(folder))


# -- the naive librosa script ----------------------------------------------------------------
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _key_from_chroma(chroma_mean: np.ndarray) -> str:
    best, name = -2.0, ""
    for mode, profile in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma_mean, np.roll(profile, tonic))[0, 1])
            if r > best:
                best, name = r, f"{_NAMES[tonic]} {mode}"
    return name


def _naive_features(y: np.ndarray, sr: int) -> dict[str, float]:
    """Every feature function called on its own, as tutorials do (each recomputes its STFT)."""
    import librosa

    feats = {
        "centroid": librosa.feature.spectral_centroid(y=y, sr=sr),
        "bandwidth": librosa.feature.spectral_bandwidth(y=y, sr=sr),
        "rolloff": librosa.feature.spectral_rolloff(y=y, sr=sr),
        "flatness": librosa.feature.spectral_flatness(y=y),
        "contrast": librosa.feature.spectral_contrast(y=y, sr=sr),
        "zcr": librosa.feature.zero_crossing_rate(y),
        "rms": librosa.feature.rms(y=y),
        "onset_strength": librosa.onset.onset_strength(y=y, sr=sr),
    }
    out = {f"{k}_mean": float(np.mean(v)) for k, v in feats.items()}
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    out.update({f"mfcc_{i}": float(v) for i, v in enumerate(mfcc.mean(axis=1))})
    out.update({f"chroma_{_NAMES[i]}": float(v) for i, v in enumerate(chroma.mean(axis=1))})
    return out


def naive_file(path: str | os.PathLike, out_dir: str) -> dict:
    """The usual librosa script: load (resampling), beat_track, song features, key, then every bar again.

    Per bar it slices the audio between downbeats (every 4th beat) and calls
    the same feature functions on the chunk. Writes ``<stem>.json`` and
    ``<stem>_bars.csv`` to ``out_dir``; returns the song-level dict.
    """
    import librosa
    import pyloudnorm

    y, sr = librosa.load(os.fspath(path), sr=22050, mono=True)
    tempo, beats = librosa.beat.beat_track(y=y, sr=sr)
    beat_times = librosa.frames_to_time(beats, sr=sr)
    song = _naive_features(y, sr)
    chroma_mean = np.array([song[f"chroma_{n}"] for n in _NAMES])
    song.update({"duration_s": len(y) / sr, "tempo_bpm": float(np.atleast_1d(tempo)[0]), "beats": len(beats),
                 "key": _key_from_chroma(chroma_mean),
                 "loudness_lufs": float(pyloudnorm.Meter(sr).integrated_loudness(y.astype(np.float64)))})
    downbeats = list(beat_times[::4]) + [len(y) / sr]
    rows = []
    for i, (start, end) in enumerate(zip(downbeats[:-1], downbeats[1:])):
        chunk = y[int(start * sr):int(end * sr)]
        if len(chunk) < 2048:
            continue
        rows.append({"bar": i, "start_s": start, "end_s": end, **_naive_features(chunk, sr)})
    stem = Path(path).stem
    with open(os.path.join(out_dir, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump(song, f)
    if rows:
        with open(os.path.join(out_dir, f"{stem}_bars.csv"), "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    song["bars"] = len(rows)
    return song
