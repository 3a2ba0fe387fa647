"""Small helpers the docks share: a dock base with an empty state, status colours, formatting."""

from __future__ import annotations

import math
import time

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QDockWidget, QLabel, QStackedWidget, QVBoxLayout, QWidget

# One palette for every panel: what "fine / attention / broken / off" look like.
GREEN = "#2e7d32"
AMBER = "#ef8f00"
RED = "#c62828"
GREY = "#757575"
BLUE = "#1565c0"

STATUS_COLOURS: dict[str, str] = {
    # health
    "ok": GREEN,
    "degraded": AMBER,
    "missing": RED,
    "error": RED,
    # breakers
    "closed": GREEN,
    "half-open": AMBER,
    "open": RED,
    "disabled": GREY,
    # jobs and stages
    "done": GREEN,
    "failed": RED,
    "quarantined": RED,
    "running": BLUE,
    "pending": GREY,
    "skipped": GREY,
    "cancelled": GREY,
    "paused": AMBER,
    "interrupted": AMBER,
    "finished": GREEN,
}


def status_colour(status: str) -> QColor:
    """The colour for a status name (grey for one it does not know)."""
    return QColor(STATUS_COLOURS.get(str(status), GREY))


def empty_label(text: str) -> QLabel:
    """A centred, wrapped, muted label saying why a panel has nothing to show."""
    label = QLabel(text)
    label.setObjectName("emptyStateLabel")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setWordWrap(True)
    label.setMargin(16)
    label.setStyleSheet(f"color: {GREY};")
    return label


class EmptyStack(QStackedWidget):
    """Page 0 is the empty-state message, page 1 the content."""

    def __init__(self, message: str, content: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.label = empty_label(message)
        self.addWidget(self.label)
        self.addWidget(content)
        self.setCurrentIndex(0)

    @property
    def is_empty(self) -> bool:
        return self.currentIndex() == 0

    def set_empty(self, empty: bool, message: str | None = None) -> None:
        if message is not None:
            self.label.setText(message)
        self.setCurrentIndex(0 if empty else 1)


class StaveDock(QDockWidget):
    """A dock with a fixed objectName (its class name), a default area and an empty state.

    Subclasses build their content widget and call :meth:`_install`; an optional
    ``header`` stays visible in both states (filters, a Re-check button...).
    """

    default_area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea
    title: str = ""
    empty_message: str = ""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(self.title or type(self).__name__, parent)
        self.setObjectName(type(self).__name__)
        self.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetClosable
            | QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
        )
        self._stack: EmptyStack | None = None

    def _install(self, content: QWidget, header: QWidget | None = None) -> None:
        self._stack = EmptyStack(self.empty_message, content)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        if header is not None:
            layout.addWidget(header)
        layout.addWidget(self._stack, 1)
        self.setWidget(body)

    @property
    def is_empty(self) -> bool:
        """True while the empty-state message is shown."""
        return self._stack is None or self._stack.is_empty

    @property
    def empty_text(self) -> str:
        return self._stack.label.text() if self._stack is not None else ""

    def _set_empty(self, empty: bool, message: str | None = None) -> None:
        assert self._stack is not None
        self._stack.set_empty(empty, message)


# --- formatting ----------------------------------------------------------

def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - loop always returns


def fmt_seconds(s: float | None) -> str:
    """``75 -> "1:15"``, ``4 -> "4 s"``; None or NaN -> "-"."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    s = max(0.0, float(s))
    if s < 60:
        return f"{math.ceil(s):d} s" if s != int(s) else f"{int(s)} s"
    total = int(math.ceil(s))
    h, rem = divmod(total, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_wall(t: float | None, with_date: bool = False) -> str:
    """Local time of an epoch timestamp, ``"-"`` when unknown."""
    if not t:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S", time.localtime(t))
