"""The queue model: block inserts, one dataChanged per burst, per-row state and errors, model tests."""

from __future__ import annotations

import time

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QColor, QIcon

from app.queue_model import WAITING_FOR_A_WORKER, Column, JobIdRole, ProgressRole, QueueFilterProxy, QueueModel, RowState, StateRole
from core.engine import events as ev
from core.engine.store_rows import JobRow, JobStatus
from core.resilience.errors import ErrorKind

STAGES = ("ingest", "process", "export")


def job_row(job_id: int, status: JobStatus = JobStatus.PENDING, batch_id: int = 1, **kw) -> JobRow:
    values = dict(id=job_id, batch_id=batch_id, position=job_id, input_path=f"/music/take{job_id}.wav",
                  song_id=f"take{job_id}", content_hash="", size_bytes=100, mtime=0.0, audio_duration_s=None,
                  status=status, degraded=False, degraded_reasons=(), error_kind=None, error_reason="",
                  error_suggestion="", error_stage=None, crash_count=0, attempts=0, created_at=0.0,
                  started_at=None, finished_at=None)
    values.update(kw)
    return JobRow(**values)


def queued(n: int, batch_id: int = 1, first: int = 1) -> list[ev.Event]:
    return [ev.JobQueued(batch_id, i, f"/music/take{i}.wav", f"take{i}") for i in range(first, first + n)]


def model_with_rows(n: int = 4) -> QueueModel:
    model = QueueModel()
    model.set_stages(STAGES)
    model.apply_events(queued(n))
    return model


def cell(model, row: int, column: Column, role=Qt.ItemDataRole.DisplayRole):
    return model.data(model.index(row, column), role)


def test_model_tester_empty_with_rows_and_after_updates(qtmodeltester):
    model = QueueModel()
    model.set_stages(STAGES)
    qtmodeltester.check(model)
    model.apply_events(queued(5))
    qtmodeltester.check(model)
    model.apply_events([ev.JobStarted(1, "/music/take1.wav"), ev.StageStarted(1, "process", 2),
                        ev.JobFinished(2, "/music/take2.wav", 1.5),
                        ev.JobFailed(3, "/music/take3.wav", "ingest", "input-corrupt", "not audio", "Check the file"),
                        ev.JobSkipped(4, "/music/take4.wav", "empty file")])
    qtmodeltester.check(model)
    model.load_batch(1, [job_row(i, JobStatus.DONE, finished_at=10.0, started_at=8.0) for i in range(1, 4)])
    qtmodeltester.check(model)
    proxy = QueueFilterProxy(model)
    proxy.set_states([RowState.DONE])
    qtmodeltester.check(proxy)


def test_a_burst_of_queued_jobs_is_one_insert_and_updates_are_one_data_changed(qtbot):
    model = QueueModel()
    model.set_stages(STAGES)
    inserts, changes = [], []
    model.rowsInserted.connect(lambda parent, first, last: inserts.append((first, last)))
    model.dataChanged.connect(lambda tl, br, roles: changes.append((tl.row(), br.row(), br.column())))
    model.apply_events(queued(100))
    assert inserts == [(0, 99)] and model.rowCount() == 100
    model.apply_events([ev.JobStarted(3, "x"), ev.StageStarted(3, "ingest", 1), ev.JobStarted(40, "y"),
                        ev.StageFinished(40, "ingest", 0.2)])
    assert changes == [(2, 39, Column.RESULT)]  # one dataChanged spanning both rows
    assert inserts == [(0, 99)]


def test_rows_follow_job_events_with_progress_from_the_stage_order():
    model = model_with_rows(3)
    model.apply_events([ev.JobStarted(1, "/music/take1.wav"), ev.StageFinished(1, "process", 0.3)])
    assert cell(model, 0, Column.STATUS) == "running"
    assert cell(model, 0, Column.STAGE) == "process"
    assert cell(model, 0, Column.PROGRESS, ProgressRole) == 2 / 3  # ingest and process of three stages
    assert cell(model, 0, Column.ATTEMPTS) == "1"
    model.apply_events([ev.JobFinished(1, "/music/take1.wav", 75.0, summary={"tempo_bpm": 120.0, "key": "A minor"})])
    assert cell(model, 0, Column.STATUS) == "done"
    assert cell(model, 0, Column.ELAPSED) == "1:15"
    assert cell(model, 0, Column.RESULT) == "120.0 BPM · A minor"
    assert cell(model, 0, Column.PROGRESS, ProgressRole) == 1.0
    model.apply_events([ev.JobFinished(2, "/music/take2.wav", 1.0, degraded=True,
                                       degraded_reasons=("demucs breaker open: used HPSS",))])
    assert cell(model, 1, Column.STATUS) == "degraded"
    assert "HPSS" in cell(model, 1, Column.RESULT)


