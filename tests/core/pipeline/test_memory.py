"""Memory of the ingest -> preprocess -> analyze path, and that saving it changed no result.

The peak test runs the three stage functions on a 10-minute file in a fresh
process and bounds how far its ``ru_maxrss`` rises above the same process
after a warm-up (libraries loaded, first-call caches filled). The other tests
prove the streamed and blockwise code gives what the one-pass code gave.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import scipy.fft
import scipy.signal
import soundfile as sf

from core.pipeline import analyze as analyze_mod
from core.pipeline import features
from core.pipeline import ingest_ffmpeg
from core.pipeline.analyze import analyze_audio
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ingest, ingest_mono, peak_dbfs
from core.pipeline.preprocess import MonoResampler, integrated_loudness, resample, to_mono
from core.resilience.errors import ErrorKind, classify

ROOT = Path(__file__).resolve().parents[3]
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not on PATH")
CFG = PipelineConfig()
TARGET_SR = CFG.analysis_sr


def music(seconds: float, sr: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A few seconds of chords, kicks and a little noise, float32 ``(frames, channels)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(0.12 * np.sin(2 * np.pi * f * t) for f in (220.0, 261.63, 329.63, 440.0))
    beat = np.exp(-30.0 * np.mod(t, 0.5)) * np.sin(2 * np.pi * 60.0 * t)
    mono = tone + 0.4 * beat + 0.01 * rng.standard_normal(len(t))
    return np.stack([mono * (1.0 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


# --- ingest: streamed == decoded whole, then mixed and resampled ------------------


@pytest.mark.parametrize("ext, subtype, sr, channels", [
    ("wav", "PCM_16", 44100, 2), ("flac", "PCM_24", 48000, 2), ("wav", "FLOAT", 22050, 1),
    ("wav", "PCM_16", 32000, 6), ("ogg", "VORBIS", 44100, 2)])
def test_streamed_ingest_equals_decode_then_mix_and_resample(tmp_path, ext, subtype, sr, channels):
    path = tmp_path / f"song.{ext}"
    sf.write(path, music(5.3, sr, channels), sr, subtype=subtype)  # several 65,536-frame blocks
    whole = ingest(path, CFG)
    streamed = ingest_mono(path, CFG, TARGET_SR)
    expected = resample(to_mono(whole.audio), whole.sr, TARGET_SR)
    assert streamed.y.dtype == np.float32 and streamed.y.ndim == 1 and streamed.y.flags.c_contiguous
    assert streamed.y.shape == expected.shape
    assert np.max(np.abs(streamed.y - expected)) <= 1e-6  # soxr's stream equals its one-shot resample
    assert streamed.probe == whole.probe and streamed.content_hash == whole.content_hash
    assert streamed.peak_dbfs == peak_dbfs(whole.audio)


@needs_ffmpeg
def test_streamed_ingest_through_ffmpeg_equals_the_whole_decode(tmp_path):
    wav, path = tmp_path / "src.wav", tmp_path / "song.m4a"
    sf.write(wav, music(4.0), 44100)
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)],
                   check=True)
    whole = ingest(path, CFG)
    streamed = ingest_mono(path, CFG, TARGET_SR)
    assert streamed.probe.decoder == "ffmpeg" and streamed.probe == whole.probe
    assert np.max(np.abs(streamed.y - resample(to_mono(whole.audio), whole.sr, TARGET_SR))) <= 1e-6


@pytest.mark.parametrize("sr, target", [(44100, 22050), (48000, 22050), (22050, 22050), (8000, 22050)])
def test_mono_resampler_equals_one_shot_however_the_blocks_fall(sr, target):
    audio = music(3.0, sr, 2, seed=sr).T  # (channels, frames)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(audio.shape[1], 25, replace=False))
    stream = MonoResampler(sr, target, expected_frames=1000)  # a bad estimate: it grows
    for block in np.split(audio.T, cuts):  # blocks of any size, one or two of them tiny
        stream.push(block)
    stream.push(np.zeros((0, 2), np.float32))
    y = stream.finish()
    expected = resample(to_mono(audio), sr, target)
    assert y.shape == expected.shape and np.max(np.abs(y - expected)) <= 1e-6
    with pytest.raises(RuntimeError):
        stream.push(audio.T[:10])


# --- ingest: every classified rejection is the same on the streamed path ------------


def _no_ffmpeg(monkeypatch):
    monkeypatch.setattr(ingest_ffmpeg.shutil, "which", lambda name: None)


def _write(path: Path, data: np.ndarray, sr: int = 44100, subtype: str = "PCM_16") -> Path:
    sf.write(path, data, sr, subtype=subtype)
    return path


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _nan(tmp: Path, bad: float) -> Path:
    data = music(3.0)
    data[70_000, 1] = bad  # in the second block
    return _write(tmp / "bad.wav", data, subtype="FLOAT")


HOSTILE = {
    "0 bytes": (lambda tmp: _bytes(tmp / "e.wav", b""), False, ErrorKind.INPUT_EMPTY),
    "header promises more frames": (lambda tmp: _cut(_write(tmp / "cut.wav", music(6.0)), 0.5), False,
                                    ErrorKind.INPUT_CORRUPT),
    "truncated flac": (lambda tmp: _cut(_write(tmp / "cut.flac", music(6.0)), 0.6), False, ErrorKind.INPUT_CORRUPT),
    "header only": (lambda tmp: _write(tmp / "h.wav", np.zeros((0, 2), np.float32)), False, ErrorKind.INPUT_EMPTY),
    "not audio": (lambda tmp: _bytes(tmp / "n.wav", os.urandom(50_000)), True, ErrorKind.INPUT_CORRUPT),
    "unknown format": (lambda tmp: _bytes(tmp / "d.xyz", os.urandom(5000)), True, ErrorKind.INPUT_UNSUPPORTED),
    "digital silence": (lambda tmp: _write(tmp / "s.wav", np.zeros((88200, 2), np.float32)), False,
                        ErrorKind.INPUT_EMPTY),
    "below the silence threshold": (lambda tmp: _write(tmp / "q.wav", 1e-4 * music(3.0), subtype="FLOAT"), False,
                                    ErrorKind.INPUT_EMPTY),
    "too short": (lambda tmp: _write(tmp / "blip.wav", music(1.0)), False, ErrorKind.INPUT_EMPTY),
    "NaN": (lambda tmp: _nan(tmp, np.nan), False, ErrorKind.INPUT_CORRUPT),
    "Inf": (lambda tmp: _nan(tmp, -np.inf), False, ErrorKind.INPUT_CORRUPT),
    "needs ffmpeg": (lambda tmp: _bytes(tmp / "a.m4a", struct.pack(">I", 24) + b"ftypM4A \x00\x00\x02\x00M4A isom"
                                        + os.urandom(2000)), True, ErrorKind.DEPENDENCY_MISSING),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_streamed_ingest_rejects_what_ingest_rejects_with_the_same_reason(tmp_path, monkeypatch, case):
    make, without_ffmpeg, kind = HOSTILE[case]
    if without_ffmpeg:
        _no_ffmpeg(monkeypatch)
    path = make(tmp_path)
    with pytest.raises(Exception) as whole:
        ingest(path, CFG)
    with pytest.raises(Exception) as streamed:
        ingest_mono(path, CFG, TARGET_SR)
    assert classify(streamed.value).kind is classify(whole.value).kind is kind
    assert str(streamed.value) == str(whole.value)


@needs_ffmpeg
def test_streamed_ingest_rejects_a_truncated_m4a(tmp_path):
    wav, path = tmp_path / "src.wav", tmp_path / "cut.m4a"
    sf.write(wav, music(6.0), 44100)
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "aac", str(path)],
                   check=True)
    _cut(path, 0.5)
    with pytest.raises(Exception) as e:
        ingest_mono(path, CFG, TARGET_SR)
    assert classify(e.value).kind is ErrorKind.INPUT_CORRUPT


# --- analysis: blockwise == one pass ---------------------------------------------------


def _one_pass_rms(y, n, hop):
    energy = np.cumsum(np.square(np.pad(y.astype(np.float64), (n // 2, n // 2))))
    starts = np.arange(1 + (len(energy) - n) // hop) * hop
    before = np.where(starts > 0, energy[np.maximum(starts - 1, 0)], 0.0)
    return np.sqrt(np.maximum(0.0, energy[starts + n - 1] - before) / n)


def _one_pass_zcr(y, n, hop):
    neg = np.pad(y, (n // 2, n // 2), mode="edge") < -1e-10
    crossings = np.concatenate([[0], np.cumsum(neg[1:] != neg[:-1])])
    starts = np.arange(1 + (len(neg) - n) // hop) * hop
    return (crossings[starts + n - 1] - crossings[starts]) / n


def _one_pass_stft(y, n, hop):
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(y, (n // 2, n // 2)), n)[::hop]
    window = scipy.signal.get_window("hann", n, fftbins=True).astype(np.float32)
    return np.abs(scipy.fft.rfft(frames * window, axis=1)).T


@pytest.mark.parametrize("n, hop", [(2048, 512), (1001, 300)])
def test_blockwise_frame_features_equal_the_one_pass_formulas(n, hop):
    y = music(30.0, 22050, 1)[:, 0][: 22050 * 30 - 17]  # > 1,024 frames of 512: several blocks
    assert np.max(np.abs(features.frame_rms(y, n, hop) - _one_pass_rms(y, n, hop))) < 1e-9
    assert np.array_equal(features.zero_crossing_rate(y, n, hop), _one_pass_zcr(y, n, hop))
    S = features.stft_magnitude(y, n, hop)
    assert S.shape == (1 + n // 2, 1 + (len(y) + 2 * (n // 2) - n) // hop)
    assert np.allclose(S, _one_pass_stft(y, n, hop), rtol=1e-6, atol=1e-6 * S.max())


def test_blockwise_onset_and_mfcc_equal_the_one_pass_formulas():
    mel = np.abs(np.random.default_rng(3).standard_normal((128, 9000))).astype(np.float32) ** 4
    logm = np.log1p(1000.0 * mel / mel.max())
    onset = np.maximum(0.0, np.diff(logm, axis=1, prepend=0.0)).mean(axis=0)
    assert np.allclose(features.onset_envelope(mel), onset, rtol=1e-6, atol=1e-7)
    db = 10.0 * np.log10(np.maximum(1e-10, mel))
    db = np.maximum(db, db.max() - 80.0)
    mfcc = scipy.fft.dct(db, axis=0, type=2, norm="ortho")[:20]
    got = features.mfcc(mel, 20)
    assert got.shape == (20, 9000) and got.base is None  # not a view keeping all 128 DCT rows alive
    assert np.allclose(got, mfcc, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("seconds, sr, dtype", [(0.5, 22050, np.float32), (7.0, 44100, np.float64),
                                                 (55.0, 22050, np.float32)])
def test_blockwise_bs1770_equals_pyloudnorm(seconds, sr, dtype):
    y = music(seconds, sr, 1)[:, 0].astype(dtype)
    y[: len(y) // 3] *= 0.01  # a quiet first third: the relative gate has work to do
    assert features.bs1770_loudness(y, sr) == pytest.approx(pyloudnorm.Meter(sr).integrated_loudness(y), abs=1e-9)
    assert integrated_loudness(y, sr) == pytest.approx(features.bs1770_loudness(y, sr), abs=0)


def test_bs1770_of_silence_and_of_too_little_audio():
    assert features.bs1770_loudness(np.zeros(22050, np.float32), 22050) == -math.inf
    with pytest.raises(ValueError):
        features.bs1770_loudness(np.ones(100, np.float32), 22050)


def test_analyze_audio_lets_go_of_samples_handed_over(monkeypatch):
    """Given its only reference, analysis frees the samples before the spectrogram's own work."""
    alive = []
    real = analyze_mod.estimate_tuning

    def spy(magnitude, sr, n_fft):
        alive.append(ref() is not None)
        return real(magnitude, sr, n_fft)

    monkeypatch.setattr(analyze_mod, "estimate_tuning", spy)
    held = music(6.0, 22050, 1)[:, 0].copy()
    ref = weakref.ref(held)
    kept = analyze_audio(held, 22050)  # the caller keeps its samples: nothing is freed under it
    handed = [held.copy()]
    ref = weakref.ref(handed[0])
    given = analyze_audio(handed.pop(), 22050)  # the only reference: freed once the STFT is taken
    assert alive == [True, False]
    assert given.tempo_bpm == kept.tempo_bpm and np.array_equal(given.frames.mfcc, kept.frames.mfcc)


