"""The inspector: one finished song's results, loaded off the GUI thread and plotted.

``show_job(song_dir, input_path)`` starts a :class:`_LoadTask` on the dock's
own single-thread pool; it runs :func:`app.docks.inspector_load.load_song`
(plain Python: summary, beats, bars, notes, a peak-downsampled waveform) and
hands a ``SongData`` back through a signal. Every plot item is created once;
beats and bars are two line items (``connect="pairs"``), the piano roll one
``BarGraphItem``. The labels are there at once; the three plots may be built
later, one per step (``defer=True``: the window builds them after its first
paint), and always before a loaded song is shown.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSplitter, QVBoxLayout, QWidget

from app.docks._common import BLUE, RED, StaveDock

if TYPE_CHECKING:
    import numpy as np
    import pyqtgraph as pg

    from app.docks.inspector_load import SongData

N_PEAKS = 4000  # the same as inspector_load.N_PEAKS
BAR_KEYS = ("bar_index", "start_s", "end_s")
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
PREFERRED_FEATURES = ("rms", "rms_mean", "loudness", "spectral_centroid", "centroid")
_LOADER_NAMES = ("SongData", "load_song", "waveform_peaks")


def __getattr__(name: str) -> Any:
    """``SongData``, ``load_song`` and ``waveform_peaks`` live in inspector_load (numpy), imported on use."""
    if name in _LOADER_NAMES:
        from app.docks import inspector_load

        return getattr(inspector_load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _num(value: Any) -> float | None:
    from app.docks.inspector_load import _num as num

    return num(value)


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
            from app.docks.inspector_load import SongData, load_song
        except BaseException as exc:  # noqa: BLE001 - a worker reports, never raises
            self.relay.loaded.emit(generation, exc)
            return
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
    import numpy as np

    return np.repeat(times, 2), np.tile([lo, hi], len(times))


def _plot(height: int, ylabel: str) -> pg.PlotWidget:
    import pyqtgraph as pg

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

    def __init__(self, parent: QWidget | None = None, *, defer: bool = False):
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
        self.no_notes_label = QLabel("No notes: transcription did not run for this file")
        self.no_notes_label.setStyleSheet("color: #757575;")

        feature_row = QHBoxLayout()
        feature_row.addWidget(QLabel("Per-bar feature:"))
        feature_row.addWidget(self.feature_combo, 1)
        self._splitter = QSplitter(Qt.Orientation.Vertical)  # the plots, once built
        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.title_label, self.info_label, self.problems_label):
            lay.addWidget(w)
        lay.addLayout(feature_row)
        lay.addWidget(self._splitter, 1)
        lay.addWidget(self.no_notes_label)
        self._install(content)
        self._plots_ready = False
        self._defer_build(self._build_plots(), defer)

    def _build_plots(self):
        """Waveform (with beats and bars), per-bar feature, piano roll: one plot per step."""
        import numpy as np
        import pyqtgraph as pg

        self.wave = _plot(60, "amplitude")
        self.wave.setYRange(-1.05, 1.05, padding=0)
        self.wave.getAxis("left").setTicks([[(-1.0, "-1"), (0.0, "0"), (1.0, "1")]])
        self.wave_curve = self.wave.plot(pen=pg.mkPen("#607d8b"), connect="pairs", skipFiniteCheck=True)
        self.beat_lines = self.wave.plot(pen=pg.mkPen(200, 120, 0, 110, width=1), connect="pairs", skipFiniteCheck=True)
        self.bar_lines = self.wave.plot(pen=pg.mkPen(RED, width=2), connect="pairs", skipFiniteCheck=True)
        self.beat_lines.setZValue(-2)  # the waveform stays on top of the grid of beats and bars
        self.bar_lines.setZValue(-1)
        self.wave.hideAxis("bottom")
        self._splitter.addWidget(self.wave)
        yield
        self.feature = _plot(40, "feature")
        self.feature.setXLink(self.wave)
        self.feature_curve = self.feature.plot(
            stepMode="center", fillLevel=0, brush=pg.mkBrush(21, 101, 192, 90), pen=pg.mkPen(BLUE), skipFiniteCheck=True
        )
        self.feature.setLabel("bottom", "time (s)")
        self._splitter.addWidget(self.feature)
        yield
        self.roll = _plot(40, "pitch")
        self.roll.setXLink(self.wave)
        self.roll.setLabel("bottom", "time (s)")
        self.notes_item = pg.BarGraphItem(x0=np.zeros(0), x1=np.zeros(0), y0=np.zeros(0), height=np.zeros(0),
                                          brush=pg.mkBrush(BLUE), pen=pg.mkPen(None))
        self.roll.addItem(self.notes_item)
        self._splitter.addWidget(self.roll)
        self._plots_ready = True

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
    def _on_loaded(self, generation: int, data: SongData | BaseException) -> None:
        self._tasks.pop(generation, None)
        if generation != self._generation:
            return
        if isinstance(data, BaseException):  # the loader itself could not be imported
            self.title_label.setText(f"The results cannot be read: {data!r}")
            return
        self.ensure_built()
        self._data = data
        self.title_label.setText(f"<b>{os.path.basename(data.input_path) or data.song_dir}</b>"
                                 f" &nbsp;<span style='color:#757575'>{data.song_dir}</span>")
        self.info_label.setText(info_html(data))
        self.problems_label.setText("\n".join(data.problems))
        self.problems_label.setVisible(bool(data.problems))
        names = [k for k in (data.bars or {}) if k not in BAR_KEYS]
        preferred = next((p for p in PREFERRED_FEATURES if p in names), names[0] if names else "")
        self.feature_combo.blockSignals(True)
        self.feature_combo.clear()
        self.feature_combo.addItems(names)
        self.feature_combo.setCurrentText(preferred)
        self.feature_combo.blockSignals(False)
        self.feature_combo.setEnabled(bool(names))
        if self._plots_ready:  # else pyqtgraph failed (logged): the figures above still show
            self._show_wave(data)
            self._show_feature(preferred)
            self._show_notes(data.notes)
        self.loaded.emit(data)

    def _show_wave(self, data: SongData) -> None:
        import numpy as np

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
        if not self._plots_ready:
            return
        import numpy as np

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
        import numpy as np

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
