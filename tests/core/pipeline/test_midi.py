"""The Standard MIDI File writer, checked byte by byte and by reading back with mido / pretty_midi."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mido
import pretty_midi
import pytest

from core.pipeline.midi import MidiOptions, midi_bytes, vlq, write_midi
from core.pipeline.transcribe import Note

REPO = Path(__file__).resolve().parents[3]

NOTES = [
    Note(60, 0.0, 0.5, 100, 0.9),
    Note(64, 0.5, 0.75, 90, 0.9),
    Note(64, 0.75, 1.0, 80, 0.9),  # same pitch starting exactly where the last one ends
    Note(67, 1.0, 2.0, 70, 0.9),
    Note(72, 1.2345, 1.9876, 60, 0.9),  # overlaps 67 (polyphony), times off the tick grid
    Note(48, 2.5, 2.5, 50, 0.9),  # zero length: still gets one tick
]


def test_variable_length_quantities_match_the_smf_spec_examples():
    cases = {
        0x00: "00",
        0x40: "40",
        0x7F: "7f",
        0x80: "8100",
        0x2000: "c000",
        0x3FFF: "ff7f",
        0x4000: "818000",
        0x100000: "c08000",
        0x0FFFFFFF: "ffffff7f",
    }
    for value, hexed in cases.items():
        assert vlq(value).hex() == hexed
    with pytest.raises(ValueError):
        vlq(0x10000000)


def test_one_note_file_is_byte_exact():
    data = midi_bytes([Note(60, 0.0, 0.5, 100, 1.0)], MidiOptions(tempo_bpm=120, ticks_per_beat=480))
    header = bytes.fromhex("4d546864 00000006 0000 0001 01e0")
    track = bytes.fromhex(
        "00ff5103 07a120"  # tempo 500000 us per beat
        "00c000"  # program change, channel 0, program 0
        "00903c64"  # note on C4 velocity 100
        "8360 803c40"  # 480 ticks later (VLQ 83 60): note off
        "00ff2f00"  # end of track
    )
    assert data == header + b"MTrk" + len(track).to_bytes(4, "big") + track


def test_round_trip_through_pretty_midi_within_a_tick(tmp_path):
    path = write_midi(NOTES, tmp_path / "song.mid", tempo_bpm=120, ticks_per_beat=480, program=24)
    pm = pretty_midi.PrettyMIDI(str(path))
    tick_s = 60.0 / (120 * 480)
    assert len(pm.instruments) == 1 and pm.instruments[0].program == 24
    got = sorted(pm.instruments[0].notes, key=lambda n: (n.start, n.pitch))
    want = sorted(NOTES, key=lambda n: (n.onset_s, n.pitch_midi))
    assert [n.pitch for n in got] == [n.pitch_midi for n in want]
    assert [n.velocity for n in got] == [n.velocity for n in want]
    for g, w in zip(got, want):
        assert abs(g.start - w.onset_s) <= tick_s
        assert abs(g.end - max(w.offset_s, w.onset_s + tick_s)) <= tick_s


def test_mido_sees_format_0_one_track_and_the_tempo(tmp_path):
    path = write_midi(NOTES, tmp_path / "a.mid", tempo_bpm=90, ticks_per_beat=96, track_name="melody")
    mid = mido.MidiFile(str(path))
    assert mid.type == 0 and len(mid.tracks) == 1 and mid.ticks_per_beat == 96
    metas = {m.type: m for m in mid.tracks[0] if m.is_meta}
    assert metas["set_tempo"].tempo == mido.bpm2tempo(90)
    assert metas["track_name"].name == "melody"
    assert mid.tracks[0][-1].type == "end_of_track"
    ons = [m for m in mid.tracks[0] if m.type == "note_on" and m.velocity > 0]
    assert len(ons) == len(NOTES)
    tick_s = 60.0 / (90 * 96)
    assert abs(mid.length - 2.5) <= 2 * tick_s  # last event: the zero-length note's off, one tick after 2.5 s


def test_overlapping_notes_of_one_pitch_are_trimmed_so_each_keeps_its_own_note_off(tmp_path):
    notes = [Note(60, 0.0, 1.0, 100, 1.0), Note(60, 0.5, 1.5, 100, 1.0)]
    pm = pretty_midi.PrettyMIDI(str(write_midi(notes, tmp_path / "o.mid")))
    got = [(round(n.start, 3), round(n.end, 3)) for n in pm.instruments[0].notes]
    assert sorted(got) == [(0.0, 0.5), (0.5, 1.5)]


def test_invalid_notes_and_options_are_rejected_and_leave_the_old_file(tmp_path):
    path = write_midi(NOTES, tmp_path / "keep.mid")
    before = path.read_bytes()

    class Bad:
        pitch_midi, onset_s, offset_s, velocity = 128, 0.0, 1.0, 64

    with pytest.raises(ValueError, match="pitch_midi"):
        write_midi([Bad()], path)
    with pytest.raises(ValueError, match="tempo_bpm"):
        write_midi(NOTES, path, tempo_bpm=0)
    with pytest.raises(ValueError, match="ticks_per_beat"):
        write_midi(NOTES, path, ticks_per_beat=0x8000)
    with pytest.raises(ValueError, match="program"):
        write_midi(NOTES, path, program=128)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.mid"]


def test_empty_note_list_is_a_valid_file(tmp_path):
    mid = mido.MidiFile(str(write_midi([], tmp_path / "empty.mid")))
    assert [m for m in mid.tracks[0] if m.type == "note_on"] == []


def test_writing_notes_needs_neither_pretty_midi_nor_mido(tmp_path):
    """The fallback path (pYIN notes -> .mid and notes.csv) must work without the transcribe extra."""
    code = (
        "import sys\n"
        "for m in ('pretty_midi', 'mido', 'basic_pitch', 'onnxruntime'): sys.modules[m] = None\n"
        "from core.pipeline.transcribe import Note, write_notes_csv\n"
        "from core.pipeline.midi import write_midi\n"
        "notes = [Note(60, 0.0, 0.5, 90, 0.9), Note(62, 0.5, 1.0, 90, 0.9)]\n"
        f"write_midi(notes, {str(tmp_path / 'x.mid')!r})\n"
        f"write_notes_csv(notes, {str(tmp_path / 'x.csv')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "x.mid"))
    assert [n.pitch for n in pm.instruments[0].notes] == [60, 62]
    assert (tmp_path / "x.csv").read_text().count("\n") == 3
