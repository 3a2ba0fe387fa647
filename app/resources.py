"""Icons, colours and the stylesheet of the window, found next to the code or in a frozen build.

Files live in the top-level ``resources/`` folder (``resources/icons``,
``resources/style.qss``); PyInstaller copies that folder into the bundle
(see ``packaging/stave.spec``). Nothing here is cached at module level:
callers that draw many icons keep their own (see :class:`StateIcons`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import MappingProxyType

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QStyle, QWidget

log = logging.getLogger(__name__)

APP_ICON = "io.stave.Stave.svg"
STYLESHEET = "style.qss"

#: Colour of each queue row state (see ``app.queue_model.RowState``), readable on light and dark themes.
STATE_COLOURS = MappingProxyType({
    "queued": "#7f8c8d",
    "running": "#2e86c1",
    "done": "#229954",
    "degraded": "#d68910",
    "failed": "#cb4335",
    "quarantined": "#8e44ad",
    "skipped": "#95a5a6",
    "cancelled": "#a6acaf",
})

#: Toolbar actions and the standard icon each falls back to when the theme has none.
_ACTION_ICONS = MappingProxyType({
    "add-files": ("document-open", QStyle.StandardPixmap.SP_FileIcon),
    "add-folder": ("folder-open", QStyle.StandardPixmap.SP_DirOpenIcon),
    "start": ("media-playback-start", QStyle.StandardPixmap.SP_MediaPlay),
    "pause": ("media-playback-pause", QStyle.StandardPixmap.SP_MediaPause),
    "cancel": ("process-stop", QStyle.StandardPixmap.SP_MediaStop),
    "retry": ("view-refresh", QStyle.StandardPixmap.SP_BrowserReload),
    "rerun": ("edit-redo", QStyle.StandardPixmap.SP_ArrowForward),
    "open-output": ("folder", QStyle.StandardPixmap.SP_DirLinkIcon),
    "settings": ("preferences-system", QStyle.StandardPixmap.SP_FileDialogDetailedView),
})


def resources_dir() -> Path:
    """The ``resources`` folder: inside the PyInstaller bundle when frozen, else next to ``app/``."""
    bundle = getattr(sys, "_MEIPASS", None)
    if getattr(sys, "frozen", False) and bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def app_icon() -> QIcon:
    """Stave's icon (an empty icon when the file is missing: never an error)."""
    path = resources_dir() / "icons" / APP_ICON
    return QIcon(str(path)) if path.is_file() else QIcon()


def load_stylesheet(name: str = STYLESHEET) -> str:
    """The text of a ``.qss`` file in ``resources/``, or "" when it cannot be read."""
    path = resources_dir() / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("the stylesheet %s could not be read: %s", path, exc)
        return ""


def action_icon(name: str, widget: QWidget) -> QIcon:
    """The theme icon of a toolbar action, else the style's standard one."""
    theme_name, fallback = _ACTION_ICONS[name]
    icon = QIcon.fromTheme(theme_name)
    return icon if not icon.isNull() else widget.style().standardIcon(fallback)


def state_colour(state: str) -> QColor:
    return QColor(STATE_COLOURS.get(state, "#7f8c8d"))


def dot_icon(colour: QColor, size: int = 12) -> QIcon:
    """A filled circle of ``colour`` (the queue's per-state marker)."""
    pixmap = QPixmap(QSize(size, size))
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(colour)
    painter.drawEllipse(1, 1, size - 2, size - 2)
    painter.end()
    return QIcon(pixmap)


class StateIcons:
    """One dot icon per row state, drawn on first use and kept by its owner."""

    def __init__(self, size: int = 12):
        self._size = size
        self._icons: dict[str, QIcon] = {}

    def __call__(self, state: str) -> QIcon:
        icon = self._icons.get(state)
        if icon is None:
            icon = self._icons[state] = dot_icon(state_colour(state), self._size)
        return icon
