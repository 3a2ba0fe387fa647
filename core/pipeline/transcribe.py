"""Audio to notes: Basic Pitch (ONNX) when installed, else a monophonic pYIN fallback.

Both return a list of :class:`Note`. The pYIN fallback needs only librosa and
is what the engine uses while the Basic Pitch breaker is open (the caller
marks that result degraded). ``write_notes_csv`` writes the per-song
``notes.csv`` atomically.

``notes.csv`` columns, one row per note, sorted by onset:

- ``onset_s``, ``offset_s``, ``duration_s``: seconds from the start of the file
- ``pitch_midi``: MIDI note number (60 = C4 = middle C)
- ``pitch_name``: scientific pitch name with sharps, e.g. ``C#4``
- ``velocity``: 1..127, from the note's loudness
- ``confidence``: 0..1 (pYIN: mean voiced probability; Basic Pitch: note amplitude)
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from core.fsutil import atomic_write_bytes
from core.resilience.errors import DependencyFailed, DependencyMissing, InputError, ErrorKind

NOTES_CSV_COLUMNS = ("onset_s", "offset_s", "duration_s", "pitch_midi", "pitch_name", "velocity", "confidence")
_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def pitch_name(pitch_midi: int) -> str:
    """``60 -> 'C4'``, ``61 -> 'C#4'`` (octave numbers as in scientific pitch notation)."""
    return f"{_NAMES[pitch_midi % 12]}{pitch_midi // 12 - 1}"


@dataclass(frozen=True)
class Note:
    pitch_midi: int
    onset_s: float
    offset_s: float
    velocity: int
    confidence: float

    def __post_init__(self) -> None:
        if not 0 <= self.pitch_midi <= 127:
            raise ValueError(f"pitch_midi must be in 0..127, got {self.pitch_midi}")
        if not 0 <= self.onset_s <= self.offset_s:
            raise ValueError(f"need 0 <= onset_s <= offset_s, got {self.onset_s}..{self.offset_s}")
        if not 0 <= self.velocity <= 127:
            raise ValueError(f"velocity must be in 0..127, got {self.velocity}")

    @property
    def duration_s(self) -> float:
        return self.offset_s - self.onset_s

    @property
    def pitch_name(self) -> str:
        return pitch_name(self.pitch_midi)

    def to_row(self) -> dict:
        return {
            "onset_s": round(self.onset_s, 4),
            "offset_s": round(self.offset_s, 4),
            "duration_s": round(self.duration_s, 4),
            "pitch_midi": self.pitch_midi,
            "pitch_name": self.pitch_name,
            "velocity": self.velocity,
            "confidence": round(self.confidence, 4),
        }


def write_notes_csv(notes: Iterable[Note], path: str | os.PathLike) -> Path:
    """Write ``notes`` (sorted by onset) to ``path`` with :data:`NOTES_CSV_COLUMNS`, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=NOTES_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for note in sorted(notes, key=lambda n: (n.onset_s, n.pitch_midi)):
        writer.writerow(note.to_row())
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def _velocity_from_rms(rms: float) -> int:
    """Map a frame RMS to 1..127: -60 dBFS (re a full-scale sine) -> 1, 0 dBFS -> 127."""
    db = 20.0 * np.log10(max(float(rms), 1e-10) * np.sqrt(2.0))
    return int(np.clip(round(127 * (db + 60.0) / 60.0), 1, 127))


def _as_mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0) if y.shape[0] <= y.shape[1] else y.mean(axis=1)
    if y.ndim != 1:
        raise InputError(f"audio must be 1-D or 2-D, got shape {y.shape}")
    if y.size == 0:
        raise InputError("audio holds no samples", kind=ErrorKind.INPUT_EMPTY)
    if not np.all(np.isfinite(y)):
        raise InputError("audio holds NaN or infinite samples")
    return y


# --- pYIN fallback ----------------------------------------------------------


