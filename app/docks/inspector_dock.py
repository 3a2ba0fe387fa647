"""The inspector: one finished song's results, loaded off the GUI thread and plotted.

``show_job(song_dir, input_path)`` starts a :class:`_LoadTask` on the dock's
own single-thread pool; it reads ``summary.json``, ``beats.csv``,
``bars.parquet``, ``notes.csv`` and a peak-downsampled waveform of the input
(:func:`load_song`, plain Python), and hands a :class:`SongData` back through
a signal. Formats are read defensively: a missing or unreadable file becomes a
line in ``SongData.problems``, never an exception. Every plot item is created
once; beats and bars are two line items (``connect="pairs"``), the piano roll
one ``BarGraphItem``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from app.docks._common import BLUE, RED, StaveDock

N_PEAKS = 4000
BAR_KEYS = ("bar_index", "start_s", "end_s")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
PREFERRED_FEATURES = ("rms", "rms_mean", "loudness", "spectral_centroid", "centroid")


@dataclass
class SongData:
    """Everything the inspector shows about one song (arrays are None when unavailable)."""

    song_dir: str
    input_path: str
    summary: dict[str, Any] = field(default_factory=dict)
    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
    bars: dict[str, np.ndarray] | None = None
    notes: dict[str, np.ndarray] | None = None
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (t, min, max)
    audio_duration_s: float | None = None
    problems: list[str] = field(default_factory=list)


# --- loading (runs on the pool's thread; no Qt) -----------------------------

def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV (non-numeric cells become NaN; booleans 1/0)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    for name in (rows[0].keys() if rows else []):
        vals = []
        for r in rows:
            cell = (r.get(name) or "").strip().lower()
            x = 1.0 if cell == "true" else 0.0 if cell == "false" else _num(cell)
            vals.append(np.nan if x is None else x)
        cols[str(name).strip()] = np.asarray(vals, dtype=float)
    return cols


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        arr = table.column(name).to_numpy()
        if arr.dtype.kind in "biuf":
            out[name] = arr.astype(float)
    return out


def waveform_peaks(path: str | os.PathLike[str], n_peaks: int = N_PEAKS, *, block_frames: int = 1 << 16,
                   is_current: Callable[[], bool] = lambda: True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """(t, min, max, duration_s) of ~``n_peaks`` columns, read in blocks; None when cancelled."""
    import soundfile as sf

    info = sf.info(str(path))
    if info.frames <= 0:
        raise ValueError("the file holds no audio frames")
    spp = max(1, math.ceil(info.frames / n_peaks))  # samples per peak
    block = spp * max(1, block_frames // spp)
    mins: list[np.ndarray] = []
    maxs: list[np.ndarray] = []
    for chunk in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
        if not is_current():
            return None
        mono = chunk.mean(axis=1)
        whole = len(mono) // spp * spp
        if whole:
            seg = mono[:whole].reshape(-1, spp)
            mins.append(seg.min(axis=1))
            maxs.append(seg.max(axis=1))
        if whole < len(mono):  # only the last block has a remainder
            mins.append(mono[whole:].min(keepdims=True))
            maxs.append(mono[whole:].max(keepdims=True))
    lo, hi = np.concatenate(mins), np.concatenate(maxs)
    t = (np.arange(len(lo)) * spp + spp / 2) / info.samplerate
    return t, lo, hi, info.frames / info.samplerate


def load_song(song_dir: str, input_path: str, *, n_peaks: int = N_PEAKS,
              is_current: Callable[[], bool] = lambda: True) -> SongData:
    """Read what exists of one song's results; problems are collected, never raised."""
    data = SongData(song_dir, input_path)
    folder = Path(song_dir) if song_dir else None
    if folder is None or not folder.is_dir():
        data.problems.append(f"results folder not found: {song_dir or '(none)'}")
        folder = None

    def attempt(label: str, fn: Callable[[], Any], *, optional: bool = False) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            if not optional:
                data.problems.append(f"{label}: missing")
        except Exception as exc:  # noqa: BLE001 - any bad file is shown, not raised
            data.problems.append(f"{label}: unreadable ({type(exc).__name__}: {exc})")
        return None

    if folder is not None:
        summary = attempt("summary.json", lambda: json.loads((folder / "summary.json").read_text("utf-8")))
        if isinstance(summary, dict):
            data.summary = summary
        elif summary is not None:
            data.problems.append("summary.json: not a JSON object")
        beats = attempt("beats.csv", lambda: _read_csv(folder / "beats.csv"))
        if beats is not None:
            t = beats.get("time_s", beats.get("time"))
            if t is None:
                data.problems.append("beats.csv: no time_s column")
            else:
                data.beats = t[np.isfinite(t)]
                if "is_downbeat" in beats:
                    data.downbeats = t[(beats["is_downbeat"] > 0) & np.isfinite(t)]
        bars = attempt("bars.parquet", lambda: _read_parquet(folder / "bars.parquet"))
        if bars is not None and "start_s" not in bars:
            data.problems.append("bars.parquet: no start_s column")
        elif bars is not None:
            data.bars = bars
        notes = attempt("notes.csv", lambda: _read_csv(folder / "notes.csv"), optional=True)
        if notes is not None and {"onset_s", "offset_s", "pitch_midi"} <= set(notes):
            data.notes = notes
        elif notes is not None:
            data.problems.append("notes.csv: needs onset_s, offset_s and pitch_midi columns")
    if not input_path or not os.path.isfile(input_path):
        data.problems.append(f"input audio not found: {input_path or '(none)'}")
    else:
        peaks = attempt("waveform", lambda: waveform_peaks(input_path, n_peaks, is_current=is_current))
        if peaks is not None:
            data.peaks, data.audio_duration_s = peaks[:3], peaks[3]
    return data


