"""The one bridge between the engine and Qt.

The engine publishes plain events from its own threads. ``EngineBridge``
collects them in a thread-safe buffer and, from a timer on the GUI thread,
emits them as Qt signals at most ``rate_hz`` times a second, however many jobs
run. Events that only describe "the latest state" (progress, a job's current
stage) are coalesced to the newest one; everything else arrives in order.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, QTimer, Signal

from core.engine import events as ev

# Events where only the newest matters, keyed by what they describe.
_LATEST_ONLY = {
    ev.Progress: lambda e: ("progress", e.batch_id),
    ev.StageStarted: lambda e: ("stage", e.job_id),
    ev.StageWaiting: lambda e: ("stage", e.job_id),
    ev.StageFinished: lambda e: ("stage", e.job_id),
    ev.BreakerChanged: lambda e: ("breaker", e.name),
    ev.HealthChanged: lambda e: ("health",),
}


class EngineBridge(QObject):
    events_arrived = Signal(object)
    """A list of engine events (oldest first), coalesced, delivered on the GUI thread."""

    progress_changed = Signal(object)
    """The newest ``Progress`` event."""

    breaker_changed = Signal(object)
    """A ``BreakerChanged`` event."""

    health_changed = Signal(object)
    """A ``HealthChanged`` event."""

    batch_finished = Signal(object)
    """A ``BatchFinished`` event."""

    def __init__(self, rate_hz: float = 20.0, parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._ordered: list[ev.Event] = []
        self._latest: dict[tuple, int] = {}
        self._timer = QTimer(self)
        self._timer.setInterval(max(1, int(1000 / rate_hz)))
        self._timer.timeout.connect(self.flush)
        self._timer.start()
        self.flushes = 0

    def post(self, event: ev.Event) -> None:
        """Called from any thread (subscribe this to the engine's EventBus)."""
        key_fn = _LATEST_ONLY.get(type(event))
        with self._lock:
            if key_fn is not None:
                key = key_fn(event)
                idx = self._latest.get(key)
                if idx is not None:
                    self._ordered[idx] = event
                    return
                self._latest[key] = len(self._ordered)
            self._ordered.append(event)

    def flush(self) -> None:
        with self._lock:
            batch, self._ordered = self._ordered, []
            self._latest.clear()
        if not batch:
            return
        self.flushes += 1
        self.events_arrived.emit(batch)
        for e in batch:
            if isinstance(e, ev.Progress):
                self.progress_changed.emit(e)
            elif isinstance(e, ev.BreakerChanged):
                self.breaker_changed.emit(e)
            elif isinstance(e, ev.HealthChanged):
                self.health_changed.emit(e)
            elif isinstance(e, ev.BatchFinished):
                self.batch_finished.emit(e)

    def stop(self) -> None:
        self._timer.stop()
        self.flush()