# --- the peak: a 10-minute file through ingest, preprocess and analyze ---------------

_CHILD = textwrap.dedent("""
    import json, resource, sys
    from core.engine.stagegraph import StageContext
    from core.pipeline import stage_fns
    from core.pipeline.config import PipelineConfig

    def peak_mib():
        # Linux carries the parent's peak across exec into ru_maxrss (pytest's own RSS would show up
        # here): its VmHWM is the same high-water mark, for this program alone.
        try:
            with open("/proc/self/status") as f:
                return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
        except (OSError, StopIteration, ValueError):
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux

    def run(path, work):
        config = PipelineConfig().to_dict()
        for stage in ("ingest", "preprocess", "analyze"):
            ctx = StageContext(job_id=1, stage=stage, input_path=path, out_dir=work, work_dir=work, song_id="song",
                               config=config)
            getattr(stage_fns, stage + "_stage")(ctx)

    warm, long, work = sys.argv[1:4]
    run(warm, work + "/warm")  # libraries imported, first-call caches filled
    baseline = peak_mib()
    run(long, work + "/long")
    print(json.dumps({"baseline_mib": baseline, "peak_mib": peak_mib()}))
""")


def _long_file(path: Path, minutes: float) -> Path:
    """``minutes`` of 44.1 kHz stereo 16-bit WAV, written 10 s at a time (never whole in memory)."""
    snippet = music(10.0, 44100, 2, seed=7)
    with sf.SoundFile(path, "w", samplerate=44100, channels=2, subtype="PCM_16") as f:
        for _ in range(round(minutes * 6)):
            f.write(snippet)
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="ru_maxrss is POSIX")
def test_ten_minutes_peak_within_a_few_signals_of_the_warm_baseline(tmp_path):
    """The analysis signal (mono float32 at 22.05 kHz, 10 min: 50 MiB) bounds the peak.

    What must be held at once: the signal (1x) and its STFT magnitude (1,025
    float32 bins per 512-sample hop: 2x), then the mel spectrogram (0.25x)
    and the tuning's peak list; everything else runs over bounded blocks. So
    the rise over the warm process is held to 4x the signal plus 64 MiB for
    blocks and allocator slack. Before streaming (decoded stereo, its mono mix
    and the resample at once; signal-sized float64 temporaries in the
    features and in pyloudnorm) the rise was ~400 MiB, about 8x.
    """
    minutes = 10.0
    long = _long_file(tmp_path / "long.wav", minutes)
    warm = tmp_path / "warm.wav"
    sf.write(warm, music(4.0, 44100, 2), 44100, subtype="PCM_16")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(warm), str(long), str(tmp_path / "work")], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    signal_mib = minutes * 60 * TARGET_SR * 4 / 2**20
    rise = got["peak_mib"] - got["baseline_mib"]
    assert rise < 4 * signal_mib + 64, (f"peak {got['peak_mib']:.0f} MiB, {rise:.0f} MiB above the warm baseline "
                                        f"({rise / signal_mib:.1f}x the {signal_mib:.0f} MiB signal)")
    assert rise > signal_mib, got  # the long file really was analysed in the child
