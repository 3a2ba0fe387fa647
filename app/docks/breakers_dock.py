"""The circuit-breaker panel: one row per breaker, a live probe countdown, a state strip each.

``set_snapshots`` is called with the registry's snapshots (on each
``BreakerChanged`` and now and then); between calls the dock's own 1 s timer
counts the next probe down from the snapshot's ``next_probe_in_s`` (measured
on an injected monotonic clock) and samples each breaker's state into a ring
buffer that a small pyqtgraph strip shows (0 closed, 1 half-open, 2 open).
Curves are created once per breaker and updated with ``setData`` from the timer.
The table is there at once; pyqtgraph and the strips may be built later
(``defer=True``: the window builds them after its first paint).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

if TYPE_CHECKING:
    import numpy as np
    import pyqtgraph as pg

from app.docks._common import RED, StaveDock, fmt_seconds, fmt_wall, status_colour
from core.resilience.breaker import BreakerSnapshot, BreakerState
from core.resilience.clock import SYSTEM_CLOCK, Clock

COLUMNS = ("Breaker", "State", "Failure rate", "Failed / ok", "In a row", "Next probe", "Opened at", "")
COL_NAME, COL_STATE, COL_RATE, COL_COUNTS, COL_ROW, COL_PROBE, COL_OPENED, COL_ACTIONS = range(len(COLUMNS))
STATE_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
HISTORY_S = 300  # seconds of state history kept and drawn
TICK_MS = 1000


def display_state(s: BreakerSnapshot) -> str:
    """What the State column says: ``disabled``, ``open (forced)``, ``half-open``..."""
    if s.disabled:
        return "disabled"
    text = BreakerState(s.state).value
    return f"{text} (forced)" if s.forced and s.state is BreakerState.OPEN else text


@dataclass
class _Row:
    """What the dock keeps per breaker between snapshots."""

    snapshot: BreakerSnapshot
    probe_deadline: float | None  # monotonic
    times: deque = field(default_factory=lambda: deque(maxlen=HISTORY_S + 2))
    values: deque = field(default_factory=lambda: deque(maxlen=HISTORY_S + 2))
    plot: pg.PlotItem | None = None
    curve: pg.PlotDataItem | None = None
    reset_button: QPushButton | None = None
    force_button: QPushButton | None = None


class BreakersDock(StaveDock):
    """Circuit breakers: state, counts, countdown to the next probe, Reset / Force open."""

    default_area = Qt.DockWidgetArea.RightDockWidgetArea
    title = "Circuit breakers"
    empty_message = (
        "No circuit breakers yet: they appear when a batch uses an external tool (Demucs, Basic Pitch, ffmpeg)"
    )

    reset_requested = Signal(str)
    """The user asked to reset (close) the breaker with this name."""

    force_open_requested = Signal(str)
    """The user asked to force open the breaker with this name (its stage takes the fallback)."""

    def __init__(self, parent: QWidget | None = None, *, clock: Clock = SYSTEM_CLOCK, defer: bool = False):
        super().__init__(parent)
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._plots_ready = False
        self.strips = None  # a pyqtgraph GraphicsLayoutWidget once built

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hdr.setStretchLastSection(True)

        self._splitter = QSplitter(Qt.Orientation.Vertical)
        self._splitter.addWidget(self.table)
        self._splitter.addWidget(QWidget())  # where the strips go once built
        self._splitter.setStretchFactor(0, 1)
        self._splitter.setStretchFactor(1, 1)
        self._install(self._splitter)

        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)
        self._defer_build(self._build_strips(), defer)

    def _build_strips(self):
        """The pyqtgraph part in steps: the canvas, then one strip per breaker known by then."""
        import pyqtgraph as pg

        strips = pg.GraphicsLayoutWidget()
        strips.setBackground("w")
        strips.setMinimumHeight(60)
        self._splitter.replaceWidget(1, strips).deleteLater()
        self.strips = strips
        while True:
            yield
            missing = [(name, row) for name, row in self._rows.items() if row.plot is None]
            if not missing:
                break
            self._add_strip(*missing[0])
        self._plots_ready = True
        self._relayout()
        self._redraw(self._clock.monotonic())

    # --- slots -------------------------------------------------------------

    @Slot(object)
    def set_snapshots(self, snapshots: list[BreakerSnapshot]) -> None:
        """Show these breakers (rows for names not present are removed); re-sync the countdowns."""
        now = self._clock.monotonic()
        names = [s.name for s in snapshots]
        for gone in [n for n in self._rows if n not in names]:
            self._remove(gone)
        for snap in snapshots:
            deadline = None if snap.next_probe_in_s is None else now + max(0.0, snap.next_probe_in_s)
            row = self._rows.get(snap.name)
            if row is None:
                row = self._rows[snap.name] = _Row(snap, deadline)
                self._add_widgets(snap.name, row)
            row.snapshot, row.probe_deadline = snap, deadline
            self._record(row, now)
            self._render(snap.name, row, now)
        self._set_empty(not self._rows)
        if self._rows and not self.timer.isActive():
            self.timer.start()
        elif not self._rows:
            self.timer.stop()
        self._redraw(now)

    @Slot()
    def tick(self) -> None:
        """Once a second: count the probes down, sample each state, redraw the strips."""
        now = self._clock.monotonic()
        for name, row in self._rows.items():
            self._record(row, now)
            self.table.item(self._index(name), COL_PROBE).setText(self._probe_text(row, now))
        self._redraw(now)

    # --- inspection (tests, the controller) ------------------------------

    def names(self) -> list[str]:
        return [self.table.item(i, COL_NAME).text() for i in range(self.table.rowCount())]

    def state_text(self, name: str) -> str:
        return self.table.item(self._index(name), COL_STATE).text()

    def state_colour(self, name: str) -> QColor:
        return self.table.item(self._index(name), COL_STATE).background().color()

    def probe_text(self, name: str) -> str:
        return self.table.item(self._index(name), COL_PROBE).text()

    def remaining_s(self, name: str) -> float | None:
        """Seconds until the next probe of ``name`` as the countdown sees it now."""
        deadline = self._rows[name].probe_deadline
        return None if deadline is None else max(0.0, deadline - self._clock.monotonic())

    def history(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The strip's current data: (seconds relative to now, state value)."""
        import numpy as np

        self.ensure_built()
        curve = self._rows[name].curve
        assert curve is not None
        x, y = curve.getData()
        return (np.asarray(x if x is not None else []), np.asarray(y if y is not None else []))

    def buttons(self, name: str) -> tuple[QPushButton, QPushButton]:
        row = self._rows[name]
        assert row.reset_button is not None and row.force_button is not None
        return row.reset_button, row.force_button

    # --- internals ---------------------------------------------------------

    def _index(self, name: str) -> int:
        for i in range(self.table.rowCount()):
            if self.table.item(i, COL_NAME).text() == name:
                return i
        raise KeyError(name)

    @staticmethod
    def _probe_text(row: _Row, now: float) -> str:
        snap = row.snapshot
        if snap.disabled:
            return "-"
        if snap.state is BreakerState.HALF_OPEN:
            return "probing"
        if row.probe_deadline is None:
            return "-"
        remaining = row.probe_deadline - now
        return "due now" if remaining <= 0 else f"in {fmt_seconds(remaining)}"

    @staticmethod
    def _record(row: _Row, now: float) -> None:
        snap = row.snapshot
        row.times.append(now)
        row.values.append(0.0 if snap.disabled else STATE_VALUE.get(BreakerState(snap.state), 0.0))

    def _add_widgets(self, name: str, row: _Row) -> None:
        i = self.table.rowCount()
        self.table.insertRow(i)
        for col in range(COL_ACTIONS):
            self.table.setItem(i, col, QTableWidgetItem(""))
        self.table.item(i, COL_NAME).setText(name)
        self.table.item(i, COL_STATE).setTextAlignment(Qt.AlignmentFlag.AlignCenter)
        actions = QWidget()
        lay = QHBoxLayout(actions)
        lay.setContentsMargins(2, 0, 2, 0)
        lay.setSpacing(2)
        row.reset_button = QPushButton("Reset")
        row.reset_button.setToolTip(f"Close the {name} breaker and forget its failures")
        row.reset_button.clicked.connect(lambda _=False, n=name: self.reset_requested.emit(n))
        row.force_button = QPushButton("Force open")
        row.force_button.setToolTip(f"Open the {name} breaker: its stage uses the fallback until reset")
        row.force_button.clicked.connect(lambda _=False, n=name: self.force_open_requested.emit(n))
        lay.addWidget(row.reset_button)
        lay.addWidget(row.force_button)
        self.table.setCellWidget(i, COL_ACTIONS, actions)
        if self._plots_ready:
            self._add_strip(name, row)
            self._relayout()

    def _add_strip(self, name: str, row: _Row) -> None:
        import pyqtgraph as pg

        plot = pg.PlotItem()
        plot.setMenuEnabled(False)
        plot.setMouseEnabled(x=False, y=False)
        plot.hideButtons()
        plot.setYRange(-0.2, 2.2, padding=0)
        plot.setXRange(-HISTORY_S, 0, padding=0)
        plot.setLabel("left", name)
        plot.getAxis("left").setTicks([[(0, "closed"), (1, "half"), (2, "open")]])
        plot.getAxis("left").setWidth(90)
        plot.setClipToView(True)
        row.plot = plot
        row.curve = plot.plot(
            pen=pg.mkPen(RED, width=2),
            fillLevel=0,
            brush=pg.mkBrush(198, 40, 40, 50),
            skipFiniteCheck=True,
        )

    def _remove(self, name: str) -> None:
        self.table.removeRow(self._index(name))
        self._rows.pop(name)
        self._relayout()

    def _relayout(self) -> None:
        """One strip per breaker in row order; only the bottom strip shows the time axis."""
        if not self._plots_ready:
            return
        self.strips.ci.clear()
        rows = [r for r in self._rows.values() if r.plot is not None]
        for i, row in enumerate(rows):
            assert row.plot is not None
            self.strips.addItem(row.plot, row=i, col=0)
            last = i == len(rows) - 1
            row.plot.showAxis("bottom", last)
            if last:
                row.plot.setLabel("bottom", "seconds ago")

    def _render(self, name: str, row: _Row, now: float) -> None:
        snap = row.snapshot
        i = self._index(name)
        state = display_state(snap)
        colour = status_colour("disabled" if snap.disabled else BreakerState(snap.state).value)
        state_item = self.table.item(i, COL_STATE)
        state_item.setText(state)
        state_item.setBackground(QBrush(colour))
        state_item.setForeground(QBrush(QColor("white")))
        self.table.item(i, COL_RATE).setText(f"{snap.failure_rate:.0%} of {snap.calls_in_window}")
        self.table.item(i, COL_RATE).setToolTip("Failure share among the calls in the breaker's window")
        self.table.item(i, COL_COUNTS).setText(f"{snap.failure_count} / {snap.success_count}")
        self.table.item(i, COL_ROW).setText(str(snap.consecutive_failures))
        self.table.item(i, COL_PROBE).setText(self._probe_text(row, now))
        self.table.item(i, COL_OPENED).setText(fmt_wall(snap.opened_at_wall))
        if row.force_button is not None:
            row.force_button.setEnabled(snap.state is not BreakerState.OPEN or snap.disabled)

    def _redraw(self, now: float) -> None:
        if not self._plots_ready:
            return
        import numpy as np

        for row in self._rows.values():
            if row.curve is None or not row.times:
                continue
            x = np.fromiter(row.times, dtype=float, count=len(row.times)) - now
            y = np.fromiter(row.values, dtype=float, count=len(row.values))
            keep = x >= -HISTORY_S
            row.curve.setData(x[keep], y[keep], skipFiniteCheck=True)
