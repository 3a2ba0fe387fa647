"""InspectorDock: loads a song's results off the GUI thread and plots them; bad files never crash it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PySide6.QtCore import Qt

from app.docks import InspectorDock
from app.docks.inspector_dock import N_PEAKS, load_song, waveform_peaks

SR = 22050
BPM = 120.0
DURATION = 8.0


def write_song(tmp_path: Path, *, notes: bool = True) -> tuple[Path, Path]:
    """A click track at 120 BPM over a quiet A3 tone, and the results the pipeline would write."""
    t = np.arange(int(SR * DURATION)) / SR
    y = 0.1 * np.sin(2 * np.pi * 220.0 * t)
    beats = np.arange(0, DURATION, 60.0 / BPM)
    for b in beats:
        i = int(b * SR)
        y[i:i + 200] += 0.8 * np.hanning(400)[200:]
    audio = tmp_path / "take1.wav"
    sf.write(audio, np.column_stack([y, 0.5 * y]).astype(np.float32), SR)  # stereo

    song = tmp_path / "out" / "take1-abc123"
    song.mkdir(parents=True)
    (song / "summary.json").write_text(json.dumps({
        "duration_s": DURATION, "sample_rate": SR, "tempo_bpm": BPM, "beats": len(beats),
        "key": "A minor", "key_confidence": 0.81, "loudness_lufs": -14.25,
    }))
    with open(song / "beats.csv", "w") as f:
        f.write("time_s,bar,beat_in_bar,is_downbeat\n")
        for k, b in enumerate(beats):
            f.write(f"{b:.4f},{k // 4 + 1},{k % 4 + 1},{'true' if k % 4 == 0 else 'false'}\n")
    starts = beats[::4]
    pq.write_table(pa.table({
        "bar_index": np.arange(len(starts)), "start_s": starts, "end_s": starts + 2.0,
        "rms": np.linspace(0.1, 0.3, len(starts)), "spectral_centroid": np.full(len(starts), 1500.0),
        "label": [f"bar{i}" for i in range(len(starts))],  # non-numeric columns are ignored
    }), song / "bars.parquet")
    if notes:
        with open(song / "notes.csv", "w") as f:
            f.write("onset_s,offset_s,pitch_midi,velocity\n")
            for k in range(6):
                f.write(f"{k * 1.0},{k * 1.0 + 0.5},{57 + k},{80}\n")
    return song, audio


@pytest.fixture
def dock(qtbot):
    d = InspectorDock()
    qtbot.addWidget(d)
    yield d
    assert d.shutdown(5000), "the inspector's thread pool did not finish"
    assert d.pool.activeThreadCount() == 0


def show(dock, qtbot, song, audio):
    with qtbot.waitSignal(dock.loaded, timeout=10000) as blocker:
        dock.show_job(str(song), str(audio))
    return blocker.args[0]


def test_empty_state_and_clear(dock, tmp_path, qtbot):
    assert dock.objectName() == "InspectorDock"
    assert dock.default_area == Qt.DockWidgetArea.RightDockWidgetArea
    assert dock.is_empty and dock.empty_text == "Select a finished file to inspect it"
    song, audio = write_song(tmp_path)
    show(dock, qtbot, song, audio)
    assert not dock.is_empty
    dock.clear()
    assert dock.is_empty and dock.data is None


def test_loads_and_plots_a_song(dock, tmp_path, qtbot):
    song, audio = write_song(tmp_path)
    data = show(dock, qtbot, song, audio)
    assert data.problems == []
    info = dock.info_label.text()
    assert "120.0 BPM" in info and "A minor (0.81)" in info and "-14.2 LUFS" in info and "0:08.0" in info
    assert dock.problems_label.isHidden()

    x, y = dock.wave_curve.getData()
    assert 2 * 0.95 * N_PEAKS <= len(x) <= 2 * N_PEAKS and len(x) == len(y)  # ~4000 min/max pairs
    assert y.max() > 0.5 and y.min() < -0.05  # the clicks and the tone are there
    bx, _ = dock.beat_lines.getData()
    assert len(bx) == 2 * 16  # one vertical pair per beat
    barx, _ = dock.bar_lines.getData()
    assert np.allclose(barx[::2], np.arange(0, DURATION, 2.0))
    assert dock.feature_combo.currentText() == "rms"
    assert [dock.feature_combo.itemText(i) for i in range(dock.feature_combo.count())] == ["rms", "spectral_centroid"]
    fx, fy = dock.feature_curve.getData()
    assert len(fx) == len(fy) + 1 and fy[-1] == pytest.approx(0.3)
    dock.feature_combo.setCurrentText("spectral_centroid")
    assert dock.feature_curve.getData()[1][0] == pytest.approx(1500.0)
    assert len(dock.notes_item.opts["x0"]) == 6 and not dock.roll.isHidden()

    dock.feature_combo.setCurrentText("rms")
    dock.resize(820, 620)
    dock.show()
    qtbot.waitExposed(dock)
    assert dock.grab().save("/tmp/dock_inspector.png")


def test_missing_song_dir_and_input_are_reported(dock, tmp_path, qtbot):
    data = show(dock, qtbot, tmp_path / "nowhere", tmp_path / "nothing.wav")
    assert any("results folder not found" in p for p in data.problems)
    assert any("input audio not found" in p for p in data.problems)
    assert not dock.problems_label.isHidden() and "not found" in dock.problems_label.text()
    assert "<b>Tempo</b> -" in dock.info_label.text()
    assert len(dock.wave_curve.getData()[0] if dock.wave_curve.getData()[0] is not None else []) == 0
    assert dock.roll.isHidden() and not dock.no_notes_label.isHidden()


def test_broken_and_missing_files_become_problems(dock, tmp_path, qtbot):
    song, audio = write_song(tmp_path, notes=False)
    (song / "summary.json").unlink()
    (song / "bars.parquet").write_bytes(b"not parquet at all")
    data = show(dock, qtbot, song, audio)
    assert "summary.json: missing" in data.problems
    assert any(p.startswith("bars.parquet: unreadable") for p in data.problems)
    assert data.beats is not None and len(data.beats) == 16  # what is fine is still shown
    assert len(dock.beat_lines.getData()[0]) == 32
    assert len(dock.bar_lines.getData()[0]) == 2 * 4  # bar lines from the beats' downbeats
    assert not dock.feature_combo.isEnabled()
    assert dock.roll.isHidden()  # no notes.csv: transcription did not run, not a problem
    assert not any("notes" in p for p in data.problems)


def test_newest_request_wins(dock, tmp_path, qtbot):
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    song1, audio1 = write_song(first)
    song2, audio2 = write_song(second, notes=False)
    dock.show_job(str(song1), str(audio1))
    data = show(dock, qtbot, song2, audio2)
    qtbot.wait(50)
    assert dock.data is data and dock.data.song_dir == str(song2)


def test_waveform_peaks_reads_in_blocks(tmp_path):
    y = np.zeros(10_000, dtype=np.float32)
    y[1234], y[8000] = 0.9, -0.7
    path = tmp_path / "peaks.wav"
    sf.write(path, y, 8000)
    t, lo, hi, duration = waveform_peaks(path, n_peaks=100, block_frames=700)
    assert len(t) == len(lo) == len(hi) == 100
    assert duration == pytest.approx(1.25)
    assert hi.max() == pytest.approx(0.9, abs=1e-4) and lo.min() == pytest.approx(-0.7, abs=1e-4)
    assert t[np.argmax(hi)] == pytest.approx(1234 / 8000, abs=100 / 8000)
    assert waveform_peaks(path, n_peaks=100, is_current=lambda: False) is None


def test_load_song_without_qt(tmp_path):
    song, audio = write_song(tmp_path)
    data = load_song(str(song), str(audio), n_peaks=500)
    assert data.summary["key"] == "A minor"
    assert data.downbeats is not None and len(data.downbeats) == 4
    assert set(data.bars) == {"bar_index", "start_s", "end_s", "rms", "spectral_centroid"}
    assert data.notes is not None and list(data.notes["pitch_midi"]) == [57, 58, 59, 60, 61, 62]
    assert data.audio_duration_s == pytest.approx(DURATION)
