"""The resources panel: CPU and memory of Stave and its worker processes, sampled every second.

psutil measures CPU between two calls on the *same* ``Process`` object, so
the dock keeps one per pid (checked against its create time, so a reused pid
is a new process) and drops the ones whose process is gone: a long batch that
replaces crashed workers does not accumulate handles. Two small curves show
the last two minutes from ring buffers, updated with ``setData``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import psutil
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.docks._common import BLUE, GREEN, StaveDock, fmt_bytes

INTERVAL_MS = 1000
HISTORY = 120  # samples (two minutes at 1 Hz)
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


@dataclass(frozen=True)
class ResourceSample:
    cpu_percent: float  # share of the whole machine (all cores), 0..100
    rss_bytes: int  # this process plus its children
    workers: int  # live child processes


class _Ring:
    """A fixed-size ring buffer of floats that returns its contents oldest first."""

    def __init__(self, size: int):
        self._data = np.zeros(size)
        self._n = 0

    def append(self, value: float) -> None:
        self._data[self._n % len(self._data)] = value
        self._n += 1

    def values(self) -> np.ndarray:
        size = len(self._data)
        if self._n <= size:
            return self._data[: self._n].copy()
        i = self._n % size
        return np.concatenate([self._data[i:], self._data[:i]])


class ResourcesDock(StaveDock):
    """CPU %, memory and worker count of this process tree, with two-minute curves."""

    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    title = "Resources"
    empty_message = "Resource monitoring is stopped"

    sampled = Signal(object)
    """A new ``ResourceSample`` was taken (once a second while running)."""

    def __init__(self, parent: QWidget | None = None, *, pid: int | None = None):
        super().__init__(parent)
        self._me = psutil.Process(pid or os.getpid())
        self._me.cpu_percent(None)  # prime: the first reading is always 0
        self._children: dict[int, psutil.Process] = {}
        self._ncpu = psutil.cpu_count() or 1
        self._cpu = _Ring(HISTORY)
        self._mem = _Ring(HISTORY)
        self.last: ResourceSample | None = None

        self.cpu_label = QLabel("CPU -")
        self.mem_label = QLabel("Memory -")
        self.workers_label = QLabel("Workers -")
        labels = QHBoxLayout()
        labels.addWidget(self.cpu_label)
        labels.addWidget(self.mem_label)
        labels.addWidget(self.workers_label)
        labels.addStretch(1)

        self.cpu_plot = self._make_plot("CPU %")
        self.cpu_plot.setYRange(0, 100, padding=0.02)
        self.cpu_curve = self.cpu_plot.plot(pen=pg.mkPen(BLUE, width=2), fillLevel=0,
                                            brush=pg.mkBrush(21, 101, 192, 50), skipFiniteCheck=True)
        self.mem_plot = self._make_plot("MB")
        self.mem_curve = self.mem_plot.plot(pen=pg.mkPen(GREEN, width=2), fillLevel=0,
                                            brush=pg.mkBrush(46, 125, 50, 50), skipFiniteCheck=True)
        plots = QHBoxLayout()
        plots.addWidget(self.cpu_plot)
        plots.addWidget(self.mem_plot)

        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(labels)
        lay.addLayout(plots, 1)
        self._install(content)

        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.sample)

    @staticmethod
    def _make_plot(ylabel: str) -> pg.PlotWidget:
        w = pg.PlotWidget(background="w")
        w.setMinimumHeight(70)
        w.setMenuEnabled(False)
        w.hideButtons()
        w.setMouseEnabled(x=False, y=False)
        w.setLabel("left", ylabel)
        w.setXRange(-HISTORY, 0, padding=0)
        w.setClipToView(True)
        w.showGrid(x=False, y=True, alpha=0.2)
        return w

    # --- control -----------------------------------------------------------

    @Slot()
    def start(self) -> None:
        """Sample now and then every second."""
        if not self.timer.isActive():
            self.sample()
            self.timer.start()

    @Slot()
    def stop(self) -> None:
        """Stop sampling and forget the child handles."""
        self.timer.stop()
        self._children.clear()
        if self.last is None:
            self._set_empty(True)

    @property
    def running(self) -> bool:
        return self.timer.isActive()

    def tracked_pids(self) -> set[int]:
        """Child pids with a cached psutil handle."""
        return set(self._children)

    # --- sampling ----------------------------------------------------------

    @Slot()
    def sample(self) -> ResourceSample:
        """Take one sample of this process and its children, update labels and curves."""
        cpu = 0.0
        rss = 0
        try:
            cpu += self._me.cpu_percent(None)
            rss += self._me.memory_info().rss
            current = self._me.children(recursive=True)
        except _GONE:
            current = []
        live: dict[int, psutil.Process] = {}
        for child in current:
            cached = self._children.get(child.pid)
            proc = cached if cached is not None and cached == child else child  # == compares create time
            try:
                if proc is child:
                    proc.cpu_percent(None)  # first reading primes the counter
                else:
                    cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except _GONE:
                continue
            live[child.pid] = proc
        self._children = live  # handles of dead children are dropped here
        s = ResourceSample(cpu_percent=cpu / self._ncpu, rss_bytes=rss, workers=len(live))
        self.last = s
        self._cpu.append(s.cpu_percent)
        self._mem.append(s.rss_bytes / 1e6)
        self._render(s)
        self.sampled.emit(s)
        return s

    def _render(self, s: ResourceSample) -> None:
        self._set_empty(False)
        self.cpu_label.setText(f"CPU {s.cpu_percent:.0f}% of {self._ncpu} cores")
        self.mem_label.setText(f"Memory {fmt_bytes(s.rss_bytes)}")
        self.mem_label.setToolTip("Resident memory of Stave and its workers (shared pages counted once per process)")
        self.workers_label.setText(f"Workers {s.workers}")
        cpu, mem = self._cpu.values(), self._mem.values()
        x = np.arange(-len(cpu) + 1, 1, dtype=float)
        self.cpu_curve.setData(x, cpu, skipFiniteCheck=True)
        self.mem_curve.setData(x, mem, skipFiniteCheck=True)
        self.mem_plot.setYRange(0, max(1.0, float(mem.max()) * 1.15), padding=0)
