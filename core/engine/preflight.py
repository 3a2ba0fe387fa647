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

This module checks the files and the output folder and runs the whole
preflight; the report's types and text are in
:mod:`core.engine.preflight_report`, the disk and memory estimates and checks
in :mod:`core.engine.preflight_resources`. Their public names are importable
from here too.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import soundfile as sf

from core.engine.preflight_report import _MIB, Estimates, PreflightLimits, PreflightReport, Problem, _FileCheck
from core.engine.preflight_resources import (_check_disk, _check_memory, _guess_disk_bytes, estimate_disk_bytes,
                                             estimate_peak_memory)
from core.engine.scan import display_path
from core.ffmpeg import find_ffmpeg
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import (
    _LOSSY_FORMATS, ProbeInfo, _wav_declared_frames, check_sample_rate, known_frames, probe,
)
from core.resilience.errors import ErrorKind, InputError, StaveError, classify, classify_exit, info_for

__all__ = ["Estimates", "PreflightLimits", "PreflightReport", "Problem", "estimate_disk_bytes",
           "estimate_peak_memory", "preflight"]


# --- checking one file ----------------------------------------------------------------


class _Abandoned(Exception):
    """The time budget ran out while the file was being checked."""


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
            check_sample_rate(path, info)  # a damaged header: its absurd length must not count toward resources
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
            sr, frames = f.samplerate, known_frames(f)
            if not frames:  # the header does not give the length (written through a pipe): the head is all to try
                self._read(f, path, 0, max(1, round(self.limits.decode_s * sr)), promised=False)
                return
            # libsndfile's MP3/Ogg lengths are estimates: the run allows them this much slack, and so does this
            slack = max(int(0.01 * frames), 2048) if info.format in _LOSSY_FORMATS else 0
            head = min(frames, max(1, round(self.limits.decode_s * sr)))
            self._read(f, path, 0, head)
            tail = min(frames - head - slack, round(self.limits.tail_s * sr))
            if tail > 0:
                try:
                    f.seek(frames - slack - tail)
                except (sf.LibsndfileError, RuntimeError):
                    raise _damaged(path, f"cannot reach its last {tail / sr:.2f} s") from None
                self._read(f, path, frames - slack - tail, tail)
        declared = _wav_declared_frames(path) if info.format in ("WAV", "WAVEX") else None
        if declared is not None and declared > info.frames:
            raise _damaged(path, f"it holds {info.frames / info.sample_rate:.2f} s of the "
                                 f"{declared / info.sample_rate:.2f} s its header promises")

    def _read(self, f: sf.SoundFile, path: Path, start: int, n: int, promised: bool = True) -> None:
        """Decode ``n`` frames from ``start``; fewer is damage only if the header ``promised`` them."""
        got = 0
        step = _BLOCK_FRAMES if promised else 1024  # no length known: never ask libsndfile far past the end
        try:
            while got < n:
                if self.stop.is_set():
                    raise _Abandoned
                block = f.read(min(step, n - got), dtype="float32")
                if len(block) == 0:
                    break
                if not np.isfinite(block).all():
                    raise InputError(f"{path.name}: contains NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)
                got += len(block)
        except (sf.LibsndfileError, RuntimeError) as exc:
            if not promised and got:  # libsndfile fails at the end of a stream without a length: that was the end
                return
            raise _damaged(path, f"decoding failed at {(start + got) / f.samplerate:.2f} s ({exc})") from None
        if got < n and promised:
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


# --- the output folder --------------------------------------------------------------


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
