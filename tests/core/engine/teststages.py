"""A small stage graph for engine tests: real worker processes, behaviour chosen per file.

A file's name picks what the "process" stage does with it:
  hang_*   hangs,  crash_*  segfaults its worker,  bad_*  raises an input error,
  flaky_*  fails twice (counted in a file next to the output) then works;
and "ingest" raises an input error for corrupt_* files.
The "tool" backend of "process" reads its mode from OUT/tool_mode (ok | fail | hang);
the "builtin" backend always works. "ingest" sleeps OUT/ingest_delay seconds (if that file
exists) for every file but the bad_* and corrupt_* ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from core.engine.batch import Pipeline
from core.engine.stagegraph import BackendPlan, StageContext, StageOutput, StageSpec
from core.fsutil import atomic_write_json, safe_song_id
from core.resilience.errors import DependencyFailed, InputError


def ingest(ctx: StageContext) -> StageOutput:
    name = os.path.basename(ctx.input_path)
    if name.startswith("corrupt_"):
        raise InputError(f"{name} is not audio")
    delay_file = os.path.join(ctx.out_dir, "ingest_delay")
    if os.path.exists(delay_file) and not name.startswith("bad_"):
        time.sleep(float(open(delay_file).read()))
    with open(ctx.input_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    song_id = safe_song_id(ctx.input_path, digest)
    path = os.path.join(ctx.work_dir, "ingest.json")
    atomic_write_json(path, {"song_id": song_id, "hash": digest})
    return StageOutput.of(ctx, [path], facts={"song_id": song_id, "content_hash": digest, "audio_duration_s": 1.0})


def process(ctx: StageContext) -> StageOutput:
    name = os.path.basename(ctx.input_path)
    if name.startswith("hang_"):
        time.sleep(3600)
    if name.startswith("crash_"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("bad_"):
        raise InputError(f"{name} is not audio")
    if name.startswith("flaky_"):
        counter = os.path.join(ctx.out_dir, f"{name}.count")
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        with open(counter, "w") as f:
            f.write(str(n + 1))
        if n < 2:
            raise DependencyFailed(f"flaky failure {n + 1}")
    if ctx.backend == "tool":
        mode_file = os.path.join(ctx.out_dir, "tool_mode")
        mode = open(mode_file).read().strip() if os.path.exists(mode_file) else "ok"
        if mode == "fail":
            raise DependencyFailed("the tool exited with status 1")
        if mode == "hang":
            time.sleep(3600)
    path = os.path.join(ctx.work_dir, "process.json")
    atomic_write_json(path, {"backend": ctx.backend, "pid": os.getpid()})
    return StageOutput.of(ctx, [path])


def export(ctx: StageContext) -> StageOutput:
    with open(os.path.join(ctx.work_dir, "process.json")) as f:
        processed = json.load(f)
    path = os.path.join(ctx.song_dir, "summary.json")
    os.makedirs(ctx.song_dir, exist_ok=True)
    atomic_write_json(path, {"song_id": ctx.song_id, "backend": processed["backend"],
                             "stages": {k: v["status"] for k, v in ctx.facts["stages"].items()}})
    return StageOutput.of(ctx, [path])


def _plan(config, availability) -> BackendPlan:
    return BackendPlan(primary="tool", fallback="builtin")


STAGES = (
    StageSpec("ingest", "1", "tests.core.engine.teststages:ingest"),
    StageSpec("process", "1", "tests.core.engine.teststages:process", plan=_plan, breakers={"tool": "tool"}),
    StageSpec("export", "1", "tests.core.engine.teststages:export"),
)


def pipeline() -> Pipeline:
    return Pipeline(STAGES, config_to_dict=lambda c: dict(c),
                    fingerprint=lambda config, stage: json.dumps(config, sort_keys=True))


def process_rejects(ctx: StageContext) -> StageOutput:
    raise InputError("this version of the stage rejects every file")
