"""What a batch needs on the output drive and in memory, and whether it fits.

Owns the estimates (:func:`estimate_disk_bytes`, :func:`estimate_peak_memory`,
and the guess for files preflight did not reach) and the two checks that
compare them with free disk space and available memory, adding blockers or
warnings to a :class:`~core.engine.preflight_report.PreflightReport`.
:func:`core.engine.preflight.preflight` calls them once the files are checked.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable

from core.engine.preflight_report import (PreflightLimits, PreflightReport, Problem, _FileCheck, _fmt_bytes,
                                          _fmt_duration)
from core.engine.scan import display_path
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ProbeInfo
from core.resilience.errors import ErrorKind

__all__ = ["estimate_disk_bytes", "estimate_peak_memory"]

N_STEMS = 4  # Demucs' drums, bass, other, vocals
FEATURE_ROWS_EXTRA = 12 + 10  # chroma + spectral/onset/RMS rows stored beside the MFCCs
PER_FILE_OUTPUT_BYTES = 256 * 1024  # summary.json, beats.csv, bars rows, logs
TRANSCRIBE_BYTES_PER_S = 86 * 88 * 4 * 3  # Basic Pitch: 3 float32 posteriorgrams, 88 keys, ~86 frames/s
_SAMPLES_BYTES = 4  # float32


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


# --- free space and memory ------------------------------------------------------------


def _existing_folder(out: Path) -> Path | None:
    return next((p for p in (out, *out.parents) if p.is_dir()), None)


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
