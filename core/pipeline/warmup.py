"""Compile librosa's numba functions once, in one worker, before a batch fans out.

numba caches compiled code on disk (NUMBA_CACHE_DIR), but several processes
compiling and writing the same cache entries at once can leave it corrupt
(a corrupt entry crashes the next process that loads it). The engine runs
this in a single worker first, so the parallel workers only ever read.
"""

from __future__ import annotations

import time


def warm(config: dict | None = None) -> float:
    """Run the numba-compiled paths this batch's stages will use on a few seconds of sound; seconds taken."""
    import numpy as np

    from core.pipeline.analyze import analyze_audio
    from core.pipeline.transcribe import transcribe_pyin

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    sr = 22050
    t = np.arange(sr * 3) / sr
    y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    y[:: sr // 2] += 0.8  # clicks, so beat tracking and onset picking run their compiled paths
    analyze_audio(y, sr)
    if (config or {}).get("transcribe", True):  # pYIN is the transcription fallback: compile it only if needed
        transcribe_pyin(y[:sr], sr)
    return time.perf_counter() - t0
