"""Decode one input file, and refuse it with a classified reason when it is unusable.

soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...) is tried
first; anything else goes through ffmpeg, run directly and streamed as 32-bit
float WAV, so that only the final array is held in memory. (pydub is not used
here: it needs ffprobe, holds the whole decoded file as bytes several times
over and keeps the ffmpeg location in a class-wide global.)

Decoded audio is float32 shaped ``(channels, frames)``: the transposed view of
one interleaved buffer, so ``audio.T`` is the C-contiguous ``(frames, channels)``
array soundfile, soxr and pyloudnorm take, and no decode ever copies it.

:func:`ingest_mono` is what the pipeline uses: the same checks, but each
decoded block is mixed to mono and resampled as a stream, so a long file never
exists in memory as decoded multichannel audio (an hour of 44.1 kHz stereo is
1.2 GiB as float32; its mono mix at 22.05 kHz is 0.3 GiB).
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import soundfile as sf

from core.fsutil import sha256_file
from core.resilience.errors import DependencyFailed, DependencyMissing, ErrorKind, InputError

if TYPE_CHECKING:
    from core.pipeline.config import PipelineConfig

StrPath = str | os.PathLike[str]

BLOCK_FRAMES = 1 << 16
# libsndfile's decoders for these formats estimate the length from headers;
# allow a little slack before calling a short read "truncated".
_LOSSY_FORMATS = frozenset({"MP3", "OGG"})
_SOUNDFILE_EXTS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64"}
)


@dataclass(frozen=True)
class ProbeInfo:
    """What a file claims to hold, read from its header. ``channels == 0`` means unknown."""

    duration_s: float
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str
    decoder: str  # "soundfile" | "ffmpeg"
    size_bytes: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True, eq=False)
class IngestResult:
    """A decoded, accepted input. ``probe`` reflects the frames actually decoded."""

    audio: np.ndarray  # float32 (channels, frames)
    sr: int
    probe: ProbeInfo
    content_hash: str  # sha256 hex of the file's bytes

    @property
    def duration_s(self) -> float:
        return self.audio.shape[1] / self.sr


# --- checks shared by probe and decode ---------------------------------------


def _check_file(path: Path) -> int:
    """Refuse missing, non-regular, empty and unreadable files; return the size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(
            f"file not found: {path}",
            suggestion="The file was moved or deleted after it was queued.",
            kind=ErrorKind.INPUT_EMPTY,
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"not a regular file: {path}", kind=ErrorKind.INPUT_UNSUPPORTED)
    if st.st_size == 0:
        raise InputError("the file is empty (0 bytes)", kind=ErrorKind.INPUT_EMPTY)
    with open(path, "rb"):  # PermissionError propagates: classified as "permission"
        pass
    return st.st_size


def _resolve_ffmpeg(ffmpeg: StrPath | None) -> str | None:
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
    known = path.suffix.lower() in _SOUNDFILE_EXTS or looks_like_ffmpeg_format(path)
    kind = ErrorKind.INPUT_CORRUPT if known else ErrorKind.INPUT_UNSUPPORTED
    what = "damaged or not really audio" if known else "not a recognised audio file"
    return InputError(f"{path.name}: {what} ({detail})", kind=kind)


def _open_soundfile(path: Path) -> sf.SoundFile | None:
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None


# --- ffmpeg ---------------------------------------------------------------------

_FFMPEG_EXTS = frozenset(
    {".m4a", ".m4b", ".mp4", ".aac", ".wma", ".asf", ".opus", ".webm", ".mka", ".mkv", ".ape", ".wv", ".mpc",
     ".ac3", ".eac3", ".dts", ".amr", ".3gp", ".ra", ".rm", ".dsf", ".dff", ".tta", ".alac", ".mov", ".spx"}
)
_MAGIC = (b"\x30\x26\xb2\x75", b"\x1a\x45\xdf\xa3", b"MAC ", b"wvpk", b"MPCK", b"MP+", b"#!AMR", b".ra\xfd", b".RMF",
          b"DSD ", b"FRM8", b"TTA1", b"\x0b\x77")
_LAYOUTS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8, "cube": 8, "hexadecagonal": 16}
_NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console flashing under the GUI on Windows
PROBE_TIMEOUT_S = 60.0


