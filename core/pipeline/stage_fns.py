"""The stage functions the worker processes run, over a job's work folder.

Each is ``fn(ctx: StageContext) -> StageOutput``: it reads what earlier stages
wrote in ``ctx.work_dir``, writes its own artifacts atomically and returns
their manifest. Files in the work folder (OUT/.stave/work/job-<id>/):

  probe.json       ingest: what the file is, its content hash and song id
  decoded.npy      ingest: the mono mix at the analysis rate (one decode, one resample)
  audio.npy        preprocess: trimmed (and optionally loudness-normalised) analysis signal
  preprocess.json  preprocess: trim offset, gain, duration
  stems/*.npy      separate: each stem at the analysis rate; stems.json says which backend
  analysis.json    analyze: the song-level summary (times on the original timeline)
  bars_raw.parquet analyze: per-bar features sliced from the frame features
  stems_analysis.json analyze: the summary of each stem
  notes.json       transcribe: notes per source (the mix, or each pitched stem)

Final outputs go to OUT/<song_id>/ (see core.pipeline.export).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from core.engine.stagegraph import StageContext, StageOutput
from core.fsutil import atomic_save_npy, atomic_write_json, atomic_write_with, safe_song_id
from core.pipeline.config import PipelineConfig
from core.resilience.errors import InputError


# -- helpers ------------------------------------------------------------------------------
def config_of(ctx: StageContext) -> PipelineConfig:
    config, _warnings = PipelineConfig.from_dict(ctx.config)
    return config


def work(ctx: StageContext, *parts: str) -> str:
    return os.path.join(ctx.work_dir, *parts)


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_npy(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _ffmpeg_for(config: PipelineConfig) -> str | None:
    if config.ffmpeg_path:
        return config.ffmpeg_path
    from core.ffmpeg import find_ffmpeg

    found = find_ffmpeg()
    return str(found.path) if found is not None else None


def stem_sources(ctx: StageContext) -> dict[str, str]:
    """``{stem name: .npy path}`` written by the separate stage (empty when it did not run)."""
    meta_path = work(ctx, "stems", "stems.json")
    if not os.path.exists(meta_path):
        return {}
    meta = read_json(meta_path)
    return {name: work(ctx, "stems", f"{name}.npy") for name in meta["stems"]}


# -- ingest -------------------------------------------------------------------------------
def ingest_stage(ctx: StageContext) -> StageOutput:
    from core.pipeline.ingest import ingest_mono

    config = config_of(ctx)
    # streamed: decoded blocks are mixed and resampled on the fly, only the mono result is held
    result = ingest_mono(ctx.input_path, config, config.analysis_sr, ffmpeg=_ffmpeg_for(config))
    song_id = safe_song_id(ctx.input_path, result.content_hash)
    decoded = atomic_save_npy(work(ctx, "decoded.npy"), result.y)
    probe = {
        **result.probe.to_dict(),
        "file_name": os.path.basename(ctx.input_path),
        "content_hash": result.content_hash,
        "song_id": song_id,
        "analysis_sr": config.analysis_sr,
    }
    probe_path = atomic_write_json(work(ctx, "probe.json"), probe)
    return StageOutput.of(ctx, [probe_path, decoded], facts={
        "song_id": song_id, "content_hash": result.content_hash, "audio_duration_s": result.probe.duration_s})


# -- preprocess ---------------------------------------------------------------------------
def preprocess_stage(ctx: StageContext) -> StageOutput:
    from core.pipeline.preprocess import preprocess

    config = config_of(ctx)
    y = load_npy(work(ctx, "decoded.npy"))
    result = preprocess(y[np.newaxis, :], config.analysis_sr, config)
    audio = atomic_save_npy(work(ctx, "audio.npy"), result.y)
    meta = atomic_write_json(work(ctx, "preprocess.json"), {
        "trim_offset_s": result.trim_offset_s, "gain_db": result.gain_db, "duration_s": result.duration_s,
        "sample_rate": result.sr})
    return StageOutput.of(ctx, [audio, meta])


# -- separate -----------------------------------------------------------------------------
def separate_stage(ctx: StageContext) -> StageOutput:
    from core.pipeline.preprocess import resample, to_mono

    config = config_of(ctx)
    sr = config.analysis_sr
    stems_dir = work(ctx, "stems")
    os.makedirs(stems_dir, exist_ok=True)
    stems: dict[str, np.ndarray] = {}
    if ctx.backend == "demucs":
        import soundfile as sf

        from core.pipeline.separate import separate_demucs

        command = [config.demucs_executable] if config.demucs_executable else None
        timeout = max(1.0, (ctx.timeout_s or 24 * 3600) - 5.0)  # end Demucs before the worker is killed
        paths = separate_demucs(ctx.input_path, work(ctx, "demucs"), model=config.demucs_model,
                                timeout_s=timeout, command=command)
        for name, path in paths.items():
            data, native_sr = sf.read(path, dtype="float32", always_2d=True)
            stems[name] = resample(to_mono(data.T), native_sr, sr)
            if config.keep_stems:
                dest = os.path.join(ctx.song_dir, "stems", f"{name}.wav")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                atomic_write_with(dest, lambda tmp, src=path: shutil.copyfile(src, tmp))
    else:
        from core.pipeline.separate import separate_hpss

        y = load_npy(work(ctx, "audio.npy"))
        parts = separate_hpss(y, sr)
        stems = {name: np.asarray(a, dtype=np.float32) for name, a in parts.items()}
    written = [atomic_save_npy(os.path.join(stems_dir, f"{name}.npy"), a) for name, a in stems.items()]
    meta = atomic_write_json(os.path.join(stems_dir, "stems.json"),
                             {"backend": ctx.backend, "stems": sorted(stems), "sample_rate": sr})
    return StageOutput.of(ctx, [*written, meta])


# -- analyze ------------------------------------------------------------------------------
def _analysis_config(config: PipelineConfig):
    from core.pipeline.analyze import AnalysisConfig

    return AnalysisConfig(hop_length=config.hop_length, n_fft=config.n_fft, n_mfcc=config.n_mfcc,
                          beats_per_bar=config.time_signature_numerator,
                          beat_unit=config.time_signature_denominator)


def _shift(values, offset: float):
    return [None if v is None else round(v + offset, 4) for v in values]


def analyze_stage(ctx: StageContext) -> StageOutput:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.pipeline.analyze import analyze_audio, bar_features

    config = config_of(ctx)
    acfg = _analysis_config(config)
    pre = read_json(work(ctx, "preprocess.json"))
    offset = float(pre["trim_offset_s"])
    # no reference kept here: analyze_audio frees the samples once it has their STFT
    result = analyze_audio(load_npy(work(ctx, "audio.npy")), config.analysis_sr, acfg)
    summary = result.to_summary_dict()
    # report times on the original file's timeline, not the trimmed signal's
    summary["beat_times"] = _shift(summary["beat_times"], offset)
    summary["downbeat_times"] = _shift(summary["downbeat_times"], offset)
    summary["trim_offset_s"] = offset
    summary["gain_db"] = pre["gain_db"]
    rows = bar_features(result)
    for row in rows:
        row["start_s"] += offset
        row["end_s"] += offset
    del result
    analysis = atomic_write_json(work(ctx, "analysis.json"), summary)
    table = pa.Table.from_pylist(rows) if rows else pa.table({"bar": pa.array([], pa.int64())})
    bars = atomic_write_with(work(ctx, "bars_raw.parquet"), lambda tmp: pq.write_table(table, tmp))
    paths = [analysis, bars]
    stems = stem_sources(ctx)
    if stems:
        per_stem = {}
        for name, path in stems.items():
            s = analyze_audio(load_npy(path), config.analysis_sr, acfg).to_summary_dict()
            per_stem[name] = {k: v for k, v in s.items() if k not in ("beat_times", "downbeat_times")}
        paths.append(atomic_write_json(work(ctx, "stems_analysis.json"), per_stem))
    return StageOutput.of(ctx, paths)


# -- transcribe ---------------------------------------------------------------------------
_UNPITCHED_STEMS = {"drums", "percussive"}


def transcribe_stage(ctx: StageContext) -> StageOutput:
    config = config_of(ctx)
    sr = config.analysis_sr
    offset = float(read_json(work(ctx, "preprocess.json"))["trim_offset_s"])
    sources = {k: v for k, v in stem_sources(ctx).items() if k not in _UNPITCHED_STEMS} or {
        "mix": work(ctx, "audio.npy")}
    notes: dict[str, list[dict]] = {}
    for name, path in sorted(sources.items()):
        y = load_npy(path)
        if ctx.backend == "basic_pitch":
            from core.pipeline.transcribe import transcribe_basic_pitch

            found = transcribe_basic_pitch((y, sr))
        else:
            from core.pipeline.transcribe import transcribe_pyin

            found = transcribe_pyin(y, sr, hop_length=config.hop_length)
        rows = []
        for n in found:
            row = n.to_row()
            row["onset_s"] = round(row["onset_s"] + offset, 4)
            row["offset_s"] = round(row["offset_s"] + offset, 4)
            rows.append(row)
        notes[name] = rows
    path = atomic_write_json(work(ctx, "notes.json"), {"backend": ctx.backend, "sources": notes})
    return StageOutput.of(ctx, [path])


# -- segment ------------------------------------------------------------------------------
def segment_stage(ctx: StageContext) -> StageOutput:
    from core.pipeline.export import write_bar_audio, write_bars_table

    config = config_of(ctx)
    notes_path = work(ctx, "notes.json")
    notes = read_json(notes_path)["sources"] if os.path.exists(notes_path) else None
    os.makedirs(ctx.song_dir, exist_ok=True)
    paths = [write_bars_table(work(ctx, "bars_raw.parquet"), os.path.join(ctx.song_dir, "bars.parquet"),
                              ctx.song_id, notes)]
    if config.export_bar_audio:
        paths += write_bar_audio(load_npy(work(ctx, "audio.npy")), config.analysis_sr,
                                 float(read_json(work(ctx, "preprocess.json"))["trim_offset_s"]),
                                 os.path.join(ctx.song_dir, "bars.parquet"), os.path.join(ctx.song_dir, "bar_audio"))
    return StageOutput.of(ctx, paths)


# -- export -------------------------------------------------------------------------------
def export_stage(ctx: StageContext) -> StageOutput:
    from core.pipeline.export import export_song

    paths = export_song(ctx)
    if not paths:
        raise InputError("export wrote nothing")
    return StageOutput.of(ctx, paths)
