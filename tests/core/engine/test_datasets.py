"""The batch datasets written incrementally: parts as songs finish, publish == a full rebuild from the folders.

Songs are small real folders (summary.json, bars.parquet, notes.csv) recorded in a real store the way the
segment and export stages record them; the expected datasets are computed here straight from the folders.
"""

from __future__ import annotations

import json
import logging
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from core.engine.dataset_parts import part_files
from core.engine.datasets import (
    NOTE_SCHEMA, SONG_SCHEMA, BatchDatasets, datasets_exist, finished_song_dirs, rebuild_datasets, song_row,
)
from core.engine.store import JobSpec, JobStatus, Store, artifact_for
from core.fsutil import atomic_write_json, atomic_write_text, atomic_write_with

NOTE_HEADER = "source,onset_s,offset_s,duration_s,pitch_midi,pitch_name,velocity,confidence\n"


class Folder:
    """An output folder and its store; songs finish by writing their files and recording them."""

    def __init__(self, out, clock):
        self.out = str(out)
        self.store = Store.open(out, clock=clock)
        self.batch = self.store.create_batch({}, [])
        self.jobs: dict[str, int] = {}

    def queue(self, *names: str) -> list[int]:
        ids = self.store.add_jobs(self.batch, [JobSpec(f"/music/{n}.wav", f"{n}-0000abcd") for n in names])
        self.jobs.update({f"{n}-0000abcd": j for n, j in zip(names, ids)})
        return ids

    def finish(self, job_id: int, *, seed: int = 0, bars: pa.Table | None = None, n_bars: int = 3,
               notes: int | None = 2, bars_file: bool = True) -> None:
        """Write the song's files (record them as segment and export do) and mark the job done."""
        song_id = self.store.job(job_id).song_id
        folder = os.path.join(self.out, song_id)
        os.makedirs(folder, exist_ok=True)
        rng = np.random.default_rng(seed)
        segment, export = [], []
        if bars_file:
            if bars is None:
                bars = pa.table({"song_id": [song_id] * n_bars, "bar": list(range(n_bars)),
                                 "start_s": [2.0 * i for i in range(n_bars)], "rms": rng.random(n_bars)})
            path = os.path.join(folder, "bars.parquet")
            atomic_write_with(path, lambda tmp: pq.write_table(bars, tmp))
            segment.append(artifact_for(self.out, path))
        if notes is not None:
            lines = [f"mix,{0.5 * i:.4f},{0.5 * i + 0.4:.4f},0.4,{60 + int(rng.integers(12))},C4,{80 + i},0.9\n"
                     for i in range(notes)]
            path = os.path.join(folder, "notes.csv")
            atomic_write_text(path, NOTE_HEADER + "".join(lines))
            export.append(artifact_for(self.out, path))
        summary = {"song_id": song_id, "duration_s": 6.0 + seed, "tempo_bpm": 100.0 + rng.random(),
                   "key": "A minor", "beats": 12, "mfcc_mean": rng.random(4).tolist(),
                   "tempo_alternatives": [{"relation": "half", "bpm": 50.0, "score": 0.3}],
                   "transcription": None if notes is None else {"backend": "pyin", "notes": notes},
                   "degraded": False, "degraded_reasons": []}
        path = os.path.join(folder, "summary.json")
        atomic_write_json(path, summary)
        export.append(artifact_for(self.out, path))
        for stage, manifest in (("segment", segment), ("export", export)):
            attempt = self.store.begin_stage_attempt(job_id, stage)
            self.store.finish_stage(job_id, stage, manifest=manifest, stage_version="1", fingerprint="f",
                                    attempt_id=attempt)
        self.store.mark_job_finished(job_id)

    def datasets(self) -> dict[str, pa.Table]:
        return {d: pq.read_table(os.path.join(self.out, f"{d}.parquet")) for d in ("songs", "bars", "notes")}


