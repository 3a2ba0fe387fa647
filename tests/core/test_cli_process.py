"""`stave process`, `resume`, `status` and `health` as a person runs them: in a subprocess, on real audio."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest

from core.commands.report import exit_code
from core.engine.batch import BatchSummary
from core.engine.store_rows import BatchStatus
from core.pipeline.tonal import KEY_NAMES
from core.resilience.errors import POLICIES, ErrorKind
from tests.core.engine.crash_helpers import (
    REPO, SONGS, Reference, cli_env, json_lines, reference_batch, run_stave, song_audio, song_folders,
    truncate_copy, write_songs,
)

STAGES_RUN = ("ingest", "preprocess", "analyze", "segment", "export")
STAGES_OFF = ("separate", "transcribe")  # switched off by default


@pytest.fixture(scope="session")
def reference(request, tmp_path_factory) -> Reference:
    return reference_batch(request.config, tmp_path_factory)


@pytest.fixture
def env(tmp_path):
    return cli_env(tmp_path / "home")


def _summaries(out) -> dict[str, dict]:
    return {name: json.loads((out / name / "summary.json").read_text()) for name in song_folders(out)}


# --- a good folder ----------------------------------------------------------------------------
def test_process_good_folder_exits_0_with_a_complete_summary_per_song(reference):
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "Traceback" not in reference.stderr
    folders = song_folders(reference.out)
    assert len(folders) == len(SONGS)
    stems = sorted(name.rsplit("-", 1)[0] for name in folders)
    assert stems == sorted(name for name, *_ in SONGS)
    for name, files in folders.items():
        assert {"summary.json", "bars.parquet", "beats.csv"} <= set(files), name
        assert not any(".tmp" in f for f in files)
    wanted = {name: (bpm, key, bars) for name, bpm, key, bars in SONGS}
    for name, s in _summaries(reference.out).items():
        bpm, key, bars = wanted[s["file_name"].removesuffix(".wav")]
        assert s["song_id"] == name
        assert s["sample_rate"] == 22050 and s["native_sample_rate"] == 22050
        assert s["duration_s"] == pytest.approx(len(song_audio(bpm, key, bars)) / 22050, abs=1e-3)
        assert 40 <= s["tempo_bpm"] <= 260
        assert s["beats"] >= 4 and s["beats"] == len(s["beat_times"])
        assert s["key"] in KEY_NAMES
        assert 0.0 <= s["key_confidence"] <= 1.0
        assert math.isfinite(s["loudness_lufs"]) and -40 < s["loudness_lufs"] < 0
        for stage in STAGES_RUN:
            assert s["stages"][stage]["status"] == "done", (name, stage, s["stages"][stage])
        for stage in STAGES_OFF:
            assert s["stages"][stage]["status"] == "skipped", (name, stage)
        assert s["degraded"] is False and s["degraded_reasons"] == []


def test_batch_datasets_load_in_pandas_and_polars_one_row_per_song_and_per_bar(reference):
    assert reference.returncode == 0, reference.stderr[-3000:]
    summaries = _summaries(reference.out)
    songs_path, bars_path = reference.out / "songs.parquet", reference.out / "bars.parquet"
    for songs in (pd.read_parquet(songs_path), pl.read_parquet(songs_path).to_pandas()):
        assert len(songs) == len(SONGS)
        assert sorted(songs["song_id"]) == sorted(summaries)
        by_id = songs.set_index("song_id")
        for song_id, s in summaries.items():
            assert by_id.loc[song_id, "key"] == s["key"]
            assert by_id.loc[song_id, "tempo_bpm"] == pytest.approx(s["tempo_bpm"])
            assert by_id.loc[song_id, "bars"] == s["bars"]
    bars_pd, bars_pl = pd.read_parquet(bars_path), pl.read_parquet(bars_path)
    assert len(bars_pd) == len(bars_pl) == sum(s["bars"] for s in summaries.values())
    per_song = bars_pl.group_by("song_id").len()
    counts = dict(zip(per_song["song_id"].to_list(), per_song["len"].to_list()))
    for song_id, s in summaries.items():
        own = pq.read_table(reference.out / song_id / "bars.parquet")
        assert own.num_rows == s["bars"] == counts.get(song_id, 0), song_id
        assert sorted(own.column("bar").to_pylist()) == list(range(s["bars"]))


def test_progress_json_prints_one_object_per_line_ending_with_the_summary(reference):
    assert reference.returncode == 0, reference.stderr[-3000:]
    events = json_lines(reference.stdout)  # every line parses
    assert events == reference.events
    assert events[0]["event"] == "BatchStarted" and events[0]["total_jobs"] == len(SONGS)
    assert sum(e["event"] == "JobFinished" for e in events) == len(SONGS)
    summary = events[-1]
    assert summary["event"] == "Summary"
    assert summary["status"] == "finished" and summary["failed"] == []
    assert summary["counts"]["done"] == len(SONGS)
    assert os.path.samefile(summary["out_dir"], reference.out)


def test_status_json_lists_the_batch_with_its_counts_and_jobs(reference):
    done = run_stave(["status", reference.out, "--json"], reference.env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    [batch] = doc["batches"]
    assert batch["status"] == "finished"
    assert batch["counts"]["done"] == len(SONGS)
    assert sum(batch["counts"].values()) == len(SONGS)
    assert len(batch["jobs"]) == len(SONGS)
    for job in batch["jobs"]:
        assert job["status"] == "done" and job["error_kind"] is None
        assert {stage: job["stages"][stage] for stage in STAGES_RUN} == dict.fromkeys(STAGES_RUN, "done")
    assert sorted(j["song_id"] for j in batch["jobs"]) == sorted(song_folders(reference.out))


def test_resume_on_a_finished_folder_has_nothing_to_do(reference):
    before = {name: (reference.out / name / "summary.json").read_bytes() for name in song_folders(reference.out)}
    done = run_stave(["resume", reference.out], reference.env)
    assert done.returncode == 0, done.stderr
    assert "nothing to resume" in done.stderr
    after = {name: (reference.out / name / "summary.json").read_bytes() for name in song_folders(reference.out)}
    assert after == before


# --- a broken file ------------------------------------------------------------------------------
def test_one_truncated_file_exits_1_and_the_summary_names_it_with_kind_reason_suggestion(tmp_path, env):
    inputs = tmp_path / "in"
    good = write_songs(inputs, SONGS[:2])
    broken = truncate_copy(good[0], inputs / "zz_broken.wav")
    out = tmp_path / "out"
    done = run_stave(["process", inputs, "--out", out, "--workers", "1", "--progress", "plain"], env)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    failed_part = done.stderr.split("\nFailed:\n", 1)[1]
    block = failed_part.split("\n\n", 1)[0]
    assert "zz_broken.wav" in block and "alpha.wav" not in block and "bravo.wav" not in block
    assert "input-corrupt" in block and "truncated" in block
    assert POLICIES[ErrorKind.INPUT_CORRUPT].suggestion in block

    status = json.loads(run_stave(["status", out, "--json"], env).stdout)
    jobs = {os.path.basename(j["path"]): j for j in status["batches"][0]["jobs"]}
    assert jobs["zz_broken.wav"]["status"] == "failed"
    assert jobs["zz_broken.wav"]["error_kind"] == "input-corrupt"
    assert jobs["zz_broken.wav"]["error_reason"] in block
    assert jobs["alpha.wav"]["status"] == jobs["bravo.wav"]["status"] == "done"
    folders = song_folders(out)
    assert len(folders) == 2 and not any(name.startswith("zz_broken") for name in folders)
    assert all("summary.json" in files for files in folders.values())
    assert broken.exists()  # inputs are never touched


# --- usage errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["process", "{inputs}"], "--out"),
    (["process", "{inputs}", "--out", "{out}", "--time-signature", "4-4"], "time signature"),
    (["process", "{inputs}", "--out", "{out}", "--time-signature", "0/4"], "time_signature_numerator"),
    (["process", "{missing}", "--out", "{out}"], "no such file or folder"),
    (["process", "{inputs}", "--out", "{out}", "--timeout", "mix=3"], "unknown stage"),
    (["process", "{inputs}", "--out", "{out}", "--timeout", "analyze=nan"], "above 0"),
    (["process", "{inputs}", "--out", "{out}", "--timeout", "analyze=-5"], "above 0"),
    (["process", "{inputs}", "--out", "{out}", "--workers", "0"], "from 1 to 256"),
    (["process", "{inputs}", "--out", "{out}", "--workers", "1000"], "from 1 to 256"),
    (["process", "{inputs}", "--out", "{out}", "--workers", "two"], "from 1 to 256"),
], ids=["missing-out", "bad-time-signature", "time-signature-zero", "nonexistent-path", "bad-timeout",
        "nan-timeout", "negative-timeout", "zero-workers", "a-thousand-workers", "workers-not-a-number"])
def test_usage_errors_exit_2_and_create_nothing(tmp_path, env, args, message):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "x.wav").write_bytes(b"")
    paths = {"inputs": inputs, "out": tmp_path / "out", "missing": tmp_path / "nowhere"}
    done = run_stave([a.format(**paths) for a in args], env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_more_workers_than_cores_or_files_start_only_what_can_work(tmp_path, env):
    """--workers asks for the most; Stave starts at most one worker per usable core and per file."""
    from core.engine import usable_cpus

    inputs = tmp_path / "in"
    write_songs(inputs, SONGS[:1])
    done = run_stave(["process", str(inputs), "--out", str(tmp_path / "out"), "--workers", "64",
                      "--progress", "json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    [started] = [e for e in json_lines(done.stdout) if e["event"] == "BatchStarted"]
    assert started["total_jobs"] == 1
    if usable_cpus() > 1:  # one file: one worker, and nothing to say about cores
        assert "not 64" not in done.stderr
    inputs2 = tmp_path / "in2"
    write_songs(inputs2, SONGS[: usable_cpus() + 1])
    done = run_stave(["process", str(inputs2), "--out", str(tmp_path / "out2"), "--workers", "64"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    n = usable_cpus()
    assert f"running {n} worker{'s' if n > 1 else ''}, not 64" in done.stderr


# --- folders that are not (usable) batches ---------------------------------------------------------
def test_resume_and_status_without_a_store_exit_1_with_a_clear_message(tmp_path, env):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in ("resume", "status"):
        done = run_stave([command, empty], env)
        assert done.returncode == 1, (command, done.stderr)
        assert f"no Stave batch in {empty}" in done.stderr
        assert "Traceback" not in done.stderr
    assert list(empty.iterdir()) == []  # no store was created by looking


def _random_bytes(reference, path):
    path.write_bytes(os.urandom(16384))


def _damaged_pages(reference, path):
    data = bytearray((reference.out / ".stave" / "state.db").read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = os.urandom(len(data) - page)  # header page intact, every other page garbage
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt, message", [(_random_bytes, "not a Stave store"),
                                               (_damaged_pages, "damaged")], ids=["random-bytes", "damaged-pages"])
def test_corrupt_store_is_refused_by_status_and_resume_and_left_untouched(tmp_path, env, reference, corrupt, message):
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "out"
    (out / ".stave").mkdir(parents=True)
    db = out / ".stave" / "state.db"
    corrupt(reference, db)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (["status", out, "--json"], ["resume", out, "--retry-failed"]):
        done = run_stave(args, env)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert str(db) in done.stderr and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
        assert hashlib.sha256(db.read_bytes()).hexdigest() == digest, f"{args} changed the store"


# --- exit codes --------------------------------------------------------------------------------------
def test_only_a_finished_batch_without_failures_exits_0():
    """Scripts must be able to tell a batch that stopped half way (disk full, Ctrl-C) from a finished one."""
    counts = {"pending": 3, "running": 0, "done": 1, "failed": 0, "skipped": 0, "cancelled": 0, "quarantined": 0}
    paused = BatchSummary(1, BatchStatus.PAUSED, counts, failed=[], degraded=[], elapsed_s=1.0,
                          pause_reason="no space left on device")
    assert exit_code(paused) == 1
    finished = BatchSummary(1, BatchStatus.FINISHED, dict(counts, pending=0, done=4), failed=[], degraded=[],
                            elapsed_s=1.0)
    assert exit_code(finished) == 0


# --- health ------------------------------------------------------------------------------------------
def test_health_json_parses(tmp_path, env):
    done = run_stave(["health", "--json", "--out", tmp_path / "out"], env)
    assert done.returncode in (0, 1), done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is (done.returncode == 0)
    assert doc["checks"] and {"name", "status", "details"} <= set(doc["checks"][0])
    assert "output-folder" in [c["name"] for c in doc["checks"]]


# --- `python -m core.cli` -----------------------------------------------------------------------------
def test_python_m_core_cli_works(tmp_path, env):
    done = subprocess.run([sys.executable, "-m", "core.cli", "status", tmp_path, "--json"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 1 and "no Stave batch" in done.stderr


def test_the_console_command_exits_with_its_code_and_all_its_output(tmp_path):
    # `stave` leaves the interpreter with os._exit once a command has returned: its output must be flushed
    # and its exit code kept, whatever the command.
    def stave(*args):
        return subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)], cwd=REPO, capture_output=True,
                              text=True, timeout=120, env={**os.environ, "STAVE_CONFIG_DIR": str(tmp_path / "cfg")})

    version = stave("--version")
    assert version.returncode == 0 and version.stdout.startswith("stave ")
    usage = stave("process")
    assert usage.returncode == 2 and "--out" in usage.stderr
    missing = stave("status", tmp_path / "nothing-here")
    assert missing.returncode != 0 and missing.stderr.strip()
    helped = stave("process", "--help")
    assert helped.returncode == 0 and "--workers" in helped.stdout
    assert helped.stdout.rstrip().endswith("(default: adaptive)")  # the last line of the help: all was flushed


def test_processing_a_folder_again_reuses_what_did_not_change(tmp_path, env):
    inputs = tmp_path / "in"
    write_songs(inputs, SONGS[:1])
    args = ["process", str(inputs), "--out", str(tmp_path / "out"), "--progress", "plain"]
    assert run_stave(args, env).returncode == 0
    summary = next((tmp_path / "out").glob("*/summary.json")).read_bytes()
    again = run_stave(args, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "unchanged: the results of batch 1" in again.stdout + again.stderr
    assert next((tmp_path / "out").glob("*/summary.json")).read_bytes() == summary
    assert len(pd.read_parquet(tmp_path / "out" / "songs.parquet")) == 1
