"""The song's final files in OUT/<song_id>/, written atomically.

  summary.json   song-level results, which stages ran, what was degraded and why
  bars.parquet   one row per bar (see BAR_COLUMNS)
  beats.csv      one row per beat
  notes.csv      one row per note, when transcription ran
  <source>.mid   one MIDI file per transcribed source (the mix, or each pitched stem)
  stems/         stems, when kept; bar_audio/ per-bar chunks, when asked for
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
from pathlib import Path

import numpy as np

import core
from core.engine.stagegraph import StageContext
from core.fsutil import atomic_write_json, atomic_write_text, atomic_write_with

SUMMARY_SCHEMA = 1
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
BEATS_COLUMNS = ("beat", "time_s", "bar", "beat_in_bar", "is_downbeat")
NOTES_COLUMNS = ("source", "onset_s", "offset_s", "duration_s", "pitch_midi", "pitch_name", "velocity", "confidence")


def _read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- bars ---------------------------------------------------------------------------------
def _note_columns(rows: list[dict], notes: dict[str, list[dict]]) -> None:
    """Add note_count and a pitch-class histogram (share of note onsets) to each bar row."""
    onsets = np.array([n["onset_s"] for src in notes.values() for n in src], dtype=float)
    pcs = np.array([n["pitch_midi"] % 12 for src in notes.values() for n in src], dtype=int)
    for row in rows:
        inside = (onsets >= row["start_s"]) & (onsets < row["end_s"])
        count = int(np.count_nonzero(inside))
        row["note_count"] = count
        hist = np.bincount(pcs[inside], minlength=12).astype(float)
        for name, v in zip(PITCH_CLASSES, hist):
            row[f"pc_{name}"] = float(v / count) if count else math.nan


def write_bars_table(raw_path: str, dest: str, song_id: str, notes: dict[str, list[dict]] | None) -> str:
    """The per-bar table: analysis features (+ note counts when notes exist), with song_id first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(raw_path).to_pylist()
    if notes is not None:
        _note_columns(rows, notes)
    if rows:
        table = pa.Table.from_pylist([{"song_id": song_id, **r} for r in rows])
    else:
        table = pa.table({"song_id": pa.array([], pa.string()), "bar": pa.array([], pa.int64())})
    return str(atomic_write_with(dest, lambda tmp: pq.write_table(table, tmp)))


def write_bar_audio(y: np.ndarray, sr: int, offset_s: float, bars_path: str, folder: str) -> list[str]:
    """One WAV per bar (analysis rate, mono), named bar_0001.wav ... in bar order."""
    import pyarrow.parquet as pq
    import soundfile as sf

    os.makedirs(folder, exist_ok=True)
    paths = []
    for row in pq.read_table(bars_path, columns=["bar", "start_s", "end_s"]).to_pylist():
        a = max(0, int(round((row["start_s"] - offset_s) * sr)))
        b = min(len(y), int(round((row["end_s"] - offset_s) * sr)))
        if b <= a:
            continue
        dest = os.path.join(folder, f"bar_{row['bar'] + 1:04d}.wav")
        chunk = y[a:b]
        paths.append(str(atomic_write_with(dest, lambda tmp, c=chunk: sf.write(tmp, c, sr, format="WAV",
                                                                              subtype="FLOAT"))))
    return paths


# -- beats and notes ----------------------------------------------------------------------
def beats_csv(beat_times: list[float], downbeat_times: list[float]) -> str:
    down = np.asarray([t for t in downbeat_times if t is not None], dtype=float)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BEATS_COLUMNS)
    last_bar, beat_in_bar = -1, 0
    for i, t in enumerate(beat_times):
        if t is None:
            continue
        bar = int(np.searchsorted(down, t + 1e-6, side="right")) - 1  # -1: before the first downbeat
        is_down = bool(down.size and np.any(np.abs(down - t) < 1e-3))
        beat_in_bar = 1 if bar != last_bar else beat_in_bar + 1
        last_bar = bar
        w.writerow([i, f"{t:.4f}", bar, beat_in_bar, int(is_down)])
    return buf.getvalue()


