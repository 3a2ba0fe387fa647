"""Preflight: every blocker of a batch (files, output drive, memory) in one quick report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import core.engine.preflight as pf
from core.engine.preflight import (PreflightLimits, estimate_disk_bytes, estimate_peak_memory, preflight)
from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ProbeInfo
from core.resilience.errors import ErrorKind

Usage = namedtuple("Usage", "total used free")
PLENTY_DISK = lambda _path: Usage(10**13, 0, 10**12)  # noqa: E731
PLENTY_MEMORY = lambda: 64 << 30  # noqa: E731
CONFIG = PipelineConfig()
HAVE_FFMPEG = shutil.which("ffmpeg") is not None


def wav(path: Path, seconds: float, sr: int = 8000, channels: int = 1, seed: int = 0, **kw) -> str:
    rng = np.random.default_rng(seed)
    data = (0.1 * rng.standard_normal((int(seconds * sr), channels))).astype(np.float32)
    sf.write(path, data, sr, **kw)
    return str(path)


def truncate_to_half(path: str) -> str:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    return path


def fake_m4a(path: Path) -> str:
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(range(256)) * 8)
    return str(path)


@pytest.fixture
def no_ffmpeg(monkeypatch, tmp_path):
    """Neither PATH nor the locator (PATH, imageio-ffmpeg) finds an ffmpeg."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(pf, "find_ffmpeg", lambda *a, **k: None)


def run(paths, out, **kw):
    kw.setdefault("disk_usage", PLENTY_DISK)
    kw.setdefault("available_memory", PLENTY_MEMORY)
    return preflight(paths, out, kw.pop("config", CONFIG), **kw)


# --- files ------------------------------------------------------------------------------


def test_good_files_pass_and_the_output_folder_is_created(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    paths = [wav(src / "a.wav", 3), wav(src / "b.flac", 5, sr=22050, channels=2), wav(src / "c.wav", 4)]
    out = tmp_path / "out" / "nested"
    report = run(paths, out)
    assert report.ok, report.format_text()
    assert (report.files_total, report.files_ok, report.files_unchecked) == (3, 3, 0)
    assert report.total_duration_s == pytest.approx(12.0)
    assert report.longest_path == paths[1] and report.longest_duration_s == pytest.approx(5.0)
    assert out.is_dir() and list(out.iterdir()) == []  # the write test left nothing behind
    assert report.estimates.disk_needed_bytes >= sum(estimate_disk_bytes(ProbeInfo(
        d, 8000, 1, 0, "", "", "", 0), CONFIG) for d in (3, 4))
    assert report.estimates.disk_free_bytes == 10**12 and not report.estimates.disk_extrapolated
    d = json.loads(json.dumps(report.to_dict()))
    assert d["ok"] is True and d["blockers"] == [] and d["longest_path"] == paths[1]
    assert "no blockers" in report.format_text()


def test_every_blocker_is_reported_at_once(tmp_path, no_ffmpeg):
    src = tmp_path / "in"
    src.mkdir()
    good = wav(src / "good.wav", 3)
    long = wav(src / "long.wav", 40)
    truncated = truncate_to_half(wav(src / "truncated.wav", 6))
    text = src / "notes.wav"
    text.write_text("this is a text file, not audio\n" * 20)
    m4a = fake_m4a(src / "song.m4a")
    paths = [good, truncated, str(text), m4a, long]

    report = run(paths, tmp_path / "out", disk_usage=lambda _p: Usage(10**9, 10**9, 1000),
                 available_memory=lambda: 50 << 20)

    assert not report.ok
    by_path = {p.path: p for p in report.blockers if p.area == "files"}
    assert set(by_path) == {truncated, str(text), m4a}
    assert by_path[truncated].kind is ErrorKind.INPUT_CORRUPT and "header promises" in by_path[truncated].reason
    assert by_path[str(text)].kind is ErrorKind.INPUT_CORRUPT
    assert by_path[m4a].kind is ErrorKind.DEPENDENCY_MISSING and "ffmpeg" in by_path[m4a].reason
    assert {p.area for p in report.blockers} == {"files", "disk", "memory"}
    assert report.files_ok == 2 and report.files_unchecked == 0
    assert report.blocked_paths == [truncated, str(text), m4a]
    text_out = report.format_text()
    for needle in (truncated, str(text), m4a, "Files", "Output drive", "Memory", "Install ffmpeg",
                   f"{len(report.blockers)} blockers"):
        assert needle in text_out


def test_a_truncated_flac_is_caught_by_reading_its_end(tmp_path):
    path = truncate_to_half(wav(tmp_path / "cut.flac", 8))
    report = run([path], tmp_path / "out")
    [problem] = report.blockers
    assert problem.path == path and problem.kind is ErrorKind.INPUT_CORRUPT


def test_short_and_empty_files_are_warnings_not_blockers(tmp_path):
    short = wav(tmp_path / "short.wav", 0.5)
    empty = tmp_path / "empty.wav"
    empty.touch()
    report = run([short, str(empty)], tmp_path / "out")
    assert report.ok and report.files_ok == 0
    assert {(p.path, p.kind) for p in report.warnings} == {(short, ErrorKind.INPUT_EMPTY),
                                                          (str(empty), ErrorKind.INPUT_EMPTY)}
    assert "too short" in next(p.reason for p in report.warnings if p.path == short)


@pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg")
def test_ffmpeg_formats_decode_their_start_through_ffmpeg(tmp_path):
    real = tmp_path / "real.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=3",
                    "-c:a", "aac", str(real)], check=True, timeout=30)
    broken = fake_m4a(tmp_path / "broken.m4a")
    report = run([str(real), broken], tmp_path / "out", ffmpeg=shutil.which("ffmpeg"))
    assert report.files_ok == 1 and report.total_duration_s == pytest.approx(3.0, abs=0.1)
    [problem] = report.blockers
    assert problem.path == broken and problem.kind in (ErrorKind.INPUT_CORRUPT, ErrorKind.INPUT_UNSUPPORTED)


