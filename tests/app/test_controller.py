"""The controller runs real (small) batches on its own pools: scan, run, pause/resume, resume offer, retry."""

from __future__ import annotations

from PySide6.QtCore import QThreadPool

from app.queue_model import Column, RowState
from core.engine.batch import Engine
from core.engine.store_rows import BatchStatus, JobStatus
from tests.app.conftest import health_report, wav
from tests.core.engine import teststages


def states(controller) -> list[str]:
    q = controller.queue
    return [q.row(r).state.value for r in range(q.rowCount())]


def scan(qtbot, controller, paths):
    with qtbot.waitSignal(controller.paths_scanned, timeout=10000) as blocker:
        controller.add_paths([str(p) for p in paths])
    result = blocker.args[0]
    qtbot.waitUntil(lambda: all(controller.queue.row_of_job(j) is not None for j in result.job_ids), timeout=5000)
    return result


def test_a_small_batch_runs_to_the_end_through_the_supervisors(qtbot, tmp_path, make_controller):
    inputs = tmp_path / "in"
    for i in range(3):
        wav(inputs, f"take{i}.wav", seed=i)
    controller = make_controller()
    global_before = QThreadPool.globalInstance().activeThreadCount()
    result = scan(qtbot, controller, [inputs])
    assert len(result.job_ids) == 3
    qtbot.waitUntil(lambda: controller.queue.rowCount() == 3, timeout=5000)
    assert controller.state().can_start
    with qtbot.waitSignal(controller.batch_started, timeout=10000):
        controller.start()
    assert controller.state().running and controller.state().can_pause
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as finished:
        pass
    summary = finished.args[0]
    assert summary.status is BatchStatus.FINISHED and summary.counts["done"] == 3
    qtbot.waitUntil(lambda: states(controller) == ["done"] * 3, timeout=5000)
    assert controller.queue.data(controller.queue.index(0, Column.PROGRESS)) == "100%"
    assert not controller.state().running and not controller.state().can_start
    assert QThreadPool.globalInstance().activeThreadCount() == global_before  # own pools only
    info = controller.job_info(result.job_ids[0])
    assert [s.stage for s in info.stages] == ["ingest", "process", "export"]
    assert info.song_dir.startswith(controller.out_dir)


def test_pause_then_resume_finishes_the_batch(qtbot, tmp_path, make_controller):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")  # the "process" stage hangs until paused
    inputs = tmp_path / "in"
    for i in range(2):
        wav(inputs, f"song{i}.wav", seed=i)
    controller = make_controller(out, workers=1)
    scan(qtbot, controller, [inputs])
    controller.start()
    qtbot.waitUntil(lambda: any(controller.queue.row(r).stage == "process" for r in range(2)), timeout=15000)
    with qtbot.waitSignal(controller.batch_finished, timeout=15000) as paused:
        controller.pause()
    assert paused.args[0].status is BatchStatus.PAUSED
    assert paused.args[0].counts["done"] == 0 and paused.args[0].counts["pending"] == 2
    assert controller.state().can_start and not controller.state().running
    (out / "tool_mode").write_text("ok")
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as finished:
        controller.start()
    assert finished.args[0].status is BatchStatus.FINISHED and finished.args[0].counts["done"] == 2
    qtbot.waitUntil(lambda: states(controller) == ["done", "done"], timeout=5000)


def test_an_interrupted_batch_is_offered_for_resume_and_resumes(qtbot, tmp_path, make_controller, executor):
    out = tmp_path / "out"
    inputs = tmp_path / "in"
    for i in range(2):
        wav(inputs, f"left{i}.wav", seed=i)
    with Engine(out, teststages.pipeline(), executor=executor) as engine:  # a batch queued, then Stave "died"
        added = engine.add_paths([inputs], {})
        engine.store.set_batch_status(added.batch_id, BatchStatus.RUNNING)
    controller = make_controller(out, open_=False)
    with qtbot.waitSignal(controller.resume_offered, timeout=10000) as offer:
        controller.open()
    batch_id, counts = offer.args
    assert batch_id == added.batch_id and counts == {"pending": 2}
    assert controller.queue.rowCount() == 2 and controller.queue.batch_id == batch_id  # its history is shown
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as finished:
        controller.resume(batch_id)
    assert finished.args[0].batch_id == batch_id and finished.args[0].counts["done"] == 2


def test_discard_marks_what_is_left_cancelled(qtbot, tmp_path, make_controller, executor):
    out = tmp_path / "out"
    wav(tmp_path / "in", "a.wav")
    with Engine(out, teststages.pipeline(), executor=executor) as engine:
        added = engine.add_paths([tmp_path / "in"], {})
    controller = make_controller(out)
    with qtbot.waitSignal(controller.checkpoints_changed, timeout=10000):
        controller.discard(added.batch_id)
    qtbot.waitUntil(lambda: states(controller) == ["cancelled"], timeout=5000)
    assert controller.engine.store.get_batch(added.batch_id).status is BatchStatus.CANCELLED
    assert controller.state().retryable == 1


def test_a_failed_file_shows_its_reason_and_retry_runs_it_again(qtbot, tmp_path, make_controller):
    inputs = tmp_path / "in"
    wav(inputs, "good.wav")
    wav(inputs, "bad_take.wav", seed=3)
    controller = make_controller()
    scan(qtbot, controller, [inputs])
    with qtbot.waitSignal(controller.batch_finished, timeout=30000):
        controller.start()
    qtbot.waitUntil(lambda: sorted(states(controller)) == ["done", "failed"], timeout=5000)
    q = controller.queue
    bad = next(r for r in range(q.rowCount()) if q.row(r).state is RowState.FAILED)
    assert "not audio" in q.data(q.index(bad, Column.RESULT))
    assert q.row(bad).kind == "input-corrupt" and q.row(bad).attempts == 1
    assert controller.state().retryable == 1
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as again:
        controller.retry_failed()
    assert again.args[0].counts["failed"] == 1
    qtbot.waitUntil(lambda: q.row(bad).attempts == 2 and q.row(bad).state is RowState.FAILED, timeout=5000)


