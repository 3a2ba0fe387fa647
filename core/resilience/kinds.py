"""The failure vocabulary: kinds, severities, :class:`ErrorInfo`, Stave's own errors and the policy table.

Every failure ends as an :class:`ErrorInfo`: a kind, a one-line reason and a
suggestion a person can act on. What the engine does with each kind is one
explicit table, :data:`POLICIES`:

=================  =========  =======  ========  ==========================
kind               retried    breaker  severity  why
=================  =========  =======  ========  ==========================
input-corrupt      no         no       error     the file will not change
input-unsupported  no         no       error     idem
input-empty        no         no       warning   idem
dependency-missing no         yes      error     retrying cannot install it;
                                                 the breaker routes to the
                                                 stage's fallback
dependency-failed  yes        yes      error     tools fail transiently
timeout            yes        yes      error     a hung tool is a sick tool
worker-crash       yes        yes      error     quarantined after N crashes
out-of-memory      yes        no       error     the machine, not the tool
disk-full          no         no       fatal     the batch must stop
permission         no         no       error     needs a person
cancelled          no         no       info      never a failure
bug                no         no       error     needs a fix, not a retry
=================  =========  =======  ========  ==========================

This module classifies nothing; mapping exceptions and exit statuses to
these kinds lives in :mod:`core.resilience.classify` and
:mod:`core.resilience.exit_status`. Import the lot from
:mod:`core.resilience.errors`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Mapping


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
    severity: Severity | None = None  # None: the kind's own severity (POLICIES)
    retryable: bool | None = None  # None: the kind's own policy

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


class WorkersUnavailable(StaveError):
    """No worker process could be started (or none took a task in time): not any file's fault.

    Fatal, so the batch pauses with this reason instead of failing or
    quarantining every file in turn.
    """

    kind = ErrorKind.WORKER_CRASH
    severity = Severity.FATAL
    retryable = False


class Cancelled(StaveError):
    kind = ErrorKind.CANCELLED


# --- the policy table ---------------------------------------------------------


@dataclass(frozen=True)
class KindPolicy:
    """What the engine does with one kind of failure (see the module table)."""

    retryable: bool
    counts_for_breaker: bool
    severity: Severity
    suggestion: str


def _p(retry: bool, counts: bool, severity: Severity, suggestion: str) -> KindPolicy:
    return KindPolicy(retry, counts, severity, suggestion)


POLICIES: Mapping[ErrorKind, KindPolicy] = MappingProxyType({
    ErrorKind.INPUT_CORRUPT: _p(False, False, Severity.ERROR, "Check that the file plays in another program; re-export or re-download it."),
    ErrorKind.INPUT_UNSUPPORTED: _p(False, False, Severity.ERROR, "Convert the file to WAV or FLAC, or install ffmpeg for more formats."),
    ErrorKind.INPUT_EMPTY: _p(False, False, Severity.WARNING, "The file holds no usable audio; remove it from the batch."),
    ErrorKind.DEPENDENCY_MISSING: _p(False, True, Severity.ERROR, "Run `stave health` to see what is missing and how to install it."),
    ErrorKind.DEPENDENCY_FAILED: _p(True, True, Severity.ERROR, "Run `stave health`; if the tool keeps failing, its fallback is used."),
    ErrorKind.TIMEOUT: _p(True, True, Severity.ERROR, "Raise the stage timeout in Settings, or check whether the machine is overloaded."),
    ErrorKind.WORKER_CRASH: _p(True, True, Severity.ERROR, "A worker process died; if the same file crashes it again it is quarantined."),
    ErrorKind.OUT_OF_MEMORY: _p(True, False, Severity.ERROR, "Use fewer workers, or close other programs, then retry the failed jobs."),
    ErrorKind.DISK_FULL: _p(False, False, Severity.FATAL, "Free space on the output drive, then resume the batch."),
    ErrorKind.PERMISSION: _p(False, False, Severity.ERROR, "Check the file's and the output folder's permissions."),
    ErrorKind.CANCELLED: _p(False, False, Severity.INFO, "Resume the batch to finish it."),
    ErrorKind.BUG: _p(False, False, Severity.ERROR, "This is a bug in Stave: please report it with the log file."),
})

REASON_LIMIT = 200


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def info_for(kind: ErrorKind, reason: str, *, suggestion: str | None = None, exc_type: str = "") -> ErrorInfo:
    policy = POLICIES[kind]
    return ErrorInfo(
        kind=kind,
        reason=one_line(reason) or kind.value,
        suggestion=suggestion or policy.suggestion,
        retryable=policy.retryable,
        counts_for_breaker=policy.counts_for_breaker,
        severity=policy.severity,
        exc_type=exc_type,
    )
