"""Atomic file writes, content hashes and filesystem-safe song ids.

Every artifact Stave records as done is written here: to a temp file in the
same folder (named ``.<name>.<random>.tmp<suffix>``), fsynced, renamed over
the target with :func:`os.replace`, then the folder is fsynced. A reader sees
either the old file or the whole new one, never a partial file, and a failed
write leaves no temp file behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import secrets
import sys
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np  # imported where used: the window starts without numpy

StrPath = str | os.PathLike[str]

_CHUNK = 1 << 20
_MAX_STEM = 60
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)


# --- atomic writes -----------------------------------------------------------


# What the temp files of these writers look like (for sweeping the leftovers of a killed write).
TEMP_PATTERN = ".*." + "[0-9a-f]" * 8 + ".tmp*"


def _temp_path_for(target: Path) -> Path:
    # Keep the target's suffix so writers that infer the format from the name
    # (soundfile, pyarrow) still do the right thing with the temp file.
    return target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}")


def _create_temp(target: Path) -> tuple[Path, int]:
    """Create a fresh temp file next to *target*; mode 0o666 minus the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = _temp_path_for(target)
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temp file next to {target}")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable. Not possible (nor needed) on Windows."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write_with(path: StrPath, writer: Callable[[Path], Any]) -> Path:
    """Let ``writer(temp_path)`` write the file, then move it into place atomically.

    The temp file exists (empty) when *writer* is called; writers that replace
    it (pyarrow, soundfile) are fine. Returns the final path.
    """
    target = Path(path)
    tmp, fd = _create_temp(target)
    os.close(fd)
    try:
        writer(tmp)
        _fsync_path(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        raise _as_disk_full(exc, target.parent) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)
    return target


_LOW_SPACE_BYTES = 1 << 20


def _as_disk_full(exc: OSError, folder: Path) -> OSError:
    """Some writers (numpy's ``save``) report a short write without an errno: on a full drive, say so."""
    if exc.errno is not None:
        return exc
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return exc
    if free < _LOW_SPACE_BYTES:
        return OSError(errno.ENOSPC, f"No space left on device ({exc})", str(folder))
    return exc


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
    """Write *data* to *path* atomically."""
    target = Path(path)
    tmp, fd = _create_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: StrPath, text: str, encoding: str = "utf-8") -> Path:
    """Write *text* atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def json_safe(obj: Any) -> Any:
    """A copy of *obj* that strict JSON accepts: NaN/Inf become None, numpy
    scalars and arrays become Python numbers and lists, tuples become lists."""
    np = sys.modules.get("numpy")  # not imported yet: no object can be a numpy one
    if np is not None and isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if np is not None and isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text: sorted keys, NaN/Inf as null, trailing newline."""
    safe = json_safe(obj)
    text = json.dumps(safe, sort_keys=True, allow_nan=False, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (undecodable file names): escape them
        text = json.dumps(safe, sort_keys=True, allow_nan=False, indent=indent, ensure_ascii=True)
    return text + "\n"


def atomic_write_json(path: StrPath, obj: Any, *, indent: int | None = 2) -> Path:
    """Write *obj* as strict UTF-8 JSON atomically (see :func:`dumps_json`)."""
    return atomic_write_bytes(path, dumps_json(obj, indent=indent).encode("utf-8"))


def atomic_save_npy(path: StrPath, array: np.ndarray) -> Path:
    """Save *array* as ``.npy`` atomically; object arrays are refused (no pickle)."""
    import numpy as np

    arr = np.asanyarray(array)
    if arr.dtype.hasobject:
        raise ValueError(f"refusing to save an object array to {path}: it would need pickle")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)

    return atomic_write_with(path, write)


# --- hashes and names --------------------------------------------------------


def sha256_file(path: StrPath, chunk: int = _CHUNK) -> str:
    """Hex SHA-256 of a file's content, read in *chunk*-byte blocks."""
    h = hashlib.sha256()
    buf = bytearray(max(1, chunk))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            h.update(view[:n])
    return h.hexdigest()


def _stem_of(path: StrPath | bytes) -> str:
    name = os.path.basename(os.fsdecode(path).replace("\\", "/").rstrip("/"))
    if name.startswith(".") and name.count(".") == 1:  # ".wav": no stem at all
        return ""
    stem, dot, _ = name.rpartition(".")
    return stem if dot else name


def _fold(text: str) -> str:
    """NFKC, then ASCII-fold letters that have an ASCII base (é -> e, ß stays ß)."""
    if text.isascii():  # the common case, and NFKC leaves ASCII alone
        return text
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if ch.isascii() or not ch.isalnum():
            out.append(ch)
            continue
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        out.append(base if base.isascii() and base.isalnum() else ch)
    return "".join(out)


_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9_-]")


def safe_stem(path: StrPath | bytes) -> str:
    """The file-name part of a song id: letters, digits, ``-`` and ``_`` only.

    Letters and digits without an ASCII form (名前) are kept; every run of
    anything else becomes one ``_``. Never empty, never a reserved Windows name.
    """
    folded = _fold(_stem_of(path))
    if folded.isascii():
        kept = _UNSAFE_ASCII.sub("_", folded)
    else:
        kept = "".join(ch if ch in "-_" or (ch.isalnum() and ch.isprintable()) else "_" for ch in folded)
    stem = re.sub(r"_+", "_", kept).strip("_-")[:_MAX_STEM].strip("_-")
    if not stem:
        stem = "audio"
    if stem.upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    return stem


def safe_song_id(path: StrPath | bytes, content_hash: str) -> str:
    """``<safe stem>-<first 8 hex of the content hash>``: distinct for distinct content."""
    digest = content_hash.strip().lower()
    if len(digest) < 8 or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"content_hash: expected a hex digest of at least 8 characters, got {content_hash!r}")
    return f"{safe_stem(path)}-{digest[:8]}"


__all__ = [
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
    "dumps_json",
    "json_safe",
    "safe_song_id",
    "safe_stem",
    "sha256_file",
]
