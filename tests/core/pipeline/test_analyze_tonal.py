"""Key and tuning: cadences in all 24 keys, detuned recordings, the key profiles themselves."""

import numpy as np
import pytest

from core.pipeline import tonal
from core.pipeline.analyze import AnalysisConfig, analyze_audio
from tests import synth

SR = synth.SR

# Position of each natural on the line of fifths, counted from C (F is one flat, B five sharps).
_LETTER_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}


def _signature(key: str) -> int:
    """Sharps (> 0) or flats (< 0) in the key signature of a spelled key, e.g. ``"Bb major" -> -2``."""
    tonic, mode = key.split()
    fifths = _LETTER_FIFTHS[tonic[0]] + 7 * (tonic.count("#") - tonic.count("b"))
    return fifths - 3 if mode == "minor" else fifths  # a minor key shares its relative major's signature


def _conventional(key: str) -> str:
    """The name Stave gives the key that ``key`` names in any spelling."""
    tonic_pc, mode = synth.parse_key(key)
    return tonal.KEY_NAMES[tonic_pc + (12 if mode == "minor" else 0)]


def test_key_names_are_spelled_as_key_signatures():
    for i, name in enumerate(tonal.KEY_NAMES):
        assert synth.parse_key(name) == (i % 12, "major" if i < 12 else "minor")
        assert abs(_signature(name)) <= 6, name  # the enharmonic spelling would need 6 or more
    assert len(set(tonal.KEY_NAMES)) == 24
    assert "Bb major" in tonal.KEY_NAMES and "A# major" not in tonal.KEY_NAMES
    # the two 6-accidental ties take their parallel key's tonic name ...
    assert ("F# major", "Eb minor") == (_conventional("Gb major"), _conventional("D# minor"))
    # ... so a pitch class has one name in both modes wherever one name fits both signatures
    for major, minor in zip(tonal.MAJOR_TONICS, tonal.MINOR_TONICS):
        one_fits_both = min(abs(_signature(f"{major} minor")), abs(_signature(f"{minor} major"))) <= 6
        assert major == minor or not one_fits_both, (major, minor)
    assert tonal.PITCH_NAMES[10] == "A#"  # pitch classes (chroma columns) keep MIDI's sharps


def test_both_spellings_of_a_key_parse_to_the_same_cadence():
    for sharp in synth.all_keys():
        name = _conventional(sharp)
        assert synth.parse_key(name) == synth.parse_key(sharp)
        assert synth.cadence_chords(name) == synth.cadence_chords(sharp)
    assert synth.parse_key("Gb major") == synth.parse_key("F# major")
    assert synth.parse_key("D# minor") == synth.parse_key("Eb minor")


@pytest.mark.parametrize("key", synth.all_keys())
def test_cadence_key_is_exact_in_all_24_keys(key):
    """Synthesized from the sharp spelling, reported with the key signature's."""
    r = analyze_audio(synth.chord_cadence(key, chord_s=0.75, repeats=2), SR)
    assert r.key.key == _conventional(key)
    assert abs(_signature(r.key.key)) <= 6 and abs(_signature(r.key.runner_up)) <= 6
    assert r.key.runner_up in tonal.KEY_NAMES and r.key.runner_up != r.key.key
    assert r.key.score > r.key.runner_up_score
    assert 0.1 < r.key.confidence <= 1.0
    assert abs(r.tuning_cents) <= 2.0


@pytest.mark.parametrize("key, cents", [("D major", 30.0), ("F# minor", -40.0), ("Bb major", 45.0), ("G minor", -20.0)])
def test_tuning_is_estimated_and_does_not_move_the_key(key, cents):
    r = analyze_audio(synth.chord_cadence(key, chord_s=0.75, tuning_cents=cents), SR)
    assert r.tuning_cents == pytest.approx(cents, abs=6.0)
    assert r.key.key == key


