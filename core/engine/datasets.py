"""Batch-level datasets: OUT/songs.parquet, OUT/bars.parquet, OUT/notes.parquet.

They are rebuilt from the finished songs' own files (OUT/<song_id>/summary.json,
bars.parquet, notes.csv) whenever a run of a batch ends or pauses. Rows are
streamed one song at a time into a Parquet writer (a row group per chunk of
songs), so a batch of 10,000 songs is never held in memory; each file is
written to a temp file and renamed, so a crash mid-rebuild leaves the previous
version readable. Songs of every batch in the folder are included, once each.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.engine.store import Store
from core.engine.store_rows import JobStatus
from core.fsutil import atomic_write_with

log = logging.getLogger(__name__)
_CHUNK = 256


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    unit: str
    doc: str


_F, _I, _S, _B = pa.float64(), pa.int64(), pa.string(), pa.bool_()
_LF, _LS = pa.list_(pa.float64()), pa.list_(pa.string())

SONG_COLUMNS: tuple[Column, ...] = (
    Column("song_id", _S, "", "file name (made safe) + first 8 hex digits of the content hash"),
    Column("input_path", _S, "", "the analysed file"),
    Column("file_name", _S, "", "its name"),
    Column("content_hash", _S, "", "SHA-256 of the file's bytes"),
    Column("format", _S, "", "container/codec as decoded (WAV, FLAC, MP3, ...)"),
    Column("channels", _I, "", "channels in the file"),
    Column("native_sample_rate", _I, "Hz", "the file's sample rate"),
    Column("sample_rate", _I, "Hz", "the analysis sample rate"),
    Column("duration_s", _F, "s", "the file's duration"),
    Column("analysed_duration_s", _F, "s", "duration after trimming leading/trailing silence"),
    Column("trim_offset_s", _F, "s", "silence trimmed from the start (all times are on the file's timeline)"),
    Column("time_signature", _S, "", "time signature used for bars, e.g. 4/4"),
    Column("tempo_bpm", _F, "BPM", "tempo, refined from the tracked beat intervals"),
    Column("tempo_confidence", _F, "0-1", "how clearly the beat stands out"),
    Column("tempo_half_bpm", _F, "BPM", "the half-tempo alternative"),
    Column("tempo_half_score", _F, "0-1", "its relative support"),
    Column("tempo_double_bpm", _F, "BPM", "the double-tempo alternative"),
    Column("tempo_double_score", _F, "0-1", "its relative support"),
    Column("beats", _I, "", "number of tracked beats"),
    Column("bars", _I, "", "number of bars"),
    Column("key", _S, "", "estimated key, e.g. 'A minor'"),
    Column("key_confidence", _F, "0-1", "margin of the best key over the runner-up"),
    Column("key_runner_up", _S, "", "the second most likely key"),
    Column("key_runner_up_score", _F, "-1..1", "its correlation with the key profile"),
    Column("tuning_cents", _F, "cents", "deviation from A440 tuning"),
    Column("loudness_lufs", _F, "LUFS", "integrated loudness, ITU-R BS.1770 (null when shorter than 0.4 s)"),
    Column("peak_dbfs", _F, "dBFS", "sample peak"),
    Column("rms_dbfs", _F, "dBFS", "RMS level"),
    Column("spectral_centroid_mean", _F, "Hz", "mean spectral centroid"),
    Column("spectral_bandwidth_mean", _F, "Hz", "mean spectral bandwidth"),
    Column("spectral_rolloff_mean", _F, "Hz", "mean 85 % roll-off frequency"),
    Column("spectral_flatness_mean", _F, "0-1", "mean spectral flatness"),
    Column("spectral_contrast_mean", _F, "dB", "mean spectral contrast over bands"),
    Column("zcr_mean", _F, "1/sample", "mean zero-crossing rate"),
    Column("onset_strength_mean", _F, "", "mean onset strength (log-mel flux)"),
    Column("onset_rate", _F, "1/s", "detected onsets per second"),
    Column("mfcc_mean", _LF, "", "mean of each MFCC (n_mfcc values)"),
    Column("mfcc_std", _LF, "", "standard deviation of each MFCC"),
    Column("chroma_mean", _LF, "0-1", "mean chroma, 12 values from C to B"),
    Column("separation_backend", _S, "", "demucs, hpss, or null when separation was off"),
    Column("stems", _LS, "", "names of the stems"),
    Column("transcription_backend", _S, "", "basic_pitch, pyin, or null when transcription was off"),
    Column("notes", _I, "", "number of transcribed notes"),
    Column("degraded", _B, "", "true when a fallback was used (see degraded_reasons)"),
    Column("degraded_reasons", _LS, "", "what was degraded and why"),
    Column("stave_version", _S, "", "Stave's version"),
    Column("created_at", _S, "ISO 8601", "when the song's files were written"),
)
SONG_SCHEMA = pa.schema([pa.field(c.name, c.type) for c in SONG_COLUMNS])

NOTE_SCHEMA = pa.schema([
    ("song_id", _S), ("source", _S), ("onset_s", _F), ("offset_s", _F), ("duration_s", _F), ("pitch_midi", _I),
    ("pitch_name", _S), ("velocity", _I), ("confidence", _F),
])


def song_row(summary: dict[str, Any]) -> dict[str, Any]:
    """One songs.parquet row from a summary.json."""
    alts = {a.get("relation"): a for a in summary.get("tempo_alternatives") or []}
    sep = summary.get("separation") or {}
    tr = summary.get("transcription") or {}
    row = {c.name: summary.get(c.name) for c in SONG_COLUMNS}
    row.update({
        "tempo_half_bpm": (alts.get("half") or {}).get("bpm"),
        "tempo_half_score": (alts.get("half") or {}).get("score"),
        "tempo_double_bpm": (alts.get("double") or {}).get("bpm"),
        "tempo_double_score": (alts.get("double") or {}).get("score"),
        "separation_backend": sep.get("backend"),
        "stems": sorted((sep.get("stems") or {}).keys()) if sep else None,
        "transcription_backend": tr.get("backend"),
        "notes": tr.get("notes"),
    })
    return row


def finished_song_dirs(store: Store, out_dir: str) -> list[str]:
    """Folders of every finished song in the store, once each, in queue order."""
    seen, dirs = set(), []
    for batch in store.list_batches():
        for job in store.jobs(batch.id, JobStatus.DONE):
            if job.song_id in seen:
                continue
            path = os.path.join(out_dir, job.song_id)
            if os.path.isfile(os.path.join(path, "summary.json")):
                seen.add(job.song_id)
                dirs.append(path)
    return dirs


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_stream(dest: str, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    def write(tmp):
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                if table.num_rows:
                    writer.write_table(table)

    atomic_write_with(dest, write)


def _songs(dirs: list[str]) -> Iterator[pa.Table]:
    for chunk in _chunks(dirs, _CHUNK):
        rows = []
        for d in chunk:
            try:
                with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
                    rows.append(song_row(json.load(f)))
            except (OSError, ValueError) as exc:
                log.warning("left %s out of songs.parquet: %s", d, exc)
        yield pa.Table.from_pylist(rows, schema=SONG_SCHEMA)


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _bars(paths: list[str], schema: pa.Schema) -> Iterator[pa.Table]:
    # a chunk of songs per row group: reading is per song, converting and writing per chunk
    for chunk in _chunks(paths, _CHUNK):
        tables = [pq.read_table(path) for path in chunk]
        yield _conform(pa.concat_tables(tables, promote_options="permissive"), schema)


def _notes(dirs: list[str]) -> Iterator[pa.Table]:
    types = {f.name: f.type for f in NOTE_SCHEMA if f.name != "song_id"}
    for d in dirs:
        path = os.path.join(d, "notes.csv")
        if not os.path.isfile(path):
            continue
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        table = table.add_column(0, "song_id", pa.array([os.path.basename(d)] * table.num_rows, _S))
        yield _conform(table, NOTE_SCHEMA)


DATASET_FILES = ("songs.parquet", "bars.parquet", "notes.parquet")


def datasets_exist(out_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(out_dir, name)) for name in DATASET_FILES)


def rebuild_datasets(store: Store, out_dir: str) -> dict[str, int]:
    """Rewrite the three batch-level datasets; the number of songs included."""
    dirs = finished_song_dirs(store, out_dir)
    _write_stream(os.path.join(out_dir, "songs.parquet"), SONG_SCHEMA, _songs(dirs))
    bar_files = [p for p in (os.path.join(d, "bars.parquet") for d in dirs) if os.path.isfile(p)]
    schemas = [pq.read_schema(p) for p in bar_files]
    bar_schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([("song_id", _S)])
    _write_stream(os.path.join(out_dir, "bars.parquet"), bar_schema, _bars(bar_files, bar_schema))
    _write_stream(os.path.join(out_dir, "notes.parquet"), NOTE_SCHEMA, _notes(dirs))
    return {"songs": len(dirs)}
