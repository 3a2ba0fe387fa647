"""Stave's standard health checks. Each one is honest: it really runs, decodes or imports.

Heavy packages are imported inside the check functions only, so importing this
module is cheap (the worker-start probe's child process imports it too).
Nothing here downloads anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Mapping

from core.ffmpeg import FfmpegError, ffmpeg_version, find_ffmpeg
from core.resilience.health import (
    CheckOutcome,
    HealthCheck,
    HealthRegistry,
    HealthStatus,
    default_numba_cache_dir,
)

GiB = 1024**3
MiB = 1024**2

FFMPEG_UNLOCKS = "m4a, aac, opus, wma and other formats through pydub"
DEMUCS_FALLBACK = "installed but its model weights are not downloaded; stems use the built-in fallback"
DEMUCS_WEIGHTS_HINT = "python -c \"from demucs.pretrained import get_model; get_model('htdemucs')\""
DEMUCS_INSTALL_HINT = 'pip install "torch>=2.1" "demucs>=4.0"'
HTDEMUCS_SIGNATURES = ("955717e8",)  # demucs/remote/htdemucs.yaml: models: ['955717e8']
BASIC_PITCH_MODEL = Path("saved_models") / "icassp_2022" / "nmp.onnx"
BASIC_PITCH_HINT = "pip install onnxruntime pretty-midi mir-eval resampy && pip install --no-deps basic-pitch==0.4.0"
BASIC_PITCH_RUNTIME = {"pretty_midi": "pretty-midi", "mir_eval": "mir-eval", "resampy": "resampy"}


@dataclass(frozen=True)
class HealthThresholds:
    """Resource limits: below ``*_warn_bytes`` is degraded, below ``disk_error_bytes`` an error."""

    disk_warn_bytes: int = 2 * GiB
    disk_error_bytes: int = 200 * MiB
    memory_warn_bytes: int = 2 * GiB
    slow_worker_start_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("disk_warn_bytes", "disk_error_bytes", "memory_warn_bytes", "slow_worker_start_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HealthThresholds.{name} must be > 0, got {getattr(self, name)!r}")
        if self.disk_error_bytes > self.disk_warn_bytes:
            raise ValueError("HealthThresholds.disk_error_bytes must not exceed disk_warn_bytes")


def _dist_version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _inner_timeout(timeout_s: float) -> float:
    """A subprocess deadline a little inside the check's own, so the check can kill it and say why."""
    return max(0.05, timeout_s - min(1.0, 0.2 * timeout_s))


def _fmt_bytes(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


# --- ffmpeg -----------------------------------------------------------------


def _system_ffmpeg_hint() -> str:
    if sys.platform == "darwin":
        return "brew install ffmpeg"
    if sys.platform == "win32":
        return "winget install ffmpeg"
    return "sudo apt install ffmpeg"


def probe_ffmpeg(timeout_s: float = 5.0) -> CheckOutcome:
    location = find_ffmpeg()
    if location is None:
        return CheckOutcome(
            HealthStatus.MISSING,
            details=f"not on PATH and the imageio-ffmpeg wheel is not installed "
            f"(a system ffmpeg works too: {_system_ffmpeg_hint()})",
        )
    extra = {"path": str(location.path), "source": location.source}
    try:
        version, first_line = ffmpeg_version(location.path, timeout_s=timeout_s)
    except FfmpegError as exc:
        return CheckOutcome(HealthStatus.ERROR, details=f"{location.describe()}: {exc.reason}", extra=extra)
    if version is None:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            details=f"{location.describe()}: no version in `ffmpeg -version` output ({first_line[:60]!r})",
            extra=extra,
        )
    return CheckOutcome(HealthStatus.OK, version=version, details=location.describe(), extra=extra)


def ffmpeg_check(timeout_s: float = 10.0) -> HealthCheck:
    return HealthCheck(
        name="ffmpeg",
        fn=partial(probe_ffmpeg, _inner_timeout(timeout_s)),
        required=False,
        unlocks=FFMPEG_UNLOCKS,
        install_hint="pip install imageio-ffmpeg",
        timeout_s=timeout_s,
        parallel_safe=True,
    )


