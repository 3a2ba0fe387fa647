"""Small helpers the docks share: a dock base with an empty state, status colours, formatting."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QDockWidget, QLabel, QStackedWidget, QVBoxLayout, QWidget

log = logging.getLogger(__name__)

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

    Heavy contents (pyqtgraph plots) may be built later, in small steps: a subclass
    hands :meth:`_defer_build` a generator that builds one piece per ``yield``.
    With ``defer=False`` (the default) it runs to the end at once. With ``defer=True``
    nothing is built until the owner calls :meth:`allow_build` (the window does after
    its first paint); from then on the pieces are built one per turn of the event
    loop while the dock is visible and shows content (not its empty state), and
    :meth:`ensure_built` finishes them at once when data needs them.
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
        self._pending_build: Iterator[None] | None = None
        self._build_allowed = False
        self._build_timer: QTimer | None = None

    # --- contents built later ------------------------------------------------

    def _defer_build(self, steps: Iterator[None], defer: bool) -> None:
        """Build the heavy contents with ``steps`` (a generator): now, or later when ``defer``."""
        self._pending_build = steps
        if not defer:
            self.ensure_built()
            return
        self._build_timer = QTimer(self, interval=0)
        self._build_timer.timeout.connect(self._build_next)
        self.visibilityChanged.connect(self._maybe_build)

    def allow_build(self) -> None:
        """From now on, build the deferred contents whenever the dock is visible and not empty."""
        self._build_allowed = True
        self._maybe_build()

    def _maybe_build(self, *_: object) -> None:
        timer = self._build_timer
        if (timer is not None and self._build_allowed and self._pending_build is not None
                and not timer.isActive() and self.on_screen and not self.is_empty):
            timer.start()

    @property
    def on_screen(self) -> bool:
        """Some of the dock can be seen (a tab behind another is "visible" to Qt, but not on screen)."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def _build_next(self) -> None:
        if not self.build_step() and self._build_timer is not None:
            self._build_timer.stop()

    @property
    def build_allowed(self) -> bool:
        """True once :meth:`allow_build` was called (or the contents were built at once)."""
        return self._build_allowed or self._build_timer is None

    @property
    def built(self) -> bool:
        """True once the deferred contents (if any) are built."""
        return self._pending_build is None

    def build_step(self) -> bool:
        """Build one more piece of the deferred contents; True while pieces remain."""
        steps = self._pending_build
        if steps is None:
            return False
        try:
            next(steps)
        except StopIteration:
            self._pending_build = None
            return False
        except Exception:  # a panel without its plots is better than a window that fails
            self._pending_build = None
            log.exception("the %s panel could not build its contents", type(self).__name__)
            return False
        return True

    def ensure_built(self) -> None:
        """Finish the deferred contents now (before data that needs them is shown)."""
        while self.build_step():
            pass

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
        if not empty and self._pending_build is not None:
            self._maybe_build()


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
    s = round(max(0.0, float(s)), 3)  # (now + 30) - now is not always exactly 30: don't show "31 s"
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
