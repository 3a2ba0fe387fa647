"""Retry with capped exponential backoff, on tenacity, with Stave's clock.

``RetryConfig`` is the persisted settings; ``RetryPolicy`` runs a callable
under them. tenacity decides *when* to retry (its stop/wait/retry strategies);
Stave supplies the delays (``compute_delay``), the clock the deadline is
measured on, the sleep (interruptible by a :class:`CancelToken`) and the
classification of errors. The caller always sees the real last exception,
never tenacity's ``RetryError``.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field, fields
from typing import Any, Callable, TypeVar

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from core.resilience.cancel import CancelToken
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import Cancelled, ErrorInfo, ErrorKind, classify, info_for

T = TypeVar("T")

OnRetry = Callable[[int, float, ErrorInfo], None]
"""Hook called before each backoff sleep: (failed attempt number, delay_s, error)."""


class Jitter(str, enum.Enum):
    NONE = "none"  # the plain capped exponential
    FULL = "full"  # uniform in [0, d]
    EQUAL = "equal"  # d/2 + uniform in [0, d/2]


def _default_retry_on() -> frozenset[ErrorKind]:
    """The kinds the error vocabulary marks retryable (dependency-failed, timeout, crash, OOM)."""
    return frozenset(k for k in ErrorKind if info_for(k, "").retryable)


def capped_exponential(attempt: int, base_delay_s: float, multiplier: float, max_delay_s: float) -> float:
    """``min(max_delay_s, base_delay_s * multiplier ** (attempt - 1))`` without overflow.

    The exponent is compared in log space first, so attempt 10,000 (or 10**18)
    returns ``max_delay_s`` instead of raising ``OverflowError``.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    if multiplier < 1:
        raise ValueError(f"multiplier must be >= 1, got {multiplier}")
    if base_delay_s <= 0 or max_delay_s <= 0:
        return 0.0
    if base_delay_s >= max_delay_s:
        return float(max_delay_s)
    n = attempt - 1
    if multiplier == 1.0 or n == 0:
        return float(base_delay_s)
    # Number of doublings (in base `multiplier`) needed to reach the cap.
    to_cap = math.log(max_delay_s / base_delay_s) / math.log(multiplier)
    if n >= to_cap:
        return float(max_delay_s)
    return float(min(max_delay_s, base_delay_s * multiplier**n))


