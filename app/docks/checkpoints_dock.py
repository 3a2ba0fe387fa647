"""The checkpoints panel: batches and their jobs from the store, with Resume / Discard / Re-run.

``set_batches`` is called often (after each flush of engine events), so the
tree is updated in place: items are keyed by batch and job id, created once,
changed only where their text changed and removed when gone. That keeps the
user's expansion state, selection and scroll position.

A batch may hold tens of thousands of jobs, so job rows are made only for
batches that were expanded (the newest one is, at first), and they are made
or refreshed a slice at a time: about ``SYNC_BUDGET_S`` of work per turn of
the event loop, the rest on the following turns.

Each batch dict: ``{batch_id, status, created_at (epoch s), counts: {status: n},
jobs: [{job_id, path, status, stages: {stage: status}}]}``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from PySide6.QtCore import QRect, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import (
    QAbstractItemView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.docks._common import StaveDock, fmt_wall, status_colour

STAGES = ("ingest", "preprocess", "separate", "analyze", "transcribe", "segment", "export")
TICKS = {"done": "✓", "degraded": "~", "failed": "✗", "pending": "·", "running": "▸", "skipped": "–"}
TICK_COLOURS = {"✓": "done", "~": "degraded", "✗": "failed", "▸": "running"}
TICK_W = 14  # pixels per stage tick
TICK_LEGEND = "✓ done   ~ degraded (fallback)   ✗ failed   · pending   ▸ running   – skipped"
DONE_STATES = ("done",)
FAILED_STATES = ("failed", "quarantined")
PENDING_STATES = ("pending", "running")
RESUMABLE = ("paused", "interrupted", "cancelled")

COLUMNS = ("Batch / file", "Status", "Done", "Failed", "Pending", "Stages", "Created")
C_NAME, C_STATUS, C_DONE, C_FAILED, C_PENDING, C_STAGES, C_CREATED = range(len(COLUMNS))
ROLE_ID = Qt.ItemDataRole.UserRole
ROLE_KIND = Qt.ItemDataRole.UserRole + 1
SYNC_BUDGET_S = 0.012  # job-row work per turn of the event loop


def stage_ticks(stages: dict[str, str]) -> str:
    """``{"ingest": "done", "analyze": "failed"} -> "✓··✗···"`` in pipeline order (unknown stages last)."""
    order = list(STAGES) + sorted(s for s in stages if s not in STAGES)
    return "".join(TICKS.get(str(stages.get(s, "pending")), "?") for s in order)


def _text(value: Any) -> str:
    """A status as its plain name (``JobStatus.DONE`` and ``"done"`` both give ``"done"``)."""
    return str(getattr(value, "value", value))


def _count(counts: dict[str, int], states: tuple[str, ...]) -> int:
    return sum(int(counts.get(s, 0)) for s in states)


class _TicksDelegate(QStyledItemDelegate):
    """Draws a stage-tick string one coloured, evenly spaced glyph per stage."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._colours = {ch: status_colour(TICK_COLOURS.get(ch, "pending")) for ch in set(TICKS.values()) | {"?"}}

    def paint(self, painter, option, index) -> None:
        text = index.data(Qt.ItemDataRole.DisplayRole) or ""
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        opt.widget.style().drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, opt.widget)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        painter.save()
        font = painter.font()
        font.setBold(True)
        painter.setFont(font)
        r = option.rect
        colours, highlighted = self._colours, option.palette.highlightedText().color()
        for i, ch in enumerate(text):
            painter.setPen(highlighted if selected else colours.get(ch) or colours["?"])
            painter.drawText(QRect(r.x() + 4 + i * TICK_W, r.y(), TICK_W, r.height()), Qt.AlignmentFlag.AlignCenter, ch)
        painter.restore()

    def sizeHint(self, option, index) -> QSize:
        base = super().sizeHint(option, index)
        return QSize(8 + TICK_W * len(index.data(Qt.ItemDataRole.DisplayRole) or ""), base.height())