@dataclass(frozen=True)
class PyinConfig:
    """Settings of the monophonic fallback; validates itself."""

    fmin: str | float = "C2"
    fmax: str | float = "C7"
    hop_length: int | None = None  # default: frame_length // 8 (about 12 ms)
    frame_length: int | None = None  # default: about 93 ms, a power of two
    resolution: float = 0.25  # pitch bins per semitone step; notes are rounded to semitones anyway
    min_note_s: float = 0.06
    reattack_db: float = 6.0  # loudness rise at an onset that splits a held pitch into two notes

    def __post_init__(self) -> None:
        if self.hop_length is not None and self.hop_length <= 0:
            raise ValueError(f"hop_length must be > 0, got {self.hop_length}")
        if self.frame_length is not None and self.frame_length < 64:
            raise ValueError(f"frame_length must be >= 64, got {self.frame_length}")
        if not 0 < self.resolution <= 1:
            raise ValueError(f"resolution must be in (0, 1], got {self.resolution}")
        if self.min_note_s < 0:
            raise ValueError(f"min_note_s must be >= 0, got {self.min_note_s}")
        if self.reattack_db <= 0:
            raise ValueError(f"reattack_db must be > 0, got {self.reattack_db}")
        if self.fmin_hz() >= self.fmax_hz():
            raise ValueError(f"fmin must be below fmax, got {self.fmin!r} and {self.fmax!r}")

    def fmin_hz(self) -> float:
        return _to_hz(self.fmin, "fmin")

    def fmax_hz(self) -> float:
        return _to_hz(self.fmax, "fmax")


def _to_hz(value: str | float, field: str) -> float:
    import librosa

    try:
        hz = float(librosa.note_to_hz(value)) if isinstance(value, str) else float(value)
    except Exception as exc:  # librosa raises ParameterError on bad names
        raise ValueError(f"{field} must be a note name like 'C2' or a frequency in Hz, got {value!r}") from exc
    if not hz > 0:
        raise ValueError(f"{field} must be > 0 Hz, got {value!r}")
    return hz


def _runs(pitch: np.ndarray) -> list[list[int]]:
    """Contiguous runs ``[start, end_exclusive, pitch]`` of equal pitch >= 0."""
    runs: list[list[int]] = []
    for i, p in enumerate(pitch):
        if p < 0:
            continue
        if runs and runs[-1][1] == i and runs[-1][2] == p:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1, int(p)])
    return runs


def transcribe_pyin(
    y: np.ndarray,
    sr: int,
    *,
    fmin: str | float = "C2",
    fmax: str | float = "C7",
    hop_length: int | None = None,
    config: PyinConfig | None = None,
) -> list[Note]:
    """Monophonic notes from pYIN's f0 track, split at pitch changes and re-attacks."""
    import librosa

    cfg = config or PyinConfig(fmin=fmin, fmax=fmax, hop_length=hop_length)
    y = _as_mono(y)
    frame = cfg.frame_length or int(2 ** round(np.log2(0.093 * sr)))
    hop = cfg.hop_length or max(1, frame // 8)
    if y.size < frame:
        y = np.pad(y, (0, frame - y.size))
    f0, voiced, prob = librosa.pyin(
        y,
        fmin=cfg.fmin_hz(),
        fmax=cfg.fmax_hz(),
        sr=sr,
        frame_length=frame,
        hop_length=hop,
        resolution=cfg.resolution,
    )
    # short frames (about two hops) so a re-attack shows as a dip then a rise
    rms = librosa.feature.rms(y=y, frame_length=2 * hop, hop_length=hop)[0]
    env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop)
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=hop, units="frames")
    n = min(len(f0), len(rms))
    f0, voiced, prob, rms = f0[:n], voiced[:n], prob[:n], rms[:n]
    if not voiced.any():
        return []
    tuning = float(librosa.pitch_tuning(f0[voiced], resolution=0.05)) if voiced.sum() >= 5 else 0.0
    midi = np.where(voiced, np.round(librosa.hz_to_midi(np.where(voiced, f0, 1.0)) - tuning), -1).astype(int)
    return _segment(midi, prob, rms, onsets, sr=sr, hop=hop, frame=frame, cfg=cfg)


