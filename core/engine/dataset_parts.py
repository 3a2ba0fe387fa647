"""Parts of the batch datasets: rows of some finished songs, stamped with the version of the files they came from.

On disk, in ``OUT/.stave/datasets/``:

- ``part-<n>.songs.parquet``, ``part-<n>.bars.parquet``, ``part-<n>.notes.parquet``: the rows of the songs
  that finished since the previous part, already in the unified schemas; ``part-<n>.index.parquet``, written
  last (a part exists once its index does), says per song: ``song_id``, ``stamp``, how many rows it has in
  each data file (they follow each other in index order) and which schema its own bars.parquet had (the
  published bars schema is the songs' schemas unified in queue order, whatever order they finished in).
- ``published.index.parquet``: the same index for the published ``OUT/songs.parquet``, ``bars.parquet`` and
  ``notes.parquet``. The last published datasets *are* the compacted part: compacting writes this index, not
  a second copy of every row (half the bytes written at every batch end, half the disk).

Every index records the size and modification time of its data files; a source whose files changed since
(a person rewrote OUT/bars.parquet, a crash between the renames of a publish) or do not read is ignored as a
whole, with a warning, and its songs are read from their folders.

A *stamp* says which version of a song's files its rows came from: a digest of the hashes the checkpoint
store last recorded for ``summary.json``, ``bars.parquet`` and ``notes.csv`` (what a stage re-run changes)
and of the files' size, mtime and inode (what changes without the store knowing: a run killed between
writing a file and recording it, a file edited or deleted by hand). Rows are reused only under an equal
stamp, so they are always what reading the folder again would give. The stat costs nothing extra: which of
the three files exist decides what a song contributes, so it has to be looked at anyway.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.fsutil import atomic_write_with

log = logging.getLogger(__name__)

PARTS_DIR = os.path.join(".stave", "datasets")
DATASETS = ("songs", "bars", "notes")
STAMPED_FILES = ("summary.json", "bars.parquet", "notes.csv")
PUBLISHED_INDEX = "published.index.parquet"
_PART = re.compile(r"part-(\d+)\.(index|songs|bars|notes)\.parquet$")
ROWS_VERSION = "1"  # bump whenever dataset_rows builds a row differently: every part is then read afresh


@functools.cache
def _format() -> bytes:
    """What an index must say to be used: its layout, and the version and schemas of the rows it indexes.

    Parts and published datasets written by a Stave that built rows differently are ignored (their
    songs are read from their folders), so publishing always equals a full rebuild by this version.
    """
    from core.engine.dataset_rows import NOTE_SCHEMA, SONG_SCHEMA  # that module imports this one

    schemas = hashlib.sha256((SONG_SCHEMA.to_string() + NOTE_SCHEMA.to_string()).encode()).hexdigest()[:12]
    return f"stave-datasets-index/1 rows/{ROWS_VERSION} schemas/{schemas}".encode()
_INDEX_SCHEMA = pa.schema([("song_id", pa.string()), ("stamp", pa.string()), ("songs", pa.int64()),
                           ("bars", pa.int64()), ("notes", pa.int64()), ("bars_schema", pa.int32())])


class SourceError(Exception):
    """A part (or the published datasets) that cannot be used; its songs are read from their folders."""

    def __init__(self, source: "Source", reason: str):
        super().__init__(f"{source.name}: {reason}")
        self.source = source


# -- stamps -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SongFiles:
    """A finished song's folder as it is now: which of its files exist, and their stamp."""

    song_id: str
    folder: str
    stamp: str
    present: frozenset[str]


