"""HealthDock renders a Qt-free HealthReport: order, colours, fix commands, busy state."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt

from app.docks import HealthDock
from app.docks._common import AMBER, GREEN, RED
from core.resilience.health import HealthReport, HealthResult, HealthStatus, default_registry

NOW = time.time()


def _report() -> HealthReport:
    results = (
        HealthResult("soundfile", HealthStatus.OK, "0.12.1", "libsndfile 1.2", "decoding WAV", "pip install soundfile",
                     required=True, checked_at=NOW),
        HealthResult("ffmpeg", HealthStatus.MISSING, "", "not on PATH", "m4a, aac and wma", "pip install imageio-ffmpeg",
                     required=False, checked_at=NOW),
        HealthResult("librosa", HealthStatus.ERROR, "0.11.0", "import failed: numba", "tempo, beats, key",
                     "pip install -U librosa", required=True, checked_at=NOW),
        HealthResult("memory", HealthStatus.DEGRADED, "", "1.2 GiB free", "long files", "close other programs",
                     required=True, checked_at=NOW),
    )
    return HealthReport(results=results, created_at=NOW, duration_s=2.5)


def test_empty_state_and_identity(qtbot):
    dock = HealthDock()
    qtbot.addWidget(dock)
    assert dock.objectName() == "HealthDock"
    assert dock.default_area == Qt.DockWidgetArea.RightDockWidgetArea
    assert dock.is_empty
    assert "Re-check" in dock.empty_text


def test_renders_report_required_failures_first_with_fix_commands(qtbot):
    dock = HealthDock()
    qtbot.addWidget(dock)
    dock.set_report(_report())

    assert not dock.is_empty
    names = dock.row_names()
    assert names[0] == "librosa"  # the required failure comes first
    assert set(names[1:3]) == {"ffmpeg", "memory"}  # then what is not ok
    assert names[3] == "soundfile"  # the fine ones last
    assert dock.row("librosa").foreground(1).color().name() == RED
    assert dock.row("memory").foreground(1).color().name() == AMBER
    assert dock.row("soundfile").foreground(1).color().name() == GREEN
    assert dock.row("ffmpeg").text(3) == "optional"
    assert dock.row("librosa").text(2) == "0.11.0"
    assert dock.row("librosa").text(4) == "import failed: numba"

    # not-ok rows say what they unlock and show the exact command, selectable and read-only
    assert dock.install_command("ffmpeg") == "pip install imageio-ffmpeg"
    assert dock.install_command("librosa") == "pip install -U librosa"
    assert dock.install_command("soundfile") is None  # ok rows show no fix
    ffmpeg = dock.row("ffmpeg")
    assert any("m4a, aac and wma" in ffmpeg.child(i).text(0) for i in range(ffmpeg.childCount()))
    assert "Not ready: 1 required" in dock.summary_label.text()
    assert time.strftime("%Y-%m-%d", time.localtime(NOW)) in dock.checked_label.text()

    # a second report replaces the first
    ok = HealthReport(results=(_report().results[0],), created_at=NOW, duration_s=0.1)
    dock.set_report(ok)
    assert dock.row_names() == ["soundfile"]
    assert dock.summary_label.text().startswith("Ready")

    dock.resize(760, 360)
    dock.set_report(_report())
    dock.show()
    qtbot.waitExposed(dock)
    assert dock.grab().save("/tmp/dock_health.png")


def test_copy_button_puts_command_on_clipboard(qtbot):
    from PySide6.QtGui import QGuiApplication

    dock = HealthDock()
    qtbot.addWidget(dock)
    dock.set_report(_report())
    item = dock.row("ffmpeg")
    field = next(dock.tree.itemWidget(item.child(i), 0) for i in range(item.childCount())
                 if dock.tree.itemWidget(item.child(i), 0) is not None)
    assert field.edit.isReadOnly()
    field.copy()
    assert QGuiApplication.clipboard().text() == "pip install imageio-ffmpeg"


def test_recheck_signal_and_busy_state(qtbot):
    dock = HealthDock()
    qtbot.addWidget(dock)
    with qtbot.waitSignal(dock.recheck_requested, timeout=1000):
        qtbot.mouseClick(dock.recheck_button, Qt.MouseButton.LeftButton)
    dock.set_checking(True)
    assert not dock.recheck_button.isEnabled()
    assert not dock.busy.isHidden()
    dock.set_checking(False)
    assert dock.recheck_button.isEnabled()
    assert dock.busy.isHidden()


def test_renders_a_real_report(qtbot):
    report = default_registry().run_all()
    dock = HealthDock()
    qtbot.addWidget(dock)
    dock.set_report(report)
    assert sorted(dock.row_names()) == sorted(r.name for r in report.results)
    for r in report.results:
        assert dock.row(r.name).text(1) == r.status.value
        if r.status is not HealthStatus.OK and r.install_hint:
            assert dock.install_command(r.name) == r.install_hint