# --- soundfile ----------------------------------------------------------------


def _roundtrip(sf, np, fmt: str) -> None:
    """Encode 0.2 s of a tone in memory in ``fmt`` and decode it back."""
    sr = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(sr // 5) / sr)).astype("float32")
    buf = io.BytesIO()
    sf.write(buf, tone, sr, format=fmt)
    buf.seek(0)
    decoded, decoded_sr = sf.read(buf, dtype="float32")
    if decoded_sr != sr or decoded.size < tone.size // 2 or not np.isfinite(decoded).all():
        raise ValueError(f"{fmt} decoded to {decoded.size} frames at {decoded_sr} Hz")
    if float(np.abs(decoded).max()) < 0.05:
        raise ValueError(f"{fmt} decoded to silence")


def probe_soundfile() -> CheckOutcome:
    import numpy as np
    import soundfile as sf

    formats = sorted(sf.available_formats())
    main = [f for f in ("WAV", "FLAC", "OGG", "MP3") if f in formats]
    extra = {"libsndfile": sf.__libsndfile_version__, "formats": formats}
    listed = f"decodes {', '.join(main)} (+{len(formats) - len(main)} more)"
    _roundtrip(sf, np, "WAV")
    if "MP3" not in formats:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            version=sf.__version__,
            details=f"libsndfile {sf.__libsndfile_version__} has no MP3 support ({listed}); MP3 needs ffmpeg",
            install_hint="pip install -U soundfile",
            extra=extra,
        )
    try:
        _roundtrip(sf, np, "MP3")
    except Exception as exc:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            version=sf.__version__,
            details=f"libsndfile {sf.__libsndfile_version__} lists MP3 but a test MP3 did not decode: {exc}",
            install_hint="pip install -U soundfile",
            extra=extra,
        )
    extra["mp3_verified"] = True
    return CheckOutcome(
        HealthStatus.OK,
        version=sf.__version__,
        details=f"libsndfile {sf.__libsndfile_version__}; {listed}; MP3 decode verified",
        extra=extra,
    )


def soundfile_check(timeout_s: float = 15.0) -> HealthCheck:
    return HealthCheck(
        name="soundfile",
        fn=probe_soundfile,
        unlocks="decoding WAV, FLAC, OGG and MP3",
        install_hint="pip install -U soundfile",
        timeout_s=timeout_s,
    )


# --- librosa + numba ------------------------------------------------------------


