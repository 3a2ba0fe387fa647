"""A few seconds before a long batch that report every blocker at once.

``preflight(paths, out_dir, config)`` checks, within a time budget:

* **files** — each is probed and its first ``decode_s`` seconds decoded
  (soundfile formats: also its last second, and a WAV header that promises
  more than the file holds, so truncation is caught cheaply; ffmpeg formats:
  ``ffmpeg -t 2`` into a pipe). Problems are classified like any failure
  (:func:`core.resilience.errors.classify`). Checks run on a few threads;
  when the budget runs out the rest are counted as *not checked* and the
  call returns (a running check is abandoned, its result ignored).
* **disk** — the output folder is created if missing and must take a temp
  file; free space is compared with :func:`estimate_disk_bytes` summed over
  the batch (files not checked are extrapolated from their size).
* **memory** — :func:`estimate_peak_memory` of the largest files (one per
  worker) plus each worker's baseline, against available memory.

Problems whose kind has warning severity (an empty or too-short file) and
checks that could not be made are warnings; the rest are blockers.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import soundfile as sf

from core.engine.scan import display_path
from core.ffmpeg import find_ffmpeg
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ProbeInfo, _wav_declared_frames, probe
from core.resilience.errors import (ErrorInfo, ErrorKind, InputError, Severity, StaveError, classify,
                                    classify_exit, info_for)

__all__ = ["Estimates", "PreflightLimits", "PreflightReport", "Problem", "estimate_disk_bytes",
           "estimate_peak_memory", "preflight"]

_MIB = 1 << 20
_GIB = 1 << 30
N_STEMS = 4  # Demucs' drums, bass, other, vocals
FEATURE_ROWS_EXTRA = 12 + 10  # chroma + spectral/onset/RMS rows stored beside the MFCCs
PER_FILE_OUTPUT_BYTES = 256 * 1024  # summary.json, beats.csv, bars rows, logs
TRANSCRIBE_BYTES_PER_S = 86 * 88 * 4 * 3  # Basic Pitch: 3 float32 posteriorgrams, 88 keys, ~86 frames/s
_SAMPLES_BYTES = 4  # float32


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


# --- estimates ------------------------------------------------------------------------


def _channels(info: ProbeInfo) -> int:
    return info.channels if info.channels > 0 else 2  # unknown: assume stereo


def estimate_disk_bytes(info: ProbeInfo, config: PipelineConfig) -> int:
    """Bytes one file adds to the output drive: work files plus outputs.

    Per audio minute, with A = ``analysis_sr``, N = the file's rate, C = its
    channels (float32 everywhere, the worst case):

    - the analysis-rate mono work file: 60·A·4 (5.3 MB at 22050 Hz);
    - frame features, once as work files and once in the outputs:
      2 · (60·A/hop) · (n_mfcc + 22 rows) · 4 (0.9 MB at the defaults);
    - a native-rate copy when ``config.needs_native_audio``: 60·N·C·4 (21 MB at 44.1 kHz stereo);
    - ``separate``: 4 stems as work files, 4·60·N·C·4 (85 MB); ``keep_stems``: as much again;
    - ``export_bar_audio``: the audio once more, cut into bars: 60·N·C·4;
    - ``transcribe``: Basic Pitch's posteriorgrams, 60·86·88·4·3 (5.4 MB);

    plus 256 KiB per file for JSON, CSV and Parquet rows.
    """
    d = max(info.duration_s, 0.0)
    native = d * info.sample_rate * _channels(info) * _SAMPLES_BYTES
    analysis = d * config.analysis_sr * _SAMPLES_BYTES
    frames = d * config.analysis_sr / config.hop_length
    total = analysis + 2 * frames * (config.n_mfcc + FEATURE_ROWS_EXTRA) * _SAMPLES_BYTES + PER_FILE_OUTPUT_BYTES
    if config.needs_native_audio:
        total += native
    if config.separate:
        total += N_STEMS * native * (2 if config.keep_stems else 1)
    if config.export_bar_audio:
        total += native
    if config.transcribe:
        total += d * TRANSCRIBE_BYTES_PER_S
    return int(math.ceil(total))


def estimate_peak_memory(info: ProbeInfo, config: PipelineConfig) -> int:
    """Peak bytes one worker holds for one file, not counting the worker's own baseline.

    - the decoded file, float32 at its native rate: C·N·4 per second;
    - a mono mix at the native rate (C > 1): N·4;
    - three analysis-rate mono copies (resampled, trimmed/normalised, percussive): 3·A·4;
    - one STFT as complex64 plus its float32 magnitude:
      (n_fft/2 + 1) · (A/hop + 1) · (8 + 4) bytes per second's frames;
    - ``separate``: 4 native-rate stems (4·C·N·4) and HPSS' two complex64 STFTs;
    - ``transcribe``: Basic Pitch's posteriorgrams.

    Demucs' model weights are not included (the health report covers Demucs).
    """
    d = max(info.duration_s, 0.0)
    ch = _channels(info)
    n, a = d * info.sample_rate, d * config.analysis_sr
    bins, frames = config.n_fft // 2 + 1, a / config.hop_length + 1
    total = ch * n * _SAMPLES_BYTES + (n * _SAMPLES_BYTES if ch > 1 else 0) + 3 * a * _SAMPLES_BYTES
    total += bins * frames * (8 + 4)
    if config.separate:
        total += N_STEMS * ch * n * _SAMPLES_BYTES + 2 * 8 * bins * frames
    if config.transcribe:
        total += d * TRANSCRIBE_BYTES_PER_S
    return int(math.ceil(total))


# Bytes per second of audio, to guess the length of a file that was not checked.
_GUESS_BPS = {".wav": 176_400, ".wave": 176_400, ".aif": 176_400, ".aiff": 176_400, ".aifc": 176_400,
              ".w64": 176_400, ".rf64": 176_400, ".caf": 176_400, ".flac": 88_200}
_GUESS_BPS_COMPRESSED = 16_000  # 128 kbit/s


def _guess_disk_bytes(paths: list[str], checks: list[_FileCheck], config: PipelineConfig) -> int:
    """Disk estimate for files not checked, from their size and the checked files' bytes per second."""
    seen: dict[str, list[float]] = {}
    for c in checks:
        if c.info is not None and c.info.duration_s > 0:
            acc = seen.setdefault(Path(c.path).suffix.lower(), [0.0, 0.0])
            acc[0] += c.info.size_bytes
            acc[1] += c.info.duration_s
    total = 0
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError:
            continue
        ext = Path(path).suffix.lower()
        bps = seen[ext][0] / seen[ext][1] if ext in seen else _GUESS_BPS.get(ext, _GUESS_BPS_COMPRESSED)
        guess = ProbeInfo(size / bps, 44_100, 2, 0, "", "", "guess", size)
        total += estimate_disk_bytes(guess, config)
    return total