def expected(folder: Folder) -> dict[str, pa.Table]:
    """The datasets computed straight from the folders of the finished songs (queue order, once each)."""
    dirs = []
    for batch in folder.store.list_batches():
        for job in folder.store.jobs(batch.id, JobStatus.DONE):
            d = os.path.join(folder.out, job.song_id)
            if d not in dirs and os.path.isfile(os.path.join(d, "summary.json")):
                dirs.append(d)
    songs = []
    for d in dirs:
        with open(os.path.join(d, "summary.json"), encoding="utf-8") as f:
            songs.append(song_row(json.load(f)))
    bars = [pq.read_table(os.path.join(d, "bars.parquet")) for d in dirs if os.path.isfile(os.path.join(d, "bars.parquet"))]
    schema = pa.unify_schemas([t.schema for t in bars], promote_options="permissive") if bars else \
        pa.schema([("song_id", pa.string())])
    types = {f.name: f.type for f in NOTE_SCHEMA if f.name != "song_id"}
    notes = []
    for d in dirs:
        if os.path.isfile(os.path.join(d, "notes.csv")):
            t = pacsv.read_csv(os.path.join(d, "notes.csv"), convert_options=pacsv.ConvertOptions(column_types=types))
            notes.append(_cast(t.add_column(0, "song_id", pa.array([os.path.basename(d)] * t.num_rows)), NOTE_SCHEMA))
    return {"songs": pa.Table.from_pylist(songs, schema=SONG_SCHEMA),
            "bars": pa.concat_tables([_cast(t, schema) for t in bars]) if bars else schema.empty_table(),
            "notes": pa.concat_tables(notes) if notes else NOTE_SCHEMA.empty_table()}


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) if f.name in table.column_names
                                 else pa.nulls(table.num_rows, f.type) for f in schema], schema=schema)


def assert_datasets_are_the_folders(folder: Folder) -> dict[str, pa.Table]:
    got, want = folder.datasets(), expected(folder)
    for name in want:
        assert got[name].schema.names == want[name].schema.names, name
        assert got[name].equals(want[name]), name
    return got


def assert_publish_equals_rebuild(folder: Folder, published: dict[str, pa.Table]) -> None:
    rebuild_datasets(folder.store, folder.out)
    rebuilt = folder.datasets()
    for name in published:
        assert published[name].equals(rebuilt[name], check_metadata=True), name


def finish_and_tell(folder: Folder, datasets: BatchDatasets, ids, *, seed: int | None = None, **kw) -> None:
    """Finish the jobs one after another and tell ``datasets``, as a supervisor does (seed: the job id)."""
    for j in ids:
        folder.finish(j, seed=j if seed is None else seed, **kw)
        datasets.song_finished(j)


def parts_index(folder: Folder) -> dict[int, list[str]]:
    return {n: pq.read_table(files["index"]).column("song_id").to_pylist()
            for n, files in part_files(folder.out).items() if "index" in files}


@pytest.fixture
def folder(tmp_path, clock):
    f = Folder(tmp_path / "out", clock)
    yield f
    f.store.close()


def test_a_part_is_written_every_n_songs_and_publish_equals_the_folders(folder):
    ids = folder.queue(*[f"s{i}" for i in range(8)])
    datasets = BatchDatasets(folder.store, folder.out, flush_every=3)
    for seed, j in enumerate([ids[2], ids[0], ids[1], ids[5], ids[3], ids[4], ids[7]]):  # not in queue order
        folder.finish(j, seed=seed)
        datasets.song_finished(j)
    assert parts_index(folder) == {1: ["s2-0000abcd", "s0-0000abcd", "s1-0000abcd"],
                                   2: ["s5-0000abcd", "s3-0000abcd", "s4-0000abcd"]}
    result = datasets.publish()
    assert result == {"songs": 7, "from_folders": 1}  # s7 was still buffered
    got = assert_datasets_are_the_folders(folder)
    assert got["songs"].column("song_id").to_pylist() == [f"s{i}-0000abcd" for i in (0, 1, 2, 3, 4, 5, 7)]
    assert got["bars"].num_rows == 21 and got["notes"].num_rows == 14
    assert parts_index(folder) == {}  # compacted into the published datasets' index
    assert_publish_equals_rebuild(folder, got)


def test_the_next_publish_reuses_the_published_rows_and_reads_only_new_songs(folder):
    ids = folder.queue("a", "b", "c")
    for j in ids:
        folder.finish(j, seed=j)
    assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 3, "from_folders": 3}
    more = folder.queue("d", "e")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, more)
    assert datasets.publish() == {"songs": 5, "from_folders": 0}
    got = assert_datasets_are_the_folders(folder)
    assert datasets.publish() == {"songs": 5, "from_folders": 0}  # nothing changed: nothing rewritten
    assert folder.datasets()["bars"].equals(got["bars"])
    assert_publish_equals_rebuild(folder, got)


