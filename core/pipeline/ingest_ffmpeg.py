"""Everything ingest does through ffmpeg: find it, probe and decode with it, and classify its failures.

soundfile reads what libsndfile knows in-process; the rest (m4a, aac, wma,
opus-in-webm, ...) needs ffmpeg, an optional external program. That path is
separate because it is a different kind of code: it resolves an executable,
runs it as a subprocess (the probe with a timeout, the decode streamed), parses
its text report and streamed WAV output, and turns its exit status and stderr
into classified errors (missing or failing dependency versus bad input).

ffmpeg is run directly and streams 32-bit float WAV, so that only the final
array is held in memory. (pydub is not used here: it needs ffprobe, holds the
whole decoded file as bytes several times over and keeps the ffmpeg location in
a class-wide global.) Decoded frames go into the same sinks as soundfile's
(:mod:`core.pipeline.ingest_sinks`); :mod:`core.pipeline.ingest` decides which
decoder a file gets.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.fsutil import StrPath
from core.pipeline.ingest_sinks import SinkFactory, _Sink
from core.resilience.errors import DependencyFailed, DependencyMissing, ErrorKind, InputError

# What libsndfile reads: a file of one of these that no decoder can read is damaged, not unsupported.
_SOUNDFILE_EXTS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
)
_FFMPEG_EXTS = frozenset(
    {".m4a", ".m4b", ".mp4", ".aac", ".wma", ".asf", ".opus", ".webm", ".mka", ".mkv", ".ape", ".wv", ".mpc",
     ".ac3", ".eac3", ".dts", ".amr", ".3gp", ".ra", ".rm", ".dsf", ".dff", ".tta", ".alac", ".mov", ".spx"}
)
_MAGIC = (b"\x30\x26\xb2\x75", b"\x1a\x45\xdf\xa3", b"MAC ", b"wvpk", b"MPCK", b"MP+", b"#!AMR", b".ra\xfd", b".RMF",
          b"DSD ", b"FRM8", b"TTA1", b"\x0b\x77")
_LAYOUTS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "cube": 8, "hexadecagonal": 16}
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flashing under the GUI on Windows
PROBE_TIMEOUT_S = 60.0


# --- finding it, and what to say when it is not there -------------------------------


def _resolve_ffmpeg(ffmpeg: StrPath | None) -> str | None:
    """The ffmpeg to run: *ffmpeg* if given and a file, else ``ffmpeg`` on PATH when none was given; or None."""
    if ffmpeg is None:
        return shutil.which("ffmpeg")
    p = os.fspath(ffmpeg)
    return p if os.path.isfile(p) else None


def _needs_ffmpeg_error(path: Path, ffmpeg: StrPath | None) -> DependencyMissing:
    where = f" at {os.fspath(ffmpeg)}" if ffmpeg is not None else " on PATH"
    return DependencyMissing(
        f"decoding {path.suffix or 'this'} files needs ffmpeg, which was not found{where}",
        suggestion=(
            "Install ffmpeg (Debian/Ubuntu: `sudo apt install ffmpeg`; macOS: `brew install ffmpeg`; "
            "Windows: `winget install ffmpeg`) or `pip install imageio-ffmpeg`, then retry."
        ),
    )


def _not_audio_error(path: Path, detail: str) -> InputError:
    """No decoder could read *path*: damaged if it looks like a known format, else unsupported."""
    known = path.suffix.lower() in _SOUNDFILE_EXTS or looks_like_ffmpeg_format(path)
    kind = ErrorKind.INPUT_CORRUPT if known else ErrorKind.INPUT_UNSUPPORTED
    what = "damaged or not really audio" if known else "not a recognised audio file"
    return InputError(f"{path.name}: {what} ({detail})", kind=kind)


def looks_like_ffmpeg_format(path: Path) -> bool:
    """Whether *path* looks like a format only ffmpeg decodes (by magic bytes or name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    adts = len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0
    return head[4:8] == b"ftyp" or adts or head.startswith(_MAGIC) or path.suffix.lower() in _FFMPEG_EXTS


# --- probe and decode ----------------------------------------------------------------


@dataclass(frozen=True)
class _FfHeader:
    duration_s: float | None
    sample_rate: int
    channels: int
    format: str
    codec: str


def _ff_input(path: Path) -> str:
    return "file:" + os.path.abspath(path)  # "file:" so names with ':' are not read as protocols


def _ffmpeg_failure(path: Path, stderr: str, returncode: int) -> Exception:
    """ffmpeg's exit status and stderr as a classified error: permission, dependency or input."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"exit status {returncode}"
    last = last.replace(_ff_input(path), path.name)
    text = stderr.lower()
    if "permission denied" in text:
        return PermissionError(errno.EACCES, "permission denied", os.fspath(path))
    if returncode < 0 or returncode in (126, 127):
        return DependencyFailed(f"ffmpeg failed (exit status {returncode}): {last}")
    if any(s in text for s in ("matches no streams", "does not contain any stream", "no audio stream")):
        return InputError(f"{path.name}: has no audio stream", kind=ErrorKind.INPUT_UNSUPPORTED)
    if "decoder (codec" in text or "unknown decoder" in text:
        return InputError(f"{path.name}: ffmpeg has no decoder for it ({last})", kind=ErrorKind.INPUT_UNSUPPORTED)
    return _not_audio_error(path, f"ffmpeg: {last}")


def _run_ffmpeg_probe(exe: str, path: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [exe, "-hide_banner", "-nostdin", "-i", _ff_input(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=PROBE_TIMEOUT_S, creationflags=_NO_WINDOW,
        )
    except FileNotFoundError:
        raise DependencyMissing(f"ffmpeg not found at {exe}") from None
    except subprocess.TimeoutExpired:
        raise DependencyFailed(f"ffmpeg did not answer within {PROBE_TIMEOUT_S:g} s while reading {path.name}") from None
    except OSError as exc:
        raise DependencyFailed(f"could not run ffmpeg at {exe}: {exc}") from None


def _ffmpeg_probe(exe: str, path: Path) -> _FfHeader:
    """Parse ``ffmpeg -i``'s report (ffprobe is not always there, e.g. imageio-ffmpeg)."""
    proc = _run_ffmpeg_probe(exe, path)
    err = proc.stderr.decode("utf-8", "replace")
    audio = re.search(r"^\s*Stream #0:\d+.*?: Audio: ([^\s,]+)[^\n]*?, (\d+) Hz, ([^,\n]+)", err, re.M)
    if audio is None:
        if re.search(r"^Input #0", err, re.M):
            raise InputError(f"{path.name}: has no audio stream", kind=ErrorKind.INPUT_UNSUPPORTED)
        raise _ffmpeg_failure(path, err, proc.returncode or 1)
    dur = re.search(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", err, re.M)
    fmt = re.search(r"^Input #0, ([^,\s]+)", err, re.M)
    layout = audio.group(3).strip()
    if m := re.match(r"(\d+)\.(\d+)", layout):
        channels = int(m.group(1)) + int(m.group(2))
    elif m := re.match(r"(\d+) channels", layout):
        channels = int(m.group(1))
    else:
        channels = _LAYOUTS.get(layout.split("(")[0].strip(), 0)
    return _FfHeader(
        duration_s=int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None,
        sample_rate=int(audio.group(2)),
        channels=channels,
        format=fmt.group(1) if fmt else "",
        codec=audio.group(1),
    )


def _read(stream, n: int) -> bytes:
    """Up to *n* bytes; fewer only at the end of the stream."""
    return stream.read(n) or b""


def _read_wav_header(stream) -> tuple[int, int] | None:
    """(channels, sample_rate) from a streamed WAV header, leaving *stream* at the samples."""
    head = _read(stream, 12)
    if len(head) < 12 or head[:4] != b"RIFF":
        return None
    fmt = None
    while True:
        ch = _read(stream, 8)
        if len(ch) < 8:
            return None
        size = struct.unpack("<I", ch[4:])[0]
        if ch[:4] == b"data":
            return fmt
        body = _read(stream, size + (size & 1))
        if ch[:4] == b"fmt " and len(body) >= 8:
            fmt = struct.unpack("<HI", body[2:8])


def _ffmpeg_decode(exe: str, path: Path, expected_frames: int,
                   make_sink: SinkFactory) -> tuple[np.ndarray, int, int]:
    """Stream ``ffmpeg``'s float32 output into a sink: ``(result, sample rate, frames decoded)``."""
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", _ff_input(path),
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", "pcm_f32le", "-f", "wav", "-"]
    with tempfile.TemporaryFile() as errf:
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
                                    creationflags=_NO_WINDOW)
        except FileNotFoundError:
            raise DependencyMissing(f"ffmpeg not found at {exe}") from None
        except OSError as exc:
            raise DependencyFailed(f"could not run ffmpeg at {exe}: {exc}") from None
        header = audio = sink = None
        try:
            header = _read_wav_header(proc.stdout)
            if header is not None:
                # A little headroom: AAC and friends decode a few priming frames more.
                sink = make_sink(header[0], header[1], expected_frames + header[1])
                audio = _read_f32_frames(proc.stdout, path, header[0], sink)
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
    if rc != 0:
        raise _ffmpeg_failure(path, err, rc)
    if audio is None:
        raise InputError(f"{path.name}: ffmpeg decoded no audio", kind=ErrorKind.INPUT_EMPTY)
    return audio, header[1], sink.filled


def _read_f32_frames(stream, path: Path, channels: int, sink: _Sink) -> np.ndarray:
    """Read raw float32 frames from *stream* straight into *sink*."""
    frame_bytes = 4 * channels

    def read_into(view: np.ndarray) -> int:
        with memoryview(view) as raw, raw.cast("B") as mv:
            got = 0
            while got < len(mv) and (n := stream.readinto(mv[got:])):
                got += n
        return got // frame_bytes  # a trailing partial frame can only be garbage

    def read_block(n: int) -> np.ndarray:
        data = _read(stream, n * frame_bytes)
        return np.frombuffer(data, dtype="<f4", count=len(data) // frame_bytes * channels).reshape(-1, channels)

    return sink.fill(path, read_into, read_block)

