"""Clocks and sleeps that policies take as arguments, so tests never wait.

``SystemClock`` is the real one. ``FakeClock`` advances only when told to (or
when something sleeps on it) and records every sleep, for tests.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from core.resilience.cancel import CancelToken


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for deadlines and durations)."""

    def wall(self) -> float:
        """Seconds since the epoch (for timestamps that outlive the process)."""

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        """Sleep up to ``seconds``; return False when ``cancel`` cut it short."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        if seconds <= 0:
            return not (cancel is not None and cancel.is_set())
        if cancel is None:
            time.sleep(seconds)
            return True
        return not cancel.wait(seconds)


class FakeClock:
    """A clock for tests: time moves only through ``advance`` or ``sleep``."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0):
        self._now = start
        self._wall_offset = wall_start - start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> float:
        with self._lock:
            return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float, cancel: CancelToken | None = None) -> bool:
        self.sleeps.append(seconds)
        if cancel is not None and cancel.is_set():
            return False
        self.advance(max(0.0, seconds))
        return True


SYSTEM_CLOCK = SystemClock()
