"""Find ffmpeg: on PATH first, else the binary shipped in the imageio-ffmpeg wheel.

ffmpeg is optional (soundfile decodes WAV/FLAC/OGG/MP3 itself); with it, pydub
decodes m4a, aac, opus, wma and the rest. Whoever needs ffmpeg calls
:func:`find_ffmpeg` and learns both the path and where it came from, so the
health report can say which one is in use.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE_PATH = "PATH"
SOURCE_IMAGEIO = "imageio-ffmpeg"

_VERSION_RE = re.compile(r"ffmpeg version\s+(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class FfmpegLocation:
    """Where the ffmpeg executable is and how it was found (``PATH`` or ``imageio-ffmpeg``)."""

    path: Path
    source: str

    def describe(self) -> str:
        return f"{self.path} (from {self.source})"


class FfmpegError(RuntimeError):
    """``ffmpeg -version`` failed or did not answer in time."""

    def __init__(self, reason: str, *, timed_out: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


def _from_imageio() -> Path | None:
    try:
        import imageio_ffmpeg  # optional wheel with a static ffmpeg
    except ImportError:
        return None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # the wheel raises RuntimeError when its binary is absent
        return None
    return Path(exe) if exe and Path(exe).is_file() else None


def find_ffmpeg(path: str | None = None) -> FfmpegLocation | None:
    """Locate ffmpeg: ``PATH`` (or the given search ``path``) first, then imageio-ffmpeg.

    Returns None when neither has one.
    """
    on_path = shutil.which("ffmpeg", path=path)
    if on_path:
        return FfmpegLocation(Path(on_path), SOURCE_PATH)
    bundled = _from_imageio()
    if bundled is not None:
        return FfmpegLocation(bundled, SOURCE_IMAGEIO)
    return None


def parse_ffmpeg_version(text: str) -> str | None:
    """The version from ``ffmpeg -version`` output (``"6.1.1-3ubuntu5"``), or None."""
    match = _VERSION_RE.search(text)
    return match.group(1) if match else None


def _kill_tree(proc: subprocess.Popen) -> None:
    if sys.platform != "win32":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    else:  # pragma: no cover - Windows
        proc.kill()
    proc.wait()


def ffmpeg_version(exe: Path | str, timeout_s: float = 5.0) -> tuple[str | None, str]:
    """Run ``exe -version`` and return (parsed version or None, first output line).

    Raises :class:`FfmpegError` when it cannot start, exits non-zero or takes
    longer than ``timeout_s`` (then it and anything it started are killed).
    """
    kwargs: dict = {"start_new_session": True} if sys.platform != "win32" else {}
    try:
        proc = subprocess.Popen(
            [str(exe), "-version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
    except OSError as exc:
        raise FfmpegError(f"could not run {exe}: {exc.strerror or exc}") from exc
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        raise FfmpegError(f"`ffmpeg -version` timed out after {timeout_s:g}s", timed_out=True) from None
    text = out.decode("utf-8", "replace")
    first = text.strip().splitlines()[0] if text.strip() else ""
    if proc.returncode != 0:
        raise FfmpegError(f"`ffmpeg -version` exited with code {proc.returncode}: {first or 'no output'}")
    return parse_ffmpeg_version(text), first
