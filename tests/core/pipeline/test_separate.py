"""Stem separation: Demucs through a real test-double process, and the HPSS fallback."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

from core.pipeline.separate import (
    STDERR_LOG,
    demucs_available,
    separate_demucs,
    separate_hpss,
    torch_hub_checkpoints_dir,
)
from core.resilience.cancel import CancelToken
from core.resilience.errors import (
    Cancelled,
    DependencyFailed,
    DependencyMissing,
    ErrorKind,
    InputError,
    StageTimeout,
    WorkerCrashed,
    classify,
)
from tests.doubles import fake_demucs_command

posix_only = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")
SR = 22050


@pytest.fixture
def mix_wav(tmp_path: Path) -> Path:
    """1 s of stereo audio: a 220 Hz tone plus a little noise."""
    t = np.arange(SR) / SR
    rng = np.random.default_rng(1)
    left = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(SR)
    y = np.stack([left, 0.5 * left], axis=1)
    path = tmp_path / "take 1.wav"
    sf.write(path, y, SR, subtype="PCM_16")
    return path


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Set the test double's mode; returns the file its processes write their pids to."""
    pidfile = tmp_path / "pids.txt"
    monkeypatch.setenv("FAKE_DEMUCS_PIDFILE", str(pidfile))
    monkeypatch.delenv("FAKE_DEMUCS_DELAY", raising=False)

    def set_mode(mode: str, **extra: str) -> Path:
        monkeypatch.setenv("FAKE_DEMUCS_MODE", mode)
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        return pidfile

    return set_mode


def run(audio: Path, out: Path, **kw):
    kw.setdefault("timeout_s", 30.0)
    return separate_demucs(audio, out, command=fake_demucs_command(), **kw)