def _writable_dir(path: Path) -> str | None:
    """None when a file can be created and removed in ``path`` (created if absent), else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".stave-health-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def probe_librosa(environ: Mapping[str, str] | None = None) -> CheckOutcome:
    import librosa
    import numba

    env = os.environ if environ is None else environ
    cache = env.get("NUMBA_CACHE_DIR", "")
    extra = {"numba": numba.__version__, "numba_cache_dir": cache}
    versions = f"numba {numba.__version__}"
    if not cache:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            version=librosa.__version__,
            details=f"{versions}; NUMBA_CACHE_DIR is not set, so numba caches next to the installed packages",
            install_hint=f"export NUMBA_CACHE_DIR={default_numba_cache_dir()}  (the `stave` command sets it)",
            extra=extra,
        )
    why = _writable_dir(Path(cache))
    if why is not None:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            version=librosa.__version__,
            details=f"{versions}; NUMBA_CACHE_DIR={cache} is not writable ({why}): compiled code is not cached",
            install_hint=f"export NUMBA_CACHE_DIR={default_numba_cache_dir()}",
            extra=extra,
        )
    return CheckOutcome(
        HealthStatus.OK,
        version=librosa.__version__,
        details=f"{versions}; NUMBA_CACHE_DIR={cache} (writable)",
        extra=extra,
    )


def librosa_check(timeout_s: float = 30.0) -> HealthCheck:
    return HealthCheck(
        name="librosa",
        fn=probe_librosa,
        unlocks="tempo, beats, key, spectral features, chroma, MFCC",
        install_hint="pip install librosa",
        timeout_s=timeout_s,
    )


# --- pyloudnorm -------------------------------------------------------------------


def probe_pyloudnorm() -> CheckOutcome:
    import numpy as np
    import pyloudnorm

    sr = 48000
    tone = 0.5 * np.sin(2 * np.pi * 997.0 * np.arange(sr) / sr)
    lufs = float(pyloudnorm.Meter(sr).integrated_loudness(tone))
    if not math.isfinite(lufs):
        return CheckOutcome(HealthStatus.ERROR, details=f"a test tone measured {lufs} LUFS")
    return CheckOutcome(
        HealthStatus.OK,
        version=_dist_version("pyloudnorm"),
        details=f"a 997 Hz test tone measures {lufs:.1f} LUFS",
    )


def pyloudnorm_check(timeout_s: float = 20.0) -> HealthCheck:
    return HealthCheck(
        name="pyloudnorm",
        fn=probe_pyloudnorm,
        unlocks="loudness in LUFS (ITU-R BS.1770)",
        install_hint="pip install pyloudnorm",
        timeout_s=timeout_s,
    )


# --- Demucs -----------------------------------------------------------------------


def demucs_signatures(package_dir: Path | None) -> tuple[str, ...]:
    """The checkpoint signatures of htdemucs, read from demucs's own remote/htdemucs.yaml."""
    if package_dir is not None:
        try:
            text = (package_dir / "remote" / "htdemucs.yaml").read_text(encoding="utf-8")
        except OSError:
            text = ""
        sigs = tuple(re.findall(r"\b([0-9a-f]{8})\b", text))
        if sigs:
            return sigs
    return HTDEMUCS_SIGNATURES


def find_demucs_weights(checkpoints_dir: Path, signatures: tuple[str, ...] = HTDEMUCS_SIGNATURES) -> list[Path]:
    """Checkpoint files (``<signature>-<hash>.th``) present for every signature, else []."""
    if not checkpoints_dir.is_dir():
        return []
    found: list[Path] = []
    for sig in signatures:
        matches = sorted(p for p in checkpoints_dir.glob(f"{sig}-*.th") if p.is_file() and p.stat().st_size > 0)
        if not matches:
            return []
        found.append(matches[0])
    return found


def probe_demucs() -> CheckOutcome:
    fallback = "stems use the built-in fallback (harmonic/percussive separation)"
    try:
        demucs = importlib.import_module("demucs")
        torch = importlib.import_module("torch")
    except ModuleNotFoundError as exc:
        missing = exc.name or "demucs"
        what = "not installed" if missing == "demucs" else f"installed but {missing} is not"
        return CheckOutcome(HealthStatus.MISSING, details=f"{what}; {fallback}")
    version = getattr(demucs, "__version__", "") or _dist_version("demucs")
    torch_version = str(getattr(torch, "__version__", ""))
    package_file = getattr(demucs, "__file__", None)
    sigs = demucs_signatures(Path(package_file).parent if package_file else None)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    weights = find_demucs_weights(checkpoints, sigs)
    extra = {"torch": torch_version, "checkpoints_dir": str(checkpoints), "weights": [str(w) for w in weights]}
    if not weights:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            version=version,
            details=f"{DEMUCS_FALLBACK} (looked in {checkpoints})",
            install_hint=DEMUCS_WEIGHTS_HINT,
            extra=extra,
        )
    return CheckOutcome(
        HealthStatus.OK,
        version=version,
        details=f"torch {torch_version}; htdemucs weights in {checkpoints}",
        extra=extra,
    )


def demucs_check(timeout_s: float = 30.0) -> HealthCheck:
    return HealthCheck(
        name="demucs",
        fn=probe_demucs,
        required=False,
        unlocks="stem separation with Demucs (htdemucs)",
        install_hint=DEMUCS_INSTALL_HINT,
        timeout_s=timeout_s,
    )


