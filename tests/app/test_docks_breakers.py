"""BreakersDock: state colours, live probe countdown, Reset / Force open, the state strip."""

from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt

from app.docks import BreakersDock
from app.docks._common import AMBER, GREEN, GREY, RED
from core.resilience.breaker import BreakerSnapshot, BreakerState
from core.resilience.breaker_registry import BreakerRegistry
from core.resilience.clock import SYSTEM_CLOCK


def snap(name: str, state: BreakerState = BreakerState.CLOSED, *, probe: float | None = None,
         disabled: bool = False, forced: bool = False, failures: int = 0, successes: int = 0) -> BreakerSnapshot:
    calls = failures + successes
    return BreakerSnapshot(
        name=name, state=state, failure_count=failures, success_count=successes,
        consecutive_failures=failures, failure_rate=failures / calls if calls else 0.0, calls_in_window=calls,
        opened_at_wall=time.time() if state is BreakerState.OPEN else None, next_probe_in_s=probe,
        disabled=disabled, forced=forced,
    )


@pytest.fixture
def dock(qtbot, clock):
    d = BreakersDock(clock=clock)
    qtbot.addWidget(d)
    yield d
    d.timer.stop()


def test_empty_state(dock):
    assert dock.objectName() == "BreakersDock"
    assert dock.default_area == Qt.DockWidgetArea.RightDockWidgetArea
    assert dock.is_empty
    assert dock.empty_text.startswith("No circuit breakers yet")
    assert not dock.timer.isActive()


def test_rows_counts_and_state_colours(dock):
    dock.set_snapshots([snap("demucs", failures=1, successes=3), snap("ffmpeg")])
    assert not dock.is_empty
    assert dock.names() == ["demucs", "ffmpeg"]
    assert dock.state_text("demucs") == "closed"
    assert dock.state_colour("demucs").name() == GREEN
    row = dock._index("demucs")
    assert dock.table.item(row, 2).text() == "25% of 4"
    assert dock.table.item(row, 3).text() == "1 / 3"

    dock.set_snapshots([snap("demucs", BreakerState.OPEN, probe=30, failures=4), snap("ffmpeg")])
    assert dock.state_text("demucs") == "open"
    assert dock.state_colour("demucs").name() == RED
    assert not dock.buttons("demucs")[1].isEnabled()  # already open
    dock.set_snapshots([snap("demucs", BreakerState.HALF_OPEN), snap("ffmpeg", disabled=True)])
    assert dock.state_colour("demucs").name() == AMBER
    assert dock.probe_text("demucs") == "probing"
    assert dock.state_text("ffmpeg") == "disabled"
    assert dock.state_colour("ffmpeg").name() == GREY
    dock.set_snapshots([snap("demucs", BreakerState.OPEN, forced=True)])  # ffmpeg is gone
    assert dock.names() == ["demucs"]
    assert dock.state_text("demucs") == "open (forced)"
    dock.set_snapshots([])
    assert dock.is_empty
    assert not dock.timer.isActive()


def test_countdown_ticks_down_and_resyncs(dock, clock):
    dock.set_snapshots([snap("basic-pitch", BreakerState.OPEN, probe=30)])
    assert dock.timer.isActive() and dock.timer.interval() == 1000
    assert dock.probe_text("basic-pitch") == "in 30 s"
    clock.advance(1.0)
    dock.tick()
    assert dock.probe_text("basic-pitch") == "in 29 s"
    clock.advance(4.0)
    dock.tick()
    assert dock.probe_text("basic-pitch") == "in 25 s"
    assert dock.remaining_s("basic-pitch") == pytest.approx(25.0)
    dock.set_snapshots([snap("basic-pitch", BreakerState.OPEN, probe=10)])  # a new snapshot re-syncs
    assert dock.probe_text("basic-pitch") == "in 10 s"
    clock.advance(11.0)
    dock.tick()
    assert dock.probe_text("basic-pitch") == "due now"


def test_countdown_runs_on_its_own_timer(qtbot):
    dock = BreakersDock(clock=SYSTEM_CLOCK)
    qtbot.addWidget(dock)
    dock.set_snapshots([snap("demucs", BreakerState.OPEN, probe=30)])
    assert dock.probe_text("demucs") == "in 30 s"
    qtbot.waitUntil(lambda: dock.probe_text("demucs") == "in 29 s", timeout=2500)
    dock.timer.stop()


def test_buttons_emit_breaker_names(dock, qtbot):
    dock.set_snapshots([snap("demucs"), snap("ffmpeg")])
    reset, force = dock.buttons("ffmpeg")
    with qtbot.waitSignal(dock.reset_requested, timeout=1000, check_params_cb=lambda n: n == "ffmpeg"):
        qtbot.mouseClick(reset, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(dock.force_open_requested, timeout=1000, check_params_cb=lambda n: n == "demucs"):
        qtbot.mouseClick(dock.buttons("demucs")[1], Qt.MouseButton.LeftButton)


def test_state_strip_records_history(dock, clock):
    dock.set_snapshots([snap("demucs")])
    for _ in range(3):
        clock.advance(1.0)
        dock.tick()
    dock.set_snapshots([snap("demucs", BreakerState.OPEN, probe=20)])
    for _ in range(2):
        clock.advance(1.0)
        dock.tick()
    x, y = dock.history("demucs")
    assert len(x) == len(y) == 7
    assert x[-1] == 0.0 and x[0] == pytest.approx(-5.0)
    assert list(y[:4]) == [0, 0, 0, 0] and list(y[4:]) == [2, 2, 2]


def test_real_registry_snapshots_and_grab(dock, qtbot, clock):
    registry = BreakerRegistry(clock)
    registry.get("demucs")
    registry.get("basic-pitch").force_open()
    registry.get("ffmpeg")
    dock.set_snapshots([snap("demucs", failures=2, successes=5)])
    for _ in range(60):
        clock.advance(1.0)
        dock.tick()
    dock.set_snapshots(registry.snapshots())
    assert dock.state_text("basic-pitch") == "open (forced)"
    assert dock.state_colour("basic-pitch").name() == RED
    for _ in range(20):
        clock.advance(1.0)
        dock.tick()
    dock.resize(760, 420)
    dock.show()
    qtbot.waitExposed(dock)
    assert dock.grab().save("/tmp/dock_breakers.png")
