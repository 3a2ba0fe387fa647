"""Opening the checkpoint store: what it creates, what it refuses and leaves untouched, how it migrates.

Real SQLite files: text, random bytes, other programs' databases, newer schemas, damaged and truncated pages.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from core.engine import store_schema
from core.engine.store import SCHEMA_VERSION, Artifact, BatchStatus, JobSpec, JobStatus, Store, StoreError, store_path
from core.resilience.errors import ErrorKind, StaveError, info_for


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
