"""The queue: one row per job of the current batch, fed by engine events and the store.

Rows arrive in blocks (one ``beginInsertRows`` per burst of ``JobQueued``
events, one reset when a batch is loaded from the store); per-row changes are
gathered and announced as a single ``dataChanged`` per call. Each row has an
explicit :class:`RowState` and carries its own error (kind, reason,
suggestion): errors are data shown in place, never pop-ups.

A ``JobQueued`` of a newer batch than the one shown starts a fresh queue: the
previous batch stays in the store (the Checkpoints panel lists it).
"""

from __future__ import annotations

import enum
import os
import time
from collections import Counter
from operator import attrgetter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QSortFilterProxyModel, Qt, Signal

from app.resources import StateIcons, state_colour
from core.engine import events as ev
from core.engine.store_rows import JobRow, JobStatus

_Index = QModelIndex | QPersistentModelIndex


class RowState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEGRADED = "degraded"  # done, with a fallback somewhere
    FAILED = "failed"
    QUARANTINED = "quarantined"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in (RowState.QUEUED, RowState.RUNNING)

    @classmethod
    def of_job(cls, job: JobRow) -> "RowState":
        if job.status is JobStatus.DONE:
            return cls.DEGRADED if job.degraded else cls.DONE
        return _FROM_JOB_STATUS[job.status]


WAITING_FOR_A_WORKER = "waiting for a free worker"  # a running job's Result while its next stage waits

_FROM_JOB_STATUS = {
    JobStatus.PENDING: RowState.QUEUED, JobStatus.RUNNING: RowState.RUNNING, JobStatus.FAILED: RowState.FAILED,
    JobStatus.QUARANTINED: RowState.QUARANTINED, JobStatus.SKIPPED: RowState.SKIPPED,
    JobStatus.CANCELLED: RowState.CANCELLED,
}


class Column(enum.IntEnum):
    FILE = 0
    DURATION = 1
    STATUS = 2
    STAGE = 3
    PROGRESS = 4
    ATTEMPTS = 5
    ELAPSED = 6
    RESULT = 7


HEADERS = ("File", "Duration", "Status", "Stage", "Progress", "Attempts", "Elapsed", "Result")

JobIdRole = Qt.ItemDataRole.UserRole  # int: the job's id in the store
StateRole = Qt.ItemDataRole.UserRole + 1  # RowState value (str)
ProgressRole = Qt.ItemDataRole.UserRole + 2  # float 0..1
SortRole = Qt.ItemDataRole.UserRole + 3  # a sortable value per column

_DISPLAY, _TOOLTIP, _DECORATION = (int(r) for r in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole,
                                                    Qt.ItemDataRole.DecorationRole))
_FOREGROUND, _ALIGNMENT = int(Qt.ItemDataRole.ForegroundRole), int(Qt.ItemDataRole.TextAlignmentRole)
_USED_ROLES = frozenset({_DISPLAY, _TOOLTIP, _DECORATION, _FOREGROUND, _ALIGNMENT,
                         int(JobIdRole), int(StateRole), int(ProgressRole), int(SortRole)})
_RIGHT_ALIGNED = frozenset({Column.DURATION, Column.ATTEMPTS, Column.ELAPSED})
_RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
_STATE_OF = attrgetter("state")
_ROW_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
_NO_FLAGS = Qt.ItemFlag.NoItemFlags


@dataclass(slots=True)
class QueueRow:
    """What the queue shows about one job."""

    job_id: int
    path: str
    state: RowState = RowState.QUEUED
    duration_s: float | None = None
    stage: str = ""
    progress: float = 0.0
    attempts: int = 0
    started: float | None = None  # monotonic, while running
    elapsed_s: float | None = None
    result: str = ""
    kind: str = ""
    suggestion: str = ""

    @property
    def name(self) -> str:
        return os.path.basename(self.path) or self.path


def _clock_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _result_of_summary(summary: dict) -> str:
    parts = []
    if isinstance(summary.get("tempo_bpm"), (int, float)):
        parts.append(f"{summary['tempo_bpm']:.1f} BPM")
    if summary.get("key"):
        parts.append(str(summary["key"]))
    return " · ".join(parts)


