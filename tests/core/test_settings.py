"""Settings: validation, round trips, and a store that never loses a file nor refuses to start."""

import json
import os
from pathlib import Path

import pytest

import core.fsutil
from core.pipeline.config import PipelineConfig
from core.resilience.breaker import BreakerConfig
from core.resilience.errors import ErrorKind
from core.resilience.retry import RetryConfig
from core.resilience.timeouts import AdaptiveTimeoutConfig
from core.settings import (
    MAX_RECENT_OUTPUT_DIRS,
    SETTINGS_VERSION,
    RunSettings,
    Settings,
    SettingsError,
    SettingsStore,
    configure_numba_cache,
    read_settings,
    user_dirs,
)


@pytest.fixture
def dirs_env(tmp_path, monkeypatch):
    for var in ("CONFIG", "CACHE", "LOG", "DATA"):
        monkeypatch.setenv(f"STAVE_{var}_DIR", str(tmp_path / var.lower()))
    return tmp_path


def _custom() -> Settings:
    return Settings(
        output_dir="/data/out",
        pipeline=PipelineConfig(hop_length=256, n_mfcc=13, stage_timeouts={"analyze": 90.0}),
        run=RunSettings(
            workers=3,
            max_crashes=4,
            keep_work_files=True,
            preflight=False,
            retry=RetryConfig(max_attempts=5, deadline_s=120.0, retry_on=frozenset({ErrorKind.TIMEOUT})),
            breaker=BreakerConfig(failure_threshold=2, cooldown_s=5.0),
            timeouts=AdaptiveTimeoutConfig(default_s=120.0, margin=4.0),
        ),
        recent_output_dirs=("/data/out", "/data/old"),
    )


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- validation ----------------------------------------------------------------


def test_run_settings_defaults_and_field_named_errors():
    run = RunSettings()
    assert run.workers == max(1, min(2, os.cpu_count() or 1))
    assert (run.max_crashes, run.keep_work_files, run.preflight) == (2, False, True)
    assert run.retry == RetryConfig() and run.breaker == BreakerConfig() and run.timeouts == AdaptiveTimeoutConfig()
    with pytest.raises(SettingsError) as err:
        RunSettings(workers=0, max_crashes="2", keep_work_files=1, retry={"max_attempts": 3})
    assert err.value.fields == ["workers", "max_crashes", "keep_work_files", "retry"]
    with pytest.raises(SettingsError, match="workers: expected an integer"):
        RunSettings(workers=True)


def test_settings_validation_and_replace():
    s = Settings()
    assert s.version == SETTINGS_VERSION and s.output_dir == "" and s.recent_output_dirs == ()
    with pytest.raises(SettingsError, match="recent_output_dirs: at most 10"):
        Settings(recent_output_dirs=tuple(f"/d{i}" for i in range(11)))
    with pytest.raises(SettingsError) as err:
        s.replace(output_dir=None, version=2)
    assert set(err.value.fields) == {"version", "output_dir"}
    t = s.replace(output_dir="/x", recent_output_dirs=["/x"])
    assert t.output_dir == "/x" and t.recent_output_dirs == ("/x",) and s.output_dir == ""


def test_remember_output_dir_dedupes_and_caps():
    s = Settings()
    for i in range(12):
        s = s.remember_output_dir(f"/out{i}")
    s = s.remember_output_dir("/out5")
    assert s.output_dir == "/out5"
    assert s.recent_output_dirs[:3] == ("/out5", "/out11", "/out10")
    assert len(s.recent_output_dirs) == MAX_RECENT_OUTPUT_DIRS and s.recent_output_dirs.count("/out5") == 1


# --- dict round trips ------------------------------------------------------------


def test_defaults_round_trip_through_json():
    data = json.loads(json.dumps(Settings().to_dict()))
    assert data["version"] == SETTINGS_VERSION
    assert Settings.from_dict(data) == Settings()


def test_custom_round_trip_through_json():
    s = _custom()
    back = Settings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.run.retry.retry_on == frozenset({ErrorKind.TIMEOUT})
    assert back.pipeline.timeout_for("analyze") == 90.0


def test_strict_from_dict_names_every_problem():
    data = _custom().to_dict()
    data["run"]["workers"] = "many"
    data["pipeline"]["hop_length"] = -1
    data["colour"] = "blue"
    with pytest.raises(SettingsError) as err:
        Settings.from_dict(data)
    assert {"run.workers", "pipeline.hop_length", "colour"} <= set(err.value.fields)


