"""The checkpoint store: real SQLite files, real crashes, real threads."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.engine import store_schema
from core.engine.store import (
    SCHEMA_VERSION, Artifact, BatchStatus, JobSpec, JobStatus, Outcome, Recovered, SqliteBreakerStore,
    StageStatus, Store, StoreError, artifact_for, manifest_problems, store_path, verify_manifest,
)
from core.engine.store_rows import path_from_text, path_to_text
from core.resilience.errors import ErrorKind, StaveError, info_for

ROOT = Path(__file__).resolve().parents[3]
STAGES = ("ingest", "preprocess", "separate", "analyze", "transcribe", "segment", "export")


@pytest.fixture
def store(tmp_path, clock):
    s = Store.open(tmp_path / "out", clock=clock)
    yield s
    s.close()


def _batch_with_jobs(store: Store, n: int = 3) -> tuple[int, list[int]]:
    batch = store.create_batch({"workers": 2}, ["/music"])
    ids = store.add_jobs(batch, [JobSpec(f"/music/{i}.wav", f"song{i}-abcd", size_bytes=100 + i) for i in range(n)])
    return batch, ids


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- opening and refusing ----------------------------------------------------------
def test_open_creates_a_wal_store_marked_as_ours(tmp_path):
    with Store.open(tmp_path / "out") as s:
        assert s.path == tmp_path / "out" / ".stave" / "state.db"
        assert s.schema_version == SCHEMA_VERSION == 2
    conn = sqlite3.connect(store_path(tmp_path / "out"))
    assert conn.execute("PRAGMA application_id").fetchone()[0] == store_schema.APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    with Store.open(tmp_path / "out", create=False) as again:  # reopening keeps it as it is
        assert again.schema_version == SCHEMA_VERSION


def test_connection_pragmas(store):
    conn = store._conn
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == store_schema.BUSY_TIMEOUT_MS


def test_create_false_on_a_folder_without_a_store(tmp_path):
    (tmp_path / "music").mkdir()
    with pytest.raises(StoreError, match="no Stave batch in .*music") as info:
        Store.open(tmp_path / "music", create=False)
    assert isinstance(info.value, StaveError) and info.value.suggestion
    assert list((tmp_path / "music").iterdir()) == []  # nothing created


def _text_file(path: Path) -> None:
    path.write_text("these are my notes\n" * 50)


def _random_bytes(path: Path) -> None:
    path.write_bytes(b"\x00junk" + os.urandom(8187))


def _other_app_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 0x12345678")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO photos (name) VALUES (?)", [(f"p{i}",) for i in range(100)])
    conn.commit()
    conn.close()


def _plain_sqlite_db(path: Path) -> None:  # application_id 0, but holding someone's tables
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.execute("INSERT INTO contacts VALUES ('Ada')")
    conn.commit()
    conn.close()


def _newer_schema(path: Path) -> None:
    Store.open(path.parent.parent).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def _filled_store(path: Path) -> None:
    with Store.open(path.parent.parent) as s:
        batch = s.create_batch({}, [])
        s.add_jobs(batch, [JobSpec(f"/music/a long folder name/{i:05d} some song.wav", f"s{i}") for i in range(3000)])
    assert not Path(f"{path}-wal").exists()  # closing folded the WAL into the file


def _corrupt_pages(path: Path) -> None:
    _filled_store(path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    middle = (len(data) // page // 2) * page
    data[middle:middle + 3 * page] = os.urandom(3 * page)
    path.write_bytes(bytes(data))


def _truncated_mid_page(path: Path) -> None:
    _filled_store(path)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2 + 100)


def _truncated_at_page(path: Path) -> None:
    _filled_store(path)
    page = int.from_bytes(path.read_bytes()[16:18], "big")
    with open(path, "r+b") as f:
        f.truncate((os.path.getsize(path) // page // 2) * page)


@pytest.mark.parametrize("make, message", [
    (_text_file, "not an SQLite database"),
    (_random_bytes, "not an SQLite database"),
    (_other_app_db, "another program"),
    (_plain_sqlite_db, "another program"),
    (_newer_schema, "newer Stave"),
    (_corrupt_pages, "damaged"),
    (_truncated_mid_page, "damaged"),
    (_truncated_at_page, "damaged"),
])
def test_refuses_what_is_not_a_usable_store_and_leaves_it_untouched(tmp_path, make, message):
    out = tmp_path / "out"
    path = store_path(out)
    path.parent.mkdir(parents=True)
    make(path)
    before = _snapshot(path.parent)
    for create in (True, False):
        with pytest.raises(StoreError, match=message) as info:
            Store.open(out, create=create)
        assert str(path) in info.value.reason and info.value.suggestion
        assert _snapshot(path.parent) == before  # same files, same bytes: never replaced or repaired


def test_a_zero_byte_file_is_a_new_store(tmp_path):
    path = store_path(tmp_path)
    path.parent.mkdir()
    path.touch()
    with pytest.raises(StoreError, match="no Stave batch"):
        Store.open(tmp_path, create=False)
    with Store.open(tmp_path) as s:
        assert s.schema_version == SCHEMA_VERSION


def test_a_folder_in_place_of_the_database_is_refused(tmp_path):
    store_path(tmp_path).mkdir(parents=True)
    with pytest.raises(StoreError, match="not a regular file"):
        Store.open(tmp_path)


# --- migrations -----------------------------------------------------------------
def _v1_store_with_data(out: Path) -> None:
    path = store_path(out)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    assert store_schema.migrate(conn, path, target=1) == 1
    conn.execute("INSERT INTO batches (id, created_at, updated_at, status, config_json, inputs_json) "
                 "VALUES (1, 1.0, 2.0, 'interrupted', '{\"workers\": 3}', '[\"/music\"]')")
    conn.execute("INSERT INTO jobs (id, batch_id, position, input_path, song_id, status, error_kind, error_reason, "
                 "created_at) VALUES (7, 1, 0, '/music/a.wav', 'a-1234', 'failed', 'timeout', 'too slow', 1.0)")
    conn.execute("INSERT INTO stages (job_id, stage, status, attempts, manifest_json) "
                 "VALUES (7, 'ingest', 'done', 1, '[{\"path\": \"a/x.npy\", \"sha256\": \"ab\", \"size\": 3}]')")
    conn.close()


def test_migrates_a_v1_store_with_data_to_the_latest(tmp_path):
    _v1_store_with_data(tmp_path)
    with Store.open(tmp_path, create=False) as s:
        assert s.schema_version == SCHEMA_VERSION
        batch = s.get_batch(1)
        assert batch.status is BatchStatus.INTERRUPTED and batch.config == {"workers": 3}
        (job,) = s.jobs(1)
        assert (job.id, job.song_id, job.status, job.error_kind, job.error_stage) == \
            (7, "a-1234", JobStatus.FAILED, ErrorKind.TIMEOUT, None)
        assert s.stage_row(7, "ingest").manifest == (Artifact("a/x.npy", "ab", 3),)
        indexes = {r[0] for r in s._conn.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
        assert {"jobs_by_batch_status", "attempts_by_job", "durations_by_stage"} <= indexes
        s.mark_job_failed(7, info_for(ErrorKind.INPUT_CORRUPT, "bad header"), stage="ingest")  # the v2 column
        assert s.job(7).error_stage == "ingest"


def test_a_failing_migration_leaves_the_store_at_its_last_version(tmp_path, monkeypatch):
    _v1_store_with_data(tmp_path)
    broken = ("CREATE INDEX fine ON jobs (song_id)", "ALTER TABLE no_such_table ADD COLUMN x")
    monkeypatch.setattr(store_schema, "MIGRATIONS", (store_schema.MIGRATIONS[0], broken))
    with pytest.raises(StoreError, match="could not be upgraded to store schema v2"):
        Store.open(tmp_path)
    conn = sqlite3.connect(store_path(tmp_path))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'fine'").fetchone()[0] == 0
    assert conn.execute("SELECT song_id FROM jobs").fetchall() == [("a-1234",)]
    conn.close()


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


_CRASHING_CHILD = r"""
import os, sys, time
from core.engine.store import Artifact, JobSpec, Store