# --- checking one file ----------------------------------------------------------------


class _Abandoned(Exception):
    """The time budget ran out while the file was being checked."""


@dataclass
class _FileCheck:
    path: str
    info: ProbeInfo | None
    blockers: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def add(self, info: ErrorInfo) -> None:
        soft = info.severity in (Severity.WARNING, Severity.INFO) or info.kind is ErrorKind.BUG
        (self.warnings if soft else self.blockers).append(Problem.from_info(info, self.path))


_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)
_BLOCK_FRAMES = 1 << 16


def _damaged(path: Path, what: str) -> InputError:
    return InputError(f"{path.name}: truncated or damaged: {what}", kind=ErrorKind.INPUT_CORRUPT)


@dataclass
class _Checker:
    """Probes a file and decodes a little of it; called from the preflight threads."""

    config: PipelineConfig
    ffmpeg: str | None
    limits: PreflightLimits
    deadline: float  # time.monotonic()
    stop: threading.Event

    def check(self, path: str) -> _FileCheck:
        if self.stop.is_set():
            raise _Abandoned
        try:
            info = probe(path, ffmpeg=self.ffmpeg)
        except Exception as exc:
            result = _FileCheck(path, None)
            result.add(classify(exc))
            return result
        result = _FileCheck(path, info)
        if 0 < info.duration_s < self.config.min_duration_s:
            result.add(info_for(ErrorKind.INPUT_EMPTY, f"{Path(path).name}: too short: {info.duration_s:.2f} s of "
                                f"audio (the minimum is {self.config.min_duration_s:g} s)"))
        try:
            if info.decoder == "soundfile":
                self._soundfile(Path(path), info)
            else:
                self._ffmpeg(Path(path))
        except _Abandoned:
            raise
        except Exception as exc:
            result.add(classify(exc))
        return result

    def _soundfile(self, path: Path, info: ProbeInfo) -> None:
        with sf.SoundFile(path) as f:
            sr, frames = f.samplerate, f.frames
            head = min(frames, max(1, round(self.limits.decode_s * sr)))
            self._read(f, path, 0, head)
            tail = min(frames - head, round(self.limits.tail_s * sr))
            if tail > 0:
                try:
                    f.seek(frames - tail)
                except (sf.LibsndfileError, RuntimeError):
                    raise _damaged(path, f"cannot reach its last {tail / sr:.2f} s") from None
                self._read(f, path, frames - tail, tail)
        declared = _wav_declared_frames(path) if info.format in ("WAV", "WAVEX") else None
        if declared is not None and declared > info.frames:
            raise _damaged(path, f"it holds {info.frames / info.sample_rate:.2f} s of the "
                                 f"{declared / info.sample_rate:.2f} s its header promises")

    def _read(self, f: sf.SoundFile, path: Path, start: int, n: int) -> None:
        got = 0
        try:
            while got < n:
                if self.stop.is_set():
                    raise _Abandoned
                block = f.read(min(_BLOCK_FRAMES, n - got), dtype="float32")
                if len(block) == 0:
                    break
                if not np.isfinite(block).all():
                    raise InputError(f"{path.name}: contains NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)
                got += len(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise _damaged(path, f"decoding failed at {(start + got) / f.samplerate:.2f} s ({exc})") from None
        if got < n:
            raise _damaged(path, f"decoding stopped at {(start + got) / f.samplerate:.2f} s of the "
                                 f"{f.frames / f.samplerate:.2f} s its header promises")

    def _ffmpeg(self, path: Path) -> None:
        exe = self.ffmpeg or shutil.which("ffmpeg")
        if exe is None:  # probe found it a moment ago; it has gone since
            raise FileNotFoundError(2, "No such file or directory", "ffmpeg")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.stop.is_set():
            raise _Abandoned
        timeout = min(self.limits.ffmpeg_timeout_s, remaining)
        source = "file:" + os.path.abspath(path)
        cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", source, "-map", "0:a:0",
               "-t", f"{self.limits.decode_s:g}", "-vn", "-sn", "-dn", "-c:a", "pcm_f32le", "-f", "f32le", "-"]
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                                  creationflags=_NO_WINDOW)
        except subprocess.TimeoutExpired:
            if timeout < self.limits.ffmpeg_timeout_s:
                raise _Abandoned from None  # the budget ran out, not ffmpeg's allowance
            raise
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").replace(source, path.name)[-4000:]
            info = classify_exit(proc.returncode, stderr_tail=err, who="ffmpeg")
            raise StaveError(info.reason, suggestion=info.suggestion, kind=info.kind)
        data = proc.stdout[: len(proc.stdout) - len(proc.stdout) % 4]
        if not data:
            raise InputError(f"{path.name}: ffmpeg decoded no audio from its start", kind=ErrorKind.INPUT_EMPTY)
        if not np.isfinite(np.frombuffer(data, dtype="<f4")).all():
            raise InputError(f"{path.name}: contains NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)


def _check_files(paths: list[str], checker: _Checker, threads: int) -> tuple[list[_FileCheck], list[str]]:
    """(results in input order, paths not checked before the deadline)."""
    if not paths:
        return [], []
    pool = ThreadPoolExecutor(max_workers=min(threads, len(paths)), thread_name_prefix="stave-preflight")
    try:
        futures = [(p, pool.submit(checker.check, p)) for p in paths]
        wait([f for _, f in futures], timeout=max(0.0, checker.deadline - time.monotonic()))
    finally:
        checker.stop.set()  # running checks stop at their next step; their results are ignored
        pool.shutdown(wait=False, cancel_futures=True)
    results, unchecked = [], []
    for path, fut in futures:
        if not fut.done() or fut.cancelled() or isinstance(fut.exception(), _Abandoned):
            unchecked.append(path)
        elif fut.exception() is not None:  # a bug in the checker itself: say so, do not block
            result = _FileCheck(path, None)
            result.add(classify(fut.exception()))
            results.append(result)
        else:
            results.append(fut.result())
    return results, unchecked


# --- output drive and memory ----------------------------------------------------------


def _output_dir_problem(out: Path) -> Problem | None:
    """Create ``out`` if missing and prove a file can be written there."""
    verb = "create"
    try:
        out.mkdir(parents=True, exist_ok=True)
        verb = "write to"
        fd, tmp = tempfile.mkstemp(prefix=".stave-preflight-", dir=out)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
            os.unlink(tmp)
        return None
    except (FileExistsError, NotADirectoryError):
        in_the_way = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), out)
        return Problem(str(out), ErrorKind.PERMISSION,
                       f"cannot create the output folder {display_path(out)}: {display_path(in_the_way)} is a file, "
                       "not a folder", "Choose another output folder, or move that file away.", "disk")
    except OSError as exc:
        info = classify(exc)
        kind = info.kind if info.kind in (ErrorKind.PERMISSION, ErrorKind.DISK_FULL) else ErrorKind.PERMISSION
        suggestion = (info.suggestion if kind is ErrorKind.DISK_FULL
                      else "Choose an output folder you can write to, or fix its permissions.")
        return Problem(str(out), kind, f"cannot {verb} the output folder {display_path(out)}: {exc.strerror or exc}",
                       suggestion, "disk")