def pids_in(pidfile: Path) -> list[int]:
    return [int(line) for line in pidfile.read_text().split()] if pidfile.exists() else []


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for its (new) parent to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def live_group_members(pgid: int) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and alive(proc.pid):
                found.append(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


# --- availability -------------------------------------------------------------------


def test_demucs_is_not_available_here_and_says_why():
    ok, reason = demucs_available("htdemucs")
    assert ok is False
    missing = [m for m in ("torch", "torchaudio", "demucs") if importlib.util.find_spec(m) is None]
    if missing:
        assert "not installed" in reason and missing[0] in reason
    else:
        assert "weights" in reason or "unknown" in reason


def _fake_site(root: Path) -> Path:
    """Packages named torch, torchaudio and demucs that find_spec locates (never imported)."""
    for name in ("torch", "torchaudio", "demucs"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("raise ImportError('test stub: must not be imported')\n")
    remote = root / "demucs" / "remote"
    remote.mkdir()
    (remote / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    (remote / "htdemucs_ft.yaml").write_text(
        "models:\n- f7e0c4bc\n- d12395a8\n- 92cfc3b6\n- 04573f0d\nweights: [[1., 0., 0., 0.]]\nsegment: 7.8\n"
    )
    return root


def test_demucs_available_needs_the_model_weights_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(_fake_site(tmp_path / "site")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = torch_hub_checkpoints_dir()
    assert checkpoints == tmp_path / "torch" / "hub" / "checkpoints"

    ok, reason = demucs_available("htdemucs")
    assert not ok
    assert "955717e8-*.th" in reason and "never downloads" in reason

    checkpoints.mkdir(parents=True)
    (checkpoints / "955717e8-8726e21a.th").write_bytes(b"")  # an empty (interrupted) download is no model
    assert demucs_available("htdemucs")[0] is False
    (checkpoints / "955717e8-8726e21a.th").write_bytes(b"weights")
    ok, reason = demucs_available("htdemucs")
    assert ok, reason

    ok, reason = demucs_available("htdemucs_ft")  # a bag of four: three still missing
    assert not ok and "d12395a8-*.th" in reason and "f7e0c4bc-*.th" in reason

    ok, reason = demucs_available("no_such_model")
    assert not ok and "unknown" in reason


def test_separate_demucs_without_demucs_refuses_before_starting_anything(mix_wav, tmp_path):
    if demucs_available()[0]:
        pytest.skip("Demucs is installed with weights here")
    with pytest.raises(DependencyMissing):
        separate_demucs(mix_wav, tmp_path / "out", timeout_s=5)
    assert not (tmp_path / "out" / STDERR_LOG).exists()


# --- the Demucs path through the test double ------------------------------------------


def test_succeed_returns_four_readable_stems_that_add_up_to_the_input(mix_wav, tmp_path, fake):
    fake("succeed")
    stems = run(mix_wav, tmp_path / "out")
    assert set(stems) == {"drums", "bass", "other", "vocals"}
    x, sr = sf.read(mix_wav, always_2d=True)
    total = np.zeros_like(x)
    for name, path in stems.items():
        assert path == tmp_path / "out" / "htdemucs" / f"{name}.wav"
        y, stem_sr = sf.read(path, always_2d=True)
        assert stem_sr == sr and y.shape == x.shape
        total += y
    assert np.max(np.abs(total - x)) < 4 * 2.0**-15 + 1e-9  # four 16-bit roundings
    assert (tmp_path / "out" / STDERR_LOG).exists()


def test_fail_raises_dependency_failed_with_the_stderr_tail(mix_wav, tmp_path, fake):
    fake("fail")
    with pytest.raises(DependencyFailed) as err:
        run(mix_wav, tmp_path / "out")
    reason = err.value.reason
    assert "status 1" in reason
    assert "out of memory while loading model" in reason
    assert "\n" not in reason
    info = classify(err.value)
    assert info.kind is ErrorKind.DEPENDENCY_FAILED and info.retryable and info.counts_for_breaker


def test_flaky_fails_then_succeeds_on_a_later_attempt(mix_wav, tmp_path, fake):
    fake("flaky:1", FAKE_DEMUCS_COUNTER=str(tmp_path / "runs"))
    with pytest.raises(DependencyFailed):
        run(mix_wav, tmp_path / "out")
    assert len(run(mix_wav, tmp_path / "out")) == 4


@posix_only
def test_hang_times_out_and_leaves_no_process_alive(mix_wav, tmp_path, fake):
    pidfile = fake("hang")  # ignores SIGTERM, and so does the worker it starts
    start = time.monotonic()
    with pytest.raises(StageTimeout) as err:
        run(mix_wav, tmp_path / "out", timeout_s=1.5, kill_grace_s=0.5)
    elapsed = time.monotonic() - start
    assert 1.5 <= elapsed < 1.5 + 0.5 + 2.0, elapsed
    assert "1.5 s" in err.value.reason
    pids = pids_in(pidfile)
    assert len(pids) == 2, "the double should have recorded itself and its worker"
    leader = pids[0]
    deadline = time.monotonic() + 2.0  # the orphaned worker is reaped by init, not by us
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [p for p in pids if alive(p)]
    assert live_group_members(leader) == []


@posix_only
def test_crash_raises_worker_crashed_naming_the_signal(mix_wav, tmp_path, fake):
    fake("crash")
    with pytest.raises(WorkerCrashed) as err:
        run(mix_wav, tmp_path / "out")
    assert "SIGSEGV" in err.value.reason
    assert err.value.exitcode == -11
    assert classify(err.value).kind is ErrorKind.WORKER_CRASH


def test_garbage_stems_raise_dependency_failed(mix_wav, tmp_path, fake):
    fake("garbage")
    with pytest.raises(DependencyFailed) as err:
        run(mix_wav, tmp_path / "out")
    assert "unreadable" in err.value.reason


def test_missing_stems_raise_and_stale_stems_from_an_earlier_run_do_not_count(mix_wav, tmp_path, fake):
    fake("succeed")
    out = tmp_path / "out"
    assert len(run(mix_wav, out)) == 4  # leaves four valid stems behind
    # this run writes only vocals / no_vocals: the old drums.wav must not pass for new output
    with pytest.raises(DependencyFailed) as err:
        run(mix_wav, out, extra_args=["--two-stems", "vocals"])
    assert "'drums'" in err.value.reason
    assert not (out / "htdemucs" / "drums.wav").exists()
    stems = run(mix_wav, out, extra_args=["--two-stems", "vocals"], stems=("vocals", "no_vocals"))
    assert set(stems) == {"vocals", "no_vocals"}


@posix_only
def test_cancel_during_the_run_kills_it_and_raises_cancelled(mix_wav, tmp_path, fake):
    pidfile = fake("succeed", FAKE_DEMUCS_DELAY="60")
    token = CancelToken()
    timer = threading.Timer(0.5, token.cancel, args=("user pressed stop",))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(Cancelled) as err:
            run(mix_wav, tmp_path / "out", cancel=token, kill_grace_s=1.0)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 4.0
    assert "user pressed stop" in err.value.reason
    pids = pids_in(pidfile)
    assert pids and not [p for p in pids if alive(p)]
    assert classify(err.value).kind is ErrorKind.CANCELLED


def test_an_already_cancelled_token_starts_nothing(mix_wav, tmp_path, fake):
    pidfile = fake("succeed")
    token = CancelToken()
    token.cancel("batch stopped")
    with pytest.raises(Cancelled):
        run(mix_wav, tmp_path / "out", cancel=token)
    assert pids_in(pidfile) == []


def test_missing_input_is_an_input_error(tmp_path, fake):
    fake("succeed")
    with pytest.raises(InputError):
        run(tmp_path / "nope.wav", tmp_path / "out")


def test_bad_arguments_are_rejected(mix_wav, tmp_path):
    with pytest.raises(ValueError, match="timeout_s"):
        separate_demucs(mix_wav, tmp_path, timeout_s=0, command=fake_demucs_command())


# --- HPSS fallback ----------------------------------------------------------------------


def _tone_and_clicks(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) / SR
    tone = 0.3 * sum((0.5**k) * np.sin(2 * np.pi * 220 * (k + 1) * t) for k in range(4))
    rng = np.random.default_rng(0)
    clicks = np.zeros(n)
    burst = int(0.01 * SR)
    for s in range(int(0.1 * SR), n - burst, int(0.25 * SR)):
        clicks[s : s + burst] += 0.8 * rng.standard_normal(burst) * np.exp(-np.arange(burst) / (0.002 * SR))
    return tone, clicks


def _gain(out: np.ndarray, ref: np.ndarray) -> float:
    """How much of ``ref`` is in ``out`` (least-squares projection gain)."""
    return float(np.dot(out, ref) / np.dot(ref, ref))


def test_hpss_puts_the_tone_in_harmonic_and_the_clicks_in_percussive():
    n = 2 * SR + 1  # odd length: istft must still give it back exactly
    tone, clicks = _tone_and_clicks(n)
    y = (tone + clicks).astype(np.float32)
    out = separate_hpss(y, SR)
    h, p = out["harmonic"], out["percussive"]
    assert h.shape == p.shape == out["bass"].shape == (n,)
    assert _gain(h, tone) > 0.9 and _gain(p, tone) < 0.1
    assert _gain(p, clicks) > 0.8 and _gain(h, clicks) < 0.1
    assert np.sum((h - tone) ** 2) < 0.05 * np.sum(tone**2)
    # soft masks with margin 1 add back up to the input
    assert np.allclose(h + p, y, atol=1e-4)


def test_hpss_bass_keeps_the_low_tone_and_drops_the_high_one():
    t = np.arange(SR) / SR
    low, high = 0.3 * np.sin(2 * np.pi * 80 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)
    bass = separate_hpss((low + high).astype(np.float32), SR)["bass"]
    assert _gain(bass, low) > 0.9
    assert abs(_gain(bass, high)) < 0.01


def test_hpss_keeps_channels_and_short_inputs():
    tone, clicks = _tone_and_clicks(SR // 2)
    stereo = np.stack([tone + clicks, 0.5 * (tone + clicks)]).astype(np.float32)
    out = separate_hpss(stereo, SR)
    assert {k: v.shape for k, v in out.items()} == {k: stereo.shape for k in ("harmonic", "percussive", "bass")}
    short = separate_hpss(stereo[0, :1000], SR)
    assert short["harmonic"].shape == (1000,)


def test_hpss_rejects_empty_and_non_finite_audio():
    with pytest.raises(InputError) as err:
        separate_hpss(np.zeros(0, dtype=np.float32), SR)
    assert err.value.kind is ErrorKind.INPUT_EMPTY
    with pytest.raises(InputError):
        separate_hpss(np.array([0.0, np.nan, 0.0] * 1000, dtype=np.float32), SR)
