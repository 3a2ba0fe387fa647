"""The log panel: Python logging records from any thread, filtered by level, job and text.

``attach_logging`` installs a :class:`BufferedLogHandler` on a logger. The
handler only formats the record into a small immutable :class:`LogEntry` and
appends it to a locked, bounded buffer, whatever thread it runs on; a 100 ms
timer on the GUI thread drains that buffer in one go. So a burst of thousands
of records costs one repaint, and a handler never touches a widget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from PySide6.QtCore import Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QColor, QDesktopServices, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QWidget,
)

from app.docks._common import AMBER, GREY, RED, StaveDock
from core.logs import log_file_path

MAX_RECORDS = 5000
DRAIN_MS = 100
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_FORMATTER = logging.Formatter()


@dataclass(frozen=True)
class LogEntry:
    created: float
    levelno: int
    levelname: str
    logger: str
    message: str
    job_id: str | None
    thread: str

    @classmethod
    def from_record(cls, record: logging.LogRecord) -> "LogEntry":
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + _FORMATTER.formatException(record.exc_info)
        job = getattr(record, "job_id", None)
        return cls(record.created, record.levelno, record.levelname, record.name, message,
                   None if job is None else str(job), record.threadName or "")

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.created)) + f".{int(self.created * 1000) % 1000:03d}"
        job = f" [job {self.job_id}]" if self.job_id is not None else ""
        return f"{stamp} {self.levelname:<8} {self.logger}{job}  {self.message}"


class BufferedLogHandler(logging.Handler):
    """Appends records as LogEntry to a locked bounded buffer; safe from any thread."""

    def __init__(self, maxlen: int = MAX_RECORDS):
        super().__init__(logging.NOTSET)
        self._pending: deque[LogEntry] = deque(maxlen=maxlen)
        self._buffer_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = LogEntry.from_record(record)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)
            return
        with self._buffer_lock:
            self._pending.append(entry)

    def drain(self) -> list[LogEntry]:
        with self._buffer_lock:
            out = list(self._pending)
            self._pending.clear()
        return out


def _detach(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.removeHandler(handler)


class LogDock(StaveDock):
    """Live log with level, job and text filters and a button that opens the log file."""

    default_area = Qt.DockWidgetArea.BottomDockWidgetArea
    title = "Log"
    empty_message = "No log messages yet"

    def __init__(self, parent: QWidget | None = None, *, open_url: Callable[[QUrl], object] | None = None):
        super().__init__(parent)
        self._open_url = open_url or QDesktopServices.openUrl
        self._entries: deque[LogEntry] = deque(maxlen=MAX_RECORDS)
        self._handler: BufferedLogHandler | None = None
        self._logger: logging.Logger | None = None
        self._job: str | None = None
        self._shown = 0
        self._formats = self._make_formats()

        self.level_combo = QComboBox()
        self.level_combo.addItems(list(LEVELS))
        self.level_combo.setCurrentText("INFO")
        self.level_combo.setToolTip("Show records at this level and above")
        self.level_combo.currentTextChanged.connect(self._rerender)
        self.text_filter = QLineEdit()
        self.text_filter.setPlaceholderText("Filter text")
        self.text_filter.setClearButtonEnabled(True)
        self.text_filter.textChanged.connect(self._rerender)
        self.job_button = QToolButton()
        self.job_button.setToolTip("Showing one job's messages: click to show all")
        self.job_button.clicked.connect(lambda: self.set_job_filter(None))
        self.job_button.hide()
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        self.open_button = QPushButton("Open log file")
        self.open_button.setToolTip(str(log_file_path()))
        self.open_button.clicked.connect(self.open_log_file)
        header = QWidget()
        bar = QHBoxLayout(header)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.addWidget(QLabel("Level"))
        bar.addWidget(self.level_combo)
        bar.addWidget(self.text_filter, 1)
        bar.addWidget(self.job_button)
        bar.addWidget(clear)
        bar.addWidget(self.open_button)

        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setMaximumBlockCount(MAX_RECORDS)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.view.setFont(mono)
        self._install(self.view, header)

        self.timer = QTimer(self)
        self.timer.setInterval(DRAIN_MS)
        self.timer.timeout.connect(self.flush)

    # --- logging -----------------------------------------------------------

    def attach_logging(self, logger_name: str = "") -> BufferedLogHandler:
        """Forward records reaching ``logger_name`` (root by default) to this panel."""
        self.detach_logging()
        logger = logging.getLogger(logger_name)
        handler = BufferedLogHandler()
        logger.addHandler(handler)
        self._handler, self._logger = handler, logger
        # If the dock is deleted without detaching, the handler must not outlive it on the logger.
        self.destroyed.connect(lambda *_: _detach(logger, handler))
        self.timer.start()
        return handler

    def detach_logging(self) -> None:
        """Remove the handler (what it had buffered is still shown)."""
        if self._handler is not None and self._logger is not None:
            self._logger.removeHandler(self._handler)
            self.flush()
        self._handler = self._logger = None
        self.timer.stop()

    @Slot()
    def flush(self) -> None:
        """Move buffered records into the panel (the timer calls this every 100 ms)."""
        if self._handler is None:
            return
        new = self._handler.drain()
        if not new:
            return
        self._entries.extend(new)
        self._append([e for e in new if self.matches(e)])

    # --- filters -----------------------------------------------------------

    @Slot(object)
    def set_job_filter(self, job_id: int | str | None) -> None:
        """Show only records whose ``job_id`` is this one (None: all records)."""
        self._job = None if job_id is None else str(job_id)
        self.job_button.setText(f"job {self._job} ✕" if self._job is not None else "")
        self.job_button.setVisible(self._job is not None)
        self._rerender()

    def set_level(self, level: str) -> None:
        self.level_combo.setCurrentText(level.upper())

    def matches(self, e: LogEntry) -> bool:
        if e.levelno < logging.getLevelName(self.level_combo.currentText()):
            return False
        if self._job is not None and e.job_id != self._job:
            return False
        needle = self.text_filter.text().strip().lower()
        return not needle or needle in e.message.lower() or needle in e.logger.lower()

    def visible_lines(self) -> list[str]:
        return self.view.toPlainText().splitlines() if self._shown else []

    @property
    def entries(self) -> list[LogEntry]:
        return list(self._entries)

    # --- actions -----------------------------------------------------------

    @Slot()
    def clear(self) -> None:
        self._entries.clear()
        self._rerender()

    @Slot()
    def open_log_file(self) -> None:
        """Open the log file (or its folder, when there is no file yet) with the desktop's viewer."""
        path = log_file_path()
        target = path if path.exists() else path.parent
        self._open_url(QUrl.fromLocalFile(str(target)))

    # --- rendering ---------------------------------------------------------

    @staticmethod
    def _make_formats() -> dict[int, QTextCharFormat]:
        out = {}
        for level, colour, bold in ((logging.DEBUG, GREY, False), (logging.INFO, None, False),
                                    (logging.WARNING, AMBER, False), (logging.ERROR, RED, True)):
            f = QTextCharFormat()
            if colour:
                f.setForeground(QColor(colour))
            if bold:
                f.setFontWeight(QFont.Weight.Bold)
            out[level] = f
        return out

    def _format(self, levelno: int) -> QTextCharFormat:
        for level in (logging.ERROR, logging.WARNING, logging.INFO):
            if levelno >= level:
                return self._formats[level]
        return self._formats[logging.DEBUG]

    def _append(self, entries: list[LogEntry]) -> None:
        if not entries:
            self._update_empty()
            return
        bar = self.view.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 2
        cursor = QTextCursor(self.view.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.beginEditBlock()
        for e in entries:
            if self._shown:
                cursor.insertBlock()
            cursor.insertText(e.line(), self._format(e.levelno))
            self._shown += 1
        cursor.endEditBlock()
        if at_bottom:
            bar.setValue(bar.maximum())
        self._update_empty()

    @Slot()
    def _rerender(self, *_: object) -> None:
        self.view.clear()
        self._shown = 0
        self._append([e for e in self._entries if self.matches(e)])

    def _update_empty(self) -> None:
        if self._shown:
            self._set_empty(False)
        elif self._entries:
            self._set_empty(True, "No messages match the filters")
        else:
            self._set_empty(True, self.empty_message)
