"""Stave's persisted settings and the user folders they live in.

``Settings`` (what to analyse and how) and ``RunSettings`` (how a batch runs:
workers, quarantine, retry, breaker and timeout policies) are frozen,
self-validating dataclasses shared by the ``stave`` command and the window.
``SettingsStore`` reads and writes them as versioned JSON in the user's
config folder. A damaged settings file never stops Stave from starting:
``load()`` keeps every section it can read, replaces the rest by defaults,
says what was wrong and keeps the original file next to it.

Environment overrides (for tests, CI and portable installs): ``STAVE_CONFIG_DIR``,
``STAVE_CACHE_DIR``, ``STAVE_LOG_DIR`` and ``STAVE_DATA_DIR`` replace the
platform's user folders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from core.fsutil import atomic_write_bytes, atomic_write_json
from core.pipeline.config import ConfigError, PipelineConfig
from core.resilience.breaker import BreakerConfig
from core.resilience.clock import SYSTEM_CLOCK, Clock
from core.resilience.retry import RetryConfig
from core.resilience.timeouts import AdaptiveTimeoutConfig

log = logging.getLogger(__name__)

APP_NAME = "stave"
SETTINGS_VERSION = 1
SETTINGS_FILE = "settings.json"
MAX_RECENT_OUTPUT_DIRS = 10
MAX_WORKERS = 256

# --- user folders --------------------------------------------------------------

_DIR_SOURCES: Mapping[str, tuple[str, Callable[..., str]]] = {
    "config_dir": ("STAVE_CONFIG_DIR", platformdirs.user_config_dir),
    "cache_dir": ("STAVE_CACHE_DIR", platformdirs.user_cache_dir),
    "log_dir": ("STAVE_LOG_DIR", platformdirs.user_log_dir),
    "data_dir": ("STAVE_DATA_DIR", platformdirs.user_data_dir),
}


@dataclass(frozen=True)
class UserDirs:
    """The per-user folders Stave writes to (never the install folder)."""

    config_dir: Path
    cache_dir: Path
    log_dir: Path
    data_dir: Path


def user_dirs(environ: Mapping[str, str] | None = None, *, create: bool = True) -> UserDirs:
    """Stave's user folders (platformdirs, app name "stave"), honouring the ``STAVE_*_DIR`` overrides.

    With ``create`` the folders are made if missing; a folder that cannot be
    made is logged, not raised (whatever writes there later reports the error).
    """
    env = os.environ if environ is None else environ
    paths: dict[str, Path] = {}
    for name, (var, platform_dir) in _DIR_SOURCES.items():
        override = env.get(var, "")
        paths[name] = Path(os.path.expanduser(override)) if override else Path(platform_dir(APP_NAME, appauthor=False))
        if create:
            try:
                paths[name].mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("could not create the %s %s: %s", name.replace("_", " "), paths[name], exc)
    return UserDirs(**paths)


def configure_numba_cache(environ: MutableMapping[str, str] | None = None) -> str:
    """Point ``NUMBA_CACHE_DIR`` at ``<cache_dir>/numba`` unless it is already set; return its value.

    Must run before anything imports librosa (numba reads the variable at
    import time); otherwise numba tries to cache next to the installed package.
    """
    env = os.environ if environ is None else environ
    if not env.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = str(user_dirs(env, create=False).cache_dir / "numba")
    return env["NUMBA_CACHE_DIR"]


# --- validation helpers ----------------------------------------------------------


class SettingsError(ValueError):
    """Invalid settings. ``problems`` lists every ``"field: message"``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        self.fields = [p.split(":", 1)[0] for p in self.problems]
        super().__init__("invalid settings:\n  - " + "\n  - ".join(self.problems))