def _existing_folder(out: Path) -> Path | None:
    return next((p for p in (out, *out.parents) if p.is_dir()), None)


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


def _check_disk(report: PreflightReport, needed: int, out: Path, disk_usage: Callable[[str], Any],
                limits: PreflightLimits) -> int | None:
    folder = _existing_folder(out)
    if folder is None:
        return None
    try:
        free = int(disk_usage(os.fspath(folder)).free)
    except OSError as exc:
        report.warnings.append(Problem(str(out), ErrorKind.DISK_FULL, f"could not read the free space on the output "
                                       f"drive: {exc}", "Check that the output drive is mounted.", "disk"))
        return None
    where = f"the output drive ({display_path(folder)})"
    if free < needed:
        report.blockers.append(Problem(
            str(out), ErrorKind.DISK_FULL,
            f"{where} has {_fmt_bytes(free)} free; the batch needs about {_fmt_bytes(needed)} "
            f"({_fmt_bytes(needed - free)} more)",
            "Free space on that drive, choose an output folder on another drive, or queue fewer files.", "disk"))
    elif free < needed * limits.disk_warn_ratio or free - needed < limits.disk_reserve_bytes:
        report.warnings.append(Problem(
            str(out), ErrorKind.DISK_FULL,
            f"space is tight: {where} has {_fmt_bytes(free)} free and the batch needs about {_fmt_bytes(needed)}",
            "Free some space first; if the drive fills up the batch stops and can be resumed.", "disk"))
    return free