class _Relay(QObject):
    loaded = Signal(int, object)  # (generation, SongData)


class _LoadTask(QRunnable):
    def __init__(self, generation: int, song_dir: str, input_path: str, is_current: Callable[[], bool]):
        super().__init__()
        self.setAutoDelete(False)  # the dock holds it until its result has arrived
        self.relay = _Relay()  # created on the GUI thread; emitting from the pool is queued
        self._args = (generation, song_dir, input_path, is_current)

    def run(self) -> None:
        generation, song_dir, input_path, is_current = self._args
        try:
            data = load_song(song_dir, input_path, is_current=is_current)
        except BaseException as exc:  # noqa: BLE001 - a worker reports, never raises
            data = SongData(song_dir, input_path, problems=[f"loading failed: {exc!r}"])
        self.relay.loaded.emit(generation, data)


# --- the dock -----------------------------------------------------------------

def info_html(data: SongData) -> str:
    s = data.summary
    tempo, conf = _num(s.get("tempo_bpm")), _num(s.get("key_confidence"))
    loud = _num(s.get("loudness_lufs"))
    duration = _num(s.get("duration_s")) or data.audio_duration_s
    beats = s.get("beats", len(data.beats) if data.beats is not None else None)
    key = s.get("key") or "-"
    parts = [
        f"<b>Tempo</b> {tempo:.1f} BPM" if tempo is not None else "<b>Tempo</b> -",
        f"<b>Key</b> {key}" + (f" ({conf:.2f})" if conf is not None else ""),
        f"<b>Loudness</b> {loud:.1f} LUFS" if loud is not None else "<b>Loudness</b> -",
        f"<b>Duration</b> {int(duration // 60)}:{duration % 60:04.1f}" if duration else "<b>Duration</b> -",
        f"<b>Beats</b> {beats if beats is not None else '-'}",
        f"<b>Bars</b> {len(data.bars['start_s']) if data.bars else '-'}",
    ]
    return " &nbsp;·&nbsp; ".join(parts)


