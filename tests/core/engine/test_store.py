"""The checkpoint store's bookkeeping: batches, jobs, stage attempts, recovery, manifests, durations, breakers.

Opening and migrating are in test_store_open.py; crashes, threads and commit durability in
test_store_durability.py; the ``store`` fixture and ``batch_with_jobs`` in conftest.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from core.engine.store import (
    Artifact, BatchStatus, JobSpec, JobStatus, Outcome, Recovered, SqliteBreakerStore, StageStatus, Store,
    StoreError, artifact_for, manifest_problems, verify_manifest,
)
from core.engine.store_rows import path_from_text, path_to_text
from core.resilience.errors import ErrorKind, info_for
from tests.core.engine.conftest import batch_with_jobs as _batch_with_jobs

STAGES = ("ingest", "preprocess", "separate", "analyze", "transcribe", "segment", "export")


# --- batches and jobs ---------------------------------------------------------------
def test_batches(store, clock):
    first = store.create_batch({"b": 1, "a": [1, 2]}, ["/x", b"/y"], notes="first")
    clock.advance(10)
    second = store.create_batch({}, [])
    assert [b.id for b in store.list_batches()] == [first, second]
    row = store.get_batch(first)
    assert row.config == {"a": [1, 2], "b": 1} and row.inputs == ("/x", "/y") and row.notes == "first"
    assert row.created_at == clock.wall() - 10
    assert store.latest_unfinished_batch().id == second
    store.set_batch_status(second, BatchStatus.FINISHED)
    store.set_batch_status(first, "paused", notes="user paused")
    latest = store.latest_unfinished_batch()
    assert (latest.id, latest.status, latest.notes) == (first, BatchStatus.PAUSED, "user paused")
    store.set_batch_status(first, BatchStatus.CANCELLED)
    assert store.latest_unfinished_batch() is None
    with pytest.raises(KeyError):
        store.get_batch(99)
    with pytest.raises(ValueError):
        store.set_batch_status(first, "exploded")


def test_job_lifecycle(store, clock):
    batch, (a, b, c) = _batch_with_jobs(store)
    assert [j.position for j in store.jobs(batch)] == [0, 1, 2]
    more = store.add_jobs(batch, [JobSpec("/music/late.wav", "late")])
    assert store.job(more[0]).position == 3
    store.mark_job_started(a)
    clock.advance(5)
    store.mark_job_finished(a, degraded_reasons=["separate: HPSS fallback"], audio_duration_s=31.5)
    done = store.job(a)
    assert (done.status, done.degraded, done.degraded_reasons, done.audio_duration_s, done.attempts) == \
        (JobStatus.DONE, True, ("separate: HPSS fallback",), 31.5, 1)
    assert done.finished_at - done.started_at == 5
    store.mark_job_started(b)
    err = info_for(ErrorKind.INPUT_CORRUPT, "no audio frames", suggestion="re-export it")
    store.mark_job_failed(b, err, stage="ingest")
    failed = store.job(b)
    assert failed.error == err and failed.error_stage == "ingest"
    assert store.record_crash(c) == 1 and store.record_crash(c) == 2
    store.mark_job_quarantined(c, info_for(ErrorKind.WORKER_CRASH, "crashed its worker 2 times"))
    store.mark_job_skipped(more[0], "duplicate of /music/0.wav")
    assert store.job(more[0]).error_reason == "duplicate of /music/0.wav" and store.job(more[0]).error is None
    assert store.counts(batch) == {"pending": 0, "running": 0, "done": 1, "failed": 1, "skipped": 1,
                                   "cancelled": 0, "quarantined": 1}
    assert [j.id for j in store.jobs(batch, status=[JobStatus.FAILED, "quarantined"])] == [b, c]
    store.reset_job(b)
    store.reset_job(c)
    assert store.job(b).status is JobStatus.PENDING and store.job(b).error is None
    assert store.job(c).crash_count == 2  # kept unless asked
    store.reset_job(c, clear_crashes=True)
    assert store.job(c).crash_count == 0
    store.update_job_facts(a, content_hash="beef", audio_duration_s=12.0)
    assert (store.job(a).content_hash, store.job(a).audio_duration_s) == ("beef", 12.0)
    with pytest.raises(ValueError, match="unknown field"):
        store.update_job_facts(a, status="done")
    store.mark_job_cancelled(b)
    assert store.job(b).status is JobStatus.CANCELLED
    with pytest.raises(KeyError):
        store.mark_job_started(12345)


def test_jobs_of_a_missing_batch_are_refused(store):
    with pytest.raises(StoreError, match="FOREIGN KEY") as info:
        store.add_jobs(42, [JobSpec("/a.wav", "a")])
    assert info.value.kind is ErrorKind.BUG


def test_non_utf8_and_odd_paths_round_trip(tmp_path):
    names = [os.fsdecode(b"/music/\xff\xfe caf\xe9.wav"), "/music/café ♪.flac", "esc:looks-escaped.wav",
             "/music/new\nline.wav"]
    with Store.open(tmp_path) as s:
        batch = s.create_batch({}, [names[0]])
        s.add_jobs(batch, [JobSpec(n, f"s{i}") for i, n in enumerate(names)])
    with Store.open(tmp_path, create=False) as s:
        assert [j.input_path for j in s.jobs(batch)] == names
        assert os.fsencode(s.jobs(batch)[0].input_path) == b"/music/\xff\xfe caf\xe9.wav"
        assert s.get_batch(batch).inputs == (names[0],)
    assert path_to_text("/plain/a.wav") == "/plain/a.wav"  # readable in the sqlite shell
    assert all(path_from_text(path_to_text(n)) == n for n in names)


def test_adding_ten_thousand_jobs_is_one_quick_transaction(store):
    batch = store.create_batch({}, [])
    specs = [JobSpec(f"/music/folder {i // 100}/track {i:05d}.wav", f"track-{i:05d}-0a1b2c3d", size_bytes=i,
                     mtime=1.7e9 + i) for i in range(10_000)]
    t0 = time.perf_counter()
    ids = store.add_jobs(batch, specs)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = store.jobs(batch)
    listed = time.perf_counter() - t0
    print(f"\nadd_jobs(10,000): {elapsed * 1000:.0f} ms; jobs(): {listed * 1000:.0f} ms")
    assert len(ids) == len(set(ids)) == 10_000 and [r.id for r in rows] == ids
    assert rows[-1].input_path == "/music/folder 99/track 09999.wav" and rows[-1].position == 9999


def test_add_jobs_in_uneven_chunks_keeps_every_field_and_the_order(store, clock):
    # add_jobs inserts 100 rows per statement: 250 then 1 then 0 then 100 cross every chunk boundary
    batch = store.create_batch({}, [])
    sizes, expected, ids = (250, 1, 0, 100), [], []
    for n in sizes:
        specs = [JobSpec(f"/m/{len(expected) + i}.wav", f"s{len(expected) + i}", content_hash=f"h{i}",
                         size_bytes=i, mtime=1.5e9 + i / 4, audio_duration_s=(i / 2 if i % 3 else None))
                 for i in range(n)]
        ids += store.add_jobs(batch, iter(specs))  # any iterable, read once
        expected += specs
    rows = store.jobs(batch)
    assert [r.id for r in rows] == ids and [r.position for r in rows] == list(range(len(expected)))
    got = [(r.input_path, r.song_id, r.content_hash, r.size_bytes, r.mtime, r.audio_duration_s) for r in rows]
    assert got == [(s.input_path, s.song_id, s.content_hash, s.size_bytes, s.mtime, s.audio_duration_s)
                   for s in expected]
    assert {r.created_at for r in rows} == {clock.wall()} and {r.status for r in rows} == {JobStatus.PENDING}


# --- stages --------------------------------------------------------------------------
def test_stage_attempts_are_logged_and_finished_in_one_row(store, clock, tmp_path):
    batch, (job, _, _) = _batch_with_jobs(store)
    assert store.stage_row(job, "ingest") is None
    first = store.begin_stage_attempt(job, "ingest", pid=4321)
    row = store.stage_row(job, "ingest")
    assert (row.status, row.attempts) == (StageStatus.RUNNING, 1)
    clock.advance(2)
    store.fail_stage(job, "ingest", info_for(ErrorKind.TIMEOUT, "took more than 60 s"), elapsed_s=60.0,
                     attempt_id=first)
    row = store.stage_row(job, "ingest")
    assert (row.status, row.error_kind, row.error_reason) == \
        (StageStatus.FAILED, ErrorKind.TIMEOUT, "took more than 60 s")
    second = store.begin_stage_attempt(job, "ingest")
    assert store.stage_row(job, "ingest").attempts == 2
    manifest = [Artifact("song0/ingest/audio.npy", "a" * 64, 1234)]
    store.finish_stage(job, "ingest", manifest=manifest, stage_version="3", fingerprint="cfg1", elapsed_s=1.5)
    row = store.stage_row(job, "ingest")
    assert (row.status, row.manifest, row.stage_version, row.config_fingerprint, row.elapsed_s, row.error_kind) == \
        (StageStatus.DONE, tuple(manifest), "3", "cfg1", 1.5, None)
    log = store.attempt_log(job, "ingest")
    assert [(a.id, a.attempt, a.outcome, a.error_kind, a.worker_pid) for a in log] == [
        (first, 1, Outcome.FAILED, ErrorKind.TIMEOUT, 4321), (second, 2, Outcome.DONE, None, None)]
    assert log[0].finished_at - log[0].started_at == 2
    store.begin_stage_attempt(job, "separate", attempt=1)
    store.finish_stage(job, "separate", manifest=[], stage_version="1", fingerprint="f", degraded=True,
                       reason="demucs breaker open: HPSS used")
    row = store.stage_row(job, "separate")
    assert row.status is StageStatus.DEGRADED and row.degraded and row.status.completed
    assert store.attempt_log(job, "separate")[0].outcome is Outcome.DEGRADED
    store.begin_stage_attempt(job, "analyze")
    store.fail_stage(job, "analyze", info_for(ErrorKind.CANCELLED, "batch cancelled"))
    assert store.stage_row(job, "analyze").status is StageStatus.PENDING  # cancelled is not failed
    assert store.attempt_log(job, "analyze")[0].outcome is Outcome.CANCELLED
    store.skip_stage(job, "transcribe", "transcription is switched off")
    assert [r.stage for r in store.stages(job)] == ["ingest", "separate", "analyze", "transcribe"]
    assert len(store.batch_stages(batch)) == 4


def test_reset_stages_from_forgets_that_stage_and_later_ones(store):
    batch, (job, other, _) = _batch_with_jobs(store)
    for j in (job, other):
        for stage in ("ingest", "preprocess", "analyze"):
            store.begin_stage_attempt(j, stage)
            store.finish_stage(j, stage, manifest=[Artifact(f"{j}/{stage}.npy", "0" * 64, 1)],
                               stage_version="1", fingerprint="f")
        store.mark_job_finished(j)
    assert store.reset_stages_from([job, other], "preprocess", stage_order=STAGES) == 4
    for j in (job, other):
        assert [(r.stage, r.status, len(r.manifest), r.attempts) for r in store.stages(j)] == [
            ("ingest", StageStatus.DONE, 1, 1), ("preprocess", StageStatus.PENDING, 0, 0),
            ("analyze", StageStatus.PENDING, 0, 0)]
        assert store.job(j).status is JobStatus.PENDING
    assert store.reset_stages_from(job, "ingest", stage_order=STAGES) == 3  # from the first: everything
    assert {r.status for r in store.stages(job)} == {StageStatus.PENDING}
    assert store.stage_row(other, "ingest").status is StageStatus.DONE
    with pytest.raises(ValueError, match="not in stage_order"):
        store.reset_stages_from(job, "mastering", stage_order=STAGES)


def test_recover_interrupted_in_process(store):
    batch, (a, b, c) = _batch_with_jobs(store)
    store.mark_job_started(a)
    store.begin_stage_attempt(a, "ingest")
    store.finish_stage(a, "ingest", manifest=[], stage_version="1", fingerprint="f")
    store.begin_stage_attempt(a, "analyze")
    store.mark_job_started(b)
    store.mark_job_finished(b)
    assert store.recover_interrupted(batch) == Recovered(jobs=1, stages=1, attempts=1)
    assert store.job(a).status is JobStatus.PENDING and store.job(b).status is JobStatus.DONE
    assert store.stage_row(a, "ingest").status is StageStatus.DONE
    assert store.stage_row(a, "analyze").status is StageStatus.PENDING
    assert store.attempt_log(a, "analyze")[0].outcome is Outcome.INTERRUPTED
    assert store.get_batch(batch).status is BatchStatus.INTERRUPTED
    assert store.recover_interrupted(batch) == Recovered(0, 0, 0)


# --- manifests, durations, breakers, housekeeping -----------------------------------------
def test_manifest_verification_notices_a_changed_byte(tmp_path):
    out = tmp_path / "out"
    (out / "song").mkdir(parents=True)
    target = out / "song" / "beats.csv"
    target.write_bytes(b"time\n0.5\n1.0\n")
    art = artifact_for(out, target)
    assert art.path == "song/beats.csv" and art.size == 13
    assert artifact_for(out, "song/beats.csv") == art
    assert verify_manifest(out, [art]) and verify_manifest(out, [])
    target.write_bytes(b"time\n0.5\n1.1\n")  # same size, one byte changed
    assert not verify_manifest(out, [art])
    assert manifest_problems(out, [art]) == ["song/beats.csv: content changed (sha256 differs)"]
    target.write_bytes(b"time\n")
    assert "expected 13" in manifest_problems(out, [art])[0]
    target.unlink()
    assert manifest_problems(out, [art]) == ["song/beats.csv: missing"]
    assert not verify_manifest(out, [Artifact("../escape.csv", art.sha256, 13)])
    with pytest.raises(ValueError, match="not inside the output folder"):
        artifact_for(out, tmp_path / "elsewhere.csv")


def test_durations_keep_the_newest(tmp_path, clock):
    with Store.open(tmp_path, clock=clock, keep_durations=5) as s:
        for i in range(12):
            s.record_duration("analyze", float(i), audio_s=30.0)
            s.record_duration("ingest", 100.0 + i)
        assert [d.elapsed_s for d in s.durations("analyze")] == [7.0, 8.0, 9.0, 10.0, 11.0]
        assert [d.elapsed_s for d in s.durations("analyze", limit=2)] == [10.0, 11.0]
        assert s.durations("analyze")[0].audio_s == 30.0 and len(s.durations("ingest")) == 5
        assert s.durations("export") == []


def test_breaker_store_round_trip(tmp_path):
    state = {"state": "open", "opened_at_wall": 1.7e9, "failures": [1, 2, 3], "reason": "demucs: CUDA error"}
    with Store.open(tmp_path) as s:
        breakers = SqliteBreakerStore(s)
        assert breakers.load("demucs") is None
        breakers.save("demucs", state)
        breakers.save("ffmpeg", {"state": "closed"})
        breakers.save("ffmpeg", {"state": "half_open"})
    with Store.open(tmp_path, create=False) as s:
        breakers = SqliteBreakerStore(s)
        assert breakers.load("demucs") == state
        assert breakers.all() == {"demucs": state, "ffmpeg": {"state": "half_open"}}


def test_checkpoint_truncates_the_wal(store):
    _batch_with_jobs(store, 50)
    wal = Path(f"{store.path}-wal")
    assert wal.stat().st_size > 0
    assert store.checkpoint() is True
    assert wal.stat().st_size == 0


def test_a_closed_store_says_so(tmp_path):
    s = Store.open(tmp_path)
    s.close()
    s.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        s.list_batches()


def test_rows_hold_no_pickles(store):
    batch, (job, _, _) = _batch_with_jobs(store)
    store.begin_stage_attempt(job, "ingest")
    store.finish_stage(job, "ingest", manifest=[Artifact("a/b.npy", "c" * 64, 5)], stage_version="1",
                       fingerprint="f")
    (text,) = store._conn.execute("SELECT manifest_json FROM stages").fetchone()
    assert json.loads(text) == [{"path": "a/b.npy", "sha256": "c" * 64, "size": 5}]
    for table in ("batches", "jobs", "stages", "attempts"):
        for row in store._conn.execute(f"SELECT * FROM {table}"):
            assert not any(isinstance(v, bytes) for v in row)