def _check_memory(report: PreflightReport, checks: list[_FileCheck], config: PipelineConfig, workers: int,
                  available: int, limits: PreflightLimits) -> tuple[int, int]:
    """Adds a blocker or warning when the largest files cannot run at once; returns (per file, needed)."""
    peaks = sorted(((estimate_peak_memory(c.info, config), c) for c in checks if c.info is not None),
                   key=lambda pc: pc[0], reverse=True)
    if not peaks:
        return 0, workers * limits.worker_base_bytes

    def needed_for(k: int) -> int:
        return sum(p for p, _ in peaks[:k]) + k * limits.worker_base_bytes

    needed = needed_for(workers)
    peak, largest = peaks[0]
    if needed <= available * limits.memory_warn_ratio:
        return peak, needed
    name = f"{Path(largest.path).name} ({_fmt_duration(largest.info.duration_s)})"
    per_worker = _fmt_bytes(peak + limits.worker_base_bytes)
    running = f"{workers} workers at once need about {_fmt_bytes(needed)}" if workers > 1 else "that is"
    if needed <= available:
        report.warnings.append(Problem(
            largest.path, ErrorKind.OUT_OF_MEMORY,
            f"memory is tight: {name} needs about {per_worker}; {running}, of {_fmt_bytes(available)} available",
            "Close other programs, or use fewer workers.", "memory"))
        return peak, needed
    fits = max((k for k in range(1, workers) if needed_for(k) <= available), default=0)
    suggestion = (f"Use {fits} worker{'s' if fits > 1 else ''} (--workers {fits}), or close other programs."
                  if fits else f"Close other programs, or split or shorten {Path(largest.path).name}.")
    report.blockers.append(Problem(
        largest.path, ErrorKind.OUT_OF_MEMORY,
        f"not enough memory for {name}: it needs about {per_worker}; {running}, but only {_fmt_bytes(available)} "
        "is available", suggestion, "memory"))
    return peak, needed


