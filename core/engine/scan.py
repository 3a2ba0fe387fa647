"""Turn dropped files and folders into the list of audio files to queue.

Folders are walked recursively in a deterministic order (names sorted within
each folder, arguments in the order given). Everything is looked at with
``lstat`` first: only regular files are ever opened, and then only for their
first 64 bytes, to confirm the content is audio (:mod:`core.engine.scan_sniff`).
Named pipes, sockets and devices are reported and skipped unopened; links
are followed once (a file reached twice, or a folder loop, is caught by its
``(st_dev, st_ino)``); unreadable folders are reported and the walk goes on.
Hidden entries and Stave's own output folders are left alone. Duplicate
content is found by size, then a hash of the first and last MiB, then a full
hash only for what still collides; the first in input order is kept.

Paths are ``str`` (non-UTF-8 names in ``surrogateescape`` form); print them
with :func:`display_path`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Iterable

from core.engine.scan_sniff import HEAD_BYTES, SUPPORTED_EXTENSIONS, check
from core.resilience.cancel import CancelToken

__all__ = ["scan", "ScanResult", "ScannedFile", "Skipped", "display_path", "content_fingerprint",
           "SUPPORTED_EXTENSIONS"]

_MIB = 1 << 20
_HIDDEN_ATTRIBUTE = 0x2  # FILE_ATTRIBUTE_HIDDEN on Windows
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


@dataclass(frozen=True)
class ScannedFile:
    path: str
    size: int
    mtime: float
    ext: str  # lower case, with the dot
    container: str = ""  # what the content check found ("wav", "mp4", ...)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class ScanResult:
    files: list[ScannedFile]
    skipped: list[Skipped]
    duplicates: list[tuple[str, str]]  # (path, the kept path with the same content)
    ignored: int = 0  # files inside folders without an audio extension (not listed one by one)


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path safe to print anywhere: undecodable bytes as ``\\xff``, control characters escaped."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def content_fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    """sha256 of the size, the first MiB and the last MiB: the whole content for files up to 2 MiB."""
    with open(path, "rb") as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        h = hashlib.sha256(size.to_bytes(8, "little"))
        h.update(f.read(min(size, _MIB)))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()


def _full_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_MIB):
            h.update(chunk)
    return h.hexdigest()


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _why(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


@dataclass
class _Walk:
    extensions: frozenset[str]
    excluded: set[tuple[int, int]]
    cancel: CancelToken | None
    files: list[tuple[ScannedFile, tuple[int, int]]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    seen_dirs: set[tuple[int, int]] = field(default_factory=set)
    seen_files: dict[tuple[int, int], str] = field(default_factory=dict)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))

    def argument(self, raw: str | bytes | os.PathLike) -> None:
        path = os.path.abspath(os.fsdecode(raw))
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.skip(path, "broken link" if os.path.islink(path) else "not found")
            return
        except OSError as exc:
            self.skip(path, f"cannot read: {_why(exc)}")
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(path, st)
        else:
            self.consider(path, st, explicit=True)

    def enter(self, path: str, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self.excluded:
            self.skip(path, "the output folder")
        elif key in self.seen_dirs:
            self.skip(path, "folder already scanned (a link back to it)")
        elif os.path.isfile(os.path.join(path, ".stave", "state.db")):
            self.skip(path, "a Stave output folder")
        else:
            self.seen_dirs.add(key)
            return True
        return False

    def listing(self, path: str) -> list[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: (e.name.casefold(), e.name))
        except OSError as exc:
            self.skip(path, f"cannot read folder: {_why(exc)}")
            return []

    def walk(self, top: str, st: os.stat_result) -> None:
        if not self.enter(top, st):
            return
        stack = [iter(self.listing(top))]
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            if entry.name.startswith("."):
                continue
            ext = os.path.splitext(entry.name)[1].lower()
            try:
                if ext not in self.extensions and not entry.is_dir() and not entry.is_symlink():
                    self.ignored += 1  # a cover image, a text file ...: not audio by name, never opened
                    continue
                lst = entry.stat(follow_symlinks=False)
            except OSError as exc:
                self.skip(entry.path, f"cannot read: {_why(exc)}")
                continue
            if getattr(lst, "st_file_attributes", 0) & _HIDDEN_ATTRIBUTE:
                continue
            st = lst
            if stat.S_ISLNK(lst.st_mode):
                try:
                    st = os.stat(entry.path)
                except OSError:
                    self.skip(entry.path, "broken link")
                    continue
            if stat.S_ISDIR(st.st_mode):
                if self.enter(entry.path, st):
                    stack.append(iter(self.listing(entry.path)))
            else:
                self.consider(entry.path, st, explicit=False)

    def consider(self, path: str, st: os.stat_result, *, explicit: bool) -> None:
        ext = os.path.splitext(path)[1].lower()
        if not stat.S_ISREG(st.st_mode):
            if explicit or ext in self.extensions:
                self.skip(path, f"{_kind_of(st.st_mode)}, not a file (not opened)")
            else:
                self.ignored += 1
            return
        if ext not in self.extensions:
            if explicit:
                self.skip(path, f"unsupported file type {ext or '(no extension)'}")
            else:
                self.ignored += 1
            return
        key = (st.st_dev, st.st_ino)
        first = self.seen_files.get(key)
        if first is not None:
            if first != path:
                self.duplicates.append((path, first))  # a link (or hard link) to a file already queued
            return
        if st.st_size == 0:
            self.skip(path, "empty file (0 bytes)")
            return
        try:
            fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: were it swapped for a pipe, opening cannot hang
            try:
                now = os.fstat(fd)
                if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != key:
                    self.skip(path, "changed while it was being scanned")
                    return
                head = os.read(fd, HEAD_BYTES)
            finally:
                os.close(fd)
        except OSError as exc:
            self.skip(path, f"cannot read: {_why(exc)}")
            return
        verdict = check(head, ext)
        if not verdict.ok:
            self.skip(path, verdict.reason)
            return
        self.seen_files[key] = path
        self.files.append((ScannedFile(path, st.st_size, st.st_mtime, ext, verdict.container), key))


def _same_content(files: list[ScannedFile]) -> dict[int, int]:
    """Index of each duplicate -> index of the first file with the same content."""
    by_size: dict[int, list[int]] = {}
    for i, f in enumerate(files):
        by_size.setdefault(f.size, []).append(i)
    dup_of: dict[int, int] = {}
    for size, group in by_size.items():
        if len(group) < 2:
            continue
        by_quick = _group(group, lambda i: content_fingerprint(files[i].path, size))
        for candidates in by_quick:
            if size > 2 * _MIB:  # the quick hash did not cover the middle: compare full hashes
                subgroups = _group(candidates, lambda i: _full_hash(files[i].path))
            else:
                subgroups = [candidates]
            for sub in subgroups:
                for i in sub[1:]:
                    dup_of[i] = sub[0]
    return dup_of


def _group(indices: list[int], key) -> list[list[int]]:
    """Groups (of two or more, in input order) of indices sharing a key; unreadable files stay apart."""
    groups: dict[str, list[int]] = {}
    for i in indices:
        try:
            groups.setdefault(key(i), []).append(i)
        except OSError:
            continue
    return [g for g in groups.values() if len(g) > 1]


def scan(paths: Iterable[str | bytes | os.PathLike], *, extensions: Iterable[str] = SUPPORTED_EXTENSIONS,
         exclude: Iterable[str | bytes | os.PathLike] = (), cancel: CancelToken | None = None) -> ScanResult:
    """Find the audio files in ``paths`` (files and folders, recursively).

    ``exclude``: folders never to enter (pass the output folder). ``cancel`` is
    checked between entries (raises ``Cancelled``).
    """
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    excluded = set()
    for p in exclude:
        try:
            st = os.stat(p)
            excluded.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    walk = _Walk(extensions=exts, excluded=excluded, cancel=cancel)
    for raw in paths:
        walk.argument(raw)
    found = [f for f, _ in walk.files]
    dup_of = _same_content(found)
    duplicates = walk.duplicates + [(found[i].path, found[j].path) for i, j in sorted(dup_of.items())]
    kept = [f for i, f in enumerate(found) if i not in dup_of]
    return ScanResult(files=kept, skipped=walk.skipped, duplicates=duplicates, ignored=walk.ignored)
