"""Where the window's parts go: its default size, the docks' arrangement, and the layout saved with
``QSettings`` (geometry, dock state, the queue/details split, the queue's columns) in ``window.ini``."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import QHeaderView, QMainWindow, QSplitter

SPLIT_RIGHT_COLUMN_MIN_HEIGHT = 900  # screens at least this tall show the Inspector below the Health tabs


def window_settings() -> QSettings:
    """Where the window keeps its layout: ``window.ini`` in Stave's config folder (``STAVE_CONFIG_DIR``)."""
    from core.settings import user_dirs

    return QSettings(str(user_dirs().config_dir / "window.ini"), QSettings.Format.IniFormat)


def default_size(window: QMainWindow) -> None:
    """Most of the screen, within 960x640 and 1440x900."""
    screen = window.screen().availableGeometry() if window.screen() is not None else None
    if screen is None:
        window.resize(1280, 800)
    else:
        window.resize(min(1440, max(960, int(screen.width() * 0.85))), min(900, max(640, int(screen.height() * 0.85))))


class WindowLayout:
    """Restores ``window``'s saved layout (what it can at once, the docks once shown) and saves it."""

    def __init__(self, window: QMainWindow, settings: QSettings, splitter: QSplitter, columns: QHeaderView,
                 docks: dict, areas: dict[str, Qt.DockWidgetArea]):
        self._window = window
        self.settings = settings
        self._splitter = splitter
        self._columns = columns
        self._docks = docks
        self._areas = areas
        self.pending = True  # docks: arranged and restored once shown

    def restore(self) -> None:
        """What can be restored before the window is shown: its geometry, the split, the columns."""
        s = self.settings
        self.pending = True
        for key, restore in (("geometry", self._window.restoreGeometry), ("splitter", self._splitter.restoreState),
                             ("columns", self._columns.restoreState)):
            value = s.value(f"window/{key}")
            if isinstance(value, QByteArray) and not value.isEmpty():
                restore(value)

    def window_shown(self) -> None:
        """The first time: arrange the docks, then restore their saved state (or give them default sizes)."""
        if not self.pending:
            return
        self.pending = False
        window = self._window
        self.arrange_docks()
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            window.restoreState(state)
        else:
            self._default_dock_sizes()
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            window.restoreGeometry(geometry)

    def arrange_docks(self) -> None:
        """Health | Breakers | Checkpoints tabs above the Inspector on the right; Log | Resources at the bottom.

        Done once the window is shown: docks tabified before that leave a stray tab bar behind (Qt 6.11),
        and docks added untabbed make the window grow to fit them all.
        """
        d, window = self._docks, self._window
        if not d:
            return
        for name, dock in d.items():
            window.addDockWidget(self._areas[name], dock)
            dock.show()
        tabs = [("HealthDock", "BreakersDock"), ("HealthDock", "CheckpointsDock"), ("LogDock", "ResourcesDock")]
        screen = window.screen().availableGeometry() if window.screen() is not None else None
        if screen is None or screen.height() >= SPLIT_RIGHT_COLUMN_MIN_HEIGHT:
            window.splitDockWidget(d["HealthDock"], d["InspectorDock"], Qt.Orientation.Vertical)
        else:  # a small screen: one column of tabs, so the window still fits
            tabs.insert(0, ("HealthDock", "InspectorDock"))
        for first, other in tabs:
            window.tabifyDockWidget(d[first], d[other])
        for name in ("HealthDock", "LogDock"):
            d[name].raise_()

    def _default_dock_sizes(self) -> None:
        """First start (no saved layout): the queue gets the room, the panels a strip each."""
        if "HealthDock" in self._docks:
            self._window.resizeDocks([self._docks["HealthDock"]], [400], Qt.Orientation.Horizontal)
        if "LogDock" in self._docks:
            self._window.resizeDocks([self._docks["LogDock"]], [150], Qt.Orientation.Vertical)

    def save(self) -> None:
        if self.pending:  # never shown: nothing was arranged, keep what was saved
            return
        s = self.settings
        s.setValue("window/geometry", self._window.saveGeometry())
        s.setValue("window/state", self._window.saveState())
        s.setValue("window/splitter", self._splitter.saveState())
        s.setValue("window/columns", self._columns.saveState())
        s.sync()


__all__ = ["SPLIT_RIGHT_COLUMN_MIN_HEIGHT", "WindowLayout", "default_size", "window_settings"]