# --- the whole preflight --------------------------------------------------------------


def _locate_ffmpeg(ffmpeg: str | os.PathLike[str] | None, config: PipelineConfig) -> str | None:
    if ffmpeg is not None:
        return os.fspath(ffmpeg)
    if config.ffmpeg_path is not None:
        return config.ffmpeg_path
    found = find_ffmpeg()
    return os.fspath(found.path) if found is not None else None


def preflight(paths: list[str], out_dir: str | os.PathLike[str], config: PipelineConfig, *,
              time_budget_s: float = 10.0, ffmpeg: str | os.PathLike[str] | None = None,
              disk_usage: Callable[[str], Any] = shutil.disk_usage,
              available_memory: Callable[[], int] | None = None, workers: int = 1,
              limits: PreflightLimits = PreflightLimits()) -> PreflightReport:
    """Check a batch before it starts; never takes much longer than ``time_budget_s``.

    ``ffmpeg``: an explicit executable; None finds one (``config.ffmpeg_path``,
    then PATH, then imageio-ffmpeg). ``disk_usage(path)`` returns an object
    with ``.free``; ``available_memory()`` returns bytes (default: psutil).
    """
    started = time.monotonic()
    if not (isinstance(time_budget_s, (int, float)) and math.isfinite(time_budget_s) and time_budget_s >= 0):
        raise ValueError(f"time_budget_s: must be a finite number >= 0, got {time_budget_s!r}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers: must be an integer >= 1, got {workers!r}")
    paths = [os.fspath(p) for p in paths]
    out = Path(out_dir)
    report = PreflightReport(files_total=len(paths), out_dir=os.fspath(out))

    problem = _output_dir_problem(out)
    if problem is not None:
        report.blockers.append(problem)

    checker = _Checker(config, _locate_ffmpeg(ffmpeg, config), limits, started + time_budget_s, threading.Event())
    checks, unchecked = _check_files(paths, checker, limits.threads)
    for c in checks:
        report.blockers.extend(c.blockers)
        report.warnings.extend(c.warnings)
        report.files_ok += not (c.blockers or c.warnings)
        if c.info is not None:
            report.total_duration_s += c.info.duration_s
            if c.info.duration_s > report.longest_duration_s or report.longest_path is None:
                report.longest_path, report.longest_duration_s = c.path, c.info.duration_s
    report.files_unchecked = len(unchecked)
    if unchecked:
        report.warnings.append(Problem(
            None, ErrorKind.TIMEOUT,
            f"{len(unchecked)} of {len(paths)} files were not checked within the {time_budget_s:g} s budget "
            "(their disk use is guessed from their size; their memory is not estimated)",
            "They are checked when their jobs run; allow preflight more time to check them now."))

    disk_needed = sum(estimate_disk_bytes(c.info, config) for c in checks if c.info is not None)
    disk_needed += _guess_disk_bytes(unchecked, checks, config) + _MIB  # + the checkpoint store
    free = _check_disk(report, disk_needed, out, disk_usage, limits)
    available = int(available_memory() if available_memory is not None else psutil.virtual_memory().available)
    per_file, mem_needed = _check_memory(report, checks, config, workers, available, limits)
    report.estimates = Estimates(disk_needed, free, bool(unchecked), per_file, mem_needed, available, workers)
    report.elapsed_s = time.monotonic() - started
    return report


# --- text -----------------------------------------------------------------------------

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