def test_a_job_whose_next_stage_waits_for_a_worker_says_so_until_a_worker_takes_it():
    model = model_with_rows(2)
    model.apply_events([ev.JobStarted(1, "/music/take1.wav"), ev.StageFinished(1, "ingest", 0.2),
                        ev.StageWaiting(1, "process")])
    assert cell(model, 0, Column.STATUS) == "running"
    assert cell(model, 0, Column.STAGE) == "process"
    assert cell(model, 0, Column.RESULT) == WAITING_FOR_A_WORKER
    assert cell(model, 0, Column.PROGRESS, ProgressRole) == 1 / 3  # still only ingest done
    model.apply_events([ev.StageStarted(1, "process", 1, 60.0)])
    assert cell(model, 0, Column.RESULT) == ""
    model.apply_events([ev.StageWaiting(1, "export"),
                        ev.JobFailed(1, "/music/take1.wav", "export", "cancelled", "cancelled", ""),
                        ev.StageWaiting(1, "export")])  # a late one never revives an ended row
    assert cell(model, 0, Column.STATUS) == "failed" and cell(model, 0, Column.RESULT) == "cancelled"
    model.apply_events([ev.StageWaiting(2, "ingest")])
    assert cell(model, 1, Column.STATUS) == "running"


def test_a_job_back_in_the_queue_or_cancelled_leaves_running():
    """A pause or a batch-wide error puts running jobs back in the queue; a cancel ends them: rows follow."""
    model = model_with_rows(3)
    model.apply_events([ev.JobStarted(1, "/music/take1.wav"), ev.StageStarted(1, "process", 1, 60.0),
                        ev.JobStarted(2, "/music/take2.wav"), ev.StageStarted(2, "ingest", 1, 60.0)])
    assert [cell(model, r, Column.STATUS) for r in range(3)] == ["running", "running", "queued"]
    model.apply_events([ev.JobFailed(1, "/music/take1.wav", "process", "disk-full", "no space left", "free space"),
                        ev.JobQueued(1, 1, "/music/take1.wav", "take1", reason="interrupted at process: no space"),
                        ev.JobQueued(1, 2, "/music/take2.wav", "take2", reason="interrupted at ingest: paused"),
                        ev.JobCancelled(3, "/music/take3.wav")])
    assert [cell(model, r, Column.STATUS) for r in range(3)] == ["queued", "queued", "cancelled"]
    assert cell(model, 0, Column.STAGE) == "" and cell(model, 0, Column.PROGRESS, ProgressRole) == 0.0
    assert cell(model, 0, Column.RESULT) == "interrupted at process: no space"
    assert model.rowCount() == 3  # a job back in the queue is the same row, not a new one


def test_a_failed_row_carries_its_reason_suggestion_colour_icon_and_job_id():
    model = model_with_rows(2)
    model.apply_events([ev.JobStarted(2, "/music/take2.wav"),
                        ev.JobFailed(2, "/music/take2.wav", "ingest", "input-corrupt", "the file is not audio",
                                     "Re-export the file", quarantined=False)])
    row = 1
    assert cell(model, row, Column.STATUS) == "failed"
    assert cell(model, row, Column.RESULT) == "the file is not audio"
    tip = cell(model, row, Column.RESULT, Qt.ItemDataRole.ToolTipRole)
    assert "input-corrupt" in tip and "Suggestion: Re-export the file" in tip
    assert cell(model, row, Column.STATUS, JobIdRole) == 2
    assert cell(model, row, Column.STATUS, StateRole) == "failed"
    failed_colour = cell(model, row, Column.STATUS, Qt.ItemDataRole.ForegroundRole)
    queued_colour = cell(model, 0, Column.STATUS, Qt.ItemDataRole.ForegroundRole)
    assert isinstance(failed_colour, QColor) and failed_colour != queued_colour
    assert isinstance(cell(model, row, Column.STATUS, Qt.ItemDataRole.DecorationRole), QIcon)
    assert cell(model, 0, Column.FILE, Qt.ItemDataRole.ToolTipRole) == "/music/take1.wav"