s = Store.open(sys.argv[1])
batch = s.create_batch({"workers": 1}, ["/music"])
ids = s.add_jobs(batch, [JobSpec(f"/music/{i}.wav", f"s{i}") for i in range(20)])
for j in ids[:5]:
    s.mark_job_started(j)
    for stage in ("ingest", "analyze"):
        a = s.begin_stage_attempt(j, stage, pid=os.getpid())
        s.finish_stage(j, stage, manifest=[Artifact(f"s{j}/{stage}.npy", "0" * 64, 8)], stage_version="1",
                       fingerprint="f", attempt_id=a)
    s.mark_job_finished(j)
j = ids[5]
s.mark_job_started(j)
s.begin_stage_attempt(j, "ingest", pid=os.getpid())
s.finish_stage(j, "ingest", manifest=[], stage_version="1", fingerprint="f")
s.begin_stage_attempt(j, "analyze", pid=os.getpid())

def stuck(*args, **kwargs):  # inside finish_stage's transaction, after the stage row was set to done
    print("IN_TRANSACTION", flush=True)
    time.sleep(120)

Store._close_attempt = stuck
s.finish_stage(j, "analyze", manifest=[Artifact("s/x.npy", "1" * 64, 9)], stage_version="1", fingerprint="f")
"""


def test_a_process_killed_mid_write_leaves_a_consistent_store(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CRASHING_CHILD, str(out)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "IN_TRANSACTION", child.stderr.read()
        assert Path(f"{store_path(out)}-wal").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with Store.open(out, create=False) as s:  # opens: quick_check passed, nothing refused
        batch = s.latest_unfinished_batch()
        assert batch.status is BatchStatus.RUNNING
        jobs = s.jobs(batch.id)
        crashed = jobs[5]
        assert s.stage_row(crashed.id, "analyze").status is StageStatus.RUNNING  # the uncommitted "done" is gone
        assert s.stage_row(crashed.id, "analyze").manifest == ()
        assert s.counts(batch.id)["running"] == 1 and s.counts(batch.id)["done"] == 5
        assert s.recover_interrupted(batch.id) == Recovered(jobs=1, stages=1, attempts=1)
        assert s.counts(batch.id) == {**{k: 0 for k in s.counts(batch.id)}, "pending": 15, "done": 5}
        assert s.stage_row(crashed.id, "ingest").status is StageStatus.DONE  # committed work survives
        assert s.stage_row(crashed.id, "analyze").status is StageStatus.PENDING
        log = s.attempt_log(crashed.id, "analyze")
        assert [a.outcome for a in log] == [Outcome.INTERRUPTED] and log[0].worker_pid == child.pid
        for job in jobs[:5]:  # every "done" row has its attempt closed as done: they were one transaction
            for row in s.stages(job.id):
                assert row.status is StageStatus.DONE and len(row.manifest) == 1
                assert [a.outcome for a in s.attempt_log(job.id, row.stage)] == [Outcome.DONE]
        assert s.get_batch(batch.id).status is BatchStatus.INTERRUPTED


# --- concurrency ---------------------------------------------------------------------
def _hammer(store: Store, job_id: int, rounds: int, errors: list) -> None:
    try:
        for i in range(rounds):
            stage = f"stage{i % 5}"
            store.begin_stage_attempt(job_id, stage)
            store.finish_stage(job_id, stage, manifest=[], stage_version="1", fingerprint=str(i))
            store.record_duration(stage, 0.01 * i)
            store.counts(store.job(job_id).batch_id)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def test_threads_sharing_one_store_serialize(store):
    batch, ids = _batch_with_jobs(store, 6)
    errors: list = []
    threads = [threading.Thread(target=_hammer, args=(store, j, 20, errors)) for j in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(len(store.attempt_log(j)) for j in ids) == 6 * 20
    assert all(r.status is StageStatus.DONE for j in ids for r in store.stages(j))


def test_separate_connections_wait_instead_of_failing(tmp_path):
    with Store.open(tmp_path) as first:
        batch, ids = _batch_with_jobs(first, 4)
    stores = [Store.open(tmp_path, create=False) for _ in ids]
    errors: list = []
    threads = [threading.Thread(target=_hammer, args=(s, j, 15, errors)) for s, j in zip(stores, ids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert errors == []  # no "database is locked"
    with Store.open(tmp_path, create=False) as s:
        assert sum(len(s.attempt_log(j)) for j in ids) == 4 * 15


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


# -- light commits -----------------------------------------------------------------------------
class _SyncLog:
    """Records the synchronous level at every COMMIT of a connection (via its trace callback)."""

    def __init__(self, store: Store):
        self.commits: list[int] = []
        self._conn = store._connection()
        self._conn.set_trace_callback(self._trace)

    def _trace(self, sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            self.commits.append(self._level())

    def _level(self) -> int:
        self._conn.set_trace_callback(None)
        try:
            return self._conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            self._conn.set_trace_callback(self._trace)


FULL, NORMAL = 2, 1


def test_bookkeeping_is_light_and_results_are_fsynced(store):
    batch, (job, *_) = _batch_with_jobs(store, 1)
    sync = _SyncLog(store)
    store.mark_job_started(job)
    attempt = store.begin_stage_attempt(job, "ingest")
    store.skip_stage(job, "separate", "off")
    store.record_duration("ingest", 1.0, 10.0)
    assert sync.commits == [NORMAL] * 4
    store.finish_stage(job, "ingest", manifest=[], stage_version="1", fingerprint="f", elapsed_s=1.0,
                       attempt_id=attempt)
    store.mark_job_finished(job)
    assert sync.commits[4:] == [FULL, FULL]
    # light writes inside a transaction share its fsynced commit
    with store.transaction():
        store.begin_stage_attempt(job, "analyze")
        store.record_duration("analyze", 1.0, 10.0)
    assert sync.commits[6:] == [FULL]


def test_after_a_failed_light_commit_the_next_result_is_still_fsynced(store):
    batch, (job, *_) = _batch_with_jobs(store, 1)
    with pytest.raises(KeyError):
        store._update_job(job + 999, "attempts = attempts + 1", (), durable=False)
    assert store.job(job).attempts == 0
    sync = _SyncLog(store)
    store.mark_job_finished(job)
    assert sync.commits == [FULL]


def test_without_wal_every_commit_is_fsynced(store):
    store._wal = False  # as on a file system without shared memory, where SQLite falls back to a journal
    batch, (job, *_) = _batch_with_jobs(store, 1)
    sync = _SyncLog(store)
    store.mark_job_started(job)
    store.begin_stage_attempt(job, "ingest")
    assert sync.commits == [FULL, FULL]


def test_light_commits_survive_the_process_being_killed(tmp_path):
    # A light commit is not fsynced, but it is committed: a killed Stave (not a power cut) never loses it.
    script = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from core.engine.store import Store, JobSpec\n"
        "s = Store.open(sys.argv[1])\n"
        "b = s.create_batch({}, ['/m'])\n"
        "(j,) = s.add_jobs(b, [JobSpec('/m/a.wav', 'a-1234abcd')])\n"
        "s.mark_job_started(j)\n"
        "s.begin_stage_attempt(j, 'ingest')\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", script, str(out)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with Store.open(out, create=False) as s:
        (job,) = s.jobs(s.list_batches()[0].id)
        assert job.status is JobStatus.RUNNING and job.attempts == 1
        assert s.stage_row(job.id, "ingest").status is StageStatus.RUNNING
