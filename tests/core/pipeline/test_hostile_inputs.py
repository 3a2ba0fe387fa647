"""Hostile and odd files: each either decodes or fails with a classified input error, never a bug or a crash."""

from __future__ import annotations

import glob
import os
import struct

import numpy as np
import pytest
import soundfile as sf
import scipy

from core.pipeline.config import PipelineConfig
from core.pipeline.ingest import ingest
from core.resilience.errors import ErrorKind, classify

SCIPY_WAVS = sorted(glob.glob(os.path.join(os.path.dirname(scipy.__file__), "io", "tests", "data", "*.wav")))
CONFIG = PipelineConfig(min_duration_s=0.0)


def _outcome(path) -> str:
    try:
        result = ingest(path, CONFIG)
    except Exception as exc:  # noqa: BLE001 - the point is to see what every failure becomes
        info = classify(exc)
        assert info.kind is not ErrorKind.BUG, f"{os.path.basename(path)}: unclassified {type(exc).__name__}: {exc}"
        assert info.reason and info.suggestion
        return info.kind.value
    assert result.audio.dtype == np.float32 and result.audio.ndim == 2
    assert np.all(np.isfinite(result.audio))
    return "ok"


@pytest.mark.skipif(not SCIPY_WAVS, reason="scipy's WAV test files are not installed")
@pytest.mark.parametrize("path", SCIPY_WAVS, ids=[os.path.basename(p) for p in SCIPY_WAVS])
def test_scipy_wav_zoo(path):
    """Odd bit depths, RF64, WAVEX, big-endian, early EOF, inconsistent headers."""
    _outcome(path)


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _wav_header(frames_claimed: int, channels=1, sr=44100, bits=16) -> bytes:
    block = channels * bits // 8
    data_size = frames_claimed * block
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sr,
            sr * block, block, bits) + b"data" + struct.pack("<I", data_size))


def test_generated_hostile_files(tmp_path):
    rng = np.random.default_rng(7)
    good = rng.standard_normal(44100).astype(np.float32) * 0.1
    cases = {
        "empty.wav": b"",
        "header_only.wav": _wav_header(44100),
        "header_claims_gigabytes.wav": _wav_header(2**30) + good.astype("<i2").tobytes()[:1000],
        "random.wav": rng.bytes(4096),
        "zeros.flac": bytes(5000),
        "text.mp3": b"ID3 this is not an mp3 file at all\n" * 40,
        "riff_not_wave.wav": b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(100),
        "html.ogg": b"<html><body>404 Not Found</body></html>",
    }
    outcomes = {name: _outcome(_write(tmp_path / name, data)) for name, data in cases.items()}
    assert outcomes["empty.wav"] == "input-empty"
    assert outcomes["random.wav"] in ("input-corrupt", "input-unsupported")
    assert outcomes["header_claims_gigabytes.wav"] == "input-corrupt"
    assert all(v != "ok" for k, v in outcomes.items()), outcomes


@pytest.mark.parametrize("name", ["ünïcødé — 名前.wav", "spaces  and\ttab.wav", "-starts-with-dash.wav",
                                  "new\nline.wav", "..hidden..wav", "a" * 200 + ".wav"])
def test_hostile_names_decode(tmp_path, name):
    path = tmp_path / name
    sf.write(path, np.sin(np.linspace(0, 2000, 88200)).astype(np.float32) * 0.3, 44100)
    assert _outcome(str(path)) == "ok"


def test_nan_samples_are_input_corrupt(tmp_path):
    y = np.ones(44100, dtype=np.float32) * 0.1
    y[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, y, 44100, subtype="FLOAT")
    assert _outcome(str(path)) == "input-corrupt"
