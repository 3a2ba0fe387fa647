"""Audio to notes: the pYIN fallback and Basic Pitch on a synthesized melody, and notes.csv."""

from __future__ import annotations

import csv
import logging
import os
import sys

import numpy as np
import pytest

from core.pipeline import transcribe as tr
from core.pipeline.transcribe import (
    NOTES_CSV_COLUMNS,
    Note,
    basic_pitch_available,
    pitch_name,
    transcribe_basic_pitch,
    transcribe_pyin,
    write_notes_csv,
)
from core.resilience.errors import ErrorKind, InputError

SR = 22050
ONSET_TOL_S = 0.05

# (midi pitch, onset s, duration s, amplitude): C4..C5 and back, with repeated
# pitches both after a short gap (64, 64) and struck again legato (67, 67),
# and one quieter note (65) to check that velocity follows loudness.
MELODY = [
    (60, 0.25, 0.35, 0.3),
    (62, 0.65, 0.35, 0.3),
    (64, 1.05, 0.30, 0.3),
    (64, 1.40, 0.30, 0.3),
    (65, 1.75, 0.45, 0.1),
    (67, 2.25, 0.30, 0.3),
    (67, 2.55, 0.30, 0.3),
    (69, 2.90, 0.35, 0.3),
    (71, 3.30, 0.25, 0.3),
    (72, 3.60, 0.55, 0.3),
    (67, 4.20, 0.40, 0.3),
]


def tone(pitch: int, dur: float, amp: float, sr: int = SR) -> np.ndarray:
    """A harmonic tone (4 partials at -6 dB per step), 10 ms attack, decay and 50 ms release."""
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    t = np.arange(int(dur * sr)) / sr
    y = sum((0.5**k) * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(4))
    env = np.exp(-1.5 * t)
    attack, release = int(0.01 * sr), int(0.05 * sr)
    env[:attack] *= np.linspace(0, 1, attack)
    env[-release:] *= np.linspace(1, 0, release)
    return amp * y * env


def render(melody=MELODY, sr: int = SR, total_s: float = 5.0) -> np.ndarray:
    y = np.zeros(int(total_s * sr))
    for pitch, onset, dur, amp in melody:
        start = int(onset * sr)
        x = tone(pitch, dur, amp, sr)
        y[start : start + len(x)] += x
    return y.astype(np.float32)


def match(notes: list[Note], melody=MELODY) -> tuple[list[Note | None], list[Note]]:
    """Pair each true note with a found note of the same pitch starting within the tolerance."""
    unused = list(notes)
    pairs: list[Note | None] = []
    for pitch, onset, _, _ in melody:
        hits = [n for n in unused if n.pitch_midi == pitch and abs(n.onset_s - onset) <= ONSET_TOL_S]
        best = min(hits, key=lambda n: abs(n.onset_s - onset)) if hits else None
        if best is not None:
            unused.remove(best)
        pairs.append(best)
    return pairs, unused


# --- pYIN fallback ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyin_notes() -> list[Note]:
    return transcribe_pyin(render(), SR)


def test_pyin_finds_every_note_with_exact_pitch_and_onset_within_50ms(pyin_notes):
    pairs, extras = match(pyin_notes)
    missed = [MELODY[i] for i, p in enumerate(pairs) if p is None]
    assert missed == []
    # Monophonic and cleanly synthesized: a stray fragment at a release is the
    # most a correct segmentation may add; two would mean it is splitting notes.
    assert len(extras) <= 1, extras
    onsets = [n.onset_s for n in pyin_notes]
    assert onsets == sorted(onsets)
    assert all(a.offset_s <= b.onset_s + 1e-9 for a, b in zip(pyin_notes, pyin_notes[1:]))  # no overlap


def test_pyin_velocity_follows_loudness_and_confidence_is_a_probability(pyin_notes):
    pairs, _ = match(pyin_notes)
    quiet = pairs[4]  # the note at a third of the others' amplitude (-9.5 dB)
    loud = [p for i, p in enumerate(pairs) if i != 4]
    assert all(quiet.velocity < n.velocity - 10 for n in loud)
    assert all(0.5 < n.confidence <= 1.0 for n in pairs)
    assert all(1 <= n.velocity <= 127 for n in pyin_notes)


