"""tests/synth.py: the audio other tests build on says what it claims to contain."""

import numpy as np
import pytest

from tests import synth

SR = synth.SR


def _peak_hz(y: np.ndarray, sr: int = SR) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spec) * sr / len(y))


def test_levels_helpers():
    s = synth.sine(1000.0, 1.0, rms_db=-20.0)
    assert s.dtype == np.float32 and len(s) == SR
    assert synth.rms_dbfs(s) == pytest.approx(-20.0, abs=0.01)
    assert 20 * np.log10(np.max(np.abs(s))) == pytest.approx(-16.99, abs=0.01)
    assert synth.rms_dbfs(synth.set_rms_dbfs(s, -6.0)) == pytest.approx(-6.0, abs=1e-4)
    assert np.max(np.abs(synth.set_peak_dbfs(s, 0.0))) == pytest.approx(1.0, abs=1e-6)
    assert not np.any(synth.silence(0.5)) and len(synth.silence(0.5, sr=8000)) == 4000


def test_noise_is_seeded_and_coloured():
    a, b = synth.noise(1.0, seed=1), synth.noise(1.0, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, synth.noise(1.0, seed=2))
    assert synth.rms_dbfs(synth.noise(1.0, rms_db=-12.0, color="pink")) == pytest.approx(-12.0, abs=0.01)
    pink = np.abs(np.fft.rfft(synth.noise(2.0, color="pink"))) ** 2
    n = len(pink)
    assert pink[n // 100 : n // 50].mean() > 10 * pink[n // 2 : n].mean()
    with pytest.raises(ValueError, match="color"):
        synth.noise(1.0, color="blue")


def test_click_track_places_clicks_on_the_beat():
    y = synth.click_track(100.0, 6, offset_s=0.2, tail_s=0.3, accent_every=3)
    assert len(y) == round((0.2 + 6 * 0.6 + 0.3) * SR)
    starts = np.flatnonzero((np.abs(y[1:]) > 1e-4) & (np.abs(y[:-1]) <= 1e-4) )
    hits = [s for i, s in enumerate(starts) if i == 0 or s - starts[i - 1] > 0.1 * SR]
    assert np.allclose(np.array(hits) / SR, synth.beat_times(100.0, 6, 0.2), atol=0.002)
    loud = [np.max(np.abs(y[h : h + 300])) for h in hits]
    assert loud[0] > loud[1] and loud[3] > loud[4]  # accents on 1 and 4


def test_drum_pattern_length_meter_and_bar_gains():
    y = synth.drum_pattern(120.0, 3, numerator=3, tail_s=0.5)
    assert len(y) == round((3 * 3 * 0.5 + 0.5) * SR)
    gains = synth.drum_pattern(120.0, 2, bar_gains=[1.0, 0.1], tail_s=0.0)
    first, second = gains[: len(gains) // 2], gains[len(gains) // 2 :]
    assert synth.rms_dbfs(first) - synth.rms_dbfs(second) == pytest.approx(20.0, abs=1.5)
    with pytest.raises(ValueError, match="bar_gains"):
        synth.drum_pattern(120.0, 2, bar_gains=[1.0])
    with pytest.raises(ValueError, match="meter"):
        synth.drum_pattern(120.0, 2, denominator=3)
    assert synth.default_pattern(4) == {"kick": ((0.0, 1.0), (2.0, 0.7)), "snare": ((1.0, 0.8), (3.0, 0.8))}
    assert synth.default_pattern(3)["snare"] == ((1.0, 0.8), (2.0, 0.8))


def test_drum_sounds_sit_in_their_bands():
    assert _peak_hz(synth.kick()) < 120
    assert _peak_hz(synth.hihat()) > 4000
    snare = synth.snare()
    spec = np.abs(np.fft.rfft(snare * np.hanning(len(snare))))
    hz = np.arange(len(spec)) * SR / len(snare)
    body = (hz > 100) & (hz < 400)
    assert hz[body][np.argmax(spec[body])] == pytest.approx(190.0, abs=10.0)  # the drum body
    assert np.sum(spec[hz > 1000] ** 2) > np.sum(spec[hz < 1000] ** 2)  # the rattle is broadband noise


def test_ground_truth_helpers():
    assert np.allclose(synth.beat_times(120.0, 3, 1.0), [1.0, 1.5, 2.0])
    assert synth.bar_count(8.0, 120.0) == 4 and synth.bar_count(7.99, 120.0) == 3
    assert synth.midi_to_hz(69) == pytest.approx(440.0)
    assert synth.midi_to_hz(69, tuning_cents=100) == pytest.approx(synth.midi_to_hz(70))
    assert synth.key_name(9, "minor") == "A minor"
    assert synth.parse_key("Eb major") == (3, "major") == synth.parse_key("D# major")
    assert len(set(synth.all_keys())) == 24
    for bad in ("H major", "C dorian", "Cmajor"):
        with pytest.raises(ValueError):
            synth.parse_key(bad)


@pytest.mark.parametrize("key, expected", [
    ("C major", [{0, 4, 7}, {5, 9, 0}, {7, 11, 2}, {0, 4, 7}]),
    ("A minor", [{9, 0, 4}, {2, 5, 9}, {4, 8, 11}, {9, 0, 4}]),  # harmonic V: E G# B
])
def test_cadence_chords_are_the_right_triads(key, expected):
    chords = synth.cadence_chords(key)
    assert [set(m % 12 for m in chord) for chord in chords] == expected
    for chord in chords:
        assert chord[0] % 12 == chord[1] % 12 and chord[0] == chord[1] - 12  # bass doubles the root


def test_chord_cadence_length_and_tuning():
    y = synth.chord_cadence("G major", chord_s=0.5, repeats=3, peak_db=-6.0)
    assert len(y) == round(0.5 * SR) * 12
    assert 20 * np.log10(np.max(np.abs(y))) == pytest.approx(-6.0, abs=0.01)


def test_melody_notes_sound_at_their_pitch_and_time():
    notes = [(69, 0.0, 0.5), (76, 0.6, 0.5)]
    y = synth.melody(notes, n_harmonics=1, tail_s=0.1)
    assert len(y) == round(1.2 * SR)
    assert _peak_hz(y[: int(0.5 * SR)]) == pytest.approx(440.0, abs=3.0)
    assert _peak_hz(y[int(0.6 * SR) : int(1.1 * SR)]) == pytest.approx(synth.midi_to_hz(76), abs=3.0)
    assert np.max(np.abs(y[int(0.5 * SR) + 10 : int(0.6 * SR) - 10])) < 1e-6  # the gap is silent
    with pytest.raises(ValueError, match="bad note"):
        synth.melody([(60, 0.0, 0.0)])
    assert not np.any(synth.melody([]))


def test_mix_and_concat():
    a, b = np.ones(3, dtype=np.float32), np.ones(5, dtype=np.float32)
    assert synth.mix(a, b).tolist() == [2, 2, 2, 1, 1]
    assert len(synth.concat(a, b)) == 8
