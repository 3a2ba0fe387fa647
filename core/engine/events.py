"""Typed engine events and the bus that carries them.

The engine publishes plain frozen dataclasses from whatever thread it runs on.
Subscribers (the CLI's progress display, the GUI's Qt bridge, tests) are
called synchronously on the publishing thread and must be quick; the GUI
bridge re-posts them to its own thread and coalesces them.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Base of every engine event; ``event_to_dict`` gives its JSON form."""


# --- batch -----------------------------------------------------------------
@dataclass(frozen=True)
class BatchStarted(Event):
    batch_id: int
    total_jobs: int
    resumed: bool = False


@dataclass(frozen=True)
class BatchPaused(Event):
    batch_id: int
    reason: str = ""


@dataclass(frozen=True)
class BatchResumed(Event):
    batch_id: int


@dataclass(frozen=True)
class BatchFinished(Event):
    batch_id: int
    status: str  # finished | paused | cancelled | interrupted
    counts: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


# --- jobs ------------------------------------------------------------------
@dataclass(frozen=True)
class JobQueued(Event):
    """A job joined the queue, or went back to it (``reason``: paused, or stopped by a batch-wide error)."""

    batch_id: int
    job_id: int
    path: str
    song_id: str
    reason: str = ""


@dataclass(frozen=True)
class JobStarted(Event):
    job_id: int
    path: str


@dataclass(frozen=True)
class JobFinished(Event):
    job_id: int
    path: str
    elapsed_s: float
    degraded: bool = False
    degraded_reasons: tuple[str, ...] = ()
    summary: dict = field(default_factory=dict)
    reused_from_batch: int | None = None  # unchanged since that batch analysed it: its results, nothing ran


@dataclass(frozen=True)
class JobFailed(Event):
    job_id: int
    path: str
    stage: str
    kind: str
    reason: str
    suggestion: str
    quarantined: bool = False


@dataclass(frozen=True)
class JobSkipped(Event):
    job_id: int
    path: str
    reason: str


@dataclass(frozen=True)
class JobCancelled(Event):
    """The job was cancelled (on its own, or with its batch); "retry failed" queues it again."""

    job_id: int
    path: str


# --- stages ----------------------------------------------------------------
@dataclass(frozen=True)
class StageStarted(Event):
    job_id: int
    stage: str
    attempt: int
    timeout_s: float | None = None


@dataclass(frozen=True)
class StageWaiting(Event):
    """A job in progress has its next stage ready, but every worker is busy with other jobs' stages (one job
    more is in flight than there are workers, or a worker is held by a slow or hung tool). ``StageStarted``
    follows when a worker takes it."""

    job_id: int
    stage: str


@dataclass(frozen=True)
class StageRetrying(Event):
    job_id: int
    stage: str
    attempt: int
    delay_s: float
    kind: str
    reason: str


@dataclass(frozen=True)
class StageFinished(Event):
    job_id: int
    stage: str
    elapsed_s: float
    skipped: bool = False  # True when its artifacts from an earlier run still verified


@dataclass(frozen=True)
class StageFailed(Event):
    job_id: int
    stage: str
    kind: str
    reason: str


@dataclass(frozen=True)
class StageDegraded(Event):
    job_id: int
    stage: str
    reason: str


# --- policies and health ---------------------------------------------------
@dataclass(frozen=True)
class BreakerChanged(Event):
    name: str
    old: str
    new: str
    snapshot: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HealthChanged(Event):
    report: dict


@dataclass(frozen=True)
class Progress(Event):
    batch_id: int
    done: int
    failed: int
    total: int
    audio_s_done: float
    eta_s: float | None
    running: tuple[tuple[int, str], ...] = ()  # (job_id, stage) now running


@dataclass(frozen=True)
class LogMessage(Event):
    level: str
    message: str
    job_id: int | None = None


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan-out of events to subscribers; a failing subscriber never breaks the engine."""

    def __init__(self) -> None:
        self._subs: list[tuple[Subscriber, tuple[type, ...] | None]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber, *types: type[Event]) -> Callable[[], None]:
        entry = (fn, types or None)
        with self._lock:
            self._subs.append(entry)

        def unsubscribe() -> None:
            with self._lock:
                if entry in self._subs:
                    self._subs.remove(entry)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for fn, types in subs:
            if types is not None and not isinstance(event, types):
                continue
            try:
                fn(event)
            except Exception:  # a broken subscriber must not stop a batch
                log.exception("event subscriber %r failed on %s", fn, type(event).__name__)


def event_to_dict(event: Event) -> dict[str, Any]:
    """JSON-ready form: ``{"event": "JobFinished", ...fields}``."""
    return {"event": type(event).__name__} | asdict(event)