# --- Basic Pitch --------------------------------------------------------------------


def _basic_pitch_dir() -> Path | None:
    """basic_pitch's package folder, found without importing it (its __init__ imports TensorFlow)."""
    try:
        spec = importlib.util.find_spec("basic_pitch")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def probe_basic_pitch(package_dir: Path | None = None, *, find_dir=_basic_pitch_dir) -> CheckOutcome:
    fallback = "notes use the built-in pYIN transcription"
    package_dir = package_dir if package_dir is not None else find_dir()
    if package_dir is None:
        return CheckOutcome(HealthStatus.MISSING, details=f"not installed; {fallback}")
    model = package_dir / BASIC_PITCH_MODEL
    if not model.is_file():
        return CheckOutcome(
            HealthStatus.ERROR,
            version=_dist_version("basic-pitch"),
            details=f"installed, but its ONNX model is missing ({model}); {fallback}",
            install_hint="pip install --force-reinstall --no-deps basic-pitch==0.4.0",
        )
    try:
        import onnxruntime
    except ImportError as exc:
        return CheckOutcome(
            HealthStatus.MISSING,
            version=_dist_version("basic-pitch"),
            details=f"installed, but onnxruntime does not import ({exc}); {fallback}",
            install_hint="pip install onnxruntime",
        )
    absent = [dist for mod, dist in BASIC_PITCH_RUNTIME.items() if importlib.util.find_spec(mod) is None]
    if absent:
        return CheckOutcome(
            HealthStatus.MISSING,
            version=_dist_version("basic-pitch"),
            details=f"installed, but needs {', '.join(absent)}; {fallback}",
            install_hint=f"pip install {' '.join(absent)}",
        )
    return CheckOutcome(
        HealthStatus.OK,
        version=_dist_version("basic-pitch"),
        details=f"onnxruntime {onnxruntime.__version__}; model {BASIC_PITCH_MODEL.as_posix()}",
        extra={"onnxruntime": onnxruntime.__version__, "model": str(model)},
    )


def basic_pitch_check(timeout_s: float = 20.0) -> HealthCheck:
    return HealthCheck(
        name="basic-pitch",
        fn=probe_basic_pitch,
        required=False,
        unlocks="audio-to-MIDI transcription with Basic Pitch",
        install_hint=BASIC_PITCH_HINT,
        timeout_s=timeout_s,
    )


# --- output folder, memory, worker processes ---------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(path.anchor)


def probe_output_folder(out_dir: Path, thresholds: HealthThresholds = HealthThresholds()) -> CheckOutcome:
    out_dir = Path(out_dir).absolute()
    existing = _nearest_existing(out_dir)
    extra: dict = {"path": str(out_dir)}
    if not existing.is_dir():
        return CheckOutcome(HealthStatus.ERROR, details=f"{existing} is a file, not a folder: cannot use {out_dir}", extra=extra)
    free = shutil.disk_usage(existing).free
    extra["free_bytes"] = free
    why = _can_write(existing)
    if why is not None:
        return CheckOutcome(HealthStatus.ERROR, details=f"cannot write in {existing}: {why}", extra=extra)
    where = str(out_dir) if existing == out_dir else f"{out_dir} (will be created in {existing})"
    space = f"{_fmt_bytes(free)} free"
    if free < thresholds.disk_error_bytes:
        return CheckOutcome(HealthStatus.ERROR, details=f"only {space} on the drive of {where}", extra=extra)
    if free < thresholds.disk_warn_bytes:
        return CheckOutcome(HealthStatus.DEGRADED, details=f"only {space} on the drive of {where}", extra=extra)
    return CheckOutcome(HealthStatus.OK, details=f"{where}: writable, {space}", extra=extra)


