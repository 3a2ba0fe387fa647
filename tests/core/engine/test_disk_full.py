"""A full output drive pauses the batch with a clear message, the store stays intact, and resume finishes.

Two levels: the engine with a stage that raises ENOSPC (runs anywhere), and real small file systems
(a tmpfs mounted as root; skipped where mounting is not permitted) under the real CLI and engine.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from core.engine import events as ev
from core.engine import supervisors_for
from core.engine.batch import Engine, EngineOptions
from core.engine.store_rows import BatchStatus, JobStatus
from core.resilience.errors import POLICIES, ErrorKind
from tests.core.engine.crash_helpers import (
    SONGS, StaveProcess, cli_env, disk_pipeline, free_bytes, leave_free, quick_check, run_stave, small_wavs,
    song_folders, tmp_leftovers, tmpfs, write_songs,
)

FREE_SPACE_HINT = POLICIES[ErrorKind.DISK_FULL].suggestion  # "Free space on the output drive, then resume ..."


def _disk_config(tmp_path, folder=None) -> dict:
    folder = folder or tmp_path
    return {"full_flag": str(tmp_path / "disk-is-full"), "hog_flag": str(tmp_path / "hog"),
            "ballast": str(folder / "ballast.bin")}


# --- the engine, a stage that finds the disk full ----------------------------------------------
def test_enospc_in_a_stage_pauses_the_batch_keeps_the_store_and_resume_finishes(tmp_path, clock):
    small_wavs(tmp_path / "in", 3)
    out = tmp_path / "out"
    config = _disk_config(tmp_path)
    (tmp_path / "disk-is-full").touch()
    seen: list[ev.Event] = []
    bus = ev.EventBus()
    bus.subscribe(seen.append)
    with Engine(out, disk_pipeline(), EngineOptions(workers=1), bus=bus, clock=clock) as engine:
        added = engine.add_paths([tmp_path / "in"], config)
        summary = engine.run(added.batch_id, workers=1)

        assert summary.status is BatchStatus.PAUSED
        assert "no space left" in summary.pause_reason.lower() and FREE_SPACE_HINT in summary.pause_reason
        assert summary.failed == []
        assert summary.counts["pending"] == 3 and summary.counts["done"] == 0
        # the job that found the disk full, and the one in flight beside it (one worker, one job queued
        # behind it), both wrote into the full disk: each is back in the queue, not failed
        failed = [e for e in seen if isinstance(e, ev.JobFailed)]
        assert 1 <= len(failed) <= supervisors_for(1)
        assert all(f.kind == "disk-full" and f.stage == "write" and f.suggestion == FREE_SPACE_HINT for f in failed)
        [paused] = [e for e in seen if isinstance(e, ev.BatchPaused)]
        assert paused.reason == summary.pause_reason
        assert [e.status for e in seen if isinstance(e, ev.BatchFinished)] == ["paused"]

        batch = engine.store.get_batch(added.batch_id)
        assert batch.status is BatchStatus.PAUSED and FREE_SPACE_HINT in batch.notes
        for f in failed:
            job = engine.store.job(f.job_id)
            assert job.status is JobStatus.PENDING and job.error_kind is None  # back in the queue, not failed
            write_row = engine.store.stage_row(job.id, "write")
            assert write_row.status.value == "failed" and write_row.error_kind.value == "disk-full"
            assert engine.store.stage_row(job.id, "ingest").status.value == "done"
            assert [(a.stage, a.outcome.value) for a in engine.store.attempt_log(job.id)] == [
                ("ingest", "done"), ("write", "failed")]
        hit = {f.job_id for f in failed}
        for job in engine.store.jobs(added.batch_id):
            if job.id not in hit:  # the batch stopped at the first full disk: the job in flight beside it may
                # have finished its ingest (kept: resume does not redo it), nothing got further
                assert [(a.stage, a.outcome.value) for a in engine.store.attempt_log(job.id)] in (
                    [], [("ingest", "done")])
    assert quick_check(out / ".stave" / "state.db") == ["ok"]
    assert not any((out / name / "summary.json").exists() for name in song_folders(out))

    # space is freed; resuming (a new engine on the folder alone) finishes the batch
    (tmp_path / "disk-is-full").unlink()
    with Engine(out, disk_pipeline(), EngineOptions(workers=1), clock=clock, create=False) as engine:
        batch = engine.store.latest_unfinished_batch()
        assert batch is not None and batch.id == added.batch_id
        summary = engine.run(batch.id, workers=1)
        assert summary.status is BatchStatus.FINISHED and summary.counts["done"] == 3
        for job_id in hit:
            assert [(a.stage, a.outcome.value) for a in engine.store.attempt_log(job_id)] == [
                ("ingest", "done"), ("write", "failed"), ("write", "done"), ("export", "done")]  # ingest not redone
        for job in engine.store.jobs(batch.id):  # no job's ingest ran twice (one beside the hit may have run it)
            assert [a.stage for a in engine.store.attempt_log(job.id)].count("ingest") == 1
    folders = song_folders(out)
    assert len(folders) == 3 and all(files == ["summary.json"] for files in folders.values())
    assert tmp_leftovers(out) == []


# --- a real small file system under the CLI -------------------------------------------------------
def test_preflight_refuses_to_start_on_a_nearly_full_drive(tmp_path):
    inputs = tmp_path / "in"
    write_songs(inputs, SONGS[:2])
    env = cli_env(tmp_path / "home")
    with tmpfs(tmp_path / "vol", "4m") as vol:
        leave_free(vol, 320 * 1024)
        done = run_stave(["process", inputs, "--out", vol / "out", "--workers", "1"], env, timeout=120)
        assert done.returncode == 1, done.stderr
        assert "[disk-full]" in done.stderr and "not starting" in done.stderr
        assert not (vol / "out" / ".stave" / "state.db").exists()  # no batch was created


def test_full_drive_pauses_the_cli_batch_and_resume_finishes_once_space_is_freed(tmp_path):
    inputs = tmp_path / "in"
    write_songs(inputs, SONGS[:2])
    env = cli_env(tmp_path / "home")
    with tmpfs(tmp_path / "vol", "4m") as vol:
        out = vol / "out"
        # room for the store, not for one decoded song (a 4.5 s song is ~400 KB as float32 at 22050 Hz)
        ballast = leave_free(vol, 320 * 1024)
        run = StaveProcess(["process", inputs, "--out", out, "--workers", "1", "--progress", "json",
                            "--no-preflight"], env, tmp_path / "process.stderr")
        code = run.wait(timeout=180)
        summary = run.events[-1]
        assert summary["event"] == "Summary", run.events[-3:]
        kinds = [e["kind"] for e in run.events if e["event"] == "JobFailed"]
        assert kinds and set(kinds) == {"disk-full"}, run.events
        assert summary["status"] == "paused" and summary["failed"] == []
        assert FREE_SPACE_HINT in summary["pause_reason"]
        assert code == 1  # a paused batch is not a success
        assert "Traceback" not in run.stderr()

        status = run_stave(["status", out, "--json"], env)
        assert status.returncode == 0, status.stderr
        [batch] = json.loads(status.stdout)["batches"]
        assert batch["status"] == "paused" and batch["counts"]["pending"] == 2
        assert quick_check(out / ".stave" / "state.db") == ["ok"]

        ballast.unlink()  # free space
        assert free_bytes(vol) > 3 * 1024 * 1024
        resumed = run_stave(["resume", out, "--workers", "1", "--progress", "json"], env, timeout=180)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        last = json.loads(resumed.stdout.splitlines()[-1])
        assert last["status"] == "finished" and last["counts"]["done"] == 2
        folders = song_folders(out)
        assert len(folders) == 2 and all("summary.json" in files for files in folders.values())
        assert tmp_leftovers(out) == []


def _join_or_detect_hang(thread: threading.Thread, timeout: float, settle: float = 3.0) -> bool:
    """Join ``thread`` (running Engine.run); False at the timeout, or as soon as no supervisor thread
    has been alive for ``settle`` seconds while Engine.run still waits (nothing can finish the run then)."""
    deadline = time.monotonic() + timeout
    idle_since = None
    while thread.is_alive() and time.monotonic() < deadline:
        thread.join(0.2)
        supervising = any(t.name.startswith("stave-supervisor") for t in threading.enumerate())
        idle_since = None if supervising else (idle_since or time.monotonic())
        if idle_since is not None and thread.is_alive() and time.monotonic() - idle_since > settle:
            return False
    return not thread.is_alive()


# --- a real small file system under the store itself ------------------------------------------------
def test_a_store_that_cannot_be_written_stops_the_run_and_resume_finishes(tmp_path, clock):
    small_wavs(tmp_path / "in", 2)
    with tmpfs(tmp_path / "vol", "8m") as vol:
        out = vol / "out"
        config = _disk_config(tmp_path, vol)
        (tmp_path / "hog").touch()  # the stage fills the disk after writing its own output
        result: dict = {}
        engine = Engine(out, disk_pipeline(), EngineOptions(workers=1), clock=clock)
        try:
            added = engine.add_paths([tmp_path / "in"], config)
            worker = threading.Thread(target=lambda: result.update(summary=engine.run(added.batch_id, workers=1)),
                                      daemon=True)
            worker.start()
            returned = _join_or_detect_hang(worker, timeout=30.0)
            integrity = quick_check(out / ".stave" / "state.db")
        finally:
            (tmp_path / "hog").unlink()
            Path(config["ballast"]).unlink(missing_ok=True)  # space is freed
            run = engine.current_run
            if run is not None and not run.finished.is_set():
                run.finished.set()  # release a hung Engine.run so the test can clean up
            engine.close()
        assert returned, "Engine.run never returned after the store hit a full disk"
        assert integrity == ["ok"]
        summary = result["summary"]
        assert summary.status is not BatchStatus.FINISHED and summary.counts["done"] == 0
        assert "full" in summary.pause_reason.lower() or "space" in summary.pause_reason.lower()

        with Engine(out, disk_pipeline(), EngineOptions(workers=1), clock=clock, create=False) as engine:
            batch = engine.store.latest_unfinished_batch()
            assert batch is not None
            summary = engine.run(batch.id, workers=1)
            assert summary.status is BatchStatus.FINISHED and summary.counts["done"] == 2
