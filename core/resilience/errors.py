"""Failure vocabulary: every failure becomes an :class:`ErrorInfo`.

``classify(exc)`` maps any exception, and ``classify_exit(code)`` a worker's
or an external tool's exit status, to a kind, a one-line reason and a
suggestion a person can act on. What the engine does with each kind is one
explicit table, :data:`POLICIES`.

This is the one place to import all of it from; the parts live in three
modules whose imports point one way only (kinds <- exit_status <- classify):

- :mod:`core.resilience.kinds`: the kinds, :class:`ErrorInfo`,
  :class:`StaveError` and its subclasses, the policy table (with the table
  of what is retried, counted and how severe) and :func:`info_for`;
- :mod:`core.resilience.exit_status`: exit statuses and signals, and the
  text patterns of decoders' and tools' messages;
- :mod:`core.resilience.classify`: exceptions, from OSError errnos and
  subprocess failures to optional libraries' errors.
"""

from __future__ import annotations

from core.resilience.classify import classify
from core.resilience.exit_status import FFMPEG_EXTENSIONS, SOUNDFILE_EXTENSIONS, classify_exit, signal_label
from core.resilience.kinds import (
    POLICIES,
    REASON_LIMIT,
    Cancelled,
    DependencyFailed,
    DependencyMissing,
    ErrorInfo,
    ErrorKind,
    InputError,
    KindPolicy,
    Severity,
    StageTimeout,
    StaveError,
    WorkerCrashed,
    WorkersUnavailable,
    info_for,
    one_line,
)

__all__ = [
    "FFMPEG_EXTENSIONS", "POLICIES", "REASON_LIMIT", "SOUNDFILE_EXTENSIONS",
    "Cancelled", "DependencyFailed", "DependencyMissing", "ErrorInfo", "ErrorKind", "InputError", "KindPolicy",
    "Severity", "StageTimeout", "StaveError", "WorkerCrashed", "WorkersUnavailable",
    "classify", "classify_exit", "info_for", "one_line", "signal_label",
]
