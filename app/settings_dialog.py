"""The settings dialog: edits core ``Settings`` and validates them through the core dataclasses.

Every change rebuilds the settings (``PipelineConfig``, ``RetryConfig``,
``BreakerConfig``, ``AdaptiveTimeoutConfig``, ``RunSettings``); each problem
they report names its field and is shown inline, the field is marked and OK
stays disabled until all are fixed. OK saves through ``SettingsStore``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
    QLineEdit, QPushButton, QSpinBox, QTabWidget, QVBoxLayout, QWidget,
)

from core.engine import usable_cpus
from core.pipeline.config import ConfigError
from core.settings import MAX_WORKERS, Settings, SettingsError, SettingsStore

_PIPELINE_FLAGS = (("separate", "Separate stems"), ("transcribe", "Transcribe to MIDI"),
                   ("keep_stems", "Keep stems"), ("export_bar_audio", "Export audio per bar"))


def _spin(lo: int, hi: int, suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSuffix(suffix)
    return box


def _seconds(hi: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, hi)
    box.setDecimals(2)
    box.setSuffix(" s")
    return box


class SettingsDialog(QDialog):
    settings_saved = Signal(object)
    """The ``Settings`` just saved (OK pressed and the file written)."""

    def __init__(self, settings: Settings, store: SettingsStore | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("SettingsDialog")
        self.setWindowTitle("Stave settings")
        self._base = settings
        self._store = store
        self._fields: dict[str, QWidget] = {}  # "section.field" -> its editor
        self.problems: list[str] = []

        tabs = QTabWidget()
        tabs.addTab(self._general_tab(), "General")
        tabs.addTab(self._resilience_tab(), "Resilience")
        self.error_label = QLabel()
        self.error_label.setObjectName("settingsErrors")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #cb4335;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(tabs)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self._load(settings)
        self._connect_all()
        self.validate()

    # -- building ----------------------------------------------------------------------
    def _add(self, form: QFormLayout, key: str, label: str, widget: QWidget, row: QWidget | None = None) -> None:
        widget.setObjectName(key)
        self._fields[key] = widget
        form.addRow(label, row or widget)

    def _general_tab(self) -> QWidget:
        page = QWidget()
        output = QGroupBox("Output")
        form = QFormLayout(output)
        self.output_edit = QLineEdit()
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(self.output_edit)
        h.addWidget(browse)
        self._add(form, "settings.output_dir", "Output folder", self.output_edit, row)
        workers = _spin(0, MAX_WORKERS)
        workers.setToolTip(f"Worker processes analysing files at once. Stave runs at most one per core "
                           f"({usable_cpus()} here): more would only wait for the cores and use more memory.")
        self._add(form, "run.workers", "Parallel jobs", workers)

        stages = QGroupBox("Stages")
        sform = QFormLayout(stages)
        for name, label in _PIPELINE_FLAGS:
            self._add(sform, f"pipeline.{name}", "", QCheckBox(label))

        analysis = QGroupBox("Analysis")
        aform = QFormLayout(analysis)
        self._add(aform, "pipeline.analysis_sr", "Analysis rate", _spin(0, 1_000_000, " Hz"))
        numerator, denominator = _spin(0, 99), _spin(0, 99)
        sig = QWidget()
        h = QHBoxLayout(sig)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(numerator)
        h.addWidget(QLabel("/"))
        h.addWidget(denominator)
        h.addStretch(1)
        self._add(aform, "pipeline.time_signature_numerator", "Time signature", numerator, sig)
        denominator.setObjectName("pipeline.time_signature_denominator")
        self._fields["pipeline.time_signature_denominator"] = denominator

        v = QVBoxLayout(page)
        for box in (output, stages, analysis):
            v.addWidget(box)
        v.addStretch(1)
        return page

    def _resilience_tab(self) -> QWidget:
        page = QWidget()
        retry = QGroupBox("Retry")
        form = QFormLayout(retry)
        self._add(form, "retry.max_attempts", "Attempts", _spin(0, 100))
        self._add(form, "retry.base_delay_s", "First delay", _seconds(3600))
        self._add(form, "retry.max_delay_s", "Longest delay", _seconds(3600))
        breaker = QGroupBox("Circuit breaker")
        form = QFormLayout(breaker)
        self._add(form, "breaker.failure_threshold", "Opens after failures", _spin(0, 1000))
        self._add(form, "breaker.cooldown_s", "Cooldown", _seconds(86400))
        timeouts = QGroupBox("Stage timeouts")
        form = QFormLayout(timeouts)
        self._add(form, "timeouts.default_s", "Default", _seconds(7 * 86400))
        self._add(form, "timeouts.floor_s", "At least", _seconds(7 * 86400))
        self._add(form, "timeouts.ceiling_s", "At most", _seconds(7 * 86400))
        v = QVBoxLayout(page)
        for box in (retry, breaker, timeouts):
            v.addWidget(box)
        v.addStretch(1)
        return page

    def _connect_all(self) -> None:
        for widget in self._fields.values():
            signal = {QLineEdit: "textChanged", QCheckBox: "toggled"}.get(type(widget), "valueChanged")
            getattr(widget, signal).connect(self.validate)

    # -- values ------------------------------------------------------------------------
    def field(self, key: str) -> QWidget:
        return self._fields[key]

    def _load(self, s: Settings) -> None:
        sources: dict[str, Any] = {"settings": s, "run": s.run, "pipeline": s.pipeline, "retry": s.run.retry,
                                   "breaker": s.run.breaker, "timeouts": s.run.timeouts}
        for key, widget in self._fields.items():
            section, name = key.split(".")
            value = getattr(sources[section], name)
            if isinstance(widget, QLineEdit):
                widget.setText(value)
            elif isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            else:
                widget.setValue(value if value is not None else 0)

    def _values(self, section: str) -> dict[str, Any]:
        out = {}
        for key, widget in self._fields.items():
            sec, name = key.split(".")
            if sec != section:
                continue
            if isinstance(widget, QLineEdit):
                out[name] = widget.text().strip()
            elif isinstance(widget, QCheckBox):
                out[name] = widget.isChecked()
            else:
                out[name] = widget.value()
        return out

    def build(self) -> tuple[Settings | None, list[str]]:
        """The edited settings, or None and every problem ("section.field: message")."""
        problems: list[str] = []
        base = self._base

        def part(section: str, make: Callable[[], Any]) -> Any:
            try:
                return make()
            except (ConfigError, SettingsError) as exc:
                problems.extend(f"{section}.{p}" for p in exc.problems)
            except (ValueError, TypeError) as exc:
                problems.append(f"{section}: {exc}")
            return None

        pipeline = part("pipeline", lambda: dataclasses.replace(base.pipeline, **self._values("pipeline")))
        retry = part("retry", lambda: dataclasses.replace(base.run.retry, **self._values("retry")))
        breaker = part("breaker", lambda: dataclasses.replace(base.run.breaker, **self._values("breaker")))
        timeouts = part("timeouts", lambda: dataclasses.replace(base.run.timeouts, **self._values("timeouts")))
        run_values = self._values("run")
        run = part("run", lambda: dataclasses.replace(base.run, **run_values, **{
            k: v for k, v in (("retry", retry), ("breaker", breaker), ("timeouts", timeouts)) if v is not None}))
        output_dir = os.path.expanduser(self._values("settings")["output_dir"])
        if not output_dir:
            problems.append("settings.output_dir: choose a folder for the results")
        elif os.path.exists(output_dir) and not os.path.isdir(output_dir):
            problems.append(f"settings.output_dir: {output_dir} is a file, not a folder")
        if problems or pipeline is None or run is None:
            return None, problems
        return base.replace(output_dir=output_dir, pipeline=pipeline, run=run), []

    def validate(self, *_: Any) -> bool:
        settings, self.problems = self.build()
        self.error_label.setText("\n".join(self.problems))
        self.error_label.setVisible(bool(self.problems))
        for key, widget in self._fields.items():
            section, name = key.split(".")
            bad = any(p.startswith(section) and re.search(rf"\b{name}\b", p) for p in self.problems)
            widget.setStyleSheet("border: 1px solid #cb4335;" if bad else "")
            widget.setToolTip("\n".join(p for p in self.problems if re.search(rf"\b{name}\b", p)) if bad else "")
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(settings is not None)
        return settings is not None

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.output_edit.text())
        if folder:
            self.output_edit.setText(folder)

    def accept(self) -> None:
        settings, problems = self.build()
        if settings is None:
            self.validate()
            return
        if self._store is not None:
            try:
                self._store.save(settings)
            except OSError as exc:
                self.error_label.setText(f"settings: could not be saved: {exc}")
                self.error_label.setVisible(True)
                return
        self._base = settings
        self.settings_saved.emit(settings)
        super().accept()

    def settings(self) -> Settings:
        """The settings last saved (or those the dialog opened with)."""
        return self._base


__all__ = ["SettingsDialog"]
