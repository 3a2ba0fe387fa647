"""The dependency health report: Qt-free data that the CLI prints and the GUI renders.

A :class:`HealthCheck` is a named probe; a :class:`HealthRegistry` runs probes,
each in its own thread with its own deadline, so a probe that hangs is
reported as ``error: timed out after Ns`` and the report still completes.
Probes return a :class:`CheckOutcome`; the registry turns it into a
:class:`HealthResult` by adding what the check declares (required, what it
unlocks, how to install it) and what it measured (latency, wall time).

The standard checks live in :mod:`core.resilience.health_checks`;
:func:`default_registry` builds a fresh registry with them.
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, MutableMapping

from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import ErrorKind, classify


class HealthStatus(str, enum.Enum):
    OK = "ok"
    DEGRADED = "degraded"  # works, but less well (fallback, low resources)
    MISSING = "missing"  # not installed / not found
    ERROR = "error"  # present but broken, timed out or failed

    @property
    def is_failure(self) -> bool:
        return self in (HealthStatus.MISSING, HealthStatus.ERROR)


@dataclass(frozen=True)
class CheckOutcome:
    """What a probe found. ``install_hint`` overrides the check's own hint when set."""

    status: HealthStatus
    version: str = ""
    details: str = ""
    install_hint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=timezone.utc).isoformat(timespec="seconds")


def _from_iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class HealthResult:
    name: str
    status: HealthStatus
    version: str = ""
    details: str = ""
    unlocks: str = ""  # what works when it is present
    install_hint: str = ""  # the exact command that fixes it
    required: bool = True
    latency_s: float = 0.0
    checked_at: float = 0.0  # wall time, seconds since the epoch
    extra: dict[str, Any] = field(default_factory=dict)  # machine-readable facts (paths, formats, bytes)

    @property
    def is_blocker(self) -> bool:
        """A required item that is missing or broken: Stave cannot work properly."""
        return self.required and self.status.is_failure

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "version": self.version,
            "details": self.details,
            "unlocks": self.unlocks,
            "install_hint": self.install_hint,
            "required": self.required,
            "latency_s": round(self.latency_s, 4),
            "checked_at": _iso(self.checked_at),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HealthResult":
        return cls(
            name=d["name"],
            status=HealthStatus(d["status"]),
            version=d.get("version", ""),
            details=d.get("details", ""),
            unlocks=d.get("unlocks", ""),
            install_hint=d.get("install_hint", ""),
            required=bool(d.get("required", True)),
            latency_s=float(d.get("latency_s", 0.0)),
            checked_at=_from_iso(d["checked_at"]) if d.get("checked_at") else 0.0,
            extra=dict(d.get("extra", {})),
        )


@dataclass(frozen=True)
class HealthCheck:
    """A named probe. ``fn()`` (or ``fn(out_dir)`` when ``needs_out_dir``) returns a CheckOutcome.

    ``parallel_safe`` checks do their work in subprocesses or the OS and import
    nothing heavy, so they run alongside the others; the rest run one after
    another (concurrent imports of large packages can deadlock in CPython).
    """

    name: str
    fn: Callable[..., CheckOutcome]
    required: bool = True
    unlocks: str = ""
    install_hint: str = ""
    timeout_s: float = 10.0
    needs_out_dir: bool = False
    parallel_safe: bool = False

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("HealthCheck.name must not be empty")
        if not callable(self.fn):
            raise ValueError(f"HealthCheck.fn of {self.name!r} must be callable")
        if not self.timeout_s > 0:
            raise ValueError(f"HealthCheck.timeout_s of {self.name!r} must be > 0, got {self.timeout_s!r}")


