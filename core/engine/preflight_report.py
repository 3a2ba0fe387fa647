"""What preflight reports, and how that report reads to a person.

Owns the settings (:class:`PreflightLimits`), the results (:class:`Problem`,
:class:`Estimates`, :class:`PreflightReport` and one file's ``_FileCheck``)
and the text of :meth:`PreflightReport.format_text`. The checks that fill a
report live in :mod:`core.engine.preflight` (files, output folder) and
:mod:`core.engine.preflight_resources` (disk space, memory).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.engine.scan import display_path
from core.pipeline.ingest import ProbeInfo
from core.resilience.errors import ErrorInfo, ErrorKind, Severity

__all__ = ["Estimates", "PreflightLimits", "PreflightReport", "Problem"]

_MIB = 1 << 20
_GIB = 1 << 30


# --- settings and results ---------------------------------------------------------


@dataclass(frozen=True)
class PreflightLimits:
    """How much preflight reads and where it draws the lines."""

    decode_s: float = 2.0  # seconds decoded from the start of each file
    tail_s: float = 1.0  # seconds read from the end (soundfile formats)
    threads: int = 4  # concurrent file checks (I/O bound)
    ffmpeg_timeout_s: float = 20.0  # one ffmpeg decode of decode_s seconds
    disk_warn_ratio: float = 1.5  # warn when free < estimate * ratio ...
    disk_reserve_bytes: int = 512 * _MIB  # ... or when less than this would remain
    memory_warn_ratio: float = 0.8  # warn when the estimate exceeds this share of available memory
    worker_base_bytes: int = 300 * _MIB  # a worker process with numpy, librosa and numba loaded

    def __post_init__(self) -> None:
        problems = [f"{name}: must be > 0, got {getattr(self, name)!r}"
                    for name in ("decode_s", "threads", "ffmpeg_timeout_s")
                    if not getattr(self, name) > 0]
        problems += [f"{name}: must be >= 0, got {getattr(self, name)!r}"
                     for name in ("tail_s", "disk_reserve_bytes", "worker_base_bytes") if not getattr(self, name) >= 0]
        if not self.disk_warn_ratio >= 1:
            problems.append(f"disk_warn_ratio: must be >= 1, got {self.disk_warn_ratio!r}")
        if not 0 < self.memory_warn_ratio <= 1:
            problems.append(f"memory_warn_ratio: must be in (0, 1], got {self.memory_warn_ratio!r}")
        if problems:
            raise ValueError("invalid preflight limits: " + "; ".join(problems))


@dataclass(frozen=True)
class Problem:
    """One thing that stops (blocker) or endangers (warning) the batch. ``area``: files, disk or memory."""

    path: str | None
    kind: ErrorKind
    reason: str
    suggestion: str
    area: str = "files"

    @classmethod
    def from_info(cls, info: ErrorInfo, path: str | None, area: str = "files") -> "Problem":
        return cls(path, info.kind, info.reason, info.suggestion, area)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass(frozen=True)
class Estimates:
    """What the batch is expected to need (bytes); ``None`` where it could not be measured."""

    disk_needed_bytes: int = 0
    disk_free_bytes: int | None = None
    disk_extrapolated: bool = False  # some files were not checked: their share is guessed from their size
    memory_per_file_bytes: int = 0  # the largest file's peak in one worker, without its baseline
    memory_needed_bytes: int = 0  # the largest files running at once, plus each worker's baseline
    memory_available_bytes: int | None = None
    workers: int = 1


@dataclass
class PreflightReport:
    """Everything preflight found; ``ok`` when nothing blocks the batch."""

    blockers: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    files_total: int = 0
    files_ok: int = 0  # checked and without any problem
    files_unchecked: int = 0  # not reached within the time budget
    total_duration_s: float = 0.0  # of the checked files
    longest_path: str | None = None
    longest_duration_s: float = 0.0
    estimates: Estimates = field(default_factory=Estimates)
    out_dir: str = ""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.blockers

    @property
    def blocked_paths(self) -> list[str]:
        """Files with a blocker, in report order, each once."""
        return list(dict.fromkeys(p.path for p in self.blockers if p.area == "files" and p.path))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blockers"] = [p.to_dict() for p in self.blockers]
        d["warnings"] = [p.to_dict() for p in self.warnings]
        d["ok"] = self.ok
        return d

    def format_text(self) -> str:
        """Every blocker, then every warning, grouped by area; for a person."""
        return _format_report(self)


@dataclass
class _FileCheck:
    """One checked file: its probe (``None`` when it could not be probed) and what was wrong with it."""

    path: str
    info: ProbeInfo | None
    blockers: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def add(self, info: ErrorInfo) -> None:
        soft = info.severity in (Severity.WARNING, Severity.INFO) or info.kind is ErrorKind.BUG
        (self.warnings if soft else self.blockers).append(Problem.from_info(info, self.path))


# --- text -----------------------------------------------------------------------------


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", _GIB), ("MiB", _MIB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def _fmt_duration(s: float) -> str:
    s = max(0, round(s))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s" if m else f"{sec} s"


_AREAS = (("files", "Files"), ("disk", "Output drive"), ("memory", "Memory"))


def _format_problems(title: str, problems: list[Problem]) -> list[str]:
    if not problems:
        return []
    lines = [f"{title} ({len(problems)}):"]
    for area, heading in _AREAS:
        groups: dict[tuple[ErrorKind, str, str], list[str | None]] = {}
        for p in problems:
            if p.area == area:
                groups.setdefault((p.kind, p.reason, p.suggestion), []).append(p.path)
        if not groups:
            continue
        lines.append(f"  {heading}")
        for (kind, reason, suggestion), where in groups.items():
            count = f" ({len(where)} files)" if len(where) > 1 else ""
            lines.append(f"    - [{kind.value}] {reason}{count}")
            lines.extend(f"        {display_path(w)}" for w in where if w is not None and area == "files")
            lines.append(f"        what to do: {suggestion}")
    return lines


def _format_report(r: PreflightReport) -> str:
    e = r.estimates
    verdict = ("no blockers: ready to start." if r.ok else
               f"{len(r.blockers)} blocker{'s' if len(r.blockers) != 1 else ''}: fix them before starting.")
    checked = r.files_total - r.files_unchecked
    lines = [f"Preflight of {r.files_total} file{'s' if r.files_total != 1 else ''} into "
             f"{display_path(r.out_dir)}: {verdict}",
             f"  Files: {r.files_ok} ok, {checked - r.files_ok} with problems, {r.files_unchecked} not checked; "
             f"{_fmt_duration(r.total_duration_s)} of audio checked"
             + (f"; longest: {Path(r.longest_path).name} ({_fmt_duration(r.longest_duration_s)})"
                if r.longest_path else "")]
    free = _fmt_bytes(e.disk_free_bytes) if e.disk_free_bytes is not None else "unknown"
    lines.append(f"  Output drive: about {_fmt_bytes(e.disk_needed_bytes)} needed"
                 f"{' (partly guessed)' if e.disk_extrapolated else ''}, {free} free")
    avail = _fmt_bytes(e.memory_available_bytes) if e.memory_available_bytes is not None else "unknown"
    lines.append(f"  Memory: about {_fmt_bytes(e.memory_needed_bytes)} for {e.workers} "
                 f"worker{'s' if e.workers != 1 else ''}, {avail} available")
    lines += _format_problems("Blockers", r.blockers)
    lines += _format_problems("Warnings", r.warnings)
    return "\n".join(lines)
