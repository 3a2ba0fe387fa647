"""Stave's main window: the queue, the toolbar, the status bar and the docks, wired to the controller.

The window holds no logic: every action calls a controller slot, every
figure it shows comes from a controller signal or the queue model. Layout
(geometry, docks, the queue/details split) is saved with ``QSettings``.

Start-up is kept short: the queue, the toolbar and every dock (with its
objectName, so ``restoreState`` works) exist before the first paint, but the
plots inside the docks are built after it: numpy and pyqtgraph are imported
on a pool thread, then each plot dock builds its plots, one per turn of the
event loop, once it is visible and has something to show (see ``StaveDock``).
"""

from __future__ import annotations

import gc
import html
import logging
import os
import sys

from PySide6.QtCore import QByteArray, QModelIndex, QSettings, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence, QPainter
from PySide6.QtWidgets import (
    QApplication, QComboBox, QFileDialog, QFrame, QHBoxLayout, QHeaderView, QLabel, QMainWindow, QMenu,
    QProgressBar, QPushButton, QSizePolicy, QSplitter, QStyle, QStyledItemDelegate, QStyleOptionProgressBar,
    QStyleOptionViewItem, QSystemTrayIcon, QTableView, QTextBrowser, QToolButton, QVBoxLayout, QWidget,
)

from app.controller import Controller, ControlState, JobInfo
from app.queue_model import Column, JobIdRole, ProgressRole, QueueFilterProxy, RowState, StateRole
from app.resources import action_icon, app_icon, load_stylesheet, state_colour
from app.runner import TaskRunnable
from app.settings_dialog import SettingsDialog

log = logging.getLogger(__name__)

AUDIO_FILTER = "Audio (*.wav *.flac *.mp3 *.ogg *.opus *.m4a *.aac *.aif *.aiff *.wma);;All files (*)"
FILTERS = (("All jobs", None), ("Waiting", ("queued",)), ("Running", ("running",)), ("Done", ("done", "degraded")),
           ("Problems", ("failed", "quarantined", "degraded", "cancelled", "skipped")))
SPLIT_RIGHT_COLUMN_MIN_HEIGHT = 900  # screens at least this tall show the Inspector below the Health tabs
PANELS_FALLBACK_MS = 1000  # build the plots this long after show even if the queue never painted
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
    """The queue table, with an empty-state message painted over it."""

    EMPTY_TEXT = "Drop audio files or folders here"
    EMPTY_HINT = "or use Add files / Add folder in the toolbar"

    first_painted = Signal()
    """The view painted for the first time (no payload)."""

    _painted = False

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


class MessageBar(QFrame):
    """A non-blocking bar above the queue: a message and a few buttons (never a modal pop-up)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("messageBar")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self._layout = QHBoxLayout(self)
        self._layout.setContentsMargins(10, 6, 6, 6)
        self._layout.addWidget(self.label, 1)
        self.buttons: list[QPushButton] = []
        self.hide()

    def show_message(self, text: str, buttons: list[tuple[str, object]], kind: str = "info") -> None:
        for b in self.buttons:
            b.deleteLater()
        self.buttons = []
        self.setProperty("kind", kind)
        self.style().unpolish(self)
        self.style().polish(self)
        self.label.setText(text)
        for label, slot in buttons:
            button = QPushButton(label)
            button.clicked.connect(slot)
            button.clicked.connect(self.hide)
            self._layout.addWidget(button)
            self.buttons.append(button)
        self.show()


def details_html(info: JobInfo | None, fallback: str = "") -> str:
    """The details pane's text for one job: its error (kind, reason, suggestion) and its stages."""
    if info is None:
        return f"<p style='color:gray'>{html.escape(fallback or 'Select a job to see its details.')}</p>"
    job, e = info.job, html.escape
    parts = [f"<h3>{e(os.path.basename(job.input_path))}</h3><p style='color:gray'>{e(job.input_path)}</p>",
             f"<p><b>Status:</b> {e(RowState.of_job(job).value)} &nbsp; <b>Attempts:</b> {job.attempts}"]
    if job.audio_duration_s:
        parts.append(f" &nbsp; <b>Duration:</b> {job.audio_duration_s:.1f} s")
    parts.append("</p>")
    if job.error_kind is not None or job.error_reason:
        kind = job.error_kind.value if job.error_kind is not None else ""
        colour = state_colour(RowState.of_job(job).value).name()
        parts.append(f"<p style='color:{colour}'><b>{e(kind or 'Reason')}</b>"
                     f"{' in ' + e(job.error_stage) if job.error_stage else ''}: {e(job.error_reason)}</p>")
        if job.error_suggestion:
            parts.append(f"<p><b>Suggestion:</b> {e(job.error_suggestion)}</p>")
    if job.degraded:
        parts.append("<p><b>Degraded:</b> " + e("; ".join(job.degraded_reasons)) + "</p>")
    rows = {r.stage: r for r in info.stages}
    if info.stage_order or rows:
        parts.append("<table cellspacing='0' cellpadding='3'><tr><th align='left'>Stage</th>"
                     "<th align='left'>Status</th><th align='right'>Tries</th><th align='right'>Time</th>"
                     "<th align='left'>Note</th></tr>")
        for name in list(info.stage_order) + [n for n in rows if n not in info.stage_order]:
            r = rows.get(name)
            status = r.status.value if r else "not run"
            note = (r.error_reason or r.degraded_reason) if r else ""
            took = f"{r.elapsed_s:.2f} s" if r and r.elapsed_s is not None else ""
            parts.append(f"<tr><td>{e(name)}</td><td style='color:{state_colour(status).name()}'>{e(status)}</td>"
                         f"<td align='right'>{r.attempts if r else ''}</td><td align='right'>{took}</td>"
                         f"<td>{e(note)}</td></tr>")
        parts.append("</table>")
    return "".join(parts)


