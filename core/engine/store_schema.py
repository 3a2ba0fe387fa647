"""Opening the checkpoint store: recognise it, refuse anything else, migrate it.

The store is ``OUT/.stave/state.db``. It is ours when its SQLite header holds
our ``application_id``; its ``user_version`` is the schema version, raised by
ordered migrations, each in one transaction. A file that is not SQLite, is
damaged, belongs to another program or was written by a newer Stave is
refused with a :class:`StoreError` and left exactly as it was: an unreadable
store is never replaced by an empty one.

Until a file is known to be ours (or a brand-new empty database) only reads
touch it; ``journal_mode=WAL`` and the migrations come after.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from core.resilience.errors import ErrorKind, StaveError

log = logging.getLogger(__name__)

STORE_DIRNAME = ".stave"
STORE_FILENAME = "state.db"
#: "STAV" in ASCII: PRAGMA application_id of every Stave store.
APPLICATION_ID = 0x53544156
BUSY_TIMEOUT_MS = 10_000

_SQLITE_MAGIC = b"SQLite format 3\x00"


class StoreError(StaveError):
    """The checkpoint store cannot be used; the file was left untouched."""

    kind = ErrorKind.PERMISSION


def store_path(out_dir: str | os.PathLike | bytes) -> Path:
    return Path(os.fsdecode(out_dir)) / STORE_DIRNAME / STORE_FILENAME


# --- the schema -------------------------------------------------------------
_BATCH_STATUSES = "'running','paused','interrupted','finished','cancelled'"
_JOB_STATUSES = "'pending','running','done','failed','skipped','cancelled','quarantined'"
_STAGE_STATUSES = "'pending','running','done','failed','skipped','degraded'"
_OUTCOMES = "'running','done','degraded','failed','cancelled','interrupted'"

_V1 = (
    f"""CREATE TABLE batches (
        id          INTEGER PRIMARY KEY,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        status      TEXT NOT NULL CHECK (status IN ({_BATCH_STATUSES})),
        config_json TEXT NOT NULL,
        inputs_json TEXT NOT NULL,
        notes       TEXT NOT NULL DEFAULT ''
    )""",
    f"""CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY,
        batch_id         INTEGER NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
        position         INTEGER NOT NULL,
        input_path       TEXT NOT NULL,
        song_id          TEXT NOT NULL,
        content_hash     TEXT NOT NULL DEFAULT '',
        size_bytes       INTEGER,
        mtime            REAL,
        audio_duration_s REAL,
        status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({_JOB_STATUSES})),
        degraded         INTEGER NOT NULL DEFAULT 0,
        degraded_json    TEXT NOT NULL DEFAULT '[]',
        error_kind       TEXT,
        error_reason     TEXT NOT NULL DEFAULT '',
        error_suggestion TEXT NOT NULL DEFAULT '',
        crash_count      INTEGER NOT NULL DEFAULT 0,
        attempts         INTEGER NOT NULL DEFAULT 0,
        created_at       REAL NOT NULL,
        started_at       REAL,
        finished_at      REAL,
        UNIQUE (batch_id, position)
    )""",
    f"""CREATE TABLE stages (
        job_id             INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        stage              TEXT NOT NULL,
        status             TEXT NOT NULL CHECK (status IN ({_STAGE_STATUSES})),
        attempts           INTEGER NOT NULL DEFAULT 0,
        started_at         REAL,
        finished_at        REAL,
        elapsed_s          REAL,
        error_kind         TEXT,
        error_reason       TEXT NOT NULL DEFAULT '',
        manifest_json      TEXT NOT NULL DEFAULT '[]',
        stage_version      TEXT NOT NULL DEFAULT '',
        config_fingerprint TEXT NOT NULL DEFAULT '',
        degraded           INTEGER NOT NULL DEFAULT 0,
        degraded_reason    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, stage)
    )""",
    f"""CREATE TABLE attempts (
        id          INTEGER PRIMARY KEY,
        job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        stage       TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        outcome     TEXT NOT NULL DEFAULT 'running' CHECK (outcome IN ({_OUTCOMES})),
        error_kind  TEXT,
        reason      TEXT NOT NULL DEFAULT '',
        worker_pid  INTEGER
    )""",
    """CREATE TABLE breakers (
        name       TEXT PRIMARY KEY,
        state_json TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE durations (
        id          INTEGER PRIMARY KEY,
        stage       TEXT NOT NULL,
        elapsed_s   REAL NOT NULL,
        audio_s     REAL,
        recorded_at REAL NOT NULL
    )""",
)

# v2: the runner's hot queries get indexes, and a job remembers which stage
# failed it (the CLI summary says "failed in analyze: ...").
_V2 = (
    "CREATE INDEX jobs_by_batch_status ON jobs (batch_id, status, position)",
    "CREATE INDEX attempts_by_job ON attempts (job_id, stage, id)",
    "CREATE INDEX durations_by_stage ON durations (stage, id)",
    "ALTER TABLE jobs ADD COLUMN error_stage TEXT",
)

#: MIGRATIONS[i] takes the schema from version i to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
SCHEMA_VERSION = len(MIGRATIONS)


# --- opening -----------------------------------------------------------------
_WHAT_TO_DO = ("Stave did not change the file. Move it aside (or choose another output folder) "
               "to start a new batch here.")


def _refuse(path: Path, what: str, suggestion: str = _WHAT_TO_DO, kind: ErrorKind | None = None) -> StoreError:
    return StoreError(f"{path} {what}", suggestion=suggestion, kind=kind)


def _check_header(path: Path) -> bool:
    """Look at the raw bytes before SQLite does; True when the file is empty."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})",
                      "Check the output folder's permissions.") from exc
    if size == 0:
        return True
    if not head.startswith(_SQLITE_MAGIC):
        raise _refuse(path, f"is not a Stave store: it is not an SQLite database (it starts with {head[:16]!r})")
    if len(head) < 100:
        raise _refuse(path, f"is a damaged Stave store: only {size} bytes, shorter than an SQLite header")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1) or size % page_size:
        raise _refuse(path, f"is a damaged SQLite database: its size ({size} bytes) is not a whole number "
                            f"of {page_size}-byte pages (truncated?)")
    app_id = int.from_bytes(head[68:72], "big")
    if app_id not in (0, APPLICATION_ID):  # the header may be stale in WAL mode, but only ever 0 -> ours
        raise _refuse(path, f"is an SQLite database of another program (application_id {app_id:#010x}), "
                            "not a Stave store")
    return False


