"""Stem separation: Demucs through its command line, or harmonic/percussive as fallback.

``separate_demucs`` runs Demucs as its own process in its own process group
(session), so that a timeout or a cancel kills Demucs *and* any workers it
started, and a crash in torch cannot take the caller down. It never lets
Demucs download weights: without them it raises DependencyMissing before
starting. Retry, breaker and fallback policies belong to the engine, which
wraps these functions; this module only classifies what went wrong.

``separate_hpss`` is the built-in fallback (librosa HPSS, one STFT): a
harmonic, a percussive and a low-passed harmonic "bass" signal. Its results
are reported as degraded by the caller.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from core.resilience import children
from core.resilience.cancel import CancelToken
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.errors import (
    Cancelled,
    DependencyFailed,
    DependencyMissing,
    ErrorKind,
    InputError,
    StageTimeout,
    WorkerCrashed,
)

DEMUCS_STEMS = ("drums", "bass", "other", "vocals")
STEM_EXTENSIONS = ("wav", "mp3", "flac")
STDERR_LOG = "demucs.stderr.log"
STDOUT_LOG = "demucs.stdout.log"
_SIG = re.compile(r"\b[0-9a-f]{8}\b")

# --- availability -------------------------------------------------------------


def torch_hub_checkpoints_dir() -> Path:
    """Where torch.hub (and so Demucs) keeps downloaded weights, without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        torch_home = os.path.join(cache, "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


def demucs_model_signatures(model: str, demucs_dir: Path) -> list[str] | None:
    """The checkpoint signatures a Demucs model name stands for, from its bag file.

    Demucs names like ``htdemucs`` are YAML files in ``demucs/remote`` listing
    the signatures of the checkpoints they use (weights are saved as
    ``<signature>-<hash>.th``). A bare 8-hex-digit signature stands for itself.
    None when the name is unknown.
    """
    bag = demucs_dir / "remote" / f"{model}.yaml"
    if bag.is_file():
        text = bag.read_text(encoding="utf-8", errors="replace")
        match = re.search(r"^models:(.*?)(?=^\w|\Z)", text, flags=re.M | re.S)
        sigs = _SIG.findall(match.group(1)) if match else []
        return sigs or None
    if re.fullmatch(r"[0-9a-f]{8}", model):
        return [model]
    return None


def demucs_available(model: str = "htdemucs") -> tuple[bool, str]:
    """Whether Demucs can run ``model`` here without downloading anything."""
    missing = [m for m in ("torch", "torchaudio", "demucs") if importlib.util.find_spec(m) is None]
    if missing:
        return False, f"not installed: {', '.join(missing)} (install the 'stems' extra: torch, demucs)"
    spec = importlib.util.find_spec("demucs")
    assert spec is not None
    locations = list(spec.submodule_search_locations or [])
    demucs_dir = Path(locations[0]) if locations else Path(spec.origin or ".").parent
    sigs = demucs_model_signatures(model, demucs_dir)
    if sigs is None:
        return False, f"unknown Demucs model {model!r} (no {model}.yaml in {demucs_dir / 'remote'})"
    folder = torch_hub_checkpoints_dir()
    absent = [s for s in sigs if not _has_checkpoint(folder, s)]
    if absent:
        files = ", ".join(f"{s}-*.th" for s in absent)
        return False, (
            f"Demucs model {model!r} has no weights in {folder} (missing {files}); "
            f"Stave never downloads them: run `python -m demucs -n {model} some.wav` once while online"
        )
    return True, f"Demucs model {model!r}: {len(sigs)} checkpoint(s) in {folder}"


def _has_checkpoint(folder: Path, sig: str) -> bool:
    try:
        return any(p.is_file() and p.stat().st_size > 0 for p in folder.glob(f"{sig}-*.th"))
    except OSError:
        return False


# --- running Demucs -------------------------------------------------------------


def separate_demucs(
    audio_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model: str = "htdemucs",
    timeout_s: float,
    command: Sequence[str] | None = None,
    cancel: CancelToken | None = None,
    stems: Sequence[str] = DEMUCS_STEMS,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    kill_grace_s: float = 3.0,
    poll_s: float = 0.05,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Path]:
    """Run Demucs on ``audio_path``; stems land in ``out_dir/<model>/<stem>.wav``.

    ``command`` replaces ``[python, -m, demucs]`` (tests pass a test double);
    Demucs' own arguments are appended. Returns ``{stem: path}`` for every
    name in ``stems``. Raises StageTimeout, Cancelled, WorkerCrashed (killed
    by a signal), DependencyFailed (non-zero exit, missing or unreadable
    stems) or DependencyMissing (Demucs or its weights absent).
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if kill_grace_s < 0:
        raise ValueError(f"kill_grace_s must be >= 0, got {kill_grace_s}")
    if cancel is not None:
        cancel.raise_if_cancelled()
    audio = Path(audio_path)
    if not audio.is_file():
        raise InputError(f"audio file not found: {audio}")
    if command is None:
        ok, reason = demucs_available(model)
        if not ok:
            raise DependencyMissing(reason)
        command = [sys.executable, "-m", "demucs"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem_dir = out / model
    _remove_stale(stem_dir, stems)
    argv = [*command, "-n", model, "-o", str(out), "--filename", "{stem}.{ext}", *extra_args, str(audio)]
    run_env = None if env is None else {**os.environ, **env}
    with open(out / STDOUT_LOG, "wb") as so, open(out / STDERR_LOG, "wb") as se:
        proc = _start(argv, cwd=out, stdout=so, stderr=se, env=run_env)
        if os.name == "posix":
            children.register(proc.pid)  # its own process group: the worker kills it if it is stopped
        try:
            _supervise(proc, timeout_s=timeout_s, cancel=cancel, grace_s=kill_grace_s, poll_s=poll_s, clock=clock)
        finally:
            if os.name == "posix":
                children.unregister(proc.pid)
    return _check_result(proc.returncode, stem_dir, stems, out / STDERR_LOG)


def _die_with_parent() -> None:
    """In the child, before exec (Linux): be killed when the worker that started us dies.

    If the worker is killed (stage timeout, pause, a second Ctrl-C), its own clean-up
    never runs; without this Demucs would go on as an orphan.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start(argv: list[str], *, cwd: Path, stdout, stderr, env) -> subprocess.Popen:
    kw: dict = {}
    if os.name == "posix":
        kw["start_new_session"] = True  # own session and process group: killpg reaches its children
        if sys.platform.startswith("linux"):
            kw["preexec_fn"] = _die_with_parent
    else:
        kw["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    try:
        return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=env, **kw)
    except FileNotFoundError as exc:
        raise DependencyMissing(f"cannot start Demucs: {exc}") from exc
    except PermissionError as exc:
        raise DependencyFailed(f"cannot start Demucs: {exc}") from exc


def _exited(proc: subprocess.Popen) -> bool:
    """True once the leader has exited, *without* reaping it on POSIX.

    An unreaped leader keeps its process-group id reserved, so killing the
    group afterwards cannot hit an unrelated process that reused the number.
    """
    if proc.returncode is not None:
        return True
    if os.name == "posix" and hasattr(os, "waitid"):
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return proc.poll() is not None
    return proc.poll() is not None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal Demucs and everything it started (its process group; its tree on Windows)."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    except (ProcessLookupError, PermissionError):
        pass


def _finish(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the group, then reap the leader."""
    _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # unkillable (D state); nothing more we can do
        pass


def _kill_group(proc: subprocess.Popen, grace_s: float, poll_s: float, clock: Clock) -> None:
    """SIGTERM the whole group, give it ``grace_s`` to leave, then SIGKILL it."""
    _signal_group(proc, signal.SIGTERM)
    end = clock.monotonic() + grace_s
    while not _exited(proc) and clock.monotonic() < end:
        clock.sleep(min(poll_s, 0.02))
    _finish(proc)


def _supervise(
    proc: subprocess.Popen,
    *,
    timeout_s: float,
    cancel: CancelToken | None,
    grace_s: float,
    poll_s: float,
    clock: Clock,
) -> None:
    deadline = clock.monotonic() + timeout_s
    try:
        while not _exited(proc):
            if cancel is not None and cancel.is_set():
                _kill_group(proc, grace_s, poll_s, clock)
                raise Cancelled(f"Demucs cancelled: {cancel.reason or 'cancelled'}")
            if clock.monotonic() >= deadline:
                _kill_group(proc, grace_s, poll_s, clock)
                raise StageTimeout(f"Demucs did not finish within {timeout_s:g} s and was killed")
            clock.sleep(min(poll_s, max(0.0, deadline - clock.monotonic())), cancel)
    except BaseException:
        if proc.returncode is None:  # KeyboardInterrupt or the like: never leave it running
            _kill_group(proc, 0.0, poll_s, clock)
        raise
    _finish(proc)


def _check_result(rc: int | None, stem_dir: Path, stems: Sequence[str], stderr_log: Path) -> dict[str, Path]:
    if rc is None:
        raise WorkerCrashed("Demucs could not be reaped after it exited")
    if rc < 0:
        name = _signal_name(-rc)
        hint = " (often the out-of-memory killer)" if name == "SIGKILL" else ""
        raise WorkerCrashed(f"Demucs was killed by {name}{hint}; {stderr_tail(stderr_log)}", exitcode=rc)
    if os.name == "nt" and rc >= 0xC0000000:
        raise WorkerCrashed(f"Demucs crashed with status {rc:#x}; {stderr_tail(stderr_log)}", exitcode=rc)
    if rc != 0:
        raise DependencyFailed(f"Demucs exited with status {rc}; {stderr_tail(stderr_log)}")
    found: dict[str, Path] = {}
    for name in stems:
        path = _find_stem(stem_dir, name)
        if path is None:
            raise DependencyFailed(f"Demucs exited 0 but wrote no {name!r} stem in {stem_dir}; {stderr_tail(stderr_log)}")
        problem = _unreadable(path)
        if problem:
            raise DependencyFailed(f"Demucs wrote an unreadable {name!r} stem {path.name}: {problem}")
        found[name] = path
    return found


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _find_stem(folder: Path, name: str) -> Path | None:
    for ext in STEM_EXTENSIONS:
        path = folder / f"{name}.{ext}"
        if path.is_file():
            return path
    return None


def _remove_stale(folder: Path, stems: Sequence[str]) -> None:
    """Delete stems left by an earlier attempt so they cannot pass for this run's."""
    for name in stems:
        for ext in STEM_EXTENSIONS:
            try:
                (folder / f"{name}.{ext}").unlink()
            except FileNotFoundError:
                pass


def _unreadable(path: Path) -> str:
    """Why a stem file cannot be used, or "" when it decodes."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        if info.frames <= 0:
            return "no audio frames"
        block = sf.read(str(path), frames=min(info.frames, 4096), dtype="float32")[0]
    except Exception as exc:  # libsndfile raises its own error types
        return f"{type(exc).__name__}: {exc}"
    if not np.all(np.isfinite(block)):
        return "non-finite samples"
    return ""


def stderr_tail(path: Path, *, max_lines: int = 6, max_chars: int = 600) -> str:
    """The last lines of a log as one line (progress bars' carriage returns count as breaks)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "stderr unavailable"
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    if not lines:
        return "stderr empty"
    tail = " | ".join(lines[-max_lines:])
    if len(tail) > max_chars:
        tail = "..." + tail[-max_chars:]
    return f"stderr: {tail}"


# --- built-in fallback ------------------------------------------------------------


def separate_hpss(
    y: np.ndarray,
    sr: int,
    *,
    margin: float = 1.0,
    kernel_size: int = 31,
    n_fft: int = 2048,
    hop_length: int = 512,
    bass_cutoff_hz: float = 150.0,
) -> dict[str, np.ndarray]:
    """Harmonic, percussive and "bass" (harmonic below ``bass_cutoff_hz``) signals.

    One STFT, librosa's median-filter HPSS (soft masks; with ``margin=1``
    harmonic + percussive add back up to the input), inverse STFT with the
    input's length. Works on mono ``(n,)`` or multichannel ``(channels, n)``.
    """
    import librosa

    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin}")
    if not sr > 0:
        raise ValueError(f"sr must be > 0, got {sr}")
    y = np.asarray(y, dtype=np.float32)
    if y.ndim not in (1, 2):
        raise InputError(f"audio must be 1-D or 2-D, got shape {y.shape}")
    n = y.shape[-1]
    if n == 0:
        raise InputError("audio holds no samples", kind=ErrorKind.INPUT_EMPTY)
    if not np.all(np.isfinite(y)):
        raise InputError("audio holds NaN or infinite samples")
    padded = y if n >= n_fft else np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, n_fft - n)])
    length = padded.shape[-1]
    spec = librosa.stft(padded, n_fft=n_fft, hop_length=hop_length)
    harm, perc = librosa.decompose.hpss(spec, kernel_size=kernel_size, margin=margin)
    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    # gentle taper over a third of an octave above the cutoff, to avoid ringing
    taper = np.clip((bass_cutoff_hz * 1.26 - freqs) / (bass_cutoff_hz * 0.26), 0.0, 1.0)

    def back(s: np.ndarray) -> np.ndarray:
        return librosa.istft(s, hop_length=hop_length, n_fft=n_fft, length=length)[..., :n].astype(np.float32)

    return {"harmonic": back(harm), "percussive": back(perc), "bass": back(harm * taper[:, None])}
