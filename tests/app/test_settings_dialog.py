"""The settings dialog: a round trip through SettingsStore, and inline validation naming the field."""

from __future__ import annotations

from PySide6.QtWidgets import QDialogButtonBox

from app.settings_dialog import SettingsDialog
from core.settings import Settings, SettingsStore


def ok_button(dialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)


def test_round_trip_saves_what_was_edited(qtbot, tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    dialog = SettingsDialog(Settings(output_dir=str(tmp_path / "out")), store)
    qtbot.addWidget(dialog)
    dialog.field("settings.output_dir").setText(str(tmp_path / "elsewhere"))
    dialog.field("run.workers").setValue(3)
    dialog.field("pipeline.separate").setChecked(True)
    dialog.field("pipeline.keep_stems").setChecked(True)
    dialog.field("pipeline.analysis_sr").setValue(44100)
    dialog.field("pipeline.time_signature_numerator").setValue(3)
    dialog.field("pipeline.time_signature_denominator").setValue(8)
    dialog.field("retry.max_attempts").setValue(5)
    dialog.field("retry.base_delay_s").setValue(0.5)
    dialog.field("retry.max_delay_s").setValue(10.0)
    dialog.field("breaker.failure_threshold").setValue(4)
    dialog.field("breaker.cooldown_s").setValue(45.0)
    dialog.field("timeouts.default_s").setValue(300.0)
    dialog.field("timeouts.floor_s").setValue(20.0)
    dialog.field("timeouts.ceiling_s").setValue(900.0)
    assert ok_button(dialog).isEnabled() and dialog.problems == []
    with qtbot.waitSignal(dialog.settings_saved) as saved:
        ok_button(dialog).click()
    loaded = store.load()
    assert loaded.warnings == []
    s = loaded.settings
    assert s == saved.args[0]
    assert s.output_dir == str(tmp_path / "elsewhere") and s.run.workers == 3
    assert s.pipeline.separate and s.pipeline.keep_stems and not s.pipeline.transcribe
    assert s.pipeline.analysis_sr == 44100 and s.pipeline.time_signature == (3, 8)
    assert (s.run.retry.max_attempts, s.run.retry.base_delay_s, s.run.retry.max_delay_s) == (5, 0.5, 10.0)
    assert (s.run.breaker.failure_threshold, s.run.breaker.cooldown_s) == (4, 45.0)
    assert (s.run.timeouts.default_s, s.run.timeouts.floor_s, s.run.timeouts.ceiling_s) == (300.0, 20.0, 900.0)

    again = SettingsDialog(s, store)  # it shows what was saved
    qtbot.addWidget(again)
    assert again.field("run.workers").value() == 3
    assert again.field("pipeline.time_signature_denominator").value() == 8


def test_invalid_values_are_named_inline_and_disable_ok(qtbot, tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    dialog = SettingsDialog(Settings(output_dir=str(tmp_path / "out")), store)
    qtbot.addWidget(dialog)
    dialog.field("retry.max_attempts").setValue(0)
    assert not ok_button(dialog).isEnabled()
    assert "max_attempts" in dialog.error_label.text()
    assert not dialog.error_label.isHidden()
    assert "border" in dialog.field("retry.max_attempts").styleSheet()
    assert dialog.field("retry.base_delay_s").styleSheet() == ""

    dialog.field("retry.max_attempts").setValue(2)
    dialog.field("timeouts.floor_s").setValue(100.0)
    dialog.field("timeouts.ceiling_s").setValue(50.0)
    dialog.field("pipeline.time_signature_denominator").setValue(3)
    text = dialog.error_label.text()
    assert "ceiling_s" in text and "time_signature_denominator" in text and "max_attempts" not in text
    assert not ok_button(dialog).isEnabled()
    dialog.accept()  # refused while invalid: nothing written
    assert not store.path.exists()

    dialog.field("timeouts.ceiling_s").setValue(500.0)
    dialog.field("pipeline.time_signature_denominator").setValue(4)
    dialog.field("run.workers").setValue(0)
    assert "workers" in dialog.error_label.text()
    dialog.field("run.workers").setValue(2)
    dialog.field("settings.output_dir").setText("")
    assert "output_dir" in dialog.error_label.text()
    dialog.field("settings.output_dir").setText(str(tmp_path))
    assert ok_button(dialog).isEnabled() and dialog.error_label.isHidden()
