"""The queue table: column widths, progress bars in the Progress column, an empty-state message, a context menu."""

from __future__ import annotations

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPoint, Qt, Signal
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import (
    QApplication, QHeaderView, QMenu, QStyle, QStyledItemDelegate, QStyleOptionProgressBar, QStyleOptionViewItem,
    QTableView,
)

from app.queue_model import Column, JobIdRole, ProgressRole, RowState, StateRole

COLUMN_WIDTHS = {Column.FILE: 220, Column.DURATION: 70, Column.STATUS: 105, Column.STAGE: 90,
                 Column.PROGRESS: 110, Column.ATTEMPTS: 70, Column.ELAPSED: 70}


class ProgressDelegate(QStyledItemDelegate):
    """Draws a row's progress as a bar while it runs or once it is done."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        state = index.data(StateRole)
        if state not in (RowState.RUNNING.value, RowState.DONE.value, RowState.DEGRADED.value):
            return super().paint(painter, option, index)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 4, -3, -4)
        bar.minimum, bar.maximum = 0, 100
        bar.progress = round(100 * (index.data(ProgressRole) or 0.0))
        bar.text, bar.textVisible = f"{bar.progress}%", True
        bar.state = option.state | QStyle.StateFlag.State_Horizontal
        QApplication.style().drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class QueueView(QTableView):
    """The queue table over ``model`` (the queue's filter proxy), with an empty-state message painted over it."""

    EMPTY_TEXT = "Drop audio files or folders here"
    EMPTY_HINT = "or use Add files / Add folder in the toolbar"

    first_painted = Signal()
    """The view painted for the first time (no payload)."""
    cancel_requested = Signal(int)
    """The job id whose "Cancel this job" was chosen in the context menu."""

    _painted = False

    def __init__(self, model: QAbstractItemModel):
        super().__init__()
        self.setObjectName("queueView")
        self.setModel(model)
        self.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.setSortingEnabled(True)
        self.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # queue order until a header is clicked
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setItemDelegateForColumn(Column.PROGRESS, ProgressDelegate(self))
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        self.verticalHeader().hide()
        header = self.horizontalHeader()
        for column, width in COLUMN_WIDTHS.items():
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._context_menu)

    def _context_menu(self, pos: QPoint) -> None:
        index = self.indexAt(pos)
        if not index.isValid():
            return
        job_id = index.data(JobIdRole)
        menu = QMenu(self)
        cancel = menu.addAction("Cancel this job", lambda: self.cancel_requested.emit(job_id))
        cancel.setEnabled(index.data(StateRole) in (RowState.QUEUED.value, RowState.RUNNING.value))
        menu.popup(self.viewport().mapToGlobal(pos))

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            self.first_painted.emit()
        if self.model() is not None and self.model().rowCount() > 0:
            return
        painter = QPainter(self.viewport())
        rect = self.viewport().rect()
        painter.setPen(self.palette().placeholderText().color())
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.5)
        painter.setFont(font)
        painter.drawText(rect.adjusted(0, -30, 0, -30), Qt.AlignmentFlag.AlignCenter, self.EMPTY_TEXT)
        font.setPointSizeF(font.pointSizeF() / 1.5)
        painter.setFont(font)
        painter.drawText(rect.adjusted(0, 20, 0, 20), Qt.AlignmentFlag.AlignCenter, self.EMPTY_HINT)
        painter.end()


__all__ = ["COLUMN_WIDTHS", "ProgressDelegate", "QueueView"]
