"""A tiny Standard MIDI File writer (format 0, one track) with no dependencies.

Transcription's fallback path must work without the ``transcribe`` extra, so
this does not use pretty_midi or mido. Files are written atomically (temp
file in the same folder, fsync, ``os.replace``).

Layout written: header chunk ``MThd`` (format 0, one track, ``ticks_per_beat``
division), then one ``MTrk`` holding an optional track name, a tempo meta
event, a program change, the notes as note-on / note-off pairs (running status
used) and the end-of-track meta event.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

from core.fsutil import atomic_write_bytes


class NoteLike(Protocol):
    pitch_midi: int
    onset_s: float
    offset_s: float
    velocity: int


@dataclass(frozen=True)
class MidiOptions:
    """What goes into the file besides the notes; validates itself."""

    tempo_bpm: float = 120.0
    ticks_per_beat: int = 480
    program: int = 0
    channel: int = 0
    track_name: str | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.tempo_bpm) and 60e6 / 0xFFFFFF <= self.tempo_bpm <= 60e6):
            raise ValueError(f"tempo_bpm must be finite and in 3.58..60e6, got {self.tempo_bpm!r}")
        if not (1 <= self.ticks_per_beat <= 0x7FFF):
            raise ValueError(f"ticks_per_beat must be in 1..32767, got {self.ticks_per_beat!r}")
        if not (0 <= self.program <= 127):
            raise ValueError(f"program must be in 0..127, got {self.program!r}")
        if not (0 <= self.channel <= 15):
            raise ValueError(f"channel must be in 0..15, got {self.channel!r}")

    @property
    def ticks_per_second(self) -> float:
        return self.ticks_per_beat * self.tempo_bpm / 60.0


def vlq(value: int) -> bytes:
    """MIDI variable-length quantity (7 bits per byte, high bit = more follows)."""
    if value < 0 or value > 0x0FFFFFFF:
        raise ValueError(f"variable-length quantity out of range: {value}")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _note_events(notes: Iterable[NoteLike], opts: MidiOptions) -> list[tuple[int, int, int, int]]:
    """Absolute-tick events ``(tick, order, pitch, velocity)``; order 0 = off, 1 = on.

    Offs sort before ons at the same tick, so a repeated pitch that starts
    exactly where the last one ended is not cut off. Overlapping notes of the
    same pitch are trimmed so that every note-on has its own note-off.
    """
    tps = opts.ticks_per_second
    spans: list[tuple[int, int, int, int]] = []
    for i, n in enumerate(notes):
        pitch = int(n.pitch_midi)
        if not 0 <= pitch <= 127:
            raise ValueError(f"note {i}: pitch_midi must be in 0..127, got {pitch}")
        onset, offset = float(n.onset_s), float(n.offset_s)
        if not (onset >= 0 and offset >= onset):  # also rejects NaN
            raise ValueError(f"note {i}: need 0 <= onset_s <= offset_s, got {onset}..{offset}")
        on_tick = round(onset * tps)
        off_tick = max(round(offset * tps), on_tick + 1)
        velocity = min(127, max(1, int(round(n.velocity))))
        spans.append((on_tick, off_tick, pitch, velocity))
    spans.sort()
    last_by_pitch: dict[int, int] = {}
    for idx, (on, off, pitch, vel) in enumerate(spans):
        prev = last_by_pitch.get(pitch)
        if prev is not None:
            p_on, p_off, _, p_vel = spans[prev]
            if p_off > on:  # same pitch still sounding: end it where this one starts
                spans[prev] = (p_on, max(on, p_on + 1), pitch, p_vel)
        last_by_pitch[pitch] = idx
    events = []
    for on, off, pitch, vel in spans:
        events.append((on, 1, pitch, vel))
        events.append((off, 0, pitch, 0))
    events.sort()
    return events


def midi_bytes(notes: Iterable[NoteLike], opts: MidiOptions | None = None) -> bytes:
    """The bytes of a format-0 Standard MIDI File holding ``notes``."""
    opts = opts or MidiOptions()
    track = bytearray()
    if opts.track_name:
        name = opts.track_name.encode("utf-8")
        track += b"\x00\xff\x03" + vlq(len(name)) + name
    usec_per_beat = round(60_000_000 / opts.tempo_bpm)
    track += b"\x00\xff\x51\x03" + usec_per_beat.to_bytes(3, "big")
    track += bytes([0x00, 0xC0 | opts.channel, opts.program])
    running = 0xC0 | opts.channel
    now = 0
    for tick, is_on, pitch, vel in _note_events(notes, opts):
        status = (0x90 if is_on else 0x80) | opts.channel
        track += vlq(tick - now)
        if status != running:
            track.append(status)
            running = status
        track += bytes([pitch, vel if is_on else 64])
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, opts.ticks_per_beat)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


def write_midi(
    notes: Iterable[NoteLike],
    path: str | os.PathLike,
    *,
    tempo_bpm: float = 120.0,
    ticks_per_beat: int = 480,
    program: int = 0,
    channel: int = 0,
    track_name: str | None = None,
) -> Path:
    """Write ``notes`` (anything with pitch_midi, onset_s, offset_s, velocity) as a .mid file."""
    opts = MidiOptions(
        tempo_bpm=tempo_bpm,
        ticks_per_beat=ticks_per_beat,
        program=program,
        channel=channel,
        track_name=track_name,
    )
    return atomic_write_bytes(path, midi_bytes(notes, opts))
