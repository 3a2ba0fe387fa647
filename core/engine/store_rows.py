"""What the checkpoint store holds, as frozen dataclasses, and how SQL rows become them.

Statuses are ``str`` enums whose values are what the database stores. Paths
of inputs are stored as text: a path that is not valid UTF-8 (a POSIX name
decoded with ``surrogateescape``) is kept as an escaped JSON string, so it
comes back byte-for-byte (see :func:`path_to_text`).
"""

from __future__ import annotations

import enum
import json
import os
from dataclasses import dataclass

from core.engine.store_manifest import Artifact, manifest_from_json
from core.resilience.errors import ErrorInfo, ErrorKind, info_for


class BatchStatus(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    CANCELLED = "cancelled"


UNFINISHED_BATCH = (BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.INTERRUPTED)


class JobStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    QUARANTINED = "quarantined"


class StageStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    DEGRADED = "degraded"  # done, by a fallback

    @property
    def completed(self) -> bool:
        return self in (StageStatus.DONE, StageStatus.DEGRADED, StageStatus.SKIPPED)


class Outcome(str, enum.Enum):
    """How one stage attempt ended, in the append-only attempt log."""

    RUNNING = "running"
    DONE = "done"
    DEGRADED = "degraded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # Stave stopped (crash, power cut) while it ran


# --- paths as text ---------------------------------------------------------
_ESCAPED = "esc:"


def path_to_text(path: str | bytes | os.PathLike) -> str:
    """A path as storable UTF-8 text, reversible by :func:`path_from_text`."""
    s = os.fsdecode(path)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: a non-UTF-8 POSIX name
        return _ESCAPED + json.dumps(s)
    return _ESCAPED + json.dumps(s) if s.startswith(_ESCAPED) else s


def path_from_text(text: str) -> str:
    """The ``str`` path (``surrogateescape`` form) that :func:`path_to_text` stored."""
    return json.loads(text[len(_ESCAPED):]) if text.startswith(_ESCAPED) else text


# --- rows ------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRow:
    id: int
    created_at: float
    updated_at: float
    status: BatchStatus
    config: dict
    inputs: tuple[str, ...]
    notes: str


@dataclass(frozen=True)
class JobSpec:
    """A job to add: one input file."""

    input_path: str | bytes | os.PathLike
    song_id: str
    content_hash: str = ""
    size_bytes: int | None = None
    mtime: float | None = None
    audio_duration_s: float | None = None

    def __post_init__(self):
        if not self.song_id:
            raise ValueError("JobSpec.song_id must not be empty")


@dataclass(frozen=True)
class JobRow:
    id: int
    batch_id: int
    position: int
    input_path: str
    song_id: str
    content_hash: str
    size_bytes: int | None
    mtime: float | None
    audio_duration_s: float | None
    status: JobStatus
    degraded: bool
    degraded_reasons: tuple[str, ...]
    error_kind: ErrorKind | None
    error_reason: str  # also the reason a job was skipped
    error_suggestion: str
    error_stage: str | None
    crash_count: int
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def error(self) -> ErrorInfo | None:
        if self.error_kind is None:
            return None
        return info_for(self.error_kind, self.error_reason, suggestion=self.error_suggestion or None)


@dataclass(frozen=True)
class StageRow:
    job_id: int
    stage: str
    status: StageStatus
    attempts: int
    started_at: float | None
    finished_at: float | None
    elapsed_s: float | None
    error_kind: ErrorKind | None
    error_reason: str
    manifest: tuple[Artifact, ...]
    stage_version: str
    config_fingerprint: str
    degraded: bool
    degraded_reason: str


@dataclass(frozen=True)
class AttemptRow:
    id: int
    job_id: int
    stage: str
    attempt: int
    started_at: float
    finished_at: float | None
    outcome: Outcome
    error_kind: ErrorKind | None
    reason: str
    worker_pid: int | None


@dataclass(frozen=True)
class DurationRow:
    stage: str
    elapsed_s: float
    audio_s: float | None
    recorded_at: float


@dataclass(frozen=True)
class Recovered:
    """What :meth:`Store.recover_interrupted` put back to pending."""

    jobs: int
    stages: int
    attempts: int


# --- rows from SQL (the store selects these columns in this order) ---------------
BATCH_COLUMNS = "id, created_at, updated_at, status, config_json, inputs_json, notes"
JOB_COLUMNS = ("id, batch_id, position, input_path, song_id, content_hash, size_bytes, mtime, audio_duration_s, "
               "status, degraded, degraded_json, error_kind, error_reason, error_suggestion, error_stage, "
               "crash_count, attempts, created_at, started_at, finished_at")
STAGE_COLUMNS = ("job_id, stage, status, attempts, started_at, finished_at, elapsed_s, error_kind, error_reason, "
                 "manifest_json, stage_version, config_fingerprint, degraded, degraded_reason")
ATTEMPT_COLUMNS = "id, job_id, stage, attempt, started_at, finished_at, outcome, error_kind, reason, worker_pid"


def error_kind_of(value: str | None) -> ErrorKind | None:
    return None if value is None else ErrorKind(value)


def batch_from_sql(r) -> BatchRow:
    return BatchRow(id=r[0], created_at=r[1], updated_at=r[2], status=BatchStatus(r[3]),
                    config=json.loads(r[4]), inputs=tuple(path_from_text(p) for p in json.loads(r[5])), notes=r[6])


def job_from_sql(r) -> JobRow:
    return JobRow(id=r[0], batch_id=r[1], position=r[2], input_path=path_from_text(r[3]), song_id=r[4],
                  content_hash=r[5], size_bytes=r[6], mtime=r[7], audio_duration_s=r[8], status=JobStatus(r[9]),
                  degraded=bool(r[10]), degraded_reasons=() if r[11] == "[]" else tuple(json.loads(r[11])),
                  error_kind=error_kind_of(r[12]), error_reason=r[13], error_suggestion=r[14], error_stage=r[15],
                  crash_count=r[16], attempts=r[17], created_at=r[18], started_at=r[19], finished_at=r[20])


def stage_from_sql(r) -> StageRow:
    return StageRow(job_id=r[0], stage=r[1], status=StageStatus(r[2]), attempts=r[3], started_at=r[4],
                    finished_at=r[5], elapsed_s=r[6], error_kind=error_kind_of(r[7]), error_reason=r[8],
                    manifest=manifest_from_json(r[9]), stage_version=r[10], config_fingerprint=r[11],
                    degraded=bool(r[12]), degraded_reason=r[13])


def attempt_from_sql(r) -> AttemptRow:
    return AttemptRow(id=r[0], job_id=r[1], stage=r[2], attempt=r[3], started_at=r[4], finished_at=r[5],
                      outcome=Outcome(r[6]), error_kind=error_kind_of(r[7]), reason=r[8], worker_pid=r[9])


def job_status_values(status) -> list[str] | None:
    if status is None:
        return None
    if isinstance(status, (str, JobStatus)):
        return [JobStatus(status).value]
    return [JobStatus(s).value for s in status]
