"""Frame features: known answers on simple signals, librosa's definitions, the shared frame grid."""

import math

import numpy as np
import pytest
import scipy.signal

from core.pipeline import features
from core.pipeline.analyze import analyze_audio
from tests import synth

SR = synth.SR


def _frames(y, n_mfcc=20):
    spectra = features.compute_spectra(y, SR, 2048, 512, 128)
    return spectra, features.frame_features(y, spectra, n_mfcc, 0.0)


def test_stft_matches_a_direct_dft_of_one_centred_frame():
    y = synth.noise(0.5, seed=4)
    S = features.stft_magnitude(y, 2048, 512)
    assert S.shape == (1025, 1 + len(y) // 512) and S.dtype == np.float32
    window = scipy.signal.get_window("hann", 2048, fftbins=True)
    frame = 10  # centred at sample 5120
    direct = np.abs(np.fft.rfft(y[5120 - 1024 : 5120 + 1024] * window))
    assert np.allclose(S[:, frame], direct, rtol=1e-4, atol=1e-4)


def test_every_frame_feature_shares_one_grid():
    y = synth.drum_pattern(120, 2)
    spectra, f = _frames(y, n_mfcc=13)
    n = spectra.n_frames
    assert n == 1 + len(y) // 512
    for name in ("rms", "centroid", "bandwidth", "rolloff", "flatness", "zcr", "onset", "low_band"):
        arr = getattr(f, name)
        assert arr.shape == (n,), name
        assert np.all(np.isfinite(arr)), name
    assert f.chroma.shape == (12, n) and f.mfcc.shape == (13, n) and f.contrast.shape == (7, n)
    assert f.times[1] == pytest.approx(512 / SR)


def test_sine_has_its_frequency_as_centroid_rolloff_and_zero_crossings():
    y = synth.sine(1000.0, 2.0, rms_db=-10.0)
    _, f = _frames(y)
    mid = slice(5, -5)
    assert np.median(f.centroid[mid]) == pytest.approx(1000.0, abs=15.0)
    assert np.median(f.rolloff[mid]) == pytest.approx(1000.0, abs=25.0)
    assert np.median(f.bandwidth[mid]) < 60.0
    assert np.median(f.zcr[mid]) == pytest.approx(2 * 1000.0 / SR, rel=0.01)
    assert np.median(f.rms[mid]) == pytest.approx(10 ** (-10 / 20), rel=0.01)
    assert np.median(f.flatness[mid]) < 0.01


def test_white_noise_is_flat_and_bright():
    _, f = _frames(synth.noise(2.0, seed=5))
    mid = slice(5, -5)
    assert np.median(f.flatness[mid]) > 0.4
    assert np.median(f.centroid[mid]) == pytest.approx(SR / 4, rel=0.05)
    assert np.median(f.zcr[mid]) == pytest.approx(0.5, abs=0.03)


def test_spectral_shape_matches_the_textbook_formulas():
    # librosa's definitions, written out the slow way (librosa.feature itself is not
    # imported: it compiles numba kernels on import).
    y = synth.mix(synth.drum_pattern(100, 1), synth.chord_cadence("C major", chord_s=0.5, repeats=1))
    S = features.stft_magnitude(y, 2048, 512).astype(np.float64)[:, ::7]
    freq = np.arange(1025) * SR / 2048
    c, b, r = features.spectral_shape(S, freq)
    for t in range(S.shape[1]):
        if S[:, t].sum() == 0:
            continue
        p = S[:, t] / S[:, t].sum()
        centroid = np.sum(freq * p)
        assert c[t] == pytest.approx(centroid, rel=1e-6)
        assert b[t] == pytest.approx(np.sqrt(np.sum(p * (freq - centroid) ** 2)), rel=1e-5)
        assert r[t] == freq[np.flatnonzero(np.cumsum(S[:, t]) >= 0.85 * S[:, t].sum())[0]]
        power = np.maximum(1e-10, S[:, t] ** 2)
        flat = np.exp(np.mean(np.log(power))) / np.mean(power)
        assert features.spectral_flatness(S[:, t : t + 1])[0] == pytest.approx(flat, rel=1e-9)


def test_contrast_is_high_for_tones_and_low_for_noise():
    freq = np.arange(1025) * SR / 2048
    tone = features.stft_magnitude(synth.tone(440.0, 1.0), 2048, 512)[:, 10:30]
    noise = features.stft_magnitude(synth.noise(1.0, seed=9), 2048, 512)[:, 10:30]
    band_of_440 = 2  # bands: 0-200, 200-400, 400-800 Hz, ...: 440 Hz sits in band 2
    assert features.spectral_contrast(tone, freq)[band_of_440].mean() > 40.0
    assert features.spectral_contrast(noise, freq).mean() < 25.0


def test_silent_frames_have_zero_shape_features():
    S = np.zeros((1025, 4), dtype=np.float32)
    c, b, r = features.spectral_shape(S, np.arange(1025) * 10.0)
    assert not np.any(c) and not np.any(b) and not np.any(r)


def test_contrast_bands_fit_below_nyquist():
    assert features.contrast_bands(22050) == 6
    assert features.contrast_bands(8000) == 5  # 200 * 2**4 = 3200 < 4000
    assert features.contrast_bands(1000) == 2  # 0-200, 200-400 (< Nyquist), 400-800
    assert features.contrast_bands(600) == 1


def test_onset_envelope_peaks_at_each_click_and_counts_a_hit_at_zero():
    bpm, n = 120.0, 8
    y = synth.click_track(bpm, n)
    _, f = _frames(y)
    fps = SR / 512
    onsets = (features.pick_onsets(f.onset, fps) + features.onset_delay_frames(2048, 512)) / fps
    assert len(onsets) == n
    assert np.allclose(onsets, synth.beat_times(bpm, n), atol=0.025)
    assert onsets[0] < 0.03  # the click at t=0 counts


def test_onset_delay_is_about_half_a_frame_for_the_defaults():
    assert features.onset_delay_frames(2048, 512) == pytest.approx(0.5)
    assert features.onset_delay_frames(4096, 512) == pytest.approx(1.5)


def test_low_band_follows_the_kick_not_the_hihat():
    y = synth.concat(synth.kick(), synth.silence(0.3), synth.hihat(), synth.silence(0.3))
    _, f = _frames(y)
    kick_frames = slice(0, 8)
    hat_start = int((len(synth.kick()) / SR + 0.3) * SR / 512)
    hat_frames = slice(hat_start, hat_start + 4)
    assert f.low_band[kick_frames].max() > 100 * f.low_band[hat_frames].max()


def test_rms_and_zcr_follow_librosa_framing():
    y = synth.noise(0.3, seed=6)
    rms = features.frame_rms(y, 2048, 512)
    i = 7  # frame centred on sample 3584: samples 2560..4608 of y
    assert rms[i] == pytest.approx(math.sqrt(np.mean(np.square(y[2560:4608].astype(float)))), rel=1e-6)
    zcr = features.zero_crossing_rate(y, 2048, 512)
    seg = y[2560:4608]
    neg = seg < 0
    assert zcr[i] == pytest.approx(np.count_nonzero(neg[1:] != neg[:-1]) / 2048)
    assert len(rms) == len(zcr) == 1 + len(y) // 512


def test_mfcc_first_coefficient_tracks_level():
    loud = analyze_audio(synth.noise(2.0, rms_db=-10.0, color="pink"), SR).frames.mfcc
    quiet = analyze_audio(synth.noise(2.0, rms_db=-30.0, color="pink"), SR).frames.mfcc
    assert loud[0].mean() > quiet[0].mean() + 100  # 20 dB over 128 bands, orthonormal DCT: ~20*sqrt(128)
    assert np.allclose(loud[1:6].mean(axis=1), quiet[1:6].mean(axis=1), atol=2.0)  # same spectral shape


def test_frames_between_slices_by_frame_centre():
    _, f = _frames(synth.silence(2.0))
    fps = SR / 512
    sl = f.frames_between(1.0, 1.5)
    assert sl.start == math.ceil(1.0 * fps) and sl.stop == math.ceil(1.5 * fps)
    assert f.frames_between(5.0, 6.0) == slice(f.n_frames, f.n_frames)


def test_levels_of_silence_and_clipping():
    silent = features.measure_levels(np.zeros(SR, dtype=np.float32), SR)
    assert silent.loudness_lufs is None and "silent" in silent.loudness_note
    assert silent.peak_dbfs == silent.rms_dbfs == -120.0
    clipped = features.measure_levels(np.clip(3 * synth.sine(100.0, 1.0, rms_db=0.0), -1, 1), SR)
    assert clipped.peak_dbfs == pytest.approx(0.0, abs=1e-6)
    assert clipped.loudness_lufs is not None