def _segment(
    midi: np.ndarray,
    prob: np.ndarray,
    rms: np.ndarray,
    onsets: np.ndarray,
    *,
    sr: int,
    hop: int,
    frame: int,
    cfg: PyinConfig,
) -> list[Note]:
    n = len(midi)
    fps = sr / hop
    min_frames = max(1, int(round(cfg.min_note_s * fps)))
    look = max(2, int(round(0.05 * fps)))  # 50 ms either side of an onset
    rise = 10 ** (-cfg.reattack_db / 20)

    def reattack(k: int) -> bool:
        before = rms[max(0, k - look) : k + 1].min()
        after = rms[k : min(n, k + look + 1)].max()
        return bool(before < rise * after)

    # onsets confirmed by a loudness rise; spectral-flux blips inside a note are dropped
    attacks = sorted(int(k) for k in onsets if 0 <= k < n and reattack(int(k)))
    runs = _runs(midi)
    # split a held pitch at each re-attack (both halves long enough)
    split: list[list[int]] = []
    for start, end, p in runs:
        cut = start
        for k in attacks:
            if cut + min_frames <= k <= end - min_frames:
                split.append([cut, k, p])
                cut = k
        split.append([cut, end, p])
    kept = [r for r in split if r[1] - r[0] >= min_frames]
    # rejoin a held pitch that a short glitch interrupted (no re-attack in the gap)
    merged: list[list[int]] = []
    for r in kept:
        if merged:
            prev = merged[-1]
            gap = r[0] - prev[1]
            if prev[2] == r[2] and gap <= min_frames and not any(prev[1] - 1 <= k <= r[0] + 1 for k in attacks):
                prev[1] = r[1]
                continue
        merged.append(r)
    half = (frame / 2) / sr  # centred frames see a note up to half a frame early
    onset_times = np.asarray(attacks, dtype=float) / fps
    notes: list[Note] = []
    for i, (start, end, p) in enumerate(merged):
        t0 = start / fps
        from_silence = start == 0 or midi[start - 1] < 0
        lo, hi = (t0 - 0.03, t0 + half + 0.03) if from_silence else (t0 - 0.05, t0 + 0.05)
        near = onset_times[(onset_times >= lo) & (onset_times <= hi)]
        if near.size:
            target = t0 + (half * 0.5 if from_silence else 0.0)
            onset = float(near[np.argmin(np.abs(near - target))])
        else:
            onset = t0 + (half * 0.5 if from_silence else 0.0)
        to_silence = end >= n or midi[end] < 0
        offset = end / fps - (half * 0.5 if to_silence else 0.0)
        if i + 1 < len(merged):
            offset = min(offset, merged[i + 1][0] / fps)
        offset = max(offset, onset + 1.0 / fps)
        notes.append(
            Note(
                pitch_midi=int(np.clip(p, 0, 127)),
                onset_s=max(0.0, onset),
                offset_s=offset,
                velocity=_velocity_from_rms(float(rms[start:end].max())),
                confidence=float(np.mean(prob[start:end])),
            )
        )
    # onsets moved by snapping may now overlap the previous note: trim it
    for i in range(len(notes) - 1):
        a, b = notes[i], notes[i + 1]
        if a.offset_s > b.onset_s:
            notes[i] = Note(a.pitch_midi, a.onset_s, max(a.onset_s, b.onset_s), a.velocity, a.confidence)
    return [nt for nt in notes if nt.duration_s > 0]


# --- Basic Pitch --------------------------------------------------------------

_BP_MODEL = Path("saved_models") / "icassp_2022" / "nmp.onnx"


def _basic_pitch_dir() -> Path | None:
    spec = importlib.util.find_spec("basic_pitch")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def basic_pitch_model_path() -> Path | None:
    """The ONNX model shipped inside the basic_pitch package, if installed."""
    root = _basic_pitch_dir()
    return None if root is None else root / _BP_MODEL


def basic_pitch_available() -> tuple[bool, str]:
    """Whether Basic Pitch can run here through ONNX (never imports TensorFlow)."""
    root = _basic_pitch_dir()
    if root is None:
        return False, "basic-pitch is not installed (pip install --no-deps basic-pitch, plus the 'transcribe' extra)"
    model = root / _BP_MODEL
    if not model.is_file() or model.stat().st_size == 0:
        return False, f"basic-pitch is installed but its ONNX model is missing: {model}"
    for module in ("pretty_midi", "resampy", "mir_eval", "scipy"):
        if importlib.util.find_spec(module) is None:
            return False, f"basic-pitch needs {module}, which is not installed (the 'transcribe' extra)"
    try:
        import onnxruntime  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        return False, f"onnxruntime does not import: {type(exc).__name__}: {exc}"
    return True, f"basic-pitch with ONNX model {model.name} (onnxruntime {onnxruntime.__version__})"