def preload_plot_modules() -> None:
    """Import what the plots need (on a pool thread, so the GUI thread does not wait for it).

    The first time, what start-up created (modules, classes, functions: some 80,000 objects that
    live as long as the process) is moved out of the garbage collector's reach with
    :func:`gc.freeze`, before and after the import. Otherwise every full collection walks them
    all, holding the GIL for 30-80 ms in whichever thread triggers it while the GUI thread waits.
    Objects are still freed when their reference count drops; only cycles among them would never
    be collected, and start-up makes few of those.
    """
    first = "pyqtgraph" not in sys.modules
    if first:
        gc.freeze()
    import numpy  # noqa: F401
    import pyqtgraph  # noqa: F401

    if first:
        gc.freeze()


def window_settings() -> QSettings:
    """Where the window keeps its layout: ``window.ini`` in Stave's config folder (``STAVE_CONFIG_DIR``)."""
    from core.settings import user_dirs

    return QSettings(str(user_dirs().config_dir / "window.ini"), QSettings.Format.IniFormat)


class MainWindow(QMainWindow):
    files_dropped = Signal(list)
    """The local paths dropped on the window (already handed to the controller)."""

    def __init__(self, controller: Controller, settings: QSettings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("Stave")
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self._default_size()
        self.controller = controller
        self.qsettings = settings or window_settings()
        self._tray: QSystemTrayIcon | None = None
        self._job_id: int | None = None
        self._shown_error = ""
        self._panels_started = False
        self._closed = False
        self._preload = QThreadPool(self)  # one import job after the first paint
        self._preload.setObjectName("stave-window-preload")
        self._preload.setMaxThreadCount(1)
        self._preload_signals = None
        self._build_central()
        self._build_actions()
        self._build_status_bar()
        self._apply_stylesheet()
        self.docks = self._build_docks()
        self._wire()
        self._restore()
        controller.announce()
        for warning in controller.load_warnings[:1]:
            self.statusBar().showMessage(warning, 15000)

    # -- building ------------------------------------------------------------------------
    def _build_central(self) -> None:
        self.proxy = QueueFilterProxy(self.controller.queue, self)
        self.view = QueueView()
        self.view.setObjectName("queueView")
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # queue order until a header is clicked
        self.view.setAlternatingRowColors(True)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setItemDelegateForColumn(Column.PROGRESS, ProgressDelegate(self.view))
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 10)
        self.view.verticalHeader().hide()
        header = self.view.horizontalHeader()
        for column, width in COLUMN_WIDTHS.items():
            header.resizeSection(column, width)
        header.setStretchLastSection(True)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.view.first_painted.connect(lambda: QTimer.singleShot(0, self, self._start_panels))
        self.details = QTextBrowser()
        self.details.setObjectName("jobDetails")
        self.details.setAcceptDrops(False)
        self.details.setHtml(details_html(None))
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

    def _action(self, key: str, text: str, slot, shortcut: str | None = None, tip: str = "") -> QAction:
        action = QAction(action_icon(key, self), text, self)
        action.setObjectName(f"action-{key}")
        action.setToolTip(tip or text)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        c = self.controller
        self.actions_by_name = {
            "add-files": self._action("add-files", "Add files…", self._add_files, "Ctrl+O"),
            "add-folder": self._action("add-folder", "Add folder…", self._add_folder, "Ctrl+Shift+O"),
            "start": self._action("start", "Start", c.start, "Ctrl+R", "Run the queued files"),
            "pause": self._action("pause", "Pause", c.pause, None, "Pause; resume later with Start"),
            "cancel": self._action("cancel", "Cancel", c.cancel, None, "Stop and cancel the jobs not finished"),
            "retry": self._action("retry", "Retry failed", c.retry_failed, None, "Run the failed jobs again"),
            "rerun": self._action("rerun", "Re-run degraded", c.rerun_degraded, None,
                                  "Run jobs that used a fallback again (once the dependency works)"),
            "open-output": self._action("open-output", "Open output folder", c.open_output_folder),
            "settings": self._action("settings", "Settings…", self._open_settings, "Ctrl+,"),
        }
        toolbar = self.addToolBar("Main")
        toolbar.setObjectName("mainToolBar")
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        a = self.actions_by_name
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
        self.filter_combo.currentIndexChanged.connect(lambda i: self.proxy.set_states(FILTERS[i][1]))
        toolbar.addWidget(self.filter_combo)
        self.folder_button = QToolButton()
        self.folder_button.setObjectName("outputFolder")
        self.folder_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.folder_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.folder_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_DirIcon))
        self.folder_button.clicked.connect(self._choose_folder)
        self.folder_menu = QMenu(self.folder_button)
        self.folder_menu.aboutToShow.connect(self._fill_folder_menu)
        self.folder_button.setMenu(self.folder_menu)
        toolbar.addWidget(QLabel("  Output "))
        toolbar.addWidget(self.folder_button)
        toolbar.addAction(a["open-output"])
        toolbar.addSeparator()
        toolbar.addAction(a["settings"])
        self._show_folder(c.out_dir)

        file_menu = self.menuBar().addMenu("&File")
        for name in ("add-files", "add-folder", "open-output", "settings"):
            file_menu.addAction(a[name])
        file_menu.addSeparator()
        file_menu.addAction("Quit", QKeySequence.StandardKey.Quit, self.close)
        batch_menu = self.menuBar().addMenu("&Batch")
        for name in ("start", "pause", "cancel", "retry", "rerun"):
            batch_menu.addAction(a[name])
        self.view_menu = self.menuBar().addMenu("&View")

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.scan_label = QLabel("Scanning…")
        self.scan_label.hide()
        self.counts_label = QLabel()
        self.failed_label = QLabel()
        self.failed_label.setObjectName("failedLabel")
        self.eta_label = QLabel()
        self.progress = QProgressBar()
        self.progress.setObjectName("overallProgress")
        self.progress.setMaximumWidth(220)
        self.progress.setFormat("%v / %m")
        self.progress.hide()
        self.health_badge = QToolButton()
        self.health_badge.setObjectName("healthBadge")
        self.health_badge.hide()
        self.health_badge.clicked.connect(lambda: self._raise_dock("HealthDock"))
        self.health_label = QLabel()
        for w in (self.scan_label, self.counts_label, self.failed_label, self.eta_label, self.progress,
                  self.health_label, self.health_badge):
            bar.addPermanentWidget(w)

    def _apply_stylesheet(self) -> None:
        """The stylesheet names four widgets: it is set on them, not on the window. A stylesheet on the
        window would make every widget in it (the queue, the plots) paint through the slower
        style-sheet style, about twice the time per frame of the queue."""
        qss = load_stylesheet()
        for widget in (self.banner, self.health_badge, self.failed_label, self.details):
            widget.setStyleSheet(qss)

    def _build_docks(self) -> dict:
        try:
            from app import docks as panels
        except ImportError as exc:  # the window works without its panels
            log.warning("the dock panels are not available: %s", exc)
            return {}
        c = self.controller
        made = {}
        self._dock_areas: dict[str, Qt.DockWidgetArea] = {}
        right, bottom = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.BottomDockWidgetArea
        self.setCorner(Qt.Corner.TopRightCorner, right)  # the right column takes the full height
        self.setCorner(Qt.Corner.BottomRightCorner, right)
        for cls, area in ((panels.HealthDock, right), (panels.InspectorDock, right), (panels.LogDock, bottom),
                          (panels.BreakersDock, right), (panels.CheckpointsDock, right),
                          (panels.ResourcesDock, bottom)):
            plots = cls in (panels.InspectorDock, panels.BreakersDock, panels.ResourcesDock)
            dock = made[cls.__name__] = cls(self, defer=True) if plots else cls(self)
            dock.hide()  # placed once the window is shown (see _arrange_docks)
            self._dock_areas[cls.__name__] = area
            self.view_menu.addAction(dock.toggleViewAction())
        health, breakers, checkpoints = made["HealthDock"], made["BreakersDock"], made["CheckpointsDock"]
        health.recheck_requested.connect(c.recheck_health)
        c.health_checked.connect(health.set_report)
        c.health_checking.connect(health.set_checking)
        c.breakers_changed.connect(breakers.set_snapshots)
        breakers.reset_requested.connect(c.reset_breaker)
        breakers.force_open_requested.connect(c.force_open_breaker)
        c.checkpoints_changed.connect(checkpoints.set_batches)
        checkpoints.resume_requested.connect(c.resume)
        checkpoints.discard_requested.connect(c.discard)
        checkpoints.rerun_from_requested.connect(c.rerun_from)
        made["LogDock"].attach_logging("")
        return made

    def _start_panels(self) -> None:
        """After the first paint: import the plot modules off the GUI thread, then build the plots."""
        if self._panels_started or self._closed or not self.docks:
            return
        self._panels_started = True
        resources = self.docks.get("ResourcesDock")
        if resources is not None:
            resources.start()
        task = TaskRunnable(preload_plot_modules)
        self._preload_signals = task.signals  # kept until it has reported
        task.signals.finished.connect(self._allow_panel_builds)
        task.signals.errored.connect(self._allow_panel_builds)  # the docks log what fails to build
        self._preload.start(task)

    def _allow_panel_builds(self, *_: object) -> None:
        self._preload_signals = None
        if self._closed:
            return
        for dock in self.docks.values():
            dock.allow_build()

    def _wire(self) -> None:
        c = self.controller
        c.state_changed.connect(self._on_state)
        c.progress_changed.connect(self._on_progress)
        c.batch_started.connect(self._on_batch_started)
        c.batch_finished.connect(self._on_batch_finished)
        c.resume_offered.connect(self._offer_resume)
        c.preflight_blocked.connect(self._on_preflight_blocked)
        c.health_checked.connect(self._on_health)
        c.health_checking.connect(lambda busy: self.health_label.setText("Checking dependencies…" if busy else ""))
        c.error_occurred.connect(self._show_error)
        c.message_posted.connect(lambda text: self.statusBar().showMessage(text, 8000))
        c.output_dir_changed.connect(self._show_folder)
        c.jobs_updated.connect(self._on_jobs_updated)
        self.view.selectionModel().currentRowChanged.connect(self._on_current_changed)

    # -- persistence ---------------------------------------------------------------------
    def _arrange_docks(self) -> None:
        """Health | Breakers | Checkpoints tabs above the Inspector on the right; Log | Resources at the bottom.

        Done once the window is shown: docks tabified before that leave a stray tab bar behind (Qt 6.11),
        and docks added untabbed make the window grow to fit them all.
        """
        d = self.docks
        if not d:
            return
        for name, dock in d.items():
            self.addDockWidget(self._dock_areas[name], dock)
            dock.show()
        tabs = [("HealthDock", "BreakersDock"), ("HealthDock", "CheckpointsDock"), ("LogDock", "ResourcesDock")]
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is None or screen.height() >= SPLIT_RIGHT_COLUMN_MIN_HEIGHT:
            self.splitDockWidget(d["HealthDock"], d["InspectorDock"], Qt.Orientation.Vertical)
        else:  # a small screen: one column of tabs, so the window still fits
            tabs.insert(0, ("HealthDock", "InspectorDock"))
        for first, other in tabs:
            self.tabifyDockWidget(d[first], d[other])
        for name in ("HealthDock", "LogDock"):
            d[name].raise_()

    def _default_size(self) -> None:
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is None:
            self.resize(1280, 800)
        else:
            self.resize(min(1440, max(960, int(screen.width() * 0.85))), min(900, max(640, int(screen.height() * 0.85))))

    def _default_dock_sizes(self) -> None:
        """First start (no saved layout): the queue gets the room, the panels a strip each."""
        if "HealthDock" in self.docks:
            self.resizeDocks([self.docks["HealthDock"]], [400], Qt.Orientation.Horizontal)
        if "LogDock" in self.docks:
            self.resizeDocks([self.docks["LogDock"]], [150], Qt.Orientation.Vertical)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._panels_started:
            QTimer.singleShot(PANELS_FALLBACK_MS, self, self._start_panels)
        if self._layout_pending:
            self._layout_pending = False
            self._arrange_docks()
            state = self.qsettings.value("window/state")
            if isinstance(state, QByteArray) and not state.isEmpty():
                self.restoreState(state)
            else:
                self._default_dock_sizes()
            geometry = self.qsettings.value("window/geometry")
            if isinstance(geometry, QByteArray) and not geometry.isEmpty():
                self.restoreGeometry(geometry)

    def _restore(self) -> None:
        s = self.qsettings
        self._layout_pending = True  # docks: arranged and restored once shown
        for key, restore in (("geometry", self.restoreGeometry), ("splitter", self.splitter.restoreState),
                             ("columns", self.view.horizontalHeader().restoreState)):
            value = s.value(f"window/{key}")
            if isinstance(value, QByteArray) and not value.isEmpty():
                restore(value)

    def save_layout(self) -> None:
        if self._layout_pending:  # never shown: nothing was arranged, keep what was saved
            return
        s = self.qsettings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("window/columns", self.view.horizontalHeader().saveState())
        s.sync()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_layout()
        self._closed = True
        self._preload.waitForDone()
        for name, method in (("ResourcesDock", "stop"), ("InspectorDock", "shutdown"), ("LogDock", "detach_logging")):
            dock = self.docks.get(name)
            if dock is not None and callable(getattr(dock, method, None)):
                getattr(dock, method)()
        self.controller.shutdown()
        if self._tray is not None:
            self._tray.hide()
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

    # -- actions --------------------------------------------------------------------------
    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add audio files", "", AUDIO_FILTER)
        self.controller.add_paths(files)

    def _add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of audio files")
        if folder:
            self.controller.add_paths([folder])

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Output folder", self.controller.out_dir)
        if folder:
            self.controller.set_output_dir(folder)

    def _fill_folder_menu(self) -> None:
        self.folder_menu.clear()
        self.folder_menu.addAction("Choose…", self._choose_folder)
        self.folder_menu.addAction("Open in the file manager", self.controller.open_output_folder)
        recent = [d for d in self.controller.settings.recent_output_dirs if d != self.controller.out_dir]
        if recent:
            self.folder_menu.addSeparator()
        for folder in recent:
            self.folder_menu.addAction(folder, lambda f=folder: self.controller.set_output_dir(f))

    def _open_settings(self) -> None:
        dialog = SettingsDialog(self.controller.settings, self.controller.settings_store, self)
        dialog.settings_saved.connect(self.controller.apply_settings)
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()  # window-modal, not blocking: a running batch carries on
        self.settings_dialog = dialog

    def _context_menu(self, pos) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        job_id = index.data(JobIdRole)
        menu = QMenu(self)
        cancel = menu.addAction("Cancel this job", lambda: self.controller.cancel_job(job_id))
        cancel.setEnabled(index.data(StateRole) in (RowState.QUEUED.value, RowState.RUNNING.value))
        menu.popup(self.view.viewport().mapToGlobal(pos))

    # -- reactions ------------------------------------------------------------------------
    def _on_state(self, state: ControlState) -> None:
        a = self.actions_by_name
        a["start"].setEnabled(state.can_start)
        a["pause"].setEnabled(state.can_pause)
        a["cancel"].setEnabled(state.can_cancel)
        a["retry"].setEnabled(state.retryable > 0)
        a["rerun"].setEnabled(state.degraded > 0 and not state.running)
        self.folder_button.setEnabled(state.can_change_folder)
        self.scan_label.setVisible(state.scanning)
        counts = self.controller.queue.counts()
        shown = [f"{n} {name}" for name, n in counts.items() if n and name not in ("failed", "quarantined")]
        self.counts_label.setText(" · ".join(shown))
        bad = counts["failed"] + counts["quarantined"]
        self.failed_label.setText(f"{bad} failed" if bad else "")
        if state.error and state.error != self._shown_error:
            self.banner.show_message(f"The output folder cannot be used: {state.error}",
                                     [("Choose another folder…", self._choose_folder)], kind="error")
        self._shown_error = state.error

    def _on_progress(self, p) -> None:
        self.progress.show()
        self.progress.setRange(0, max(1, p.total))
        self.progress.setValue(p.done + p.failed)
        self.eta_label.setText(f"ETA {_duration(p.eta_s)}" if p.eta_s is not None and p.done + p.failed < p.total
                               else "")

    def _on_batch_started(self, batch_id: int) -> None:
        self.banner.hide()
        self.progress.show()
        self.progress.setRange(0, 0)  # busy until the first job ends
        self.statusBar().showMessage(f"Batch {batch_id} running", 5000)

    def _on_batch_finished(self, summary) -> None:
        counts = {k: v for k, v in summary.counts.items() if v}
        text = f"Batch {summary.batch_id} {summary.status.value}: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        if summary.pause_reason and summary.status.value == "paused":
            text += f" ({summary.pause_reason})"
        self.eta_label.setText("")
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
        self.statusBar().showMessage(text)
        self.notify(text)

    def notify(self, text: str) -> None:
        """A desktop notification when the platform has one, else the status bar keeps the message."""
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        if self._tray is None:
            self._tray = QSystemTrayIcon(app_icon(), self)
            self._tray.show()
        self._tray.showMessage("Stave", text, QSystemTrayIcon.MessageIcon.Information, 8000)

    def _offer_resume(self, batch_id: int, counts: dict) -> None:
        waiting = counts.get("pending", 0) + counts.get("running", 0)
        done = counts.get("done", 0)
        self.banner.show_message(
            f"An interrupted batch (#{batch_id}) is in this folder: {done} done, {waiting} waiting. "
            "Resume it, or discard what is left of it?",
            [("Resume", lambda: self.controller.resume(batch_id)),
             ("Discard", lambda: self.controller.discard(batch_id))])

    def _on_preflight_blocked(self, text: str) -> None:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        self.banner.show_message("Not started: " + " ".join(lines[:4]) + (" …" if len(lines) > 4 else ""),
                                 [("Start anyway", lambda: self.controller.start(check=False))], kind="error")
        self.banner.label.setToolTip(text)
        self.details.setPlainText(text)

    def _on_health(self, report) -> None:
        blockers = list(report.blockers)
        self.health_badge.setVisible(bool(blockers))
        if blockers:
            names = ", ".join(r.name for r in blockers)
            self.health_badge.setText(f"⚠ {len(blockers)} missing: {names}")
            self.health_badge.setToolTip("\n".join(f"{r.name}: {r.details} {r.install_hint}".strip()
                                                   for r in blockers))

    def _show_error(self, text: str) -> None:
        log.warning("%s", text)
        self.statusBar().showMessage(text, 15000)

    def _show_folder(self, folder: str) -> None:
        self.folder_button.setText(os.path.basename(folder.rstrip(os.sep)) or folder)
        self.folder_button.setToolTip(f"Output folder: {folder}\nClick to choose another")

    def _raise_dock(self, name: str) -> None:
        dock = self.docks.get(name)
        if dock is not None:
            dock.show()
            dock.raise_()

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self._job_id = current.data(JobIdRole) if current.isValid() else None
        self._show_details()

    def _on_jobs_updated(self, job_ids: list) -> None:
        if self._job_id is not None and self._job_id in job_ids:
            self._show_details(load_results=False)

    def _show_details(self, load_results: bool = True) -> None:
        info = self.controller.job_info(self._job_id) if self._job_id is not None else None
        self.details.setHtml(details_html(info))
        inspector, logs = self.docks.get("InspectorDock"), self.docks.get("LogDock")
        if logs is not None:
            logs.set_job_filter(self._job_id)
        if inspector is not None and (load_results or info is not None and info.job.finished_at):
            done = info is not None and RowState.of_job(info.job) in (RowState.DONE, RowState.DEGRADED)
            if done:
                inspector.show_job(info.song_dir, info.job.input_path)
            elif load_results:
                inspector.clear()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")