def looks_like_ffmpeg_format(path: Path) -> bool:
    """Whether *path* looks like a format only ffmpeg decodes (by magic bytes or name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    adts = len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xF6) == 0xF0
    return head[4:8] == b"ftyp" or adts or head.startswith(_MAGIC) or path.suffix.lower() in _FFMPEG_EXTS


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


class _Sink(Protocol):
    """Where decoded frames go. ``fill`` decodes until a short read and returns the result."""

    filled: int  # frames decoded so far

    def fill(self, path: Path, read_into: Callable[[np.ndarray], int],
             read_block: Callable[[int], np.ndarray]) -> np.ndarray: ...


SinkFactory = Callable[[int, int, int], _Sink]  # (channels, sample rate, frames expected) -> sink


class _FrameBuffer:
    """Interleaved float32 frames ``(frames, channels)`` decoded into one array.

    It is filled in place, grows and shrinks with ``ndarray.resize`` (a realloc,
    not a copy), and hands back the ``(channels, frames)`` transposed view: a
    decode holds one copy of the audio plus at most one block, however good
    the length estimate was.
    """

    def __init__(self, channels: int, capacity: int):
        self._data = np.empty((max(int(capacity), 1), channels), dtype=np.float32)
        self.filled = 0

    def fill(self, path: Path, read_into, read_block) -> np.ndarray:
        """Decode until a short read. ``read_into(view) -> frames`` fills a view of
        the buffer; ``read_block(n) -> (frames, channels)`` reads past the estimate."""
        while True:
            cap = self._data.shape[0]
            if self.filled < cap:
                view = self._data[self.filled : min(self.filled + BLOCK_FRAMES, cap)]
                want, got = len(view), read_into(view)
                _check_finite(view[:got], path)
                del view  # no views may outlive a resize
            else:
                block = read_block(BLOCK_FRAMES)
                want, got = BLOCK_FRAMES, len(block)
                _check_finite(block, path)
                if got:
                    self._data.resize((cap + max(cap // 4, got), self._data.shape[1]), refcheck=False)
                    self._data[self.filled : self.filled + got] = block
            self.filled += got
            if got < want:
                return self.finish()

    def finish(self) -> np.ndarray:
        if self.filled != self._data.shape[0]:
            self._data.resize((self.filled, self._data.shape[1]), refcheck=False)
        return self._data.T


def _whole(channels: int, sr: int, expected_frames: int) -> _FrameBuffer:
    """The sink :func:`decode` uses: every frame, in one array."""
    return _FrameBuffer(channels, expected_frames)


class _MonoSink:
    """Decoded blocks -> mono mix -> streamed resample (one reusable block buffer).

    Checks every block for NaN/Inf and keeps the sample peak over all channels,
    so nothing needs the decoded whole afterwards.
    """

    def __init__(self, channels: int, sr: int, target_sr: int, expected_frames: int):
        from core.pipeline.preprocess import MonoResampler

        self.channels = channels
        self._block = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
        self._mono = MonoResampler(sr, target_sr, expected_frames)
        self.filled = 0
        self.peak = 0.0  # max |sample| over every channel

    def fill(self, path: Path, read_into, read_block) -> np.ndarray:
        while True:
            got = read_into(self._block)
            block = self._block[:got]
            _check_finite(block, path)
            if got:
                self.peak = max(self.peak, float(block.max()), -float(block.min()))
                self._mono.push(block)
            self.filled += got
            if got < len(self._block):
                return self._mono.finish()

    @property
    def peak_dbfs(self) -> float:
        return 20.0 * math.log10(self.peak) if self.peak > 0 else -math.inf


# --- probe ----------------------------------------------------------------------


def probe(path: StrPath, *, ffmpeg: StrPath | None = None) -> ProbeInfo:
    """Read a file's header: length, rate, channels, format and which decoder applies."""
    path = Path(path)
    size = _check_file(path)
    f = _open_soundfile(path)
    sf_format = None
    if f is not None:
        with f:
            sf_format = f.format
            if f.frames > 0:
                return ProbeInfo(
                    duration_s=f.frames / f.samplerate,
                    sample_rate=int(f.samplerate),
                    channels=int(f.channels),
                    frames=int(f.frames),
                    format=f.format,
                    subtype=f.subtype,
                    decoder="soundfile",
                    size_bytes=size,
                )
    exe = _resolve_ffmpeg(ffmpeg)
    if exe is None:
        if sf_format is not None:  # opened, but no frames: an Ogg/MP3 stream cut short, or an empty file
            kind = ErrorKind.INPUT_CORRUPT if sf_format in _LOSSY_FORMATS else ErrorKind.INPUT_EMPTY
            raise InputError(f"{path.name}: no audio frames could be read", kind=kind)
        if looks_like_ffmpeg_format(path):
            raise _needs_ffmpeg_error(path, ffmpeg)
        raise _not_audio_error(path, "libsndfile cannot read it and ffmpeg is not available")
    h = _ffmpeg_probe(exe, path)
    return ProbeInfo(
        duration_s=h.duration_s if h.duration_s is not None else 0.0,
        sample_rate=h.sample_rate,
        channels=h.channels,
        frames=round(h.duration_s * h.sample_rate) if h.duration_s is not None else 0,
        format=h.format,
        subtype=h.codec,
        decoder="ffmpeg",
        size_bytes=size,
    )