class _DropRecordsFrom(logging.Filter):
    def __init__(self, folder: Path):
        super().__init__()
        self.folder = str(folder)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.startswith(self.folder)


@contextlib.contextmanager
def _quiet_basic_pitch(root_dir: Path) -> Iterator[None]:
    """Silence basic_pitch's root-logger chatter and warnings, and its stdout print.

    On import it logs, through the *root* logger, a warning for each backend
    that is absent (coremltools, tflite, TensorFlow); ``logging.warning`` would
    also call ``basicConfig`` on an unconfigured root logger. A NullHandler
    stops that and a filter drops records from files inside the package.
    """
    root = logging.getLogger()
    stub = logging.NullHandler()
    quiet = _DropRecordsFrom(root_dir)
    root.addHandler(stub)
    root.addFilter(quiet)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(quiet)
        root.removeHandler(stub)


def transcribe_basic_pitch(
    audio: str | os.PathLike | tuple[np.ndarray, int],
    *,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_len_ms: float = 127.7,  # Basic Pitch's own default
    model_path: str | os.PathLike | None = None,
) -> list[Note]:
    """Polyphonic notes from Spotify's Basic Pitch, run through onnxruntime.

    ``audio`` is a file path or ``(y, sr)``; arrays go through a temporary WAV
    because Basic Pitch reads and resamples files itself. Raises
    DependencyMissing when it cannot run here and DependencyFailed when it
    fails on this input.
    """
    ok, reason = basic_pitch_available()
    if not ok and model_path is None:
        raise DependencyMissing(reason)
    model = Path(model_path) if model_path is not None else basic_pitch_model_path()
    assert model is not None
    if not model.is_file():
        raise DependencyMissing(f"Basic Pitch model not found: {model}")
    for name, value in (("onset_threshold", onset_threshold), ("frame_threshold", frame_threshold)):
        if not 0 < value < 1:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    if min_note_len_ms < 0:
        raise ValueError(f"min_note_len_ms must be >= 0, got {min_note_len_ms}")
    with contextlib.ExitStack() as stack:
        if isinstance(audio, tuple):
            path = _temp_wav(stack, *audio)
        else:
            path = Path(audio)
            if not path.is_file():
                raise InputError(f"audio file not found: {path}")
        root_dir = _basic_pitch_dir() or model.parent
        with _quiet_basic_pitch(root_dir):
            try:
                from basic_pitch.inference import predict
            except ImportError as exc:
                raise DependencyMissing(f"basic-pitch does not import: {exc}") from exc
            try:
                _, _, events = predict(
                    str(path),
                    str(model),
                    onset_threshold=onset_threshold,
                    frame_threshold=frame_threshold,
                    minimum_note_length=min_note_len_ms,
                )
            except (MemoryError, KeyboardInterrupt):
                raise
            except Exception as exc:
                raise DependencyFailed(f"Basic Pitch failed: {type(exc).__name__}: {exc}") from exc
    return _notes_from_events(events)


def _temp_wav(stack: contextlib.ExitStack, y: np.ndarray, sr: int) -> Path:
    import soundfile as sf

    mono = _as_mono(y)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stave-bp-")))
    path = folder / "input.wav"
    sf.write(path, mono, int(sr), subtype="FLOAT")
    return path


def _notes_from_events(events: Sequence) -> list[Note]:
    notes = []
    for start, end, pitch, amplitude, *_ in events:
        amp = float(np.clip(amplitude, 0.0, 1.0))
        notes.append(
            Note(
                pitch_midi=int(pitch),
                onset_s=max(0.0, float(start)),
                offset_s=max(float(start), float(end)),
                velocity=int(np.clip(round(127 * amp), 1, 127)),
                confidence=amp,
            )
        )
    notes.sort(key=lambda n: (n.onset_s, n.pitch_midi))
    return notes
