"""Breaker registry and the in-memory breaker store."""

from __future__ import annotations

import pytest

from core.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker
from core.resilience.breaker_registry import BreakerRegistry, MemoryBreakerStore
from core.resilience.errors import DependencyFailed


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.config.failure_threshold):
        b.record_failure(b.acquire(), DependencyFailed("down"))


def test_get_creates_once_and_returns_the_same_breaker(clock):
    default = BreakerConfig(cooldown_s=12)
    reg = BreakerRegistry(clock, default_config=default)
    demucs = reg.get("demucs")
    assert reg.get("demucs") is demucs and demucs.name == "demucs" and demucs.config == default
    pitch = reg.get("basic-pitch", BreakerConfig(failure_threshold=5))
    assert pitch is not demucs and pitch.config.failure_threshold == 5
    assert reg.names() == ["basic-pitch", "demucs"]


def test_get_with_a_new_config_reconfigures_keeping_state(clock):
    reg = BreakerRegistry(clock)
    b = reg.get("demucs")
    trip(b)
    assert reg.get("demucs", BreakerConfig(cooldown_s=5)) is b
    snap = b.snapshot()
    assert b.config.cooldown_s == 5 and snap.state is BreakerState.OPEN and snap.next_probe_in_s == 5.0
    assert reg.get("demucs") is b and b.config.cooldown_s == 5  # None keeps the current config


def test_snapshots_and_reset_all(clock):
    reg = BreakerRegistry(clock)
    trip(reg.get("ffmpeg"))
    reg.get("demucs")
    snaps = reg.snapshots()
    assert [(s.name, s.state) for s in snaps] == [("demucs", BreakerState.CLOSED), ("ffmpeg", BreakerState.OPEN)]
    reg.reset_all()
    assert all(s.state is BreakerState.CLOSED and s.failure_count == 0 for s in reg.snapshots())


def test_listeners_reach_current_and_future_breakers(clock):
    reg = BreakerRegistry(clock)
    seen: list = []

    def listener(name, old, new, snap):
        seen.append((name, new))

    first = reg.get("demucs")
    reg.add_listener(listener)
    later = reg.get("ffmpeg")
    trip(first)
    trip(later)
    assert seen == [("demucs", BreakerState.OPEN), ("ffmpeg", BreakerState.OPEN)]
    reg.remove_listener(listener)
    reg.reset_all()
    trip(reg.get("basic-pitch"))
    assert len(seen) == 2


def test_registry_state_survives_through_the_store_without_writes_on_get(clock):
    store = MemoryBreakerStore()
    reg = BreakerRegistry(clock, store)
    reg.get("demucs")
    reg.get("ffmpeg")
    assert store.writes == 0
    trip(reg.get("demucs"))
    writes = store.writes
    clock.advance(5)
    again = BreakerRegistry(clock, store)
    snap = again.get("demucs").snapshot()
    assert snap.state is BreakerState.OPEN and snap.next_probe_in_s == pytest.approx(25.0)
    assert again.get("ffmpeg").state is BreakerState.CLOSED
    assert store.writes == writes


def test_memory_store_holds_json_copies(clock):
    store = MemoryBreakerStore()
    state = {"state": "open", "window": [1, 0]}
    store.save("x", state)
    state["window"].append(1)
    loaded = store.load("x")
    assert loaded == {"state": "open", "window": [1, 0]}
    loaded["state"] = "closed"
    assert store.load("x")["state"] == "open" and store.load("y") is None
    with pytest.raises(TypeError):
        store.save("x", {"when": object()})