def _inspect(conn: sqlite3.Connection, path: Path) -> tuple[int, int, list[str]]:
    """Read application_id, user_version and the object names (reads only)."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_schema ORDER BY name LIMIT 6")]
    except sqlite3.DatabaseError as exc:
        raise _refuse(path, f"is a damaged or unreadable SQLite database ({exc})") from exc
    return app_id, version, names


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise _refuse(path, f"is a damaged Stave store ({'; '.join(problems)[:300]})",
                      "Stave did not change the file. Keep a copy of the folder; move .stave/state.db aside "
                      "to start a new batch here (finished outputs stay on disk).")


def connect(out_dir: str | os.PathLike | bytes, *, create: bool) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the store of ``out_dir``.

    Raises :class:`StoreError` for everything that is not a usable store.
    """
    path = store_path(out_dir)
    shown = os.fsdecode(out_dir)
    no_batch = StoreError(f"no Stave batch in {shown}",
                          suggestion="Pick the output folder of an earlier `stave process` run "
                                     "(it holds a .stave folder).",
                          kind=ErrorKind.INPUT_EMPTY)
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise no_batch from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store folder {path.parent}: {exc.strerror or exc}",
                             suggestion="Choose an output folder you can write to.") from exc
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})", "Check the folder's permissions.") from exc
    else:
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file")
        empty = _check_header(path)
        if empty and not create and not os.path.exists(f"{path}-wal"):
            raise no_batch

    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as exc:
        raise _refuse(path, f"cannot be opened ({exc})", "Check the output folder's permissions.") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        app_id, version, names = _inspect(conn, path)
        if app_id == 0 and version == 0 and not names:
            if not create:
                raise no_batch
        elif app_id != APPLICATION_ID:
            raise _refuse(path, f"is an SQLite database of another program (application_id {app_id:#010x}, "
                                f"tables {', '.join(names) or 'none'}), not a Stave store")
        elif version > SCHEMA_VERSION:
            raise _refuse(path, f"was written by a newer Stave (store schema v{version}; this Stave "
                                f"understands up to v{SCHEMA_VERSION})",
                          "Update Stave to resume this batch, or choose another output folder.")
        else:
            _quick_check(conn, path)
        _configure(conn, path)
        migrate(conn, path)
        return conn
    except BaseException:
        conn.close()
        raise


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    # synchronous=FULL: in WAL mode the log is fsynced at every commit, so a
    # row that says "done" survives a power cut. Stave commits a few rows per
    # stage attempt (seconds of audio work each), so the fsync costs nothing
    # a person could notice, while NORMAL may roll back the last commits.
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":  # e.g. a network file system without shared memory
        log.warning("the store %s runs in %s journal mode (WAL unavailable)", path, mode)
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


def migrate(conn: sqlite3.Connection, path: Path | str = "store", *, target: int = SCHEMA_VERSION) -> int:
    """Apply the missing migrations up to ``target``, one transaction each."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for version in range(current + 1, target + 1):  # an up-to-date store is not even write-locked
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated.
            if conn.execute("PRAGMA user_version").fetchone()[0] >= version:
                conn.execute("ROLLBACK")
                continue
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            if version == 1:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise _refuse(Path(path), f"could not be upgraded to store schema v{version} ({exc})",
                          "Stave left the store as it was; report this with the log file.") from exc
        log.info("store %s migrated to schema v%d", path, version)
    return conn.execute("PRAGMA user_version").fetchone()[0]
