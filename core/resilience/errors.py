"""Failure vocabulary: every failure becomes an :class:`ErrorInfo`.

``classify(exc)`` maps any exception, and ``classify_exit(code)`` a worker's
or an external tool's exit status, to a kind, a one-line reason and a
suggestion a person can act on. What the engine does with each kind is one
explicit table, :data:`POLICIES`:

=================  =========  =======  ========  ==========================
kind               retried    breaker  severity  why
=================  =========  =======  ========  ==========================
input-corrupt      no         no       error     the file will not change
input-unsupported  no         no       error     idem
input-empty        no         no       warning   idem
dependency-missing no         yes      error     retrying cannot install it;
                                                 the breaker routes to the
                                                 stage's fallback
dependency-failed  yes        yes      error     tools fail transiently
timeout            yes        yes      error     a hung tool is a sick tool
worker-crash       yes        yes      error     quarantined after N crashes
out-of-memory      yes        no       error     the machine, not the tool
disk-full          no         no       fatal     the batch must stop
permission         no         no       error     needs a person
cancelled          no         no       info      never a failure
bug                no         no       error     needs a fix, not a retry
=================  =========  =======  ========  ==========================

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

import enum
import errno
import os
import re
import shutil
import signal
import stat
import subprocess
from dataclasses import asdict, dataclass, replace
from types import MappingProxyType
from typing import Callable, Mapping


class ErrorKind(str, enum.Enum):
    INPUT_CORRUPT = "input-corrupt"
    INPUT_UNSUPPORTED = "input-unsupported"
    INPUT_EMPTY = "input-empty"
    DEPENDENCY_MISSING = "dependency-missing"
    DEPENDENCY_FAILED = "dependency-failed"
    TIMEOUT = "timeout"
    WORKER_CRASH = "worker-crash"
    OUT_OF_MEMORY = "out-of-memory"
    DISK_FULL = "disk-full"
    PERMISSION = "permission"
    CANCELLED = "cancelled"
    BUG = "bug"

    @property
    def is_input(self) -> bool:
        return self in _INPUT_KINDS


_INPUT_KINDS = frozenset({ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED, ErrorKind.INPUT_EMPTY})


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    FATAL = "fatal"  # the batch cannot go on (disk full, permission on the output folder)


@dataclass(frozen=True)
class ErrorInfo:
    kind: ErrorKind
    reason: str
    suggestion: str
    retryable: bool
    counts_for_breaker: bool
    severity: Severity
    exc_type: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["severity"] = self.severity.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ErrorInfo":
        return cls(
            kind=ErrorKind(d["kind"]),
            reason=d["reason"],
            suggestion=d["suggestion"],
            retryable=bool(d["retryable"]),
            counts_for_breaker=bool(d["counts_for_breaker"]),
            severity=Severity(d["severity"]),
            exc_type=d.get("exc_type", ""),
        )


class StaveError(Exception):
    """An error Stave raises on purpose, carrying its kind.

    Stages raise these (or subclasses) when they know what went wrong; the
    classifier trusts the kind they carry.
    """

    kind: ErrorKind = ErrorKind.BUG
    severity: Severity | None = None  # None: the kind's own severity (POLICIES)
    retryable: bool | None = None  # None: the kind's own policy

    def __init__(self, reason: str, *, suggestion: str | None = None, kind: ErrorKind | None = None):
        super().__init__(reason)
        self.reason = reason
        self.suggestion = suggestion
        if kind is not None:
            self.kind = kind


class InputError(StaveError):
    kind = ErrorKind.INPUT_CORRUPT


class DependencyMissing(StaveError):
    kind = ErrorKind.DEPENDENCY_MISSING


class DependencyFailed(StaveError):
    kind = ErrorKind.DEPENDENCY_FAILED


class StageTimeout(StaveError):
    kind = ErrorKind.TIMEOUT


class WorkerCrashed(StaveError):
    kind = ErrorKind.WORKER_CRASH

    def __init__(self, reason: str, *, exitcode: int | None = None, **kw):
        super().__init__(reason, **kw)
        self.exitcode = exitcode


class WorkersUnavailable(StaveError):
    """No worker process could be started (or none took a task in time): not any file's fault.

    Fatal, so the batch pauses with this reason instead of failing or
    quarantining every file in turn.
    """

    kind = ErrorKind.WORKER_CRASH
    severity = Severity.FATAL
    retryable = False


class Cancelled(StaveError):
    kind = ErrorKind.CANCELLED


# --- the policy table ---------------------------------------------------------


@dataclass(frozen=True)
class KindPolicy:
    """What the engine does with one kind of failure (see the module table)."""

    retryable: bool
    counts_for_breaker: bool
    severity: Severity
    suggestion: str


def _p(retry: bool, counts: bool, severity: Severity, suggestion: str) -> KindPolicy:
    return KindPolicy(retry, counts, severity, suggestion)


POLICIES: Mapping[ErrorKind, KindPolicy] = MappingProxyType({
    ErrorKind.INPUT_CORRUPT: _p(False, False, Severity.ERROR, "Check that the file plays in another program; re-export or re-download it."),
    ErrorKind.INPUT_UNSUPPORTED: _p(False, False, Severity.ERROR, "Convert the file to WAV or FLAC, or install ffmpeg for more formats."),
    ErrorKind.INPUT_EMPTY: _p(False, False, Severity.WARNING, "The file holds no usable audio; remove it from the batch."),
    ErrorKind.DEPENDENCY_MISSING: _p(False, True, Severity.ERROR, "Run `stave health` to see what is missing and how to install it."),
    ErrorKind.DEPENDENCY_FAILED: _p(True, True, Severity.ERROR, "Run `stave health`; if the tool keeps failing, its fallback is used."),
    ErrorKind.TIMEOUT: _p(True, True, Severity.ERROR, "Raise the stage timeout in Settings, or check whether the machine is overloaded."),
    ErrorKind.WORKER_CRASH: _p(True, True, Severity.ERROR, "A worker process died; if the same file crashes it again it is quarantined."),
    ErrorKind.OUT_OF_MEMORY: _p(True, False, Severity.ERROR, "Use fewer workers, or close other programs, then retry the failed jobs."),
    ErrorKind.DISK_FULL: _p(False, False, Severity.FATAL, "Free space on the output drive, then resume the batch."),
    ErrorKind.PERMISSION: _p(False, False, Severity.ERROR, "Check the file's and the output folder's permissions."),
    ErrorKind.CANCELLED: _p(False, False, Severity.INFO, "Resume the batch to finish it."),
    ErrorKind.BUG: _p(False, False, Severity.ERROR, "This is a bug in Stave: please report it with the log file."),
})

REASON_LIMIT = 200


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def info_for(kind: ErrorKind, reason: str, *, suggestion: str | None = None, exc_type: str = "") -> ErrorInfo:
    policy = POLICIES[kind]
    return ErrorInfo(
        kind=kind,
        reason=one_line(reason) or kind.value,
        suggestion=suggestion or policy.suggestion,
        retryable=policy.retryable,
        counts_for_breaker=policy.counts_for_breaker,
        severity=policy.severity,
        exc_type=exc_type,
    )


# --- text patterns shared by decoders and tools' stderr -------------------------

_DISK_FULL_RE = re.compile(r"no space left|disk quota exceeded|not enough space on the disk", re.I)
_OOM_RE = re.compile(r"memoryerror|out of memory|cannot allocate memory|bad_alloc|unable to allocate", re.I)
_MISSING_RE = re.compile(r"no module named|modulenotfounderror|command not found|"
                         r"error while loading shared librar|cannot open shared object|library not found", re.I)
_PERMISSION_RE = re.compile(r"permission denied|operation not permitted", re.I)
# Decoder messages that mean the data is damaged or cut short...
_DAMAGED_RE = re.compile(r"end of file|moov atom not found|truncat|corrupt|malformed|header missing|"
                         r"error while decoding|invalid frame|unexpected end|premature end|"
                         r"couldn't find (fmt|data) header|error in wav", re.I)
# ...that the format is not one the decoder knows...
_UNKNOWN_FORMAT_RE = re.compile(r"unknown (input )?format|unknown decoder|decoder .*not found|"
                                r"could not find codec|unsupported (codec|encoding|audio format)|"
                                r"not supported|unknown audio format", re.I)
# ...or that it is not audio at all (damaged if its name says audio, else unsupported).
_NOT_AUDIO_RE = re.compile(r"invalid data found when processing input|format not recognised|"
                           r"does not contain any stream", re.I)

# A file named for a format its decoder reads that the decoder does not
# recognise is damaged (input-corrupt); any other name is input-unsupported.
SOUNDFILE_EXTENSIONS = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".caf",
    ".w64", ".rf64", ".au", ".snd",
})
FFMPEG_EXTENSIONS = SOUNDFILE_EXTENSIONS | frozenset({
    ".m4a", ".aac", ".wma", ".mp4", ".mka", ".webm", ".alac", ".ape", ".wv", ".ac3", ".amr",
})
_SOUNDFILE_OPEN_RE = re.compile(r"Error opening '(.*)': ?")


def _match_line(text: str, pattern: re.Pattern[str]) -> str | None:
    """The last line of ``text`` that matches ``pattern``, or None."""
    for line in reversed(text.splitlines()):
        if pattern.search(line):
            return line.strip()
    return None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _decoder_input_kind(message: str, path: str | None, default: ErrorKind,
                        known: frozenset[str] = FFMPEG_EXTENSIONS) -> ErrorKind | None:
    """Input kind a decoder's message points to, or None when it names no input problem."""
    if re.search(r"detected only with low score", message, re.I):  # a guess: what follows is noise
        message = "format not recognised"
    if _DAMAGED_RE.search(message):
        return ErrorKind.INPUT_CORRUPT
    if _UNKNOWN_FORMAT_RE.search(message):
        return ErrorKind.INPUT_UNSUPPORTED
    if _NOT_AUDIO_RE.search(message) or (path and "invalid argument" in message.lower()):
        if path:
            return ErrorKind.INPUT_CORRUPT if os.path.splitext(path)[1].lower() in known else ErrorKind.INPUT_UNSUPPORTED
        return default
    return None


