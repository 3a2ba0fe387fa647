"""Exceptions to :class:`ErrorInfo`: ``classify(exc)`` and the rules it applies.

OSError errnos, subprocess failures, Stave's own errors and the exceptions
of optional libraries each map to a kind, a one-line reason and a
suggestion (the kinds and their policies: :mod:`core.resilience.kinds`;
exit statuses: :mod:`core.resilience.exit_status`).

A missing input file (``FileNotFoundError``, or libsndfile's bare "System
error" for a path that does not exist) is *input-corrupt*: the input cannot
be read, retrying will not bring it back, and it says nothing about any
dependency. Its reason says "file not found" and its suggestion says to put
the file back. A missing *program* (``subprocess`` could not start ffmpeg) is
*dependency-missing*.

Exception types from optional libraries (soundfile, pydub, audioread,
pebble, tenacity, librosa) are recognised by module and class name, so this
module imports none of them.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from dataclasses import replace
from typing import Callable

from core.resilience.exit_status import (
    _DISK_FULL_RE, _NOT_AUDIO_RE, _UNKNOWN_FORMAT_RE, SOUNDFILE_EXTENSIONS, _decoder_input_kind, _last_line,
    _path_before_colon, classify_exit,
)
from core.resilience.kinds import ErrorInfo, ErrorKind, StaveError, info_for, one_line

_SOUNDFILE_OPEN_RE = re.compile(r"Error opening '(.*)': ?")


def _is(exc: BaseException, package: str, *names: str) -> bool:
    """True when a class in ``exc``'s MRO is ``package``...``name`` (no import needed)."""
    return any(c.__module__.split(".")[0] == package and c.__name__ in names for c in type(exc).__mro__)


def _probe_path(path: str) -> ErrorInfo | None:
    """Why ``path`` cannot be opened as an input, when the filesystem says so."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _missing_input(path)
    except PermissionError:
        return info_for(ErrorKind.PERMISSION, f"no permission to read {path!r}")
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return info_for(ErrorKind.INPUT_UNSUPPORTED, f"{path!r} is a folder, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        return info_for(ErrorKind.INPUT_UNSUPPORTED, f"{path!r} is not a regular file")
    if st.st_size == 0:
        return info_for(ErrorKind.INPUT_EMPTY, f"{path!r} is empty (0 bytes)")
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except PermissionError:
        return info_for(ErrorKind.PERMISSION, f"no permission to read {path!r}")
    except OSError:
        return None
    return None


def _missing_input(path: object) -> ErrorInfo:
    return info_for(ErrorKind.INPUT_CORRUPT, f"input file not found: {path}",
                    suggestion="The file was moved or deleted after it was queued: put it back and resume, "
                               "or remove it from the batch.")


def _classify_libsndfile(exc: BaseException) -> ErrorInfo | None:
    text = str(exc)
    message = getattr(exc, "error_string", None) or text
    code = getattr(exc, "code", None)
    m = _SOUNDFILE_OPEN_RE.search(text)
    path = m.group(1) if m else None
    if not isinstance(code, int) and not m and not re.search(
            r"format not recognised|unknown format|error in wav|malformed|psf_|libsndfile", text, re.I):
        return None  # a RuntimeError that is not soundfile's
    if _DISK_FULL_RE.search(message):
        return info_for(ErrorKind.DISK_FULL, f"no space left while writing audio: {message}")
    if path:
        probed = _probe_path(path)
        if probed is not None:
            return probed
    where = f" {path!r}" if path else ""
    if code == 2:  # libsndfile's bare "System error", and the path looked fine
        return info_for(ErrorKind.INPUT_CORRUPT, f"could not open{where or ' the file'} (libsndfile: system error)")
    if code == 4 or _UNKNOWN_FORMAT_RE.search(message):
        return info_for(ErrorKind.INPUT_UNSUPPORTED, f"unsupported audio encoding in{where or ' the file'} ({message.strip()})")
    if code in (1, 7) or _NOT_AUDIO_RE.search(message):  # 7: mpg123's "not a regular file" for a bad MP3
        if code == 7:
            message = "libsndfile could not parse it"
        kind = (_decoder_input_kind("format not recognised", path, ErrorKind.INPUT_CORRUPT, SOUNDFILE_EXTENSIONS)
                or ErrorKind.INPUT_CORRUPT)
        what = ("not a readable audio file, or damaged" if kind is ErrorKind.INPUT_CORRUPT
                else "a format soundfile cannot read")
        return info_for(kind, f"{path!r} is {what} ({message.strip()})" if path else f"{what} ({message.strip()})")
    return info_for(ErrorKind.INPUT_CORRUPT,
                    f"the audio data in{where or ' the file'} is damaged or cut short ({message.strip()})")


def _classify_ffmpeg_decode(exc: BaseException) -> ErrorInfo:
    text = str(exc)
    _, _, output = text.partition("Output from ffmpeg/avlib:")
    output = output or text
    last = _last_line(output)
    path = _path_before_colon(last)
    if path:
        probed = _probe_path(path)
        if probed is not None:
            return probed
    kind = _decoder_input_kind(output, path, ErrorKind.INPUT_UNSUPPORTED) or ErrorKind.INPUT_UNSUPPORTED
    return info_for(kind, f"ffmpeg could not decode the file: {last or text}")


def _started_program(exc: BaseException) -> bool:
    """True when a FileNotFoundError came from subprocess failing to start a program."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None and tb.tb_frame.f_code.co_name == "_execute_child":
        return True
    if exc.__cause__ is not None and "_execute_child" in str(exc.__cause__):  # pebble's remote traceback
        return True
    name = getattr(exc, "filename", None)
    return isinstance(name, str) and os.sep not in name and not os.path.splitext(name)[1]


