"""Stave's main window: the queue and its details pane, with the toolbar, status bar and docks around them.

The window holds no logic: every action calls a controller slot, every
figure it shows comes from a controller signal or the queue model. It puts
together parts that each live in their own module:

* :mod:`app.queue_view` — the queue table; :mod:`app.job_details` — the pane
  under it and what follows the selected job;
* :mod:`app.message_bar` — the bar above the queue (resume offer, preflight
  block, unusable folder);
* :mod:`app.window_actions` — actions, toolbar, menus and their dialogs;
* :mod:`app.window_status` — the status bar and notifications;
* :mod:`app.window_docks` — the docks, wired to the controller, their plots
  built after the first paint;
* :mod:`app.window_layout` — the docks' arrangement and the layout saved
  with ``QSettings``.

What stays here: building the central area, wiring the controller's signals,
drag and drop, and the window's show and close.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMainWindow, QSplitter, QVBoxLayout, QWidget

from app.control_state import ControlState
from app.controller import Controller
from app.job_details import JobDetailsPresenter, details_html, details_pane
from app.message_bar import MessageBar
from app.queue_model import QueueFilterProxy
from app.queue_view import ProgressDelegate, QueueView
from app.resources import app_icon, load_stylesheet
from app.window_actions import WindowActions
from app.window_docks import PanelStarter, build_docks, close_docks, preload_plot_modules
from app.window_layout import WindowLayout, default_size, window_settings
from app.window_status import WindowStatus

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    files_dropped = Signal(list)
    """The local paths dropped on the window (already handed to the controller)."""

    def __init__(self, controller: Controller, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("Stave")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        default_size(self)
        self.controller = controller
        self._shown_error = ""
        self._build_central()
        self.window_actions = WindowActions(self, controller, self.proxy)
        self.actions_by_name = self.window_actions.by_name
        self.status = WindowStatus(self, lambda: self._raise_dock("HealthDock"))
        # the widgets tests and the stylesheet look for, by their old names
        self.counts_label, self.failed_label = self.status.counts_label, self.status.failed_label
        self.health_badge = self.status.health_badge
        self._apply_stylesheet()
        self.docks, dock_areas = build_docks(self, controller, self.window_actions.view_menu)
        self._panels = PanelStarter(self.docks, self)
        self.view.first_painted.connect(self._panels.start_soon)
        self._details = JobDetailsPresenter(controller, self.details, self.docks, self)
        self._wire()
        self.window_layout = WindowLayout(self, settings or window_settings(), self.splitter,
                                          self.view.horizontalHeader(), self.docks, dock_areas)
        self.window_layout.restore()
        controller.announce()
        for warning in controller.load_warnings[:1]:
            self.statusBar().showMessage(warning, 15000)

    # -- building ------------------------------------------------------------------------
    def _build_central(self) -> None:
        self.proxy = QueueFilterProxy(self.controller.queue, self)
        self.view = QueueView(self.proxy)
        self.view.cancel_requested.connect(self.controller.cancel_job)
        self.details = details_pane()
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("queueSplitter")
        self.splitter.addWidget(self.view)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([380, 190])
        self.banner = MessageBar()
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(4, 4, 4, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)

    def _apply_stylesheet(self) -> None:
        """The stylesheet names four widgets: it is set on them, not on the window. A stylesheet on the
        window would make every widget in it (the queue, the plots) paint through the slower
        style-sheet style, about twice the time per frame of the queue."""
        qss = load_stylesheet()
        for widget in (self.banner, self.health_badge, self.failed_label, self.details):
            widget.setStyleSheet(qss)

    def _wire(self) -> None:
        c, status = self.controller, self.status
        c.state_changed.connect(self._on_state)
        c.progress_changed.connect(status.show_progress)
        c.batch_started.connect(self._on_batch_started)
        c.batch_finished.connect(status.batch_finished)
        c.resume_offered.connect(self._offer_resume)
        c.preflight_blocked.connect(self._on_preflight_blocked)
        c.health_checked.connect(status.show_health)
        c.health_checking.connect(status.show_checking)
        c.error_occurred.connect(self._show_error)
        c.message_posted.connect(lambda text: self.statusBar().showMessage(text, 8000))
        c.output_dir_changed.connect(self.window_actions.show_folder)
        c.jobs_updated.connect(self._details.on_jobs_updated)
        self.view.selectionModel().currentRowChanged.connect(self._details.on_current_changed)

    # -- showing and closing ----------------------------------------------------------------
    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._panels.window_shown()
        self.window_layout.window_shown()

    def save_layout(self) -> None:
        self.window_layout.save()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        self._panels.close()
        close_docks(self.docks)
        self.controller.shutdown()
        self.status.close()
        event.accept()

    # -- drag and drop ------------------------------------------------------------------------
    @staticmethod
    def local_paths(mime) -> list[str]:
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile() and u.toLocalFile()] if mime.hasUrls() else []

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.local_paths(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        paths = self.local_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.controller.add_paths(paths)  # scanned off the GUI thread
        self.files_dropped.emit(paths)

    # -- reactions ------------------------------------------------------------------------
    def _on_state(self, state: ControlState) -> None:
        self.window_actions.show_state(state)
        self.status.show_state(state, self.controller.queue.counts())
        if state.error and state.error != self._shown_error:
            self.banner.report_unusable_folder(state.error, self.window_actions.choose_folder)
        self._shown_error = state.error

    def _on_batch_started(self, batch_id: int) -> None:
        self.banner.hide()
        self.status.batch_started(batch_id)

    def notify(self, text: str) -> None:
        """A desktop notification when the platform has one, else the status bar keeps the message."""
        self.status.notify(text)

    def _offer_resume(self, batch_id: int, counts: dict) -> None:
        self.banner.offer_resume(batch_id, counts, lambda: self.controller.resume(batch_id),
                                 lambda: self.controller.discard(batch_id))

    def _on_preflight_blocked(self, text: str) -> None:
        self.banner.report_preflight_block(text, lambda: self.controller.start(check=False))
        self.details.setPlainText(text)

    def _show_error(self, text: str) -> None:
        log.warning("%s", text)
        self.statusBar().showMessage(text, 15000)

    def _raise_dock(self, name: str) -> None:
        dock = self.docks.get(name)
        if dock is not None:
            dock.show()
            dock.raise_()


# ProgressDelegate, QueueView, MessageBar, details_html and preload_plot_modules lived here: still importable from here
__all__ = ["MainWindow", "MessageBar", "ProgressDelegate", "QueueView", "details_html", "preload_plot_modules",
           "window_settings"]
