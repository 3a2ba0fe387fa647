"""Helpers for the CLI, crash-and-resume and disk-full tests.

- run ``stave`` in a subprocess (``python -c 'from core.cli import main'``, the console script's body)
  with its user folders in a temp dir and the session's NUMBA_CACHE_DIR;
- watch a running ``stave ... --progress json`` event by event and SIGKILL its whole process group;
- build the reference batch once per test session (shared through ``config.stash``);
- compare output folders, list leftover temp files, read the store's attempts table;
- mount a small tmpfs (as root) for real disk-full tests;
- a tiny stage graph whose middle stage runs out of disk space (for engine-level tests).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import soundfile as sf

from core.engine.batch import Pipeline
from core.engine.stagegraph import StageContext, StageOutput, StageSpec
from core.fsutil import atomic_write_json
from tests import synth

REPO = Path(__file__).resolve().parents[3]
SR = 22050
# What the `stave` console script runs (works whether or not the script is installed).
_STAVE_MAIN = "import sys; from core.cli import main; sys.exit(main())"
_USER_DIRS = ("STAVE_CONFIG_DIR", "STAVE_CACHE_DIR", "STAVE_LOG_DIR", "STAVE_DATA_DIR")

# (name, bpm, key, bars): 3.5-6 s of drums plus a chord cadence each, all different content.
SONGS: tuple[tuple[str, float, str, int], ...] = (
    ("alpha", 96.0, "C major", 2),
    ("bravo", 120.0, "A minor", 2),
    ("charlie", 140.0, "G major", 3),
    ("delta", 108.0, "E minor", 2),
    ("echo", 128.0, "D major", 2),
    ("foxtrot", 84.0, "F major", 1),
)


# --- inputs ----------------------------------------------------------------------------------
def song_audio(bpm: float, key: str, bars: int) -> np.ndarray:
    drums = synth.drum_pattern(bpm, bars, sr=SR)
    chords = synth.chord_cadence(key, sr=SR, chord_s=0.5, repeats=2)
    return synth.set_peak_dbfs(synth.mix(drums, 0.6 * chords), -1.0)


def write_songs(folder: Path, songs=SONGS) -> list[Path]:
    """Write each song as a 16-bit WAV at 22050 Hz; the paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, bpm, key, bars in songs:
        path = folder / f"{name}.wav"
        sf.write(path, song_audio(bpm, key, bars), SR, subtype="PCM_16")
        paths.append(path)
    return paths


def truncate_copy(src: Path, dest: Path, keep: float = 0.4) -> Path:
    """A copy of a WAV cut short: its header still promises the whole length."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


# --- running stave ---------------------------------------------------------------------------
def stave_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", _STAVE_MAIN, *map(str, args)]


def cli_env(root: Path) -> dict[str, str]:
    """The test session's environment (NUMBA_CACHE_DIR included) with Stave's user folders under ``root``."""
    env = dict(os.environ)
    for var in _USER_DIRS:
        folder = root / var.removeprefix("STAVE_").removesuffix("_DIR").lower()
        folder.mkdir(parents=True, exist_ok=True)
        env[var] = str(folder)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.pop("COLUMNS", None)
    return env


def run_stave(args, env: dict[str, str], *, timeout: float = 240.0) -> subprocess.CompletedProcess:
    """Run ``stave ARGS`` to its end; on timeout its whole process group is killed and the test fails."""
    argv = stave_argv(*args)
    with subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise AssertionError(f"`stave {' '.join(map(str, args))}` did not end within {timeout:.0f} s "
                                 f"(killed)\nstdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def json_lines(stdout: str) -> list[dict]:
    """Every stdout line parsed as one JSON object (fails on any line that is not)."""
    out = []
    for i, line in enumerate(stdout.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"stdout line {i + 1} is not JSON: {line[:200]!r}") from exc
        assert isinstance(obj, dict) and "event" in obj, f"stdout line {i + 1} is not an event object: {line[:200]}"
        out.append(obj)
    return out


class StaveProcess:
    """``stave ... --progress json`` in its own session, its events parsed as they arrive."""

    def __init__(self, args, env: dict[str, str], stderr_path: Path):
        self._stderr_file = open(stderr_path, "w+", encoding="utf-8")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen(stave_argv(*args), env=env, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=self._stderr_file, text=True, start_new_session=True)
        self.pgid = self.proc.pid  # start_new_session: the child leads its own process group
        self.events: list[dict] = []
        self.bad_lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name="stave-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    self.bad_lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def _story(self) -> str:
        tail = "\n".join(json.dumps(e)[:160] for e in self.events[-15:])
        return f"last events:\n{tail}\nstderr:\n{self.stderr()[-3000:]}"

    def wait_for(self, condition: Callable[[list[dict]], bool], what: str, timeout: float) -> None:
        """Block until ``condition(events so far)`` holds; fail if the process ends or time runs out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition(self.events):
                left = deadline - time.monotonic()
                if self._eof:
                    raise AssertionError(f"stave ended (exit {self.proc.poll()}) before {what}\n{self._story()}")
                if left <= 0:
                    raise AssertionError(f"no {what} within {timeout:.0f} s\n{self._story()}")
                self._cond.wait(min(left, 0.5))

    def kill_group(self, timeout: float = 30.0) -> None:
        """SIGKILL the whole process group (stave, its worker pool, the forkserver) and wait until it is gone."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while (alive := live_group_members(self.pgid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"processes of group {self.pgid} outlived SIGKILL: {alive}"
        self.close()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f"stave did not finish within {timeout:.0f} s\n{self._story()}") from None
        self.close()
        return code

    def close(self) -> None:
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr_file.close()


def live_group_members(pgid: int) -> list[int]:
    """Pids still alive (not zombies) in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            pids.append(int(entry.name))
    return pids