def test_load_batch_shows_history_in_one_block_with_errors_from_the_store():
    model = QueueModel()
    resets = []
    model.modelReset.connect(lambda: resets.append(1))
    jobs = [job_row(1, JobStatus.DONE, audio_duration_s=61.0, started_at=100.0, finished_at=104.0, attempts=1),
            job_row(2, JobStatus.QUARANTINED, error_kind=ErrorKind.TIMEOUT, error_reason="timed out after 30 s",
                    error_suggestion="Raise the timeout", error_stage="separate", attempts=2),
            job_row(3, JobStatus.DONE, degraded=True, degraded_reasons=("no ffmpeg",))]
    model.load_batch(7, jobs)
    assert resets == [1] and model.rowCount() == 3 and model.batch_id == 7
    assert cell(model, 0, Column.DURATION) == "1:01"
    assert cell(model, 0, Column.ELAPSED) == "0:04"
    assert cell(model, 1, Column.STATUS) == "quarantined"
    assert cell(model, 1, Column.STAGE) == "separate"
    assert "Raise the timeout" in cell(model, 1, Column.STATUS, Qt.ItemDataRole.ToolTipRole)
    assert cell(model, 2, Column.RESULT) == "degraded: no ffmpeg"
    assert model.counts()["degraded"] == 1


def test_a_newer_batch_starts_a_fresh_queue_and_older_events_are_ignored():
    model = model_with_rows(3)
    model.apply_events(queued(2, batch_id=2, first=10))
    assert model.batch_id == 2 and model.rowCount() == 2
    model.apply_events(queued(1, batch_id=1, first=50) + [ev.JobFinished(1, "old", 1.0)])
    assert model.rowCount() == 2
    assert [cell(model, r, Column.STATUS, JobIdRole) for r in range(2)] == [10, 11]


def test_status_filter_and_sorting_by_number():
    model = model_with_rows(4)
    model.apply_events([ev.JobFinished(1, "a", 5.0), ev.JobFinished(3, "c", 2.0),
                        ev.JobFailed(4, "d", "ingest", "input-empty", "empty", "")])
    proxy = QueueFilterProxy(model)
    proxy.set_states(["failed"])
    assert proxy.rowCount() == 1 and proxy.data(proxy.index(0, Column.FILE)) == "take4.wav"
    proxy.set_states(None)
    proxy.sort(Column.ELAPSED, Qt.SortOrder.DescendingOrder)
    assert [proxy.data(proxy.index(r, 0), JobIdRole) for r in range(2)] == [1, 3]
    assert proxy.rowCount(QModelIndex()) == 4


def test_ten_thousand_rows_are_added_quickly(capsys):
    model = QueueModel()
    model.set_stages(STAGES)
    events = queued(10_000)
    t0 = time.perf_counter()
    model.apply_events(events)
    added = time.perf_counter() - t0
    jobs = [job_row(i, JobStatus.DONE, started_at=1.0, finished_at=2.0) for i in range(1, 10_001)]
    t0 = time.perf_counter()
    model.load_batch(1, jobs)
    loaded = time.perf_counter() - t0
    proxy = QueueFilterProxy(QueueModel())
    t0 = time.perf_counter()
    proxy.sourceModel().apply_events(events)
    through_proxy = time.perf_counter() - t0
    assert model.rowCount() == 10_000 and proxy.rowCount() == 10_000
    with capsys.disabled():
        print(f"\n10,000 rows: events {added * 1000:.0f} ms, load_batch {loaded * 1000:.0f} ms, "
              f"events behind a proxy {through_proxy * 1000:.0f} ms")
