"""The engine-to-Qt bridge delivers events on the GUI thread, coalesced."""

import threading

from PySide6.QtCore import QThread

from app.bridge import EngineBridge
from core.engine import events as ev


def test_events_from_threads_arrive_on_gui_thread_coalesced(qtbot):
    bridge = EngineBridge(rate_hz=20)
    received: list = []
    threads_seen: set = set()

    def on_events(batch):
        threads_seen.add(QThread.currentThread())
        received.extend(batch)

    bridge.events_arrived.connect(on_events)

    def produce(worker: int):
        for i in range(500):
            bridge.post(ev.Progress(batch_id=1, done=i, failed=0, total=500, audio_s_done=0.0, eta_s=None))
        bridge.post(ev.JobFinished(job_id=worker, path=f"f{worker}.wav", elapsed_s=1.0))

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with qtbot.waitSignal(bridge.events_arrived, timeout=2000):
        pass
    bridge.stop()

    finished = [e for e in received if isinstance(e, ev.JobFinished)]
    progress = [e for e in received if isinstance(e, ev.Progress)]
    assert sorted(e.job_id for e in finished) == [0, 1, 2, 3]  # nothing ordered is dropped
    assert 1 <= len(progress) <= bridge.flushes  # at most one progress per flush
    assert progress[-1].done == 499
    assert threads_seen == {bridge.thread()}


def test_latest_progress_signal(qtbot):
    bridge = EngineBridge(rate_hz=50)
    for i in range(10):
        bridge.post(ev.Progress(batch_id=1, done=i, failed=0, total=10, audio_s_done=0.0, eta_s=None))
    with qtbot.waitSignal(bridge.progress_changed, timeout=2000) as blocker:
        pass
    assert blocker.args[0].done == 9
    bridge.stop()
