"""Circuit breaker for one external dependency (Demucs, Basic Pitch, ffmpeg).

States go CLOSED -> OPEN -> HALF_OPEN -> CLOSED (or back to OPEN). The guarded
call usually runs in a worker process, so the primary API is a permit::

    permit = breaker.acquire()            # raises BreakerOpenError when rejected
    ... run the stage ...
    breaker.record_success(permit, duration_s)
    breaker.record_failure(permit, error, duration_s)
    breaker.release(permit)               # excluded / cancelled: counts as neither

The lock guards state updates only: never the guarded call, the store or the
listeners. Time comes from an injected clock; time-driven changes (cooldown
over, hung probe expired) are applied whenever the breaker is next looked at.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from core.resilience.clock import Clock
from core.resilience.errors import DependencyFailed, ErrorInfo, ErrorKind, classify

if TYPE_CHECKING:  # the store protocol lives with the registry, which imports this module
    from core.resilience.breaker_registry import BreakerStore
log = logging.getLogger(__name__)
T = TypeVar("T")
_STATE_VERSION = 1


class BreakerState(str, enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


_DEFAULT_EXCLUDED = frozenset(
    {ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED, ErrorKind.INPUT_EMPTY, ErrorKind.CANCELLED}
)


@dataclass(frozen=True)
class BreakerConfig:
    """How a breaker judges its dependency. Defaults fit a desktop batch of a dozen files.

    It opens after ``failure_threshold`` consecutive failures, or once at least
    ``min_calls`` of the last ``window_size`` calls were seen and their failure
    share reached ``failure_rate`` (either test may be None = off). A call
    slower than ``slow_call_s`` counts as failed. After ``cooldown_s`` up to
    ``half_open_max_calls`` probes run at once; ``half_open_successes``
    successes close it, any failure reopens it, and a probe not back within
    ``half_open_max_wait_s`` counts as failed (keep it above the stage timeout).
    ``excluded_kinds`` count as neither; cancellation never counts.
    """

    failure_threshold: int | None = 3
    failure_rate: float | None = 0.5
    window_size: int = 10
    min_calls: int = 4
    slow_call_s: float | None = None
    cooldown_s: float = 30.0
    half_open_max_calls: int = 1
    half_open_successes: int = 1
    half_open_max_wait_s: float = 600.0
    excluded_kinds: frozenset[ErrorKind] = field(default=_DEFAULT_EXCLUDED)

    def __post_init__(self) -> None:
        _check_int("failure_threshold", self.failure_threshold, 1, optional=True)
        if self.failure_rate is not None:
            rate = _check_float("failure_rate", self.failure_rate, 0.0, open_low=True)
            if rate > 1.0:
                raise ValueError(f"failure_rate must be in (0, 1], got {rate}")
            object.__setattr__(self, "failure_rate", rate)
        if self.failure_threshold is None and self.failure_rate is None:
            raise ValueError("failure_threshold and failure_rate cannot both be None: the breaker could never open")
        _check_int("window_size", self.window_size, 1)
        _check_int("min_calls", self.min_calls, 1)
        if self.min_calls > self.window_size:
            raise ValueError(f"min_calls ({self.min_calls}) must not exceed window_size ({self.window_size})")
        if self.slow_call_s is not None:
            object.__setattr__(self, "slow_call_s", _check_float("slow_call_s", self.slow_call_s, 0.0, open_low=True))
        object.__setattr__(self, "cooldown_s", _check_float("cooldown_s", self.cooldown_s, 0.0))
        _check_int("half_open_max_calls", self.half_open_max_calls, 1)
        _check_int("half_open_successes", self.half_open_successes, 1)
        wait = _check_float("half_open_max_wait_s", self.half_open_max_wait_s, 0.0, open_low=True)
        object.__setattr__(self, "half_open_max_wait_s", wait)
        if isinstance(self.excluded_kinds, (str, bytes)):
            raise ValueError("excluded_kinds must be a collection of error kinds, not a string")
        try:
            kinds = frozenset(ErrorKind(k) for k in self.excluded_kinds)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"excluded_kinds: {exc}") from None
        object.__setattr__(self, "excluded_kinds", kinds)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["excluded_kinds"] = sorted(k.value for k in self.excluded_kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BreakerConfig":
        """Build from a dict (missing keys take defaults; unknown keys are refused by name)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown breaker setting(s): {', '.join(unknown)}")
        return cls(**d)