# --- time budget ----------------------------------------------------------------------------


def test_a_tiny_budget_leaves_files_unchecked_and_returns_promptly(tmp_path):
    first = wav(tmp_path / "f000.wav", 2.5)
    paths = [first] + [shutil.copyfile(first, tmp_path / f"f{i:03d}.wav") for i in range(1, 150)]
    paths = [str(p) for p in paths]
    started = time.monotonic()
    report = run(paths, tmp_path / "out", time_budget_s=0.001)
    assert time.monotonic() - started < 2.0
    assert report.files_unchecked > 0
    assert report.files_ok + report.files_unchecked == 150
    assert report.estimates.disk_extrapolated and report.estimates.disk_needed_bytes > 0
    [note] = [p for p in report.warnings if p.kind is ErrorKind.TIMEOUT]
    assert f"{report.files_unchecked} of 150 files were not checked" in note.reason


def test_checks_still_running_at_the_deadline_are_abandoned(tmp_path, monkeypatch):
    release = threading.Event()
    real_probe = pf.probe

    def stuck_probe(path, **kw):
        release.wait(10)  # a network drive that does not answer
        return real_probe(path, **kw)

    monkeypatch.setattr(pf, "probe", stuck_probe)
    paths = [wav(tmp_path / f"f{i}.wav", 3, seed=i) for i in range(6)]
    try:
        started = time.monotonic()
        report = run(paths, tmp_path / "out", time_budget_s=0.2)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert 0.2 <= elapsed < 1.5
    assert report.files_unchecked == 6 and report.files_ok == 0 and report.ok
    for t in threading.enumerate():  # released, the abandoned checks end without finishing their work
        if t.name.startswith("stave-preflight"):
            t.join(5)
            assert not t.is_alive()


# --- output drive ---------------------------------------------------------------------------