@dataclass(frozen=True)
class HealthReport:
    results: tuple[HealthResult, ...]
    created_at: float  # wall time
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when no required check is missing or broken."""
        return not self.blockers

    @property
    def blockers(self) -> tuple[HealthResult, ...]:
        return tuple(r for r in self.results if r.is_blocker)

    @property
    def status(self) -> HealthStatus:
        """Overall: error/missing when a required item fails, degraded when anything is less than ok."""
        blockers = self.blockers
        if blockers:
            return HealthStatus.ERROR if any(r.status is HealthStatus.ERROR for r in blockers) else HealthStatus.MISSING
        if any(r.status is not HealthStatus.OK for r in self.results):
            return HealthStatus.DEGRADED
        return HealthStatus.OK

    def get(self, name: str) -> HealthResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "created_at": _iso(self.created_at),
            "duration_s": round(self.duration_s, 3),
            "status": self.status.value,
            "ok": self.ok,
            "checks": [r.to_dict() for r in self.results],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HealthReport":
        return cls(
            results=tuple(HealthResult.from_dict(r) for r in d["checks"]),
            created_at=_from_iso(d["created_at"]),
            duration_s=float(d.get("duration_s", 0.0)),
        )

    def format_text(self) -> str:
        """The report a person reads: blockers first with their fix, then the rest."""
        return _format_report(self)


def _format_report(report: HealthReport) -> str:
    rows = list(report.results)
    blockers = [r for r in rows if r.is_blocker]
    attention = [r for r in rows if not r.is_blocker and r.status is not HealthStatus.OK]
    fine = [r for r in rows if r.status is HealthStatus.OK]
    name_w = max((len(r.name) for r in rows), default=4)
    status_w = max(len(s.value) for s in HealthStatus)
    version_w = min(24, max((len(r.version or "-") for r in rows), default=1))
    indent = " " * (5 + name_w + 2)

    def line(r: HealthResult) -> list[str]:
        version = (r.version or "-")[:version_w]
        out = [f"  {'!!' if r.is_blocker else '  '} {r.name:<{name_w}}  {r.status.value:<{status_w}}  {version:<{version_w}}  {r.details}".rstrip()]
        if r.status is not HealthStatus.OK:
            if r.unlocks:
                out.append(f"{indent}unlocks: {r.unlocks}")
            if r.install_hint:
                out.append(f"{indent}fix:     {r.install_hint}")
        return out

    if blockers:
        head = f"Stave health: NOT READY - {len(blockers)} required item(s) missing or broken"
    elif attention:
        head = f"Stave health: ready, {len(attention)} optional or degraded item(s)"
    else:
        head = "Stave health: all checks ok"
    lines = [f"{head}  (checked {_iso(report.created_at)} in {report.duration_s:.1f}s)"]
    for title, group in (
        ("Required, missing or broken:", blockers),
        ("Optional or degraded:", attention),
        ("OK:", fine),
    ):
        if group:
            lines.append("")
            lines.append(title)
            for r in group:
                lines.extend(line(r))
    return "\n".join(lines) + "\n"


class _Pending:
    """One check running in its own daemon thread."""

    def __init__(self, check: HealthCheck, out_dir: Path | None, clock: Clock):
        self.check = check
        self._clock = clock
        self._done = threading.Event()
        self._outcome: CheckOutcome | None = None
        self.checked_at = clock.wall()
        self.started = clock.monotonic()
        self._deadline = time.monotonic() + check.timeout_s  # threads wait on real time
        self.finished: float | None = None
        args = (out_dir,) if check.needs_out_dir else ()
        # daemon: a probe that never returns must not keep the process alive
        self._thread = threading.Thread(target=self._run, args=args, name=f"health-{check.name}", daemon=True)
        self._thread.start()

    def _run(self, *args: Any) -> None:
        try:
            outcome = self.check.fn(*args)
            if not isinstance(outcome, CheckOutcome):
                raise TypeError(f"check returned {type(outcome).__name__}, not CheckOutcome")
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a result
            info = classify(exc)
            status = HealthStatus.MISSING if info.kind is ErrorKind.DEPENDENCY_MISSING else HealthStatus.ERROR
            outcome = CheckOutcome(status, details=info.reason)
        self._outcome = outcome
        self.finished = self._clock.monotonic()
        self._done.set()

    def result(self) -> HealthResult:
        """Wait until the check's own deadline, then build its result."""
        check = self.check
        finished = self._done.wait(max(0.0, self._deadline - time.monotonic()))
        if finished and self._outcome is not None:
            outcome = self._outcome
            latency = (self.finished or self._clock.monotonic()) - self.started
        else:
            outcome = CheckOutcome(HealthStatus.ERROR, details=f"timed out after {check.timeout_s:g}s")
            latency = check.timeout_s
        return HealthResult(
            name=check.name,
            status=outcome.status,
            version=outcome.version,
            details=outcome.details,
            unlocks=check.unlocks,
            install_hint=outcome.install_hint if outcome.install_hint is not None else check.install_hint,
            required=check.required,
            latency_s=max(0.0, latency),
            checked_at=self.checked_at,
            extra=dict(outcome.extra),
        )


class HealthRegistry:
    """Named checks, run each with its own timeout. Build one per use; it holds no global state."""

    def __init__(self, *, out_dir: Path | str | None = None, clock: Clock = SYSTEM_CLOCK):
        self._checks: dict[str, HealthCheck] = {}
        self._out_dir = Path(out_dir) if out_dir is not None else None
        self._clock = clock

    def register(self, check: HealthCheck) -> HealthCheck:
        if check.name in self._checks:
            raise ValueError(f"a health check named {check.name!r} is already registered")
        self._checks[check.name] = check
        return check

    def names(self) -> list[str]:
        return list(self._checks)

    def _selected(self, out_dir: Path | None) -> list[HealthCheck]:
        return [c for c in self._checks.values() if out_dir is not None or not c.needs_out_dir]

    def _out(self, out_dir: Path | str | None) -> Path | None:
        return Path(out_dir) if out_dir is not None else self._out_dir

    def run(self, name: str, out_dir: Path | str | None = None) -> HealthResult:
        check = self._checks[name]
        target = self._out(out_dir)
        if check.needs_out_dir and target is None:
            raise ValueError(f"check {name!r} needs an output folder")
        return _Pending(check, target, self._clock).result()

    def run_all(self, out_dir: Path | str | None = None) -> HealthReport:
        """Run every check (those needing an output folder only when there is one)."""
        target = self._out(out_dir)
        created_at = self._clock.wall()
        start = self._clock.monotonic()
        checks = self._selected(target)
        # parallel-safe checks start now and run alongside the sequential chain
        early = {c.name: _Pending(c, target, self._clock) for c in checks if c.parallel_safe}
        results: dict[str, HealthResult] = {}
        for c in checks:
            if not c.parallel_safe:
                results[c.name] = _Pending(c, target, self._clock).result()
        for name, pending in early.items():
            results[name] = pending.result()
        return HealthReport(
            results=tuple(results[c.name] for c in checks),
            created_at=created_at,
            duration_s=self._clock.monotonic() - start,
        )


def default_numba_cache_dir() -> Path:
    """Where numba should cache compiled code: the user's cache folder, never the install folder."""
    from core.settings import user_dirs

    return user_dirs(create=False).cache_dir / "numba"


def configure_numba_cache(environ: MutableMapping[str, str] | None = None) -> str:
    """Point ``NUMBA_CACHE_DIR`` at the user cache folder unless it is already set (see core.settings)."""
    from core.settings import configure_numba_cache as _configure

    return _configure(environ)


def default_registry(out_dir: Path | str | None = None) -> HealthRegistry:
    """A fresh registry holding Stave's standard checks (see :mod:`core.resilience.health_checks`)."""
    from core.resilience.health_checks import build_default_registry

    return build_default_registry(out_dir)