def test_pyin_handles_44k_stereo_and_durations():
    y = render(sr=44100)
    stereo = np.stack([y, 0.8 * y])
    notes = transcribe_pyin(stereo, 44100)
    pairs, extras = match(notes)
    assert None not in pairs and len(extras) <= 1
    for (pitch, onset, dur, _), note in zip(MELODY, pairs):
        assert abs(note.offset_s - (onset + dur)) < 0.1  # offsets are fuzzier (release tails)


def test_pyin_on_silence_finds_nothing_and_rejects_bad_input():
    assert transcribe_pyin(np.zeros(SR, dtype=np.float32), SR) == []
    with pytest.raises(InputError) as err:
        transcribe_pyin(np.zeros(0, dtype=np.float32), SR)
    assert err.value.kind is ErrorKind.INPUT_EMPTY
    with pytest.raises(ValueError, match="fmin"):
        transcribe_pyin(render(), SR, fmin="C7", fmax="C2")


# --- Note and notes.csv -------------------------------------------------------------------


def test_pitch_names_and_note_validation():
    assert [pitch_name(p) for p in (21, 60, 61, 69, 127)] == ["A0", "C4", "C#4", "A4", "G9"]
    note = Note(pitch_midi=61, onset_s=1.0, offset_s=1.5, velocity=90, confidence=0.8)
    assert note.pitch_name == "C#4" and note.duration_s == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pitch_midi"):
        Note(pitch_midi=128, onset_s=0, offset_s=1, velocity=1, confidence=1)
    with pytest.raises(ValueError, match="onset_s"):
        Note(pitch_midi=60, onset_s=2, offset_s=1, velocity=1, confidence=1)


def test_notes_csv_round_trips_sorted_with_documented_columns(tmp_path):
    notes = [
        Note(64, 1.25, 1.5, 100, 0.9),
        Note(60, 0.5, 1.0, 80, 0.75),
        Note(67, 1.25, 2.0, 70, 0.5),
    ]
    path = write_notes_csv(notes, tmp_path / "song" / "notes.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == NOTES_CSV_COLUMNS
    assert [int(r["pitch_midi"]) for r in rows] == [60, 64, 67]
    assert rows[0] == {
        "onset_s": "0.5",
        "offset_s": "1.0",
        "duration_s": "0.5",
        "pitch_midi": "60",
        "pitch_name": "C4",
        "velocity": "80",
        "confidence": "0.75",
    }
    assert sorted(os.listdir(path.parent)) == ["notes.csv"]  # no temp file left behind


def test_notes_csv_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "notes.csv"
    write_notes_csv([Note(60, 0.0, 1.0, 80, 0.5)], path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_notes_csv([Note(62, 0.0, 1.0, 80, 0.5)], path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["notes.csv"]


# --- Basic Pitch ----------------------------------------------------------------------------

BP_OK, BP_REASON = basic_pitch_available()


def test_basic_pitch_availability_reports_a_reason():
    assert BP_REASON
    if BP_OK:
        assert "nmp.onnx" in BP_REASON
        assert tr.basic_pitch_model_path().name == "nmp.onnx"


@pytest.mark.skipif(not BP_OK, reason=f"Basic Pitch unavailable: {BP_REASON}")
def test_basic_pitch_transcribes_the_melody(caplog):
    root_handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.DEBUG):
        notes = transcribe_basic_pitch((render(), SR))
    assert "tensorflow" not in sys.modules
    assert not [r for r in caplog.records if "basic_pitch" in r.pathname]
    assert logging.getLogger().handlers == root_handlers  # no basicConfig() side effect left behind
    # Basic Pitch is polyphonic: on a harmonic tone it also reports weak notes
    # an octave (or twelfth) up. The confident notes are the melody itself.
    strong = [n for n in notes if n.confidence >= 0.5]
    assert {n.pitch_midi for n in strong} == {p for p, *_ in MELODY}
    pairs, extras = match(strong)
    assert sum(p is not None for p in pairs) >= len(MELODY) - 1  # onsets within 50 ms for most notes
    assert len(extras) <= 1
    weak = [n for n in notes if n.confidence < 0.5]
    for n in weak:  # every weak note is an overtone of a melody note sounding at that time
        under = [p for p, on, dur, _ in MELODY if on - ONSET_TOL_S <= n.onset_s <= on + dur]
        assert any(n.pitch_midi - p in (12, 19, 24) for p in under), n


@pytest.mark.skipif(not BP_OK, reason=f"Basic Pitch unavailable: {BP_REASON}")
def test_basic_pitch_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError):
        transcribe_basic_pitch(tmp_path / "missing.wav")