def test_read_settings_unknown_policy_keys_are_dropped_not_fatal():
    data = _custom().to_dict()
    data["run"]["retry"]["flavour"] = "vanilla"  # RetryConfig.from_dict itself refuses unknown keys
    settings, issues = read_settings(data)
    assert settings.run.retry == _custom().run.retry
    assert issues == ["run.retry.flavour: unknown setting, ignored"]


def test_read_settings_bad_policy_block_keeps_its_neighbours():
    data = _custom().to_dict()
    data["run"]["breaker"]["min_calls"] = 99  # > window_size: BreakerConfig refuses it
    data["run"]["timeouts"] = [1, 2]
    settings, issues = read_settings(data)
    assert settings.run.breaker == BreakerConfig() and settings.run.timeouts == AdaptiveTimeoutConfig()
    assert settings.run.retry == _custom().run.retry and settings.run.workers == 3
    assert [i.split(":")[0] for i in issues] == ["run.breaker", "run.timeouts"]
    assert "min_calls" in issues[0] and "array" in issues[1]


def test_read_settings_bad_pipeline_field_keeps_the_rest_of_the_pipeline():
    data = _custom().to_dict()
    data["pipeline"]["n_fft"] = "big"
    settings, issues = read_settings(data)
    assert settings.pipeline.n_fft == PipelineConfig().n_fft
    assert settings.pipeline.hop_length == 256 and settings.pipeline.n_mfcc == 13
    assert len(issues) == 1 and issues[0].startswith("pipeline.n_fft: expected an integer")


def test_read_settings_never_raises_on_junk():
    for junk in (None, [], "x", 3, {"version": "one", "run": "fast", "pipeline": 7, "recent_output_dirs": {}}):
        settings, issues = read_settings(junk)
        assert settings == Settings() and issues


# --- the store -------------------------------------------------------------------


def test_missing_file_gives_defaults_without_warning(tmp_path):
    result = SettingsStore(tmp_path / "settings.json").load()
    assert result.settings == Settings() and result.warnings == [] and result.kept_copy is None
    assert _files(tmp_path) == []


def test_save_then_load_equals(tmp_path):
    store = SettingsStore(tmp_path / "cfg" / "settings.json")
    store.save(_custom())
    saved = json.loads(store.path.read_text(encoding="utf-8"))
    assert saved["version"] == SETTINGS_VERSION and saved["run"]["workers"] == 3
    result = store.load()
    assert result.settings == _custom() and result.warnings == []


def test_invalid_json_gives_defaults_a_warning_and_keeps_the_file(tmp_path, clock):
    path = tmp_path / "settings.json"
    path.write_text('{"version": 1, "output_dir": "/a",', encoding="utf-8")
    result = SettingsStore(path, clock=clock).load()
    assert result.settings == Settings()
    assert any(str(path) in w and "not valid JSON" in w for w in result.warnings)
    copy = result.kept_copy
    assert copy is not None and copy.name == "settings.json.corrupt-20231114T221320Z"
    assert copy.read_text(encoding="utf-8") == '{"version": 1, "output_dir": "/a",'
    assert path.read_text(encoding="utf-8") == '{"version": 1, "output_dir": "/a",'  # untouched
    assert str(copy) in result.warnings[-1]
    # Loading again (the app restarted without saving) reuses the copy instead of piling up new ones.
    clock.advance(60)
    again = SettingsStore(path, clock=clock).load()
    assert again.kept_copy == copy and _files(tmp_path) == ["settings.json", copy.name]


def test_different_corrupt_content_gets_its_own_copy(tmp_path, clock):
    path = tmp_path / "settings.json"
    path.write_bytes(b"\xff\xfe garbage")
    first = SettingsStore(path, clock=clock).load().kept_copy
    path.write_bytes(b"[1, 2")
    second = SettingsStore(path, clock=clock).load().kept_copy  # same second: a suffix keeps them apart
    assert first != second and first.read_bytes() == b"\xff\xfe garbage" and second.read_bytes() == b"[1, 2"


