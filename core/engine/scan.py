"""Turn dropped files and folders into the list of audio files to queue.

Folders are walked recursively in a deterministic order (names sorted within
each folder, arguments in the order given). Every entry's type is known
before anything is opened, without following links: from the folder listing
(the ``d_type`` that ``lstat`` would report, so a folder of 10,000 files costs
no 10,000 ``lstat`` calls; ``lstat`` itself where the file system does not
say). Only regular files are ever opened (non-blocking, so a pipe swapped in
meanwhile cannot hang the scan; ``fstat`` of the open file then checks it and
gives its size and identity), and then only for their first 64 bytes, to
confirm the content is audio (:mod:`core.engine.scan_sniff`). Named pipes,
sockets and devices are reported and skipped unopened; links are followed
once (a file reached twice, or a folder loop, is caught by its
``(st_dev, st_ino)``); unreadable folders are reported and the walk goes on.
Hidden entries and Stave's own output folders are left alone. Duplicate
content is found by size and the first bytes already read for the content
check (no file is opened again unless another one of its size starts the same
way), then 4 KiB from the middle, then a hash of the first and last MiB, then
a full hash only for what still collides; the first in input order is kept.

Paths are ``str`` (non-UTF-8 names in ``surrogateescape`` form); print them
with :func:`display_path`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Iterable

from core.engine.scan_sniff import HEAD_BYTES, SUPPORTED_EXTENSIONS, check
from core.resilience.cancel import CancelToken

__all__ = ["scan", "ScanResult", "ScannedFile", "Skipped", "display_path", "content_fingerprint",
           "SUPPORTED_EXTENSIONS"]

_MIB = 1 << 20
_SAMPLE_BYTES = 4096  # read from the middle of same-size files whose heads match (silence often starts them)
_HIDDEN_ATTRIBUTE = 0x2  # FILE_ATTRIBUTE_HIDDEN on Windows
_LISTING_HAS_STAT = os.name == "nt"  # Windows lists an entry's stat (and hidden flag) with its name, for free
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


def _middle_sample(path: str, size: int) -> bytes:
    """``_SAMPLE_BYTES`` from the middle of the file: the whole content when it is that small."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        os.lseek(fd, max(0, size // 2 - _SAMPLE_BYTES // 2), os.SEEK_SET)  # a pipe swapped in: ESPIPE
        return os.read(fd, _SAMPLE_BYTES)
    finally:
        os.close(fd)


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
    files: list[ScannedFile] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)  # each file's first bytes, for the duplicate search
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
            name = entry.name
            if name.startswith("."):
                continue
            dot = name.rfind(".")  # os.path.splitext's answer for a name that does not start with a dot
            ext = name[dot:].lower() if dot > 0 else ""
            try:
                if ext not in self.extensions and not entry.is_dir() and not entry.is_symlink():
                    self.ignored += 1  # a cover image, a text file ...: not audio by name, never opened
                    continue
                if not _LISTING_HAS_STAT and entry.is_file(follow_symlinks=False):
                    # the listing's d_type (what lstat would say, without the call) is "regular file";
                    # not its d_ino: FUSE, overlayfs and CIFS may list another number than fstat gives
                    self.read_head(entry.path, ext, None, None)
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
                self.consider(entry.path, st, explicit=False, ext=ext)

    def consider(self, path: str, st: os.stat_result, *, explicit: bool, ext: str | None = None) -> None:
        if ext is None:
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
        if st.st_ino:
            self.read_head(path, ext, st.st_dev, st.st_ino)
        else:  # a Windows listing's stat leaves the file id at 0
            self.read_head(path, ext, None, None)

    def read_head(self, path: str, ext: str, dev: int | None, ino: int | None) -> None:
        """Queue the regular file at ``path`` if its first bytes are audio.

        ``dev``/``ino``: the file that was looked at (when known); anything else
        found there now (a pipe swapped in, another file) is not read. The
        ``fstat`` of the open file gives its size, time and identity.
        """
        try:
            fd = os.open(path, _OPEN_FLAGS)  # O_NONBLOCK: were it swapped for a pipe, opening cannot hang
            try:
                st = os.fstat(fd)
                if (not stat.S_ISREG(st.st_mode) or (ino is not None and st.st_ino != ino)
                        or (dev is not None and st.st_dev != dev)):
                    self.skip(path, "changed while it was being scanned")
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
        self.files.append(ScannedFile(path, st.st_size, st.st_mtime, ext, verdict.container))
        self.heads.append(head)


def _same_content(files: list[ScannedFile], heads: list[bytes], cancel: CancelToken | None) -> dict[int, int]:
    """Index of each duplicate -> index of the first file with the same content.

    Files are grouped by size and the first bytes the content check read, which
    costs no I/O and tells almost all distinct files apart; only what still
    collides is opened again, each step reading more, until a step has covered
    the whole content. ``cancel`` is checked before each file is read again.
    """
    by_head: dict[tuple[int, bytes], list[int]] = {}
    for i, (f, head) in enumerate(zip(files, heads)):
        by_head.setdefault((f.size, head), []).append(i)
    dup_of: dict[int, int] = {}
    for (size, head), group in by_head.items():
        if len(group) < 2:
            continue
        same = [group]
        if size > len(head):  # the head was not the whole content
            same = _refine(same, lambda i: _middle_sample(files[i].path, size), cancel)
        if size > _SAMPLE_BYTES:
            same = _refine(same, lambda i: content_fingerprint(files[i].path, size), cancel)
        if size > 2 * _MIB:  # the quick hash did not cover the middle: compare full hashes
            same = _refine(same, lambda i: _full_hash(files[i].path), cancel)
        for sub in same:
            for i in sub[1:]:
                dup_of[i] = sub[0]
    return dup_of


def _refine(groups: list[list[int]], key: Callable[[int], object], cancel: CancelToken | None) -> list[list[int]]:
    """Split each group by ``key``: the parts of two or more, in input order; unreadable files stay apart."""
    out: list[list[int]] = []
    for indices in groups:
        parts: dict[object, list[int]] = {}
        for i in indices:
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                parts.setdefault(key(i), []).append(i)
            except OSError:
                continue
        out += [p for p in parts.values() if len(p) > 1]
    return out


def scan(paths: Iterable[str | bytes | os.PathLike], *, extensions: Iterable[str] = SUPPORTED_EXTENSIONS,
         exclude: Iterable[str | bytes | os.PathLike] = (), cancel: CancelToken | None = None) -> ScanResult:
    """Find the audio files in ``paths`` (files and folders, recursively).

    ``exclude``: folders never to enter (pass the output folder). ``cancel`` is
    checked between entries and between the files the duplicate search reads
    again (raises ``Cancelled``).
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
    found = walk.files
    dup_of = _same_content(found, walk.heads, cancel)
    duplicates = walk.duplicates + [(found[i].path, found[j].path) for i, j in sorted(dup_of.items())]
    kept = [f for i, f in enumerate(found) if i not in dup_of]
    return ScanResult(files=kept, skipped=walk.skipped, duplicates=duplicates, ignored=walk.ignored)
