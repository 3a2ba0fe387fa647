"""What the inspector shows about one finished song, read from its results folder (no Qt).

:func:`load_song` reads ``summary.json``, ``beats.csv``, ``bars.parquet``,
``notes.csv`` and a peak-downsampled waveform of the input
(:func:`waveform_peaks`) into a :class:`SongData`. Formats are read
defensively: a missing or unreadable file becomes a line in
``SongData.problems``, never an exception. The inspector runs this on its own
pool thread; it lives apart from the dock so that the window can start
without importing numpy.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

N_PEAKS = 4000


@dataclass
class SongData:
    """Everything the inspector shows about one song (arrays are None when unavailable)."""

    song_dir: str
    input_path: str
    summary: dict[str, Any] = field(default_factory=dict)
    beats: np.ndarray | None = None
    downbeats: np.ndarray | None = None
    bars: dict[str, np.ndarray] | None = None
    notes: dict[str, np.ndarray] | None = None
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (t, min, max)
    audio_duration_s: float | None = None
    problems: list[str] = field(default_factory=list)


# --- loading (runs on the pool's thread; no Qt) -----------------------------

def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV (non-numeric cells become NaN; booleans 1/0)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, np.ndarray] = {}
    for name in (rows[0].keys() if rows else []):
        vals = []
        for r in rows:
            cell = (r.get(name) or "").strip().lower()
            x = 1.0 if cell == "true" else 0.0 if cell == "false" else _num(cell)
            vals.append(np.nan if x is None else x)
        cols[str(name).strip()] = np.asarray(vals, dtype=float)
    return cols


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        arr = table.column(name).to_numpy()
        if arr.dtype.kind in "biuf":
            out[name] = arr.astype(float)
    return out


def waveform_peaks(path: str | os.PathLike[str], n_peaks: int = N_PEAKS, *, block_frames: int = 1 << 16,
                   is_current: Callable[[], bool] = lambda: True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """(t, min, max, duration_s) of ~``n_peaks`` columns, read in blocks; None when cancelled."""
    import soundfile as sf

    info = sf.info(str(path))
    if info.frames <= 0:
        raise ValueError("the file holds no audio frames")
    spp = max(1, math.ceil(info.frames / n_peaks))  # samples per peak
    block = spp * max(1, block_frames // spp)
    mins: list[np.ndarray] = []
    maxs: list[np.ndarray] = []
    for chunk in sf.blocks(str(path), blocksize=block, dtype="float32", always_2d=True):
        if not is_current():
            return None
        mono = chunk.mean(axis=1)
        whole = len(mono) // spp * spp
        if whole:
            seg = mono[:whole].reshape(-1, spp)
            mins.append(seg.min(axis=1))
            maxs.append(seg.max(axis=1))
        if whole < len(mono):  # only the last block has a remainder
            mins.append(mono[whole:].min(keepdims=True))
            maxs.append(mono[whole:].max(keepdims=True))
    lo, hi = np.concatenate(mins), np.concatenate(maxs)
    t = (np.arange(len(lo)) * spp + spp / 2) / info.samplerate
    return t, lo, hi, info.frames / info.samplerate


def load_song(song_dir: str, input_path: str, *, n_peaks: int = N_PEAKS,
              is_current: Callable[[], bool] = lambda: True) -> SongData:
    """Read what exists of one song's results; problems are collected, never raised."""
    data = SongData(song_dir, input_path)
    folder = Path(song_dir) if song_dir else None
    if folder is None or not folder.is_dir():
        data.problems.append(f"results folder not found: {song_dir or '(none)'}")
        folder = None

    def attempt(label: str, fn: Callable[[], Any], *, optional: bool = False) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            if not optional:
                data.problems.append(f"{label}: missing")
        except Exception as exc:  # noqa: BLE001 - any bad file is shown, not raised
            data.problems.append(f"{label}: unreadable ({type(exc).__name__}: {exc})")
        return None

    if folder is not None:
        summary = attempt("summary.json", lambda: json.loads((folder / "summary.json").read_text("utf-8")))
        if isinstance(summary, dict):
            data.summary = summary
        elif summary is not None:
            data.problems.append("summary.json: not a JSON object")
        beats = attempt("beats.csv", lambda: _read_csv(folder / "beats.csv"))
        if beats is not None:
            t = beats.get("time_s", beats.get("time"))
            if t is None:
                data.problems.append("beats.csv: no time_s column")
            else:
                data.beats = t[np.isfinite(t)]
                if "is_downbeat" in beats:
                    data.downbeats = t[(beats["is_downbeat"] > 0) & np.isfinite(t)]
        bars = attempt("bars.parquet", lambda: _read_parquet(folder / "bars.parquet"))
        if bars is not None and "start_s" not in bars:
            data.problems.append("bars.parquet: no start_s column")
        elif bars is not None:
            data.bars = bars
        notes = attempt("notes.csv", lambda: _read_csv(folder / "notes.csv"), optional=True)
        if notes is not None and {"onset_s", "offset_s", "pitch_midi"} <= set(notes):
            data.notes = notes
        elif notes is not None:
            data.problems.append("notes.csv: needs onset_s, offset_s and pitch_midi columns")
    if not input_path or not os.path.isfile(input_path):
        data.problems.append(f"input audio not found: {input_path or '(none)'}")
    else:
        peaks = attempt("waveform", lambda: waveform_peaks(input_path, n_peaks, is_current=is_current))
        if peaks is not None:
            data.peaks, data.audio_duration_s = peaks[:3], peaks[3]
    return data
