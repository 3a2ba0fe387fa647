"""The window's actions, toolbar and menus, and the dialogs they open (add files, add a folder, output folder,
settings). Each action calls a controller slot; :meth:`WindowActions.show_state` enables what the controller's
state allows."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QLabel, QMainWindow, QMenu, QSizePolicy, QStyle, QToolButton, QWidget,
)

from app.control_state import ControlState
from app.queue_model import QueueFilterProxy
from app.resources import action_icon
from app.settings_dialog import SettingsDialog

if TYPE_CHECKING:
    from app.controller import Controller

AUDIO_FILTER = "Audio (*.wav *.flac *.mp3 *.ogg *.opus *.m4a *.aac *.aif *.aiff *.wma);;All files (*)"
FILTERS = (("All jobs", None), ("Waiting", ("queued",)), ("Running", ("running",)), ("Done", ("done", "degraded")),
           ("Problems", ("failed", "quarantined", "degraded", "cancelled", "skipped")))


class WindowActions(QObject):
    """Builds the toolbar and the File, Batch and View menus of ``window``; ``by_name`` holds the actions."""

    def __init__(self, window: QMainWindow, controller: Controller, proxy: QueueFilterProxy):
        super().__init__(window)
        self._window = window
        self._controller = controller
        self._proxy = proxy
        self.settings_dialog: SettingsDialog | None = None
        c = controller
        self.by_name: dict[str, QAction] = {
            "add-files": self._action("add-files", "Add files…", self.add_files, "Ctrl+O"),
            "add-folder": self._action("add-folder", "Add folder…", self.add_folder, "Ctrl+Shift+O"),
            "start": self._action("start", "Start", c.start, "Ctrl+R", "Run the queued files"),
            "pause": self._action("pause", "Pause", c.pause, None, "Pause; resume later with Start"),
            "cancel": self._action("cancel", "Cancel", c.cancel, None, "Stop and cancel the jobs not finished"),
            "retry": self._action("retry", "Retry failed", c.retry_failed, None, "Run the failed jobs again"),
            "rerun": self._action("rerun", "Re-run degraded", c.rerun_degraded, None,
                                  "Run jobs that used a fallback again (once the dependency works)"),
            "open-output": self._action("open-output", "Open output folder", c.open_output_folder),
            "settings": self._action("settings", "Settings…", self.open_settings, "Ctrl+,"),
        }
        self._build_toolbar()
        self._build_menus()
        self.show_folder(c.out_dir)

    def _action(self, key: str, text: str, slot: Callable, shortcut: str | None = None, tip: str = "") -> QAction:
        action = QAction(action_icon(key, self._window), text, self._window)
        action.setObjectName(f"action-{key}")
        action.setToolTip(tip or text)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    def _build_toolbar(self) -> None:
        window, a = self._window, self.by_name
        toolbar = window.addToolBar("Main")
        toolbar.setObjectName("mainToolBar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for name in ("open-output", "settings"):  # icon only beside the text of the others
            a[name].setPriority(QAction.Priority.LowPriority)
        for names in (("add-files", "add-folder"), ("start", "pause", "cancel"), ("retry", "rerun")):
            for name in names:
                toolbar.addAction(a[name])
            toolbar.addSeparator()
        spacer = QWidget()
        spacer.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        toolbar.addWidget(spacer)
        toolbar.addWidget(QLabel(" Show "))
        self.filter_combo = QComboBox()
        self.filter_combo.setObjectName("statusFilter")
        for label, _ in FILTERS:
            self.filter_combo.addItem(label)
        self.filter_combo.currentIndexChanged.connect(lambda i: self._proxy.set_states(FILTERS[i][1]))
        toolbar.addWidget(self.filter_combo)
        self.folder_button = QToolButton()
        self.folder_button.setObjectName("outputFolder")
        self.folder_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.folder_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.folder_button.setIcon(window.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon))
        self.folder_button.clicked.connect(self.choose_folder)
        self.folder_menu = QMenu(self.folder_button)
        self.folder_menu.aboutToShow.connect(self._fill_folder_menu)
        self.folder_button.setMenu(self.folder_menu)
        toolbar.addWidget(QLabel("  Output "))
        toolbar.addWidget(self.folder_button)
        toolbar.addAction(a["open-output"])
        toolbar.addSeparator()
        toolbar.addAction(a["settings"])

    def _build_menus(self) -> None:
        window, a = self._window, self.by_name
        file_menu = window.menuBar().addMenu("&File")
        for name in ("add-files", "add-folder", "open-output", "settings"):
            file_menu.addAction(a[name])
        file_menu.addSeparator()
        file_menu.addAction("Quit", QKeySequence.StandardKey.Quit, window.close)
        batch_menu = window.menuBar().addMenu("&Batch")
        for name in ("start", "pause", "cancel", "retry", "rerun"):
            batch_menu.addAction(a[name])
        self.view_menu = window.menuBar().addMenu("&View")  # the docks add their toggles

    # -- what the actions do ----------------------------------------------------------------
    def add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self._window, "Add audio files", "", AUDIO_FILTER)
        self._controller.add_paths(files)

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self._window, "Add a folder of audio files")
        if folder:
            self._controller.add_paths([folder])

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self._window, "Output folder", self._controller.out_dir)
        if folder:
            self._controller.set_output_dir(folder)

    def _fill_folder_menu(self) -> None:
        c = self._controller
        self.folder_menu.clear()
        self.folder_menu.addAction("Choose…", self.choose_folder)
        self.folder_menu.addAction("Open in the file manager", c.open_output_folder)
        recent = [d for d in c.settings.recent_output_dirs if d != c.out_dir]
        if recent:
            self.folder_menu.addSeparator()
        for folder in recent:
            self.folder_menu.addAction(folder, lambda f=folder: c.set_output_dir(f))

    def open_settings(self) -> None:
        dialog = SettingsDialog(self._controller.settings, self._controller.settings_store, self._window)
        dialog.settings_saved.connect(self._controller.apply_settings)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()  # window-modal, not blocking: a running batch carries on
        self.settings_dialog = dialog

    # -- what they show ---------------------------------------------------------------------
    def show_state(self, state: ControlState) -> None:
        a = self.by_name
        a["start"].setEnabled(state.can_start)
        a["pause"].setEnabled(state.can_pause)
        a["cancel"].setEnabled(state.can_cancel)
        a["retry"].setEnabled(state.retryable > 0)
        a["rerun"].setEnabled(state.degraded > 0 and not state.running)
        self.folder_button.setEnabled(state.can_change_folder)

    def show_folder(self, folder: str) -> None:
        self.folder_button.setText(os.path.basename(folder.rstrip(os.sep)) or folder)
        self.folder_button.setToolTip(f"Output folder: {folder}\nClick to choose another")


__all__ = ["AUDIO_FILTER", "FILTERS", "WindowActions"]
