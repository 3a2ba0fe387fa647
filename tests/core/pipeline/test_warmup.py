"""Worker warm-up: once per process, and never two compiles into numba's cache at once."""

from __future__ import annotations

import threading
import time

import pytest

from core.pipeline import warmup


@pytest.fixture
def fake_parts(monkeypatch, tmp_path):
    """Parts that only record being run, a fresh process's memory of them, and a numba cache in tmp_path."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    calls: list[str] = []
    monkeypatch.setattr(warmup, "PARTS", {"analysis": lambda config: calls.append("analysis"),
                                          "pyin": lambda config: calls.append("pyin")})
    monkeypatch.setattr(warmup, "_warmed", set())
    return calls


def test_a_process_warms_each_part_once(fake_parts):
    calls = fake_parts
    warmup.warm({"transcribe": False})
    warmup.warm({"transcribe": False})
    assert calls == ["analysis"]
    warmup.warm({"transcribe": True})  # a transcribing batch needs pYIN too, and only that is new
    assert calls == ["analysis", "pyin"]
    assert warmup.warm({"transcribe": True}) == 0.0


def test_warm_runs_the_real_stages_and_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setattr(warmup, "_warmed", set())
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # so mkdtemp honours TMPDIR
    assert warmup.warm({"transcribe": False}) > 0.0
    assert "analysis" in warmup._warmed and "pyin" not in warmup._warmed
    assert list(tmp_path.iterdir()) == []  # its folder is gone


def test_compiles_wait_for_each_other_until_markers_say_the_cache_is_warm(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    log: list[str] = []

    def compile_(name: str) -> None:
        with warmup.compile_guard(["analysis"]):
            log.append(f"{name} start")
            time.sleep(0.3)
            log.append(f"{name} end")

    threads = [threading.Thread(target=compile_, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    first = log[0].split()[0]
    second = "b" if first == "a" else "a"
    assert log == [f"{first} start", f"{first} end", f"{second} start", f"{second} end"]  # never interleaved

    # the markers are there now: a later warm-up does not wait, even while another holds the lock
    with warmup._exclusive(str(tmp_path / warmup.LOCK_NAME), wait_s=1):
        t0 = time.monotonic()
        with warmup.compile_guard(["analysis"], wait_s=30):
            pass
        assert time.monotonic() - t0 < 5
        # a part without its marker still waits for the lock (here: gives up after wait_s and goes on)
        t0 = time.monotonic()
        with warmup.compile_guard(["pyin"], wait_s=0.5):
            waited = time.monotonic() - t0
        assert waited >= 0.5


def test_no_cache_folder_means_no_lock(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    with warmup.compile_guard(["analysis"], wait_s=0):
        pass  # nothing to lock: numba caches beside its own packages


def test_a_file_system_without_locks_does_not_make_the_warm_up_wait(monkeypatch, tmp_path):
    import errno

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))

    def no_locks(fd):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(warmup, "_lock", no_locks)
    t0 = time.monotonic()
    with warmup.compile_guard(["analysis"], wait_s=30):
        pass
    assert time.monotonic() - t0 < 5  # not the 30 s a held lock would be waited for


def test_the_start_up_warm_only_runs_what_the_cache_already_holds(fake_parts, tmp_path):
    """What a worker does as it starts must never compile into a cold cache nor wait for the compile lock."""
    calls = fake_parts
    lock = tmp_path / warmup.LOCK_NAME
    assert warmup.warm_cached({"transcribe": True}) == 0.0 and calls == []  # a cold cache: left to warm()
    assert not lock.exists()  # it did not even touch the lock
    with open(warmup._marker(str(tmp_path), "analysis"), "w") as f:  # another process compiled analysis
        f.write("1")
    warmup.warm_cached({"transcribe": True})
    assert calls == ["analysis"] and warmup._warmed == {"analysis"} and not lock.exists()
    warmup.warm({"transcribe": True})  # the engine's warm-up task then does only what is left, under the lock
    assert calls == ["analysis", "pyin"]
    warmup.warm_cached({"transcribe": True})
    assert calls == ["analysis", "pyin"]


def test_no_cache_folder_means_no_start_up_warm(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(warmup, "PARTS", {"analysis": lambda config: 1 / 0, "pyin": lambda config: 1 / 0})
    monkeypatch.setattr(warmup, "_warmed", set())
    assert warmup.warm_cached({}) == 0.0