class QueueModel(QAbstractTableModel):
    loading_started = Signal()
    """Emitted before a bulk insert or reload (views switch sorting/filtering off); no payload."""

    loading_finished = Signal()
    """Emitted after a bulk insert or reload; no payload."""

    def __init__(self, parent=None, *, monotonic: Callable[[], float] = time.monotonic):
        super().__init__(parent)
        self._rows: list[QueueRow] = []
        self._index: dict[int, int] = {}  # job_id -> row
        self._dirty: set[int] = set()
        self._stages: tuple[str, ...] = ()
        self._icons = StateIcons()
        self._now = monotonic
        self.batch_id: int | None = None

    # -- reading -------------------------------------------------------------------
    def rowCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            if orientation == Qt.Orientation.Horizontal and 0 <= section < len(HEADERS):
                return HEADERS[section]
            if orientation == Qt.Orientation.Vertical and 0 <= section < len(self._rows):
                return str(section + 1)
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        return _ROW_FLAGS if index.isValid() else _NO_FLAGS

    def row(self, row: int) -> QueueRow:
        return self._rows[row]

    def row_of_job(self, job_id: int) -> int | None:
        return self._index.get(job_id)

    def job_row(self, job_id: int) -> QueueRow | None:
        i = self._index.get(job_id)
        return None if i is None else self._rows[i]

    def counts(self) -> dict[str, int]:
        """Rows per state value (every state present, 0 when none); fast enough to call per flush."""
        out = {s.value: 0 for s in RowState}
        for state, n in Counter(map(_STATE_OF, self._rows)).items():
            out[state.value] = n
        return out

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        # A repaint asks ~8 roles of every visible cell, most of which this model does not use:
        # those return at once, before touching the index (each call into Qt costs).
        if role not in _USED_ROLES:
            return None
        row = index.row()
        if row < 0 or row >= len(self._rows) or not index.isValid():
            return None
        r = self._rows[row]
        col = index.column()
        if role == _DISPLAY:
            return self._display(r, col)
        if role == JobIdRole:
            return r.job_id
        if role == StateRole:
            return r.state.value
        if role == ProgressRole:
            return r.progress
        if role == SortRole:
            return self._sort_key(r, col)
        if role == _TOOLTIP:
            return self._tooltip(r, col)
        if role == _DECORATION:
            return self._icons(r.state.value) if col == Column.STATUS else None
        if role == _FOREGROUND:
            return state_colour(r.state.value) if col == Column.STATUS or (col == Column.RESULT and r.kind) else None
        if role == _ALIGNMENT and col in _RIGHT_ALIGNED:
            return _RIGHT
        return None

    def _display(self, r: QueueRow, col: int) -> str:
        if col == Column.FILE:
            return r.name
        if col == Column.DURATION:
            return _clock_time(r.duration_s)
        if col == Column.STATUS:
            return r.state.value
        if col == Column.STAGE:
            return r.stage
        if col == Column.PROGRESS:
            return f"{round(r.progress * 100)}%" if r.progress or r.state is RowState.RUNNING else ""
        if col == Column.ATTEMPTS:
            return str(r.attempts) if r.attempts else ""
        if col == Column.ELAPSED:
            if r.state is RowState.RUNNING and r.started is not None:
                return _clock_time(self._now() - r.started)
            return _clock_time(r.elapsed_s)
        if col == Column.RESULT:
            return r.result
        return ""

    def _sort_key(self, r: QueueRow, col: int) -> Any:
        if col == Column.DURATION:
            return r.duration_s if r.duration_s is not None else -1.0
        if col == Column.PROGRESS:
            return r.progress
        if col == Column.ATTEMPTS:
            return r.attempts
        if col == Column.ELAPSED:
            return r.elapsed_s if r.elapsed_s is not None else -1.0
        if col == Column.STATUS:
            return list(RowState).index(r.state)
        return self._display(r, col).lower()

    def _tooltip(self, r: QueueRow, col: int) -> str | None:
        if col == Column.FILE:
            return r.path
        if r.kind and col in (Column.STATUS, Column.RESULT):
            lines = [f"{r.kind}: {r.result}"]
            if r.suggestion:
                lines.append(f"Suggestion: {r.suggestion}")
            return "\n".join(lines)
        if col == Column.RESULT and r.result:
            return r.result
        return None

    # -- writing -------------------------------------------------------------------
    def set_stages(self, names: Sequence[str]) -> None:
        """The pipeline's stage order (a row's progress is its stage's place in it)."""
        self._stages = tuple(names)

    def clear(self, batch_id: int | None = None) -> None:
        self.beginResetModel()
        self._rows, self._index, self._dirty = [], {}, set()
        self.batch_id = batch_id
        self.endResetModel()

    def load_batch(self, batch_id: int, jobs: Iterable[JobRow]) -> None:
        """Show ``batch_id``'s jobs from the store, replacing the queue in one block."""
        old = {r.job_id: r for r in self._rows} if batch_id == self.batch_id else {}
        self.loading_started.emit()
        self.beginResetModel()
        self._rows = [self._row_from_job(j, old.get(j.id)) for j in jobs]
        self._index = {r.job_id: i for i, r in enumerate(self._rows)}
        self._dirty = set()
        self.batch_id = batch_id
        self.endResetModel()
        self.loading_finished.emit()

    def add_jobs(self, batch_id: int, jobs: Iterable[JobRow]) -> None:
        """Append jobs not shown yet (e.g. files the scan skipped) in one block; a newer batch starts afresh."""
        if self.batch_id is None or batch_id > self.batch_id:
            self.clear(batch_id)
        if batch_id == self.batch_id:
            rows = [self._row_from_job(j) for j in jobs if j.id not in self._index]
            if rows:
                self._insert(rows)

    def update_jobs(self, jobs: Iterable[JobRow]) -> None:
        """Refresh rows from the store (facts events do not carry: duration, attempts, errors)."""
        for job in jobs:
            i = self._index.get(job.id)
            if i is not None:
                self._rows[i] = self._row_from_job(job, self._rows[i])
                self._dirty.add(i)
        self._flush()

    def apply_events(self, events: Sequence[ev.Event]) -> None:
        """Apply a burst of engine events (as the bridge delivers them): one insert block, one dataChanged."""
        # attributes of a QObject are slow to look up (shiboken): the loops below use locals
        job_queued = ev.JobQueued
        queued = [e for e in events if type(e) is job_queued]
        newest = max((e.batch_id for e in queued), default=None)
        if newest is not None and (self.batch_id is None or newest > self.batch_id):
            self.clear(newest)
        batch_id, index = self.batch_id, self._index
        fresh = [e for e in queued if e.batch_id == batch_id and e.job_id not in index]
        if fresh:
            self._insert([QueueRow(job_id=e.job_id, path=e.path) for e in fresh])
        fresh_ids = {e.job_id for e in fresh}
        if len(fresh) < len(events):  # events for rows already shown (a JobQueued too: back in the queue)
            rows, dirty, apply = self._rows, self._dirty, self._apply
            for e in events:
                i = index.get(getattr(e, "job_id", None))
                if i is not None and not (type(e) is job_queued and e.job_id in fresh_ids):
                    apply(rows[i], e)
                    dirty.add(i)
        self._flush()

    def tick(self) -> None:
        """Running rows' elapsed time moves on: announce them (call about once a second)."""
        self._dirty.update(i for i, r in enumerate(self._rows) if r.state is RowState.RUNNING)
        self._flush()

    def _insert(self, rows: list[QueueRow]) -> None:
        self.loading_started.emit()
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self._rows.extend(rows)
        self._index.update((r.job_id, i) for i, r in enumerate(rows, first))
        self.endInsertRows()
        self.loading_finished.emit()

    def _flush(self) -> None:
        if not self._dirty:
            return
        lo, hi = min(self._dirty), max(self._dirty)
        self._dirty.clear()
        self.dataChanged.emit(self.index(lo, 0), self.index(hi, len(HEADERS) - 1))

    def _fraction(self, stage: str, finished: bool) -> float:
        if stage not in self._stages:
            return 0.0
        return (self._stages.index(stage) + (1 if finished else 0)) / len(self._stages)

    def _apply(self, r: QueueRow, e: ev.Event) -> None:
        if isinstance(e, ev.JobQueued):  # back in the queue: paused, or stopped by a batch-wide error
            r.state, r.started, r.stage, r.progress = RowState.QUEUED, None, "", 0.0
            r.result, r.kind, r.suggestion = e.reason, "", ""
        elif isinstance(e, ev.JobCancelled):
            r.state, r.started, r.result = RowState.CANCELLED, None, "cancelled"
        elif isinstance(e, ev.JobStarted):
            r.state, r.started, r.elapsed_s = RowState.RUNNING, self._now(), None
            r.attempts += 1
            r.result = r.kind = r.suggestion = ""
        elif isinstance(e, ev.StageWaiting):  # in progress, its next stage waits for a worker
            if not r.state.ended:
                r.state, r.stage, r.result = RowState.RUNNING, e.stage, WAITING_FOR_A_WORKER
        elif isinstance(e, (ev.StageStarted, ev.StageFinished)):
            finished = isinstance(e, ev.StageFinished)
            r.state = RowState.RUNNING if not r.state.ended else r.state
            r.stage = e.stage
            if r.result == WAITING_FOR_A_WORKER:
                r.result = ""
            attempt = getattr(e, "attempt", 1)
            if attempt > 1:
                r.result = f"{e.stage}: attempt {attempt}"
            r.progress = max(r.progress, self._fraction(e.stage, finished))
        elif isinstance(e, ev.StageRetrying):
            r.result = f"{e.stage}: retrying in {e.delay_s:.0f} s ({e.reason})"
        elif isinstance(e, ev.StageDegraded):
            r.result = f"{e.stage}: {e.reason}"
        elif isinstance(e, ev.JobFinished):
            r.state = RowState.DEGRADED if e.degraded else RowState.DONE
            r.elapsed_s, r.started, r.progress, r.stage = e.elapsed_s, None, 1.0, ""
            r.result = "degraded: " + "; ".join(e.degraded_reasons) if e.degraded else (
                _result_of_summary(e.summary) or ("unchanged: results of batch %d" % e.reused_from_batch
                                                  if e.reused_from_batch is not None else "done"))
            r.kind = r.suggestion = ""
        elif isinstance(e, ev.JobFailed):
            r.state = RowState.QUARANTINED if e.quarantined else RowState.FAILED
            r.stage, r.kind, r.result, r.suggestion = e.stage, e.kind, e.reason, e.suggestion
            r.elapsed_s = (self._now() - r.started) if r.started is not None else r.elapsed_s
            r.started = None
        elif isinstance(e, ev.JobSkipped):
            r.state, r.result, r.started = RowState.SKIPPED, e.reason, None

    def _row_from_job(self, job: JobRow, old: QueueRow | None = None) -> QueueRow:
        state = RowState.of_job(job)
        elapsed = (job.finished_at - job.started_at) if job.finished_at and job.started_at else None
        if state in (RowState.DONE, RowState.DEGRADED):
            result = ("degraded: " + "; ".join(job.degraded_reasons)) if job.degraded else (
                old.result if old is not None and old.state is state and old.result else "done")
        else:
            result = job.error_reason
        running = state is RowState.RUNNING and old is not None
        return QueueRow(
            job_id=job.id, path=job.input_path, state=state, duration_s=job.audio_duration_s,
            stage=(job.error_stage or "") if not running else old.stage,
            progress=1.0 if state in (RowState.DONE, RowState.DEGRADED) else (old.progress if old else 0.0),
            attempts=job.attempts, started=old.started if running else None,
            elapsed_s=elapsed, result=result,
            kind=job.error_kind.value if job.error_kind is not None else "", suggestion=job.error_suggestion)


class QueueFilterProxy(QSortFilterProxyModel):
    """Sorting (by :data:`SortRole`) and a status filter over a :class:`QueueModel`."""

    def __init__(self, source: QueueModel, parent=None):
        super().__init__(parent)
        self._states: frozenset[str] | None = None
        self.setSortRole(SortRole)
        self.setSourceModel(source)
        source.loading_started.connect(self._suspend)
        source.loading_finished.connect(self._resume)

    def set_states(self, states: Iterable[RowState | str] | None) -> None:
        """Show only rows in ``states`` (None: every row)."""
        self.beginFilterChange()
        self._states = None if states is None else frozenset(RowState(s).value for s in states)
        self.endFilterChange()

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        if self._states is None:
            return True
        index = self.sourceModel().index(source_row, 0, source_parent)
        return self.sourceModel().data(index, StateRole) in self._states

    def _suspend(self) -> None:
        self.setDynamicSortFilter(False)

    def _resume(self) -> None:
        self.setDynamicSortFilter(True)
