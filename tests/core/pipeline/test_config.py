import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from core.pipeline.config import STAGES, ConfigError, PipelineConfig

REPO = Path(__file__).resolve().parents[3]


def test_defaults_are_valid_and_documented_values():
    c = PipelineConfig()
    assert (c.analysis_sr, c.hop_length, c.n_fft, c.n_mfcc) == (22050, 512, 2048, 20)
    assert c.time_signature == (4, 4)
    assert c.min_duration_s == 2.0 and c.silence_threshold_dbfs == -60.0
    assert c.trim_silence is True and c.normalize_loudness is False and c.target_lufs == -23.0
    assert c.demucs_model == "htdemucs"
    assert dict(c.stage_timeouts) == {s: 0.0 for s in STAGES}
    assert c.advisories() == []


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("analysis_sr", 0, "between"),
        ("analysis_sr", 22050.0, "integer"),
        ("hop_length", -1, "between"),
        ("n_fft", True, "integer"),
        ("n_mfcc", 0, "between"),
        ("time_signature_numerator", 0, "between"),
        ("time_signature_denominator", 3, "one of"),
        ("min_duration_s", -1, ">= 0"),
        ("min_duration_s", "2", "number"),
        ("silence_threshold_dbfs", 0, "below 0"),
        ("silence_threshold_dbfs", float("nan"), "finite"),
        ("target_lufs", 5, "LUFS"),
        ("normalize_loudness", 1, "true or false"),
        ("trim_silence", "yes", "true or false"),
        ("separate", None, "true or false"),
        ("separation_backend", "spleeter", "one of"),
        ("transcription_backend", "crepe", "one of"),
        ("demucs_model", "../x", "model name"),
        ("demucs_executable", "/no/such/demucs", "no such file"),
        ("ffmpeg_path", 42, "path"),
        ("stage_timeouts", {"analyse": 10}, "unknown stage"),
        ("stage_timeouts", {"analyze": -5}, ">= 0"),
        ("stage_timeouts", [1, 2], "mapping"),
    ],
)
def test_each_invalid_field_is_named(field, value, fragment):
    with pytest.raises(ConfigError) as err:
        PipelineConfig(**{field: value})
    assert err.value.fields == [field]
    assert err.value.problems[0].startswith(f"{field}: ")
    assert fragment in str(err.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as err:
        PipelineConfig(analysis_sr=-1, n_mfcc=500, separation_backend="x", target_lufs=float("inf"), keep_stems=2)
    assert sorted(err.value.fields) == sorted(["analysis_sr", "n_mfcc", "separation_backend", "target_lufs", "keep_stems"])
    assert isinstance(err.value, ValueError)
    for name in err.value.fields:
        assert name in str(err.value)


def test_hop_length_must_not_exceed_n_fft_and_odd_n_fft_is_only_advised():
    with pytest.raises(ConfigError, match="hop_length: must not exceed n_fft"):
        PipelineConfig(n_fft=256, hop_length=512)
    c = PipelineConfig(n_fft=2000)
    assert any(a.startswith("n_fft:") for a in c.advisories())


def test_existing_paths_are_accepted_and_stored_as_text(tmp_path):
    exe = tmp_path / "demucs"
    exe.write_text("#!/bin/sh\n")
    c = PipelineConfig(demucs_executable=exe)
    assert c.demucs_executable == str(exe)


def test_frozen_and_timeouts_read_only():
    c = PipelineConfig(stage_timeouts={"analyze": 30})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.analysis_sr = 44100  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.stage_timeouts["analyze"] = 1  # type: ignore[index]
    assert c.timeout_for("analyze") == 30.0 and c.timeout_for("ingest") == 0.0
    with pytest.raises(ValueError, match="stage"):
        c.timeout_for("mix")


def test_caller_dict_is_copied():
    timeouts = {"analyze": 30}
    c = PipelineConfig(stage_timeouts=timeouts)
    timeouts["analyze"] = 1
    assert c.timeout_for("analyze") == 30.0


def test_round_trip_through_json_and_pickle():
    c = PipelineConfig(analysis_sr=44100, separate=True, separation_backend="hpss", stage_timeouts={"separate": 600})
    data = json.loads(json.dumps(c.to_dict()))
    back, warnings = PipelineConfig.from_dict(data)
    assert back == c and warnings == []
    assert pickle.loads(pickle.dumps(c)) == c  # config travels to worker processes
    assert dataclasses.replace(c, n_mfcc=13).n_mfcc == 13


def test_from_dict_ignores_unknown_keys_with_a_warning_and_fills_defaults():
    c, warnings = PipelineConfig.from_dict({"analysis_sr": 16000, "colour": "blue", "legacy_flag": True})
    assert c.analysis_sr == 16000 and c.hop_length == 512
    assert warnings == ["colour: unknown setting, ignored", "legacy_flag: unknown setting, ignored"]


def test_from_dict_warns_about_another_version():
    _, warnings = PipelineConfig.from_dict({"config_version": 99})
    assert len(warnings) == 1 and warnings[0].startswith("config_version:")


def test_from_dict_rejects_wrong_types_naming_each_field():
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict({"analysis_sr": "22050", "trim_silence": "false", "stage_timeouts": {"analyze": "1"}})
    assert sorted(err.value.fields) == ["analysis_sr", "stage_timeouts", "trim_silence"]
    with pytest.raises(ConfigError, match="mapping"):
        PipelineConfig.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


# --- fingerprints -------------------------------------------------------------


def test_fingerprint_is_stable_across_processes():
    code = (
        "from core.pipeline.config import PipelineConfig as C;"
        "c = C(separate=True, stage_timeouts={'analyze': 5});"
        "print(c.fingerprint(), c.fingerprint('analyze'))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    c = PipelineConfig(separate=True, stage_timeouts={"analyze": 5})
    assert out.stdout.split() == [c.fingerprint(), c.fingerprint("analyze")]
    assert len(c.fingerprint()) == 64 and int(c.fingerprint(), 16) >= 0


def test_fingerprint_does_not_depend_on_int_or_float_spelling():
    assert PipelineConfig(min_duration_s=2).fingerprint("ingest") == PipelineConfig(min_duration_s=2.0).fingerprint("ingest")


@pytest.mark.parametrize(
    "stage, change",
    [
        ("ingest", {"min_duration_s": 3.0}),
        ("preprocess", {"analysis_sr": 44100}),
        ("preprocess", {"silence_threshold_dbfs": -50.0}),  # upstream (ingest) field
        ("preprocess", {"separate": True}),  # now keeps native-rate audio
        ("analyze", {"n_fft": 4096}),
        ("analyze", {"analysis_sr": 16000}),  # upstream (preprocess) field
        ("separate", {"separate": True}),
        ("transcribe", {"transcribe": True}),
        ("segment", {"time_signature_numerator": 3}),
        ("export", {"keep_stems": True}),
        ("export", {"hop_length": 256}),
        (None, {"n_mfcc": 13}),
    ],
)
def test_fingerprint_changes_with_a_relevant_field(stage, change):
    base = PipelineConfig()
    assert dataclasses.replace(base, **change).fingerprint(stage) != base.fingerprint(stage)


@pytest.mark.parametrize(
    "stage, change",
    [
        ("ingest", {"n_fft": 4096}),
        ("preprocess", {"n_mfcc": 13}),
        ("analyze", {"time_signature_numerator": 3}),
        ("analyze", {"transcribe": True}),
        ("segment", {"keep_stems": True}),
        ("preprocess", {"target_lufs": -14.0}),  # normalisation is off: the target does nothing
        ("separate", {"demucs_model": "mdx"}),  # separation is off
        (None, {"stage_timeouts": {"analyze": 99}}),  # timeouts never change results
        (None, {"transcription_backend": "pyin"}),  # transcription is off
    ],
)
def test_fingerprint_ignores_an_irrelevant_field(stage, change):
    base = PipelineConfig()
    assert dataclasses.replace(base, **change).fingerprint(stage) == base.fingerprint(stage)


def test_fingerprint_sees_switched_on_settings():
    on = PipelineConfig(normalize_loudness=True)
    assert dataclasses.replace(on, target_lufs=-14.0).fingerprint("preprocess") != on.fingerprint("preprocess")


def test_stages_have_distinct_fingerprints_and_unknown_stage_is_refused():
    c = PipelineConfig()
    assert len({c.fingerprint(s) for s in STAGES} | {c.fingerprint()}) == len(STAGES) + 1
    with pytest.raises(ValueError, match="mix"):
        c.fingerprint("mix")
