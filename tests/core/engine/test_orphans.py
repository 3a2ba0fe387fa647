"""A worker killed while Demucs runs (timeout, pause) takes Demucs with it: no orphans."""

import os
import sys
import time

import numpy as np
import psutil
import pytest
import soundfile as sf

from core.engine.executor import ProcessExecutor
from core.resilience.cancel import CancelToken
from core.resilience.errors import Cancelled, StageTimeout
from tests.core.engine import orphan_stage


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_killed_worker_takes_demucs_with_it(tmp_path, monkeypatch, how):
    audio = tmp_path / "mix.wav"
    sf.write(audio, np.zeros(22050, dtype=np.float32), 22050)
    pidfile = tmp_path / "pids"
    monkeypatch.setenv("FAKE_DEMUCS_MODE", "hang")
    monkeypatch.setenv("FAKE_DEMUCS_PIDFILE", str(pidfile))
    ex = ProcessExecutor(max_workers=1, grace_s=2.0, env={"FAKE_DEMUCS_MODE": "hang",
                                                          "FAKE_DEMUCS_PIDFILE": str(pidfile)})
    try:
        token = CancelToken()
        if how == "cancel":
            import threading

            def cancel_when_started():
                deadline = time.monotonic() + 30
                # the double's leader and the worker it forks (as Demucs' own workers would be)
                while (not pidfile.exists() or len(pidfile.read_text().split()) < 2) and time.monotonic() < deadline:
                    time.sleep(0.05)
                token.cancel("paused")

            threading.Thread(target=cancel_when_started, daemon=True).start()
            expected = Cancelled
        else:
            expected = StageTimeout
        with pytest.raises(expected):
            ex.run(orphan_stage.run_hanging_demucs, (str(audio), str(tmp_path / "out")),
                   timeout_s=4.0 if how == "timeout" else 60, cancel=token)
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 2, "the test double and its forked worker should both have started"
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "Demucs outlived the worker that started it"
    finally:
        ex.shutdown()
