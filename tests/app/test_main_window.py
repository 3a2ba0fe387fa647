"""The main window: drops queue files and folders, actions follow the state, banners, layout, screenshots."""

from __future__ import annotations

from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage

from app.main_window import MainWindow, window_settings
from app.queue_model import Column
from core.engine.batch import Engine
from core.engine.store_rows import BatchStatus
from core.logs import remove_logging
from tests.app.conftest import health_report, wav, write_settings
from tests.core.engine import teststages


def make_window(qtbot, controller) -> MainWindow:
    window = MainWindow(controller)  # its layout goes to window.ini under STAVE_CONFIG_DIR (a tmp dir)
    qtbot.addWidget(window)
    window.show()
    return window


def drag_enter(mime: QMimeData) -> QDragEnterEvent:
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    try:
        return QDragEnterEvent(QPointF(50, 50), *args)  # PySide6 >= 6.12 (the QPoint form is deprecated)
    except TypeError:
        return QDragEnterEvent(QPoint(50, 50), *args)


def mime_of(paths) -> QMimeData:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    return mime


def test_dropping_files_and_a_folder_queues_them(qtbot, tmp_path, make_controller):
    loose = wav(tmp_path / "loose", "single.wav")
    folder = tmp_path / "album"
    for i in range(2):
        wav(folder, f"track{i}.wav", seed=i + 1)
    controller = make_controller()
    window = make_window(qtbot, controller)
    mime = mime_of([loose, folder])
    enter = drag_enter(mime)
    window.dragEnterEvent(enter)
    assert enter.isAccepted()
    assert not window.actions_by_name["start"].isEnabled()
    drop = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(controller.paths_scanned, timeout=10000):
        window.dropEvent(drop)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 3, timeout=5000)
    names = sorted(window.proxy.data(window.proxy.index(r, Column.FILE)) for r in range(3))
    assert names == ["single.wav", "track0.wav", "track1.wav"]
    assert window.actions_by_name["start"].isEnabled()
    assert not window.actions_by_name["pause"].isEnabled()
    assert "3 queued" in window.counts_label.text()


def test_a_drop_without_local_files_is_refused(qtbot, make_controller):
    window = make_window(qtbot, make_controller())
    mime = QMimeData()
    mime.setText("just text")
    enter = drag_enter(mime)
    window.dragEnterEvent(enter)
    assert not enter.isAccepted()


def test_running_batch_window_grab_and_failed_job_details(qtbot, tmp_path, make_controller):
    out = tmp_path / "out"
    out.mkdir()
    (out / "tool_mode").write_text("hang")
    # The corrupt file fails at ingest, and its ingest is queued with the first ones, before any "process" of
    # the others can hang both workers (which job a supervisor hands over first is a race: with the failure in
    # "process", a hung one could take the worker it needed). The others ingest slowly, widening that margin.
    (out / "ingest_delay").write_text("1.0")
    inputs = tmp_path / "in"
    for i in range(6):
        wav(inputs, f"{'corrupt_' if i == 4 else ''}session take {i}.wav", seed=i)
    controller = make_controller(out)
    window = make_window(qtbot, controller)
    window.resize(1280, 800)
    with qtbot.waitSignal(controller.paths_scanned, timeout=10000):
        controller.add_paths([str(inputs)])
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)
    controller.start()
    qtbot.waitUntil(lambda: window.actions_by_name["pause"].isEnabled(), timeout=10000)
    q = controller.queue
    qtbot.waitUntil(lambda: any(q.row(r).state.value == "failed" for r in range(6)), timeout=15000)
    # both workers hang in "process" (a third job, one more than the workers, waits for one of them)
    qtbot.waitUntil(lambda: sum(q.row(r).state.value == "running" and q.row(r).stage == "process"
                                for r in range(6)) >= 2, timeout=15000)
    assert window.failed_label.text() == "1 failed"
    bad = next(r for r in range(6) if q.row(r).state.value == "failed")
    window.view.selectRow(window.proxy.mapFromSource(q.index(bad, 0)).row())
    text = window.details.toPlainText()
    assert "input-corrupt in ingest" in text and "not audio" in text and "process" in text
    qtbot.wait(100)  # let the layouts settle before the picture
    window.grab().save("/tmp/stave_window.png", "PNG")
    assert QImage("/tmp/stave_window.png").width() == 1280
    with qtbot.waitSignal(controller.batch_finished, timeout=20000) as finished:
        controller.cancel()
    assert finished.args[0].status is BatchStatus.CANCELLED
    assert window.actions_by_name["retry"].isEnabled() and not window.actions_by_name["cancel"].isEnabled()