class CheckpointsDock(StaveDock):
    """Batches (resumable from their folder) and their jobs' per-stage checkpoints."""

    default_area = Qt.DockWidgetArea.LeftDockWidgetArea
    title = "Checkpoints"
    empty_message = "No batches in this output folder yet: drop audio files on the window to start one"

    resume_requested = Signal(int)
    """The user asked to resume the batch with this id."""

    discard_requested = Signal(int)
    """The user asked to discard the batch with this id (the controller confirms and deletes)."""

    rerun_from_requested = Signal(list, str)
    """The user asked to re-run these job ids (list[int]) from this stage name."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._batches: dict[int, QTreeWidgetItem] = {}
        self._jobs: dict[int, QTreeWidgetItem] = {}
        self._batch_status: dict[int, str] = {}
        self._seen: dict[tuple[str, int], Any] = {}  # last rendered values, to skip unchanged rows
        self._batch_jobs: dict[int, list[dict[str, Any]]] = {}  # the newest job dicts of each batch
        self._job_items: dict[int, dict[int, QTreeWidgetItem]] = {}  # batch -> its job rows made so far
        self._syncs: dict[int, Iterator[None]] = {}  # batch -> its job rows being made or refreshed
        self._deadline = 0.0
        self._expand_when_made: set[int] = set()  # the newest batch at first: expanded once its rows exist
        self._sync_timer = QTimer(self, interval=0)
        self._sync_timer.timeout.connect(self._sync_some)

        self.tree = QTreeWidget()
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        hdr = self.tree.header()
        # Interactive, not ResizeToContents: the latter re-measures a whole column on every setText
        # (seconds per refresh with a thousand jobs); columns are fitted once per set_batches instead.
        hdr.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hdr.resizeSection(C_NAME, 220)
        hdr.setResizeContentsPrecision(200)  # fitting a column looks at a few hundred rows, not all
        self.tree.headerItem().setToolTip(C_STAGES, " → ".join(STAGES) + "\n" + TICK_LEGEND)
        self.tree.itemSelectionChanged.connect(self._update_buttons)
        self.tree.itemExpanded.connect(self._on_expanded)
        self._ticks_delegate = _TicksDelegate(self.tree)
        self.tree.setItemDelegateForColumn(C_STAGES, self._ticks_delegate)

        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("Finish the selected interrupted or paused batch")
        self.resume_button.clicked.connect(self._on_resume)
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Forget the selected batch and its checkpoints")
        self.discard_button.clicked.connect(self._on_discard)
        self.stage_combo = QComboBox()
        self.stage_combo.addItems(list(STAGES))
        self.stage_combo.setToolTip("The first stage to run again; earlier stages keep their results")
        self.rerun_button = QPushButton("Re-run from")
        self.rerun_button.setToolTip("Run the selected files again from the chosen stage")
        self.rerun_button.clicked.connect(self._on_rerun)
        buttons = QHBoxLayout()  # two short rows, so the panel fits a narrow side area
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.resume_button)
        buttons.addWidget(self.discard_button)
        buttons.addStretch(1)
        rerun = QHBoxLayout()
        rerun.setContentsMargins(0, 0, 0, 0)
        rerun.addWidget(self.rerun_button)
        rerun.addWidget(self.stage_combo)
        rerun.addStretch(1)
        legend = QLabel(TICK_LEGEND)
        legend.setWordWrap(True)
        legend.setStyleSheet("color: #757575;")

        content = QWidget()
        lay = QVBoxLayout(content)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tree, 1)
        lay.addWidget(legend)
        lay.addLayout(buttons)
        lay.addLayout(rerun)
        self._install(content)
        self._update_buttons()

    # --- slots -------------------------------------------------------------

    @Slot(object)
    def set_batches(self, batches: list[dict[str, Any]]) -> None:
        """Show these batches, updating the tree in place (expansion and selection survive)."""
        first_fill = not self._batches
        self.tree.setUpdatesEnabled(False)
        try:
            wanted = {int(b["batch_id"]) for b in batches}
            for bid in [b for b in self._batches if b not in wanted]:
                self._remove_batch(bid)
            for index, batch in enumerate(batches):
                self._update_batch(index, batch)
            if first_fill and self.tree.topLevelItemCount():
                # the newest batch opens once its rows are made: rows added under a collapsed item
                # cost no layout, rows added under an expanded one re-lay the whole tree each time
                newest = int(self.tree.topLevelItem(0).data(0, ROLE_ID))
                self._start_rows(newest)
                self._expand_when_made.add(newest)
            self._sync_some()  # the first slice of job rows now, the rest on the next turns
        finally:
            self.tree.setUpdatesEnabled(True)
        self._set_empty(not self._batches)
        self._update_buttons()

    # --- inspection --------------------------------------------------------

    def batch_item(self, batch_id: int) -> QTreeWidgetItem:
        return self._batches[batch_id]

    def job_item(self, job_id: int) -> QTreeWidgetItem:
        """The row of a job (its batch's rows are made now if they were not yet)."""
        if job_id not in self._jobs:
            for bid, jobs in self._batch_jobs.items():
                if any(int(j["job_id"]) == job_id for j in jobs):
                    self._finish_rows(bid)
                    break
        return self._jobs[job_id]

    def selected_job_ids(self) -> list[int]:
        """Selected jobs in tree order; a selected batch stands for all its jobs."""
        out: list[int] = []
        for item in self._selected_in_order():
            if item.data(0, ROLE_KIND) == "job":
                out.append(int(item.data(0, ROLE_ID)))
            else:
                out.extend(int(j["job_id"]) for j in self._batch_jobs.get(int(item.data(0, ROLE_ID)), []))
        return list(dict.fromkeys(out))

    def selected_batch_id(self) -> int | None:
        """The batch of the first selected row (a job row stands for its batch)."""
        for item in self._selected_in_order():
            batch = item if item.data(0, ROLE_KIND) == "batch" else item.parent()
            return int(batch.data(0, ROLE_ID))
        return None

    # --- internals ---------------------------------------------------------

    def _selected_in_order(self) -> list[QTreeWidgetItem]:
        items = self.tree.selectedItems()
        if len(items) <= 1:
            return items
        rows = {id(it): n for n, it in enumerate(self._iter_items())}
        return sorted(items, key=lambda it: rows.get(id(it), 0))

    def _iter_items(self):
        for i in range(self.tree.topLevelItemCount()):
            top = self.tree.topLevelItem(i)
            yield top
            for j in range(top.childCount()):
                yield top.child(j)

    def _remove_batch(self, bid: int) -> None:
        item = self._batches.pop(bid)
        for jid in self._job_items.pop(bid, {}):
            self._jobs.pop(jid, None)
            self._seen.pop(("job", jid), None)
        self._batch_jobs.pop(bid, None)
        self._syncs.pop(bid, None)
        self._expand_when_made.discard(bid)
        self._seen.pop(("batch", bid), None)
        self._batch_status.pop(bid, None)
        self.tree.takeTopLevelItem(self.tree.indexOfTopLevelItem(item))

    def _update_batch(self, index: int, batch: dict[str, Any]) -> None:
        bid = int(batch["batch_id"])
        item = self._batches.get(bid)
        if item is None:
            item = QTreeWidgetItem()
            item.setData(0, ROLE_ID, bid)
            item.setData(0, ROLE_KIND, "batch")
            self.tree.insertTopLevelItem(min(index, self.tree.topLevelItemCount()), item)
            self._batches[bid] = item
        status = _text(batch.get("status", ""))
        self._batch_status[bid] = status
        counts = {_text(k): int(v) for k, v in (batch.get("counts") or {}).items()}
        key = (status, tuple(sorted(counts.items())), batch.get("created_at"))
        if self._seen.get(("batch", bid)) != key:
            self._seen[("batch", bid)] = key
            texts = {
                C_NAME: f"Batch {bid} · {sum(counts.values())} files",
                C_STATUS: status,
                C_DONE: str(_count(counts, DONE_STATES)),
                C_FAILED: str(_count(counts, FAILED_STATES)),
                C_PENDING: str(_count(counts, PENDING_STATES)),
                C_CREATED: fmt_wall(batch.get("created_at"), with_date=True),
            }
            for col, text in texts.items():
                item.setText(col, text)
            item.setForeground(C_STATUS, QBrush(status_colour(status)))
            item.setToolTip(C_STATUS, ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "no jobs")
            bold = item.font(C_NAME)
            bold.setBold(True)
            item.setFont(C_NAME, bold)
        jobs = batch.get("jobs") or []
        self._batch_jobs[bid] = jobs
        if bid in self._job_items:  # expanded once: its rows follow the data
            self._syncs[bid] = self._sync_rows(bid, item, jobs)
        else:
            item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.ShowIndicator if jobs else
                                         QTreeWidgetItem.ChildIndicatorPolicy.DontShowIndicatorWhenChildless)

    @Slot(QTreeWidgetItem)
    def _on_expanded(self, item: QTreeWidgetItem) -> None:
        """A batch shown expanded for the first time gets its job rows."""
        if item.data(0, ROLE_KIND) != "batch":
            return
        bid = int(item.data(0, ROLE_ID))
        self._expand_when_made.discard(bid)  # opened meanwhile (by the user)
        if bid not in self._job_items and bid in self._batches:
            self._start_rows(bid)
            self._sync_timer.start()  # made on the next turns

    def _start_rows(self, bid: int) -> None:
        """From now on the batch has job rows (made over the next turns, then kept up to date)."""
        item = self._batches[bid]
        self._job_items[bid] = {}
        item.setChildIndicatorPolicy(QTreeWidgetItem.ChildIndicatorPolicy.DontShowIndicatorWhenChildless)
        self._syncs[bid] = self._sync_rows(bid, item, self._batch_jobs.get(bid, []))

    def _finish_rows(self, bid: int) -> None:
        """Make all of a batch's job rows now."""
        if bid not in self._job_items:  # never expanded: make its rows without expanding it
            self._start_rows(bid)
        steps = self._syncs.pop(bid, None)
        self._deadline = float("inf")
        for _ in steps or ():
            pass
        self._rows_made(bid)

    def _rows_made(self, bid: int) -> None:
        if bid in self._expand_when_made and bid in self._batches:
            self._expand_when_made.discard(bid)
            self._batches[bid].setExpanded(True)
            for column in range(1, self.tree.columnCount()):  # fit once; people may resize after
                self.tree.resizeColumnToContents(column)

    @Slot()
    def _sync_some(self) -> None:
        """About ``SYNC_BUDGET_S`` of job-row work; the timer calls again while some is left."""
        self._deadline = time.perf_counter() + SYNC_BUDGET_S
        while self._syncs and time.perf_counter() < self._deadline:
            bid, steps = next(iter(self._syncs.items()))
            try:
                next(steps)
            except StopIteration:
                if self._syncs.get(bid) is steps:  # not replaced by newer data meanwhile
                    del self._syncs[bid]
                    self._rows_made(bid)
        if self._syncs:
            self._sync_timer.start()
        else:
            self._sync_timer.stop()

    def _sync_rows(self, bid: int, parent: QTreeWidgetItem, jobs: list[dict[str, Any]]) -> Iterator[None]:
        """Make, refresh and remove the job rows of one batch; yields whenever the turn's time is up."""
        rows, all_rows, seen = self._job_items[bid], self._jobs, self._seen
        wanted = {int(j["job_id"]) for j in jobs}
        for jid in [j for j in rows if j not in wanted]:
            parent.removeChild(rows.pop(jid))
            all_rows.pop(jid, None)
            seen.pop(("job", jid), None)
        new_items: list[QTreeWidgetItem] = []
        for n, job in enumerate(jobs, 1):
            jid = int(job["job_id"])
            item = rows.get(jid)
            if item is None:
                item = QTreeWidgetItem()
                item.setData(0, ROLE_ID, jid)
                item.setData(0, ROLE_KIND, "job")
                rows[jid] = all_rows[jid] = item
                new_items.append(item)
            if seen.get(("job", jid)) != job:
                seen[("job", jid)] = job
                self._render_job(item, job)
            if n % 16 == 0 and time.perf_counter() > self._deadline:
                if new_items:
                    parent.addChildren(new_items)  # one insertion per slice
                    new_items = []
                yield
        if new_items:
            parent.addChildren(new_items)

    def _render_job(self, item: QTreeWidgetItem, job: dict[str, Any]) -> None:
        stages = {_text(k): _text(v) for k, v in (job.get("stages") or {}).items()}
        status = _text(job.get("status", ""))
        path = os.fsdecode(job.get("path", ""))
        item.setText(C_NAME, os.path.basename(path) or path)
        item.setToolTip(C_NAME, path)
        item.setText(C_STATUS, status)
        item.setForeground(C_STATUS, QBrush(status_colour(status)))
        item.setText(C_STAGES, stage_ticks(stages))
        order = list(STAGES) + sorted(s for s in stages if s not in STAGES)
        item.setToolTip(C_STAGES, "\n".join(f"{s}: {stages.get(s, 'pending')}" for s in order))

    @Slot()
    def _update_buttons(self) -> None:
        bid = self.selected_batch_id()
        status = self._batch_status.get(bid, "") if bid is not None else ""
        self.resume_button.setEnabled(bid is not None and status in RESUMABLE)
        self.discard_button.setEnabled(bid is not None and status != "running")
        self.rerun_button.setEnabled(bool(self.selected_job_ids()))

    @Slot()
    def _on_resume(self) -> None:
        bid = self.selected_batch_id()
        if bid is not None:
            self.resume_requested.emit(bid)

    @Slot()
    def _on_discard(self) -> None:
        bid = self.selected_batch_id()
        if bid is not None:
            self.discard_requested.emit(bid)

    @Slot()
    def _on_rerun(self) -> None:
        jobs = self.selected_job_ids()
        if jobs:
            self.rerun_from_requested.emit(jobs, self.stage_combo.currentText())
