"""analyze_audio end to end: the summary contract, loudness, edge inputs, per-bar rows."""

import json

import numpy as np
import pytest

from core.pipeline import analyze as analyze_mod
from core.pipeline import features as features_mod
from core.pipeline.analyze import CHROMA_COLUMNS, AnalysisConfig, AnalysisResult, analyze_audio, bar_features
from core.pipeline.rhythm import Bar
from core.resilience.errors import ErrorKind, InputError
from tests import synth

SR = synth.SR

SUMMARY_KEYS = {
    "duration_s", "sample_rate", "time_signature", "tempo_bpm", "tempo_confidence", "tempo_alternatives",
    "beats", "beat_times", "downbeat_times", "bars", "key", "key_score", "key_confidence", "key_runner_up",
    "key_runner_up_score", "loudness_lufs", "loudness_note", "peak_dbfs", "rms_dbfs",
    "spectral_centroid_mean", "spectral_bandwidth_mean", "spectral_rolloff_mean", "spectral_flatness_mean",
    "spectral_contrast_mean", "zcr_mean", "onset_strength_mean", "onset_rate", "tuning_cents",
    "mfcc_mean", "mfcc_std", "chroma_mean",
}


def _assert_plain_json(value, path="summary"):
    """Only JSON-native Python types, no numpy scalars, no NaN/inf."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{path}: key {k!r}"
            _assert_plain_json(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _assert_plain_json(v, f"{path}[{i}]")
    else:
        assert value is None or type(value) in (str, int, float, bool), f"{path} is {type(value).__name__}"
        if type(value) is float:
            assert np.isfinite(value), f"{path} is {value}"


@pytest.fixture(scope="module")
def song() -> AnalysisResult:
    """Four bars of drums at 120 BPM under an A minor cadence, one chord per bar."""
    bpm, bars = 120.0, 4
    drums = synth.drum_pattern(bpm, bars, tail_s=0.0)
    chords = synth.chord_cadence("A minor", chord_s=4 * 60 / bpm, repeats=1, peak_db=-6.0)
    return analyze_audio(synth.mix(drums, chords), SR)


def test_summary_has_the_contract_keys_and_plain_json_values(song):
    summary = song.to_summary_dict()
    assert SUMMARY_KEYS <= summary.keys()
    _assert_plain_json(summary)
    json.dumps(summary, allow_nan=False)
    assert summary["sample_rate"] == SR
    assert summary["time_signature"] == "4/4"
    assert summary["beats"] == len(summary["beat_times"]) == 16
    assert summary["bars"] == len(summary["downbeat_times"]) == 4
    assert summary["key"] == "A minor"
    assert summary["key_runner_up"] not in (None, "A minor")
    assert 0.0 < summary["key_confidence"] <= 1.0
    assert summary["tempo_bpm"] == pytest.approx(120.0, rel=0.02)
    assert len(summary["mfcc_mean"]) == len(summary["mfcc_std"]) == AnalysisConfig().n_mfcc
    assert len(summary["chroma_mean"]) == 12
    relations = {a["relation"]: a for a in summary["tempo_alternatives"]}
    assert relations["half"]["bpm"] == pytest.approx(summary["tempo_bpm"] / 2)
    assert relations["double"]["bpm"] == pytest.approx(summary["tempo_bpm"] * 2)
    assert all(0.0 <= a["score"] <= 1.0 for a in relations.values())
    assert 0.0 < summary["tempo_confidence"] <= 1.0
    assert summary["duration_s"] == pytest.approx(8.0, abs=0.01)


def test_bar_rows_are_one_per_bar_with_all_columns(song):
    rows = bar_features(song)
    assert len(rows) == len(song.bars) == 4
    n_mfcc = song.config.n_mfcc
    for i, row in enumerate(rows):
        assert row["bar"] == i
        assert row["beats"] == 4
        assert row["duration_s"] == pytest.approx(2.0, abs=0.06)
        assert row["end_s"] == pytest.approx(row["start_s"] + row["duration_s"])
        assert set(CHROMA_COLUMNS) <= row.keys()
        assert {f"mfcc_{k}" for k in range(n_mfcc)} <= row.keys()
        _assert_plain_json(row)
    # one chord per bar: A minor, D minor, E major, A minor -> the bar's chroma names its root
    roots = [max(CHROMA_COLUMNS, key=row.get) for row in rows]
    assert roots[0] == roots[3] == "chroma_A"
    assert roots[1] in ("chroma_D", "chroma_A")  # D minor = D F A
    assert roots[2] in ("chroma_E", "chroma_B")  # E major = E G# B


def test_bar_features_are_slices_of_the_frame_features(song, monkeypatch):
    def no_reanalysis(*args, **kwargs):
        raise AssertionError("bar_features must not compute spectra again")

    monkeypatch.setattr(features_mod, "compute_spectra", no_reanalysis)
    monkeypatch.setattr(analyze_mod, "compute_spectra", no_reanalysis)
    rows = bar_features(song)
    f = song.frames
    for bar, row in zip(song.bars, rows):
        sl = f.frames_between(bar.start_s, bar.end_s)
        assert row["frames"] == sl.stop - sl.start > 0
        assert row["rms_mean"] == pytest.approx(float(f.rms[sl].mean()))
        assert row["centroid_mean"] == pytest.approx(float(f.centroid[sl].mean()))
        assert row["chroma_A"] == pytest.approx(float(f.chroma[9, sl].mean()))
        assert row["mfcc_3"] == pytest.approx(float(f.mfcc[3, sl].mean()))
        times = f.times[sl]
        assert times[0] >= bar.start_s and times[-1] < bar.end_s


def test_loud_then_quiet_bars_show_in_the_rows():
    y = synth.drum_pattern(100.0, 4, bar_gains=[1.0, 1.0, 0.1, 0.1])
    result = analyze_audio(y, SR)
    rows = bar_features(result)
    assert len(rows) == 4
    loud = [r["rms_db"] for r in rows[:2]]
    quiet = [r["rms_db"] for r in rows[2:]]
    assert abs(loud[0] - loud[1]) < 1.5
    assert abs(quiet[0] - quiet[1]) < 1.5
    assert min(loud) - max(quiet) == pytest.approx(20.0, abs=3.0)  # a gain of 0.1 is -20 dB


def test_bar_features_from_bare_frames_and_tuples(song):
    bars = [(0, 0.0, 1.0), Bar(1, 1.0, 3.0, 4)]
    rows = bar_features(song.frames, bars, beat_times=song.beat_times)
    assert [r["bar"] for r in rows] == [0, 1]
    assert rows[1]["duration_s"] == pytest.approx(2.0)
    assert rows[0]["beats"] == 2 and rows[1]["beats"] == 4
    # a bar too short to hold a frame centre yields NaN features, not a crash
    empty = bar_features(song.frames, [(0, 0.50001, 0.50002)])[0]
    assert empty["frames"] == 0 and np.isnan(empty["rms_mean"])
    with pytest.raises(ValueError, match="needs bars"):
        bar_features(song.frames)


@pytest.mark.parametrize("sr", [22050, 44100, 48000])
def test_loudness_of_a_minus_20_dbfs_sine(sr):
    # BS.1770 reads a full-scale 1 kHz sine (RMS -3.01 dBFS) as -3.01 LUFS, so -20 dBFS RMS reads -20 LUFS.
    y = synth.sine(1000.0, 3.0, sr=sr, rms_db=-20.0)
    r = analyze_audio(y, sr)
    assert r.levels.loudness_lufs == pytest.approx(-20.0, abs=0.15)
    assert r.levels.rms_dbfs == pytest.approx(-20.0, abs=0.01)
    assert r.levels.peak_dbfs == pytest.approx(-20.0 + 3.0103, abs=0.01)
    assert r.levels.loudness_note == ""


def test_louder_signal_reads_louder_by_the_gain():
    quiet = analyze_audio(synth.noise(3.0, rms_db=-30.0, color="pink"), SR).levels.loudness_lufs
    loud = analyze_audio(synth.noise(3.0, rms_db=-18.0, color="pink"), SR).levels.loudness_lufs
    assert loud - quiet == pytest.approx(12.0, abs=0.1)


def test_short_input_has_no_loudness_and_does_not_crash():
    r = analyze_audio(synth.sine(440.0, 0.3, rms_db=-12.0), SR)
    s = r.to_summary_dict()
    assert s["loudness_lufs"] is None
    assert "400 ms" in s["loudness_note"]
    assert s["peak_dbfs"] == pytest.approx(-12.0 + 3.01, abs=0.05)
    assert s["tempo_bpm"] is None and s["beats"] == 0 and s["bars"] == 0  # null, not a 0 BPM to average
    json.dumps(s, allow_nan=False)
    tiny = analyze_audio(np.full(10, 0.1, dtype=np.float32), SR)  # shorter than one FFT window
    assert tiny.levels.loudness_lufs is None and tiny.frames.n_frames >= 1


def test_silence_gives_no_tempo_no_beats_no_key():
    r = analyze_audio(synth.silence(5.0), SR)
    s = r.to_summary_dict()
    assert s["tempo_bpm"] is None and s["tempo_confidence"] == 0.0
    assert s["beats"] == 0 and s["bars"] == 0 and s["beat_times"] == []
    assert s["key"] is None and s["key_confidence"] == 0.0
    assert s["loudness_lufs"] is None and "silent" in s["loudness_note"]
    assert s["onset_rate"] == 0.0
    _assert_plain_json(s)
    assert bar_features(r) == []


def test_noise_has_no_confident_pulse_or_key():
    r = analyze_audio(synth.noise(6.0, rms_db=-20.0, seed=3), SR)
    assert r.tempo_confidence < 0.3
    assert r.key.confidence < 0.2
    json.dumps(r.to_summary_dict(), allow_nan=False)


@pytest.mark.parametrize(
    "y, kind",
    [
        (np.zeros(0, dtype=np.float32), ErrorKind.INPUT_EMPTY),
        (np.zeros((2, 1000), dtype=np.float32), ErrorKind.INPUT_UNSUPPORTED),
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), ErrorKind.INPUT_CORRUPT),
    ],
)
def test_bad_input_raises_input_errors(y, kind):
    with pytest.raises(InputError) as info:
        analyze_audio(y, SR)
    assert info.value.kind is kind


def test_float64_and_int_rate_types_are_accepted():
    y = synth.click_track(120.0, 8).astype(np.float64)
    r = analyze_audio(y, np.int64(SR))
    assert r.sample_rate == SR and isinstance(r.sample_rate, int)
    with pytest.raises(InputError, match="sample rate"):
        analyze_audio(y, 100)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"hop_length": 0}, "hop_length"),
        ({"hop_length": 4096, "n_fft": 2048}, "hop_length"),
        ({"n_fft": 32}, "n_fft"),
        ({"n_mfcc": 0}, "n_mfcc"),
        ({"n_mfcc": 200, "n_mels": 128}, "n_mfcc"),
        ({"beats_per_bar": 0}, "beats_per_bar"),
        ({"beat_unit": 3}, "beat_unit"),
        ({"tempo_min": 5.0}, "tempo_min"),
        ({"tempo_max": 500.0}, "tempo_max"),
        ({"tempo_min": 100.0, "tempo_max": 120.0}, "tempo_max"),
        ({"key_profile": "nope"}, "key_profile"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"AnalysisConfig\.{field}\b"):
        AnalysisConfig(**kwargs)


def test_config_changes_the_analysis():
    cfg = AnalysisConfig(hop_length=256, n_mfcc=13, beats_per_bar=3, beat_unit=8)
    r = analyze_audio(synth.drum_pattern(120.0, 4, numerator=3, denominator=8), SR, cfg)
    s = r.to_summary_dict()
    assert s["time_signature"] == "3/8"
    assert len(s["mfcc_mean"]) == 13
    assert r.frames.hop_length == 256
    assert r.frames.n_frames == pytest.approx(len(synth.drum_pattern(120.0, 4, numerator=3)) / 256, abs=2)
    assert s["bars"] == 4 and s["tempo_bpm"] == pytest.approx(120.0, rel=0.02)
