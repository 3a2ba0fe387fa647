"""CheckpointsDock: batch -> job tree, stage ticks, selection kept across updates, intents."""

from __future__ import annotations

import time

from PySide6.QtCore import QItemSelectionModel, Qt

from app.docks import CheckpointsDock
from app.docks.checkpoints_dock import C_DONE, C_FAILED, C_PENDING, C_STAGES, C_STATUS, STAGES, stage_ticks

T0 = time.time() - 3600


def job(job_id: int, status: str = "pending", **stages: str) -> dict:
    return {"job_id": job_id, "path": f"/music/take{job_id}.wav", "status": status, "stages": dict(stages)}


def batches(j3: str = "running", extra: bool = False) -> list[dict]:
    jobs1 = [job(1, "done", ingest="done", preprocess="done", separate="degraded", analyze="done",
                 transcribe="done", segment="done", export="done"),
             job(2, "failed", ingest="done", preprocess="failed"),
             job(3, j3, ingest="done", preprocess="running")]
    if extra:
        jobs1.append(job(5))
    counts1: dict[str, int] = {}
    for j in jobs1:
        counts1[j["status"]] = counts1.get(j["status"], 0) + 1
    return [
        {"batch_id": 2, "status": "interrupted", "created_at": T0 + 60, "counts": counts1, "jobs": jobs1},
        {"batch_id": 1, "status": "finished", "created_at": T0, "counts": {"done": 1}, "jobs": [job(4, "done", ingest="done")]},
    ]


def select(dock: CheckpointsDock, *items) -> None:
    sel = dock.tree.selectionModel()
    sel.clearSelection()
    for item in items:
        sel.select(dock.tree.indexFromItem(item), QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)


def test_empty_state(qtbot):
    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    assert dock.objectName() == "CheckpointsDock"
    assert dock.default_area == Qt.DockWidgetArea.LeftDockWidgetArea
    assert dock.is_empty and "No batches" in dock.empty_text
    assert not dock.resume_button.isEnabled() and not dock.rerun_button.isEnabled()


def test_stage_ticks_in_pipeline_order():
    assert stage_ticks({}) == "·" * len(STAGES)
    assert stage_ticks({"export": "done", "ingest": "done", "separate": "degraded", "analyze": "failed"}) == "✓·~✗··✓"
    assert stage_ticks({"ingest": "done", "custom": "done"}) == "✓······✓"  # unknown stages go last


def test_tree_shows_counts_and_ticks(qtbot):
    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    dock.set_batches(batches())
    assert not dock.is_empty
    assert dock.tree.topLevelItemCount() == 2
    b2 = dock.batch_item(2)
    assert (b2.text(C_DONE), b2.text(C_FAILED), b2.text(C_PENDING)) == ("1", "1", "1")
    assert b2.text(C_STATUS) == "interrupted"
    assert b2.childCount() == 3
    assert dock.job_item(1).text(C_STAGES) == "✓✓~✓✓✓✓"
    assert dock.job_item(2).text(C_STAGES) == "✓✗·····"
    assert dock.job_item(3).text(C_STAGES) == "✓▸·····"
    assert dock.job_item(1).text(0) == "take1.wav"
    assert dock.job_item(1).toolTip(0) == "/music/take1.wav"


def test_expansion_and_selection_survive_updates(qtbot):
    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    dock.set_batches(batches())
    b1 = dock.batch_item(1)
    b1.setExpanded(True)
    dock.batch_item(2).setExpanded(False)
    item2, item3 = dock.job_item(2), dock.job_item(3)
    select(dock, item2, item3)
    assert dock.selected_job_ids() == [2, 3]

    for _ in range(3):  # called often
        dock.set_batches(batches(j3="done", extra=True))
    assert dock.job_item(2) is item2 and dock.job_item(3) is item3  # updated in place
    assert dock.selected_job_ids() == [2, 3]
    assert b1.isExpanded() and not dock.batch_item(2).isExpanded()
    assert dock.job_item(3).text(C_STATUS) == "done"
    assert dock.batch_item(2).childCount() == 4  # the new job was added
    assert dock.batch_item(2).text(C_DONE) == "2"

    dock.set_batches(batches()[:1])  # batch 1 disappeared
    assert dock.tree.topLevelItemCount() == 1
    assert dock.selected_job_ids() == [2, 3]
    dock.set_batches([])
    assert dock.is_empty


def test_rerun_from_emits_selected_jobs_and_stage(qtbot):
    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    dock.set_batches(batches())
    select(dock, dock.job_item(3), dock.job_item(1))
    assert dock.rerun_button.isEnabled()
    dock.stage_combo.setCurrentText("analyze")
    with qtbot.waitSignal(dock.rerun_from_requested, timeout=1000) as blocker:
        qtbot.mouseClick(dock.rerun_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [[1, 3], "analyze"]  # tree order


def test_resume_and_discard_target_the_selected_batch(qtbot):
    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    dock.set_batches(batches())
    select(dock, dock.job_item(2))  # a job stands for its batch
    assert dock.selected_batch_id() == 2
    assert dock.resume_button.isEnabled()
    with qtbot.waitSignal(dock.resume_requested, timeout=1000, check_params_cb=lambda b: b == 2):
        qtbot.mouseClick(dock.resume_button, Qt.MouseButton.LeftButton)
    select(dock, dock.batch_item(1))
    assert not dock.resume_button.isEnabled()  # a finished batch has nothing to resume
    assert dock.selected_job_ids() == [4]  # a selected batch stands for its jobs
    with qtbot.waitSignal(dock.discard_requested, timeout=1000, check_params_cb=lambda b: b == 1):
        qtbot.mouseClick(dock.discard_button, Qt.MouseButton.LeftButton)

    dock.batch_item(1).setExpanded(True)
    select(dock, dock.job_item(2), dock.job_item(3))
    dock.resize(720, 320)
    dock.show()
    qtbot.waitExposed(dock)
    assert dock.grab().save("/tmp/dock_checkpoints.png")


def test_store_enums_are_accepted(qtbot):
    from core.engine.store_rows import BatchStatus, JobStatus, StageStatus

    dock = CheckpointsDock()
    qtbot.addWidget(dock)
    dock.set_batches([{
        "batch_id": 9, "status": BatchStatus.PAUSED, "created_at": T0,
        "counts": {JobStatus.DONE: 2, JobStatus.QUARANTINED: 1, JobStatus.PENDING: 4},
        "jobs": [{"job_id": 90, "path": "/x/a.flac", "status": JobStatus.QUARANTINED,
                  "stages": {"ingest": StageStatus.DONE, "preprocess": StageStatus.FAILED}}],
    }])
    b = dock.batch_item(9)
    assert (b.text(C_STATUS), b.text(C_DONE), b.text(C_FAILED), b.text(C_PENDING)) == ("paused", "2", "1", "4")
    assert dock.job_item(90).text(C_STATUS) == "quarantined"
    assert dock.job_item(90).text(C_STAGES) == "✓✗·····"
    select(dock, b)
    assert dock.resume_button.isEnabled()
