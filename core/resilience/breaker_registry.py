"""Breakers by name, and where their state is kept between runs.

The engine owns one :class:`BreakerRegistry` (there is no module-level one)
and names a breaker per external dependency: ``demucs``, ``basic-pitch``,
``ffmpeg``. Breaker state goes to a :class:`BreakerStore`; the engine's
SQLite store implements the protocol, :class:`MemoryBreakerStore` is the
in-process one.
"""

from __future__ import annotations

import json
import threading
from typing import Protocol

from core.resilience.breaker import BreakerConfig, BreakerListener, BreakerSnapshot, CircuitBreaker
from core.resilience.clock import Clock


class BreakerStore(Protocol):
    """Keeps one JSON-able dict per breaker name."""

    def load(self, name: str) -> dict | None: ...

    def save(self, name: str, state: dict) -> None: ...


class MemoryBreakerStore:
    """A store in memory. Copies through JSON, so it holds only what a file could; counts writes."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()
        self.writes = 0

    def load(self, name: str) -> dict | None:
        with self._lock:
            raw = self._data.get(name)
        return None if raw is None else json.loads(raw)

    def save(self, name: str, state: dict) -> None:
        raw = json.dumps(state)
        with self._lock:
            self._data[name] = raw
            self.writes += 1


class BreakerRegistry:
    """Creates breakers on first use and hands out the same one afterwards."""

    def __init__(self, clock: Clock, store: BreakerStore | None = None, default_config: BreakerConfig | None = None):
        self._clock = clock
        self._store = store
        self.default_config = default_config or BreakerConfig()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._listeners: list[BreakerListener] = []
        self._lock = threading.Lock()

    def get(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """The breaker called ``name``, created on first use.

        A ``config`` different from the existing breaker's is applied to it
        (settings changed); ``None`` keeps whatever it has.
        """
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                breaker = CircuitBreaker(name, config or self.default_config, clock=self._clock, store=self._store)
                for fn in self._listeners:
                    breaker.add_listener(fn)
                self._breakers[name] = breaker
                return breaker
        if config is not None and config != breaker.config:
            breaker.configure(config)
        return breaker

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._breakers)

    def snapshots(self) -> list[BreakerSnapshot]:
        """One snapshot per breaker, sorted by name."""
        return [b.snapshot() for b in self._all()]

    def reset_all(self) -> None:
        for breaker in self._all():
            breaker.reset()

    def add_listener(self, fn: BreakerListener) -> None:
        """Listen to every breaker, those that exist and those created later."""
        with self._lock:
            self._listeners.append(fn)
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.add_listener(fn)

    def remove_listener(self, fn: BreakerListener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)
            breakers = list(self._breakers.values())
        for breaker in breakers:
            breaker.remove_listener(fn)

    def _all(self) -> list[CircuitBreaker]:
        with self._lock:
            return [self._breakers[n] for n in sorted(self._breakers)]
