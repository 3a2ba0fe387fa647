import re
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ingest
from core.pipeline.preprocess import (
    integrated_loudness,
    normalize_loudness,
    preprocess,
    resample,
    to_mono,
    trim_silence,
)
from core.resilience.errors import ErrorKind, InputError


def sine(freq, seconds, sr, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def dominant_hz(y, sr):
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.argmax(spectrum) * sr / len(y)


def padded(y, sr, before_s, after_s):
    return np.concatenate([np.zeros(int(before_s * sr), np.float32), y, np.zeros(int(after_s * sr), np.float32)])


# --- building blocks -------------------------------------------------------------


def test_to_mono_averages_channels_and_passes_mono_through():
    a = np.stack([np.full(10, 0.2), np.full(10, 0.4), np.full(10, 0.9)]).astype(np.float32)
    m = to_mono(a)
    assert m.shape == (10,) and m.dtype == np.float32 and np.allclose(m, 0.5)
    one = np.ones((1, 5), np.float32)
    assert np.shares_memory(to_mono(one), one)  # no copy for a single channel
    flat = np.ones(5, np.float64)
    assert to_mono(flat).dtype == np.float32
    with pytest.raises(ValueError, match="channels, frames"):
        to_mono(np.ones((2, 3, 4)))


def test_resample_keeps_a_sines_frequency_and_the_duration():
    y = sine(1000, 2.0, 44100)
    out = resample(y, 44100, 22050)
    assert out.dtype == np.float32 and len(out) == pytest.approx(44100, abs=2)
    assert dominant_hz(out, 22050) == pytest.approx(1000, abs=1)
    assert np.std(out) == pytest.approx(np.std(y), rel=0.01)
    assert resample(y, 22050, 22050) is y


def test_resample_multichannel_is_channels_first():
    a = np.stack([sine(500, 1.0, 48000), sine(2000, 1.0, 48000)])
    out = resample(a, 48000, 16000)
    assert out.shape == (2, 16000)
    assert dominant_hz(out[0], 16000) == pytest.approx(500, abs=1)
    assert dominant_hz(out[1], 16000) == pytest.approx(2000, abs=1)


def test_normalize_loudness_reaches_the_target():
    rng = np.random.default_rng(1)
    y = (0.05 * rng.standard_normal(22050 * 5)).astype(np.float32)
    before = integrated_loudness(y, 22050)
    out, gain = normalize_loudness(y, 22050, -16.0)
    assert out.dtype == np.float32
    assert gain == pytest.approx(-16.0 - before)
    assert integrated_loudness(out, 22050) == pytest.approx(-16.0, abs=0.1)


def test_normalize_loudness_leaves_silence_and_tiny_clips_alone():
    silent = np.zeros(22050 * 3, np.float32)
    out, gain = normalize_loudness(silent, 22050, -23.0)
    assert gain == 0.0 and out is silent
    short = sine(440, 0.2, 22050)
    assert normalize_loudness(short, 22050, -23.0) == (short, 0.0)


def test_trim_silence_returns_a_view_and_the_offset():
    sr = 22050
    y = padded(sine(440, 3.0, sr, amp=0.1), sr, 1.25, 0.75)
    trimmed, offset = trim_silence(y, sr, -60.0)
    assert offset == pytest.approx(1.25, abs=0.011)
    assert len(trimmed) / sr == pytest.approx(3.0, abs=0.02)
    assert np.shares_memory(trimmed, y)
    # the first sound sample is kept
    first = int(1.25 * sr)
    assert int(round(offset * sr)) <= first


def test_trim_silence_threshold_is_in_dbfs():
    sr = 22050
    quiet = sine(440, 2.0, sr, amp=10 ** (-50 / 20))  # RMS about -53 dBFS
    y = padded(quiet, sr, 1.0, 1.0)
    assert trim_silence(y, sr, -60.0)[1] == pytest.approx(1.0, abs=0.011)
    untouched, offset = trim_silence(y, sr, -40.0)  # nothing reaches -40: left whole
    assert offset == 0.0 and len(untouched) == len(y)


# --- preprocess -------------------------------------------------------------------


def test_preprocess_without_native_audio():
    sr = 44100
    audio = np.stack([padded(sine(440, 3.0, sr), sr, 0.5, 0.5), padded(sine(440, 3.0, sr, 0.25), sr, 0.5, 0.5)])
    res = preprocess(audio, sr, PipelineConfig())
    assert res.sr == 22050 and res.y.dtype == np.float32 and res.y.ndim == 1 and res.y.flags.c_contiguous
    assert res.native is None and res.native_sr == sr and res.gain_db == 0.0
    assert res.trim_offset_s == pytest.approx(0.5, abs=0.011)
    assert res.duration_s == pytest.approx(3.0, abs=0.02)
    assert dominant_hz(res.y, 22050) == pytest.approx(440, abs=1)
    assert np.max(np.abs(res.y)) == pytest.approx(0.375, abs=0.01)  # mean of the two channels


@pytest.mark.parametrize("flags", [{"separate": True}, {"export_bar_audio": True}])
def test_preprocess_keeps_native_audio_only_when_needed_without_copying(flags):
    sr = 22050
    audio = np.stack([sine(440, 3.0, sr), sine(440, 3.0, sr)])
    res = preprocess(audio, sr, PipelineConfig(trim_silence=False, **flags))
    assert res.native is audio and res.native_sr == sr
    assert not np.shares_memory(res.y, res.native)
    mono = np.asarray(sine(440, 3.0, sr))[np.newaxis, :]
    res = preprocess(mono, sr, PipelineConfig(trim_silence=False, **flags))
    assert res.native is mono and not np.shares_memory(res.y, mono)


def test_event_times_map_back_to_the_original_timeline():
    sr = 22050
    y = np.zeros(sr * 6, np.float32)
    y[int(1.0 * sr) : int(5.0 * sr)] = 0.01 * np.random.default_rng(0).standard_normal(int(4.0 * sr))
    click_s = 2.5
    y[int(click_s * sr)] = 0.9
    res = preprocess(y[np.newaxis, :], sr, PipelineConfig())
    found = np.argmax(np.abs(res.y)) / res.sr + res.trim_offset_s
    assert found == pytest.approx(click_s, abs=1 / sr)


def test_preprocess_normalises_loudness_when_asked():
    sr = 22050
    y = sine(440, 4.0, sr, amp=0.05)[np.newaxis, :]
    res = preprocess(y, sr, PipelineConfig(normalize_loudness=True, target_lufs=-18.0))
    assert integrated_loudness(res.y, sr) == pytest.approx(-18.0, abs=0.1)
    assert res.gain_db > 0


def test_too_little_sound_after_trimming_is_rejected():
    sr = 22050
    y = padded(sine(440, 1.0, sr), sr, 3.0, 3.0)[np.newaxis, :]
    with pytest.raises(InputError) as e:
        preprocess(y, sr, PipelineConfig())
    assert e.value.kind is ErrorKind.INPUT_EMPTY and re.search(r"1\.0\d s of sound", e.value.reason)
    assert preprocess(y, sr, PipelineConfig(trim_silence=False)).duration_s == pytest.approx(7.0)


def test_eight_channel_96k_file_mixes_and_resamples(tmp_path):
    sr = 96000
    amps = np.linspace(0.1, 0.8, 8)
    tone = np.sin(2 * np.pi * 1000 * np.arange(3 * sr) / sr)
    path = tmp_path / "surround.wav"
    sf.write(path, (tone[:, None] * amps[None, :]).astype(np.float32), sr, subtype="PCM_24")

    ing = ingest(path, PipelineConfig())
    assert ing.audio.shape == (8, 3 * sr) and ing.sr == sr
    res = preprocess(ing.audio, ing.sr, PipelineConfig(trim_silence=False))
    assert res.sr == 22050 and len(res.y) == pytest.approx(3 * 22050, abs=2)
    assert dominant_hz(res.y, 22050) == pytest.approx(1000, abs=1)
    assert np.max(np.abs(res.y[1000:-1000])) == pytest.approx(amps.mean(), rel=0.01)


def test_ten_minutes_of_stereo_needs_little_more_than_the_mono_signal():
    sr, seconds = 22050, 600
    audio = np.empty((2, sr * seconds), np.float32)
    audio[0] = 0.3
    audio[1] = -0.1
    cfg = PipelineConfig(analysis_sr=11025, trim_silence=True)
    tracemalloc.start()
    try:
        res = preprocess(audio, sr, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    mono_bytes = sr * seconds * 4
    assert len(res.y) == pytest.approx(11025 * seconds, abs=2)
    assert float(np.median(res.y)) == pytest.approx(0.1, abs=1e-3)
    # the full-rate mono mix plus the half-rate result, plus a little working room
    assert peak < mono_bytes * 1.6 + 8_000_000, f"peak {peak / 1e6:.0f} MB"
