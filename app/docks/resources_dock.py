"""The resources panel: CPU and memory of Stave and its worker processes, sampled every second.

Sampling walks ``/proc`` (psutil), which takes tens of milliseconds on a busy
machine, so the timer samples on the dock's own one-thread pool and the result
is shown on the GUI thread (:meth:`sample` still measures on the caller's
thread, for tests and scripts). psutil measures CPU between two calls on the
*same* ``Process`` object, so
the dock keeps one per pid (checked against its create time, so a reused pid
is a new process) and drops the ones whose process is gone: a long batch that
replaces crashed workers does not accumulate handles. Two small curves show
the last two minutes from ring buffers, updated with ``setData``. The labels
are there at once; pyqtgraph and the curves may be built later (``defer=True``:
the window builds them after its first paint) and then show what was sampled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil
from PySide6.QtCore import Qt, QThreadPool, QTimer, Signal, Slot
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from app.docks._common import BLUE, GREEN, StaveDock, fmt_bytes
from app.runner import TaskRunnable

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
        self._data = [0.0] * size
        self._n = 0

    def append(self, value: float) -> None:
        self._data[self._n % len(self._data)] = float(value)
        self._n += 1

    def values(self) -> list[float]:
        size = len(self._data)
        if self._n <= size:
            return self._data[: self._n]
        i = self._n % size
        return self._data[i:] + self._data[:i]


class ResourcesDock(StaveDock):
    """CPU %, memory and worker count of this process tree, with two-minute curves."""

    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    title = "Resources"
    empty_message = "Resource monitoring is stopped"

    sampled = Signal(object)
    """A new ``ResourceSample`` was taken (once a second while running)."""

    def __init__(self, parent: QWidget | None = None, *, pid: int | None = None, defer: bool = False):
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
        self._plots = QHBoxLayout()  # the two plots, once built

        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(labels)
        lay.addLayout(self._plots, 1)
        self._install(content)

        self.pool = QThreadPool(self)  # one measurement at a time, off the GUI thread
        self.pool.setObjectName("stave-resources")
        self.pool.setMaxThreadCount(1)
        self._in_flight = None  # the signals of the measurement running on the pool
        self.timer = QTimer(self)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self.sample_soon)
        self._plots_ready = False
        self._defer_build(self._build_plots(), defer)

    def _build_plots(self):
        """The two plots, one per step; then they show what was sampled so far."""
        import pyqtgraph as pg

        self.cpu_plot = self._make_plot("CPU %")
        self.cpu_plot.setYRange(0, 100, padding=0.02)
        self.cpu_curve = self.cpu_plot.plot(pen=pg.mkPen(BLUE, width=2), fillLevel=0,
                                            brush=pg.mkBrush(21, 101, 192, 50), skipFiniteCheck=True)
        self._plots.addWidget(self.cpu_plot)
        yield
        self.mem_plot = self._make_plot("MB")
        self.mem_curve = self.mem_plot.plot(pen=pg.mkPen(GREEN, width=2), fillLevel=0,
                                            brush=pg.mkBrush(46, 125, 50, 50), skipFiniteCheck=True)
        self._plots.addWidget(self.mem_plot)
        self._plots_ready = True
        self._draw()

    @staticmethod
    def _make_plot(ylabel: str):
        import pyqtgraph as pg

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
        """Sample now and then every second (off the GUI thread; each result is announced by ``sampled``)."""
        if not self.timer.isActive():
            self.timer.start()
            self.sample_soon()

    @Slot()
    def stop(self) -> None:
        """Stop sampling (waits for a measurement in flight) and forget the child handles."""
        self.timer.stop()
        self.pool.waitForDone()
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
    def sample_soon(self) -> None:
        """Measure on the dock's pool thread and show the result on arrival (skipped while one is in flight)."""
        if self._in_flight is not None:
            return
        task = TaskRunnable(self._measure, name="resources sample")
        self._in_flight = task.signals
        task.signals.finished.connect(self._on_measured)
        task.signals.errored.connect(self._on_measured)
        self.pool.start(task)

    def _on_measured(self, result: ResourceSample | BaseException) -> None:
        self._in_flight = None
        if isinstance(result, ResourceSample) and self.timer.isActive():  # not stopped meanwhile
            self._show(result)

    @Slot()
    def sample(self) -> ResourceSample:
        """Take one sample of this process and its children now (on this thread), update labels and curves."""
        self.pool.waitForDone()  # the psutil handles are not shared between two measurements
        s = self._measure()
        self._show(s)
        return s

    def _measure(self) -> ResourceSample:
        """CPU and memory of this process tree (psutil only: runs on any thread, one call at a time)."""
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
        return ResourceSample(cpu_percent=cpu / self._ncpu, rss_bytes=rss, workers=len(live))

    def _show(self, s: ResourceSample) -> None:
        self.last = s
        self._cpu.append(s.cpu_percent)
        self._mem.append(s.rss_bytes / 1e6)
        self._render(s)
        self.sampled.emit(s)

    def _render(self, s: ResourceSample) -> None:
        self._set_empty(False)
        self.cpu_label.setText(f"CPU {s.cpu_percent:.0f}% of {self._ncpu} cores")
        self.mem_label.setText(f"Memory {fmt_bytes(s.rss_bytes)}")
        self.mem_label.setToolTip("Resident memory of Stave and its workers (shared pages counted once per process)")
        self.workers_label.setText(f"Workers {s.workers}")
        self._draw()

    def _draw(self) -> None:
        """The curves from the ring buffers (nothing to do before the plots are built)."""
        if not self._plots_ready:
            return
        import numpy as np

        cpu, mem = np.asarray(self._cpu.values(), dtype=float), np.asarray(self._mem.values(), dtype=float)
        x = np.arange(-len(cpu) + 1, 1, dtype=float)
        self.cpu_curve.setData(x, cpu, skipFiniteCheck=True)
        self.mem_curve.setData(x, mem, skipFiniteCheck=True)
        self.mem_plot.setYRange(0, max(1.0, float(mem.max()) * 1.15 if len(mem) else 1.0), padding=0)
