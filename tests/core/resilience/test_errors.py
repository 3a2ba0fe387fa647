"""Classification of real failures: broken files, dead workers, full disks, missing tools."""

from __future__ import annotations

import concurrent.futures
import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pebble
import pytest
import soundfile as sf
import tenacity

from core.resilience.cancel import CancelToken
from core.resilience.errors import (
    POLICIES, Cancelled, DependencyFailed, ErrorInfo, ErrorKind, InputError, Severity, StageTimeout,
    WorkerCrashed, classify, classify_exit, info_for,
)
from tests.core.resilience import fixtures_errors as fx

HAVE_FFMPEG = shutil.which("ffmpeg") is not None
SPAWN = multiprocessing.get_context("spawn")


def assert_readable(info: ErrorInfo) -> None:
    assert info.reason and "\n" not in info.reason and len(info.reason) <= 200
    assert info.suggestion and "\n" not in info.suggestion


def assert_input(info: ErrorInfo, kind: ErrorKind) -> None:
    assert info.kind is kind, info
    assert not info.retryable and not info.counts_for_breaker
    assert_readable(info)


# --- the policy table ---------------------------------------------------------------


def test_every_kind_has_a_policy_and_info_for_follows_it():
    assert set(POLICIES) == set(ErrorKind)
    for kind, policy in POLICIES.items():
        info = info_for(kind, "x")
        assert (info.retryable, info.counts_for_breaker, info.severity) == (
            policy.retryable, policy.counts_for_breaker, policy.severity)


def test_policy_table_rules():
    for kind in ErrorKind:
        p = POLICIES[kind]
        if kind.is_input:
            assert not p.retryable and not p.counts_for_breaker, kind
    assert {k for k in ErrorKind if k.is_input} == {
        ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED, ErrorKind.INPUT_EMPTY}
    assert POLICIES[ErrorKind.DEPENDENCY_MISSING].counts_for_breaker
    assert POLICIES[ErrorKind.DEPENDENCY_FAILED].counts_for_breaker
    assert POLICIES[ErrorKind.DEPENDENCY_FAILED].retryable
    cancelled = POLICIES[ErrorKind.CANCELLED]
    assert not cancelled.retryable and not cancelled.counts_for_breaker
    assert POLICIES[ErrorKind.DISK_FULL].severity is Severity.FATAL
    assert not POLICIES[ErrorKind.DISK_FULL].retryable
    with pytest.raises(TypeError):
        POLICIES[ErrorKind.BUG] = POLICIES[ErrorKind.TIMEOUT]  # type: ignore[index]


def test_error_info_survives_json():
    info = classify(fx.raised(sf.read, "/nonexistent/song.wav"))
    again = ErrorInfo.from_dict(json.loads(json.dumps(info.to_dict())))
    assert again == info


# --- broken audio files, read with soundfile ------------------------------------------


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    return fx.write_audio(tmp_path / "good.wav")


def test_wav_cut_inside_its_header_is_corrupt(wav: Path, tmp_path: Path):
    bad = fx.truncated_copy(wav, tmp_path / "cut.wav", 20)
    info = classify(fx.raised(sf.read, str(bad)))
    assert_input(info, ErrorKind.INPUT_CORRUPT)
    assert "cut.wav" in info.reason and info.exc_type == "LibsndfileError"