def test_resume_banner_appears_for_an_interrupted_batch(qtbot, tmp_path, make_controller, executor):
    out = tmp_path / "out"
    wav(tmp_path / "in", "a.wav")
    with Engine(out, teststages.pipeline(), executor=executor) as engine:
        added = engine.add_paths([tmp_path / "in"], {})
    controller = make_controller(out, open_=False)
    window = make_window(qtbot, controller)
    with qtbot.waitSignal(controller.resume_offered, timeout=10000):
        controller.open()
    assert window.banner.isVisible()
    assert f"#{added.batch_id}" in window.banner.label.text() and "1 waiting" in window.banner.label.text()
    assert [b.text() for b in window.banner.buttons] == ["Resume", "Discard"]
    with qtbot.waitSignal(controller.batch_finished, timeout=20000):
        window.banner.buttons[0].click()
    assert not window.banner.isVisible()


def test_health_badge_shows_a_missing_required_dependency(qtbot, make_controller, recipe):
    from dataclasses import replace

    controller = make_controller(recipe_=replace(recipe, health=lambda d: health_report(missing=("ffmpeg",))),
                                 open_=False)
    window = make_window(qtbot, controller)
    with qtbot.waitSignal(controller.health_checked, timeout=10000):
        controller.open()
    assert window.health_badge.isVisible() and "ffmpeg" in window.health_badge.text()
    assert "apt install ffmpeg" in window.health_badge.toolTip()


def test_geometry_and_dock_layout_are_restored(qtbot, tmp_path, make_controller):
    controller = make_controller()
    window = make_window(qtbot, controller)
    window.resize(760, 700)  # the offscreen screen is 800 x 800: restoreGeometry keeps a window inside it
    if window.docks:
        window.docks["BreakersDock"].hide()
    window.save_layout()
    window.close()
    assert window_settings().value("window/geometry") is not None
    assert window_settings().fileName().startswith(str(tmp_path))
    again = make_window(qtbot, make_controller())
    assert (again.width(), again.height()) == (760, 700)
    if again.docks:
        assert again.docks["BreakersDock"].isHidden()
        assert not again.docks["HealthDock"].isHidden()


def test_screenshot_mode_writes_a_png(qtbot, tmp_path, recipe, monkeypatch):
    from app import main as app_main

    out = tmp_path / "shot-out"
    write_settings(tmp_path / "user" / "config" / "settings.json", out)
    track = wav(tmp_path / "in", "shot.wav")
    png = tmp_path / "shot.png"
    try:
        assert app_main.main(["--screenshot", str(png), str(track)], recipe=recipe) == 0
    finally:
        remove_logging()
    image = QImage(str(png))
    assert png.stat().st_size > 0 and image.width() >= 800 and image.height() >= 500
    with Engine(out, teststages.pipeline(), executor=recipe.executor, create=False) as engine:
        [batch] = engine.store.list_batches()  # the path was queued before the picture was taken
        assert len(engine.store.jobs(batch.id)) == 1


def test_an_unusable_output_folder_is_explained_in_place(qtbot, tmp_path, make_controller):
    out = tmp_path / "out"
    (out / ".stave").mkdir(parents=True)
    (out / ".stave" / "state.db").write_bytes(b"this is not a database" * 100)
    controller = make_controller(out, open_=False)
    window = make_window(qtbot, controller)
    with qtbot.waitSignal(controller.error_occurred, timeout=10000) as error:
        controller.open()
    assert str(out) in error.args[0]
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=5000)
    assert "cannot be used" in window.banner.label.text()
    assert [b.text() for b in window.banner.buttons] == ["Choose another folder…"]
    assert not window.actions_by_name["start"].isEnabled()
    assert (out / ".stave" / "state.db").read_bytes().startswith(b"this is not")  # never replaced


def test_selecting_a_finished_job_feeds_the_inspector_and_the_log_filter(qtbot, tmp_path, make_controller):
    track = wav(tmp_path / "in", "done.wav")
    controller = make_controller()
    window = make_window(qtbot, controller)
    if not window.docks:
        return  # the panels are optional: nothing to feed
    shown, filters = [], []
    window.docks["InspectorDock"].show_job = lambda song_dir, path: shown.append((song_dir, path))
    window.docks["LogDock"].set_job_filter = filters.append
    with qtbot.waitSignal(controller.paths_scanned, timeout=10000) as scanned:
        controller.add_paths([str(track)])
    with qtbot.waitSignal(controller.batch_finished, timeout=30000):
        controller.start()
    qtbot.waitUntil(lambda: controller.queue.row(0).state.value == "done", timeout=5000)
    window.view.selectRow(0)
    assert shown and all(s == shown[-1] for s in shown)
    song_dir, path = shown[-1]
    job = controller.engine.store.job(scanned.args[0].job_ids[0])
    assert path == str(track) and song_dir == str(tmp_path / "out" / job.song_id)
    assert filters and set(filters) == {job.id}  # refreshed rows may re-announce the same selection
    assert "done" in window.details.toPlainText() and "export" in window.details.toPlainText()
