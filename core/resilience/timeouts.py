"""Deadlines and adaptive stage timeouts.

``Deadline`` is a monotonic countdown on an injected clock. ``AdaptiveTimeout``
predicts how long a stage may take on a file from how long it took on earlier
files (seconds of work per second of audio), so a ten-minute song is not
killed by a timeout sized for a jingle, and a hung tool is not waited on for
an hour. ``DurationHistory`` holds the recent samples in memory; the engine
persists them in its store.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterable, NamedTuple

from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import StageTimeout


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


class Deadline:
    """A countdown of ``seconds`` started at construction, on ``clock``'s monotonic time."""

    def __init__(self, seconds: float, clock: Clock = SYSTEM_CLOCK):
        if _number("seconds", seconds) < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.seconds = float(seconds)
        self._clock = clock
        self._start = clock.monotonic()

    def elapsed(self) -> float:
        return max(0.0, self._clock.monotonic() - self._start)

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self) -> bool:
        return self.elapsed() >= self.seconds

    def raise_if_expired(self, what: str = "operation") -> None:
        """Raise :class:`StageTimeout` naming ``what`` once the deadline has passed."""
        if self.expired():
            raise StageTimeout(f"{what} timed out after {self.seconds:g} s")

    def __repr__(self) -> str:
        return f"Deadline({self.seconds:g} s, remaining={self.remaining():.3g} s)"


@dataclass(frozen=True)
class AdaptiveTimeoutConfig:
    """How a stage's timeout is learnt from its history."""

    default_s: float = 600.0  # used until min_samples samples exist
    floor_s: float = 30.0
    ceiling_s: float = 3600.0
    percentile: float = 95.0  # of seconds-of-work per second-of-audio
    margin: float = 3.0  # multiplier on the predicted time
    min_samples: int = 5
    load_scaling: bool = True
    startup_s: float = 10.0  # fixed allowance for process start and imports

    def __post_init__(self) -> None:
        for name in ("default_s", "floor_s", "ceiling_s", "startup_s"):
            value = _number(name, getattr(self, name))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value}")
        if self.ceiling_s < self.floor_s:
            raise ValueError(f"ceiling_s ({self.ceiling_s}) must be >= floor_s ({self.floor_s})")
        if not 0 < _number("percentile", self.percentile) <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {self.percentile}")
        margin = _number("margin", self.margin)
        if not math.isfinite(margin) or margin < 1:
            raise ValueError(f"margin must be finite and >= 1, got {self.margin}")
        if isinstance(self.min_samples, bool) or not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise ValueError(f"min_samples must be an int >= 1, got {self.min_samples!r}")
        if not isinstance(self.load_scaling, bool):
            raise ValueError(f"load_scaling must be a bool, got {self.load_scaling!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdaptiveTimeoutConfig":
        """Build from ``to_dict`` output; missing keys take defaults, unknown keys are refused."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"AdaptiveTimeoutConfig: unknown setting(s) {unknown}")
        return cls(**d)


class DurationSample(NamedTuple):
    elapsed_s: float
    audio_s: float


def _valid_sample(elapsed_s: float, audio_s: float) -> bool:
    return math.isfinite(elapsed_s) and math.isfinite(audio_s) and elapsed_s >= 0 and audio_s > 0


class DurationHistory:
    """The most recent ``max_per_stage`` (elapsed_s, audio_s) samples of each stage, oldest first."""

    def __init__(self, max_per_stage: int = 50):
        if isinstance(max_per_stage, bool) or not isinstance(max_per_stage, int) or max_per_stage < 1:
            raise ValueError(f"max_per_stage must be an int >= 1, got {max_per_stage!r}")
        self.max_per_stage = max_per_stage
        self._samples: dict[str, deque[DurationSample]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, elapsed_s: float, audio_s: float) -> None:
        elapsed_s, audio_s = float(elapsed_s), float(audio_s)
        if not _valid_sample(elapsed_s, audio_s):
            raise ValueError(f"sample for {stage!r} needs elapsed_s >= 0 and audio_s > 0, got ({elapsed_s}, {audio_s})")
        with self._lock:
            q = self._samples.setdefault(stage, deque(maxlen=self.max_per_stage))
            q.append(DurationSample(elapsed_s, audio_s))

    def extend(self, stage: str, samples: Iterable[tuple[float, float]]) -> None:
        """Add many samples in order (e.g. when loading them from the store)."""
        for elapsed_s, audio_s in samples:
            self.add(stage, elapsed_s, audio_s)

    def samples(self, stage: str) -> list[DurationSample]:
        with self._lock:
            return list(self._samples.get(stage, ()))

    def stages(self) -> list[str]:
        with self._lock:
            return sorted(self._samples)


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def system_load() -> float:
    """One-minute load average per CPU (1.0 = every core busy)."""
    import psutil

    return psutil.getloadavg()[0] / (psutil.cpu_count() or 1)


@dataclass(frozen=True)
class TimeoutPrediction:
    """A predicted timeout and how it was reached (for the policy panels and logs)."""

    seconds: float
    source: str  # "history" or "default"
    rate: float | None  # chosen percentile of seconds per audio second
    load_scale: float
    samples: int


class AdaptiveTimeout:
    """Predict a stage's timeout for a file from the stage's history.

    ``(percentile rate * audio_s * margin + startup_s) * max(1, load)``,
    clamped to [floor_s, ceiling_s]. With fewer than ``min_samples`` valid
    samples it is ``default_s`` clamped.
    """

    def __init__(self, config: AdaptiveTimeoutConfig, load_fn: Callable[[], float] | None = None):
        self.config = config
        self._load_fn = load_fn if load_fn is not None else system_load

    def _clamp(self, seconds: float) -> float:
        return min(self.config.ceiling_s, max(self.config.floor_s, seconds))

    def load_scale(self) -> float:
        """``max(1, load)``; 1 when load scaling is off or the load cannot be read."""
        if not self.config.load_scaling:
            return 1.0
        try:
            load = float(self._load_fn())
        except Exception:  # the load is a hint; never fail a prediction over it
            return 1.0
        return max(1.0, load) if math.isfinite(load) else 1.0

    def predict(self, audio_s: float, samples: Iterable[tuple[float, float]]) -> TimeoutPrediction:
        if _number("audio_s", audio_s) < 0 or not math.isfinite(audio_s):
            raise ValueError(f"audio_s must be finite and >= 0, got {audio_s}")
        cfg = self.config
        rates = [e / a for e, a in samples if _valid_sample(float(e), float(a))]
        if len(rates) < cfg.min_samples:
            return TimeoutPrediction(self._clamp(cfg.default_s), "default", None, 1.0, len(rates))
        rate = percentile(rates, cfg.percentile)
        scale = self.load_scale()
        raw = (rate * audio_s * cfg.margin + cfg.startup_s) * scale
        return TimeoutPrediction(self._clamp(raw), "history", rate, scale, len(rates))

    def timeout_for(self, audio_s: float, samples: Iterable[tuple[float, float]]) -> float:
        """The predicted timeout in seconds."""
        return self.predict(audio_s, samples).seconds
