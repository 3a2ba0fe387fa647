"""Temporary files that never outlive a failure, and never take anything else with them.

``TempPaths`` tracks the temporary files and folders a stage attempt makes
under one root (the job's work folder) and removes them when the attempt
ends: by default on error only, so a successful attempt's temp folder can
become its output. It never removes anything outside its root: paths are
resolved, symlinks that point outside are refused, and the root itself (or
anything above it) can never be tracked. A symlink is removed as a link; its
target is never touched. Removal errors are collected in ``failures``, never
raised over the exception that ended the block.

``remove_stale_temps`` sweeps the leftovers of atomic writes (temp file +
rename) that a crash left behind.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from core.resilience.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemovalFailure:
    """A path that could not be removed, and why."""

    path: Path
    message: str


def _inside(path: Path, root: Path) -> bool:
    """True when ``path`` is strictly below ``root`` (both already resolved)."""
    return path != root and root in path.parents


def _checked(path: str | os.PathLike[str], root: Path) -> Path:
    """``path`` made absolute without following its last component; ValueError if outside ``root``.

    The parent is resolved (so a symlinked folder leading out is caught); the
    last component is kept as it is, so a symlink is removed as a link. A
    symlink whose target lies outside ``root`` is refused all the same.
    """
    raw = Path(path)
    raw = raw if raw.is_absolute() else root / raw
    normal = Path(os.path.normpath(raw))
    if normal.name in ("", ".", ".."):
        raise ValueError(f"refusing to track {path!s}: it names no entry below {root}")
    candidate = normal.parent.resolve() / normal.name
    if not _inside(candidate, root):
        raise ValueError(f"refusing to track {path!s}: it is not inside {root}")
    if candidate.is_symlink():
        target = candidate.resolve()
        if not _inside(target, root):
            raise ValueError(f"refusing to track {path!s}: it is a symlink to {target}, outside {root}")
    return candidate


def _remove(path: Path, root: Path) -> list[RemovalFailure]:
    """Remove one tracked path (a missing one is fine); return what went wrong."""
    try:
        checked = _checked(path, root)  # again: something may have moved since it was tracked
    except ValueError as exc:
        return [RemovalFailure(path, str(exc))]
    try:
        st = os.lstat(checked)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [RemovalFailure(checked, f"{type(exc).__name__}: {exc}")]
    failures: list[RemovalFailure] = []
    try:
        if stat.S_ISDIR(st.st_mode):
            # rmtree never follows symlinks inside the tree: it unlinks them.
            def collect(_func: object, where: str, err: object) -> None:
                exc = err[1] if isinstance(err, tuple) else err  # onerror gets exc_info, onexc the exception
                failures.append(RemovalFailure(Path(where), f"{type(exc).__name__}: {exc}"))

            if sys.version_info >= (3, 12):
                shutil.rmtree(checked, onexc=collect)
            else:
                shutil.rmtree(checked, onerror=collect)
        else:
            checked.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        failures.append(RemovalFailure(checked, f"{type(exc).__name__}: {exc}"))
    return failures


class TempPaths:
    """Context manager that removes the temporary paths it tracks under ``root``.

    ``on_error``: remove them when the block raises (any exception, including
    cancellation). ``on_success``: remove them when it does not. Relative
    paths are taken relative to ``root``.
    """

    def __init__(self, root: str | os.PathLike[str], *, on_error: bool = True, on_success: bool = False):
        resolved = Path(root).resolve()
        if not resolved.is_dir():
            raise ValueError(f"root must be an existing folder: {root!s}")
        if resolved == Path(resolved.anchor):
            raise ValueError("root must not be the top of a file system")
        self.root = resolved
        self.on_error = on_error
        self.on_success = on_success
        self.failures: list[RemovalFailure] = []
        self._paths: list[Path] = []
        self._lock = threading.Lock()

    @property
    def paths(self) -> tuple[Path, ...]:
        """Tracked paths, in the order they were tracked."""
        with self._lock:
            return tuple(self._paths)

    def track(self, path: str | os.PathLike[str]) -> Path:
        """Register ``path`` (which need not exist yet); ValueError if it is not safely inside root."""
        checked = _checked(path, self.root)
        with self._lock:
            if checked not in self._paths:
                self._paths.append(checked)
        return checked

    def keep(self, path: str | os.PathLike[str]) -> None:
        """Stop tracking ``path`` (it became a result): it will not be removed."""
        checked = _checked(path, self.root)
        with self._lock:
            self._paths = [p for p in self._paths if p != checked]

    def _folder(self, dir: str | os.PathLike[str] | None) -> Path:
        if dir is None:
            return self.root
        folder = Path(dir) if Path(dir).is_absolute() else self.root / dir
        folder = folder.resolve()
        if folder != self.root and not _inside(folder, self.root):
            raise ValueError(f"refusing to create temporaries in {dir!s}: it is not inside {self.root}")
        return folder

    def mkdtemp(self, prefix: str = ".tmp-", *, dir: str | os.PathLike[str] | None = None) -> Path:
        """Create and track a new temporary folder under root (or ``dir`` inside it)."""
        return self.track(tempfile.mkdtemp(prefix=prefix, dir=self._folder(dir)))

    def mkstemp(self, suffix: str = "", *, prefix: str = ".tmp-",
                dir: str | os.PathLike[str] | None = None) -> Path:
        """Create (empty, closed) and track a new temporary file under root (or ``dir`` inside it)."""
        fd, name = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=self._folder(dir))
        os.close(fd)
        return self.track(name)

    def cleanup(self) -> list[RemovalFailure]:
        """Remove every tracked path now (newest first); return and record the failures."""
        with self._lock:
            paths, self._paths = list(reversed(self._paths)), []
        failures: list[RemovalFailure] = []
        for path in paths:
            failures.extend(_remove(path, self.root))
        for failure in failures:
            log.warning("could not remove temporary %s: %s", failure.path, failure.message)
        self.failures.extend(failures)
        return failures

    def __enter__(self) -> "TempPaths":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if (exc_type is None and self.on_success) or (exc_type is not None and self.on_error):
            try:
                self.cleanup()
            except Exception:  # never hide the block's own exception
                log.exception("temporary cleanup failed")
                if exc_type is None:
                    raise
        return False


@dataclass
class SweepResult:
    """What ``remove_stale_temps`` removed and what it could not."""

    removed: list[Path] = field(default_factory=list)
    failures: list[RemovalFailure] = field(default_factory=list)


def remove_stale_temps(folder: str | os.PathLike[str], pattern: str = ".*.tmp*", *,
                       older_than_s: float = 3600.0, recursive: bool = False,
                       clock: Clock = SYSTEM_CLOCK) -> SweepResult:
    """Remove regular files in ``folder`` whose name matches ``pattern`` and that are old.

    Only regular files (never symlinks, folders or devices) directly in
    ``folder`` (or below it with ``recursive``, without following symlinked
    folders) whose modification time is more than ``older_than_s`` seconds
    before ``clock.wall()``. Younger files may belong to a write in progress.
    """
    if older_than_s < 0:
        raise ValueError(f"older_than_s must be >= 0, got {older_than_s}")
    if not pattern or "/" in pattern or os.sep in pattern:
        raise ValueError(f"pattern must match a file name, not a path: {pattern!r}")
    root = Path(folder).resolve()
    if not root.is_dir():
        raise ValueError(f"folder must be an existing folder: {folder!s}")
    cutoff = clock.wall() - older_than_s
    result = SweepResult()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        if not recursive:
            dirnames.clear()
        for name in sorted(filenames):
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            path = Path(dirpath) / name
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_mtime > cutoff:
                    continue
                if not _inside(path.parent.resolve() / name, root):
                    continue
                path.unlink()
                result.removed.append(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.failures.append(RemovalFailure(path, f"{type(exc).__name__}: {exc}"))
    for failure in result.failures:
        log.warning("could not remove stale temporary %s: %s", failure.path, failure.message)
    return result