def song_files(out_dir: str, song_id: str, hashes: Mapping[str, str]) -> SongFiles:
    """Stat the song's files (``hashes``: :meth:`Store.recorded_hashes`) and stamp them."""
    folder = os.path.join(out_dir, song_id)
    seen, present = [], []
    for name in STAMPED_FILES:
        try:
            st = os.stat(folder + os.sep + name)
        except OSError:
            st = None
        if st is not None and stat.S_ISREG(st.st_mode):
            present.append(name)
            seen.append(f"{name}|{hashes.get(song_id + '/' + name, '-')}|{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        else:
            seen.append(f"{name}|{hashes.get(song_id + '/' + name, '-')}|-")
    stamp = hashlib.blake2b("\n".join(seen).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return SongFiles(song_id, folder, stamp, frozenset(present))


def _signature(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


# -- indexes ------------------------------------------------------------------------------
@dataclass
class IndexBuilder:
    """Collects, song by song in data order, what an index says; the bars schemas are kept once each."""

    rows: list[tuple] = field(default_factory=list)
    unique_schemas: list[pa.Schema] = field(default_factory=list)  # every distinct bars schema, first seen first

    def add(self, song_id: str, stamp: str, counts: Mapping[str, int], bars_schema: pa.Schema | None) -> None:
        self.rows.append((song_id, stamp, counts.get("songs", 0), counts.get("bars", 0), counts.get("notes", 0),
                          self.schema_id(bars_schema)))

    def schema_id(self, schema: pa.Schema | None) -> int:
        """The schema's number (-1: none); equal schemas, metadata included, share one."""
        if schema is None:
            return -1
        for k, known in enumerate(self.unique_schemas):  # a handful at most
            if known is schema or known.equals(schema, check_metadata=True):
                return k
        self.unique_schemas.append(schema)
        return len(self.unique_schemas) - 1

    def write(self, path: str, files: Mapping[str, str]) -> None:
        """Write the index of the data ``files`` (already in place) atomically."""
        columns = list(zip(*self.rows)) if self.rows else [[] for _ in _INDEX_SCHEMA]
        meta = {b"format": _format(),
                b"schemas": json.dumps([base64.b64encode(s.serialize().to_pybytes()).decode("ascii")
                                        for s in self.unique_schemas]).encode(),
                b"files": json.dumps({name: _signature(p) for name, p in files.items()}).encode()}
        table = pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, _INDEX_SCHEMA)],
                                     schema=_INDEX_SCHEMA.with_metadata(meta))
        atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))


@dataclass(eq=False)
class Source:
    """Rows of some songs: a part, or the published datasets. ``starts[dataset][i]``: first row of song i."""

    name: str
    files: dict[str, str]
    song_ids: list[str]
    stamps: list[str]
    counts: dict[str, np.ndarray]
    starts: dict[str, np.ndarray]
    schema_ids: list[int]
    schemas: list[pa.Schema]
    signatures: dict[str, list[int]]  # the data files' [size, mtime_ns] when the index was written

    def bars_schema(self, i: int) -> pa.Schema | None:
        k = self.schema_ids[i]
        return None if k < 0 else self.schemas[k]

    def song_counts(self, i: int) -> dict[str, int]:
        return {d: int(self.counts[d][i]) for d in DATASETS}


def load_source(name: str, index_path: str, files: Mapping[str, str]) -> Source:
    """Read and check an index: its data files must be the ones it describes. SourceError when not."""
    source = Source(name, dict(files), [], [], {}, {}, [], [], {})
    try:
        with pq.ParquetFile(index_path) as f:  # closed at once: Windows cannot rename over an open file
            table = f.read()
        meta = table.schema.metadata or {}
        if meta.get(b"format") != _format() or not table.schema.equals(_INDEX_SCHEMA):
            raise SourceError(source, "not an index Stave knows")
        source.signatures = json.loads(meta[b"files"])
        if source.signatures != {d: _signature(p) for d, p in files.items()}:
            raise SourceError(source, "its data files changed since it was written")
        source.schemas = [pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s))) for s in json.loads(meta[b"schemas"])]
        source.song_ids = table.column("song_id").to_pylist()
        source.stamps = table.column("stamp").to_pylist()
        source.schema_ids = table.column("bars_schema").to_pylist()
        for d in DATASETS:
            counts = table.column(d).to_numpy()
            source.counts[d] = counts
            source.starts[d] = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
            with pq.ParquetFile(files[d]) as f:
                rows = f.metadata.num_rows
            if rows != int(counts.sum()):
                raise SourceError(source, f"{os.path.basename(files[d])} does not hold the rows its index lists")
    except SourceError:
        raise
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise SourceError(source, f"unreadable ({exc})") from exc
    return source


