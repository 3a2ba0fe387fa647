"""Batch-level datasets: OUT/songs.parquet, OUT/bars.parquet, OUT/notes.parquet, written incrementally.

Rebuilding them from every finished song's folder (summary.json, bars.parquet, notes.csv) whenever a run
ends or pauses costs several milliseconds a song (a small-file open, a JSON parse, a Parquet footer each):
seconds for 1,000 songs, minutes for 10,000, at every pause. So instead (:class:`BatchDatasets`):

- as jobs finish, :meth:`~BatchDatasets.song_finished` buffers them, and every 64 songs or 30 s the
  supervisor thread that finished the last one reads their folders into a *part*: their rows in the
  unified schemas, stamped with the version of the files they came from (:mod:`core.engine.dataset_parts`).
  Reading happens while the workers analyse the next songs, not when the person waits for the batch to end.
- :meth:`~BatchDatasets.publish` (the end of a run, or a pause) writes the three datasets: every finished
  song in the store (all batches, once each, queue order), its rows from the newest part whose stamp still
  matches its files, else from its folder (songs finished just before a crash, a lost or corrupt part).
  Then it compacts: the published datasets themselves get an index and become the only part, so the next
  publish copies their rows instead of re-reading the folders, and no second copy of the rows is kept.

The result is exactly what :func:`rebuild_datasets` (the same code with no parts) gives from the folders:
same rows, order and schema (bars: the per-song schemas unified in queue order). Rows stream a chunk of
songs at a time into a Parquet writer (a row group per chunk), so 10,000 songs' bars are never in memory
at once; every file is written to a temp file and renamed, so a crash leaves the previous version readable.
A song whose files do not read is left out (with a warning) of the dataset that file feeds, as before.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.engine.dataset_parts import (
    DATASETS, PUBLISHED_INDEX, STAMPED_FILES, IndexBuilder, RowReader, Source, SourceError, SongFiles, chunks,
    load_parts, load_source, part_files, parts_dir, remove_parts, song_files, write_part,
)
from core.engine.dataset_rows import (  # noqa: F401 - SONG_COLUMNS, SONG_SCHEMA, song_row: public here too
    DEFAULT_BARS_SCHEMA, NOTE_SCHEMA, SONG_COLUMNS, SONG_SCHEMA, Column, Unreadable, conform, read_bars,
    read_notes, read_song_row, song_row, songs_table, unify_bars_schemas,
)
from core.engine.store import Store
from core.engine.store_rows import JobStatus
from core.fsutil import atomic_write_with
from core.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
_CHUNK = 256  # songs per row group of the published datasets
_KEEP_BAR_ROWS = 20_000  # bars of songs read from their folders kept between the schema pass and the data pass


DATASET_FILES = ("songs.parquet", "bars.parquet", "notes.parquet")


def datasets_exist(out_dir: str) -> bool:
    return all(os.path.isfile(os.path.join(out_dir, name)) for name in DATASET_FILES)


def finished_song_dirs(store: Store, out_dir: str) -> list[str]:
    """Folders of every finished song in the store, once each, in queue order."""
    return [s.folder for s in _finished_songs(store, out_dir)]


def _finished_songs(store: Store, out_dir: str) -> list[SongFiles]:
    """Every finished song whose summary.json exists, once each, in queue order, stamped."""
    hashes = store.recorded_hashes(STAMPED_FILES)
    seen, songs = set(), []
    for batch in store.list_batches():
        for job in store.jobs(batch.id, JobStatus.DONE):
            if job.song_id in seen:
                continue
            files = song_files(out_dir, job.song_id, hashes)
            if "summary.json" in files.present:
                seen.add(job.song_id)
                songs.append(files)
    return songs


def rebuild_datasets(store: Store, out_dir: str) -> dict[str, int]:
    """Rewrite the three batch-level datasets from the song folders alone; the number of songs included."""
    return BatchDatasets(store, out_dir).publish(use_parts=False)


def _write_stream(dest: str, schema: pa.Schema, tables: Callable[[ExitStack], Iterator[pa.Table]]) -> None:
    """Write what ``tables`` yields; whatever it opens on the stack is closed before the rename (Windows)."""
    def write(tmp):
        with ExitStack() as stack, pq.ParquetWriter(tmp, schema) as writer:
            for table in tables(stack):
                if table.num_rows:
                    writer.write_table(table)

    atomic_write_with(dest, write)


_arrow_warm = threading.Event()


def warm_arrow_in_background() -> None:
    """Make pyarrow load what it loads on its first conversion of Python values, on a background thread.

    That first conversion imports pandas when it is installed (half a second
    here); without this it happens when the first part or the published
    datasets are written, i.e. at the end of a short run, where a person waits
    for it. Once per process.
    """
    if _arrow_warm.is_set():
        return
    _arrow_warm.set()

    def warm() -> None:
        try:
            pa.array([0.0])
        except Exception as exc:  # noqa: BLE001 - only a head start: the real conversion reports problems
            log.debug("pyarrow warm-up failed: %s", exc)

    threading.Thread(target=warm, name="stave-arrow-warm-up", daemon=True).start()


# -- incremental datasets ---------------------------------------------------------------------
class BatchDatasets:
    """The datasets of one output folder, kept up to date as songs finish. Thread-safe.

    ``song_finished`` is called by the supervisor threads (it never raises: a part that cannot be written
    only means its songs are read from their folders at publish time); ``publish`` when a run ends.
    """

    def __init__(self, store: Store, out_dir: str, *, flush_every: int = 64, flush_after_s: float = 30.0,
                 clock: Clock = SYSTEM_CLOCK):
        if flush_every < 1:
            raise ValueError(f"flush_every: must be at least 1, got {flush_every!r}")
        self.store = store
        self.out_dir = out_dir
        self.flush_every = flush_every
        self.flush_after_s = flush_after_s
        self._clock = clock
        self._lock = threading.Lock()  # the buffer
        self._writing = threading.Lock()  # parts and publishing, one at a time
        self._buffer: list[int] = []
        self._since: float | None = None
        warm_arrow_in_background()

    def song_finished(self, job_id: int) -> None:
        """A job finished DONE: its song goes into the next part."""
        now = self._clock.monotonic()
        with self._lock:
            self._buffer.append(job_id)
            self._since = now if self._since is None else self._since
            due = len(self._buffer) >= self.flush_every or now - self._since >= self.flush_after_s
        if due:
            self.flush(wait=False)  # another thread writing a part already: these songs go into the next one

    def flush(self, *, wait: bool = True) -> int:
        """Write the buffered songs as a part now; how many songs it holds."""
        if not self._writing.acquire(blocking=wait):
            return 0
        try:
            with self._lock:
                jobs, self._buffer, self._since = self._buffer, [], None
            return self._write_part(jobs) if jobs else 0
        except Exception as exc:  # noqa: BLE001 - a part is an optimisation: never fail a batch for it
            log.warning("could not write a part of the batch datasets (its songs will be read from their "
                        "folders when the datasets are published): %s", exc)
            return 0
        finally:
            self._writing.release()

    def _write_part(self, jobs: list[int]) -> int:
        """Read the songs of ``jobs`` from their folders into a new part (songs that do not read are left to
        the publish, which says why)."""
        song_ids = list(dict.fromkeys(self.store.job(j).song_id for j in jobs))  # once each, order kept
        hashes: dict[str, str] = {}
        for group in chunks(jobs, 500):  # SQLite's parameter limit
            hashes.update(self.store.recorded_hashes(STAMPED_FILES, job_ids=group))
        read = []
        for song_id in song_ids:
            song = song_files(self.out_dir, song_id, hashes)  # stamped before reading: a later change shows
            try:
                read.append((song, read_song_row(song), read_bars(song), read_notes(song)))
            except Unreadable as exc:  # read from its folder at publish time, which says why
                log.debug("not in a part: %s", exc)
        song_rows, fits = songs_table([row for _, row, _, _ in read], [song.folder for song, *_ in read],
                                      report=log.debug)
        read = [r for r, fit in zip(read, fits) if fit]
        if not read:
            return 0
        index = IndexBuilder()
        for song, _, bars, notes in read:
            index.add(song.song_id, song.stamp, {"songs": 1, "bars": 0 if bars is None else bars.num_rows,
                                                 "notes": 0 if notes is None else notes.num_rows},
                      None if bars is None else bars.schema)
        bars = [b for _, _, b, _ in read if b is not None]
        notes = [n for _, _, _, n in read if n is not None]
        tables = {"songs": song_rows,  # one chunk a column: writing 64 small chunks a column is much slower
                  "bars": pa.concat_tables(bars, promote_options="permissive").combine_chunks() if bars
                  else DEFAULT_BARS_SCHEMA.empty_table(),
                  "notes": pa.concat_tables(notes).combine_chunks() if notes else NOTE_SCHEMA.empty_table()}
        write_part(self.out_dir, max(part_files(self.out_dir), default=0) + 1, index, tables)
        return len(read)

    def publish(self, *, use_parts: bool = True) -> dict[str, int]:
        """Write OUT/songs.parquet, bars.parquet and notes.parquet for every finished song, then compact.

        ``use_parts=False``: read every song from its folder (a full rebuild). Returns how many songs the
        datasets hold and how many of them were read from their folders.
        """
        with self._writing:
            with self._lock:  # these are read (and indexed) below like any other song
                self._buffer, self._since = [], None
            songs = _finished_songs(self.store, self.out_dir)
            found = part_files(self.out_dir)
            published, parts = self._sources(found) if use_parts else (None, [])
            sources = ([published] if published else []) + parts
            while True:
                publication = _Publication(self.out_dir, songs, sources)
                if published is not None and publication.only_from(published):
                    break  # the published datasets are still right: nothing to write
                try:
                    index = publication.write()  # then the index: the published datasets become the only part
                    index.write(os.path.join(parts_dir(self.out_dir), PUBLISHED_INDEX),
                                {d: os.path.join(self.out_dir, f"{d}.parquet") for d in DATASETS})
                    break
                except SourceError as exc:  # found corrupt mid-way: again without it
                    if not any(s is exc.source for s in sources):
                        raise
                    log.warning("ignored a part of the batch datasets, its songs are read from their folders: %s",
                                exc)
                    sources = [s for s in sources if s is not exc.source]
                    published = None if published is exc.source else published
            remove_parts(found)
            return {"songs": len(songs), "from_folders": publication.from_folders}

    def _sources(self, found) -> tuple[Source | None, list[Source]]:
        """The last published datasets, and the parts, oldest first."""
        published = None
        index = os.path.join(parts_dir(self.out_dir), PUBLISHED_INDEX)
        if os.path.isfile(index):
            try:
                published = load_source("the published datasets", index,
                                        {d: os.path.join(self.out_dir, f"{d}.parquet") for d in DATASETS})
            except SourceError as exc:
                log.info("the published datasets are not reused: %s", exc)
        return published, load_parts(self.out_dir, found)


@dataclass
class _Song:
    """What one publish knows of a song: where its rows come from and what the datasets hold of it."""

    files: SongFiles
    source: Source | None = None
    pos: int = -1
    ok: bool = True
    bars_schema: pa.Schema | None = None
    bars: pa.Table | None = None  # read from its folder for the schema, kept for the data pass
    counts: dict[str, int] | None = None


class _Publication:
    """One publish: songs/bars/notes written in three streaming passes, and the index of what was written."""

    def __init__(self, out_dir: str, songs: Sequence[SongFiles], sources: Sequence[Source]):
        self.out_dir = out_dir
        self.songs = [_Song(s, counts={d: 0 for d in DATASETS}) for s in songs]
        by_id = {s.song_id: song for s, song in zip(songs, self.songs)}
        for source in sources:  # oldest first: the newest matching source wins
            for pos, (song_id, stamp) in enumerate(zip(source.song_ids, source.stamps)):
                song = by_id.get(song_id)
                if song is not None and stamp and stamp == song.files.stamp:
                    song.source, song.pos = source, pos
        for song in self.songs:
            if song.source is not None:
                song.counts = song.source.song_counts(song.pos)
                song.bars_schema = song.source.bars_schema(song.pos)
        self.from_folders = sum(s.source is None for s in self.songs)
        self.index = IndexBuilder()  # of what is written; its schema registry also unifies the bars schemas

    def only_from(self, source: Source) -> bool:
        """True when ``source`` holds exactly these songs, in this order, with these stamps."""
        return len(source.song_ids) == len(self.songs) and all(
            song.source is source and song.pos == i for i, song in enumerate(self.songs))

    def write(self) -> IndexBuilder:
        """Write the three datasets; the index of what they hold (to write once they are in place)."""
        bars_schema = self._bars_schema()
        for dataset, schema in (("songs", SONG_SCHEMA), ("bars", bars_schema), ("notes", NOTE_SCHEMA)):
            _write_stream(os.path.join(self.out_dir, f"{dataset}.parquet"), schema,
                          lambda stack, d=dataset, s=schema: self._tables(stack, d, s))
        for song in self.songs:
            self.index.add(song.files.song_id, song.files.stamp if song.ok else "", song.counts, song.bars_schema)
        return self.index

    def _bars_schema(self) -> pa.Schema:
        """The per-song bars schemas unified in queue order (the bars of songs read here kept, up to a limit)."""
        kept = 0
        for song in self.songs:
            if song.source is None and "bars.parquet" in song.files.present:
                song.bars_schema, table = self._folder_bars_schema(song.files, keep=kept < _KEEP_BAR_ROWS)
                if table is not None:
                    song.bars, kept = table, kept + table.num_rows
                song.ok = song.ok and song.bars_schema is not None
            number = self.index.schema_id(song.bars_schema)  # one object per distinct schema, not per song
            song.bars_schema = None if number < 0 else self.index.unique_schemas[number]
        return unify_bars_schemas(self.index.unique_schemas)

    @staticmethod
    def _folder_bars_schema(song: SongFiles, keep: bool) -> tuple[pa.Schema | None, pa.Table | None]:
        try:
            if keep:
                table = read_bars(song)
                return table.schema, table
            with pq.ParquetFile(os.path.join(song.folder, "bars.parquet")) as f:
                return f.schema_arrow, None
        except Unreadable as exc:
            log.warning("%s", exc)
        except (OSError, pa.ArrowException) as exc:
            log.warning("left the bars of %s out of bars.parquet: %s", song.folder, exc)
        return None, None

    def _tables(self, stack: ExitStack, dataset: str, schema: pa.Schema) -> Iterator[pa.Table]:
        readers: dict[int, RowReader] = {}  # open while the chunk at hand needs them (rows cached by each)
        stack.callback(lambda: [r.close() for r in readers.values()])
        for chunk in chunks(self.songs, _CHUNK):
            pieces: list[tuple[pa.Table, list[tuple[int, int]]]] = []
            by_source: dict[int, list[int]] = {}
            for k, song in enumerate(chunk):
                if song.source is not None:
                    by_source.setdefault(id(song.source), []).append(k)
            for stale in set(readers) - set(by_source):
                readers.pop(stale).close()
            for members in by_source.values():
                source = chunk[members[0]].source
                if id(source) not in readers:
                    readers[id(source)] = RowReader(source, dataset)
                starts, counts = source.starts[dataset], source.counts[dataset]
                ranges = [(int(starts[chunk[k].pos]), int(starts[chunk[k].pos] + counts[chunk[k].pos]))
                          for k in members]
                pieces.append((conform(readers[id(source)].rows(ranges), schema),
                               [(k, b - a) for k, (a, b) in zip(members, ranges)]))
            folder = [k for k, song in enumerate(chunk) if song.source is None]
            if folder:
                pieces.append(self._from_folders(dataset, schema, [chunk[k] for k in folder], folder))
            yield _in_order(pieces, len(chunk), schema)

    def _from_folders(self, dataset: str, schema: pa.Schema, songs: list[_Song],
                      ks: list[int]) -> tuple[pa.Table, list[tuple[int, int]]]:
        """The rows of ``songs`` read from their folders, with (k, rows) for each."""
        if dataset == "songs":
            rows, names, read = [], [], []
            for song in songs:
                try:
                    rows.append(read_song_row(song.files))
                    names.append(song.files.folder)
                    read.append(song)
                except Unreadable as exc:
                    log.warning("%s", exc)
                    song.ok = False
            table, fits = songs_table(rows, names)
            for song, fit in zip(read, fits):
                song.counts["songs"] = int(fit)
                song.ok = song.ok and fit
            return table, [(k, song.counts["songs"]) for k, song in zip(ks, songs)]
        tables = []
        for song in songs:
            table = self._folder_table(dataset, song)
            song.counts[dataset] = 0 if table is None else table.num_rows
            tables += [table] if table is not None else []
        if not tables:
            return schema.empty_table(), [(k, 0) for k in ks]
        merged = pa.concat_tables(tables, promote_options="permissive") if dataset == "bars" else pa.concat_tables(tables)
        return conform(merged, schema), [(k, song.counts[dataset]) for k, song in zip(ks, songs)]

    @staticmethod
    def _folder_table(dataset: str, song: _Song) -> pa.Table | None:
        if dataset == "bars":
            if song.bars is not None:
                table, song.bars = song.bars, None
                return table
            if song.bars_schema is None:  # none, or it did not read in the schema pass (already said why)
                return None
        try:
            return read_bars(song.files) if dataset == "bars" else read_notes(song.files)
        except Unreadable as exc:
            log.warning("%s", exc)
            song.ok = False
            return None


def _in_order(pieces: list[tuple[pa.Table, list[tuple[int, int]]]], n: int, schema: pa.Schema) -> pa.Table:
    """One table of the pieces' rows, song ``k`` of the chunk after song ``k - 1``."""
    if not pieces:
        return schema.empty_table()
    starts, sizes, offset = [0] * n, [0] * n, 0
    for _, members in pieces:
        for k, rows in members:
            starts[k], sizes[k] = offset, rows
            offset += rows
    table = pa.concat_tables([t for t, _ in pieces]) if len(pieces) > 1 else pieces[0][0]
    index = np.concatenate([np.arange(starts[k], starts[k] + sizes[k], dtype=np.int64) for k in range(n)])
    if not np.array_equal(index, np.arange(table.num_rows)):
        table = table.take(pa.array(index))
    return table.combine_chunks()  # one chunk per column: writing 256 small chunks a column is ~5x slower
