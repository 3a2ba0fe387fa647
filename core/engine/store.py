"""The checkpoint store: batches, jobs, stages, attempts, breakers, durations.

One SQLite database per output folder (``OUT/.stave/state.db``, WAL mode),
so a batch resumes from its folder alone. One connection per :class:`Store`,
shared by threads under a lock; every write is one ``BEGIN IMMEDIATE ...
COMMIT`` transaction, so writers from other processes wait (busy timeout)
instead of failing with "database is locked". Only the supervisor writes.

A stage is done when its artifacts were written atomically and
:meth:`Store.finish_stage` recorded the "done" row with their hashes, in one
transaction.

Durability. Commits that record results (a stage done or failed, a job
finished, a batch's status) are fsynced (``synchronous=FULL``). Bookkeeping
that resume re-derives anyway (an attempt starting, a job starting, a stage
skipped, a duration sample) is written *light*: ``synchronous=NORMAL`` for
that commit, which in WAL mode is still atomic and survives a crash of
Stave, and is made durable by the next fsynced commit; only a power cut in
between can forget it, and then resume simply does that bookkeeping again.
That halves the fsyncs per job. Without WAL (a file system that cannot share
memory) every commit is fsynced. Resume: :meth:`Store.recover_interrupted`, then run every job
that is not finished, skipping stages whose manifest still verifies
(:func:`verify_manifest`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterable, Iterator, Mapping, Sequence

from core.engine.store_manifest import Artifact, artifact_for, manifest_problems, manifest_to_json, verify_manifest
from core.engine.store_rows import (
    ATTEMPT_COLUMNS, BATCH_COLUMNS, JOB_COLUMNS, STAGE_COLUMNS, UNFINISHED_BATCH, AttemptRow, BatchRow,
    BatchStatus, DurationRow, JobRow, JobSpec, JobStatus, Outcome, Recovered, StageRow, StageStatus,
    attempt_from_sql, batch_from_sql, job_from_sql, job_status_values, path_to_text, stage_from_sql,
)
from core.engine.store_schema import SCHEMA_VERSION, StoreError, connect, store_path
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import ErrorInfo, ErrorKind

__all__ = [
    "Store", "StoreError", "SqliteBreakerStore", "JobSpec", "JobRow", "BatchRow", "StageRow", "AttemptRow",
    "DurationRow", "Artifact", "Recovered", "BatchStatus", "JobStatus", "StageStatus", "Outcome",
    "verify_manifest", "manifest_problems", "artifact_for", "store_path", "SCHEMA_VERSION",
]

#: What :meth:`Store.update_job_facts` may set.
JOB_FACTS = frozenset({"song_id", "content_hash", "size_bytes", "mtime", "audio_duration_s"})


def _translate(exc: sqlite3.Error) -> StoreError:
    text = str(exc)
    if "full" in text:
        return StoreError(f"the checkpoint store could not be written: {text}", kind=ErrorKind.DISK_FULL,
                          suggestion="Free space on the output drive, then resume the batch.")
    if isinstance(exc, sqlite3.IntegrityError):  # a caller named a batch or job that does not exist
        return StoreError(f"the checkpoint store refused a write: {text}", kind=ErrorKind.BUG)
    return StoreError(f"the checkpoint store failed: {text}",
                      suggestion="Check the output folder (disk, permissions); the batch can be resumed.")


WORK_PREFIX = ".stave/work/"  # where a job's intermediates are, relative to the output folder: job-<id>/


class Store:
    """The checkpoint store of one output folder. Use :meth:`open`; thread-safe."""

    def __init__(self, conn: sqlite3.Connection, out_dir: str, *, clock: Clock = SYSTEM_CLOCK,
                 keep_durations: int = 200):
        if keep_durations < 1:
            raise ValueError("keep_durations must be at least 1")
        self._conn: sqlite3.Connection | None = conn
        self.out_dir = out_dir
        self.path = store_path(out_dir)
        self._clock = clock
        self._keep = keep_durations
        self._lock = threading.RLock()
        self._in_tx = False
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        self._wal = str(mode).lower() == "wal"  # light commits are safe only in WAL mode
        self._sync: str | None = "FULL"  # the connection's synchronous level (store_schema sets FULL)

    @classmethod
    def open(cls, out_dir: str | os.PathLike | bytes, *, create: bool = True, clock: Clock = SYSTEM_CLOCK,
             keep_durations: int = 200) -> "Store":
        """Open the store of ``out_dir`` (creating it when ``create``); :class:`StoreError` if unusable."""
        return cls(connect(out_dir, create=create), os.fsdecode(out_dir), clock=clock,
                   keep_durations=keep_durations)

    # -- plumbing -------------------------------------------------------------
    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"the store {self.path} is closed", kind=ErrorKind.BUG)
        return self._conn

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE ... COMMIT`` transaction (joined when already inside one).

        ``durable=False``: a light commit, not fsynced (see the module docstring);
        an enclosing transaction decides for the writes it joins.
        """
        with self._lock:
            conn = self._connection()
            if self._in_tx:
                yield conn
                return
            try:
                # Set the level of *this* commit before it begins, every time it differs from the last one
                # set: a durable commit never relies on an earlier light one having restored FULL.
                self._set_sync(conn, "NORMAL" if not durable and self._wal else "FULL")
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
            self._in_tx = True
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                except sqlite3.Error:  # the original error says more; SQLite undoes it on the next open
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise _translate(exc) from exc
                raise
            finally:
                self._in_tx = False

    def _set_sync(self, conn: sqlite3.Connection, level: str) -> None:
        if self._sync != level:
            self._sync = None  # unknown until the pragma has run
            conn.execute(f"PRAGMA synchronous = {level}")
            self._sync = level

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[None]:
        """Group several writes (e.g. finish the last stage and the job) into one transaction: all or none."""
        with self._write(durable=durable):
            yield

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    def _now(self) -> float:
        return self._clock.wall()

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def checkpoint(self) -> bool:
        """Fold the WAL into the database file and truncate it (when a batch ends). False if readers blocked it."""
        with self._read() as conn:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- batches --------------------------------------------------------------
    def create_batch(self, config: Mapping, inputs: Iterable[str | bytes | os.PathLike], *, notes: str = "") -> int:
        """A new running batch; ``config`` must be JSON-serialisable."""
        config_json = json.dumps(dict(config), sort_keys=True)
        inputs_json = json.dumps([path_to_text(p) for p in inputs])
        now = self._now()
        with self._write() as conn:
            cur = conn.execute("INSERT INTO batches (created_at, updated_at, status, config_json, inputs_json, notes) "
                               "VALUES (?, ?, 'running', ?, ?, ?)", (now, now, config_json, inputs_json, notes))
            return cur.lastrowid

    def get_batch(self, batch_id: int) -> BatchRow:
        with self._read() as conn:
            r = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if r is None:
            raise KeyError(f"no batch {batch_id} in {self.path}")
        return batch_from_sql(r)

    def list_batches(self) -> list[BatchRow]:
        """Every batch, oldest first."""
        with self._read() as conn:
            return [batch_from_sql(r) for r in conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches ORDER BY id")]

    def latest_unfinished_batch(self) -> BatchRow | None:
        """The newest batch that is running, paused or interrupted (what `stave resume` finishes)."""
        marks = ",".join("?" * len(UNFINISHED_BATCH))
        with self._read() as conn:
            r = conn.execute(f"SELECT {BATCH_COLUMNS} FROM batches WHERE status IN ({marks}) ORDER BY id DESC LIMIT 1",
                             [s.value for s in UNFINISHED_BATCH]).fetchone()
        return None if r is None else batch_from_sql(r)

    def set_batch_status(self, batch_id: int, status: BatchStatus | str, *, notes: str | None = None) -> None:
        status = BatchStatus(status)
        with self._write() as conn:
            cur = conn.execute("UPDATE batches SET status = ?, updated_at = ?, notes = COALESCE(?, notes) WHERE id = ?",
                               (status.value, self._now(), notes, batch_id))
            if cur.rowcount == 0:
                raise KeyError(f"no batch {batch_id} in {self.path}")

    # -- jobs -----------------------------------------------------------------
    def add_jobs(self, batch_id: int, specs: Iterable[JobSpec]) -> list[int]:
        """Append jobs to a batch in one transaction; their ids, in order.

        A folder of 10,000 files is one call: the rows go in 100 per multi-row
        INSERT (900 parameters, under SQLite's oldest limit of 999), which
        costs ~40% less CPU than ``executemany``'s one statement run per row.
        """
        now = self._now()
        width, per_insert = 9, 100

        def insert(rows: int) -> str:
            return ("INSERT INTO jobs (batch_id, position, input_path, song_id, content_hash, size_bytes, mtime, "
                    "audio_duration_s, created_at) VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows))

        with self._write() as conn:
            first = conn.execute("SELECT COALESCE(MAX(position), -1) + 1 FROM jobs WHERE batch_id = ?",
                                 (batch_id,)).fetchone()[0]
            values = [v for i, s in enumerate(specs) for v in (
                batch_id, first + i, path_to_text(s.input_path), s.song_id, s.content_hash, s.size_bytes, s.mtime,
                s.audio_duration_s, now)]
            full, step = insert(per_insert), width * per_insert
            for start in range(0, len(values), step):
                chunk = values[start:start + step]
                conn.execute(full if len(chunk) == step else insert(len(chunk) // width), chunk)
            return [r[0] for r in conn.execute("SELECT id FROM jobs WHERE batch_id = ? AND position >= ? "
                                               "ORDER BY position", (batch_id, first))]

    def jobs(self, batch_id: int, status: JobStatus | str | Iterable[JobStatus | str] | None = None) -> list[JobRow]:
        """The batch's jobs in queue order, optionally only those with the given status(es)."""
        wanted = job_status_values(status)
        sql, args = f"SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = ?", [batch_id]
        if wanted is not None:
            sql += f" AND status IN ({','.join('?' * len(wanted))})"
            args += wanted
        with self._read() as conn:
            return [job_from_sql(r) for r in conn.execute(sql + " ORDER BY position", args)]

    def job(self, job_id: int) -> JobRow:
        with self._read() as conn:
            r = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if r is None:
            raise KeyError(f"no job {job_id} in {self.path}")
        return job_from_sql(r)

    def batch_started(self, batch_id: int) -> bool:
        """Some job of the batch was ever started (so running it now is a resume)."""
        with self._read() as conn:
            return conn.execute("SELECT EXISTS (SELECT 1 FROM jobs WHERE batch_id = ? AND attempts > 0)",
                                (batch_id,)).fetchone()[0] == 1

    def counts(self, batch_id: int) -> dict[str, int]:
        """Jobs per status (every status present, zeros included)."""
        out = {s.value: 0 for s in JobStatus}
        with self._read() as conn:
            for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs WHERE batch_id = ? GROUP BY status",
                                          (batch_id,)):
                out[status] = n
        return out

    def _update_job(self, job_id: int, sets: str, args: Sequence, *, durable: bool = True) -> None:
        with self._write(durable=durable) as conn:
            if conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*args, job_id)).rowcount == 0:
                raise KeyError(f"no job {job_id} in {self.path}")

    def mark_job_started(self, job_id: int) -> None:
        """Running now: one more attempt, the previous error cleared (a light commit)."""
        self._update_job(job_id, "status = 'running', attempts = attempts + 1, started_at = ?, finished_at = NULL, "
                                 "error_kind = NULL, error_reason = '', error_suggestion = '', error_stage = NULL",
                         (self._now(),), durable=False)

    def mark_job_finished(self, job_id: int, *, degraded_reasons: Sequence[str] = (),
                          audio_duration_s: float | None = None) -> None:
        """Done (degraded when any reason is given)."""
        self._update_job(job_id, "status = 'done', degraded = ?, degraded_json = ?, finished_at = ?, "
                                 "audio_duration_s = COALESCE(?, audio_duration_s)",
                         (int(bool(degraded_reasons)), json.dumps(list(degraded_reasons)), self._now(),
                          audio_duration_s))

    def _end_job(self, job_id: int, status: JobStatus, error: ErrorInfo | None, reason: str, stage: str | None):
        kind = error.kind.value if error else None
        self._update_job(job_id, "status = ?, finished_at = ?, error_kind = ?, error_reason = ?, "
                                 "error_suggestion = ?, error_stage = ?",
                         (status.value, self._now(), kind, error.reason if error else reason,
                          error.suggestion if error else "", stage))

    def mark_job_failed(self, job_id: int, error: ErrorInfo, *, stage: str | None = None) -> None:
        self._end_job(job_id, JobStatus.FAILED, error, "", stage)

    def mark_job_quarantined(self, job_id: int, error: ErrorInfo, *, stage: str | None = None) -> None:
        """Never run again in this batch (it crashed or hung its worker too often)."""
        self._end_job(job_id, JobStatus.QUARANTINED, error, "", stage)

    def mark_job_skipped(self, job_id: int, reason: str) -> None:
        self._end_job(job_id, JobStatus.SKIPPED, None, reason, None)

    def mark_job_cancelled(self, job_id: int) -> None:
        self._end_job(job_id, JobStatus.CANCELLED, None, "cancelled", None)

    def reset_job(self, job_id: int, *, clear_crashes: bool = False) -> None:
        """Back to pending (e.g. "retry failed jobs"); its stages keep their results."""
        self._update_job(job_id, "status = 'pending', started_at = NULL, finished_at = NULL, error_kind = NULL, "
                                 "error_reason = '', error_suggestion = '', error_stage = NULL, "
                                 "crash_count = CASE WHEN ? THEN 0 ELSE crash_count END", (int(clear_crashes),))

    def record_crash(self, job_id: int) -> int:
        """Count one more worker crash or hang on this job; the new count."""
        with self._write() as conn:
            self._update_job(job_id, "crash_count = crash_count + 1", ())
            return conn.execute("SELECT crash_count FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def update_job_facts(self, job_id: int, **facts) -> None:
        """Set what ingest learnt: song_id, content_hash, size_bytes, mtime, audio_duration_s."""
        unknown = set(facts) - JOB_FACTS
        if unknown:
            raise ValueError(f"update_job_facts: unknown field(s) {sorted(unknown)}")
        if facts:
            self._update_job(job_id, ", ".join(f"{k} = ?" for k in facts), tuple(facts.values()))

    def done_job_like(self, job: JobRow) -> JobRow | None:
        """The newest other job, in any batch, that finished (not degraded) on the same file: same path, size
        and modification time. Its results may serve ``job`` (see ``JobRunner``)."""
        if job.size_bytes is None or job.mtime is None:
            return None
        with self._read() as conn:
            r = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE input_path = ? AND size_bytes = ? "
                             "AND abs(mtime - ?) <= 1e-3 AND status = 'done' AND degraded = 0 AND id != ? "
                             "ORDER BY id DESC LIMIT 1",
                             (job.input_path, job.size_bytes, job.mtime, job.id)).fetchone()
        return None if r is None else job_from_sql(r)

    def adopt_results(self, job_id: int, donor: JobRow) -> None:
        """``job_id`` takes ``donor``'s stage rows and facts and is done: one durable commit."""
        with self._write() as conn:
            conn.execute("DELETE FROM stages WHERE job_id = ?", (job_id,))
            columns = STAGE_COLUMNS.split(", ", 1)[1]
            conn.execute(f"INSERT INTO stages (job_id, {columns}) SELECT ?, {columns} FROM stages WHERE job_id = ?",
                         (job_id, donor.id))
            # the donor's intermediates are its own: named in this job's work folder, where they are not, they
            # never pass for this job's (a "re-run from" a later stage starts from the first instead)
            conn.execute("UPDATE stages SET manifest_json = replace(manifest_json, ?, ?) WHERE job_id = ?",
                         (f'"{WORK_PREFIX}job-{donor.id}/', f'"{WORK_PREFIX}job-{job_id}/', job_id))
            conn.execute("UPDATE jobs SET song_id = ?, content_hash = ?, audio_duration_s = ?, status = 'done', "
                         "degraded = 0, degraded_json = '[]', attempts = attempts + 1, started_at = ?, "
                         "finished_at = ?, error_kind = NULL, error_reason = '', error_suggestion = '', "
                         "error_stage = NULL WHERE id = ?",
                         (donor.song_id, donor.content_hash, donor.audio_duration_s, self._now(), self._now(),
                          job_id))

    # -- stages ---------------------------------------------------------------
    def stage_row(self, job_id: int, stage: str) -> StageRow | None:
        """The stage's row, or None when it never started."""
        with self._read() as conn:
            r = conn.execute(f"SELECT {STAGE_COLUMNS} FROM stages WHERE job_id = ? AND stage = ?",
                             (job_id, stage)).fetchone()
        return None if r is None else stage_from_sql(r)

    def stages(self, job_id: int) -> list[StageRow]:
        """The job's stage rows, in the order they first started."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {STAGE_COLUMNS} FROM stages WHERE job_id = ? ORDER BY rowid", (job_id,))
            return [stage_from_sql(r) for r in rows]

    def batch_stages(self, batch_id: int) -> list[StageRow]:
        """Every stage row of a batch (for `stave status`), by job position then start order."""
        with self._read() as conn:
            sql = (f"SELECT {', '.join('s.' + c.strip() for c in STAGE_COLUMNS.split(','))} FROM stages s "
                   "JOIN jobs j ON j.id = s.job_id WHERE j.batch_id = ? ORDER BY j.position, s.rowid")
            return [stage_from_sql(r) for r in conn.execute(sql, (batch_id,))]

    def recorded_hashes(self, file_names: Sequence[str], job_ids: Sequence[int] | None = None) -> dict[str, str]:
        """The newest recorded sha256 of every artifact named one of ``file_names`` (its path relative to the
        output folder -> hash), over the completed stages (of ``job_ids`` only, when given). The batch datasets
        learn from it which version of a song's files the store last recorded, without parsing every stage row."""
        sql = (f"SELECT manifest_json FROM stages WHERE status IN ('done', 'degraded') AND "
               f"({' OR '.join(['instr(manifest_json, ?) > 0'] * len(file_names)) or '0'})")
        args: list = [f'/{name}"' for name in file_names]  # as the JSON text spells "<song_id>/<name>"
        if job_ids is not None:
            sql += f" AND job_id IN ({','.join('?' * len(job_ids))})"
            args += list(job_ids)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY finished_at, rowid", args).fetchall()
        names, newest = set(file_names), {}
        for (text,) in rows:
            for art in json.loads(text):
                if art["path"].rpartition("/")[2] in names:
                    newest[art["path"]] = art["sha256"]
        return newest

    def begin_stage_attempt(self, job_id: int, stage: str, attempt: int | None = None,
                            pid: int | None = None) -> int:
        """Mark the stage running and log the attempt (``attempt`` defaults to the stored count + 1); its log id.

        A light commit: if a power cut forgets it, the stage was simply not started.
        """
        now = self._now()
        with self._write(durable=False) as conn:
            self._ensure_stage(conn, job_id, stage)
            if attempt is None:
                attempt = conn.execute("SELECT attempts + 1 FROM stages WHERE job_id = ? AND stage = ?",
                                       (job_id, stage)).fetchone()[0]
            conn.execute("UPDATE stages SET status = 'running', attempts = ?, started_at = ?, finished_at = NULL, "
                         "elapsed_s = NULL, error_kind = NULL, error_reason = '' WHERE job_id = ? AND stage = ?",
                         (attempt, now, job_id, stage))
            cur = conn.execute("INSERT INTO attempts (job_id, stage, attempt, started_at, worker_pid) "
                               "VALUES (?, ?, ?, ?, ?)", (job_id, stage, attempt, now, pid))
            return cur.lastrowid

    @staticmethod
    def _ensure_stage(conn: sqlite3.Connection, job_id: int, stage: str) -> None:
        conn.execute("INSERT INTO stages (job_id, stage, status) VALUES (?, ?, 'pending') "
                     "ON CONFLICT (job_id, stage) DO NOTHING", (job_id, stage))

    def _close_attempt(self, conn, job_id: int, stage: str, attempt_id: int | None, outcome: Outcome,
                       kind: str | None, reason: str, now: float) -> None:
        if attempt_id is None:
            r = conn.execute("SELECT MAX(id) FROM attempts WHERE job_id = ? AND stage = ? AND outcome = 'running'",
                             (job_id, stage)).fetchone()
            attempt_id = r[0]
        if attempt_id is not None:
            conn.execute("UPDATE attempts SET finished_at = ?, outcome = ?, error_kind = ?, reason = ? WHERE id = ?",
                         (now, outcome.value, kind, reason, attempt_id))

    def finish_stage(self, job_id: int, stage: str, *, manifest: Sequence[Artifact], stage_version: str,
                     fingerprint: str, degraded: bool = False, reason: str = "", elapsed_s: float | None = None,
                     attempt_id: int | None = None) -> None:
        """Record the stage done (or degraded) with its artifacts' hashes, and close its attempt: one transaction.

        Call only after every artifact was written atomically (temp file, fsync, rename, fsync the folder).
        """
        status, outcome = ((StageStatus.DEGRADED, Outcome.DEGRADED) if degraded
                           else (StageStatus.DONE, Outcome.DONE))
        now = self._now()
        with self._write() as conn:
            self._ensure_stage(conn, job_id, stage)
            conn.execute("UPDATE stages SET status = ?, finished_at = ?, elapsed_s = ?, error_kind = NULL, "
                         "error_reason = '', manifest_json = ?, stage_version = ?, config_fingerprint = ?, "
                         "degraded = ?, degraded_reason = ? WHERE job_id = ? AND stage = ?",
                         (status.value, now, elapsed_s, manifest_to_json(manifest), stage_version, fingerprint,
                          int(degraded), reason if degraded else "", job_id, stage))
            self._close_attempt(conn, job_id, stage, attempt_id, outcome, None, reason if degraded else "", now)

    def fail_stage(self, job_id: int, stage: str, error: ErrorInfo, *, elapsed_s: float | None = None,
                   attempt_id: int | None = None) -> None:
        """Record a failed attempt. A cancelled one leaves the stage pending (it did not fail)."""
        cancelled = error.kind is ErrorKind.CANCELLED
        status = StageStatus.PENDING if cancelled else StageStatus.FAILED
        outcome = Outcome.CANCELLED if cancelled else Outcome.FAILED
        now = self._now()
        with self._write() as conn:
            self._ensure_stage(conn, job_id, stage)
            conn.execute("UPDATE stages SET status = ?, finished_at = ?, elapsed_s = ?, error_kind = ?, "
                         "error_reason = ? WHERE job_id = ? AND stage = ?",
                         (status.value, now, elapsed_s, error.kind.value, error.reason, job_id, stage))
            self._close_attempt(conn, job_id, stage, attempt_id, outcome, error.kind.value, error.reason, now)

    def skip_stage(self, job_id: int, stage: str, reason: str, *, stage_version: str = "",
                   fingerprint: str = "") -> None:
        """Record a stage that does not apply (e.g. transcription switched off); a light commit."""
        with self._write(durable=False) as conn:
            self._ensure_stage(conn, job_id, stage)
            conn.execute("UPDATE stages SET status = 'skipped', finished_at = ?, error_kind = NULL, error_reason = ?, "
                         "manifest_json = '[]', stage_version = ?, config_fingerprint = ? "
                         "WHERE job_id = ? AND stage = ?",
                         (self._now(), reason, stage_version, fingerprint, job_id, stage))

    def reset_stages_from(self, job_ids: int | Iterable[int], stage: str, *, stage_order: Sequence[str], reset_jobs: bool = True) -> int:
        """Re-run from ``stage``: it, every later stage in ``stage_order`` and any stage not in it go back to pending,
        their results forgotten; the jobs go back to pending. The number of stage rows reset."""
        if stage not in stage_order:
            raise ValueError(f"reset_stages_from: {stage!r} is not in stage_order {list(stage_order)}")
        keep = list(stage_order)[:list(stage_order).index(stage)]
        ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
        sql = ("UPDATE stages SET status = 'pending', attempts = 0, started_at = NULL, finished_at = NULL, "
               "elapsed_s = NULL, error_kind = NULL, error_reason = '', manifest_json = '[]', degraded = 0, "
               "degraded_reason = '' WHERE job_id = ?")
        if keep:
            sql += f" AND stage NOT IN ({','.join('?' * len(keep))})"
        n = 0
        with self._write() as conn:
            for job_id in ids:
                n += conn.execute(sql, (job_id, *keep)).rowcount
                if reset_jobs:
                    self.reset_job(job_id)
        return n

    def attempt_log(self, job_id: int, stage: str | None = None) -> list[AttemptRow]:
        """The job's logged stage attempts, oldest first."""
        sql, args = f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE job_id = ?", [job_id]
        if stage is not None:
            sql, args = sql + " AND stage = ?", args + [stage]
        with self._read() as conn:
            return [attempt_from_sql(r) for r in conn.execute(sql + " ORDER BY id", args)]

    def recover_interrupted(self, batch_id: int) -> Recovered:
        """After a crash: jobs and stages left running go back to pending, their open attempts are logged
        as interrupted, and a batch left running becomes interrupted. Call before resuming, as the only writer."""
        now = self._now()
        in_batch = "job_id IN (SELECT id FROM jobs WHERE batch_id = ?)"
        with self._write() as conn:
            attempts = conn.execute(f"UPDATE attempts SET outcome = 'interrupted', finished_at = ?, "
                                    f"reason = 'Stave stopped while this attempt ran' "
                                    f"WHERE outcome = 'running' AND {in_batch}", (now, batch_id)).rowcount
            stages = conn.execute(f"UPDATE stages SET status = 'pending', started_at = NULL "
                                  f"WHERE status = 'running' AND {in_batch}", (batch_id,)).rowcount
            jobs = conn.execute("UPDATE jobs SET status = 'pending', started_at = NULL "
                                "WHERE status = 'running' AND batch_id = ?", (batch_id,)).rowcount
            conn.execute("UPDATE batches SET status = 'interrupted', updated_at = ? "
                         "WHERE id = ? AND status = 'running'", (now, batch_id))
        return Recovered(jobs=jobs, stages=stages, attempts=attempts)

    # -- durations and breakers -------------------------------------------------
    def record_duration(self, stage: str, elapsed_s: float, audio_s: float | None = None) -> None:
        """Remember how long a stage took (for adaptive timeouts); only the newest ``keep_durations`` stay.

        A light commit on its own; inside a transaction (with the stage's result) it shares that commit.
        """
        with self._write(durable=False) as conn:
            conn.execute("INSERT INTO durations (stage, elapsed_s, audio_s, recorded_at) VALUES (?, ?, ?, ?)",
                         (stage, elapsed_s, audio_s, self._now()))
            conn.execute("DELETE FROM durations WHERE stage = ? AND id <= (SELECT id FROM durations WHERE stage = ? "
                         "ORDER BY id DESC LIMIT 1 OFFSET ?)", (stage, stage, self._keep))

    def durations(self, stage: str, limit: int | None = None) -> list[DurationRow]:
        """The stage's newest recorded durations (up to ``limit``), oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT stage, elapsed_s, audio_s, recorded_at FROM durations WHERE stage = ? "
                                "ORDER BY id DESC LIMIT ?", (stage, -1 if limit is None else limit)).fetchall()
        return [DurationRow(*r) for r in reversed(rows)]

    def load_breaker(self, name: str) -> dict | None:
        with self._read() as conn:
            r = conn.execute("SELECT state_json FROM breakers WHERE name = ?", (name,)).fetchone()
        return None if r is None else json.loads(r[0])

    def save_breaker(self, name: str, state: Mapping) -> None:
        text = json.dumps(dict(state), sort_keys=True)
        with self._write() as conn:
            conn.execute("INSERT INTO breakers (name, state_json, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT (name) DO UPDATE SET state_json = excluded.state_json, "
                         "updated_at = excluded.updated_at", (name, text, self._now()))

    def breakers(self) -> dict[str, dict]:
        """Every persisted breaker state, by name."""
        with self._read() as conn:
            rows = conn.execute("SELECT name, state_json FROM breakers ORDER BY name")
            return {name: json.loads(text) for name, text in rows}


class SqliteBreakerStore:
    """The breaker registry's persistence (``load(name)`` / ``save(name, state)``) on a :class:`Store`."""

    def __init__(self, store: Store):
        self._store = store

    def load(self, name: str) -> dict | None:
        return self._store.load_breaker(name)

    def save(self, name: str, state: dict) -> None:
        self._store.save_breaker(name, state)

    def all(self) -> dict[str, dict]:
        return self._store.breakers()