# -- parts ----------------------------------------------------------------------------------
def parts_dir(out_dir: str) -> str:
    return os.path.join(out_dir, PARTS_DIR)


def part_files(out_dir: str) -> dict[int, dict[str, str]]:
    """Every part file in the folder, by part number and kind (index, songs, bars, notes)."""
    folder = parts_dir(out_dir)
    found: dict[int, dict[str, str]] = {}
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return found
    for name in names:
        m = _PART.match(name)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = os.path.join(folder, name)
    return found


def load_parts(out_dir: str, found: Mapping[int, Mapping[str, str]]) -> list[Source]:
    """The readable parts, oldest first; the others are skipped with a warning."""
    sources = []
    for n in sorted(found):
        files = found[n]
        if "index" not in files:
            continue  # written up to its data files only: never became a part
        try:
            sources.append(load_source(f"part {n}", files["index"], {d: _part_path(out_dir, n, d) for d in DATASETS}))
        except SourceError as exc:
            log.warning("ignored a part of the batch datasets, its songs are read from their folders: %s", exc)
    return sources


def _part_path(out_dir: str, n: int, kind: str) -> str:
    return os.path.join(parts_dir(out_dir), f"part-{n:08d}.{kind}.parquet")


def write_part(out_dir: str, n: int, builder: IndexBuilder, tables: Mapping[str, pa.Table]) -> None:
    """Write part ``n``: its three data files, then its index (which makes it exist)."""
    files = {d: _part_path(out_dir, n, d) for d in DATASETS}
    for d in DATASETS:
        atomic_write_with(files[d], lambda tmp, t=tables[d]: pq.write_table(t, tmp))
    builder.write(_part_path(out_dir, n, "index"), files)


def remove_parts(found: Mapping[int, Mapping[str, str]]) -> None:
    for files in found.values():
        for path in files.values():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:  # e.g. held open on Windows: the next publish removes it
                log.warning("could not remove %s: %s", path, exc)


# -- reading rows ---------------------------------------------------------------------------
class RowReader:
    """Rows of one data file of a source, read a row group at a time; the groups of the last call are kept,
    so that songs read in queue order (a chunk at a time) read each group about once."""

    def __init__(self, source: Source, dataset: str):
        self.source = source
        path = source.files[dataset]
        try:
            if _signature(path) != source.signatures[dataset]:
                raise SourceError(source, f"{os.path.basename(path)} changed while it was read")
            self._file = pq.ParquetFile(path, pre_buffer=False)
            md = self._file.metadata
            sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(source, f"unreadable ({exc})") from exc
        self._group_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cache: dict[int, pa.Table] = {}

    def rows(self, ranges: Sequence[tuple[int, int]]) -> pa.Table:
        """The rows of ``ranges`` ((start, stop) in file rows), in that order."""
        wanted = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges] or [np.zeros(0, np.int64)])
        groups = np.searchsorted(self._group_starts, wanted, side="right") - 1
        used = sorted(set(groups.tolist()))
        try:
            tables = [self._cache[g] if g in self._cache else self._file.read_row_group(g, use_threads=False)
                      for g in used]
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(self.source, f"unreadable ({exc})") from exc
        self._cache = dict(zip(used, tables))
        if not used:
            return self._file.schema_arrow.empty_table()
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        used_at = np.array(used, dtype=np.int64)  # file row -> row of the concatenated groups
        shift = np.cumsum([0] + [t.num_rows for t in tables[:-1]]) - self._group_starts[used_at]
        index = wanted + shift[np.searchsorted(used_at, groups)]
        if len(index) == table.num_rows and (len(index) == 0 or np.array_equal(index, np.arange(len(index)))):
            return table
        return table.take(pa.array(index))

    def close(self) -> None:
        self._cache = {}
        self._file.close()


def chunks(items: Iterable, n: int) -> Iterator[list]:
    """``items`` in lists of ``n`` (the last one shorter)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
