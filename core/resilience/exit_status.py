"""Exit statuses and tools' text: how a worker or an external tool ended, as an :class:`ErrorInfo`.

``classify_exit(code)`` reads a worker's or an external tool's exit status
(a signal, 128+N from a shell, or a plain code) and the last lines it
printed. The text patterns here (disk full, out of memory, a missing
module, a damaged or unknown input format) are shared with
:mod:`core.resilience.classify`, which reads the same messages inside
decoder exceptions.
"""

from __future__ import annotations

import os
import re
import signal
from types import MappingProxyType

from core.resilience.kinds import ErrorInfo, ErrorKind, info_for


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