def _can_write(folder: Path) -> str | None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".stave-health-")
        os.close(fd)
        os.remove(name)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def output_folder_check(thresholds: HealthThresholds = HealthThresholds(), timeout_s: float = 10.0) -> HealthCheck:
    return HealthCheck(
        name="output-folder",
        fn=partial(probe_output_folder, thresholds=thresholds),
        unlocks="writing results",
        install_hint="choose another output folder, or free space on its drive",
        timeout_s=timeout_s,
        needs_out_dir=True,
        parallel_safe=True,
    )


def probe_memory(thresholds: HealthThresholds = HealthThresholds()) -> CheckOutcome:
    import psutil

    mem = psutil.virtual_memory()
    extra = {"available_bytes": mem.available, "total_bytes": mem.total, "psutil": psutil.__version__}
    details = f"{_fmt_bytes(mem.available)} available of {_fmt_bytes(mem.total)}"
    if mem.available < thresholds.memory_warn_bytes:
        return CheckOutcome(
            HealthStatus.DEGRADED,
            details=f"only {details}: long files may run out of memory",
            install_hint="close other programs or use fewer workers",
            extra=extra,
        )
    return CheckOutcome(HealthStatus.OK, details=details, extra=extra)


def memory_check(thresholds: HealthThresholds = HealthThresholds(), timeout_s: float = 5.0) -> HealthCheck:
    return HealthCheck(
        name="memory",
        fn=partial(probe_memory, thresholds),
        unlocks="analysing long files with several workers",
        install_hint="pip install psutil",
        timeout_s=timeout_s,
        parallel_safe=True,
    )


def _spawn_probe(conn) -> None:
    """Runs in the child: import numpy and say so."""
    import numpy

    conn.send(numpy.__version__)
    conn.close()


def probe_worker(timeout_s: float = 20.0, thresholds: HealthThresholds = HealthThresholds()) -> CheckOutcome:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_spawn_probe, args=(writer,), name="stave-health-worker", daemon=True)
    start = time.monotonic()
    try:
        proc.start()
        writer.close()
        if not reader.poll(timeout_s):
            return CheckOutcome(HealthStatus.ERROR, details=f"a 'spawn' worker did not reply: timed out after {timeout_s:g}s")
        try:
            numpy_version = reader.recv()
        except EOFError:
            proc.join(timeout_s)
            return CheckOutcome(HealthStatus.ERROR, details=f"a 'spawn' worker exited with code {proc.exitcode} before replying")
        latency = time.monotonic() - start
        proc.join(max(0.1, timeout_s - latency))
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        reader.close()
    extra = {"start_latency_s": round(latency, 3), "context": "spawn"}
    details = f"a 'spawn' worker imported numpy {numpy_version} and replied in {latency:.2f}s"
    if latency > thresholds.slow_worker_start_s:
        return CheckOutcome(HealthStatus.DEGRADED, details=f"{details} (slow: the machine is busy)", extra=extra)
    return CheckOutcome(HealthStatus.OK, details=details, extra=extra)


def worker_check(timeout_s: float = 30.0, thresholds: HealthThresholds = HealthThresholds()) -> HealthCheck:
    return HealthCheck(
        name="worker-process",
        fn=partial(probe_worker, _inner_timeout(timeout_s), thresholds),
        unlocks="stage timeouts and crash isolation (each stage runs in a worker process)",
        install_hint="check that Python can start subprocesses (antivirus, sandbox, ulimit -u)",
        timeout_s=timeout_s,
        parallel_safe=True,
    )


def build_default_registry(
    out_dir: Path | str | None = None, thresholds: HealthThresholds = HealthThresholds()
) -> HealthRegistry:
    registry = HealthRegistry(out_dir=out_dir)
    for check in (
        soundfile_check(),
        librosa_check(),
        pyloudnorm_check(),
        ffmpeg_check(),
        basic_pitch_check(),
        demucs_check(),
        memory_check(thresholds),
        worker_check(thresholds=thresholds),
        output_folder_check(thresholds),
    ):
        registry.register(check)
    return registry