def _classify_os_error(exc: OSError) -> ErrorInfo | None:
    path = exc.filename
    if isinstance(exc, FileNotFoundError):
        if _started_program(exc):
            tool = os.path.basename(str(path))
            hint = ("Install ffmpeg (it provides ffmpeg and ffprobe) or the imageio-ffmpeg wheel."
                    if tool.split(".")[0] in ("ffmpeg", "ffprobe", "avconv", "avprobe") else
                    "Install it (or put it on PATH); `stave health` says what each tool unlocks.")
            return info_for(ErrorKind.DEPENDENCY_MISSING, f"program not found: {path}", suggestion=hint)
        return _missing_input(path or exc.strerror or exc)
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        what = "read-only file system" if exc.errno == errno.EROFS else "permission denied"
        return info_for(ErrorKind.PERMISSION, f"{what}: {path}" if path else f"{what} ({exc})")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or _DISK_FULL_RE.search(str(exc)):
        what = "disk quota exceeded" if exc.errno == errno.EDQUOT else "no space left on the drive"
        return info_for(ErrorKind.DISK_FULL, f"{what}" + (f" while writing {path}" if path else ""))
    if exc.errno == errno.ENOMEM:
        return info_for(ErrorKind.OUT_OF_MEMORY, f"ran out of memory: {exc}")
    if isinstance(exc, IsADirectoryError):
        return info_for(ErrorKind.INPUT_UNSUPPORTED, f"{path} is a folder, not an audio file")
    if exc.errno == errno.ETIMEDOUT:
        return info_for(ErrorKind.TIMEOUT, f"timed out: {exc}")
    if re.search(r"cannot load library|library not found", str(exc), re.I):
        return info_for(ErrorKind.DEPENDENCY_MISSING, f"a native library is missing: {exc}")
    return None


def _classify_one(exc: BaseException, which: Callable[[str], str | None]) -> ErrorInfo:
    name = type(exc).__name__
    info = _classify_known(exc, which)
    if info is None:
        msg = one_line(str(exc))
        return info_for(ErrorKind.BUG, f"{name}: {msg}" if msg else name, exc_type=name)
    return info if info.exc_type else replace(info, exc_type=name)