def _check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")


def _check_float(name: str, value: Any, low: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (open_low and value == low):
        raise ValueError(f"{name} must be {'greater than' if open_low else 'at least'} {low}, got {value}")
    return float(value)


class BreakerOpenError(DependencyFailed):
    """A call was rejected because its breaker is open (or half-open and busy)."""

    retryable = False  # retrying at once is pointless: take the fallback, or wait for the next probe

    def __init__(
        self, breaker: str, retry_at: float | None = None, retry_in_s: float | None = None, probing: bool = False
    ):
        self.breaker = breaker
        self.retry_at = retry_at  # wall time of the next probe, None when forced open
        self.retry_in_s = retry_in_s
        self.probing = probing
        if retry_in_s is None:
            reason = f"breaker '{breaker}' was forced open; it stays open until it is reset"
        else:
            due = time.strftime("%H:%M:%S", time.localtime(retry_at)) if retry_at is not None else "?"
            when = f"within {retry_in_s:.1f} s (at {due})" if probing else f"in {retry_in_s:.1f} s (at {due})"
            state = "half-open and its probes are running" if probing else "open"
            reason = f"breaker '{breaker}' is {state}; next probe {when}"
        suggestion = "The stage's fallback is used meanwhile; run `stave health` to see why the dependency fails."
        super().__init__(reason, suggestion=suggestion)

    def __reduce__(self):
        return (type(self), (self.breaker, self.retry_at, self.retry_in_s, self.probing))


@dataclass(frozen=True)
class BreakerSnapshot:
    """What a panel or `stave status` shows about one breaker."""

    name: str
    state: BreakerState
    failure_count: int
    success_count: int
    consecutive_failures: int
    failure_rate: float
    calls_in_window: int
    opened_at_wall: float | None
    next_probe_in_s: float | None
    disabled: bool
    forced: bool

    def to_dict(self) -> dict:
        d = asdict(self)
        d["state"] = self.state.value
        return d


BreakerListener = Callable[[str, BreakerState, BreakerState, BreakerSnapshot], None]


class Permit:
    """Leave to make one guarded call; give it back through exactly one record/release."""

    __slots__ = ("breaker", "id", "generation", "probe", "acquired_at", "disabled", "settled")

    def __init__(self, breaker: str, id: int, generation: int, probe: bool, acquired_at: float, disabled: bool = False):
        self.breaker = breaker
        self.id = id
        self.generation = generation
        self.probe = probe
        self.acquired_at = acquired_at  # monotonic
        self.disabled = disabled
        self.settled = False

    def __repr__(self) -> str:
        kind = "probe" if self.probe else "call"
        return f"Permit({self.breaker!r}, #{self.id} {kind}, settled={self.settled})"


class CircuitBreaker:
    """Breaker for one dependency; thread-safe; state optionally kept in a ``BreakerStore``."""

    def __init__(
        self, name: str, config: BreakerConfig | None = None, *, clock: Clock, store: BreakerStore | None = None
    ):
        self.name = name
        self._config = config or BreakerConfig()
        self._clock = clock
        self._store = store
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._window: deque[bool] = deque(maxlen=self._config.window_size)  # True = failure
        self._consecutive = 0
        self._failures = 0
        self._successes = 0
        self._half_open_successes = 0
        self._probes: dict[int, Permit] = {}
        self._opened_at_wall: float | None = None
        self._probe_due: float | None = None  # monotonic; None when forced or not open
        self._forced = False
        self._disabled = False
        self._listeners: list[BreakerListener] = []
        self._events: deque[tuple[BreakerState, BreakerState, BreakerSnapshot]] = deque()
        self._notify_lock = threading.Lock()
        self._seq = 0
        self._save_lock = threading.Lock()
        self._saved_seq = 0
        if store is not None:
            self._load(store)

    # --- public API -------------------------------------------------------
    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def state(self) -> BreakerState:
        return self.snapshot().state

    def acquire(self) -> Permit:
        """Return a permit for one call, or raise :class:`BreakerOpenError`."""
        with self._lock:
            now = self._clock.monotonic()
            self._tick(now)
            error = None
            if self._disabled or self._state is BreakerState.CLOSED:
                permit = Permit(self.name, next(self._ids), self._generation, False, now, self._disabled)
            elif self._state is BreakerState.HALF_OPEN and len(self._probes) < self._config.half_open_max_calls:
                permit = Permit(self.name, next(self._ids), self._generation, True, now)
                self._probes[permit.id] = permit
            else:
                error = self._rejection(now)
            saved = self._pending_save()
        self._after(saved)
        if error is not None:
            raise error
        return permit

    def record_success(self, permit: Permit, duration_s: float | None = None) -> None:
        """The call succeeded; a call slower than ``slow_call_s`` counts as a failure."""
        slow = self._config.slow_call_s
        self._settle(permit, failed=self._duration(permit, duration_s) > slow if slow is not None else False)

    def record_failure(self, permit: Permit, error: ErrorInfo | BaseException, duration_s: float | None = None) -> None:
        """The call failed; excluded kinds and errors that do not count for a breaker are released."""
        if self._counts(error):
            self._settle(permit, failed=True)
        else:
            self.release(permit)

    def release(self, permit: Permit) -> None:
        """Give the permit back counting neither success nor failure (frees a half-open slot)."""
        self._settle(permit, failed=None)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` under the breaker; its own errors propagate (also the one that trips it)."""
        permit = self.acquire()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record_failure(permit, exc)
            raise
        self.record_success(permit)
        return result

    def add_listener(self, fn: BreakerListener) -> None:
        """``fn(name, old, new, snapshot)`` is called after every transition, outside the lock, in order."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: BreakerListener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def reset(self) -> None:
        """Close by hand, forgetting every count."""
        with self._lock:
            now = self._clock.monotonic()
            self._forced = False
            self._failures = self._successes = 0
            self._transition(BreakerState.CLOSED, now, force=True)
            saved = self._pending_save()
        self._after(saved)

    def force_open(self) -> None:
        """Open by hand; no probe is let through until :meth:`reset`."""
        with self._lock:
            self._transition(BreakerState.OPEN, self._clock.monotonic(), force=True, forced=True)
            saved = self._pending_save()
        self._after(saved)

    def disable(self) -> None:
        """Let every call through and record nothing until :meth:`enable`."""
        self._set_disabled(True)

    def enable(self) -> None:
        self._set_disabled(False)

    def configure(self, config: BreakerConfig) -> None:
        """Swap in a new config (e.g. from the settings dialog), keeping state and counts."""
        with self._lock:
            self._config = config
            self._window = deque(self._window, maxlen=config.window_size)
            if self._state is BreakerState.OPEN and self._probe_due is not None:
                now = self._clock.monotonic()
                self._probe_due = min(self._probe_due, now + config.cooldown_s)
            saved = self._pending_save()
        self._after(saved)

    def snapshot(self) -> BreakerSnapshot:
        with self._lock:
            now = self._clock.monotonic()
            self._tick(now)
            snap = self._snapshot(now)
            saved = self._pending_save()
        self._after(saved)
        return snap

    # --- state machine (call with the lock held) ---------------------------
    def _tick(self, now: float) -> None:
        if self._state is BreakerState.OPEN and self._probe_due is not None and now >= self._probe_due:
            self._transition(BreakerState.HALF_OPEN, now)
        if self._state is BreakerState.HALF_OPEN:
            limit = self._config.half_open_max_wait_s
            hung = [p for p in self._probes.values() if now - p.acquired_at >= limit]
            if hung:  # a probe that never came back counts as failed and frees its slot
                for p in hung:
                    p.settled = True
                self._failures += 1
                self._consecutive += 1
                self._transition(BreakerState.OPEN, now)

    def _settle(self, permit: Permit, failed: bool | None) -> None:
        if permit.breaker != self.name:
            raise ValueError(f"permit {permit!r} belongs to breaker '{permit.breaker}', not '{self.name}'")
        with self._lock:
            now = self._clock.monotonic()
            self._tick(now)  # a probe back after half_open_max_wait_s was already counted failed
            if not permit.settled:
                permit.settled = True
                self._probes.pop(permit.id, None)
                if failed is not None and not (permit.disabled or self._disabled):
                    self._record(permit, failed, now)
            saved = self._pending_save()
        self._after(saved)

    def _record(self, permit: Permit, failed: bool, now: float) -> None:
        self._seq += 1
        if failed:
            self._failures += 1
        else:
            self._successes += 1
        if permit.generation != self._generation:
            return  # from before the last transition: counted in the totals only
        if self._state is BreakerState.HALF_OPEN:
            if failed:
                self._consecutive += 1
                self._transition(BreakerState.OPEN, now)
            else:
                self._half_open_successes += 1
                if self._half_open_successes >= self._config.half_open_successes:
                    self._transition(BreakerState.CLOSED, now)
            return
        if self._state is not BreakerState.CLOSED:
            return
        self._window.append(failed)
        self._consecutive = self._consecutive + 1 if failed else 0
        if failed and self._should_trip():
            self._transition(BreakerState.OPEN, now)

    def _should_trip(self) -> bool:
        cfg = self._config
        if cfg.failure_threshold is not None and self._consecutive >= cfg.failure_threshold:
            return True
        n = len(self._window)
        return cfg.failure_rate is not None and n >= cfg.min_calls and sum(self._window) / n >= cfg.failure_rate

    def _transition(self, new: BreakerState, now: float, *, force: bool = False, forced: bool = False) -> None:
        old = self._state
        if old is new and not force:
            return
        self._state = new
        self._generation += 1
        self._seq += 1
        self._probes.clear()
        self._half_open_successes = 0
        if new is BreakerState.OPEN:
            self._opened_at_wall = self._clock.wall()
            self._probe_due = None if forced else now + self._config.cooldown_s
            self._forced = forced
        elif new is BreakerState.CLOSED:
            self._window.clear()
            self._consecutive = 0
            self._opened_at_wall = None
            self._probe_due = None
        if old is not new:
            self._events.append((old, new, self._snapshot(now)))

    def _rejection(self, now: float) -> BreakerOpenError:
        if self._state is BreakerState.HALF_OPEN:
            oldest = min(p.acquired_at for p in self._probes.values())
            wait = max(0.0, oldest + self._config.half_open_max_wait_s - now)
            return BreakerOpenError(self.name, self._clock.wall() + wait, wait, probing=True)
        if self._probe_due is None:
            return BreakerOpenError(self.name)
        wait = max(0.0, self._probe_due - now)
        return BreakerOpenError(self.name, self._clock.wall() + wait, wait)

    def _snapshot(self, now: float) -> BreakerSnapshot:
        n = len(self._window)
        due = None
        if self._state is BreakerState.OPEN and self._probe_due is not None:
            due = max(0.0, self._probe_due - now)
        return BreakerSnapshot(
            name=self.name,
            state=self._state,
            failure_count=self._failures,
            success_count=self._successes,
            consecutive_failures=self._consecutive,
            failure_rate=sum(self._window) / n if n else 0.0,
            calls_in_window=n,
            opened_at_wall=self._opened_at_wall,
            next_probe_in_s=due,
            disabled=self._disabled,
            forced=self._forced,
        )

    def _set_disabled(self, disabled: bool) -> None:
        with self._lock:
            if self._disabled != disabled:
                self._disabled = disabled
                self._seq += 1
            saved = self._pending_save()
        self._after(saved)

    def _counts(self, error: ErrorInfo | BaseException) -> bool:
        if isinstance(error, BaseException):
            if not isinstance(error, Exception):
                return False  # KeyboardInterrupt, SystemExit, GeneratorExit: never a failure
            error = classify(error)
        kind = error.kind
        if kind is ErrorKind.CANCELLED or kind in self._config.excluded_kinds:
            return False
        return error.counts_for_breaker

    def _duration(self, permit: Permit, duration_s: float | None) -> float:
        return duration_s if duration_s is not None else self._clock.monotonic() - permit.acquired_at

    # --- persistence and notification (outside the lock) -------------------
    def _pending_save(self) -> tuple[int, dict] | None:
        if self._store is None or self._seq <= self._saved_seq:
            return None
        now_wall = self._clock.wall()
        due = self._probe_due
        return self._seq, {
            "version": _STATE_VERSION,
            "state": self._state.value,
            "opened_at_wall": self._opened_at_wall,
            "open_until_wall": None if due is None else now_wall + max(0.0, due - self._clock.monotonic()),
            "forced": self._forced,
            "disabled": self._disabled,
            "failure_count": self._failures,
            "success_count": self._successes,
            "consecutive_failures": self._consecutive,
            "window": [int(f) for f in self._window],
            "saved_at_wall": now_wall,
        }

    def _after(self, saved: tuple[int, dict] | None) -> None:
        if saved is not None and self._store is not None:
            with self._save_lock:
                seq, data = saved
                if seq > self._saved_seq:
                    try:
                        self._store.save(self.name, data)
                    except Exception:
                        log.exception("could not save the state of breaker '%s'", self.name)
                    self._saved_seq = seq
        self._notify()

    def _notify(self) -> None:
        # Whoever holds _notify_lock delivers every queued event in order; others return at once.
        while self._events:
            if not self._notify_lock.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._events:
                            break
                        old, new, snap = self._events.popleft()
                        listeners = list(self._listeners)
                    for fn in listeners:
                        try:
                            fn(self.name, old, new, snap)
                        except Exception:
                            log.exception("listener of breaker '%s' failed", self.name)
            finally:
                self._notify_lock.release()

    def _load(self, store: BreakerStore) -> None:
        try:
            data = store.load(self.name)
            if data is None:
                return
            if data.get("version") != _STATE_VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            state = BreakerState(data["state"])
            window = [bool(f) for f in data.get("window", [])]
            counts = [int(data[k]) for k in ("failure_count", "success_count", "consecutive_failures")]
            opened = data.get("opened_at_wall")
            until = data.get("open_until_wall")
            opened = None if opened is None else float(opened)
            until = None if until is None else float(until)
        except Exception as exc:
            log.warning("ignoring the saved state of breaker '%s': %s", self.name, exc)
            return
        now, now_wall = self._clock.monotonic(), self._clock.wall()
        cooldown = self._config.cooldown_s
        self._state = state
        self._window.extend(window)
        self._failures, self._successes, self._consecutive = counts
        self._forced = bool(data.get("forced")) and state is BreakerState.OPEN
        self._disabled = bool(data.get("disabled"))
        if state is not BreakerState.CLOSED:
            if opened is None or opened > now_wall:  # opened "in the future": the clock moved back
                opened, remaining = now_wall, cooldown
            else:
                remaining = (opened + cooldown if until is None else until) - now_wall
            self._opened_at_wall = opened
            if state is BreakerState.OPEN and not self._forced:
                self._probe_due = now + min(cooldown, max(0.0, remaining))