@pytest.mark.parametrize("profile", sorted(tonal.PROFILES))
def test_each_profile_names_its_own_key(profile):
    major, minor = (np.asarray(p) for p in tonal.PROFILES[profile])
    for shift in (0, 5, 11):
        assert tonal.estimate_key(np.roll(major, shift), profile).key == tonal.KEY_NAMES[shift]
        assert tonal.estimate_key(np.roll(minor, shift), profile).key == tonal.KEY_NAMES[12 + shift]
    perfect = tonal.estimate_key(major, profile)
    assert perfect.score == pytest.approx(1.0)
    assert len(perfect.scores) == 24 and max(perfect.scores) == perfect.score


def test_configured_profile_is_used():
    y = synth.chord_cadence("E minor", chord_s=0.75)
    for profile in tonal.PROFILES:
        r = analyze_audio(y, SR, AnalysisConfig(key_profile=profile))
        assert r.key.key == "E minor"
        assert r.key.scores == tonal.estimate_key(
            tonal.key_profile_from_chroma(r.frames.chroma, r.frames.rms), profile).scores


def test_flat_or_empty_chroma_has_no_key():
    for chroma in (np.zeros(12), np.ones(12)):
        k = tonal.estimate_key(chroma)
        assert k.key is None and k.runner_up is None and k.confidence == 0.0
    with pytest.raises(ValueError, match="key_profile"):
        tonal.estimate_key(np.arange(12.0), "unknown")


def test_key_profile_weights_frames_by_energy():
    chroma = np.zeros((12, 4))
    chroma[0, :2] = 1.0  # C in two loud frames
    chroma[6, 2:] = 1.0  # F# in two near-silent frames
    weighted = tonal.key_profile_from_chroma(chroma, np.array([1.0, 1.0, 0.01, 0.01]))
    assert weighted[0] > 50 * weighted[6]
    assert np.allclose(tonal.key_profile_from_chroma(chroma), chroma.mean(axis=1))


@pytest.mark.parametrize("cents", [-45.0, -12.0, 0.0, 25.0])
def test_estimate_tuning_of_detuned_partials(cents):
    # a melody of harmonic tones, all shifted by `cents`
    notes = [(60 + i, 0.3 * i, 0.3) for i in range(12)]
    y = synth.melody(notes, tuning_cents=cents)
    from core.pipeline.features import stft_magnitude

    t = tonal.estimate_tuning(stft_magnitude(y, 2048, 512), SR, 2048)
    assert 100 * t == pytest.approx(cents, abs=5.0)
    assert tonal.estimate_tuning(np.zeros((1025, 10), dtype=np.float32), SR, 2048) == 0.0


def test_pitch_tuning_histogram():
    f = synth.midi_to_hz(69, 10.0) * np.array([1.0, 2.0, 1.5 * 2 ** (2 / 1200)])  # A, A', E (~+12 cents)
    assert tonal.pitch_tuning(f) == pytest.approx(0.10, abs=0.011)
    wrap = np.array([synth.midi_to_hz(57, -48.0)] * 3)
    assert tonal.pitch_tuning(wrap) == pytest.approx(-0.48, abs=0.011)


def test_chroma_of_single_notes_peaks_at_their_pitch_class():
    from core.pipeline.features import stft_magnitude

    for midi in (57, 61, 64, 70):  # A3, C#4, E4, A#4
        y = synth.tone(synth.midi_to_hz(midi), 1.0)
        power = np.square(stft_magnitude(y, 2048, 512))
        chroma = tonal.chroma_from_power(power, SR, 2048, 0.0)
        assert chroma.shape[0] == 12
        assert int(np.argmax(chroma[:, 10:30].mean(axis=1))) == midi % 12
        assert chroma.max() == pytest.approx(1.0)
    fb = tonal.chroma_filterbank(SR, 2048)
    assert fb.shape == (12, 1025) and np.all(fb >= 0)