def test_too_little_free_space_is_a_disk_blocker(tmp_path):
    path = wav(tmp_path / "a.wav", 3)
    seen = []

    def tiny(p):
        seen.append(p)
        return Usage(10**9, 10**9 - 4096, 4096)

    report = run([path], tmp_path / "out", disk_usage=tiny)
    [problem] = report.blockers
    assert (problem.area, problem.kind, problem.path) == ("disk", ErrorKind.DISK_FULL, str(tmp_path / "out"))
    assert "4.0 KiB free" in problem.reason
    assert seen == [str(tmp_path / "out")]


def test_tight_space_is_only_a_warning(tmp_path):
    path = wav(tmp_path / "a.wav", 3)
    probe_report = run([path], tmp_path / "out")
    needed = probe_report.estimates.disk_needed_bytes
    report = run([path], tmp_path / "out", disk_usage=lambda _p: Usage(10**9, 0, needed + 1024))
    assert report.ok
    assert [p.kind for p in report.warnings] == [ErrorKind.DISK_FULL]


def test_an_output_folder_under_a_regular_file_is_a_blocker(tmp_path):
    path = wav(tmp_path / "a.wav", 3)
    blocker_file = tmp_path / "not-a-folder"
    blocker_file.write_text("x")
    report = run([path], blocker_file / "out")
    [problem] = report.blockers
    assert (problem.area, problem.kind) == ("disk", ErrorKind.PERMISSION)
    assert str(blocker_file) in problem.reason
    assert report.files_ok == 1  # the files were still checked


def test_an_output_folder_that_refuses_files_is_a_blocker(tmp_path, monkeypatch):
    real_mkstemp = pf.tempfile.mkstemp

    def refuse(*args, prefix=None, **kw):
        if prefix == ".stave-preflight-":
            raise PermissionError(13, "Permission denied", str(tmp_path / "out" / ".stave-preflight-x"))
        return real_mkstemp(*args, prefix=prefix, **kw)

    monkeypatch.setattr(pf.tempfile, "mkstemp", refuse)
    report = run([], tmp_path / "out")
    [problem] = report.blockers
    assert (problem.area, problem.kind) == ("disk", ErrorKind.PERMISSION)
    assert "cannot write to the output folder" in problem.reason and "Permission denied" in problem.reason


# --- memory -----------------------------------------------------------------------------------


def test_too_little_memory_names_the_longest_file(tmp_path):
    paths = [wav(tmp_path / "short.wav", 3), wav(tmp_path / "long.wav", 60, channels=2)]
    report = run(paths, tmp_path / "out", available_memory=lambda: 100 << 20)
    [problem] = report.blockers
    assert (problem.area, problem.kind, problem.path) == ("memory", ErrorKind.OUT_OF_MEMORY, paths[1])
    assert "long.wav" in problem.reason and "long.wav" in problem.suggestion  # even one worker cannot run it
    assert "long.wav" in report.format_text()


def test_memory_for_one_worker_but_not_four_suggests_fewer_workers(tmp_path):
    paths = [wav(tmp_path / f"s{i}.wav", 30, channels=2, seed=i) for i in range(4)]
    limits = PreflightLimits()
    one = estimate_peak_memory(ProbeInfo(30.0, 8000, 2, 0, "", "", "", 0), CONFIG) + limits.worker_base_bytes
    report = run(paths, tmp_path / "out", workers=4, available_memory=lambda: 2 * one + 1)
    [problem] = report.blockers
    assert problem.area == "memory" and "--workers 2" in problem.suggestion
    assert report.estimates.memory_needed_bytes == 4 * one
    assert run(paths, tmp_path / "out", workers=2, available_memory=lambda: 2 * one + 1).ok


# --- estimates and settings -----------------------------------------------------------------


def test_disk_estimate_per_minute_follows_the_documented_formula():
    minute = ProbeInfo(60.0, 44100, 2, 44100 * 60, "WAV", "PCM_16", "soundfile", 0)
    base = estimate_disk_bytes(minute, CONFIG)
    frames = 60 * 22050 / 512
    assert base == pytest.approx(60 * 22050 * 4 + 2 * frames * (20 + 22) * 4 + 256 * 1024, abs=1)
    native = 60 * 44100 * 2 * 4
    stems = estimate_disk_bytes(minute, PipelineConfig(separate=True))
    kept = estimate_disk_bytes(minute, PipelineConfig(separate=True, keep_stems=True))
    assert stems - base == pytest.approx(native + 4 * native, abs=1)
    assert kept - stems == pytest.approx(4 * native, abs=1)


