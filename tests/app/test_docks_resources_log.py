"""ResourcesDock samples this process tree; LogDock shows records from any thread, filtered."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QUrl

from app.docks import LogDock, ResourcesDock
from app.docks.log_dock import MAX_RECORDS

# --- resources -------------------------------------------------------------


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def test_resources_empty_state_start_stop(qtbot):
    dock = ResourcesDock()
    qtbot.addWidget(dock)
    assert dock.objectName() == "ResourcesDock"
    assert dock.default_area == Qt.DockWidgetArea.BottomDockWidgetArea
    assert dock.is_empty and dock.empty_text
    with qtbot.waitSignal(dock.sampled, timeout=1000):
        dock.start()  # samples at once, then every second
    assert dock.running and dock.timer.interval() == 1000 and not dock.is_empty
    assert dock.last is not None and dock.last.rss_bytes > 10_000_000  # this Python process alone
    dock.stop()
    assert not dock.running and not dock.timer.isActive()


def test_resources_count_children_and_drop_dead_ones(qtbot, sleeper):
    dock = ResourcesDock()
    qtbot.addWidget(dock)
    first = dock.sample()
    assert first.workers >= 1
    assert sleeper.pid in dock.tracked_pids()
    handle = dock._children[sleeper.pid]
    dock.sample()
    assert dock._children[sleeper.pid] is handle  # one psutil handle per pid, reused (CPU % needs it)
    assert dock.workers_label.text() == f"Workers {dock.last.workers}"
    x, y = dock.cpu_curve.getData()
    assert len(x) == len(y) == 2 and x[-1] == 0
    mx, my = dock.mem_curve.getData()
    assert my[-1] == pytest.approx(dock.last.rss_bytes / 1e6)

    sleeper.kill()
    sleeper.wait(10)
    after = dock.sample()
    assert sleeper.pid not in dock.tracked_pids()  # the dead child's handle is gone
    assert after.workers == first.workers - 1

    for _ in range(130):  # the ring buffer keeps two minutes
        dock.sample()
    assert len(dock.cpu_curve.getData()[0]) == 120
    dock.resize(640, 220)
    dock.show()
    qtbot.waitExposed(dock)
    assert dock.grab().save("/tmp/dock_resources.png")


# --- log ---------------------------------------------------------------------

LOGGER = "stave.test.logdock"


@pytest.fixture
def log_dock(qtbot):
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    dock = LogDock(open_url=lambda url: None)
    qtbot.addWidget(dock)
    handler = dock.attach_logging(LOGGER)
    assert handler in logger.handlers
    yield dock
    dock.detach_logging()
    assert handler not in logger.handlers


def test_log_empty_state(qtbot):
    dock = LogDock()
    qtbot.addWidget(dock)
    assert dock.objectName() == "LogDock"
    assert dock.default_area == Qt.DockWidgetArea.BottomDockWidgetArea
    assert dock.is_empty and dock.empty_text == "No log messages yet"


def test_records_from_another_thread_arrive(log_dock, qtbot):
    logger = logging.getLogger(LOGGER)

    def work():
        for i in range(50):
            logger.info("from thread %d", i)

    t = threading.Thread(target=work, name="worker-thread")
    t.start()
    t.join()
    qtbot.waitUntil(lambda: len(log_dock.visible_lines()) == 50, timeout=2000)  # the drain timer did it
    assert log_dock.visible_lines()[-1].endswith("from thread 49")
    assert all(e.thread == "worker-thread" for e in log_dock.entries)
    assert not log_dock.is_empty


def test_level_job_and_text_filters(log_dock, qtbot):
    logger = logging.getLogger(LOGGER)
    logger.debug("debug noise")
    logger.info("started batch")
    logger.warning("stage retrying", extra={"job_id": 7})
    logger.error("stage failed", extra={"job_id": 8})
    logger.info("analyze done", extra={"job_id": 7})
    log_dock.flush()
    lines = log_dock.visible_lines()
    assert len(lines) == 4 and not any("debug noise" in line for line in lines)  # INFO by default

    log_dock.set_level("DEBUG")
    assert len(log_dock.visible_lines()) == 5
    log_dock.set_level("WARNING")
    assert [line.split("  ")[-1] for line in log_dock.visible_lines()] == ["stage retrying", "stage failed"]

    log_dock.set_level("INFO")
    log_dock.set_job_filter(7)
    lines = log_dock.visible_lines()
    assert len(lines) == 2 and all("[job 7]" in line for line in lines)
    assert not log_dock.job_button.isHidden()
    logger.info("more for job 7", extra={"job_id": 7})
    logger.info("other job", extra={"job_id": 9})
    log_dock.flush()
    assert log_dock.visible_lines()[-1].endswith("more for job 7")  # new records are filtered too
    qtbot.mouseClick(log_dock.job_button, Qt.MouseButton.LeftButton)  # clears the job filter
    assert len(log_dock.visible_lines()) == 6

    log_dock.text_filter.setText("FAILED")
    assert [line.split("  ")[-1] for line in log_dock.visible_lines()] == ["stage failed"]
    log_dock.text_filter.setText("no such words")
    assert log_dock.is_empty and log_dock.empty_text == "No messages match the filters"
    log_dock.text_filter.clear()

    log_dock.resize(720, 240)
    log_dock.show()
    qtbot.waitExposed(log_dock)
    assert log_dock.grab().save("/tmp/dock_log.png")


def test_buffer_is_bounded(log_dock):
    logger = logging.getLogger(LOGGER)
    for i in range(MAX_RECORDS + 300):
        logger.info("record %d", i)
    log_dock.flush()
    assert len(log_dock.entries) == MAX_RECORDS
    assert log_dock.entries[0].message == "record 300"
    assert len(log_dock.visible_lines()) == MAX_RECORDS


def test_open_log_file_button(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("STAVE_LOG_DIR", str(tmp_path))
    opened: list[QUrl] = []
    dock = LogDock(open_url=opened.append)
    qtbot.addWidget(dock)
    qtbot.mouseClick(dock.open_button, Qt.MouseButton.LeftButton)
    assert Path(opened[-1].toLocalFile()) == tmp_path  # no log file yet: its folder
    (tmp_path / "stave.log").write_text("hello\n")
    dock.open_log_file()
    assert Path(opened[-1].toLocalFile()) == tmp_path / "stave.log"