def _classify_known(exc: BaseException, which: Callable[[str], str | None]) -> ErrorInfo | None:
    if isinstance(exc, StaveError):
        info = info_for(exc.kind, exc.reason, suggestion=exc.suggestion)
        if exc.severity is not None:
            info = replace(info, severity=exc.severity)
        if exc.retryable is not None:
            info = replace(info, retryable=exc.retryable)
        return info
    if isinstance(exc, KeyboardInterrupt):
        return info_for(ErrorKind.CANCELLED, "interrupted (Ctrl-C)")
    if _is(exc, "concurrent", "CancelledError") or _is(exc, "asyncio", "CancelledError"):
        return info_for(ErrorKind.CANCELLED, "cancelled")
    if isinstance(exc, MemoryError):  # numpy's _ArrayMemoryError says how much it wanted
        return info_for(ErrorKind.OUT_OF_MEMORY, f"ran out of memory: {exc}" if str(exc) else "ran out of memory")
    if isinstance(exc, ValueError) and str(exc).startswith("array is too big"):
        return info_for(ErrorKind.OUT_OF_MEMORY, "asked for an array larger than any memory can hold "
                                                 "(a damaged header claiming a huge length?)")
    if isinstance(exc, subprocess.TimeoutExpired):
        return info_for(ErrorKind.TIMEOUT, f"{_program(exc.cmd)} did not finish within {exc.timeout:.3g} s")
    if isinstance(exc, subprocess.CalledProcessError):
        tail = exc.stderr if exc.stderr is not None else exc.output
        if isinstance(tail, bytes):
            tail = tail.decode("utf-8", "replace")
        return classify_exit(exc.returncode, stderr_tail=(tail or "")[-4000:], who=_program(exc.cmd))
    if isinstance(exc, TimeoutError):  # also concurrent.futures' and pebble's "Task timeout"
        return info_for(ErrorKind.TIMEOUT, f"timed out: {exc}" if str(exc) else "timed out")
    if _is(exc, "pebble", "ProcessExpired"):
        return classify_exit(getattr(exc, "exitcode", None), worker=True)
    if _is(exc, "concurrent", "BrokenProcessPool"):
        found = re.search(r"exit code:? ?(-?\d+)", f"{exc} {exc.__cause__ or ''}")
        if found:
            return classify_exit(int(found.group(1)), worker=True, who="a process-pool worker")
        return info_for(ErrorKind.WORKER_CRASH, "a process-pool worker died abruptly (exit status unknown)")
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return info_for(ErrorKind.DEPENDENCY_MISSING, f"Python module not installed: {exc.name}")
    if isinstance(exc, ImportError):
        return info_for(ErrorKind.DEPENDENCY_MISSING, f"could not import {exc.name or 'a dependency'}: {exc}")
    if _is(exc, "soundfile", "LibsndfileError", "SoundFileRuntimeError") or type(exc) is RuntimeError:
        found = _classify_libsndfile(exc)
        if found is not None:
            return found
    if _is(exc, "pydub", "CouldntDecodeError"):
        return _classify_ffmpeg_decode(exc)
    if _is(exc, "audioread", "NoBackendError"):
        if which("ffmpeg") is None and which("avconv") is None:
            return info_for(ErrorKind.DEPENDENCY_MISSING, "no decoder for this format: ffmpeg is not installed",
                            suggestion="Install ffmpeg (or the imageio-ffmpeg wheel), or convert the file to WAV or FLAC.")
        return info_for(ErrorKind.INPUT_UNSUPPORTED, "no installed decoder could read the file (ffmpeg included)")
    if _is(exc, "audioread", "DecodeError") or _is(exc, "wave", "Error") or _is(exc, "aifc", "Error") \
            or _is(exc, "sunau", "Error") or isinstance(exc, EOFError):
        detail = f": {exc}" if str(exc) else ""
        return info_for(ErrorKind.INPUT_CORRUPT, f"the audio file is damaged or cut short ({type(exc).__name__}{detail})")
    if _is(exc, "librosa", "ParameterError") and "not finite" in str(exc):
        return info_for(ErrorKind.INPUT_CORRUPT, f"the decoded audio holds NaN or infinite samples ({exc})")
    if isinstance(exc, OSError):
        return _classify_os_error(exc)
    return None


def _program(cmd: object) -> str:
    first = cmd[0] if isinstance(cmd, (list, tuple)) and cmd else cmd
    return os.path.basename(str(first).split()[0]) if first else "external tool"


def _unwrap_retry(exc: BaseException) -> tuple[BaseException | None, int]:
    """tenacity's RetryError -> (last attempt's exception or None, attempt count)."""
    last = getattr(exc, "last_attempt", None)
    attempts = int(getattr(last, "attempt_number", 0) or 0)
    try:
        inner = last.exception() if last is not None and last.failed else None
    except Exception:  # a cancelled or odd future: nothing to unwrap
        inner = None
    return inner, attempts


def classify(exc: BaseException, *, which: Callable[[str], str | None] = shutil.which) -> ErrorInfo:
    """Map any exception to an :class:`ErrorInfo` (see the module docstring).

    tenacity's ``RetryError`` is unwrapped to its last attempt's error. An
    exception that would be a *bug* but was raised ``from`` a recognised one
    (``raise RuntimeError("load failed") from decode_error``) takes its
    cause's classification; implicit context is not followed, since an error
    raised while handling another is often a real bug. ``which`` finds
    programs (ffmpeg) and is injectable for tests.
    """
    seen: set[int] = set()
    attempts = 0
    current: BaseException | None = exc
    found: ErrorInfo | None = None
    first: ErrorInfo | None = None
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        if _is(current, "tenacity", "RetryError"):
            inner, attempts = _unwrap_retry(current)
            if inner is None:
                return info_for(ErrorKind.DEPENDENCY_FAILED,
                                f"gave up after {attempts} attempts: the result was still not acceptable",
                                exc_type=type(current).__name__)
            current = inner
            continue
        info = _classify_one(current, which)
        first = first or info
        if info.kind is not ErrorKind.BUG or isinstance(current, StaveError):
            found = info
            break
        current = current.__cause__
    result = found or first or info_for(ErrorKind.BUG, type(exc).__name__, exc_type=type(exc).__name__)
    if attempts > 1:
        result = replace(result, reason=one_line(f"{result.reason} (after {attempts} attempts)"))
    return result