def _lines(times: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(times, 2), np.tile([lo, hi], len(times))


def _plot(height: int, ylabel: str) -> pg.PlotWidget:
    w = pg.PlotWidget(background="w")
    w.setMinimumHeight(height)
    w.setMenuEnabled(False)
    w.hideButtons()
    w.setLabel("left", ylabel)
    w.getAxis("left").setWidth(50)
    w.getAxis("left").enableAutoSIPrefix(False)
    w.setMouseEnabled(x=True, y=False)
    return w


class InspectorDock(StaveDock):
    """Tempo, key, loudness, a waveform with beats and bars, a per-bar feature and a piano roll."""

    default_area = Qt.DockWidgetArea.RightDockWidgetArea
    title = "Inspector"
    empty_message = "Select a finished file to inspect it"

    loaded = Signal(object)
    """A song's ``SongData`` was loaded and is now shown."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._generation = 0
        self._tasks: dict[int, _LoadTask] = {}  # generation -> task, until its result arrives
        self._data: SongData | None = None

        self.title_label = QLabel()
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info_label = QLabel()
        self.info_label.setWordWrap(True)
        self.problems_label = QLabel()
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet(f"color: {RED};")
        self.feature_combo = QComboBox()
        self.feature_combo.setToolTip("The per-bar feature to plot")
        self.feature_combo.currentTextChanged.connect(self._show_feature)

        self.wave = _plot(60, "amplitude")
        self.wave.setYRange(-1.05, 1.05, padding=0)
        self.wave.getAxis("left").setTicks([[(-1.0, "-1"), (0.0, "0"), (1.0, "1")]])
        self.wave_curve = self.wave.plot(pen=pg.mkPen("#607d8b"), connect="pairs", skipFiniteCheck=True)
        self.beat_lines = self.wave.plot(pen=pg.mkPen(200, 120, 0, 110, width=1), connect="pairs", skipFiniteCheck=True)
        self.bar_lines = self.wave.plot(pen=pg.mkPen(RED, width=2), connect="pairs", skipFiniteCheck=True)
        self.beat_lines.setZValue(-2)  # the waveform stays on top of the grid of beats and bars
        self.bar_lines.setZValue(-1)
        self.feature = _plot(40, "feature")
        self.feature.setXLink(self.wave)
        self.wave.hideAxis("bottom")
        self.feature_curve = self.feature.plot(
            stepMode="center", fillLevel=0, brush=pg.mkBrush(21, 101, 192, 90), pen=pg.mkPen(BLUE), skipFiniteCheck=True
        )
        self.roll = _plot(40, "pitch")
        self.roll.setXLink(self.wave)
        self.roll.setLabel("bottom", "time (s)")
        self.feature.setLabel("bottom", "time (s)")
        self.notes_item = pg.BarGraphItem(x0=np.zeros(0), x1=np.zeros(0), y0=np.zeros(0), height=np.zeros(0),
                                          brush=pg.mkBrush(BLUE), pen=pg.mkPen(None))
        self.roll.addItem(self.notes_item)
        self.no_notes_label = QLabel("No notes: transcription did not run for this file")
        self.no_notes_label.setStyleSheet("color: #757575;")

        feature_row = QHBoxLayout()
        feature_row.addWidget(QLabel("Per-bar feature:"))
        feature_row.addWidget(self.feature_combo, 1)
        splitter = QSplitter(Qt.Orientation.Vertical)
        for w in (self.wave, self.feature, self.roll):
            splitter.addWidget(w)
        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.title_label, self.info_label, self.problems_label):
            lay.addWidget(w)
        lay.addLayout(feature_row)
        lay.addWidget(splitter, 1)
        lay.addWidget(self.no_notes_label)
        self._install(content)

    # --- slots -------------------------------------------------------------

    @Slot(str, str)
    def show_job(self, song_dir: str, input_path: str) -> None:
        """Load and show one song's results (off the GUI thread); a newer call wins."""
        song_dir, input_path = os.fspath(song_dir or ""), os.fspath(input_path or "")
        self._generation += 1
        gen = self._generation
        self.title_label.setText(f"Loading {os.path.basename(input_path) or song_dir}…")
        self._set_empty(False)
        task = _LoadTask(gen, song_dir, input_path, lambda: self._generation == gen)
        task.relay.loaded.connect(self._on_loaded)
        self._tasks[gen] = task
        self.pool.start(task)

    @Slot()
    def clear(self) -> None:
        """Forget the song shown and go back to the empty state."""
        self._generation += 1
        self._data = None
        self._set_empty(True)

    def shutdown(self, msecs: int = 5000) -> bool:
        """Abandon pending loads and wait for the pool (call at exit); True when it is idle."""
        self._generation += 1
        self.pool.clear()
        return self.pool.waitForDone(msecs)

    @property
    def data(self) -> SongData | None:
        """The song shown now (None in the empty state or while the first load runs)."""
        return self._data

    # --- internals ---------------------------------------------------------

    @Slot(int, object)
    def _on_loaded(self, generation: int, data: SongData) -> None:
        self._tasks.pop(generation, None)
        if generation != self._generation:
            return
        self._data = data
        self.title_label.setText(f"<b>{os.path.basename(data.input_path) or data.song_dir}</b>"
                                 f" &nbsp;<span style='color:#757575'>{data.song_dir}</span>")
        self.info_label.setText(info_html(data))
        self.problems_label.setText("\n".join(data.problems))
        self.problems_label.setVisible(bool(data.problems))
        self._show_wave(data)
        names = [k for k in (data.bars or {}) if k not in BAR_KEYS]
        preferred = next((p for p in PREFERRED_FEATURES if p in names), names[0] if names else "")
        self.feature_combo.blockSignals(True)
        self.feature_combo.clear()
        self.feature_combo.addItems(names)
        self.feature_combo.setCurrentText(preferred)
        self.feature_combo.blockSignals(False)
        self.feature_combo.setEnabled(bool(names))
        self._show_feature(preferred)
        self._show_notes(data.notes)
        self.loaded.emit(data)

    def _show_wave(self, data: SongData) -> None:
        if data.peaks is not None:
            t, lo, hi = data.peaks
            self.wave_curve.setData(np.repeat(t, 2), np.column_stack([lo, hi]).ravel(), skipFiniteCheck=True)
        else:
            self.wave_curve.setData([], [])
        beats = data.beats if data.beats is not None else np.zeros(0)
        if data.bars is not None:
            bars = data.bars["start_s"]
        else:
            bars = data.downbeats if data.downbeats is not None else np.zeros(0)
        self.beat_lines.setData(*_lines(beats, -1.0, 1.0), skipFiniteCheck=True)
        self.bar_lines.setData(*_lines(bars[np.isfinite(bars)], -1.0, 1.0), skipFiniteCheck=True)
        end = data.audio_duration_s or _num(data.summary.get("duration_s")) or (float(beats.max()) if len(beats) else 1.0)
        self.wave.setXRange(0, end, padding=0.01)

    @Slot(str)
    def _show_feature(self, name: str) -> None:
        bars = self._data.bars if self._data is not None else None
        if not bars or name not in bars:
            self.feature_curve.setData([], [])
            return
        start, values = bars["start_s"], bars[name]
        end = bars.get("end_s")
        last = end[-1] if end is not None and len(end) else (start[-1] + np.median(np.diff(start)) if len(start) > 1 else start[-1] + 1)
        edges = np.append(start, last)
        self.feature_curve.setData(edges, np.nan_to_num(values), stepMode="center", skipFiniteCheck=True)
        self.feature.setLabel("left", name)

    def _show_notes(self, notes: dict[str, np.ndarray] | None) -> None:
        has = bool(notes) and len(notes["onset_s"]) > 0
        self.roll.setVisible(has)
        self.feature.showAxis("bottom", not has)  # the time axis belongs to the lowest plot
        self.no_notes_label.setVisible(not has)
        if not has:
            self.notes_item.setOpts(x0=np.zeros(0), x1=np.zeros(0), y0=np.zeros(0), height=np.zeros(0))
            return
        assert notes is not None
        pitch = notes["pitch_midi"]
        self.notes_item.setOpts(x0=notes["onset_s"], x1=notes["offset_s"], y0=pitch - 0.4, height=np.full(len(pitch), 0.8))
        lo, hi = int(np.nanmin(pitch)) - 2, int(np.nanmax(pitch)) + 2
        self.roll.setYRange(lo, hi, padding=0)
        # Cs always; other notes only where there is room (pyqtgraph drops crowded minor labels)
        self.roll.getAxis("left").setTicks([
            [(p, note_name(p)) for p in range(lo, hi + 1) if p % 12 == 0],
            [(p, note_name(p)) for p in range(lo, hi + 1) if p % 12 and (hi - lo <= 24 or p % 12 in (4, 7))],
        ])


def note_name(midi: int) -> str:
    """``60 -> "C4"``, ``69 -> "A4"``."""
    return f"{NOTE_NAMES[midi % 12]}{midi // 12 - 1}"