# --- the reference batch (one uninterrupted run, shared by the CLI and crash tests) -------------
@dataclass
class Reference:
    inputs: Path
    out: Path
    env: dict[str, str]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float
    events: list[dict] = field(default_factory=list)


REFERENCE_KEY = pytest.StashKey[Reference]()


def reference_batch(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """``stave process INPUTS --out OUT --workers 1 --progress json`` on :data:`SONGS`, run once per session."""
    if REFERENCE_KEY not in config.stash:
        root = tmp_path_factory.mktemp("reference")
        inputs = root / "inputs"
        write_songs(inputs)
        env = cli_env(root / "home")
        out = root / "out"
        t0 = time.monotonic()
        done = run_stave(["process", inputs, "--out", out, "--workers", "1", "--progress", "json"], env)
        ref = Reference(inputs, out, env, done.returncode, done.stdout, done.stderr, time.monotonic() - t0)
        with contextlib.suppress(AssertionError):
            ref.events = json_lines(done.stdout)
        config.stash[REFERENCE_KEY] = ref
    return config.stash[REFERENCE_KEY]


# --- output folders ------------------------------------------------------------------------------
def song_folders(out: Path) -> dict[str, list[str]]:
    """``{song folder: sorted relative file paths inside it}`` (everything in OUT but .stave and top-level files)."""
    return {d.name: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())
            for d in sorted(out.iterdir()) if d.is_dir() and d.name != ".stave"}


def tmp_leftovers(root: Path) -> list[str]:
    """Files or folders anywhere under ``root`` whose name contains '.tmp'."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name)


def comparable_summary(path: Path, out: Path) -> dict:
    """summary.json without what may differ between two runs: timings, created_at, the output folder's path."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc.pop("created_at", None)
    for state in (doc.get("stages") or {}).values():
        state.pop("elapsed_s", None)
    return _replace_prefix(doc, str(out), "<OUT>")


def _replace_prefix(obj: Any, prefix: str, repl: str) -> Any:
    if isinstance(obj, dict):
        return {k: _replace_prefix(v, prefix, repl) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_prefix(v, prefix, repl) for v in obj]
    if isinstance(obj, str) and obj.startswith(prefix):
        return repl + obj[len(prefix):]
    return obj


def read_rows(db: Path, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of a query on a store, opened read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def quick_check(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


# --- a small real file system ----------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``path`` (root only), unmounted on exit; skips the test when impossible."""
    path.mkdir(parents=True, exist_ok=True)
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real small file system needs root and mount(8); the engine-level ENOSPC test covers the rest")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def leave_free(folder: Path, free: int) -> Path:
    """Fill ``folder``'s file system with a ballast file until about ``free`` bytes are left."""
    ballast = folder / "ballast.bin"
    need = free_bytes(folder) - free
    with open(ballast, "wb") as f:
        chunk = b"\0" * (1 << 20)
        while need > 0:
            f.write(chunk[: min(need, len(chunk))])
            need -= len(chunk)
    return ballast


def fill_up(path: Path) -> None:
    """Write ``path`` until its file system has not a byte left (the file stays)."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\xff" * size
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break


# --- a stage graph that runs out of disk space (run by real worker processes) ---------------------
# config: {"full_flag": path, "hog_flag": path, "ballast": path}
#   full_flag exists -> "write" raises OSError(ENOSPC) as a full disk would;
#   hog_flag exists  -> "write" succeeds, then fills the file system with the ballast file,
#                       so the supervisor's next store write finds no space.

def ingest_stage(ctx: StageContext) -> StageOutput:
    from tests.core.engine import teststages

    return teststages.ingest(ctx)


def write_stage(ctx: StageContext) -> StageOutput:
    if os.path.exists(ctx.config["full_flag"]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(ctx.work_dir, "data.json"))
    path = atomic_write_json(os.path.join(ctx.work_dir, "data.json"), {"job": ctx.job_id, "pid": os.getpid()})
    if os.path.exists(ctx.config["hog_flag"]):
        fill_up(Path(ctx.config["ballast"]))
    return StageOutput.of(ctx, [path])


def export_stage(ctx: StageContext) -> StageOutput:
    os.makedirs(ctx.song_dir, exist_ok=True)
    data = json.loads(Path(ctx.work_dir, "data.json").read_text())
    path = atomic_write_json(os.path.join(ctx.song_dir, "summary.json"),
                             {"song_id": ctx.song_id, "job": data["job"],
                              "stages": {k: v["status"] for k, v in ctx.facts["stages"].items()}})
    return StageOutput.of(ctx, [path])


DISK_STAGES = (
    StageSpec("ingest", "1", "tests.core.engine.crash_helpers:ingest_stage"),
    StageSpec("write", "1", "tests.core.engine.crash_helpers:write_stage"),
    StageSpec("export", "1", "tests.core.engine.crash_helpers:export_stage"),
)


def disk_pipeline() -> Pipeline:
    return Pipeline(DISK_STAGES, config_to_dict=lambda c: dict(c),
                    fingerprint=lambda config, stage: json.dumps(config, sort_keys=True))


def small_wavs(folder: Path, n: int) -> list[Path]:
    """``n`` tiny distinct WAVs (the disk stage graph never decodes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        path = folder / f"take{i}.wav"
        sf.write(path, (rng.standard_normal(800) * 0.1).astype(np.float32), 8000)
        paths.append(path)
    return paths
