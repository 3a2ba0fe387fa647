"""Fallback: when the primary way fails in a named way, take the alternative and say so.

E.g. Demucs separation failing (missing, crashed, timed out, breaker open)
falls back to harmonic/percussive separation; the result is marked degraded
with the reason, so a later run can upgrade it. Bad input never falls back by
default (the alternative would fail on it too), and cancellation never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Literal, TypeVar

from core.resilience.errors import Cancelled, ErrorInfo, ErrorKind, Severity, classify

T = TypeVar("T")

DEFAULT_FALLBACK_KINDS: frozenset[ErrorKind] = frozenset(
    {
        ErrorKind.DEPENDENCY_MISSING,
        ErrorKind.DEPENDENCY_FAILED,
        ErrorKind.TIMEOUT,
        ErrorKind.WORKER_CRASH,
        ErrorKind.OUT_OF_MEMORY,
    }
)


@dataclass(frozen=True)
class FallbackResult(Generic[T]):
    value: T
    degraded: bool
    reason: str  # empty when the primary succeeded
    error: ErrorInfo | None  # the primary's error when the alternative was used
    used: Literal["primary", "alternative"]


def _label(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class Fallback(Generic[T]):
    """Call ``primary``; on an error of a kind in ``on_kinds``, call ``alternative`` with the same arguments."""

    def __init__(
        self,
        primary: Callable[..., T],
        alternative: Callable[..., T],
        on_kinds: Iterable[ErrorKind | str] = DEFAULT_FALLBACK_KINDS,
        classifier: Callable[[BaseException], ErrorInfo] = classify,
        *,
        primary_name: str | None = None,
        alternative_name: str | None = None,
    ):
        if isinstance(on_kinds, (str, ErrorKind)):
            raise TypeError(f"on_kinds must be a collection of ErrorKind, got {on_kinds!r}")
        kinds = frozenset(ErrorKind(k) for k in on_kinds)
        if ErrorKind.CANCELLED in kinds:
            raise ValueError("on_kinds must not contain 'cancelled': a cancelled job never falls back")
        self.primary = primary
        self.alternative = alternative
        self.on_kinds = kinds
        self._classifier = classifier
        self.primary_name = primary_name or _label(primary)
        self.alternative_name = alternative_name or _label(alternative)

    def _triggering(self, exc: BaseException) -> ErrorInfo | None:
        """The primary's error info when it should trigger the alternative, else None."""
        if isinstance(exc, (Cancelled, KeyboardInterrupt)) or not isinstance(exc, Exception):
            return None
        try:
            info = self._classifier(exc)
        except Exception:  # a broken classifier must not hide the real error
            return None
        if info.kind is ErrorKind.CANCELLED or info.kind not in self.on_kinds or info.severity is Severity.FATAL:
            return None  # a fatal error (disk full, no workers) stops the batch; the alternative would fail too
        return info

    def call(self, *args: Any, **kw: Any) -> FallbackResult[T]:
        try:
            value = self.primary(*args, **kw)
        except BaseException as primary_exc:
            info = self._triggering(primary_exc)
            if info is None:
                raise
            first = primary_exc
        else:
            return FallbackResult(value, degraded=False, reason="", error=None, used="primary")

        try:
            value = self.alternative(*args, **kw)
        except Exception as alt_exc:
            raise alt_exc from first
        reason = f"{self.primary_name} failed ({info.kind.value}: {info.reason}); used {self.alternative_name}"
        return FallbackResult(value, degraded=True, reason=reason, error=info, used="alternative")