@pytest.mark.parametrize("ext", ["flac", "ogg"])
def test_compressed_file_cut_in_half_is_corrupt(tmp_path: Path, ext: str):
    good = fx.write_audio(tmp_path / f"good.{ext}", seconds=1.0)
    bad = fx.truncated_copy(good, tmp_path / f"half.{ext}", good.stat().st_size // 2)
    assert_input(classify(fx.raised(sf.read, str(bad))), ErrorKind.INPUT_CORRUPT)


def test_header_only_wav_decodes_to_nothing_and_is_not_an_exception(wav: Path, tmp_path: Path):
    # libsndfile reads a WAV cut after its header as 0 frames: the ingest stage
    # must turn that into input-empty itself; the classifier trusts its kind.
    bad = fx.truncated_copy(wav, tmp_path / "hdr.wav", 44)
    data, _ = sf.read(str(bad))
    assert data.size == 0
    info = classify(InputError(f"{bad.name} holds no audio", kind=ErrorKind.INPUT_EMPTY))
    assert_input(info, ErrorKind.INPUT_EMPTY)
    assert info.severity is Severity.WARNING


def test_random_bytes_named_wav_is_corrupt_but_named_m4a_is_unsupported(tmp_path: Path):
    noise = np.random.default_rng(0).bytes(4096)
    (tmp_path / "noise.wav").write_bytes(noise)
    (tmp_path / "noise.m4a").write_bytes(noise)
    as_wav = classify(fx.raised(sf.read, str(tmp_path / "noise.wav")))
    as_m4a = classify(fx.raised(sf.read, str(tmp_path / "noise.m4a")))
    assert_input(as_wav, ErrorKind.INPUT_CORRUPT)
    assert_input(as_m4a, ErrorKind.INPUT_UNSUPPORTED)
    assert "ffmpeg" in as_m4a.suggestion


def test_empty_file_is_input_empty(tmp_path: Path):
    (tmp_path / "zero.wav").write_bytes(b"")
    info = classify(fx.raised(sf.read, str(tmp_path / "zero.wav")))
    assert_input(info, ErrorKind.INPUT_EMPTY)
    assert "0 bytes" in info.reason


def test_missing_file_is_an_input_error_that_says_not_found(tmp_path: Path):
    missing = tmp_path / "gone.wav"
    for exc in (fx.raised(sf.read, str(missing)), fx.raised(open, missing, "rb")):
        info = classify(exc)
        assert_input(info, ErrorKind.INPUT_CORRUPT)
        assert "not found" in info.reason and "gone.wav" in info.reason
        assert "moved or deleted" in info.suggestion


def test_a_folder_is_not_an_audio_file(tmp_path: Path):
    info = classify(fx.raised(sf.read, str(tmp_path)))
    assert_input(info, ErrorKind.INPUT_UNSUPPORTED)
    assert "folder" in info.reason


def _classify_reads(path: str) -> list[dict]:
    return [classify(fx.raised(sf.read, path)).to_dict(), classify(fx.raised(open, path, "rb")).to_dict()]


def test_unreadable_file_is_a_permission_error(wav: Path):
    os.chmod(wav, 0)
    try:
        if os.geteuid() == 0:  # root reads anything: try again as nobody
            results = fx.run_unprivileged(lambda: _classify_reads(str(wav)))
        else:
            results = _classify_reads(str(wav))
    finally:
        os.chmod(wav, 0o644)
    for d in results:
        info = ErrorInfo.from_dict(d)
        assert info.kind is ErrorKind.PERMISSION, info
        assert not info.retryable and not info.counts_for_breaker


# --- decoders behind pydub and audioread ---------------------------------------------------


@pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg not on PATH")
def test_pydub_decode_failures_with_ffmpeg(tmp_path: Path, wav: Path):
    from pydub import AudioSegment

    noise = np.random.default_rng(1).bytes(3000)
    (tmp_path / "noise.m4a").write_bytes(noise)
    (tmp_path / "noise.xyz").write_bytes(noise)
    good_ogg = fx.write_audio(tmp_path / "good.ogg", seconds=1.0)
    half_ogg = fx.truncated_copy(good_ogg, tmp_path / "half.ogg", good_ogg.stat().st_size // 2)
    m4a = classify(fx.raised(AudioSegment.from_file, str(tmp_path / "noise.m4a")))
    xyz = classify(fx.raised(AudioSegment.from_file, str(tmp_path / "noise.xyz")))
    half = classify(fx.raised(AudioSegment.from_file, str(half_ogg)))
    assert m4a.exc_type == "CouldntDecodeError"
    assert_input(m4a, ErrorKind.INPUT_CORRUPT)
    assert_input(xyz, ErrorKind.INPUT_UNSUPPORTED)
    assert_input(half, ErrorKind.INPUT_CORRUPT)
    assert "ffmpeg" in m4a.reason and "noise.m4a" in m4a.reason


_NO_FFMPEG_CHILD = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from pydub import AudioSegment
from core.resilience.errors import classify
try:
    AudioSegment.from_file(sys.argv[1])
except BaseException as exc:
    print(json.dumps(classify(exc).to_dict()))
"""


def test_pydub_without_ffmpeg_is_dependency_missing(tmp_path: Path):
    song = tmp_path / "song.m4a"
    song.write_bytes(b"\0" * 2048)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin), "PYTHONPATH": str(Path(__file__).parents[3])}
    out = subprocess.run([sys.executable, "-c", _NO_FFMPEG_CHILD, str(song)], env=env,
                         capture_output=True, text=True, timeout=60)
    info = ErrorInfo.from_dict(json.loads(out.stdout.strip().splitlines()[-1]))
    assert info.kind is ErrorKind.DEPENDENCY_MISSING, info
    assert "ffprobe" in info.reason or "ffmpeg" in info.reason  # pydub probes with ffprobe first
    assert "Install ffmpeg" in info.suggestion and info.counts_for_breaker


def test_audioread_no_backend_depends_on_whether_ffmpeg_exists(tmp_path: Path):
    import audioread

    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(2).bytes(4096))
    exc = fx.raised(audioread.audio_open, str(tmp_path / "noise.wav"))
    assert type(exc).__name__ == "NoBackendError"
    without = classify(exc, which=lambda name: None)
    assert without.kind is ErrorKind.DEPENDENCY_MISSING and "ffmpeg" in without.reason
    with_it = classify(exc, which=lambda name: f"/usr/bin/{name}")
    assert_input(with_it, ErrorKind.INPUT_UNSUPPORTED)
    real = classify(exc)
    assert real.kind is (ErrorKind.INPUT_UNSUPPORTED if HAVE_FFMPEG else ErrorKind.DEPENDENCY_MISSING)


# --- resources ------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_writing_to_a_full_device_is_disk_full_and_fatal():
    def write_full():
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 65536)

    exc = fx.raised(write_full)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    info = classify(exc)
    assert info.kind is ErrorKind.DISK_FULL and info.severity is Severity.FATAL and not info.retryable


def test_quota_and_read_only_file_system():
    quota = classify(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/out/a.npy"))
    assert quota.kind is ErrorKind.DISK_FULL and "quota" in quota.reason
    rofs = classify(OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/cd/out"))
    assert rofs.kind is ErrorKind.PERMISSION and "read-only" in rofs.reason


def test_huge_numpy_allocations_are_out_of_memory():
    exc = fx.raised(np.empty, (2**60,), dtype=np.uint8)
    assert isinstance(exc, MemoryError)
    info = classify(exc)
    assert info.kind is ErrorKind.OUT_OF_MEMORY and info.retryable and not info.counts_for_breaker
    assert "Unable to allocate 1.00 EiB" in info.reason and info.exc_type.endswith("MemoryError")
    impossible = classify(fx.raised(np.empty, (2**62,)))  # numpy refuses this size outright
    assert impossible.kind is ErrorKind.OUT_OF_MEMORY


# --- timeouts, cancellation, missing modules --------------------------------------------


def test_timeouts():
    future: concurrent.futures.Future = concurrent.futures.Future()
    assert classify(fx.raised(future.result, timeout=0)).kind is ErrorKind.TIMEOUT
    expired = fx.raised(subprocess.run, [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
    info = classify(expired)
    assert info.kind is ErrorKind.TIMEOUT and info.retryable and info.counts_for_breaker
    assert "0.3 s" in info.reason
    assert classify(StageTimeout("timed out after 5 s")).kind is ErrorKind.TIMEOUT


def test_cancellation_is_never_retried_or_counted():
    token = CancelToken()
    token.cancel("paused by user")
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.cancel()
    excs = [fx.raised(token.raise_if_cancelled), KeyboardInterrupt(), fx.raised(future.result)]
    for exc in excs:
        info = classify(exc)
        assert info.kind is ErrorKind.CANCELLED, exc
        assert not info.retryable and not info.counts_for_breaker
    assert "paused by user" in classify(excs[0]).reason


def _import_missing():
    import stave_no_such_module_xyz  # noqa: F401


def _import_missing_name():
    from os import stave_no_such_name  # noqa: F401


def test_missing_python_modules_are_dependency_missing():
    info = classify(fx.raised(_import_missing))
    assert info.kind is ErrorKind.DEPENDENCY_MISSING and "stave_no_such_module_xyz" in info.reason
    assert classify(fx.raised(_import_missing_name)).kind is ErrorKind.DEPENDENCY_MISSING


# --- external tools ------------------------------------------------------------------


def _run_tool(code: str) -> subprocess.CalledProcessError:
    exc = fx.raised(subprocess.run, [sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert isinstance(exc, subprocess.CalledProcessError)
    return exc


@pytest.mark.parametrize(("stderr", "kind"), [
    ("boom: tool gave up", ErrorKind.DEPENDENCY_FAILED),
    ("Traceback (most recent call last):\\nMemoryError", ErrorKind.OUT_OF_MEMORY),
    ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", ErrorKind.OUT_OF_MEMORY),
    ("av_interleaved_write_frame(): No space left on device", ErrorKind.DISK_FULL),
    ("ModuleNotFoundError: No module named 'torch'", ErrorKind.DEPENDENCY_MISSING),
])
def test_failed_tool_is_classified_from_its_stderr(stderr: str, kind: ErrorKind):
    exc = _run_tool(f"import sys; sys.stderr.write('{stderr}\\n'); sys.exit(1)")
    info = classify(exc)
    assert info.kind is kind, info
    assert_readable(info)
    last = stderr.split("\\n")[-1]
    assert last[:40] in info.reason


def test_failed_tool_reason_names_the_tool_and_code():
    info = classify(_run_tool("import sys; sys.stderr.write('bad flag\\n'); sys.exit(4)"))
    assert info.kind is ErrorKind.DEPENDENCY_FAILED and info.retryable and info.counts_for_breaker
    assert "python" in info.reason and "code 4" in info.reason and "bad flag" in info.reason


@pytest.mark.skipif(not HAVE_FFMPEG, reason="ffmpeg not on PATH")
def test_ffmpeg_rejecting_a_file_is_an_input_error_not_a_tool_failure(tmp_path: Path):
    (tmp_path / "noise.m4a").write_bytes(np.random.default_rng(3).bytes(3000))
    exc = fx.raised(subprocess.run, ["ffmpeg", "-v", "error", "-i", str(tmp_path / "noise.m4a"), "-f", "null", "-"],
                    check=True, capture_output=True)
    assert_input(classify(exc), ErrorKind.INPUT_CORRUPT)


def test_missing_program_is_dependency_missing():
    info = classify(fx.raised(subprocess.run, ["stave-no-such-tool-xyz", "-i", "a.wav"]))
    assert info.kind is ErrorKind.DEPENDENCY_MISSING and "stave-no-such-tool-xyz" in info.reason


# --- dead workers ---------------------------------------------------------------------


def test_worker_killed_by_a_signal():
    segv = SPAWN.Process(target=fx.kill_self, args=(signal.SIGSEGV,))
    sleeper = SPAWN.Process(target=time.sleep, args=(30,))
    segv.start()
    sleeper.start()
    try:
        sleeper.kill()
        segv.join(30)
        sleeper.join(30)
    finally:
        for p in (segv, sleeper):
            if p.is_alive():
                p.kill()
                p.join(5)
    assert (segv.exitcode, sleeper.exitcode) == (-signal.SIGSEGV, -signal.SIGKILL)
    crashed = classify_exit(segv.exitcode, worker=True)
    killed = classify_exit(sleeper.exitcode, worker=True)
    assert crashed.kind is killed.kind is ErrorKind.WORKER_CRASH
    assert "SIGSEGV" in crashed.reason and crashed.retryable and crashed.counts_for_breaker
    assert "SIGKILL" in killed.reason and "possibly killed for memory" in killed.reason


@pytest.fixture(scope="module")
def pool():
    p = pebble.ProcessPool(max_workers=1, context=SPAWN)
    yield p
    p.stop()
    p.join(timeout=10)


def test_errors_that_cross_a_pebble_worker_keep_their_class(pool, tmp_path: Path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(4).bytes(4096))
    decode = fx.raised(pool.schedule(fx.read_audio, args=(str(tmp_path / "noise.wav"),)).result, timeout=60)
    assert_input(classify(decode), ErrorKind.INPUT_CORRUPT)
    program = fx.raised(pool.schedule(fx.run_program, args=("/opt/stave-no-such-tool",)).result, timeout=60)
    assert isinstance(program, FileNotFoundError)
    assert classify(program).kind is ErrorKind.DEPENDENCY_MISSING  # told apart by the remote traceback


def test_pebble_worker_that_exits_is_a_worker_crash_with_its_code(pool):
    exc = fx.raised(pool.schedule(os._exit, args=(3,)).result, timeout=60)
    assert isinstance(exc, pebble.ProcessExpired)
    info = classify(exc)
    assert info.kind is ErrorKind.WORKER_CRASH and "code 3" in info.reason


def test_broken_process_pool_is_a_worker_crash():
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=SPAWN) as ex:
        exc = fx.raised(ex.submit(os._exit, 3).result, timeout=60)
    assert isinstance(exc, concurrent.futures.process.BrokenProcessPool)
    assert classify(exc).kind is ErrorKind.WORKER_CRASH


@pytest.mark.parametrize(("kwargs", "kind", "words"), [
    ({"exitcode": -9}, ErrorKind.WORKER_CRASH, ["SIGKILL", "possibly killed for memory"]),
    ({"exitcode": 137}, ErrorKind.WORKER_CRASH, ["137", "SIGKILL", "possibly killed for memory"]),
    ({"exitcode": -6}, ErrorKind.WORKER_CRASH, ["SIGABRT"]),
    ({"exitcode": -7}, ErrorKind.WORKER_CRASH, ["SIGBUS"]),
    ({"exitcode": None, "signal_hint": "SEGV"}, ErrorKind.WORKER_CRASH, ["SIGSEGV"]),
    ({"exitcode": 1, "signal_hint": signal.SIGSEGV}, ErrorKind.WORKER_CRASH, ["SIGSEGV"]),
    ({"exitcode": -2}, ErrorKind.CANCELLED, ["SIGINT"]),
    ({"exitcode": -9, "stderr_tail": "x\nCUDA out of memory"}, ErrorKind.OUT_OF_MEMORY, ["CUDA out of memory"]),
    ({"exitcode": -11, "stderr_tail": "write: No space left on device"}, ErrorKind.DISK_FULL, ["No space left"]),
    ({"exitcode": 1}, ErrorKind.DEPENDENCY_FAILED, ["code 1"]),
    ({"exitcode": 3, "worker": True}, ErrorKind.WORKER_CRASH, ["worker", "code 3"]),
    ({"exitcode": 127, "who": "demucs"}, ErrorKind.DEPENDENCY_MISSING, ["demucs", "127"]),
    ({"exitcode": 1, "stderr_tail": "open out.wav: Permission denied"}, ErrorKind.PERMISSION, ["Permission denied"]),
    ({"exitcode": None}, ErrorKind.WORKER_CRASH, ["without an exit status"]),
    # a tool's own "not supported" is no verdict on the input unless the line names a file
    ({"exitcode": 1, "stderr_tail": "RuntimeError: operation not supported on this device", "who": "demucs"},
     ErrorKind.DEPENDENCY_FAILED, ["demucs", "not supported"]),
    ({"exitcode": 1, "stderr_tail": "[mov @ 0x1] moov atom not found\n/m/a b.m4a: Invalid data found when processing input", "who": "ffmpeg"},
     ErrorKind.INPUT_CORRUPT, ["a b.m4a"]),
])
def test_classify_exit(kwargs: dict, kind: ErrorKind, words: list[str]):
    exitcode = kwargs.pop("exitcode")
    info = classify_exit(exitcode, **kwargs)
    assert info.kind is kind, info
    for word in words:
        assert word in info.reason, (word, info.reason)
    assert_readable(info)


# --- what Stave raises itself, chains, and bugs -----------------------------------------------


def test_stave_errors_are_trusted():
    assert classify(InputError("bad", kind=ErrorKind.INPUT_UNSUPPORTED)).kind is ErrorKind.INPUT_UNSUPPORTED
    info = classify(DependencyFailed("demucs failed", suggestion="Try again later."))
    assert info.kind is ErrorKind.DEPENDENCY_FAILED and info.suggestion == "Try again later."
    assert classify(WorkerCrashed("worker died", exitcode=-11)).kind is ErrorKind.WORKER_CRASH
    assert classify(Cancelled("stop")).kind is ErrorKind.CANCELLED


def test_retry_error_is_unwrapped_to_the_last_attempt(tmp_path: Path):
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(5).bytes(4096))
    sleeps: list[float] = []
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(1),
                                 sleep=sleeps.append)
    exc = fx.raised(retrying, sf.read, str(tmp_path / "noise.wav"))
    assert isinstance(exc, tenacity.RetryError) and sleeps == [1, 1]
    info = classify(exc)
    assert_input(info, ErrorKind.INPUT_CORRUPT)
    assert "after 3 attempts" in info.reason and info.exc_type == "LibsndfileError"


def test_retry_error_on_an_unacceptable_result():
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(2), retry=tenacity.retry_if_result(lambda r: r is None),
                                 sleep=lambda s: None)
    info = classify(fx.raised(retrying, lambda: None))
    assert info.kind is ErrorKind.DEPENDENCY_FAILED and "2 attempts" in info.reason


def _load_wrapped(path: str) -> None:
    try:
        sf.read(path)
    except sf.LibsndfileError as exc:
        raise RuntimeError(f"could not load {path}") from exc


def test_explicit_cause_is_followed_only_past_bugs(tmp_path: Path):
    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(6).bytes(4096))
    assert_input(classify(fx.raised(_load_wrapped, str(tmp_path / "noise.flac"))), ErrorKind.INPUT_CORRUPT)
    try:
        try:
            {}["k"]
        except KeyError as exc:
            raise ValueError("bad value") from exc
    except ValueError as outer:
        info = classify(outer)
    assert info.kind is ErrorKind.BUG and info.reason == "ValueError: bad value"
    # a Stave error keeps its own kind whatever caused it
    wrapped = DependencyFailed("demucs failed")
    wrapped.__cause__ = MemoryError()
    assert classify(wrapped).kind is ErrorKind.DEPENDENCY_FAILED


def test_cause_cycles_do_not_hang():
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify(a).kind is ErrorKind.BUG


def test_anything_else_is_a_bug_with_a_one_line_reason():
    info = classify(fx.raised(lambda: {}["missing-key"]))
    assert info.kind is ErrorKind.BUG and info.reason == "KeyError: 'missing-key'"
    assert not info.retryable and not info.counts_for_breaker
    long = classify(ZeroDivisionError("first line\nsecond line " + "x" * 500))
    assert long.reason.startswith("ZeroDivisionError: first line second line")
    assert "\n" not in long.reason and len(long.reason) <= 200 and long.reason.endswith("…")
    assert classify(RuntimeError("something unrelated to audio")).kind is ErrorKind.BUG