def notes_csv(notes: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=NOTES_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    rows = [{"source": src, **n} for src, ns in notes.items() for n in ns]
    for row in sorted(rows, key=lambda r: (r["onset_s"], r["source"], r["pitch_midi"])):
        w.writerow(row)
    return buf.getvalue()


def _midi(notes: list[dict], path: str, tempo_bpm: float | None, name: str) -> str:
    from types import SimpleNamespace

    from core.pipeline.midi import MidiOptions, midi_bytes
    from core.fsutil import atomic_write_bytes

    tempo = tempo_bpm if tempo_bpm and 20 <= tempo_bpm <= 400 else 120.0
    objs = [SimpleNamespace(pitch_midi=n["pitch_midi"], onset_s=n["onset_s"], offset_s=n["offset_s"],
                            velocity=n["velocity"]) for n in notes]
    return str(atomic_write_bytes(path, midi_bytes(objs, MidiOptions(tempo_bpm=tempo, track_name=name))))


# -- the song -----------------------------------------------------------------------------
def build_summary(ctx: StageContext) -> tuple[dict, dict | None]:
    def work(name):
        return os.path.join(ctx.work_dir, name)

    probe = _read_json(work("probe.json"))
    analysis = _read_json(work("analysis.json"))
    notes_doc = _read_json(work("notes.json")) if os.path.exists(work("notes.json")) else None
    stems_doc = _read_json(work("stems_analysis.json")) if os.path.exists(work("stems_analysis.json")) else None
    stems_meta = os.path.join(ctx.work_dir, "stems", "stems.json")
    stages = {name: dict(state) for name, state in (ctx.facts.get("stages") or {}).items()}
    stages["export"] = {"status": "done", "degraded": False, "reason": ""}
    degraded = [f"{name}: {s['reason']}" for name, s in stages.items() if s.get("degraded")]
    summary = {
        "schema_version": SUMMARY_SCHEMA,
        "stave_version": core.__version__,
        "song_id": ctx.song_id,
        "input_path": ctx.input_path,
        "file_name": probe["file_name"],
        "content_hash": probe["content_hash"],
        "format": probe["format"],
        "subtype": probe["subtype"],
        "channels": probe["channels"],
        "native_sample_rate": probe["sample_rate"],
        "size_bytes": probe["size_bytes"],
        "decoder": probe["decoder"],
        **analysis,
        "duration_s": probe["duration_s"],
        "analysed_duration_s": analysis["duration_s"],
        "separation": {"backend": _read_json(stems_meta)["backend"], "stems": stems_doc or {}}
        if os.path.exists(stems_meta) else None,
        "transcription": None if notes_doc is None else {
            "backend": notes_doc["backend"],
            "notes": sum(len(v) for v in notes_doc["sources"].values()),
            "sources": {k: len(v) for k, v in notes_doc["sources"].items()},
        },
        "stages": stages,
        "degraded": bool(degraded),
        "degraded_reasons": degraded,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return summary, (notes_doc["sources"] if notes_doc else None)


def export_song(ctx: StageContext) -> list[str]:
    """Write the song's files; summary.json last (its presence means the song is complete)."""
    song_dir = ctx.song_dir
    os.makedirs(song_dir, exist_ok=True)
    summary, notes = build_summary(ctx)
    paths = [str(atomic_write_text(os.path.join(song_dir, "beats.csv"),
                                   beats_csv(summary["beat_times"], summary["downbeat_times"])))]
    for stale in Path(song_dir).glob("*.mid"):  # from an earlier run of this song with other sources
        if notes is None or stale.stem not in notes:
            stale.unlink()
    if notes is not None:
        paths.append(str(atomic_write_text(os.path.join(song_dir, "notes.csv"), notes_csv(notes))))
        for source, rows in notes.items():
            paths.append(_midi(rows, os.path.join(song_dir, f"{source}.mid"), summary["tempo_bpm"], source))
    elif os.path.exists(os.path.join(song_dir, "notes.csv")):
        os.unlink(os.path.join(song_dir, "notes.csv"))  # transcription is off now: no stale notes
    summary_path = str(atomic_write_json(os.path.join(song_dir, "summary.json"), summary))
    verify_song(song_dir)
    return paths + [summary_path]


def verify_song(song_dir: str) -> None:
    """Every output must exist and parse before the job counts as done."""
    import pyarrow.parquet as pq

    from core.resilience.errors import StaveError

    try:
        _read_json(os.path.join(song_dir, "summary.json"))
        pq.read_metadata(os.path.join(song_dir, "bars.parquet"))
        with open(os.path.join(song_dir, "beats.csv"), encoding="utf-8") as f:
            next(csv.reader(f))
    except (OSError, ValueError, StopIteration) as exc:
        raise StaveError(f"an output of {Path(song_dir).name} does not read back: {exc}") from exc
