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


# --- classification -------------------------------------------------------
# A first, small mapping; the full classifier (decoder errors, exit statuses,
# errno values) is built out in this module.

_DEFAULTS: dict[ErrorKind, tuple[bool, bool, Severity, str]] = {
    # kind: (retryable, counts_for_breaker, severity, suggestion)
    ErrorKind.INPUT_CORRUPT: (False, False, Severity.ERROR, "Check that the file plays in another program; re-export or re-download it."),
    ErrorKind.INPUT_UNSUPPORTED: (False, False, Severity.ERROR, "Convert the file to WAV or FLAC, or install ffmpeg for more formats."),
    ErrorKind.INPUT_EMPTY: (False, False, Severity.WARNING, "The file holds no usable audio; remove it from the batch."),
    ErrorKind.DEPENDENCY_MISSING: (False, True, Severity.ERROR, "Run `stave health` to see what is missing and how to install it."),
    ErrorKind.DEPENDENCY_FAILED: (True, True, Severity.ERROR, "Run `stave health`; if the tool keeps failing, its fallback is used."),
    ErrorKind.TIMEOUT: (True, True, Severity.ERROR, "Raise the stage timeout in Settings, or check whether the machine is overloaded."),
    ErrorKind.WORKER_CRASH: (True, True, Severity.ERROR, "A worker process died; if the same file crashes it again it is quarantined."),
    ErrorKind.OUT_OF_MEMORY: (True, False, Severity.ERROR, "Use fewer workers, or close other programs, then retry the failed jobs."),
    ErrorKind.DISK_FULL: (False, False, Severity.FATAL, "Free space on the output drive, then resume the batch."),
    ErrorKind.PERMISSION: (False, False, Severity.ERROR, "Check the file's and the output folder's permissions."),
    ErrorKind.CANCELLED: (False, False, Severity.INFO, "Resume the batch to finish it."),
    ErrorKind.BUG: (False, False, Severity.ERROR, "This is a bug in Stave: please report it with the log file."),
}


def info_for(kind: ErrorKind, reason: str, *, suggestion: str | None = None, exc_type: str = "") -> ErrorInfo:
    retryable, counts, severity, default_suggestion = _DEFAULTS[kind]
    return ErrorInfo(
        kind=kind,
        reason=reason,
        suggestion=suggestion or default_suggestion,
        retryable=retryable,
        counts_for_breaker=counts,
        severity=severity,
        exc_type=exc_type,
    )


def classify(exc: BaseException) -> ErrorInfo:
    """Map any exception to an :class:`ErrorInfo`."""
    import errno

    name = type(exc).__name__
    if isinstance(exc, StaveError):
        return info_for(exc.kind, exc.reason, suggestion=exc.suggestion, exc_type=name)
    if isinstance(exc, KeyboardInterrupt):
        return info_for(ErrorKind.CANCELLED, "interrupted", exc_type=name)
    if isinstance(exc, MemoryError):
        return info_for(ErrorKind.OUT_OF_MEMORY, "ran out of memory", exc_type=name)
    if isinstance(exc, TimeoutError):
        return info_for(ErrorKind.TIMEOUT, str(exc) or "timed out", exc_type=name)
    if isinstance(exc, PermissionError):
        return info_for(ErrorKind.PERMISSION, f"permission denied: {exc.filename or exc}", exc_type=name)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return info_for(ErrorKind.DISK_FULL, "no space left on the output drive", exc_type=name)
    if isinstance(exc, ModuleNotFoundError):
        return info_for(ErrorKind.DEPENDENCY_MISSING, f"module not installed: {exc.name}", exc_type=name)
    return info_for(ErrorKind.BUG, f"{name}: {exc}", exc_type=name)
