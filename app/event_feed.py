"""Feeds engine events to the controller a slice at a time, so a burst never freezes the window.

A burst larger than ``EVENTS_PER_TURN`` (10,000 files queued at once) is
applied in slices, one per turn of the event loop, in order: the window keeps
painting between them.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from PySide6.QtCore import QObject, QTimer

EVENTS_PER_TURN = 2000  # engine events applied per turn of the event loop


class EventFeed(QObject):
    """Calls ``apply(events)`` with at most ``EVENTS_PER_TURN`` events per turn of the event loop."""

    def __init__(self, apply: Callable[[list], None], parent: QObject | None = None):
        super().__init__(parent)
        self._apply = apply
        self._stopped = False
        self._backlog: deque = deque()  # events of a large burst not applied yet (oldest first)
        self._drain_timer = QTimer(self, interval=0)
        self._drain_timer.timeout.connect(self._drain)

    def feed(self, events: list) -> None:
        """Events the bridge delivered: applied now, or queued behind what is still waiting."""
        if self._stopped:
            return
        if not self._backlog and len(events) <= EVENTS_PER_TURN:
            self._apply(events)
            return
        self._backlog.extend(events)  # in order, after what is still waiting
        self._drain()

    def _drain(self) -> None:
        """Apply the next slice of a large burst; the timer calls again while some is left."""
        backlog = self._backlog
        chunk = [backlog.popleft() for _ in range(min(EVENTS_PER_TURN, len(backlog)))]
        if backlog and not self._stopped:
            self._drain_timer.start()
        else:
            self._drain_timer.stop()
        if chunk and not self._stopped:
            self._apply(chunk)

    def stop(self) -> None:
        """Drop what is waiting and apply nothing more (the controller is closing)."""
        self._stopped = True
        self._drain_timer.stop()
        self._backlog.clear()


__all__ = ["EVENTS_PER_TURN", "EventFeed"]