def compute_delay(
    attempt: int,
    *,
    base_delay_s: float,
    multiplier: float,
    max_delay_s: float,
    jitter: Jitter = Jitter.NONE,
    rng: random.Random | None = None,
) -> float:
    """The backoff after failed attempt ``attempt`` (1-based).

    With d = ``capped_exponential(...)``: none -> d; full -> uniform(0, d);
    equal -> d/2 + uniform(0, d/2). Jitter needs ``rng``.
    """
    d = capped_exponential(attempt, base_delay_s, multiplier, max_delay_s)
    jitter = Jitter(jitter)
    if jitter is Jitter.NONE or d == 0.0:
        return d
    if rng is None:
        raise ValueError(f"jitter {jitter.value!r} needs an rng")
    if jitter is Jitter.FULL:
        return min(d, rng.uniform(0.0, d))
    half = d / 2.0
    return min(d, half + rng.uniform(0.0, half))


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetryConfig:
    """How often and how patiently to retry one stage attempt."""

    max_attempts: int = 3
    base_delay_s: float = 1.0
    multiplier: float = 2.0
    max_delay_s: float = 30.0
    jitter: Jitter = Jitter.EQUAL
    retry_on: frozenset[ErrorKind] = field(default_factory=_default_retry_on)
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if _finite("base_delay_s", self.base_delay_s) < 0:
            raise ValueError(f"base_delay_s must be >= 0, got {self.base_delay_s}")
        if _finite("multiplier", self.multiplier) < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if _finite("max_delay_s", self.max_delay_s) < self.base_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must be >= base_delay_s ({self.base_delay_s})")
        try:
            object.__setattr__(self, "jitter", Jitter(self.jitter))
        except ValueError:
            raise ValueError(f"jitter must be one of {[j.value for j in Jitter]}, got {self.jitter!r}") from None
        if isinstance(self.retry_on, (str, ErrorKind)):
            raise TypeError(f"retry_on must be a collection of ErrorKind, got {self.retry_on!r}")
        try:
            kinds = frozenset(ErrorKind(k) for k in self.retry_on)
        except ValueError as e:
            raise ValueError(f"retry_on: {e}") from None
        if ErrorKind.CANCELLED in kinds:
            raise ValueError("retry_on must not contain 'cancelled': cancellation is never retried")
        object.__setattr__(self, "retry_on", kinds)
        if self.deadline_s is not None and _finite("deadline_s", self.deadline_s) <= 0:
            raise ValueError(f"deadline_s must be > 0 or None, got {self.deadline_s}")

    def delay_for(self, attempt: int, rng: random.Random | None) -> float:
        """The backoff after failed attempt ``attempt`` under this config (pure given ``rng``)."""
        return compute_delay(
            attempt,
            base_delay_s=self.base_delay_s,
            multiplier=self.multiplier,
            max_delay_s=self.max_delay_s,
            jitter=self.jitter,
            rng=rng,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_attempts": self.max_attempts,
            "base_delay_s": self.base_delay_s,
            "multiplier": self.multiplier,
            "max_delay_s": self.max_delay_s,
            "jitter": self.jitter.value,
            "retry_on": sorted(k.value for k in self.retry_on),
            "deadline_s": self.deadline_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RetryConfig":
        """Build from ``to_dict`` output; missing keys take defaults, unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"RetryConfig: unknown setting(s) {unknown}")
        kw = dict(d)
        if "retry_on" in kw:
            kw["retry_on"] = frozenset(kw["retry_on"])
        return cls(**kw)


class _WaitStave(wait_base):
    """tenacity wait strategy that asks Stave's ``delay_for`` for each backoff."""

    def __init__(self, delay_for: Callable[[int], float]):
        self._delay_for = delay_for

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self._delay_for(retry_state.attempt_number)


class _StopBeforeDeadline(stop_base):
    """Give up when the coming sleep would take the next attempt to or past the deadline.

    Time is read from Stave's clock, not tenacity's ``time.monotonic``.
    """

    def __init__(self, clock: Clock, started: float, deadline_s: float):
        self._clock = clock
        self._started = started
        self._deadline_s = deadline_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = self._clock.monotonic() - self._started
        return elapsed + float(retry_state.upcoming_sleep) >= self._deadline_s


class RetryPolicy:
    """Run a callable, retrying the error kinds its config names.

    Non-retryable kinds, ``Cancelled`` and ``KeyboardInterrupt`` propagate at
    once without a sleep. A cancel during the backoff raises ``Cancelled``
    immediately. After the last attempt (or before a sleep that would cross the
    deadline) the real last exception is raised. A policy holds no per-call
    state, so one instance may serve many threads.
    """

    def __init__(
        self,
        config: RetryConfig,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
        classifier: Callable[[BaseException], ErrorInfo] = classify,
        on_retry: OnRetry | None = None,
    ):
        self.config = config
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._classifier = classifier
        self._on_retry = on_retry

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """The backoff this policy sleeps after failed attempt ``attempt``."""
        return self.config.delay_for(attempt, rng if rng is not None else self._rng)

    def _classify(self, exc: BaseException) -> ErrorInfo | None:
        """The error's info when it may be retried, else None."""
        if isinstance(exc, (Cancelled, KeyboardInterrupt)) or not isinstance(exc, Exception):
            return None
        try:
            info = self._classifier(exc)
        except Exception:  # a broken classifier must not hide the real error
            return None
        if info.kind is ErrorKind.CANCELLED or info.kind not in self.config.retry_on or not info.retryable:
            return None
        return info

    def call(self, fn: Callable[..., T], *args: Any, cancel: CancelToken | None = None, **kw: Any) -> T:
        """``fn(*args, **kw)`` under this policy; ``cancel`` is checked before each attempt and during sleeps."""
        clock = self._clock
        last: dict[str, ErrorInfo] = {}

        def retryable(exc: BaseException) -> bool:
            info = self._classify(exc)
            if info is None:
                return False
            last["info"] = info
            return True

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            if self._on_retry is not None:
                self._on_retry(rs.attempt_number, float(rs.upcoming_sleep), last["info"])

        def sleep(delay: float) -> None:
            if not clock.sleep(float(delay), cancel) or (cancel is not None and cancel.is_set()):
                raise Cancelled((cancel.reason if cancel is not None else "") or "cancelled during retry backoff")

        def attempt() -> T:
            if cancel is not None:
                cancel.raise_if_cancelled()
            return fn(*args, **kw)

        stop: stop_base = tenacity.stop_after_attempt(self.config.max_attempts)
        if self.config.deadline_s is not None:
            stop = stop | _StopBeforeDeadline(clock, clock.monotonic(), self.config.deadline_s)
        retrying = tenacity.Retrying(
            sleep=sleep,
            stop=stop,
            wait=_WaitStave(self.delay_for),
            retry=tenacity.retry_if_exception(retryable),
            before_sleep=before_sleep,
            reraise=False,
        )
        try:
            return retrying(attempt)
        except tenacity.RetryError as e:
            real = e.last_attempt.exception()
            if real is None:  # cannot happen: we never retry on a result
                raise
        raise real  # outside the except block, so RetryError is not its __context__