def test_memory_estimate_counts_audio_copies_and_the_stft():
    minute = ProbeInfo(60.0, 44100, 2, 44100 * 60, "WAV", "PCM_16", "soundfile", 0)
    n, a = 60 * 44100, 60 * 22050
    stft = 1025 * (a / 512 + 1) * 12
    expected = 2 * n * 4 + n * 4 + 3 * a * 4 + stft
    assert estimate_peak_memory(minute, CONFIG) == pytest.approx(expected, abs=1)
    assert estimate_peak_memory(minute, PipelineConfig(separate=True)) > expected + 4 * 2 * n * 4


def test_bad_settings_are_refused_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="threads"):
        PreflightLimits(threads=0)
    with pytest.raises(ValueError, match="memory_warn_ratio"):
        PreflightLimits(memory_warn_ratio=1.5)
    with pytest.raises(ValueError, match="workers"):
        preflight([], tmp_path, CONFIG, workers=0)
    with pytest.raises(ValueError, match="time_budget_s"):
        preflight([], tmp_path, CONFIG, time_budget_s=-1)


@pytest.mark.parametrize("with_ffmpeg", [pytest.param(True, marks=pytest.mark.skipif(not HAVE_FFMPEG,
                                                                                    reason="needs ffmpeg")), False])
def test_a_flac_without_its_length_passes_and_asks_for_no_absurd_resources(tmp_path, request, with_ffmpeg):
    from tests.core.pipeline.test_ingest import unknown_length_flac

    if not with_ffmpeg:
        request.getfixturevalue("no_ffmpeg")
    path = str(unknown_length_flac(tmp_path / "piped.flac"))
    short = str(unknown_length_flac(tmp_path / "short.flac", seconds=0.5))  # shorter than the 2 s read at once
    report = run([path, short], tmp_path / "out", disk_usage=lambda _p: Usage(10**11, 0, 10**10),
                 available_memory=lambda: 8 << 30)
    assert report.blockers == [] and report.warnings == []  # was: thousands of hours, disk and memory blockers


def test_a_damaged_sample_rate_is_the_files_problem_not_a_memory_blocker(tmp_path):
    import struct

    path = tmp_path / "one_hz.wav"
    wav(path, 4.0, sr=8000)
    data = bytearray(path.read_bytes())
    data[24:28], data[28:32] = struct.pack("<I", 1), struct.pack("<I", 4)  # 32,000 frames at "1 Hz": 9 hours
    path.write_bytes(bytes(data))
    good = wav(tmp_path / "good.wav", 4.0)
    report = run([str(path), good], tmp_path / "out", available_memory=lambda: 2 << 30)
    [problem] = report.blockers
    assert problem.path == str(path) and problem.kind is ErrorKind.INPUT_CORRUPT and "1 Hz" in problem.reason


@pytest.mark.skipif(not HAVE_FFMPEG, reason="needs ffmpeg to encode")
def test_an_mp3_whose_length_libsndfile_estimates_is_not_called_truncated(tmp_path):
    """An MP3 written through a pipe has no length header: libsndfile's estimate runs a little long. The run
    allows that slack and so does preflight (it called the file damaged, then the run analysed it)."""
    src = wav(tmp_path / "src.wav", 8.0, sr=44100)
    piped = tmp_path / "piped.mp3"
    with open(piped, "wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", src, "-c:a", "libmp3lame", "-b:a", "128k",
                        "-f", "mp3", "-"], stdout=out, check=True)
    whole = tmp_path / "whole.mp3"  # written to a file: its header (Xing/LAME) gives the real length
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", src, "-c:a", "libmp3lame", "-b:a", "128k",
                    str(whole)], check=True)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    report = run([str(piped), str(whole), str(cut)], tmp_path / "out")
    assert [p.path for p in report.blockers] == [str(cut)]  # a real truncation is still found