def test_a_song_run_again_gets_its_new_rows_not_the_stale_ones_of_a_part(folder):
    a, b = folder.queue("a", "b")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, (a, b), seed=1)
    assert len(parts_index(folder)) == 1
    folder.store.reset_stages_from(a, "segment", stage_order=("segment", "export"))
    folder.finish(a, seed=2, n_bars=5)  # new files, new hashes recorded
    got = BatchDatasets(folder.store, folder.out).publish()
    assert got == {"songs": 2, "from_folders": 1}
    bars = assert_datasets_are_the_folders(folder)["bars"]
    assert bars.column("song_id").to_pylist().count("a-0000abcd") == 5


def test_a_file_changed_without_the_store_knowing_is_read_again(folder):
    a, b = folder.queue("a", "b")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, (a, b), seed=1)
    path = os.path.join(folder.out, "b-0000abcd", "bars.parquet")
    table = pq.read_table(path)
    pq.write_table(table.set_column(3, "rms", pa.array([9.0] * table.num_rows)), path)  # by hand: no record
    os.remove(os.path.join(folder.out, "a-0000abcd", "notes.csv"))
    assert datasets.publish() == {"songs": 2, "from_folders": 2}
    got = assert_datasets_are_the_folders(folder)
    assert got["bars"].filter(pa.compute.equal(got["bars"]["song_id"], "b-0000abcd"))["rms"].to_pylist() == [9.0] * 3
    assert got["notes"].column("song_id").to_pylist() == ["b-0000abcd"] * 2


def test_lost_or_corrupt_parts_are_ignored_and_their_songs_read_from_folders(folder, caplog):
    ids = folder.queue(*[f"s{i}" for i in range(8)])
    finish_and_tell(folder, BatchDatasets(folder.store, folder.out, flush_every=2), ids)
    parts = part_files(folder.out)
    assert sorted(parts) == [1, 2, 3, 4]
    with open(parts[1]["bars"], "wb") as f:
        f.write(b"not parquet")
    os.remove(parts[2]["index"])
    with open(parts[3]["index"], "r+b") as f:
        f.truncate(40)
    with caplog.at_level(logging.WARNING, logger="core.engine"):
        result = BatchDatasets(folder.store, folder.out).publish()
    assert result == {"songs": 8, "from_folders": 6}
    assert "part 1" in caplog.text and "part 3" in caplog.text
    got = assert_datasets_are_the_folders(folder)
    assert part_files(folder.out) == {}  # every part file went, the broken ones too
    assert_publish_equals_rebuild(folder, got)


def test_a_part_found_corrupt_while_reading_is_dropped_and_the_publish_done_again(folder, caplog):
    ids = folder.queue(*[f"s{i}" for i in range(4)])
    finish_and_tell(folder, BatchDatasets(folder.store, folder.out, flush_every=2), ids, n_bars=200)
    path = part_files(folder.out)[2]["bars"]
    st = os.stat(path)
    with open(path, "r+b") as f:  # its footer reads, its pages do not
        f.seek(4)
        f.write(b"\xff" * (st.st_size // 2))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with caplog.at_level(logging.WARNING, logger="core.engine"):
        assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 4, "from_folders": 2}
    assert "part 2" in caplog.text
    assert_datasets_are_the_folders(folder)


def test_parts_written_before_a_crash_are_used_by_the_next_run(folder):
    ids = folder.queue(*[f"s{i}" for i in range(5)])
    before = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, before, ids)
    del before  # the process died: no publish, s4 never reached a part
    assert not datasets_exist(folder.out)
    assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 5, "from_folders": 1}
    assert_datasets_are_the_folders(folder)


def test_bars_with_differing_columns_are_unified_in_queue_order(folder):
    a, b, c, d, e = folder.queue("a", "b", "c", "d", "e")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    folder.finish(b, bars=pa.table({"song_id": ["b-0000abcd"], "bar": [0], "rms": [0.5], "mix_notes": ["x"]}))
    datasets.song_finished(b)
    folder.finish(a, bars=pa.table({"song_id": ["a-0000abcd"] * 2, "bar": [0, 1], "rms": pa.array([1, 2])}))
    datasets.song_finished(a)  # a part: b then a, its rms int64 then float64
    folder.finish(c, bars_file=False, notes=None)
    datasets.song_finished(c)
    folder.finish(d, bars=pa.table({"song_id": pa.array([], pa.string()), "bar": pa.array([], pa.int64())}))
    datasets.song_finished(d)  # a part: c (no bars) and d (no rows)
    folder.finish(e, bars=pa.table({"song_id": ["e-0000abcd"], "bar": [0], "tempo": [120.0]}))  # from its folder
    datasets.publish()
    bars = assert_datasets_are_the_folders(folder)["bars"]
    assert bars.schema.names == ["song_id", "bar", "rms", "mix_notes", "tempo"]  # as first seen in queue order
    assert bars.schema.field("rms").type == pa.float64()
    assert bars.column("rms").to_pylist() == [1.0, 2.0, 0.5, None]