def test_files_added_while_a_batch_runs_are_run_too(qtbot, tmp_path, make_controller):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")
    wav(tmp_path / "first", "one.wav")
    wav(tmp_path / "second", "two.wav", seed=2)
    controller = make_controller(out, workers=1)
    scan(qtbot, controller, [tmp_path / "first"])
    controller.start()
    qtbot.waitUntil(lambda: controller.queue.row(0).stage == "process", timeout=15000)
    scan(qtbot, controller, [tmp_path / "second"])  # joins the running batch
    assert controller.queue.rowCount() == 2
    (out / "tool_mode").write_text("ok")
    controller.cancel_job(controller.queue.row(0).job_id)  # the hung one gives up; the rest goes on
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as finished:
        pass
    counts = finished.args[0].counts
    assert counts["done"] == 1 and counts["cancelled"] == 1 and counts["pending"] == 0
    assert controller.engine.store.jobs(finished.args[0].batch_id, JobStatus.DONE)[0].input_path.endswith("two.wav")


def test_health_and_breakers_reach_the_panels(qtbot, tmp_path, make_controller, recipe):
    from dataclasses import replace

    broken = replace(recipe, health=lambda out_dir: health_report(missing=("ffmpeg",)))
    controller = make_controller(recipe_=broken, open_=False)
    with qtbot.waitSignal(controller.health_checked, timeout=10000) as checked:
        controller.open()
    assert [r.name for r in checked.args[0].blockers] == ["ffmpeg"]
    wav(tmp_path / "in", "x.wav")
    scan(qtbot, controller, [tmp_path / "in"])
    controller.engine.breakers.get("tool")
    with qtbot.waitSignal(controller.breakers_changed, timeout=5000) as snapshots:
        controller.force_open_breaker("tool")
    assert [(s.name, s.state.value) for s in snapshots.args[0]] == [("tool", "open")]


def test_shutdown_during_a_run_pauses_it_for_later(qtbot, tmp_path, make_controller, executor):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")
    wav(tmp_path / "in", "long.wav")
    controller = make_controller(out, workers=1)
    scan(qtbot, controller, [tmp_path / "in"])
    controller.start()
    qtbot.waitUntil(lambda: controller.queue.row(0).stage == "process", timeout=15000)
    assert controller.shutdown(20000)
    assert all(pool.activeThreadCount() == 0 for pool in controller.thread_pools())
    with Engine(out, teststages.pipeline(), executor=executor, create=False) as engine:
        batch = engine.store.latest_unfinished_batch()
        assert batch is not None and batch.status is BatchStatus.PAUSED
        assert engine.store.counts(batch.id)["pending"] == 1


def test_a_preflight_blocker_stops_the_start_until_start_anyway(qtbot, tmp_path, make_controller, recipe, executor):
    from dataclasses import replace

    from core.engine.preflight import PreflightReport, Problem
    from core.pipeline.config import PipelineConfig
    from core.resilience.errors import ErrorKind

    out = tmp_path / "out"
    wav(tmp_path / "in", "a.wav")
    with Engine(out, teststages.pipeline(), executor=executor) as engine:
        added = engine.add_paths([tmp_path / "in"], {})
    checked: list = []

    def full_disk(paths, out_dir, config, workers):
        checked.append(paths)
        return PreflightReport(blockers=[Problem(None, ErrorKind.DISK_FULL, "the batch needs 5 GB, 1 GB is free",
                                                 "Free space on the output drive", area="disk")],
                               files_total=len(paths), out_dir=out_dir)

    controller = make_controller(out, recipe_=replace(recipe, config=lambda s: PipelineConfig(), preflight=full_disk))
    with qtbot.waitSignal(controller.preflight_blocked, timeout=10000) as blocked:
        controller.start()
    assert "1 GB is free" in blocked.args[0] and "Free space on the output drive" in blocked.args[0]
    assert checked == [[str(tmp_path / "in" / "a.wav")]]
    assert not controller.state().running and controller.state().can_start
    with qtbot.waitSignal(controller.batch_finished, timeout=30000) as finished:
        controller.start(check=False)
    assert finished.args[0].batch_id == added.batch_id and finished.args[0].counts["done"] == 1
    assert len(checked) == 1


def test_switching_the_output_folder_closes_one_engine_and_opens_the_other(qtbot, tmp_path, make_controller):
    wav(tmp_path / "in", "a.wav")
    controller = make_controller(tmp_path / "first")
    scan(qtbot, controller, [tmp_path / "in"])
    first = controller.engine
    with qtbot.waitSignal(controller.output_dir_changed, timeout=5000):
        assert controller.set_output_dir(str(tmp_path / "second"))
    assert controller.queue.rowCount() == 0
    qtbot.waitUntil(lambda: not controller.busy, timeout=10000)
    assert controller.engine is None  # opened on first use: the new folder holds no store yet
    assert controller.settings_store.load().settings.recent_output_dirs[0] == str(tmp_path / "second")
    scan(qtbot, controller, [tmp_path / "in"])
    assert controller.engine is not first and controller.engine.out_dir == str(tmp_path / "second")
    with qtbot.waitSignal(controller.resume_offered, timeout=10000) as offer:  # back: its queued batch is offered
        controller.set_output_dir(str(tmp_path / "first"))
    assert offer.args[1] == {"pending": 1} and controller.queue.rowCount() == 1
