"""Decode one input file, and refuse it with a classified reason when it is unusable.

soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...) is tried
first; anything else goes through ffmpeg (:mod:`core.pipeline.ingest_ffmpeg`,
which finds, runs and classifies it). Either decoder fills a sink
(:mod:`core.pipeline.ingest_sinks`), so that only the final array is held in
memory.

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
import logging
import math
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import soundfile as sf

from core.fsutil import StrPath, sha256_file
from core.pipeline.ingest_ffmpeg import (  # PROBE_TIMEOUT_S is re-exported: it was defined here
    PROBE_TIMEOUT_S,
    _ffmpeg_decode,
    _ffmpeg_probe,
    _needs_ffmpeg_error,
    _not_audio_error,
    _resolve_ffmpeg,
    looks_like_ffmpeg_format,
)
from core.pipeline.ingest_sinks import BLOCK_FRAMES, SinkFactory, _MonoSink, _whole
from core.resilience.errors import ErrorKind, InputError

if TYPE_CHECKING:
    from core.pipeline.config import PipelineConfig

# libsndfile's decoders for these formats estimate the length from headers;
# allow a little slack before calling a short read "truncated".
_LOSSY_FORMATS = frozenset({"MP3", "OGG"})

log = logging.getLogger(__name__)


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


def _open_soundfile(path: Path) -> sf.SoundFile | None:
    try:
        return sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None


# --- probe ----------------------------------------------------------------------


MIN_SAMPLE_RATE = 2000  # Hz: below it, a header is damaged (a 1 Hz "rate" made an 88 KB file 12 hours long)
MAX_PEAK_DBFS = 60.0  # float samples above this are damage, not a loud master
_UNKNOWN_LENGTH = 1 << 62  # libsndfile says 2**63 - 1 frames when a header does not give the length


def known_frames(f: sf.SoundFile) -> int:
    """The frames ``f``'s header promises, or 0 when it does not say (a FLAC or WAV written through a pipe)."""
    frames = int(f.frames)
    return frames if 0 < frames < _UNKNOWN_LENGTH else 0


def probe(path: StrPath, *, ffmpeg: StrPath | None = None) -> ProbeInfo:
    """Read a file's header: length, rate, channels, format and which decoder applies.

    ``frames`` and ``duration_s`` are 0 when the header does not give the
    length (the decoder then reads to the end)."""
    path = Path(path)
    size = _check_file(path)
    f = _open_soundfile(path)
    sf_format = None
    if f is not None:
        with f:
            sf_format = f.format
            frames = known_frames(f)
            # An unknown length (libsndfile's FLAC reader then fails at the stream's end): ffmpeg decodes it whole.
            if frames or (f.frames > 0 and _resolve_ffmpeg(ffmpeg) is None):
                return ProbeInfo(
                    duration_s=frames / f.samplerate,
                    sample_rate=int(f.samplerate),
                    channels=int(f.channels),
                    frames=frames,
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



_SMALL_READ = 1024  # frames


def _read_to_unknown_end(f: sf.SoundFile, view: np.ndarray, path: Path) -> int:
    """Fill ``view`` from a stream whose header gives no length (decoded without ffmpeg).

    libsndfile's FLAC reader fails, rather than returning short, when a read
    crosses such a stream's end: read in small steps and take a failure after
    some audio as the end (losing less than ``_SMALL_READ`` frames).
    """
    got = 0
    while got < len(view):
        want = min(_SMALL_READ, len(view) - got)
        try:
            n = len(f.read(frames=want, dtype="float32", out=view[got:got + want]))
        except (sf.LibsndfileError, RuntimeError) as exc:
            if not got and not f.tell():
                raise
            log.info("%s: no length in its header; decoding ended with %s", path.name, exc)
            return got
        got += n
        if n < want:
            break
    return got


def _decode_soundfile(path: Path, f: sf.SoundFile, make_sink: SinkFactory) -> tuple[np.ndarray, int, int]:
    sr, expected = int(f.samplerate), known_frames(f)  # 0: unknown, read to the end
    declared = _wav_declared_frames(path) if f.format in ("WAV", "WAVEX") else None
    buf = make_sink(int(f.channels), sr, expected)
    def read_into(view: np.ndarray) -> int:
        if not expected:  # no length in the header: libsndfile must not be asked past the end
            return _read_to_unknown_end(f, view, path)
        return len(f.read(frames=len(view), dtype="float32", out=view))

    def read_block(n: int) -> np.ndarray:
        if not expected:
            block = np.empty((n, f.channels), dtype=np.float32)
            return block[: _read_to_unknown_end(f, block, path)]
        return f.read(frames=n, dtype="float32", always_2d=True)

    try:
        audio = buf.fill(path, read_into, read_block)
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
    if expected and expected - got > slack:
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
    if peak > MAX_PEAK_DBFS:  # float samples a thousand times full scale: not a level anyone mixed to
        raise InputError(f"{path.name}: damaged: its samples reach {peak:+.0f} dBFS (float data that is not audio?)",
                         kind=ErrorKind.INPUT_CORRUPT)
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
    info = probe(path, ffmpeg=ffmpeg)
    check_sample_rate(path, info)  # before decoding: resampling such a file would take minutes and gigabytes
    return ffmpeg, content_hash, info


def check_sample_rate(path: StrPath, info: ProbeInfo) -> None:
    """Refuse a header whose sample rate no music can have (below ``MIN_SAMPLE_RATE``)."""
    if 0 < info.sample_rate < MIN_SAMPLE_RATE:
        raise InputError(f"{Path(path).name}: its header gives a sample rate of {info.sample_rate} Hz, below the "
                         f"{MIN_SAMPLE_RATE} Hz any music analysis needs (a damaged header?)",
                         kind=ErrorKind.INPUT_CORRUPT)


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
    if sink.channels_cancel:  # decode again, keeping the loudest channel alone
        loudest = int(np.argmax(sink.channel_energy))
        log.warning("%s: its channels cancel each other in a mono mix (one is phase-inverted): analysing "
                    "channel %d alone", path.name, loudest + 1)

        def make_sink(channels: int, sr: int, expected: int) -> _MonoSink:  # noqa: F811 - the second pass
            sinks.append(_MonoSink(channels, sr, target_sr, expected, channel=loudest))
            return sinks[-1]

        y, sr, frames = _decode(path, info, ffmpeg, make_sink)
        sink = sinks[-1]
    info = _accept(path, info, frames, sr, sink.channels, sink.peak_dbfs, config)
    return MonoIngest(y=y, probe=info, content_hash=content_hash, peak_dbfs=sink.peak_dbfs)


__all__ = ["BLOCK_FRAMES", "IngestResult", "MonoIngest", "ProbeInfo", "decode", "ingest", "ingest_mono",
           "check_sample_rate", "known_frames", "peak_dbfs", "probe"]