def test_an_empty_batch_writes_empty_datasets_with_their_schemas(folder):
    folder.queue("never-run")
    assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 0, "from_folders": 0}
    got = folder.datasets()
    assert got["songs"].num_rows == got["bars"].num_rows == got["notes"].num_rows == 0
    assert got["songs"].schema.equals(SONG_SCHEMA) and got["notes"].schema.equals(NOTE_SCHEMA)
    assert got["bars"].schema.names == ["song_id"]


def test_an_unreadable_song_file_is_left_out_with_a_warning_not_a_failure(folder, caplog):
    a, b = folder.queue("a", "b")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=1)
    folder.finish(a, seed=1)
    with open(os.path.join(folder.out, "a-0000abcd", "bars.parquet"), "wb") as f:
        f.write(b"garbage")
    datasets.song_finished(a)  # not put into a part
    folder.finish(b, seed=2)
    datasets.song_finished(b)
    assert list(parts_index(folder).values()) == [["b-0000abcd"]]
    with caplog.at_level(logging.WARNING, logger="core.engine"):
        assert datasets.publish() == {"songs": 2, "from_folders": 1}
    assert "left the bars of" in caplog.text
    got = folder.datasets()
    assert got["songs"].column("song_id").to_pylist() == ["a-0000abcd", "b-0000abcd"]
    assert set(got["bars"].column("song_id").to_pylist()) == {"b-0000abcd"}
    assert got["notes"].column("song_id").to_pylist() == ["a-0000abcd"] * 2 + ["b-0000abcd"] * 2
    assert_publish_equals_rebuild(folder, got)


def test_a_part_is_also_written_after_some_seconds(folder, clock):
    a, b = folder.queue("a", "b")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=100, flush_after_s=30, clock=clock)
    folder.finish(a)
    datasets.song_finished(a)
    clock.advance(31)
    assert parts_index(folder) == {}
    folder.finish(b)
    datasets.song_finished(b)
    assert parts_index(folder) == {1: ["a-0000abcd", "b-0000abcd"]}


def test_songs_finished_by_several_threads_each_land_once(folder):
    ids = folder.queue(*[f"s{i:02d}" for i in range(40)])
    for j in ids:
        folder.finish(j, seed=j, n_bars=2)
    datasets = BatchDatasets(folder.store, folder.out, flush_every=3)
    mine = [ids[k::4] for k in range(4)]
    threads = [threading.Thread(target=lambda js=js: [datasets.song_finished(j) for j in js]) for js in mine]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    datasets.flush()
    in_parts = [s for songs in parts_index(folder).values() for s in songs]
    assert sorted(in_parts) == sorted(f"s{i:02d}-0000abcd" for i in range(40))
    assert datasets.publish() == {"songs": 40, "from_folders": 0}
    assert_datasets_are_the_folders(folder)


def test_published_datasets_changed_by_hand_are_not_reused(folder):
    ids = folder.queue("a", "b")
    for j in ids:
        folder.finish(j, seed=j)
    rebuild_datasets(folder.store, folder.out)
    bars = os.path.join(folder.out, "bars.parquet")
    pq.write_table(pq.read_table(bars).slice(0, 2), bars)
    assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 2, "from_folders": 2}
    assert_datasets_are_the_folders(folder)


def test_songs_of_every_batch_once_each_in_queue_order(folder):
    a, b = folder.queue("a", "b")
    for j in (a, b):
        folder.finish(j, seed=j)
    folder.batch = folder.store.create_batch({}, [])
    again, c = folder.store.add_jobs(folder.batch, [JobSpec("/music/b.wav", "b-0000abcd"),
                                                    JobSpec("/music/c.wav", "c-0000abcd")])
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, (c, again), seed=5)
    datasets.publish()
    got = assert_datasets_are_the_folders(folder)
    assert got["songs"].column("song_id").to_pylist() == ["a-0000abcd", "b-0000abcd", "c-0000abcd"]
    assert finished_song_dirs(folder.store, folder.out) == [os.path.join(folder.out, s)
                                                            for s in ("a-0000abcd", "b-0000abcd", "c-0000abcd")]