# --- exit statuses ---------------------------------------------------------------


def _to_signal(hint: int | str | signal.Signals) -> int | None:
    if isinstance(hint, str):
        name = hint.strip().upper()
        if name.isdigit():
            return int(name)
        name = name if name.startswith("SIG") else "SIG" + name
        return int(getattr(signal.Signals, name)) if name in signal.Signals.__members__ else None
    return abs(int(hint))


_CRASH_SIGNALS = MappingProxyType({
    signal.SIGSEGV: "segmentation fault", signal.SIGBUS: "bus error", signal.SIGABRT: "aborted",
    signal.SIGILL: "illegal instruction", signal.SIGFPE: "arithmetic error",
})


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return ""


def signal_label(signum: int) -> str:
    """``"SIGSEGV (segmentation fault)"`` for 11, ``"SIGKILL"`` for 9, ``"signal 77"`` when unnamed."""
    name = _signal_name(signum)
    if not name:
        return f"signal {signum}"
    desc = _CRASH_SIGNALS.get(signum)
    return f"{name} ({desc})" if desc else name


def classify_exit(exitcode: int | None, *, signal_hint: int | str | signal.Signals | None = None,
                  stderr_tail: str = "", who: str = "", worker: bool = False) -> ErrorInfo:
    """Classify how a worker process or an external tool ended.

    ``exitcode`` as multiprocessing/subprocess report it (negative = killed by
    that signal; 128+N from a shell is also read as signal N). ``signal_hint``
    names the signal when the caller knows it from elsewhere and wins over the
    code. ``stderr_tail`` (the last lines the process printed) decides
    resource kinds: "No space left" is disk-full, "MemoryError"/"out of memory"
    is out-of-memory, even after a signal. Death by a signal is a worker-crash
    (SIGKILL's reason says it was possibly killed for memory; SIGINT is
    cancelled). A plain non-zero code is dependency-failed for a tool, or a
    worker-crash when ``worker`` is true, unless stderr names a missing module
    or library (dependency-missing, as is a shell's 127), a permission problem,
    or damaged/unsupported input (an input kind, so a bad file never trips a
    tool's breaker).
    """
    who = who or ("worker process" if worker else "external tool")
    text = stderr_tail or ""
    sig = _to_signal(signal_hint) if signal_hint is not None else None
    via_shell = False
    if sig is None and exitcode is not None:
        if exitcode < 0:
            sig = -exitcode
        elif 128 < exitcode <= 128 + 64 and _signal_name(exitcode - 128):
            sig, via_shell = exitcode - 128, True

    for pattern, kind in ((_DISK_FULL_RE, ErrorKind.DISK_FULL), (_OOM_RE, ErrorKind.OUT_OF_MEMORY)):
        line = _match_line(text, pattern)
        if line:
            return info_for(kind, f"{who} failed: {line}")

    if sig is not None:
        how = f"exited with code {exitcode} (128 + {signal_label(sig)})" if via_shell else f"was killed by {signal_label(sig)}"
        if sig == signal.SIGINT:
            return info_for(ErrorKind.CANCELLED, f"{who} {how}: interrupted")
        if sig == signal.SIGKILL:
            return info_for(ErrorKind.WORKER_CRASH, f"{who} {how}, possibly killed for memory by the system",
                            suggestion="If memory was short, use fewer workers or close other programs; "
                                       "a file that crashes its worker again is quarantined.")
        if sig in _CRASH_SIGNALS:
            return info_for(ErrorKind.WORKER_CRASH, f"{who} crashed ({how.removeprefix('was ')})",
                            suggestion="A native library crashed on this file; if it crashes again the file is quarantined.")
        return info_for(ErrorKind.WORKER_CRASH, f"{who} {how}")

    if exitcode is None:
        return info_for(ErrorKind.WORKER_CRASH, f"{who} ended without an exit status")
    detail = _last_line(text)
    tail = f": {detail}" if detail else ""
    line = _match_line(text, _MISSING_RE)
    if line or (exitcode == 127 and not worker):
        return info_for(ErrorKind.DEPENDENCY_MISSING, f"{who} exited with code {exitcode}: {line or 'command not found'}")
    line = _match_line(text, _PERMISSION_RE)
    if line:
        return info_for(ErrorKind.PERMISSION, f"{who} exited with code {exitcode}: {line}")
    for line in reversed(text.splitlines()):  # only lines that name a file: "<input>: <problem>"
        path = _path_before_colon(line)
        kind = _decoder_input_kind(line, path, ErrorKind.INPUT_UNSUPPORTED) if path else None
        if kind is not None:
            return info_for(kind, f"{who} could not decode the input: {line.strip()}")
    kind = ErrorKind.WORKER_CRASH if worker else ErrorKind.DEPENDENCY_FAILED
    return info_for(kind, f"{who} exited with code {exitcode}{tail}")


def _path_before_colon(line: str) -> str | None:
    """ffmpeg prints ``<input>: <message>``; return ``<input>`` when it looks like a file name."""
    head, sep, _ = line.strip().rpartition(": ")
    return head if sep and os.path.splitext(head)[1] and not head.startswith("[") else None


# --- exceptions ------------------------------------------------------------------


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
