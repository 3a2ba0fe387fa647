"""Logging for the ``stave`` command and the window: one rotating log file per user.

``setup_logging()`` attaches Stave's handlers to the root logger: a rotating
file ``<log_dir>/stave.log`` (everything at ``level``) and, optionally, a
console handler on stderr (warnings and errors unless ``verbose``). Calling it
again reconfigures instead of adding handlers. The handlers are found again by
a marker on them, so this module keeps no state of its own.

Only the supervising process should call it: worker processes writing to the
same rotating file would race on rotation.

``enable_crash_traces()`` covers what logging cannot: a native crash (a
segfault or abort in a C extension) kills the process before any handler
runs, so ``faulthandler`` writes every thread's Python stack into
``<log_dir>/crash-<pid>.log``. The file is removed at a clean exit, so what is
left in the log folder is a crash to report.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOG_FILE = "stave.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUP_COUNT = 5
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-8s %(name)s [%(threadName)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Third-party loggers that chatter at INFO/DEBUG.
NOISY_LOGGERS: tuple[str, ...] = ("numba", "matplotlib", "PIL", "basic_pitch", "urllib3", "h5py", "absl")
# Packages that log straight to the root logger (basic_pitch warns at import
# about every optional runtime it lacks): their root records are demoted to INFO.
ROOT_NOISY_PACKAGES: tuple[str, ...] = ("basic_pitch",)

_MARK = "_stave_handler"  # attribute on Stave's handlers and filters: "file", "console", "root-filter"


def _level(level: int | str) -> int:
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"level: unknown logging level {level!r}")
    return value


def _default_log_dir() -> Path:
    from core.settings import user_dirs

    return user_dirs(create=False).log_dir


class _DemoteRootNoise(logging.Filter):
    """Turn warnings that noisy packages log on the root logger into INFO records."""

    def __init__(self, packages: tuple[str, ...]):
        super().__init__()
        self._parts = tuple(f"{os.sep}{p}{os.sep}" for p in packages)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and any(p in record.pathname for p in self._parts):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True


def _stave_handlers(root: logging.Logger) -> list[logging.Handler]:
    return [h for h in root.handlers if getattr(h, _MARK, None)]


def remove_logging() -> None:
    """Detach and close Stave's handlers and filter (at exit, or between tests)."""
    root = logging.getLogger()
    for h in _stave_handlers(root):
        root.removeHandler(h)
        h.close()
    for f in [f for f in root.filters if getattr(f, _MARK, None)]:
        root.removeFilter(f)


def setup_logging(
    level: int | str = "INFO",
    *,
    log_dir: str | os.PathLike[str] | None = None,
    console: bool = True,
    verbose: bool = False,
    max_bytes: int = MAX_BYTES,
    backup_count: int = BACKUP_COUNT,
) -> Path:
    """Log to ``<log_dir>/stave.log`` (rotating) and, with ``console``, to stderr; return the log file.

    The file gets every record at ``level`` or above; the console only
    warnings and errors, unless ``verbose`` (then it shows ``level`` too).
    ``log_dir`` defaults to the user log folder (``STAVE_LOG_DIR`` overrides).
    Idempotent: a second call replaces the handlers of the first.
    """
    lvl = _level(level)
    folder = Path(log_dir) if log_dir is not None else _default_log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_FILE
    formatter = logging.Formatter(LOG_FORMAT, DATE_FORMAT)

    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
    )
    file_handler.setLevel(lvl)
    file_handler.setFormatter(formatter)
    setattr(file_handler, _MARK, "file")

    remove_logging()
    root = logging.getLogger()
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(lvl if verbose else max(lvl, logging.WARNING))
        stream.setFormatter(formatter)
        setattr(stream, _MARK, "console")
        root.addHandler(stream)
    demote = _DemoteRootNoise(ROOT_NOISY_PACKAGES)
    setattr(demote, _MARK, "root-filter")
    root.addFilter(demote)
    root.setLevel(lvl)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))
    logging.getLogger(__name__).debug("logging to %s", path)
    return path


def log_file_path() -> Path:
    """The current log file (for "open the log"): the configured one, else where it would be."""
    for h in _stave_handlers(logging.getLogger()):
        if isinstance(h, logging.FileHandler):
            return Path(h.baseFilename)
    return _default_log_dir() / LOG_FILE


def tail_log(n: int = 200, path: str | os.PathLike[str] | None = None, *,
             block_size: int = 64 * 1024, max_bytes: int = 8 * 1024 * 1024) -> list[str]:
    """The last *n* lines of the log (default: :func:`log_file_path`), without their line ends.

    Reads backwards from the end in blocks, so a big log costs only what the
    lines need; stops after ``max_bytes`` (a pathological line is cut).
    A missing file gives ``[]``.
    """
    if n <= 0:
        return []
    target = Path(path) if path is not None else log_file_path()
    try:
        f = open(target, "rb")
    except FileNotFoundError:
        return []
    with f:
        pos = f.seek(0, os.SEEK_END)
        blocks: list[bytes] = []
        newlines = 0
        read = 0
        # n complete lines need n + 1 line ends (the first one bounds the earliest line).
        while pos > 0 and newlines <= n and read < max_bytes:
            step = min(block_size, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            blocks.append(block)
            newlines += block.count(b"\n")
            read += step
    data = b"".join(reversed(blocks))
    if pos > 0:  # the first line may be partial: drop it
        cut = data.find(b"\n")
        data = data[cut + 1:] if cut >= 0 else b""
    lines = data.splitlines()[-n:]
    return [line.decode("utf-8", errors="replace") for line in lines]


CRASH_PREFIX = "crash-"
_crash_file = None  # kept open: faulthandler writes to its descriptor when the process dies


def enable_crash_traces(log_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """Dump every thread's Python stack to ``<log_dir>/crash-<pid>.log`` if this process dies of a native crash.

    Call once, early, in the window or the command (not in workers: the engine
    classifies their crashes). Empty files that processes killed outright left
    behind are swept; this process's own file goes at a clean exit. Returns the
    file, or None if the log folder cannot be written (never raises).
    """
    global _crash_file
    folder = Path(log_dir) if log_dir is not None else _default_log_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _sweep_empty_crash_files(folder)
        path = folder / f"{CRASH_PREFIX}{os.getpid()}.log"
        f = open(path, "w", encoding="utf-8")  # noqa: SIM115 - must stay open for the life of the process
    except OSError as exc:
        logging.getLogger(__name__).warning("crash traces are off: %s", exc)
        return None
    faulthandler.enable(file=f, all_threads=True)
    if _crash_file is not None:
        _crash_file.close()
    _crash_file = f
    atexit.register(_drop_crash_file, path)
    return path


def _drop_crash_file(path: Path) -> None:
    """At a clean exit: nothing crashed, so the (empty) file goes."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            path.unlink()


def _sweep_empty_crash_files(folder: Path) -> None:
    import psutil

    for path in folder.glob(f"{CRASH_PREFIX}*.log"):
        pid = path.stem[len(CRASH_PREFIX):]
        with contextlib.suppress(OSError, ValueError):
            if path.stat().st_size == 0 and not psutil.pid_exists(int(pid)):
                path.unlink()


__all__ = [
    "BACKUP_COUNT",
    "CRASH_PREFIX",
    "LOG_FILE",
    "MAX_BYTES",
    "enable_crash_traces",
    "log_file_path",
    "remove_logging",
    "setup_logging",
    "tail_log",
]
