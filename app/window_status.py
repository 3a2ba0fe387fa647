"""The window's status bar: scanning, job counts, failures, overall progress and ETA, the health badge,
transient messages, and a desktop notification when a batch ends."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QLabel, QMainWindow, QProgressBar, QSystemTrayIcon, QToolButton

from app.control_state import ControlState
from app.resources import app_icon


def format_duration(seconds: float | None) -> str:
    """"42 s", "3 min 05 s", "1 h 02 min" (empty for None)."""
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


class WindowStatus(QObject):
    """Fills ``window``'s status bar; ``show_health_dock()`` is called when the health badge is clicked."""

    def __init__(self, window: QMainWindow, show_health_dock: Callable[[], None]):
        super().__init__(window)
        self._window = window
        self._tray: QSystemTrayIcon | None = None
        bar = window.statusBar()
        self.scan_label = QLabel("Scanning…")
        self.scan_label.hide()
        self.counts_label = QLabel()
        self.failed_label = QLabel()
        self.failed_label.setObjectName("failedLabel")
        self.eta_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setObjectName("overallProgress")
        self.progress.setMaximumWidth(220)
        self.progress.setFormat("%v / %m")
        self.progress.hide()
        self.health_badge = QToolButton()
        self.health_badge.setObjectName("healthBadge")
        self.health_badge.hide()
        self.health_badge.clicked.connect(show_health_dock)
        self.health_label = QLabel()
        for w in (self.scan_label, self.counts_label, self.failed_label, self.eta_label, self.progress,
                  self.health_label, self.health_badge):
            bar.addPermanentWidget(w)

    def show_message(self, text: str, timeout_ms: int = 0) -> None:
        self._window.statusBar().showMessage(text, timeout_ms)

    def show_state(self, state: ControlState, counts: dict[str, int]) -> None:
        """Scanning or not, and the queue's ``counts`` by row state (failures apart, in red)."""
        self.scan_label.setVisible(state.scanning)
        shown = [f"{n} {name}" for name, n in counts.items() if n and name not in ("failed", "quarantined")]
        self.counts_label.setText(" · ".join(shown))
        bad = counts["failed"] + counts["quarantined"]
        self.failed_label.setText(f"{bad} failed" if bad else "")

    def show_progress(self, p) -> None:
        """A ``Progress`` event of the running batch."""
        self.progress.show()
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done + p.failed)
        self.eta_label.setText(f"ETA {format_duration(p.eta_s)}" if p.eta_s is not None and p.done + p.failed < p.total
                               else "")

    def batch_started(self, batch_id: int) -> None:
        self.progress.show()
        self.progress.setRange(0, 0)  # busy until the first job ends
        self.show_message(f"Batch {batch_id} running", 5000)

    def batch_finished(self, summary) -> None:
        """A ``BatchSummary``: its counts stay in the status bar, and go to a desktop notification."""
        counts = {k: v for k, v in summary.counts.items() if v}
        text = f"Batch {summary.batch_id} {summary.status.value}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        if summary.pause_reason and summary.status.value == "paused":
            text += f" ({summary.pause_reason})"
        self.eta_label.setText("")
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        self.show_message(text)
        self.notify(text)

    def show_checking(self, busy: bool) -> None:
        self.health_label.setText("Checking dependencies…" if busy else "")

    def show_health(self, report) -> None:
        """A ``HealthReport``: the badge names what is missing, or hides."""
        blockers = list(report.blockers)
        self.health_badge.setVisible(bool(blockers))
        if blockers:
            names = ", ".join(r.name for r in blockers)
            self.health_badge.setText(f"⚠ {len(blockers)} missing: {names}")
            self.health_badge.setToolTip("\n".join(f"{r.name}: {r.details} {r.install_hint}".strip()
                                                   for r in blockers))

    def notify(self, text: str) -> None:
        """A desktop notification when the platform has one, else the status bar keeps the message."""
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        if self._tray is None:
            self._tray = QSystemTrayIcon(app_icon(), self._window)
            self._tray.show()
        self._tray.showMessage("Stave", text, QSystemTrayIcon.MessageIcon.Information, 8000)

    def close(self) -> None:
        """The window closes: take the tray icon away."""
        if self._tray is not None:
            self._tray.hide()


__all__ = ["WindowStatus", "format_duration"]
