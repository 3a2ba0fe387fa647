"""Failure vocabulary: every failure becomes an :class:`ErrorInfo`.

``classify`` maps any exception, or a worker's exit status, to a kind, whether
it is retryable, whether it counts against a circuit breaker, a severity, a
one-line reason and a suggestion a person can act on.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class ErrorKind(str, enum.Enum):
    INPUT_CORRUPT = "input-corrupt"
    INPUT_UNSUPPORTED = "input-unsupported"
    INPUT_EMPTY = "input-empty"
    DEPENDENCY_MISSING = "dependency-missing"
    DEPENDENCY_FAILED = "dependency-failed"
    TIMEOUT = "timeout"
    WORKER_CRASH = "worker-crash"
    OUT_OF_MEMORY = "out-of-memory"
    DISK_FULL = "disk-full"
    PERMISSION = "permission"
    CANCELLED = "cancelled"
    BUG = "bug"

    @property
    def is_input(self) -> bool:
        return self in _INPUT_KINDS


_INPUT_KINDS = frozenset({ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED, ErrorKind.INPUT_EMPTY})


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    FATAL = "fatal"  # the batch cannot go on (disk full, permission on the output folder)


@dataclass(frozen=True)
class ErrorInfo:
    kind: ErrorKind
    reason: str
    suggestion: str
    retryable: bool
    counts_for_breaker: bool
    severity: Severity
    exc_type: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ErrorInfo":
        return cls(
            kind=ErrorKind(d["kind"]),
            reason=d["reason"],
            suggestion=d["suggestion"],
            retryable=bool(d["retryable"]),
            counts_for_breaker=bool(d["counts_for_breaker"]),
            severity=Severity(d["severity"]),
            exc_type=d.get("exc_type", ""),
        )


class StaveError(Exception):
    """An error Stave raises on purpose, carrying its kind.

    Stages raise these (or subclasses) when they know what went wrong; the
    classifier trusts the kind they carry.
    """

    kind: ErrorKind = ErrorKind.BUG

    def __init__(self, reason: str, *, suggestion: str | None = None, kind: ErrorKind | None = None):
        super().__init__(reason)
        self.reason = reason
        self.suggestion = suggestion
        if kind is not None:
            self.kind = kind


class InputError(StaveError):
    kind = ErrorKind.INPUT_CORRUPT


class DependencyMissing(StaveError):
    kind = ErrorKind.DEPENDENCY_MISSING


class DependencyFailed(StaveError):
    kind = ErrorKind.DEPENDENCY_FAILED


class StageTimeout(StaveError):
    kind = ErrorKind.TIMEOUT


class WorkerCrashed(StaveError):
    kind = ErrorKind.WORKER_CRASH

    def __init__(self, reason: str, *, exitcode: int | None = None, **kw):
        super().__init__(reason, **kw)
        self.exitcode = exitcode


class Cancelled(StaveError):
    kind = ErrorKind.CANCELLED
