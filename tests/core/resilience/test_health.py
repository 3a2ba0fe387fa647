"""The health report: real checks on this machine, and each failure mode made real."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from core.ffmpeg import find_ffmpeg, parse_ffmpeg_version
from core.resilience.health import (
    CheckOutcome,
    HealthCheck,
    HealthRegistry,
    HealthReport,
    HealthResult,
    HealthStatus,
    configure_numba_cache,
    default_numba_cache_dir,
    default_registry,
)
from core.resilience.health_checks import (
    BASIC_PITCH_MODEL,
    DEMUCS_FALLBACK,
    DEMUCS_INSTALL_HINT,
    DEMUCS_WEIGHTS_HINT,
    FFMPEG_UNLOCKS,
    HealthThresholds,
    ffmpeg_check,
    find_demucs_weights,
    memory_check,
    output_folder_check,
    probe_basic_pitch,
    probe_demucs,
    probe_librosa,
    probe_output_folder,
    probe_soundfile,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake ffmpeg is a shell script")


def _ok() -> CheckOutcome:
    return CheckOutcome(HealthStatus.OK, version="1.0", details="fine")


# --- the real report on this machine --------------------------------------------------


@pytest.fixture(scope="module")
def machine_report(tmp_path_factory) -> HealthReport:
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NUMBA_CACHE_DIR", str(tmp_path_factory.mktemp("numba")))
        return default_registry(out_dir=out).run_all()


def test_machine_report_has_every_check_and_is_quick(machine_report):
    names = [r.name for r in machine_report.results]
    assert names == default_registry(out_dir="x").names()
    assert {"soundfile", "librosa", "pyloudnorm", "ffmpeg", "demucs", "basic-pitch", "memory",
            "worker-process", "output-folder"} <= set(names)
    assert 0 < machine_report.duration_s < 30
    assert machine_report.ok, machine_report.format_text()


def test_machine_soundfile_decodes_mp3(machine_report):
    r = machine_report.get("soundfile")
    assert r.status is HealthStatus.OK, r.details
    assert "MP3" in r.extra["formats"] and r.extra["mp3_verified"] is True
    assert "MP3 decode verified" in r.details
    assert r.required


def test_machine_librosa_numba_and_loudness(machine_report):
    import librosa

    r = machine_report.get("librosa")
    assert r.status is HealthStatus.OK, r.details
    assert r.version == librosa.__version__
    assert r.extra["numba"] and "(writable)" in r.details
    loud = machine_report.get("pyloudnorm")
    assert loud.status is HealthStatus.OK and "LUFS" in loud.details


def test_machine_basic_pitch_found_without_tensorflow(machine_report):
    r = machine_report.get("basic-pitch")
    assert r.status is HealthStatus.OK, r.details
    assert r.version == "0.4.0"
    assert r.required is False
    assert "tensorflow" not in sys.modules


@pytest.mark.skipif(importlib.util.find_spec("demucs") is not None, reason="demucs is installed here")
def test_machine_demucs_is_honestly_missing(machine_report):
    r = machine_report.get("demucs")
    assert r.status is HealthStatus.MISSING
    assert r.required is False
    assert r.install_hint == DEMUCS_INSTALL_HINT
    assert "fallback" in r.details


def test_machine_ffmpeg_matches_what_is_installed(machine_report):
    r = machine_report.get("ffmpeg")
    location = find_ffmpeg()
    if location is None:
        assert r.status is HealthStatus.MISSING
    else:
        assert r.status is HealthStatus.OK, r.details
        assert r.extra["path"] == str(location.path) and r.extra["source"] == location.source
        assert r.version == parse_ffmpeg_version(f"ffmpeg version {r.version}")


def test_machine_resources_and_worker(machine_report):
    worker = machine_report.get("worker-process")
    assert worker.status is HealthStatus.OK, worker.details
    assert 0 < worker.extra["start_latency_s"] < 30
    folder = machine_report.get("output-folder")
    assert folder.status in (HealthStatus.OK, HealthStatus.DEGRADED), folder.details
    assert folder.extra["free_bytes"] > 0
    assert machine_report.get("memory").extra["available_bytes"] > 0


# --- ffmpeg ------------------------------------------------------------------------


def test_ffmpeg_missing_without_path_or_imageio(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    registry = HealthRegistry()
    registry.register(ffmpeg_check(timeout_s=5))
    registry.register(HealthCheck("other", _ok))
    report = registry.run_all()
    r = report.get("ffmpeg")
    assert r.status is HealthStatus.MISSING
    assert r.required is False
    assert r.install_hint == "pip install imageio-ffmpeg"
    assert r.unlocks == FFMPEG_UNLOCKS
    assert report.get("other").status is HealthStatus.OK
    assert report.ok  # ffmpeg is optional


def _fake_ffmpeg(folder: Path, body: str) -> Path:
    exe = folder / "ffmpeg"
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return exe


@posix_only
def test_fake_ffmpeg_on_path_reports_its_version(tmp_path, monkeypatch):
    exe = _fake_ffmpeg(tmp_path, 'echo "ffmpeg version 9.9.9-stave Copyright (c) 2000-2024 the FFmpeg developers"')
    monkeypatch.setenv("PATH", str(tmp_path))
    r = _single(ffmpeg_check(timeout_s=5))
    assert r.status is HealthStatus.OK, r.details
    assert r.version == "9.9.9-stave"
    assert r.extra == {"path": str(exe), "source": "PATH"}
    assert "(from PATH)" in r.details


def _single(check: HealthCheck) -> HealthResult:
    registry = HealthRegistry()
    registry.register(check)
    return registry.run(check.name)


@posix_only
def test_hanging_ffmpeg_times_out_and_is_killed(tmp_path, monkeypatch):
    pidfile = tmp_path / "pid"
    _fake_ffmpeg(tmp_path, f'echo $$ > "{pidfile}"\nexec {shutil.which("sleep")} 30')
    monkeypatch.setenv("PATH", str(tmp_path))
    start = time.monotonic()
    r = _single(ffmpeg_check(timeout_s=1.0))
    assert time.monotonic() - start < 1.5
    assert r.status is HealthStatus.ERROR
    assert "timed out" in r.details
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the hung process is gone


@posix_only
def test_failing_ffmpeg_is_an_error(tmp_path, monkeypatch):
    _fake_ffmpeg(tmp_path, "echo 'cannot load libavcodec' >&2; exit 3")
    monkeypatch.setenv("PATH", str(tmp_path))
    r = _single(ffmpeg_check(timeout_s=5))
    assert r.status is HealthStatus.ERROR
    assert "code 3" in r.details and "libavcodec" in r.details


def test_parse_ffmpeg_version():
    assert parse_ffmpeg_version("ffmpeg version 6.1.1-3ubuntu5 Copyright (c)") == "6.1.1-3ubuntu5"
    assert parse_ffmpeg_version("ffmpeg version n7.0 Copyright") == "n7.0"
    assert parse_ffmpeg_version("something else") is None


# --- the registry: timeouts, exceptions, output folder -----------------------------------


def test_hung_check_times_out_and_report_completes():
    release = threading.Event()
    registry = HealthRegistry()
    registry.register(HealthCheck("hangs", lambda: (release.wait(10), _ok())[1], timeout_s=0.2))
    registry.register(HealthCheck("fine", _ok))
    try:
        start = time.monotonic()
        report = registry.run_all()
        assert time.monotonic() - start < 2
    finally:
        release.set()
    hung = report.get("hangs")
    assert hung.status is HealthStatus.ERROR
    assert hung.details == "timed out after 0.2s"
    assert report.get("fine").status is HealthStatus.OK
    assert not report.ok and report.status is HealthStatus.ERROR


def test_raising_check_is_an_error_with_the_reason():
    def boom() -> CheckOutcome:
        raise ValueError("libfoo.so: cannot open shared object")

    def absent() -> CheckOutcome:
        raise ModuleNotFoundError("No module named 'foo'", name="foo")

    registry = HealthRegistry()
    registry.register(HealthCheck("boom", boom, install_hint="pip install foo"))
    registry.register(HealthCheck("absent", absent, required=False))
    report = registry.run_all()
    r = report.get("boom")
    assert r.status is HealthStatus.ERROR
    assert "libfoo.so: cannot open shared object" in r.details
    assert r.install_hint == "pip install foo"
    assert report.get("absent").status is HealthStatus.MISSING
    assert "foo" in report.get("absent").details


def test_output_folder_under_a_file_is_an_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    registry = HealthRegistry()
    registry.register(output_folder_check())
    r = registry.run_all(out_dir=blocker / "out").get("output-folder")
    assert r.status is HealthStatus.ERROR
    assert "is a file" in r.details
    assert r.required


def test_output_folder_only_checked_when_given(tmp_path):
    registry = HealthRegistry()
    registry.register(output_folder_check())
    registry.register(HealthCheck("fine", _ok))
    assert [r.name for r in registry.run_all().results] == ["fine"]
    ok = registry.run_all(out_dir=tmp_path).get("output-folder")
    assert ok.status is HealthStatus.OK and "writable" in ok.details
    assert list(tmp_path.iterdir()) == []  # the probe file was removed


def test_output_folder_space_thresholds(tmp_path):
    low = HealthThresholds(disk_warn_bytes=2**62, disk_error_bytes=1)
    assert probe_output_folder(tmp_path, low).status is HealthStatus.DEGRADED
    none = HealthThresholds(disk_warn_bytes=2**62, disk_error_bytes=2**62)
    r = probe_output_folder(tmp_path / "new", none)
    assert r.status is HealthStatus.ERROR and "free" in r.details and "will be created" in r.details


def test_memory_degraded_below_threshold():
    r = _single(memory_check(HealthThresholds(memory_warn_bytes=2**62)))
    assert r.status is HealthStatus.DEGRADED and "available" in r.details


def test_thresholds_validate():
    with pytest.raises(ValueError, match="disk_warn_bytes"):
        HealthThresholds(disk_warn_bytes=0)
    with pytest.raises(ValueError, match="disk_error_bytes"):
        HealthThresholds(disk_warn_bytes=10, disk_error_bytes=20)


def test_check_and_registry_validate():
    with pytest.raises(ValueError, match="timeout_s"):
        HealthCheck("x", _ok, timeout_s=0)
    registry = HealthRegistry()
    registry.register(HealthCheck("x", _ok))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(HealthCheck("x", _ok))


def test_results_carry_the_injected_wall_time(clock):
    registry = HealthRegistry(clock=clock)
    registry.register(HealthCheck("fine", _ok, unlocks="everything", required=False))
    report = registry.run_all()
    r = report.get("fine")
    assert r.checked_at == clock.wall() and report.created_at == clock.wall()
    d = report.to_dict()
    assert d["checks"][0]["checked_at"] == "2023-11-14T22:13:20+00:00"
    assert d["checks"][0]["unlocks"] == "everything" and d["checks"][0]["required"] is False
    assert HealthReport.from_dict(json.loads(report.to_json())) == report


# --- individual probes with their dependency faked --------------------------------------------


def test_soundfile_without_mp3_is_degraded(monkeypatch):
    import soundfile

    real = soundfile.available_formats()
    monkeypatch.setattr(soundfile, "available_formats", lambda: {k: v for k, v in real.items() if k != "MP3"})
    r = probe_soundfile()
    assert r.status is HealthStatus.DEGRADED
    assert "no MP3 support" in r.details and r.install_hint == "pip install -U soundfile"


def test_librosa_reports_numba_cache_dir(tmp_path):
    unset = probe_librosa({})
    assert unset.status is HealthStatus.DEGRADED and "NUMBA_CACHE_DIR is not set" in unset.details
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = probe_librosa({"NUMBA_CACHE_DIR": str(blocker / "numba")})
    assert bad.status is HealthStatus.DEGRADED and "not writable" in bad.details
    good = probe_librosa({"NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    assert good.status is HealthStatus.OK and good.extra["numba_cache_dir"] == str(tmp_path / "numba")


def test_configure_numba_cache_only_when_unset():
    env: dict[str, str] = {}
    assert configure_numba_cache(env) == str(default_numba_cache_dir())
    assert env["NUMBA_CACHE_DIR"].endswith("numba")
    env = {"NUMBA_CACHE_DIR": "/elsewhere"}
    assert configure_numba_cache(env) == "/elsewhere"


def _fake_demucs(monkeypatch, hub_dir: Path) -> None:
    demucs = types.ModuleType("demucs")
    demucs.__version__ = "4.0.1"
    torch = types.ModuleType("torch")
    torch.__version__ = "2.3.0"
    torch.hub = types.SimpleNamespace(get_dir=lambda: str(hub_dir))
    monkeypatch.setitem(sys.modules, "demucs", demucs)
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_demucs_without_weights_says_so(tmp_path, monkeypatch):
    _fake_demucs(monkeypatch, tmp_path / "hub")
    r = probe_demucs()
    assert r.status is HealthStatus.DEGRADED
    assert r.details.startswith(DEMUCS_FALLBACK)
    assert r.install_hint == DEMUCS_WEIGHTS_HINT
    assert r.version == "4.0.1" and r.extra["torch"] == "2.3.0"


def test_demucs_with_weights_is_ok(tmp_path, monkeypatch):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "955717e8-8726e21a.th").write_bytes(b"weights")
    (checkpoints / "unrelated-00000000.th").write_bytes(b"x")
    _fake_demucs(monkeypatch, tmp_path / "hub")
    r = probe_demucs()
    assert r.status is HealthStatus.OK
    assert r.extra["weights"] == [str(checkpoints / "955717e8-8726e21a.th")]
    assert find_demucs_weights(checkpoints, ("955717e8", "deadbeef")) == []  # a bag needs every model


def test_demucs_installed_without_torch_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "demucs", types.ModuleType("demucs"))
    monkeypatch.setitem(sys.modules, "torch", None)
    r = probe_demucs()
    assert r.status is HealthStatus.MISSING and "torch is not" in r.details


def test_basic_pitch_probe(tmp_path):
    missing = probe_basic_pitch(find_dir=lambda: None)
    assert missing.status is HealthStatus.MISSING and "pYIN" in missing.details
    broken = probe_basic_pitch(tmp_path)
    assert broken.status is HealthStatus.ERROR and "ONNX model is missing" in broken.details
    model = tmp_path / BASIC_PITCH_MODEL
    model.parent.mkdir(parents=True)
    model.write_bytes(b"onnx")
    ok = probe_basic_pitch(tmp_path)
    assert ok.status is HealthStatus.OK and ok.extra["model"] == str(model)


# --- the text a person reads ---------------------------------------------------------------


def _result(name: str, status: HealthStatus, required: bool, hint: str = "") -> HealthResult:
    return HealthResult(name=name, status=status, required=required, install_hint=hint, details=f"{name} details")


def test_text_lists_missing_required_first_with_hint():
    report = HealthReport(
        results=(
            _result("good", HealthStatus.OK, True),
            _result("extra", HealthStatus.MISSING, False, "pip install extra"),
            _result("needed", HealthStatus.MISSING, True, "pip install needed"),
        ),
        created_at=1_700_000_000.0,
    )
    text = report.format_text()
    lines = text.splitlines()
    assert lines[0].startswith("Stave health: NOT READY")
    assert text.index("needed") < text.index("extra") < text.index("good")
    needed = next(i for i, line in enumerate(lines) if "needed details" in line)
    assert "fix:" in lines[needed + 1] and "pip install needed" in lines[needed + 1]
    # columns line up: every status starts at the same offset
    rows = [line for line in lines if "details" in line]
    assert len({line.index(" missing ") if " missing " in line else line.index(" ok ") for line in rows}) == 1
    assert report.status is HealthStatus.MISSING and not report.ok


def test_text_when_all_is_well():
    report = HealthReport(results=(_result("good", HealthStatus.OK, True),), created_at=0.0)
    assert report.format_text().startswith("Stave health: all checks ok")
    assert report.ok and report.status is HealthStatus.OK


def test_no_module_level_registry():
    a, b = default_registry(), default_registry()
    assert a is not b
    a.register(HealthCheck("only-in-a", _ok))
    assert "only-in-a" not in b.names()