# --- decode ----------------------------------------------------------------------


def _wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header promises, or None when it cannot tell."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = 0
            while True:
                ch = f.read(8)
                if len(ch) < 8:
                    return None
                cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) >= 14:
                        block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if size in (0, 0xFFFFFFFF) or block_align == 0:  # streamed: size unknown
                        return None
                    return size // block_align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


def _truncated(path: Path, got: int, expected: int, sr: int) -> InputError:
    return InputError(
        f"{path.name}: truncated or damaged: decoded {got / sr:.2f} s of the {expected / sr:.2f} s its header promises",
        kind=ErrorKind.INPUT_CORRUPT,
    )


def _check_finite(block: np.ndarray, path: Path) -> None:
    if not np.isfinite(block).all():
        raise InputError(f"{path.name}: contains NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)


def _decode_soundfile(path: Path, f: sf.SoundFile, make_sink: SinkFactory) -> tuple[np.ndarray, int, int]:
    sr, expected = int(f.samplerate), int(f.frames)
    declared = _wav_declared_frames(path) if f.format in ("WAV", "WAVEX") else None
    buf = make_sink(int(f.channels), sr, expected)
    try:
        audio = buf.fill(
            path,
            lambda view: len(f.read(frames=len(view), dtype="float32", out=view)),
            lambda n: f.read(frames=n, dtype="float32", always_2d=True),
        )
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise InputError(
            f"{path.name}: truncated or damaged: decoding stopped after {buf.filled / sr:.2f} s ({exc})",
            kind=ErrorKind.INPUT_CORRUPT,
        ) from None
    got = buf.filled
    if declared is not None and declared > got:
        raise _truncated(path, got, declared, sr)
    # libsndfile's MP3/Ogg lengths are estimates: allow a little slack there.
    slack = max(int(0.01 * expected), 2048) if f.format in _LOSSY_FORMATS else 0
    if expected - got > slack:
        raise _truncated(path, got, expected, sr)
    return audio, sr, got


def _decode(path: Path, info: ProbeInfo, ffmpeg: StrPath | None,
            make_sink: SinkFactory = _whole) -> tuple[np.ndarray, int, int]:
    """Decode into ``make_sink(...)``: ``(its result, sample rate, frames decoded)``."""
    if info.decoder == "soundfile":
        f = _open_soundfile(path)
        if f is not None:
            with f:
                return _decode_soundfile(path, f, make_sink)
    exe = _resolve_ffmpeg(ffmpeg)
    if exe is None:
        raise _needs_ffmpeg_error(path, ffmpeg)
    audio, sr, n = _ffmpeg_decode(exe, path, info.frames, make_sink)
    if info.frames and info.sample_rate == sr:
        if info.frames - n > max(int(0.02 * info.frames), int(0.25 * sr)):
            raise _truncated(path, n, info.frames, sr)
    return audio, sr, n


def decode(path: StrPath, *, ffmpeg: StrPath | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file to float32 ``(channels, frames)`` at its native rate.

    Raises InputError (corrupt/unsupported/empty), DependencyMissing (needs
    ffmpeg), DependencyFailed (ffmpeg itself failed) or PermissionError.
    """
    path = Path(path)
    audio, sr, _ = _decode(path, probe(path, ffmpeg=ffmpeg), ffmpeg)
    return audio, sr


# --- ingest ------------------------------------------------------------------------


def _too_short(duration_s: float, config: PipelineConfig) -> InputError:
    return InputError(
        f"too short: {duration_s:.2f} s of audio (the minimum is {config.min_duration_s:g} s)",
        kind=ErrorKind.INPUT_EMPTY,
    )


def peak_dbfs(audio: np.ndarray) -> float:
    """Sample peak in dBFS (-inf for digital silence), without copying *audio*."""
    if audio.size == 0:
        return -math.inf
    peak = max(float(np.max(audio)), -float(np.min(audio)))
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def _accept(path: Path, info: ProbeInfo, frames: int, sr: int, channels: int, peak: float,
            config: PipelineConfig) -> ProbeInfo:
    """Refuse empty, too short and silent audio; the probe updated to what was decoded."""
    if frames == 0:
        raise InputError(f"{path.name}: no audio frames could be decoded", kind=ErrorKind.INPUT_EMPTY)
    duration = frames / sr
    if duration < config.min_duration_s:
        raise _too_short(duration, config)
    if peak < config.silence_threshold_dbfs:
        level = "digital silence" if peak == -math.inf else f"peak {peak:.1f} dBFS"
        raise InputError(
            f"all silence: {level}, below the {config.silence_threshold_dbfs:g} dBFS threshold",
            kind=ErrorKind.INPUT_EMPTY,
        )
    return dataclasses.replace(info, frames=frames, duration_s=duration, sample_rate=sr, channels=channels)


def _start(path: Path, config: PipelineConfig, ffmpeg: StrPath | None) -> tuple[str | None, str, ProbeInfo]:
    """Check, hash and probe: ``(ffmpeg to use, content hash, probe)``."""
    if ffmpeg is None and config.ffmpeg_path is not None:
        ffmpeg = config.ffmpeg_path
    _check_file(path)
    content_hash = sha256_file(path)
    return ffmpeg, content_hash, probe(path, ffmpeg=ffmpeg)


def ingest(path: StrPath, config: PipelineConfig, *, ffmpeg: StrPath | None = None) -> IngestResult:
    """Hash, probe and decode *path*, rejecting unusable input with a classified error."""
    path = Path(path)
    ffmpeg, content_hash, info = _start(path, config, ffmpeg)
    audio, sr, frames = _decode(path, info, ffmpeg)
    info = _accept(path, info, frames, sr, audio.shape[0], peak_dbfs(audio), config)
    return IngestResult(audio=audio, sr=sr, probe=info, content_hash=content_hash)


class MonoIngest(NamedTuple):
    """An accepted input as its mono mix at the analysis rate (see :func:`ingest_mono`)."""

    y: np.ndarray  # float32 (frames,) at the requested rate
    probe: ProbeInfo  # the native file: rate, channels and the frames actually decoded
    content_hash: str  # sha256 hex of the file's bytes
    peak_dbfs: float  # sample peak over every native channel


def ingest_mono(path: StrPath, config: PipelineConfig, target_sr: int, *,
                ffmpeg: StrPath | None = None) -> MonoIngest:
    """:func:`ingest`, then ``resample(to_mono(audio), sr, target_sr)``, streamed block by block.

    The same checks and classified rejections as :func:`ingest`, and the same
    signal, but only the mono result is ever held: each decoded block is mixed
    down and fed to a streaming resampler (soxr, equal to the one-shot one).
    """
    path = Path(path)
    ffmpeg, content_hash, info = _start(path, config, ffmpeg)
    sinks: list[_MonoSink] = []

    def make_sink(channels: int, sr: int, expected: int) -> _MonoSink:
        sinks.append(_MonoSink(channels, sr, target_sr, expected))
        return sinks[-1]

    y, sr, frames = _decode(path, info, ffmpeg, make_sink)
    sink = sinks[-1]
    info = _accept(path, info, frames, sr, sink.channels, sink.peak_dbfs, config)
    return MonoIngest(y=y, probe=info, content_hash=content_hash, peak_dbfs=sink.peak_dbfs)


__all__ = ["BLOCK_FRAMES", "IngestResult", "MonoIngest", "ProbeInfo", "decode", "ingest", "ingest_mono", "peak_dbfs",
           "probe"]
