"""The dependency health panel: renders a Qt-free ``HealthReport``, asks for a re-check.

The report itself is data (core/resilience/health.py); this dock only draws
it, like Spyder's dependencies widget: one row per check with a coloured
status, version and details; for a check that is not ok, what it unlocks and
the exact command that fixes it, in a read-only field that can be selected
and copied. Required failures come first.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QBrush, QFont, QGuiApplication
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QToolButton,
    QTreeWidget,
    QTreeWidgetItem,
    QWidget,
)

from app.docks._common import AMBER, GREEN, RED, StaveDock, fmt_wall, status_colour
from core.resilience.health import HealthReport, HealthResult, HealthStatus

COLUMNS = ("Check", "Status", "Version", "Needed", "Details")


def ordered_results(report: HealthReport) -> list[HealthResult]:
    """Required failures first, then anything else not ok, then the fine ones (stable within groups)."""

    def rank(r: HealthResult) -> int:
        if r.is_blocker:
            return 0
        return 1 if r.status is not HealthStatus.OK else 2

    return sorted(report.results, key=rank)


def summary_text(report: HealthReport) -> tuple[str, str]:
    """(headline, colour) for the top of the panel."""
    blockers = report.blockers
    attention = [r for r in report.results if not r.is_blocker and r.status is not HealthStatus.OK]
    if blockers:
        return f"Not ready: {len(blockers)} required item(s) missing or broken", RED
    if attention:
        return f"Ready, {len(attention)} optional or degraded item(s)", AMBER
    return "Ready: all checks ok", GREEN


class _CommandField(QWidget):
    """``fix: <command>`` as a read-only, selectable line with a Copy button."""

    def __init__(self, command: str, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addWidget(QLabel("Fix:"))
        self.edit = QLineEdit(command)
        self.edit.setReadOnly(True)
        self.edit.setCursorPosition(0)
        self.edit.setFont(QFont("monospace"))
        self.edit.setToolTip(command)
        layout.addWidget(self.edit, 1)
        copy = QToolButton()
        copy.setText("Copy")
        copy.setToolTip("Copy the command to the clipboard")
        copy.clicked.connect(self.copy)
        layout.addWidget(copy)

    @Slot()
    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.edit.text())


class HealthDock(StaveDock):
    """Shows the newest health report; the Re-check button asks the controller for a new one."""

    default_area = Qt.DockWidgetArea.RightDockWidgetArea
    title = "Health"
    empty_message = "No health report yet: press Re-check to test Stave's dependencies"

    recheck_requested = Signal()
    """The user pressed Re-check (no payload): run the health checks again, off the GUI thread."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._report: HealthReport | None = None

        header = QWidget()
        top = QHBoxLayout(header)
        top.setContentsMargins(0, 0, 0, 0)
        self.summary_label = QLabel("Not checked yet")
        self.summary_label.setTextFormat(Qt.TextFormat.PlainText)
        font = self.summary_label.font()
        font.setBold(True)
        self.summary_label.setFont(font)
        self.checked_label = QLabel("")
        self.checked_label.setStyleSheet("color: #757575;")
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate
        self.busy.setMaximumWidth(80)
        self.busy.setMaximumHeight(14)
        self.busy.setTextVisible(False)
        self.busy.hide()
        self.recheck_button = QPushButton("Re-check")
        self.recheck_button.setToolTip("Run every health check again")
        self.recheck_button.clicked.connect(self.recheck_requested)
        top.addWidget(self.summary_label)
        top.addWidget(self.checked_label, 1)
        top.addWidget(self.busy)
        top.addWidget(self.recheck_button)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setRootIsDecorated(True)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(False)
        hdr = self.tree.header()
        for col in range(len(COLUMNS) - 1):
            hdr.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setStretchLastSection(True)
        self._install(self.tree, header)

    # --- slots -------------------------------------------------------------

    @Slot(object)
    def set_report(self, report: HealthReport) -> None:
        """Render ``report`` (replaces the previous one)."""
        self._report = report
        headline, colour = summary_text(report)
        self.summary_label.setText(headline)
        self.summary_label.setStyleSheet(f"color: {colour};")
        self.checked_label.setText(
            f"checked {fmt_wall(report.created_at, with_date=True)} in {report.duration_s:.1f} s"
        )
        self.tree.clear()
        for result in ordered_results(report):
            self._add_row(result)
        self._set_empty(not report.results, None if report.results else "The health report has no checks")

    @Slot(bool)
    def set_checking(self, checking: bool) -> None:
        """Show a busy indicator and disable Re-check while the checks run."""
        self.busy.setVisible(checking)
        self.recheck_button.setEnabled(not checking)
        self.recheck_button.setText("Checking…" if checking else "Re-check")

    # --- inspection (tests, the controller) ------------------------------

    @property
    def report(self) -> HealthReport | None:
        return self._report

    def row_names(self) -> list[str]:
        """Check names in display order."""
        return [self.tree.topLevelItem(i).text(0) for i in range(self.tree.topLevelItemCount())]

    def row(self, name: str) -> QTreeWidgetItem:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.text(0) == name:
                return item
        raise KeyError(name)

    def install_command(self, name: str) -> str | None:
        """The command shown for check ``name`` (None when it shows none)."""
        item = self.row(name)
        for i in range(item.childCount()):
            widget = self.tree.itemWidget(item.child(i), 0)
            if isinstance(widget, _CommandField):
                return widget.edit.text()
        return None

    # --- rendering ---------------------------------------------------------

    def _add_row(self, r: HealthResult) -> None:
        item = QTreeWidgetItem(self.tree, [
            r.name,
            r.status.value,
            r.version or "-",
            "required" if r.required else "optional",
            r.details,
        ])
        colour = status_colour(r.status.value)
        item.setForeground(1, QBrush(colour))
        bold = item.font(1)
        bold.setBold(True)
        item.setFont(1, bold)
        if r.is_blocker:
            item.setFont(0, bold)
            item.setForeground(0, QBrush(colour))
        item.setToolTip(4, r.details)
        item.setToolTip(0, f"checked {fmt_wall(r.checked_at)} in {r.latency_s * 1000:.0f} ms")
        if r.status is HealthStatus.OK:
            return
        if r.unlocks:
            unlocks = QTreeWidgetItem(item, [f"Unlocks: {r.unlocks}"])
            unlocks.setFirstColumnSpanned(True)
            unlocks.setFlags(unlocks.flags() & ~Qt.ItemFlag.ItemIsSelectable)
        if r.install_hint:
            fix = QTreeWidgetItem(item, [""])
            fix.setFirstColumnSpanned(True)
            fix.setFlags(fix.flags() & ~Qt.ItemFlag.ItemIsSelectable)
            self.tree.setItemWidget(fix, 0, _CommandField(r.install_hint))
        item.setExpanded(True)
