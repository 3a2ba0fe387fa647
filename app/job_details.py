"""The selected job: its details pane under the queue, its results in the Inspector, its lines in the Log.

:func:`details_html` renders one job (its error with kind, reason and
suggestion, and its stages); :class:`JobDetailsPresenter` follows the
queue's current row and the controller's job updates to keep the pane and
the two docks on that job.
"""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

from PySide6.QtCore import QModelIndex, QObject
from PySide6.QtWidgets import QTextBrowser

from app.control_state import JobInfo
from app.queue_model import JobIdRole, RowState
from app.resources import state_colour

if TYPE_CHECKING:
    from app.controller import Controller


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


def details_pane() -> QTextBrowser:
    """The pane under the queue, empty until a job is selected (drops go to the window, not into it)."""
    pane = QTextBrowser()
    pane.setObjectName("jobDetails")
    pane.setAcceptDrops(False)
    pane.setHtml(details_html(None))
    return pane


class JobDetailsPresenter(QObject):
    """Keeps the details pane, the Inspector and the Log on the queue's current job.

    ``docks`` is the window's dict of docks by class name (either dock may be missing).
    """

    def __init__(self, controller: Controller, pane: QTextBrowser, docks: dict, parent: QObject | None = None):
        super().__init__(parent)
        self._controller = controller
        self._pane = pane
        self._docks = docks
        self.job_id: int | None = None

    def on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        self.job_id = current.data(JobIdRole) if current.isValid() else None
        self.refresh()

    def on_jobs_updated(self, job_ids: list) -> None:
        if self.job_id is not None and self.job_id in job_ids:
            self.refresh(load_results=False)

    def refresh(self, load_results: bool = True) -> None:
        """Show the current job; ``load_results``: (re)load its results in the Inspector even if unchanged."""
        info = self._controller.job_info(self.job_id) if self.job_id is not None else None
        self._pane.setHtml(details_html(info))
        inspector, logs = self._docks.get("InspectorDock"), self._docks.get("LogDock")
        if logs is not None:
            logs.set_job_filter(self.job_id)
        if inspector is not None and (load_results or info is not None and info.job.finished_at):
            done = info is not None and RowState.of_job(info.job) in (RowState.DONE, RowState.DEGRADED)
            if done:
                inspector.show_job(info.song_dir, info.job.input_path)
            elif load_results:
                inspector.clear()


__all__ = ["JobDetailsPresenter", "details_html", "details_pane"]