def test_the_store_says_which_version_of_a_file_it_recorded_last(folder):
    a, b = folder.queue("a", "b")
    folder.finish(a, seed=1)
    folder.finish(b, seed=1)
    first = folder.store.recorded_hashes(["summary.json", "notes.csv"])
    assert sorted(first) == ["a-0000abcd/notes.csv", "a-0000abcd/summary.json",
                             "b-0000abcd/notes.csv", "b-0000abcd/summary.json"]
    folder.store.reset_stages_from(a, "segment", stage_order=("segment", "export"))
    assert sorted(folder.store.recorded_hashes(["summary.json"], job_ids=[a])) == []
    folder.finish(a, seed=2)
    now = folder.store.recorded_hashes(["summary.json"], job_ids=[a])
    assert list(now) == ["a-0000abcd/summary.json"] and now["a-0000abcd/summary.json"] != first[
        "a-0000abcd/summary.json"]


def test_many_row_groups_and_songs_from_several_sources_in_one_chunk(folder, monkeypatch):
    monkeypatch.setattr("core.engine.datasets._CHUNK", 3)  # row groups of 3 songs, chunks straddling sources
    ids = folder.queue(*[f"s{i}" for i in range(10)])
    finish_and_tell(folder, BatchDatasets(folder.store, folder.out, flush_every=4), ids[::-1], n_bars=2)
    assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 10, "from_folders": 2}
    assert pq.ParquetFile(os.path.join(folder.out, "bars.parquet")).metadata.num_row_groups == 4
    more = folder.queue("t0", "t1")
    folder.store.reset_stages_from(ids[4], "segment", stage_order=("segment", "export"))
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, [more[1], ids[4], more[0]], seed=7, n_bars=3)  # s4 run again
    assert datasets.publish() == {"songs": 12, "from_folders": 1}
    got = assert_datasets_are_the_folders(folder)
    assert got["bars"].column("song_id").to_pylist()[6:13] == ["s3-0000abcd"] * 2 + ["s4-0000abcd"] * 3 + [
        "s5-0000abcd"] * 2
    assert_publish_equals_rebuild(folder, got)


def test_parts_from_a_stave_that_built_rows_differently_are_not_used(folder, monkeypatch):
    from core.engine import dataset_parts

    ids = folder.queue("a", "b", "c")
    datasets = BatchDatasets(folder.store, folder.out, flush_every=2)
    finish_and_tell(folder, datasets, ids)
    assert datasets.publish() == {"songs": 3, "from_folders": 1}
    monkeypatch.setattr(dataset_parts, "ROWS_VERSION", "999")  # as after an upgrade that builds rows differently
    dataset_parts._format.cache_clear()
    try:
        assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 3, "from_folders": 3}  # none reused
        got = assert_datasets_are_the_folders(folder)
        assert BatchDatasets(folder.store, folder.out).publish() == {"songs": 3, "from_folders": 0}  # its own: yes
        assert_publish_equals_rebuild(folder, got)
    finally:
        dataset_parts._format.cache_clear()


def test_a_song_whose_file_name_is_not_utf8_keeps_its_row_with_the_bytes_escaped(folder):
    """Linux names are bytes; one that is not UTF-8 reaches summary.json as lone surrogates, which Parquet
    cannot hold: the song stays in songs.parquet with the undecodable bytes written as \\xNN."""
    [job] = folder.queue("odd")
    folder.finish(job)
    song_id = folder.store.job(job).song_id
    summary_path = os.path.join(folder.out, song_id, "summary.json")
    with open(summary_path, encoding="utf-8") as f:
        summary = json.load(f)
    name = os.fsdecode(b"bad\xff\xfe bytes.wav")  # what os.listdir gives for such a name
    summary.update(input_path="/music/" + name, file_name=name)
    atomic_write_json(summary_path, summary)  # json keeps the surrogates as \udcff escapes
    rebuild_datasets(folder.store, folder.out)
    [row] = folder.datasets()["songs"].to_pylist()  # was: left out ("surrogates not allowed"), only logged
    assert row["file_name"] == "bad\\xff\\xfe bytes.wav" and row["input_path"] == "/music/bad\\xff\\xfe bytes.wav"
    assert row["song_id"] == song_id
