"""Warm a worker before it takes stages: first-call costs and numba's compiled code, compiled safely.

Each worker process runs :func:`warm_cached` as it starts (what the cache
already holds compiled) and :func:`warm` before its supervisor's first job
(the engine hands one warm-up task to every supervisor, so the workers warm in
parallel; for a worker already warm it does nothing).
It runs the batch's own stage functions, ingest to export, on a few seconds
of synthesized sound in a temporary folder (and pYIN when the batch
transcribes), so that neither their first-call costs (loading compiled code,
lazy imports such as the pandas that pyarrow loads on its first conversion,
first file writes) nor, on a fresh install, numba's compilation land inside
a timed stage.

numba caches compiled code on disk (``NUMBA_CACHE_DIR``), but several
processes compiling and writing the same cache entries at once can leave it
corrupt (a corrupt entry crashes the next process that loads it). So the
first warm-up of each kind holds an exclusive lock on a file in the cache
folder while it compiles: other workers (and other Stave processes, such as
the window and ``stave process`` side by side) wait, then only read. Once a
warm-up has succeeded it leaves a marker beside the cache, keyed by the
versions involved; later warm-ups that find their markers skip the lock, so
warm workers start in parallel. Deleting the cache folder deletes the
markers with it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import sys
import time
from typing import Callable, Iterator, Mapping

log = logging.getLogger(__name__)

WARMUP_VERSION = "3"  # bump when the warm-up runs different compiled code
LOCK_NAME = "stave-warmup.lock"
LOCK_WAIT_S = 600.0  # a cold compile of pYIN takes ~40 s on a slow machine; past this, warm without the lock
# (shorter than the engine's warm-up task timeout, so a stuck lock never costs the warm-up itself)

_warmed: set[str] = set()  # the parts this process has warmed


def _signal(seconds: float = 3.0, sr: int = 22050):
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    y[:: sr // 2] += 0.8  # clicks, so beat tracking and onset picking run their compiled paths
    return y, sr


WARM_STAGES = ("ingest", "preprocess", "analyze", "segment", "export")


def _warm_stages(config: Mapping | None = None) -> None:
    """The stage functions, ingest to export, on 4 s of a stereo 44.1 kHz WAV, in a folder removed afterwards."""
    import shutil
    import tempfile

    import numpy as np
    import soundfile as sf

    from core.engine.stagegraph import StageContext
    from core.pipeline import stage_fns
    from core.pipeline.config import PipelineConfig

    cfg, _ = PipelineConfig.from_dict(dict(config or {}))
    cfg_dict = {**cfg.to_dict(), "separate": False, "transcribe": False, "export_bar_audio": False,
                "keep_stems": False}  # those have warm-ups of their own, or none to warm
    y, sr = _signal(4.0, 44100)
    folder = tempfile.mkdtemp(prefix="stave-warmup-")
    try:
        path = os.path.join(folder, "warmup.wav")
        sf.write(path, 0.7 * np.stack([y, 0.8 * y], axis=1), sr, subtype="PCM_16")  # no clipping
        work_dir = os.path.join(folder, "work")
        os.makedirs(work_dir)
        song_id, states = "warmup", {}
        for stage in WARM_STAGES:
            ctx = StageContext(job_id=0, stage=stage, input_path=path, out_dir=folder, work_dir=work_dir,
                               song_id=song_id, config=cfg_dict, facts={"stages": states})
            out = getattr(stage_fns, f"{stage}_stage")(ctx)
            song_id = out.facts.get("song_id", song_id)
            states[stage] = {"status": "done", "degraded": False, "reason": ""}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _warm_pyin() -> None:
    from core.pipeline.transcribe import transcribe_pyin

    y, sr = _signal(1.0)
    transcribe_pyin(y, sr)


PARTS: dict[str, Callable[[Mapping | None], None]] = {"analysis": _warm_stages, "pyin": lambda config: _warm_pyin()}


def parts_for(config: Mapping | None) -> list[str]:
    """What a batch with ``config`` needs warm: analysis always, pYIN (the transcription fallback) if it transcribes."""
    return ["analysis"] + (["pyin"] if (config or {}).get("transcribe", True) else [])


def warm(config: Mapping | None = None) -> float:
    """Warm what ``config``'s stages need that this process has not warmed yet; seconds taken."""
    todo = [p for p in parts_for(config) if p not in _warmed]
    if not todo:
        return 0.0
    t0 = time.perf_counter()
    with compile_guard(todo):
        for part in todo:
            PARTS[part](config)
            _warmed.add(part)
    return time.perf_counter() - t0


def warm_cached(config: Mapping | None = None) -> float:
    """Warm the parts whose compiled code is already in numba's cache; seconds taken.

    What a worker runs as it starts (before it takes any task): it never takes
    the compile lock and never compiles into a cold cache, so it cannot keep a
    worker from starting; the parts it leaves are warmed by :func:`warm`.
    """
    cache_dir = os.environ.get("NUMBA_CACHE_DIR", "")
    if not cache_dir:
        return 0.0
    todo = [p for p in parts_for(config) if p not in _warmed and os.path.exists(_marker(cache_dir, p))]
    if not todo:
        return 0.0
    t0 = time.perf_counter()
    for part in todo:
        PARTS[part](config)
        _warmed.add(part)
    return time.perf_counter() - t0


def _marker(cache_dir: str, part: str) -> str:
    import librosa
    import numba

    key = "|".join((WARMUP_VERSION, part, numba.__version__, librosa.__version__, sys.version.split()[0]))
    return os.path.join(cache_dir, f".stave-warm-{part}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


@contextlib.contextmanager
def compile_guard(parts: list[str], *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the cache folder's warm-up lock around the body unless every part's marker says the cache is warm.

    Without ``NUMBA_CACHE_DIR`` numba caches beside its packages, where Stave
    does not write: the body runs unguarded. Markers are written after the
    body succeeds.
    """
    cache_dir = os.environ.get("NUMBA_CACHE_DIR", "")
    if not cache_dir:
        yield
        return
    markers = [_marker(cache_dir, p) for p in parts]
    if all(os.path.exists(m) for m in markers):
        yield
        return
    os.makedirs(cache_dir, exist_ok=True)
    with _exclusive(os.path.join(cache_dir, LOCK_NAME), wait_s):
        yield
        for m in markers:
            with contextlib.suppress(OSError):
                with open(m, "w", encoding="ascii") as f:
                    f.write(f"{os.getpid()} {time.time():.0f}\n")


@contextlib.contextmanager
def _exclusive(path: str, wait_s: float) -> Iterator[None]:
    """An exclusive advisory lock on ``path``, waited for up to ``wait_s`` (then the body runs anyway)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        log.warning("warm-up runs without its lock (%s): %s", path, exc)
        yield
        return
    locked = False
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                _lock(fd)
                locked = True
                break
            except OSError as exc:
                if exc.errno not in _HELD_ELSEWHERE:  # no locks on this file system (ENOLCK, EOPNOTSUPP...)
                    log.warning("warm-up runs without its lock (%s): %s", path, exc)
                    break
                if time.monotonic() >= deadline:
                    log.warning("another process held %s for %.0f s: warming up without it", path, wait_s)
                    break
                time.sleep(0.05)
        yield
    finally:
        if locked:
            with contextlib.suppress(OSError):
                _unlock(fd)
        os.close(fd)


_HELD_ELSEWHERE = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}  # EDEADLK: msvcrt's "locked"

if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
