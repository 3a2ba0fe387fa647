"""Where decoded frames go: one whole array, or a stream mixed to mono and resampled.

Both decoders (soundfile in :mod:`core.pipeline.ingest`, ffmpeg in
:mod:`core.pipeline.ingest_ffmpeg`) fill a sink block by block, so the choice
of what to keep is made once, here, whatever decoded the file. A sink checks
every block for NaN/Inf as it arrives, so nothing has to re-read the decoded
whole afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from core.resilience.errors import ErrorKind, InputError

BLOCK_FRAMES = 1 << 16


def _check_finite(block: np.ndarray, path: Path) -> None:
    if not np.isfinite(block).all():
        raise InputError(f"{path.name}: contains NaN or infinite samples", kind=ErrorKind.INPUT_CORRUPT)


class _Sink(Protocol):
    """Where decoded frames go. ``fill`` decodes until a short read and returns the result."""

    filled: int  # frames decoded so far

    def fill(self, path: Path, read_into: Callable[[np.ndarray], int],
             read_block: Callable[[int], np.ndarray]) -> np.ndarray: ...

    def finish(self) -> np.ndarray: ...


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

    def __init__(self, channels: int, sr: int, target_sr: int, expected_frames: int, channel: int | None = None):
        from core.pipeline.preprocess import MonoResampler

        self.channels = channels
        self.channel = channel  # take this channel alone instead of the mix
        self._block = np.empty((BLOCK_FRAMES, channels), dtype=np.float32)
        self._mono = MonoResampler(sr, target_sr, expected_frames)
        self.filled = 0
        self.peak = 0.0  # max |sample| over every channel
        self._gram = np.zeros((channels, channels))  # sums of products of channel pairs (see channels_cancel)

    def fill(self, path: Path, read_into, read_block) -> np.ndarray:
        while True:
            got = read_into(self._block)
            block = self._block[:got]
            _check_finite(block, path)
            if got:
                self.peak = max(self.peak, float(block.max()), -float(block.min()))
                if self.channels > 1:
                    self._gram += block.T @ block
                self._mono.push(block if self.channel is None else block[:, self.channel : self.channel + 1])
            self.filled += got
            if got < len(self._block):
                return self.finish()

    def finish(self) -> np.ndarray:
        return self._mono.finish()

    @property
    def channel_energy(self) -> np.ndarray:
        """Sum of squares per channel."""
        return np.diag(self._gram)

    @property
    def channels_cancel(self) -> bool:
        """The mix is 20 dB or more below its channels (one is phase-inverted): the mix would be near silence.

        The mix's energy comes from the channels' products: sum(mean of channels)^2 = sum(gram) / channels^2."""
        mean_channel = float(self.channel_energy.mean()) if self.channels > 1 else 0.0
        return mean_channel > 0 and float(self._gram.sum()) / self.channels ** 2 < 0.01 * mean_channel

    @property
    def peak_dbfs(self) -> float:
        return 20.0 * math.log10(self.peak) if self.peak > 0 else -math.inf