def _int_check(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {type(v).__name__} {v!r}"
        if not lo <= v <= hi:
            return f"must be between {lo} and {hi}, got {v}"
        return None

    return check


def _flag_check(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"expected true or false, got {type(v).__name__} {v!r}"


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


# --- run settings ----------------------------------------------------------------

_RUN_SCALARS: Mapping[str, Callable[[Any], str | None]] = {
    "workers": _int_check(1, MAX_WORKERS),
    "max_crashes": _int_check(1, 1000),
    "keep_work_files": _flag_check,
    "preflight": _flag_check,
}
# The policy classes' own defaults are tuned for a desktop batch of a dozen files.
_RUN_POLICIES: Mapping[str, type] = {
    "retry": RetryConfig,
    "breaker": BreakerConfig,
    "timeouts": AdaptiveTimeoutConfig,
}


@dataclass(frozen=True)
class RunSettings:
    """How a batch runs (as opposed to what each stage computes)."""

    workers: int = field(default_factory=_default_workers)  # parallel jobs
    max_crashes: int = 2  # a file that crashes or hangs its worker this often is quarantined
    keep_work_files: bool = False  # keep each job's intermediate files after it succeeds
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    timeouts: AdaptiveTimeoutConfig = field(default_factory=AdaptiveTimeoutConfig)
    preflight: bool = True  # check every file, disk and memory before a long batch

    def __post_init__(self) -> None:
        problems = [f"{name}: {msg}" for name, check in _RUN_SCALARS.items() if (msg := check(getattr(self, name)))]
        for name, cls in _RUN_POLICIES.items():
            v = getattr(self, name)
            if not isinstance(v, cls):
                problems.append(f"{name}: expected a {cls.__name__}, got {type(v).__name__}")
        if problems:
            raise SettingsError(problems)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {name: getattr(self, name) for name in _RUN_SCALARS}
        d.update({name: getattr(self, name).to_dict() for name in _RUN_POLICIES})
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunSettings":
        """Strict: raises :class:`SettingsError` naming every problem (unknown keys included)."""
        issues: list[str] = []
        run = _read_run(data, issues, "")
        if issues:
            raise SettingsError(issues)
        return run


# --- settings --------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything Stave persists between sessions."""

    version: int = SETTINGS_VERSION
    output_dir: str = ""  # "" = not chosen yet
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    run: RunSettings = field(default_factory=RunSettings)
    recent_output_dirs: tuple[str, ...] = ()  # most recent first, at most MAX_RECENT_OUTPUT_DIRS

    def __post_init__(self) -> None:
        problems = []
        if self.version != SETTINGS_VERSION or isinstance(self.version, bool):
            problems.append(f"version: must be {SETTINGS_VERSION}, got {self.version!r}")
        if not isinstance(self.output_dir, str):
            problems.append(f"output_dir: expected a folder path or \"\", got {type(self.output_dir).__name__}")
        if not isinstance(self.pipeline, PipelineConfig):
            problems.append(f"pipeline: expected a PipelineConfig, got {type(self.pipeline).__name__}")
        if not isinstance(self.run, RunSettings):
            problems.append(f"run: expected a RunSettings, got {type(self.run).__name__}")
        recent = self.recent_output_dirs
        if isinstance(recent, str) or not isinstance(recent, (list, tuple)):
            problems.append(f"recent_output_dirs: expected a list of folder paths, got {type(recent).__name__}")
        else:
            bad = [d for d in recent if not isinstance(d, str) or not d]
            if bad:
                problems.append(f"recent_output_dirs: expected non-empty folder paths, got {bad[0]!r}")
            elif len(recent) > MAX_RECENT_OUTPUT_DIRS:
                problems.append(f"recent_output_dirs: at most {MAX_RECENT_OUTPUT_DIRS} folders, got {len(recent)}")
            else:
                object.__setattr__(self, "recent_output_dirs", tuple(recent))
        if problems:
            raise SettingsError(problems)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied, validated like a new instance."""
        return dataclasses.replace(self, **changes)

    def remember_output_dir(self, folder: str | os.PathLike[str]) -> "Settings":
        """Make *folder* the output folder and the first of the recent ones (deduplicated, capped)."""
        folder = os.fspath(folder)
        recent = (folder, *(d for d in self.recent_output_dirs if d != folder))
        return self.replace(output_dir=folder, recent_output_dirs=recent[:MAX_RECENT_OUTPUT_DIRS])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, with ``version``."""
        return {
            "version": self.version,
            "output_dir": self.output_dir,
            "pipeline": self.pipeline.to_dict(),
            "run": self.run.to_dict(),
            "recent_output_dirs": list(self.recent_output_dirs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Settings":
        """Strict: raises :class:`SettingsError` naming every problem (unknown keys included).

        Use :func:`read_settings` to recover what can be recovered instead.
        """
        settings, issues = read_settings(data)
        if issues:
            raise SettingsError(issues)
        return settings


# --- lenient reading -------------------------------------------------------------


def read_settings(data: Any) -> tuple[Settings, list[str]]:
    """Build settings from saved values, never raising; returns ``(settings, issues)``.

    Each issue names its field (``"run.workers: ..."``). A bad value falls back
    to its default and only that: a broken pipeline section keeps the run
    section, a bad ``retry`` keeps ``workers``. Settings saved by a newer
    version are not guessed at: the result is all defaults.
    """
    if not isinstance(data, Mapping):
        return Settings(), [f"settings: expected a JSON object, got {_json_type(data)}"]
    issues: list[str] = []
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        issues.append(f"version: expected an integer, got {version!r}; read as version {SETTINGS_VERSION}")
    elif version > SETTINGS_VERSION:
        msg = f"version: written by a newer Stave (settings version {version}; this one reads {SETTINGS_VERSION})"
        return Settings(), [msg]
    elif version < SETTINGS_VERSION:
        issues.append(f"version: unknown old version {version}; read as version {SETTINGS_VERSION}")
    known = {f.name for f in dataclasses.fields(Settings)}
    issues += [f"{k}: unknown setting, ignored" for k in sorted(map(str, data)) if k not in known]

    kwargs: dict[str, Any] = {}
    output_dir = data.get("output_dir", "")
    if isinstance(output_dir, str):
        kwargs["output_dir"] = output_dir
    else:
        issues.append(f"output_dir: expected a folder path or \"\", got {_json_type(output_dir)} {output_dir!r}")
    if "pipeline" in data:
        kwargs["pipeline"] = _read_pipeline(data["pipeline"], issues)
    if "run" in data:
        kwargs["run"] = _read_run(data["run"], issues, "run.")
    kwargs["recent_output_dirs"] = _read_recent(data.get("recent_output_dirs", []), issues)
    try:
        return Settings(**kwargs), issues
    except SettingsError as exc:  # not expected: each part was checked above
        return Settings(), issues + exc.problems


def _json_type(v: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if v is None else names.get(type(v), type(v).__name__)


def _read_pipeline(raw: Any, issues: list[str]) -> PipelineConfig:
    """The pipeline section; fields named by a ConfigError fall back to their defaults."""
    if not isinstance(raw, Mapping):
        issues.append(f"pipeline: expected an object, got {_json_type(raw)}; using the default pipeline")
        return PipelineConfig()
    values = dict(raw)
    for attempt in range(2):
        try:
            config, notes = PipelineConfig.from_dict(values)
        except ConfigError as exc:
            if attempt == 0:
                issues += [f"pipeline.{p}; using the default" for p in exc.problems]
            names = {f.name for f in dataclasses.fields(PipelineConfig)}
            bad = set(exc.fields) & names
            if attempt == 1 or not bad:
                break
            values = {k: v for k, v in values.items() if k not in bad}
            continue
        except Exception as exc:  # a malformed value the config did not anticipate
            issues.append(f"pipeline: {exc}")
            break
        if attempt == 0:
            issues += [f"pipeline.{n}" for n in notes]
        return config
    issues.append("pipeline: could not be repaired field by field; using the default pipeline")
    return PipelineConfig()


def _read_run(raw: Any, issues: list[str], prefix: str) -> RunSettings:
    """The run section; each bad value (or policy block) falls back to its default."""
    where = prefix.rstrip(".") or "run"
    if not isinstance(raw, Mapping):
        issues.append(f"{where}: expected an object, got {_json_type(raw)}; using the default run settings")
        return RunSettings()
    known = {f.name for f in dataclasses.fields(RunSettings)}
    issues += [f"{prefix}{k}: unknown setting, ignored" for k in sorted(map(str, raw)) if k not in known]
    kwargs: dict[str, Any] = {}
    for name, check in _RUN_SCALARS.items():
        if name in raw:
            if msg := check(raw[name]):
                issues.append(f"{prefix}{name}: {msg}; using the default")
            else:
                kwargs[name] = raw[name]
    for name, cls in _RUN_POLICIES.items():
        if name in raw:
            policy = _read_policy(cls, raw[name], issues, f"{prefix}{name}")
            if policy is not None:
                kwargs[name] = policy
    return RunSettings(**kwargs)


def _read_policy(cls: type, raw: Any, issues: list[str], where: str) -> Any:
    """One policy block (RetryConfig, BreakerConfig, ...), or None (= its default) with an issue."""
    if not isinstance(raw, Mapping):
        issues.append(f"{where}: expected an object, got {_json_type(raw)}; using the defaults")
        return None
    known = {f.name for f in dataclasses.fields(cls)}
    issues += [f"{where}.{k}: unknown setting, ignored" for k in sorted(map(str, raw)) if k not in known]
    try:
        return cls.from_dict({k: v for k, v in raw.items() if k in known})
    except Exception as exc:  # the policies raise ValueError/TypeError; a malformed file may cause others
        issues.append(f"{where}: {exc}; using the defaults")
        return None


def _read_recent(raw: Any, issues: list[str]) -> tuple[str, ...]:
    if not isinstance(raw, list):
        issues.append(f"recent_output_dirs: expected a list of folder paths, got {_json_type(raw)}")
        return ()
    kept: list[str] = []
    for d in raw:
        if not isinstance(d, str) or not d:
            issues.append(f"recent_output_dirs: ignored {d!r} (not a folder path)")
        elif d not in kept:
            kept.append(d)
    if len(kept) > MAX_RECENT_OUTPUT_DIRS:
        issues.append(f"recent_output_dirs: kept the first {MAX_RECENT_OUTPUT_DIRS} of {len(kept)} folders")
    return tuple(kept[:MAX_RECENT_OUTPUT_DIRS])


# --- the store -------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    """What :meth:`SettingsStore.load` found: the settings to use and what was wrong."""

    settings: Settings
    warnings: list[str]
    kept_copy: Path | None = None  # where a damaged file was preserved


class SettingsStore:
    """Reads and writes ``settings.json`` (default: in the user config folder)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, clock: Clock = SYSTEM_CLOCK,
                 environ: Mapping[str, str] | None = None):
        self.path = Path(path) if path is not None else user_dirs(environ, create=False).config_dir / SETTINGS_FILE
        self._clock = clock

    def load(self) -> LoadResult:
        """The saved settings; never raises for a missing, unreadable or damaged file.

        A damaged file (not JSON, wrong types, invalid values, a newer version)
        gives defaults for what could not be read, one warning per problem
        naming the file, and a copy ``settings.json.corrupt-<UTC time>`` of the
        original; the original itself is left as it was.
        """
        path = self.path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return LoadResult(Settings(), [])
        except OSError as exc:
            return self._report(LoadResult(Settings(), [
                f"{path}: could not be read ({exc.strerror or exc}); using the default settings"]))
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            settings, issues = Settings(), [f"not valid JSON ({exc}); using the default settings"]
        else:
            settings, issues = read_settings(data)
        if not issues:
            return LoadResult(settings, [])
        warnings = [f"{path}: {issue}" for issue in issues]
        copy, error = self._keep_copy(raw)
        if copy is not None:
            warnings.append(f"{path}: the original file was kept as {copy}")
        else:
            warnings.append(f"{path}: could not keep a copy of the original file ({error})")
        return self._report(LoadResult(settings, warnings, copy))

    def save(self, settings: Settings) -> Path:
        """Write *settings* as versioned JSON, atomically (temp file, fsync, rename)."""
        if not isinstance(settings, Settings):
            raise TypeError(f"settings: expected a Settings, got {type(settings).__name__}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, settings.to_dict())
        log.debug("settings saved to %s", self.path)
        return self.path

    def _keep_copy(self, raw: bytes) -> tuple[Path | None, str]:
        """Preserve *raw* next to the file, reusing an identical earlier copy (no pile-up per start)."""
        prefix = f"{self.path.name}.corrupt-"
        try:
            for old in sorted(self.path.parent.glob(prefix + "*")):
                if old.is_file() and old.stat().st_size == len(raw) and old.read_bytes() == raw:
                    return old, ""
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock.wall()))
            copy = self.path.with_name(prefix + stamp)
            n = 1
            while copy.exists():
                copy, n = self.path.with_name(f"{prefix}{stamp}-{n}"), n + 1
            return atomic_write_bytes(copy, raw), ""
        except OSError as exc:
            return None, str(exc.strerror or exc)

    @staticmethod
    def _report(result: LoadResult) -> LoadResult:
        for w in result.warnings:
            log.warning("%s", w)
        return result


__all__ = [
    "LoadResult",
    "MAX_RECENT_OUTPUT_DIRS",
    "RunSettings",
    "SETTINGS_VERSION",
    "Settings",
    "SettingsError",
    "SettingsStore",
    "UserDirs",
    "configure_numba_cache",
    "read_settings",
    "user_dirs",
]