def test_invalid_pipeline_section_keeps_run_section(tmp_path):
    path = tmp_path / "settings.json"
    data = _custom().to_dict()
    data["pipeline"] = "fast please"
    path.write_text(json.dumps(data), encoding="utf-8")
    result = SettingsStore(path).load()
    assert result.settings.pipeline == PipelineConfig()
    assert result.settings.run == _custom().run
    assert result.settings.output_dir == "/data/out"
    assert any("pipeline: expected an object" in w and str(path) in w for w in result.warnings)
    assert result.kept_copy is not None and json.loads(result.kept_copy.read_text()) == data


def test_newer_version_gives_defaults_and_preserves_the_file(tmp_path):
    path = tmp_path / "settings.json"
    data = _custom().to_dict()
    data["version"] = SETTINGS_VERSION + 1
    text = json.dumps(data)
    path.write_text(text, encoding="utf-8")
    before = path.stat().st_mtime_ns
    result = SettingsStore(path).load()
    assert result.settings == Settings()
    assert len(result.warnings) == 2 and "newer" in result.warnings[0] and str(path) in result.warnings[0]
    assert path.read_text(encoding="utf-8") == text and path.stat().st_mtime_ns == before
    assert result.kept_copy.read_text(encoding="utf-8") == text


def test_wrong_types_are_named_in_the_warnings(tmp_path):
    path = tmp_path / "settings.json"
    data = _custom().to_dict()
    data["run"]["workers"] = "4"
    data["run"]["preflight"] = "yes"
    data["output_dir"] = 42
    path.write_text(json.dumps(data), encoding="utf-8")
    result = SettingsStore(path).load()
    text = "\n".join(result.warnings)
    assert "run.workers: expected an integer, got str '4'" in text
    assert "run.preflight: expected true or false, got str 'yes'" in text
    assert "output_dir: expected a folder path" in text
    s = result.settings
    assert s.run.workers == RunSettings().workers and s.run.preflight is True and s.output_dir == ""
    assert s.run.max_crashes == 4 and s.pipeline == _custom().pipeline  # the good values survive


def test_unreadable_path_never_raises(tmp_path):
    path = tmp_path / "settings.json"
    path.mkdir()  # a folder where the file should be
    result = SettingsStore(path).load()
    assert result.settings == Settings() and len(result.warnings) == 1 and str(path) in result.warnings[0]


def test_stave_config_dir_is_respected(dirs_env):
    store = SettingsStore()
    assert store.path == dirs_env / "config" / "settings.json"
    store.save(_custom())
    assert (dirs_env / "config" / "settings.json").is_file()
    assert SettingsStore().load().settings == _custom()


def test_user_dirs_overrides_and_creation(dirs_env):
    d = user_dirs()
    assert (d.config_dir, d.cache_dir, d.log_dir, d.data_dir) == tuple(
        dirs_env / n for n in ("config", "cache", "log", "data"))
    assert all(p.is_dir() for p in (d.config_dir, d.cache_dir, d.log_dir, d.data_dir))


def test_user_dirs_without_overrides_use_platform_folders(tmp_path):
    d = user_dirs({}, create=False)
    assert all("stave" in p.parts[-3:] or p.name == "stave" for p in (d.config_dir, d.cache_dir, d.log_dir))
    assert d.config_dir != d.cache_dir and not (tmp_path / "config").exists()


def test_configure_numba_cache_sets_only_when_unset(tmp_path):
    env = {"STAVE_CACHE_DIR": str(tmp_path / "cache")}
    assert configure_numba_cache(env) == str(tmp_path / "cache" / "numba")
    assert env["NUMBA_CACHE_DIR"] == str(tmp_path / "cache" / "numba")
    env2 = {"STAVE_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": "/elsewhere"}
    assert configure_numba_cache(env2) == "/elsewhere" and env2["NUMBA_CACHE_DIR"] == "/elsewhere"


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = SettingsStore(tmp_path / "settings.json")
    store.save(Settings())
    store.save(_custom())
    assert _files(tmp_path) == ["settings.json"]
    assert store.load().settings == _custom()


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    store = SettingsStore(tmp_path / "settings.json")
    store.save(_custom())
    before = store.path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(core.fsutil.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        store.save(Settings())
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert _files(tmp_path) == ["settings.json"]


def test_save_refuses_non_settings(tmp_path):
    with pytest.raises(TypeError, match="settings: expected a Settings"):
        SettingsStore(tmp_path / "settings.json").save({"version": 1})
    assert not (tmp_path / "settings.json").exists()
