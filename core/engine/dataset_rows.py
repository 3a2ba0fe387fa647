"""What the batch datasets hold, and how one song's folder becomes their rows.

``SONG_COLUMNS`` documents songs.parquet (one row per song, from its summary.json), ``NOTE_SCHEMA``
notes.parquet (one row per note, from its notes.csv); bars.parquet holds the songs' own bars.parquet rows,
their schemas unified. The readers here are used both when a part is written (as songs finish) and when
a song is read from its folder at publish time, so both give the same rows.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from core.engine.dataset_parts import SongFiles

log = logging.getLogger(__name__)


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
    row = {c.name: _utf8(summary.get(c.name)) for c in SONG_COLUMNS}
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


def _utf8(value: Any) -> Any:
    """A file name that is not valid UTF-8 (its bytes kept by Python as lone surrogates) as text Parquet can
    hold: the undecodable bytes written as ``\\xNN``, the rest as it was. Other values as they are."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:  # a surrogate that stands for no byte
                return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


DEFAULT_BARS_SCHEMA = pa.schema([("song_id", _S)])  # when no song has bars


# -- one song's folder ------------------------------------------------------------------------
class Unreadable(Exception):
    """A file of a song that does not read; the message says what is left out of which dataset."""


def read_song_row(song: SongFiles) -> dict[str, Any]:
    try:
        with open(os.path.join(song.folder, "summary.json"), encoding="utf-8") as f:
            return song_row(json.load(f))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise Unreadable(f"left {song.folder} out of songs.parquet: {exc}") from exc


def read_bars(song: SongFiles) -> pa.Table | None:
    if "bars.parquet" not in song.present:
        return None
    try:  # ~3x faster than pq.read_table on a small file
        with pq.ParquetFile(os.path.join(song.folder, "bars.parquet"), pre_buffer=False) as f:
            return f.read(use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise Unreadable(f"left the bars of {song.folder} out of bars.parquet: {exc}") from exc


_NOTE_TYPES = {f.name: f.type for f in NOTE_SCHEMA if f.name != "song_id"}


def read_notes(song: SongFiles) -> pa.Table | None:
    if "notes.csv" not in song.present:
        return None
    try:
        table = pacsv.read_csv(os.path.join(song.folder, "notes.csv"),
                               read_options=pacsv.ReadOptions(use_threads=False),
                               convert_options=pacsv.ConvertOptions(column_types=_NOTE_TYPES))
        table = table.add_column(0, "song_id", pa.array([song.song_id] * table.num_rows, _S))
        return conform(table, NOTE_SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise Unreadable(f"left the notes of {song.folder} out of notes.parquet: {exc}") from exc


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    if table.schema.equals(schema):
        return table
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def songs_table(rows: list[dict[str, Any]], names: list[str],
                 report: Callable[..., None] = log.warning) -> tuple[pa.Table, list[bool]]:
    """songs.parquet rows, and which rows fit: one whose values do not fit the schema is left out (reported)."""
    try:
        return pa.Table.from_pylist(rows, schema=SONG_SCHEMA), [True] * len(rows)
    except (pa.ArrowException, TypeError, ValueError):
        fits = []
        for row, name in zip(rows, names):
            try:
                pa.Table.from_pylist([row], schema=SONG_SCHEMA)
                fits.append(True)
            except (pa.ArrowException, TypeError, ValueError) as exc:
                report("left %s out of songs.parquet: %s", name, exc)
                fits.append(False)
        return pa.Table.from_pylist([r for r, ok in zip(rows, fits) if ok], schema=SONG_SCHEMA), fits


def unify_bars_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else DEFAULT_BARS_SCHEMA


